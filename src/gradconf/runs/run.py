"""One run, one directory: resolved config, manifest, metrics and confusion in Parquet.

A run is built in a hidden sibling folder ``.<name>.partial`` and renamed into place when it
is complete, so a killed run never looks complete. ``complete.json`` is the last file written.
Rerunning skips a complete run whose config matches and redoes an incomplete one.

Files of a complete run directory:

- ``config.json``: ``RunConfig.to_dict()``
- ``manifest.json``: versions, seed, device, start/end times, wall time, determinism settings
- ``metrics.parquet``: one row per epoch (0 = initialization)
- ``confusion.parquet``: one row per measurement (``ConfusionStats`` fields plus epoch)
- ``layers.parquet``: per-parameter cosine summary per measurement
- ``cosines.parquet``: the pairwise cosine samples of every measurement
- ``complete.json``: status ("completed" or "diverged") and the config digest

While a run is built, ``checkpoint.pt`` in the partial folder contains the training state after
the last finished epoch. An interrupted run resumes from it and reproduces the
uninterrupted run exactly on the same device. It is removed when the run completes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import gradconf
from gradconf.config import DataConfig, RunConfig, config_from_dict
from gradconf.measure import Measurement
from gradconf.runs.io import write_json_atomic, write_parquet_atomic
from gradconf.training import EpochMetrics, TrainingDiverged, TrainState, loss_function, train

__all__ = ["RunOutcome", "execute_run", "load_run_config", "resolve_device", "run_state"]

logger = logging.getLogger(__name__)

COMPLETE_FILE = "complete.json"
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class RunOutcome:
    """Outcome of one run: "completed", "diverged" or "skipped" (already complete)."""

    run_dir: Path
    status: str
    wall_seconds: float


def resolve_device(device: str) -> torch.device:
    """Map "auto" to CUDA when present, else CPU; pass other names to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu' or 'cuda[:N]'."
        ) from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available; use 'cpu'.")
    return resolved


def run_state(run_dir: Path) -> str:
    """Return "complete", "incomplete" (a partial build exists) or "absent"."""
    if (run_dir / COMPLETE_FILE).is_file():
        return "complete"
    if _partial_dir(run_dir).exists() or run_dir.exists():
        return "incomplete"
    return "absent"


def load_run_config(run_dir: Path) -> RunConfig:
    """Read ``config.json`` of a run directory back into a ``RunConfig``."""
    data = json.loads((run_dir / "config.json").read_text())
    return config_from_dict(RunConfig, data)


def _partial_dir(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.partial"


@functools.lru_cache(maxsize=4)
def _cached_dataset(config: DataConfig) -> Any:
    from gradconf.data import load_dataset

    return load_dataset(config)


def _manifest(config: RunConfig, device: torch.device, labels: dict[str, Any]) -> dict[str, Any]:
    return {
        "gradconf_version": gradconf.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "seed": config.seed,
        "device": str(device),
        "config_digest": config.digest(),
        "labels": labels,
        "deterministic": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "num_threads": torch.get_num_threads(),
        },
    }


def _check_existing(run_dir: Path, config: RunConfig) -> bool:
    """Return True when ``run_dir`` contains this config's completed run; raise if it contains another config's run."""
    if not (run_dir / COMPLETE_FILE).is_file():
        return False
    existing = json.loads((run_dir / COMPLETE_FILE).read_text())
    if existing.get("config_digest") != config.digest():
        raise FileExistsError(
            f"{run_dir} contains a completed run of a different configuration (digest "
            f"{existing.get('config_digest')}, requested {config.digest()}). Choose another "
            "output directory or remove that run."
        )
    return True


