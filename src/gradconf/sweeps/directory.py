"""The sweep output directory: ``sweep.json``, one folder per run, and the status of each run.

``OUT/sweep.json`` contains the validated sweep (``SweepSpec.to_dict()``) and its planned runs,
each with its id, folder, config digest and labels. ``OUT/runs/<run_id>/`` is a run directory
as written by ``gradconf.runs.run.execute_run``; ``OUT/runs/.<run_id>.error.txt`` contains the
traceback of a run that raised.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradconf.runs.io import write_json_atomic
from gradconf.runs.plan import PlannedRun, error_file
from gradconf.runs.run import COMPLETE_FILE
from gradconf.sweeps.spec import SweepSpec

__all__ = ["SWEEP_FILE", "SweepStatus", "prepare_directory", "read_sweep_file", "sweep_status"]

logger = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
SWEEP_KIND = "sweep"


@dataclass(frozen=True)
class SweepStatus:
    """Progress of a sweep directory.

    ``done`` counts complete runs (including ``diverged`` ones, which are not retried),
    ``failed`` maps the id of each run that raised to the last line of its traceback, and
    ``pending`` lists the runs not started or interrupted; the next invocation runs them.
    """

    name: str
    total: int
    done: int
    diverged: int
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Return the dotted keys whose values differ between two validated sweeps (name ignored)."""
    old_flat = _flatten({key: value for key, value in old.items() if key != "name"})
    new_flat = _flatten({key: value for key, value in new.items() if key != "name"})
    return sorted(key for key in set(old_flat) | set(new_flat)
                  if old_flat.get(key, "<absent>") != new_flat.get(key, "<absent>"))


def read_sweep_file(out_dir: str | Path) -> dict[str, Any]:
    """Read ``OUT/sweep.json``; raise FileNotFoundError when ``out_dir`` contains no sweep."""
    path = Path(out_dir) / SWEEP_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{out_dir} contains no {SWEEP_FILE}, so it is not a sweep directory. Pass the --out "
            "directory of a `gradconf sweep` invocation."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def _run_entries(planned: list[PlannedRun]) -> list[dict[str, Any]]:
    return [{"run_id": run.run_id, "dir": f"runs/{run.run_id}",
             "config_digest": run.config.digest(), **run.labels} for run in planned]


def prepare_directory(
    out_dir: Path,
    spec: SweepSpec,
    planned: list[PlannedRun],
    *,
    continue_other: bool = False,
) -> None:
    """Write ``sweep.json`` for a new sweep, or check that ``out_dir`` contains the same sweep.

    Raises FileExistsError when ``out_dir`` contains a different sweep (naming the settings that
    differ) or other files, unless ``continue_other`` is set. Then the new sweep replaces the
    old one in ``sweep.json``, the old spec is kept under ``previous``, and runs of the new
    sweep that already exist with the same config are reused.
    """
    sweep_file = out_dir / SWEEP_FILE
    validated = spec.to_dict()
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    previous: list[dict[str, Any]] = []
    if sweep_file.is_file():
        existing = json.loads(sweep_file.read_text(encoding="utf-8"))
        differences = _differences(existing.get("spec", {}), validated)
        planned_digests = {run.run_id: run.config.digest() for run in planned}
        existing_digests = {entry.get("run_id"): entry.get("config_digest")
                            for entry in existing.get("runs", [])}
        if not differences and planned_digests != existing_digests:
            # Same file, other configs: the RunConfig defaults changed since the first run.
            differences = ["run configs (the defaults of RunConfig changed)"]
        if not differences:
            logger.info("resuming the sweep %r in %s", spec.name, out_dir)
            return
        if not continue_other:
            shown = ", ".join(differences[:8]) + (" ..." if len(differences) > 8 else "")
            raise FileExistsError(
                f"{out_dir} contains another sweep ({existing.get('name')!r}); settings that "
                f"differ: {shown}. Use a new --out directory, rerun the same sweep file to "
                "resume, or pass --continue to add this sweep's runs to that directory."
            )
        logger.warning("continuing the sweep in %s with other settings: %s", out_dir,
                       ", ".join(differences))
        previous = [*existing.get("previous", []),
                    {"name": existing.get("name"), "created_at": existing.get("created_at"),
                     "spec": existing.get("spec")}]
    elif out_dir.exists() and any(out_dir.iterdir()) and not continue_other:
        raise FileExistsError(
            f"{out_dir} is not empty and contains no {SWEEP_FILE}; gradconf will not write a sweep "
            "into a folder with other files. Use a new --out directory, or pass --continue."
        )
    write_json_atomic(sweep_file, {
        "kind": SWEEP_KIND, "name": spec.name, "created_at": now, "spec": validated,
        "runs": _run_entries(planned), "previous": previous,
    })


def complete_digest(run_dir: Path) -> str | None:
    """Return the config digest recorded in a complete run, or None when it is not complete."""
    path = run_dir / COMPLETE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("config_digest")


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(empty traceback file)"


def sweep_status(out_dir: str | Path) -> SweepStatus:
    """Count the done, diverged, failed and pending runs of a sweep directory.

    A run whose folder contains a completed run of another config counts as failed, because
    ``execute_run`` rejects it. Raises FileNotFoundError when ``out_dir`` contains no sweep.
    """
    out_dir = Path(out_dir)
    sweep = read_sweep_file(out_dir)
    done = diverged = 0
    failed: dict[str, str] = {}
    pending: list[str] = []
    for entry in sweep["runs"]:
        run_id = entry["run_id"]
        run_dir = out_dir / entry["dir"]
        digest = complete_digest(run_dir)
        if digest is not None and digest != entry["config_digest"]:
            failed[run_id] = (f"{run_dir} contains a completed run of another config (digest "
                              f"{digest}, planned {entry['config_digest']})")
        elif digest is not None:
            done += 1
            status = json.loads((run_dir / COMPLETE_FILE).read_text(encoding="utf-8"))
            diverged += status.get("status") == "diverged"
        elif error_file(out_dir, run_id).is_file():
            failed[run_id] = _last_line(error_file(out_dir, run_id))
        else:
            pending.append(run_id)
    return SweepStatus(name=sweep.get("name", out_dir.name), total=len(sweep["runs"]),
                       done=done, diverged=diverged, failed=failed, pending=pending)
