"""The width/depth study: MLPs of several widths and depths, several seeds, one directory.

``STUDY/study.json`` lists the planned runs; each run lives in ``STUDY/runs/<run_id>``.
Rerunning the same study skips completed runs and redoes the rest; a directory that contains a
different study is rejected.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradconf.config import (
    DataConfig,
    MeasureConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
)
from gradconf.runs.io import write_json_atomic
from gradconf.runs.plan import PlannedRun, StudyOutcome, execute_plan

__all__ = ["PlannedRun", "StudySpec", "StudyOutcome", "plan_study", "run_study"]

logger = logging.getLogger(__name__)

STUDY_FILE = "study.json"
STUDY_KIND = "width-depth"


@dataclass(frozen=True)
class StudySpec:
    """Settings of a width/depth study; the defaults are the demo (about 5 minutes on 2 cores).

    The width sweep varies ``widths`` at ``base_depth``; the depth sweep varies ``depths`` at
    ``base_width``. Every configuration is trained once per seed.
    """

    dataset: str = "digits"
    data_root: str | None = None
    widths: tuple[int, ...] = (8, 32, 128, 512)
    depths: tuple[int, ...] = (1, 2, 4, 8)
    base_width: int = 64
    base_depth: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 20
    lr: float = 0.05
    batch_size: int = 128
    activation: str = "relu"
    init: str = "he"
    # Confusion is measured after every ``measure_every``-th epoch, at 0 and at the last.
    measure_every: int = 4
    num_pairs: int = 100
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("widths", "depths", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} is empty; give at least one value.")
            if len(set(values)) != len(values):
                raise ValueError(f"{name}={list(values)} contains duplicates; list each once.")
        for name in ("widths", "depths"):
            bad = [value for value in getattr(self, name) if value < 1]
            if bad:
                raise ValueError(f"{name} contains {bad}; widths and depths must be at least 1.")
        if self.measure_every < 1:
            raise ValueError(f"measure_every={self.measure_every} is invalid; it must be >= 1.")

    def base_config(self) -> RunConfig:
        """Return the run config shared by every run before width, depth and seed are set."""
        measure_epochs = sorted(
            set(range(0, self.epochs + 1, self.measure_every)) | {self.epochs}
        )
        return RunConfig(
            model=ModelConfig(kind="mlp", width=self.base_width, depth=self.base_depth,
                              activation=self.activation, init=self.init),
            data=DataConfig(name=self.dataset, root=self.data_root),
            train=TrainConfig(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                              measure_epochs=tuple(measure_epochs)),
            measure=MeasureConfig(granularity="minibatch", pairing="disjoint",
                                  num_pairs=self.num_pairs, batch_size=self.batch_size),
            device=self.device,
        )


def plan_study(spec: StudySpec) -> list[PlannedRun]:
    """Expand a spec into runs: the width sweep, then the depth sweep, each over all seeds."""
    base = spec.base_config()
    planned: list[PlannedRun] = []
    sweeps = [("width", spec.widths, spec.base_depth), ("depth", spec.depths, spec.base_width)]
    for group, values, _ in sweeps:
        for value in values:
            width = value if group == "width" else spec.base_width
            depth = value if group == "depth" else spec.base_depth
            for seed in spec.seeds:
                config = base.replace(**{"model.width": width, "model.depth": depth, "seed": seed})
                run_id = f"{group}-{value}-seed{seed}"
                labels = {"group": group, "x_name": group, "x": value, "seed": seed,
                          "width": width, "depth": depth}
                planned.append(PlannedRun(run_id, labels, config))
    return planned


def _spec_to_dict(spec: StudySpec) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def _prepare_directory(out_dir: Path, spec: StudySpec, planned: list[PlannedRun]) -> None:
    study_file = out_dir / STUDY_FILE
    settings = _spec_to_dict(spec)
    if study_file.is_file():
        existing = json.loads(study_file.read_text())
        if existing.get("kind") != STUDY_KIND or existing.get("settings") != settings:
            changed = sorted(
                key for key in set(settings) | set(existing.get("settings", {}))
                if settings.get(key) != existing.get("settings", {}).get(key)
            )
            raise FileExistsError(
                f"{out_dir} contains another study (kind {existing.get('kind')!r}; settings that "
                f"differ: {', '.join(changed) or 'none'}). Use a new --out directory, or rerun "
                "with the same settings to resume that study."
            )
        logger.info("resuming the study in %s", out_dir)
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} is not empty and contains no {STUDY_FILE}; gradconf will not write a study "
            "into a folder with other files. Use a new --out directory."
        )
    runs = [{"run_id": run.run_id, "dir": f"runs/{run.run_id}", **run.labels} for run in planned]
    write_json_atomic(
        study_file,
        {"kind": STUDY_KIND, "name": f"{spec.dataset} width/depth study",
         "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
         "settings": settings, "runs": runs},
    )


def load_spec(out_dir: Path) -> StudySpec:
    """Read the spec of an existing study directory."""
    data = json.loads((out_dir / STUDY_FILE).read_text())
    return config_from_dict(StudySpec, data["settings"])


def run_study(
    spec: StudySpec, out_dir: str | Path, *, progress: bool = True
) -> StudyOutcome:
    """Run (or resume) every planned run of ``spec`` into ``out_dir`` (see ``execute_plan``)."""
    out_dir = Path(out_dir)
    planned = plan_study(spec)
    _prepare_directory(out_dir, spec, planned)
    return execute_plan(planned, out_dir, progress=progress)
