"""Turn benchmark results into the marked section of ``docs/benchmarks.md``.

Every number in the section is computed here from the results, and so are the met / not met
verdicts of the targets. None is written by hand.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

import gradconf
from gradconf.bench.methods import PEER_METHODS

__all__ = [
    "SECTION_END",
    "SECTION_START",
    "evaluate_targets",
    "machine_info",
    "render_section",
    "write_section",
]

SECTION_START = "<!-- gram:start -->"
SECTION_END = "<!-- gram:end -->"
DOC_TITLE = "# Benchmarks"
# Max relative error of a Gram against the float64 per-example loop.
ERROR_TARGET = 1e-5
# Per model family: max time of gradconf over plain fwd+bwd, min speed-up over the fastest
# peer, and whether gradconf's peak memory must be below every peer's.
TARGETS = {
    "mlp": {"max_ratio": 2.0, "min_speedup": 30.0, "lower_memory": False},
    "cnn": {"max_ratio": 1.5, "min_speedup": 1.0, "lower_memory": True},
}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} (uncommitted changes)" if dirty else commit


def machine_info(device: str) -> dict[str, Any]:
    """Collect the machine, versions and date that a benchmark record needs."""
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "backpack": _version("backpack-for-pytorch"),
        "opacus": _version("opacus"),
        "gradconf": gradconf.__version__,
        "commit": _git_commit(),
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _ok_rows(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["method"]: row for row in case["rows"] if row["status"] == "ok"}


def evaluate_targets(case: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (target, verdict with numbers) pairs for one case record."""
    targets = TARGETS[case["family"]]
    rows = _ok_rows(case)
    ours = rows.get("gradconf")
    if ours is None or "plain" not in rows:
        return [("all targets", "not evaluated: gradconf or plain fwd+bwd did not run")]

    def verdict(met: bool, numbers: str) -> str:
        return f"{'met' if met else 'not met'} ({numbers})"

    ratio = ours["ratio_to_plain"]
    results = [(
        f"gradconf ≤ {targets['max_ratio']:g}× plain fwd+bwd",
        verdict(ratio <= targets["max_ratio"], f"{ratio:.2f}×"),
    )]
    peers = [rows[name] for name in PEER_METHODS if name in rows]
    if not peers:
        results.append(("speed and memory against peers", "not evaluated: no peer ran"))
    else:
        fastest = min(peers, key=lambda row: row["median_ms"])
        speedup = fastest["median_ms"] / ours["median_ms"]
        wording = (
            "not slower than" if targets["min_speedup"] == 1.0
            else f"≥ {targets['min_speedup']:g}× faster than"
        )
        results.append((
            f"gradconf {wording} the fastest peer",
            verdict(speedup >= targets["min_speedup"],
                    f"{_format_speedup(speedup)} vs {fastest['label']}"),
        ))
        if targets["lower_memory"]:
            results.append(_memory_target(ours, peers))
    error = ours.get("max_rel_error")
    if error is not None:
        results.append((f"gradconf max rel. error ≤ {ERROR_TARGET:g}",
                        verdict(error <= ERROR_TARGET, f"{error:.1e}")))
    return results


def _memory_target(ours: dict[str, Any], peers: list[dict[str, Any]]) -> tuple[str, str]:
    label = "gradconf peak memory below every peer's"
    measured = [row for row in peers if row.get("peak_bytes") is not None]
    if ours.get("peak_bytes") is None or not measured:
        return label, "not evaluated: peak memory was not measured"
    lowest = min(measured, key=lambda row: row["peak_bytes"])
    numbers = f"{_mb(ours['peak_bytes'])} MB vs {_mb(lowest['peak_bytes'])} MB, {lowest['label']}"
    met = ours["peak_bytes"] < lowest["peak_bytes"]
    return label, f"{'met' if met else 'not met'} ({numbers})"


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def _table_text(text: str, max_chars: int) -> str:
    """Return ``text`` on one line, shortened to ``max_chars``, with "|" escaped for tables."""
    line = " ".join(text.split())
    if len(line) > max_chars:
        line = line[: max_chars - 1] + "…"
    return line.replace("|", "\\|")


def _row_cells(row: dict[str, Any]) -> list[str]:
    if row["status"] != "ok":
        reason = _table_text(row.get("reason", ""), max_chars=160)
        return [row["label"], f"{row['status']}: {reason}", "", "", "", ""]
    ratio = row.get("ratio_to_plain")
    speedup = row.get("gradconf_speedup")
    error = row.get("max_rel_error")
    return [
        row["label"] + (f" → {row['details']['engine']}" if "engine" in row["details"] else ""),
        f"{row['median_ms']:.2f}",
        "n/a" if ratio is None else f"{ratio:.2f}",
        "" if speedup is None else _format_speedup(speedup),
        _mb(row.get("peak_bytes")),
        "" if error is None else f"{error:.1e}",
    ]


