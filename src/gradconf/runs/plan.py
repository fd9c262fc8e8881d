"""Execute a list of planned runs into one directory, skipping completed ones.

``OUT/runs/<run_id>`` contains each run (see ``gradconf.runs.run``). A run that raises is
recorded in ``OUT/runs/.<run_id>.error.txt`` with its traceback and the others go on.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradconf.config import RunConfig
from gradconf.runs.io import write_text_atomic
from gradconf.runs.run import RunOutcome, execute_run

__all__ = ["PlannedRun", "StudyOutcome", "error_file", "execute_plan"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study or sweep: its id, its labels for the report, and its config."""

    run_id: str
    labels: dict[str, Any]
    config: RunConfig


@dataclass(frozen=True)
class StudyOutcome:
    """Counts of what a study invocation did, and the runs that failed with their errors."""

    completed: int
    skipped: int
    diverged: int
    failed: dict[str, str] = field(default_factory=dict)


def error_file(out_dir: Path, run_id: str) -> Path:
    """Return the path where a failed run's traceback is written."""
    return out_dir / "runs" / f".{run_id}.error.txt"


def execute_plan(
    planned: list[PlannedRun], out_dir: str | Path, *, progress: bool = True
) -> StudyOutcome:
    """Run every planned run in order into ``out_dir/runs``; completed runs are skipped.

    Ctrl-C stops after the run in progress is abandoned; finished runs are kept.
    """
    out_dir = Path(out_dir)
    counts = {"completed": 0, "skipped": 0, "diverged": 0}
    failed: dict[str, str] = {}
    iterator: Any = planned
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(planned, desc="runs", unit="run")
    for run in iterator:
        if progress:
            iterator.set_postfix_str(run.run_id)
        errors = error_file(out_dir, run.run_id)
        try:
            outcome: RunOutcome = execute_run(run.config, out_dir / "runs" / run.run_id,
                                              labels=run.labels)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as error:  # noqa: BLE001 - one failed run must not stop the others
            logger.error("run %s failed: %s", run.run_id, error)
            write_text_atomic(errors, traceback.format_exc())
            failed[run.run_id] = f"{type(error).__name__}: {error}"
            continue
        errors.unlink(missing_ok=True)
        counts[outcome.status] += 1
    return StudyOutcome(failed=failed, **counts)
