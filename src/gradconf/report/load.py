"""Load a study directory into labeled pandas frames.

A study directory contains ``study.json`` (the list of runs and their labels) and one
directory per run under ``runs/``. A run counts as complete only when its ``complete.json``
exists, which the runner writes last, and every data file below is present. Every other run is
kept in ``StudyData.incomplete`` with the reason, so a report can list it instead of dropping it.
A complete run has the status written in complete.json: "completed", or "diverged" when the
training loss became non-finite, in which case its files stop at the divergence.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "DATA_FILES",
    "LABEL_COLUMNS",
    "IncompleteRun",
    "StudyData",
    "load_study",
]

logger = logging.getLogger(__name__)

# Labels copied from each run entry of study.json onto every row of that run's frames.
LABEL_COLUMNS = ("run_id", "group", "x_name", "x", "seed", "width", "depth")
REQUIRED_RUN_KEYS = ("run_id", "group", "x_name", "x", "seed", "dir")
# Frame name -> parquet file inside the run directory.
DATA_FILES = {
    "metrics": "metrics.parquet",
    "confusion": "confusion.parquet",
    "layers": "layers.parquet",
    "cosines": "cosines.parquet",
}
JSON_FILES = ("config.json", "manifest.json")
STUDY_LAYOUT = (
    "a study directory contains study.json with a 'runs' list and runs/<run_id>/ with "
    "config.json, manifest.json, metrics.parquet, confusion.parquet, layers.parquet, "
    "cosines.parquet and complete.json"
)


@dataclass(frozen=True)
class IncompleteRun:
    """A run listed in study.json that is left out of the analysis, with the reason."""

    run_id: str
    dir: str
    reason: str


@dataclass
class StudyData:
    """All complete runs of one study, as frames with the run labels joined in.

    ``runs`` has one row per complete run: the ``LABEL_COLUMNS``, ``dir``, and ``status``
    from complete.json ("completed" or "diverged"). ``metrics``, ``confusion``, ``layers``
    and ``cosines`` concatenate the runs' parquet files, each row prefixed by its run's
    labels. ``configs`` and ``manifests`` map run_id to the parsed JSON.
    """

    path: Path
    study: dict[str, Any]
    runs: pd.DataFrame
    metrics: pd.DataFrame
    confusion: pd.DataFrame
    layers: pd.DataFrame
    cosines: pd.DataFrame
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    incomplete: list[IncompleteRun] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """Study kind from study.json, e.g. "width-depth"."""
        return str(self.study.get("kind", ""))

    @property
    def name(self) -> str:
        """Study name from study.json, or the directory name when it has none."""
        return str(self.study.get("name") or self.path.name)


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


def _read_study_file(study_dir: Path) -> dict[str, Any]:
    if not study_dir.is_dir():
        raise FileNotFoundError(
            f"study directory {str(study_dir)!r} does not exist or is not a directory; "
            f"{STUDY_LAYOUT}. Pass the directory that the study command wrote."
        )
    study_file = study_dir / "study.json"
    if not study_file.is_file():
        found = sorted(entry.name for entry in study_dir.iterdir())[:10]
        raise FileNotFoundError(
            f"{str(study_dir)!r} is not a study directory: study.json is missing (found: "
            f"{', '.join(found) or 'nothing'}); {STUDY_LAYOUT}. Pass the directory that the "
            "study command wrote, not a run directory or its parent."
        )
    try:
        study = _read_json(study_file)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{str(study_file)!r} is not valid JSON ({error}); {STUDY_LAYOUT}. Rewrite the "
            "study, or restore study.json from the run that created it."
        ) from error
    if not isinstance(study, dict) or not isinstance(study.get("runs"), list):
        keys = sorted(study) if isinstance(study, dict) else type(study).__name__
        raise ValueError(
            f"{str(study_file)!r} has no 'runs' list (top level: {keys}); {STUDY_LAYOUT}. "
            "Pass a study written by gradconf."
        )
    return study


def _check_run_entries(runs: list[Any], study_file: Path) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(runs):
        if not isinstance(entry, dict):
            raise ValueError(
                f"{str(study_file)!r}: runs[{index}] is {entry!r}, expected an object with keys "
                f"{', '.join(REQUIRED_RUN_KEYS)}."
            )
        missing = [key for key in REQUIRED_RUN_KEYS if key not in entry]
        if missing:
            raise ValueError(
                f"{str(study_file)!r}: runs[{index}] lacks key(s) {', '.join(missing)}; each run "
                f"entry needs {', '.join(REQUIRED_RUN_KEYS)}. Rewrite the study with gradconf."
            )
        run_id = str(entry["run_id"])
        if run_id in seen:
            raise ValueError(
                f"{str(study_file)!r}: run_id {run_id!r} appears more than once; run ids must be "
                "unique. Remove the duplicate entry."
            )
        seen.add(run_id)


def _last_line(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _missing_reason(run_dir: Path) -> str | None:
    """Return why the run directory cannot be used, or None when it is complete."""
    # The run builder trains into runs/.<run_id>.partial, renames it when done, and records
    # a run that raised in runs/.<run_id>.error.txt.
    error_file = run_dir.parent / f".{run_dir.name}.error.txt"
    partial_dir = run_dir.parent / f".{run_dir.name}.partial"
    if not run_dir.is_dir():
        if error_file.is_file():
            return f"run failed: {_last_line(error_file)} (traceback in {error_file.name})"
        if partial_dir.is_dir():
            return f"run did not finish: only the partial directory {partial_dir.name} exists"
        return "run directory is missing (the run has not been started)"
    if not (run_dir / "complete.json").is_file():
        return "complete.json is missing (the run did not finish)"
    expected = (*JSON_FILES, *DATA_FILES.values())
    absent = [name for name in expected if not (run_dir / name).is_file()]
    if absent:
        return f"complete.json exists but {', '.join(absent)} is missing"
    return None


def _labeled(frame: pd.DataFrame, labels: dict[str, Any]) -> pd.DataFrame:
    """Prefix every row of ``frame`` with the run labels."""
    frame = frame.copy()
    for position, (name, value) in enumerate(labels.items()):
        if name in frame.columns:
            frame = frame.drop(columns=name)
        frame.insert(position, name, value)
    return frame


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return pd.DataFrame(columns=list(LABEL_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def load_study(path: str | Path) -> StudyData:
    """Load every complete run of a study directory into labeled frames.

    Runs without ``complete.json`` or with a missing or unreadable file are left out and
    listed in ``StudyData.incomplete`` with the reason (a warning is logged for each).
    Raises FileNotFoundError when ``path`` is not a study directory and ValueError when
    study.json is malformed.
    """
    study_dir = Path(path)
    study = _read_study_file(study_dir)
    _check_run_entries(study["runs"], study_dir / "study.json")

    label_rows: list[dict[str, Any]] = []
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in DATA_FILES}
    configs: dict[str, dict[str, Any]] = {}
    manifests: dict[str, dict[str, Any]] = {}
    incomplete: list[IncompleteRun] = []

    for entry in study["runs"]:
        run_id = str(entry["run_id"])
        run_dir = study_dir / str(entry["dir"])
        reason = _missing_reason(run_dir)
        if reason is None:
            try:
                config = _read_json(run_dir / "config.json")
                manifest = _read_json(run_dir / "manifest.json")
                completion = _read_json(run_dir / "complete.json")
                frames = {
                    name: pd.read_parquet(run_dir / file) for name, file in DATA_FILES.items()
                }
            except (OSError, ValueError) as error:
                # pyarrow raises ArrowInvalid, a ValueError, for a truncated parquet file.
                reason = f"a file could not be read: {type(error).__name__}: {error}"
        if reason is not None:
            logger.warning("study %s: run %s is left out: %s", study_dir, run_id, reason)
            incomplete.append(IncompleteRun(run_id=run_id, dir=str(entry["dir"]), reason=reason))
            continue

        labels = {name: entry.get(name) for name in LABEL_COLUMNS}
        labels["run_id"] = run_id
        status = "completed"
        if isinstance(completion, dict):
            status = completion.get("status", status)
        label_rows.append({**labels, "dir": str(entry["dir"]), "status": str(status)})
        configs[run_id] = config
        manifests[run_id] = manifest
        for name, frame in frames.items():
            parts[name].append(_labeled(frame, labels))

    runs = pd.DataFrame(label_rows, columns=[*LABEL_COLUMNS, "dir", "status"])
    logger.info(
        "study %s: loaded %d complete run(s), %d left out", study_dir, len(runs), len(incomplete)
    )
    return StudyData(
        path=study_dir,
        study=study,
        runs=runs,
        metrics=_concat(parts["metrics"]),
        confusion=_concat(parts["confusion"]),
        layers=_concat(parts["layers"]),
        cosines=_concat(parts["cosines"]),
        configs=configs,
        manifests=manifests,
        incomplete=incomplete,
    )
