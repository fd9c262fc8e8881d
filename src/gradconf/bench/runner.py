"""Run the Gram benchmark: every (case, method) pair in its own worker process.

For each case one worker (``gradconf.bench.worker``) computes the float64 reference Gram,
then one worker per method measures its timing, peak memory and Gram. The parent derives
the ratios and each Gram's error against the reference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradconf.bench.cases import (
    CASES,
    QUICK_BATCH_SIZE,
    BenchCase,
    resolve_cases,
)
from gradconf.bench.methods import METHODS, unavailable_reason
from gradconf.bench.reference import relative_error
from gradconf.bench.worker import REFERENCE

__all__ = ["BenchConfig", "run_benchmark"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """Resolved benchmark settings; written into the JSON results."""

    cases: tuple[str, ...]
    methods: tuple[str, ...]
    repeats: int = 10
    warmup: int = 2
    # Per (case, method): fewer than ``repeats`` timed calls (at least 3) beyond this.
    time_budget_s: float = 30.0
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    # Intra-op threads per worker (0: torch's default). One thread keeps the ratios stable
    # when other processes share the cores, because a busy core stalls a multi-threaded op.
    threads: int = 1
    # The float64 reference holds B × P gradients; larger batches are done in blocks.
    reference_memory_mb: int = 4096
    # A worker that runs longer is stopped and its row marked as failed.
    worker_timeout_s: float = 3600.0

    @classmethod
    def create(
        cls,
        *,
        cases: list[str] | None = None,
        methods: list[str] | None = None,
        quick: bool = False,
        repeats: int | None = None,
        **settings: Any,
    ) -> BenchConfig:
        """Resolve names and quick-mode defaults; raise ValueError on unknown names."""
        resolved_cases = tuple(case.name for case in resolve_cases(cases, quick=quick))
        requested = list(METHODS) if methods is None else list(methods)
        unknown = [name for name in requested if name not in METHODS]
        if unknown:
            raise ValueError(
                f"unknown method(s) {unknown}; available: {', '.join(METHODS)}. "
                "Pass a comma-separated subset to --methods."
            )
        # The plain forward+backward is the denominator of every ratio, so it always runs.
        ordered = tuple(name for name in METHODS if name == "plain" or name in requested)
        if repeats is None:
            repeats = 3 if quick else cls.repeats
        if repeats < 1:
            raise ValueError(f"repeats={repeats} is invalid; time at least one call.")
        if quick:
            settings.setdefault("warmup", 1)
        return cls(resolved_cases, ordered, repeats=repeats, quick=quick, **settings)

    def batch_size(self, case: BenchCase) -> int:
        """Return B for ``case``: its own, capped at ``QUICK_BATCH_SIZE`` in quick mode."""
        return min(case.batch_size, QUICK_BATCH_SIZE) if self.quick else case.batch_size


def _run_worker(task: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "gradconf.bench.worker", "--task", json.dumps(task)]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s"}
    result_path = Path(task["result_path"])
    if result_path.exists():
        return json.loads(result_path.read_text())
    stderr_tail = completed.stderr.strip().splitlines()[-3:]
    reason = f"worker exited with code {completed.returncode}"
    if completed.returncode == -9:
        reason += " (killed by SIGKILL, usually out of memory)"
    return {"status": "failed", "reason": f"{reason}: {' | '.join(stderr_tail)}"}


def run_case(config: BenchConfig, case: BenchCase, workdir: Path) -> dict[str, Any]:
    """Time every configured method on one case; return the case record."""
    batch_size = config.batch_size(case)
    num_params = sum(param.numel() for param in case.build().parameters())

    def task_for(method: str) -> dict[str, Any]:
        return {
            "case": case.name, "method": method, "batch_size": batch_size,
            "seed": config.seed, "device": config.device, "threads": config.threads,
            "repeats": config.repeats, "warmup": config.warmup,
            "time_budget_s": config.time_budget_s,
            "reference_memory_mb": config.reference_memory_mb,
            "result_path": str(workdir / f"{case.name}-{method}.json"),
            "gram_path": str(workdir / f"{case.name}-{method}.pt"),
        }

    reference_task = task_for(REFERENCE)
    reference_record = _run_worker(reference_task, config.worker_timeout_s)
    reference = None
    if reference_record["status"] == "ok":
        reference = torch.load(reference_task["gram_path"])
    else:
        logger.error("reference Gram on %s failed, so errors are not reported: %s",
                     case.name, reference_record.get("reason"))

    rows: list[dict[str, Any]] = []
    for name in config.methods:
        row: dict[str, Any] = {"method": name, "label": METHODS[name].label}
        reason = unavailable_reason(name)
        if reason is not None:
            logger.warning("skipping %s: %s", name, reason)
            rows.append({**row, "status": "skipped", "reason": reason})
            continue
        task = task_for(name)
        record = _run_worker(task, config.worker_timeout_s)
        record.pop("task", None)
        if record.get("has_gram") and reference is not None:
            gram = torch.load(task["gram_path"])
            record["max_rel_error"] = relative_error(gram, reference)
        if record["status"] != "ok":
            logger.error("%s on %s failed: %s", name, case.name, record.get("reason"))
        else:
            logger.info("%s on %s: median %.2f ms", name, case.name, record["median_ms"])
        rows.append({**row, **record})

    _add_ratios(rows)
    return {
        "case": case.name, "description": case.description, "family": case.family,
        "batch_size": batch_size, "input_shape": list(case.input_shape),
        "num_params": num_params, "rows": rows,
        "reference": {key: reference_record.get(key) for key in ("status", "reason", "seconds")},
    }


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    times = {row["method"]: row["median_ms"] for row in rows if row["status"] == "ok"}
    plain_ms = times.get("plain")
    gradconf_ms = times.get("gradconf")
    for row in rows:
        if row["status"] != "ok":
            continue
        if plain_ms:
            row["ratio_to_plain"] = row["median_ms"] / plain_ms
        if gradconf_ms and row["method"] not in ("plain", "gradconf"):
            row["gradconf_speedup"] = row["median_ms"] / gradconf_ms


def run_benchmark(config: BenchConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run every configured case; return the results (config and one record per case)."""
    from gradconf.bench.report import machine_info

    iterator = config.cases
    bar = None
    if progress:
        try:
            from tqdm import tqdm
        except ImportError:
            logger.info("tqdm is not installed; logging progress instead")
        else:
            bar = tqdm(config.cases, desc="gram benchmark", unit="case")
            iterator = bar
    records = []
    with tempfile.TemporaryDirectory(prefix="gradconf-bench-") as tmp:
        for index, name in enumerate(iterator):
            logger.info("case %d/%d: %s", index + 1, len(config.cases), name)
            if bar is not None:
                bar.set_postfix_str(name)
            records.append(run_case(config, CASES[name], Path(tmp)))
    return {
        "config": dataclasses.asdict(config),
        "machine": machine_info(config.device),
        "cases": records,
    }
