"""The table of reproduction experiments and the runner that executes a selection of them.

``EXPERIMENTS`` is the one place that lists the experiments, keyed by the name used on the
command line. ``run_experiments`` runs a selection in table order, each under
``OUT/<name>``, records its wall time, and records a failure without stopping the others.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradconf.reproduce import (
    bn_skip,
    cnn,
    linreg,
    mlp,
    sgd_bound,
    theory_orthogonal,
    theory_width_depth,
)
from gradconf.reproduce.base import Experiment, ExperimentOutput, check_scale
from gradconf.runs.io import write_json_atomic, write_text_atomic

__all__ = ["EXPERIMENTS", "ExperimentRecord", "resolve_names", "run_experiments"]

logger = logging.getLogger(__name__)

# Name on the command line -> experiment. The order is the order of the report.
EXPERIMENTS: dict[str, Experiment] = {
    "linreg": linreg,
    "theory-width-depth": theory_width_depth,
    "theory-orthogonal": theory_orthogonal,
    "sgd-bound": sgd_bound,
    "cnn-depth": cnn.DEPTH,
    "cnn-width": cnn.WIDTH,
    "bn-skip": bn_skip,
    "mlp-mnist": mlp,
}

ALL = "all"


@dataclass(frozen=True)
class ExperimentRecord:
    """Outcome of one experiment in one ``run_experiments`` call.

    ``status`` is "completed" or "failed". ``wall_s`` is the wall time of this call only,
    so work that an earlier call completed and this one skipped is not counted. ``error``
    is the traceback of a failed experiment, and ``output`` is None then.
    """

    name: str
    title: str
    status: str
    wall_s: float
    settings: dict[str, Any]
    output: ExperimentOutput | None
    error: str = ""


def resolve_names(
    names: Sequence[str], experiments: Mapping[str, Experiment] = EXPERIMENTS
) -> list[str]:
    """Expand "all" and check every name; return the names in table order without repeats.

    Raises ValueError naming the unknown names and listing the known ones.
    """
    if not names:
        raise ValueError(f"no experiment named; pass one of {', '.join(experiments)} or {ALL!r}.")
    unknown = [name for name in names if name != ALL and name not in experiments]
    if unknown:
        raise ValueError(
            f"unknown experiment(s): {', '.join(unknown)}. Known experiments: "
            f"{', '.join(experiments)}; or pass {ALL!r} to run them all."
        )
    if ALL in names:
        return list(experiments)
    return [name for name in experiments if name in names]


def _check_out_dir(out_dir: Path, scale: str, smoke: bool, settings: dict[str, Any]) -> None:
    """Record the scale and settings in ``out_dir/reproduce.json``, or check the recorded ones.

    Resuming is only sound with the settings that produced the stored results, so a
    directory written with other settings is rejected rather than mixed.
    """
    marker = out_dir / "reproduce.json"
    current = json.loads(json.dumps({"scale": scale, "smoke": smoke, "settings": settings},
                                    default=str))
    if not marker.exists():
        write_json_atomic(marker, current)
        return
    stored = json.loads(marker.read_text(encoding="utf-8"))
    if stored != current:
        raise ValueError(
            f"{out_dir} contains results of scale {stored.get('scale')!r} (smoke="
            f"{stored.get('smoke')}) whose settings differ from this run's (scale {scale!r}, "
            f"smoke={smoke}); pass another --out directory, or delete {out_dir} to start over."
        )


def run_experiments(
    names: Sequence[str],
    scale: str,
    out: Path,
    *,
    progress: bool = True,
    smoke: bool = False,
    data_root: Path | None = None,
    device: str = "auto",
    experiments: Mapping[str, Experiment] = EXPERIMENTS,
) -> list[ExperimentRecord]:
    """Run the named experiments in table order under ``out/<name>`` and return their records.

    An exception raised by one experiment (other than KeyboardInterrupt) is logged, written
    to ``out/<name>/error.txt`` and recorded as a failure, and the next experiment starts.
    A directory that contains results of other settings (recorded in its ``reproduce.json``)
    is such a failure too.
    """
    check_scale(scale)
    selected = resolve_names(names, experiments)
    records = []
    for name in selected:
        experiment = experiments[name]
        out_dir = out / name
        out_dir.mkdir(parents=True, exist_ok=True)
        logger.info("starting %s (scale=%s%s)", name, scale, ", smoke" if smoke else "")
        start = time.perf_counter()
        settings: dict[str, Any] = {}
        try:
            settings = experiment.settings(scale)
            _check_out_dir(out_dir, scale, smoke, settings)
            output = experiment.run(
                scale, out_dir, progress=progress, smoke=smoke, data_root=data_root, device=device
            )
        except Exception:
            wall_s = time.perf_counter() - start
            error = traceback.format_exc()
            logger.exception("experiment %s failed after %.1f s", name, wall_s)
            write_text_atomic(out_dir / "error.txt", error)
            records.append(
                ExperimentRecord(name, experiment.TITLE, "failed", wall_s, settings, None, error)
            )
            continue
        wall_s = time.perf_counter() - start
        (out_dir / "error.txt").unlink(missing_ok=True)
        logger.info("finished %s in %.1f s", name, wall_s)
        records.append(
            ExperimentRecord(name, experiment.TITLE, "completed", wall_s, settings, output)
        )
    return records