def _save_checkpoint(folder: Path, state: TrainState) -> None:
    descriptor, temporary = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=folder)
    os.close(descriptor)
    try:
        torch.save(dataclasses.asdict(state), temporary)
        os.replace(temporary, folder / CHECKPOINT_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _load_checkpoint(folder: Path, config: RunConfig) -> TrainState | None:
    """Return the checkpoint of an interrupted build of this config, or None."""
    checkpoint = folder / CHECKPOINT_FILE
    if not checkpoint.is_file() or not (folder / "config.json").is_file():
        return None
    try:
        saved = config_from_dict(RunConfig, json.loads((folder / "config.json").read_text()))
        if saved.digest() != config.digest():
            return None
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        return TrainState(**state)
    except (OSError, ValueError, RuntimeError, TypeError, EOFError) as error:
        logger.warning("ignoring the unreadable checkpoint %s: %s", checkpoint, error)
        return None


class _RunRecorder:
    """Collect epoch metrics and measurements and rewrite the Parquet files as they grow."""

    def __init__(self, folder: Path, max_cosines: int | None) -> None:
        self.folder = folder
        self.max_cosines = max_cosines
        self.epochs: list[dict[str, Any]] = []
        self.confusion: list[dict[str, Any]] = []
        self.layers: list[dict[str, Any]] = []
        self.cosines: list[pd.DataFrame] = []

    def restore(self, epoch: int) -> None:
        """Reload the rows written for epochs up to ``epoch`` by an interrupted build."""

        def rows(name: str) -> pd.DataFrame:
            path = self.folder / name
            frame = pd.read_parquet(path) if path.is_file() else pd.DataFrame({"epoch": []})
            return frame[frame["epoch"] <= epoch] if len(frame) else frame

        self.epochs = rows("metrics.parquet").to_dict("records")
        self.confusion = rows("confusion.parquet").to_dict("records")
        self.layers = rows("layers.parquet").to_dict("records")
        cosines = rows("cosines.parquet")
        self.cosines = [cosines] if len(cosines) else []

    def on_epoch(self, metrics: EpochMetrics) -> None:
        self.epochs.append(dataclasses.asdict(metrics))
        write_parquet_atomic(self.folder / "metrics.parquet", pd.DataFrame(self.epochs))

    def on_measure(self, epoch: int, measurement: Measurement) -> None:
        row = {"epoch": epoch, "granularity": measurement.granularity,
               "pairing": measurement.pairing, "engine": measurement.engine,
               "batchnorm": measurement.batchnorm, "coverage": measurement.coverage.share}
        row.update(measurement.stats.to_dict())
        self.confusion.append(row)
        for layer, stats in measurement.layers.items():
            self.layers.append({"epoch": epoch, "layer": layer, **dataclasses.asdict(stats)})
        cosines = measurement.cosines
        if self.max_cosines is not None and cosines.size > self.max_cosines:
            cosines = cosines[: self.max_cosines]
        self.cosines.append(
            pd.DataFrame({"epoch": np.full(cosines.size, epoch, dtype=np.int64),
                          "cosine": cosines.astype(np.float32)})
        )
        self.flush_measurements()

    def flush_measurements(self) -> None:
        write_parquet_atomic(self.folder / "confusion.parquet", pd.DataFrame(self.confusion))
        write_parquet_atomic(self.folder / "layers.parquet", pd.DataFrame(self.layers))
        frame = pd.concat(self.cosines, ignore_index=True) if self.cosines else pd.DataFrame(
            {"epoch": pd.Series(dtype="int64"), "cosine": pd.Series(dtype="float32")}
        )
        write_parquet_atomic(self.folder / "cosines.parquet", frame)


def execute_run(
    config: RunConfig,
    run_dir: str | Path,
    *,
    labels: dict[str, Any] | None = None,
    progress: bool = False,
) -> RunOutcome:
    """Train and measure one configuration into ``run_dir``; skip it if already complete.

    A diverged run (non-finite training loss) is complete with status "diverged": its
    metrics up to the divergence are kept and it is not retried.
    """
    from gradconf.models import build_model

    run_dir = Path(run_dir)
    if _check_existing(run_dir, config):
        logger.info("run %s is complete; skipping it", run_dir.name)
        return RunOutcome(run_dir, "skipped", 0.0)
    if run_dir.exists():
        raise FileExistsError(
            f"{run_dir} exists but contains no completed run (no {COMPLETE_FILE}); it was not "
            "written by gradconf's run builder. Move it away and rerun."
        )
    partial = _partial_dir(run_dir)
    device = resolve_device(config.device)
    resume_from = _load_checkpoint(partial, config)
    if resume_from is None:
        if partial.exists():
            logger.info("removing the incomplete run %s left by an interrupted run", partial)
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    labels = dict(labels or {})
    manifest = _manifest(config, device, labels)
    manifest["started_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    if resume_from is not None:
        manifest["resumed_after_epoch"] = resume_from.epoch
    write_json_atomic(partial / "config.json", config.to_dict())
    write_json_atomic(partial / "manifest.json", manifest)

    dataset = _cached_dataset(config.data)
    torch.manual_seed(config.seed)
    model = build_model(config.model, tuple(dataset.input_shape), dataset.num_classes).to(device)
    if dataset.num_classes == 1 and config.train.loss != "mse":
        raise ValueError(
            f"dataset {config.data.name!r} is a regression task; set train.loss='mse' "
            f"(received {config.train.loss!r})."
        )
    recorder = _RunRecorder(partial, config.measure.max_cosines)
    if resume_from is not None:
        recorder.restore(resume_from.epoch)
    clock = time.perf_counter()
    status = "completed"
    error = None
    try:
        train(model, dataset, config.train, config.measure, seed=config.seed,
              on_epoch=recorder.on_epoch, on_measure=recorder.on_measure,
              on_checkpoint=lambda state: _save_checkpoint(partial, state),
              resume_from=resume_from, progress=progress)
    except TrainingDiverged as diverged:
        status = "diverged"
        error = str(diverged)
        logger.warning("run %s: %s", run_dir.name, diverged)
    if not recorder.confusion:
        recorder.flush_measurements()
    wall_seconds = time.perf_counter() - clock + (resume_from.wall_seconds if resume_from else 0.0)
    (partial / CHECKPOINT_FILE).unlink(missing_ok=True)
    manifest["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat()
    manifest["wall_seconds"] = wall_seconds
    manifest["status"] = status
    write_json_atomic(partial / "manifest.json", manifest)
    write_json_atomic(
        partial / COMPLETE_FILE,
        {"status": status, "config_digest": config.digest(), "error": error,
         "loss": loss_function(config.train.loss).__name__},
    )
    partial.rename(run_dir)
    return RunOutcome(run_dir, status, wall_seconds)