def _case_table(case: dict[str, Any]) -> list[str]:
    shape = "×".join(map(str, case["input_shape"]))
    lines = [
        f"### {case['description']}, B={case['batch_size']}",
        "",
        f"Inputs [{case['batch_size']}, {shape}], P = {case['num_params']:,} parameters.",
        "",
        "| method | median ms | × plain | gradconf speed-up | peak MB | max rel. error |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    reference = case.get("reference", {})
    if reference.get("status", "ok") != "ok":
        reason = _table_text(reference.get("reason") or "", max_chars=300)
        lines[3:3] = [f"The float64 reference Gram failed ({reason}), so no errors are shown.", ""]
    for row in case["rows"]:
        lines.append("| " + " | ".join(_row_cells(row)) + " |")
    return lines


def _timing_rule(config: dict[str, Any]) -> str:
    warmup = config["warmup"]
    rule = (
        f"Times are the median of up to {config['repeats']} timed calls after {warmup} "
        f"untimed warm-up call{'s' if warmup != 1 else ''}"
    )
    if config["repeats"] > 3:
        rule += (
            f", with fewer timed calls (at least 3) where {config['repeats']} would take "
            f"more than {config['time_budget_s']:g} s"
        )
    return rule + "."


def _format_speedup(value: float) -> str:
    return f"{value:.0f}×" if value >= 10 else f"{value:.2g}×"


def render_section(results: dict[str, Any]) -> str:
    """Render the results as markdown (without the section markers)."""
    machine, config = results["machine"], results["config"]
    engines = sorted({
        row["details"]["engine"]
        for case in results["cases"] for row in case["rows"]
        if row["status"] == "ok" and "engine" in row.get("details", {})
    })
    threads = {row["num_threads"] for case in results["cases"] for row in case["rows"]
               if "num_threads" in row}
    lines = [
        "## Per-example Gram: gradconf and its peers",
        "",
        f"Generated by `python benchmarks/gram.py` on {machine['date']}"
        + (" in quick mode (a smoke run, not a measurement)" if config["quick"] else "")
        + "; rerun it rather than editing these numbers.",
        "",
        f"- Machine: {machine['cpu']}, {machine['logical_cores']} logical cores, "
        f"torch threads per worker: {', '.join(map(str, sorted(threads))) or 'n/a'}; "
        f"device {machine['device']}" + (f" ({machine['gpu']})" if "gpu" in machine else ""),
        f"- Software: Python {machine['python']}, torch {machine['torch']}, "
        f"BackPACK {machine['backpack']}, Opacus {machine['opacus']}, "
        f"gradconf {machine['gradconf']} at commit {machine['commit']}",
        f"- gradconf `engine=\"auto\"` resolved to: {', '.join(engines) or 'n/a'}",
        "- Each (case, method) runs in a fresh process on identical fp32 weights and inputs "
        f"(seed {config['seed']}), cross-entropy over 10 classes with a mean loss. "
        + _timing_rule(config)
        + " A call includes forward, backward and the [B, B] Gram.",
        "- Peak MB: peak RSS of the worker minus its RSS after building the model and "
        "inputs (on CUDA: `torch.cuda.max_memory_allocated` minus the allocation then).",
        "- Max rel. error: max|G − G_ref| / max|G_ref| against the float64 per-example loop "
        f"(`gradconf.engine.reference_gram`, run on pairs of example blocks where B × P "
        f"float64 values exceed {config['reference_memory_mb']} MiB); the target is "
        f"{ERROR_TARGET:g}.",
        "- × plain: median time over that of plain fwd+bwd. gradconf speed-up: the method's "
        "median time over gradconf's.",
        "- Targets: peers are the libraries torch.func, BackPACK and Opacus. The per-example "
        "loop is the naive baseline and does not enter the targets.",
        "- One run on a shared machine, so ratios carry run-to-run noise.",
        "",
    ]
    for case in results["cases"]:
        lines += _case_table(case) + [""]
    lines += ["### Targets", ""]
    for case in results["cases"]:
        for target, verdict in evaluate_targets(case):
            lines.append(f"- {case['case']}: {target}: {verdict}")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace the text between the gram markers of ``path`` with ``body``.

    A missing file is created with a title; a file without the markers gets the section
    appended. Text outside the markers is kept byte for byte.
    """
    block = f"{SECTION_START}\n{body.rstrip()}\n{SECTION_END}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{DOC_TITLE}\n\n{block}\n")
        return
    text = path.read_text()
    starts, ends = text.count(SECTION_START), text.count(SECTION_END)
    if starts == 0 and ends == 0:
        path.write_text(text.rstrip("\n") + f"\n\n{block}\n")
        return
    start, end = text.find(SECTION_START), text.find(SECTION_END)
    if starts != 1 or ends != 1 or end < start:
        raise ValueError(
            f"{path} has {starts} '{SECTION_START}' and {ends} '{SECTION_END}' markers, not "
            "one pair in that order; fix the markers by hand, then rerun."
        )
    path.write_text(text[:start] + block + text[end + len(SECTION_END):])
