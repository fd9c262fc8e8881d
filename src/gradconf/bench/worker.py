"""Time one (case, method) pair in a fresh process: ``python -m gradconf.bench.worker``.

A fresh process per pair keeps the peak-RSS measure of one method free of the allocations
of another. The method name ``REFERENCE`` computes the float64 reference Gram instead, untimed. The worker writes a JSON result and the method's [B, B] Gram (``torch.save``)
to the paths in its task. The parent compares that Gram with the float64 reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradconf.bench.cases import CASES, build_case
from gradconf.bench.measure import MemoryProbe, time_calls
from gradconf.bench.methods import METHODS
from gradconf.bench.reference import blocked_reference_gram

__all__ = ["REFERENCE", "WorkerTask", "run_reference", "run_task"]

logger = logging.getLogger(__name__)

REFERENCE = "reference"


@dataclass(frozen=True)
class WorkerTask:
    """Everything one worker needs; passed to the subprocess as JSON."""

    case: str
    method: str
    batch_size: int
    seed: int
    device: str
    threads: int
    repeats: int
    warmup: int
    time_budget_s: float
    reference_memory_mb: int
    result_path: str
    gram_path: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerTask:
        """Build a task from a dict, raising ValueError on unknown or missing keys."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted(known - set(data))
        if unknown or missing:
            raise ValueError(
                f"invalid worker task: unknown keys {unknown}, missing keys {missing}; "
                f"expected exactly {sorted(known)}."
            )
        if data["method"] != REFERENCE and data["method"] not in METHODS:
            raise ValueError(
                f"invalid worker task: method {data['method']!r} is not one of "
                f"{[REFERENCE, *METHODS]}."
            )
        return cls(**data)


def run_reference(task: WorkerTask) -> dict[str, Any]:
    """Compute the float64 reference Gram on the CPU and save it; return the result record."""
    if task.threads > 0:
        torch.set_num_threads(task.threads)
    model, inputs, targets = build_case(
        CASES[task.case], seed=task.seed, device=torch.device("cpu"), batch_size=task.batch_size
    )
    start = time.perf_counter()
    gram = blocked_reference_gram(
        model, nn.CrossEntropyLoss(), inputs, targets, memory_mb=task.reference_memory_mb
    )
    torch.save(gram, task.gram_path)
    return {"status": "ok", "has_gram": True, "seconds": time.perf_counter() - start}


def run_task(task: WorkerTask) -> dict[str, Any]:
    """Build the case, time the method and save its Gram; return the result record."""
    device = torch.device(task.device)
    if task.threads > 0:
        torch.set_num_threads(task.threads)
    model, inputs, targets = build_case(
        CASES[task.case], seed=task.seed, device=device, batch_size=task.batch_size
    )
    loss_fn = nn.CrossEntropyLoss()

    probe = MemoryProbe(device)
    probe.start()
    prepared = METHODS[task.method].prepare(model, loss_fn, inputs, targets)
    timing, gram = time_calls(
        prepared.run,
        device=device,
        repeats=task.repeats,
        warmup=task.warmup,
        time_budget_s=task.time_budget_s,
    )
    peak_bytes = probe.peak_bytes()

    if gram is not None:
        torch.save(gram, task.gram_path)
    return {
        "status": "ok",
        "median_ms": timing.median_ms,
        "times_ms": list(timing.times_ms),
        "warmup": timing.warmup,
        "peak_bytes": peak_bytes,
        "memory_method": probe.method,
        "num_threads": torch.get_num_threads(),
        "has_gram": gram is not None,
        "details": prepared.details,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the task given as JSON by ``--task``; return 0 on success, 1 on failure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", required=True, help="WorkerTask as a JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    task = WorkerTask.from_dict(json.loads(args.task))
    try:
        record = run_reference(task) if task.method == REFERENCE else run_task(task)
    except Exception as error:  # reported to the parent, which marks the row as failed
        logger.error("%s on %s failed: %s", task.method, task.case, error)
        record = {
            "status": "failed",
            "reason": f"{type(error).__name__}: {error}",
            "traceback": traceback.format_exc(),
        }
    record["task"] = asdict(task)
    Path(task.result_path).write_text(json.dumps(record, indent=2))
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
