"""Train configurations × learning rates × seeds and keep the best rate per configuration.

The training experiments of the reproduction pick each configuration's learning rate the way
Sankararaman et al. (ICML 2020) do: every configuration is trained with every rate of a log
grid, and the rate with the lowest final training loss wins. Here the loss is averaged over
the seeds, and the rule is ``gradconf.sweeps.select_from_losses``, shared with sweep files:
a diverged run counts as +inf, so one diverged seed rules its rate out, and ties go to the
smaller rate.

``run_grid`` writes into one directory:

- ``runs/<run_id>/``: one run directory per (configuration, rate, seed), written by
  ``execute_run``. A complete run is skipped on the next call, so the grid resumes. The run
  ids are those of sweep files (``gradconf.sweeps.run_id_for``), so a sweep of the same
  configurations run elsewhere, e.g. on a cluster, fills the same directory.
- ``lr_selection.csv``: the mean final training loss of every (configuration, rate) and
  which rate was selected.
- ``study.json``: the runs at the selected rates, in the layout of ``load_study``, so the
  report loaders and figures of ``gradconf.report`` read them like a width/depth study.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gradconf.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, TrainConfig
from gradconf.report import StudyData, load_study, table_html
from gradconf.runs.io import write_json_atomic, write_text_atomic
from gradconf.runs.plan import PlannedRun, StudyOutcome, execute_plan
from gradconf.runs.run import resolve_device
from gradconf.sweeps.directory import complete_digest
from gradconf.sweeps.expand import run_id_for
from gradconf.sweeps.selection import final_train_loss, select_from_losses

__all__ = [
    "GRID_KIND",
    "LR_RULE",
    "PAPER_PROTOCOL",
    "QUICK_PROTOCOL",
    "GridPoint",
    "GridResult",
    "default_jobs",
    "plan_grid",
    "run_config",
    "run_grid",
    "selection_html",
    "selection_table",
    "smoke_settings",
]

logger = logging.getLogger(__name__)

GRID_KIND = "lr-grid"
LR_RULE = (
    "per configuration, the learning rate with the lowest final training loss averaged over "
    "seeds; a diverged run counts as +inf and ties go to the smaller rate"
)
SELECTION_FILE = "lr_selection.csv"
# Worker processes on a CPU-only machine; more than this rarely pays off for one experiment.
MAX_CPU_JOBS = 4

# The training and measurement protocol of Sankararaman et al. (ICML 2020) for CIFAR-10: plain
# SGD (no momentum, weight decay or dropout), batch 128, 200 epochs, the rate divided by 10
# after 40% and 80% of the epochs (epochs 80 and 160), He init, 5 seeds, and confusion from
# 100 disjoint pairs of mini-batches of 128 after every epoch (None = every epoch).
# NOTE: the values of the learning-rate grid are gradconf's choice, a log grid around the
# rates that train these networks. Only the selection rule comes from the paper.
PAPER_PROTOCOL: dict[str, Any] = {
    "dataset": "cifar10",
    "augment": True,
    "max_train": None,
    "activation": "relu",
    "init": "he",
    "optimizer": "SGD",
    "epochs": 200,
    "batch_size": 128,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "lr_decay_at": [0.4, 0.8],
    "lr_decay_factor": 10.0,
    "lr_grid": [0.003, 0.01, 0.03, 0.1],
    "lr_rule": LR_RULE,
    "seeds": [0, 1, 2, 3, 4],
    "measure_epochs": None,
    "num_pairs": 100,
    "measure_batch_size": 128,
}
# The digits have 1,437 training images, so an epoch is 12 steps of 128. 20 epochs train the
# CNN with β = 10, ℓ = 1 to a training loss of about 0.05, and 20 pairs measured after epochs
# 0, 10 and 20 cost less than the training.
QUICK_PROTOCOL: dict[str, Any] = {
    **PAPER_PROTOCOL,
    "dataset": "digits",
    "augment": False,
    "epochs": 20,
    "lr_grid": [0.03, 0.1],
    "seeds": [0, 1, 2],
    "measure_epochs": [0, 10, 20],
    "num_pairs": 20,
}
# smoke=True keeps a scale's dataset, models and batch sizes and cuts everything else: one
# epoch on SMOKE_MAX_TRAIN examples, one seed, two rates, one pair measured before and after
# the epoch, and the first SMOKE_VALUES values of each varied axis. A paper-scale network
# costs seconds per run on a CPU, so one configuration is enough to prove that code path.
SMOKE_MAX_TRAIN = 192
SMOKE_RATES = 2
SMOKE_NUM_PAIRS = 1
SMOKE_VALUES = {"quick": 3, "paper": 1}


@dataclass(frozen=True)
class GridPoint:
    """One configuration of a grid, before the learning rate and the seed are set.

    ``key`` names the configuration in tables (``depth-16``). ``labels`` are written to
    study.json: ``group``, ``x_name``, ``x``, ``width`` and ``depth`` as ``load_study``
    expects them. ``config`` is the run config whose ``train.lr`` and ``seed`` are replaced.
    ``varied`` maps the dotted config fields that differ between the points to their values,
    in the axis order of the matching sweep file, because they make up the run id.
    """

    key: str
    labels: dict[str, Any]
    config: RunConfig
    varied: dict[str, Any]


@dataclass
class GridResult:
    """Outcome of ``run_grid``: the plan, what this call did, the selection and the data.

    ``selection`` has one row per (``config_key``, ``lr``) with ``seeds_done``,
    ``seeds_planned``, ``mean_final_train_loss`` and ``selected``. ``data`` contains the
    complete runs at the selected rates only; see ``run_grid`` for configurations without one.
    """

    planned: list[PlannedRun]
    outcome: StudyOutcome
    selection: pd.DataFrame
    data: StudyData


def smoke_settings(
    settings: dict[str, Any], scale: str, axes: Sequence[str], values: int | None = None
) -> dict[str, Any]:
    """Return ``settings`` cut to a run of seconds, as described at ``SMOKE_MAX_TRAIN``.

    ``axes`` names the list-valued settings that are varied (``"depths"``, ``"widths"``);
    each keeps its first ``values`` entries, by default ``SMOKE_VALUES[scale]``.
    """
    max_train = settings["max_train"]
    smoke = {
        **settings,
        "epochs": 1,
        "max_train": SMOKE_MAX_TRAIN if max_train is None else min(max_train, SMOKE_MAX_TRAIN),
        "seeds": settings["seeds"][:1],
        "lr_grid": settings["lr_grid"][:SMOKE_RATES],
        "measure_epochs": [0, 1],
        "num_pairs": SMOKE_NUM_PAIRS,
    }
    for axis in axes:
        smoke[axis] = settings[axis][: values or SMOKE_VALUES[scale]]
    return smoke


def run_config(
    settings: dict[str, Any],
    *,
    kind: str,
    width: int,
    depth: int,
    batchnorm: bool = False,
    skip: bool = False,
    data_root: Path | None = None,
    device: str = "auto",
) -> RunConfig:
    """Build the run config of one grid point from an experiment's resolved settings.

    ``settings`` uses the keys of the training experiments' settings: ``dataset``,
    ``augment``, ``max_train``, ``activation``, ``init``, ``epochs``, ``batch_size``,
    ``momentum``, ``weight_decay``, ``lr_decay_at``, ``lr_decay_factor``, ``lr_grid``,
    ``measure_epochs`` (a list, or None for every epoch), ``num_pairs`` and
    ``measure_batch_size``. ``data_root`` is only stored for datasets read from files, as an
    absolute path, so the run digests of the bundled data do not depend on it.
    """
    root = None
    if settings["dataset"] not in ("digits", "mnist1d", "sphere") and data_root is not None:
        root = str(Path(data_root).expanduser().resolve())
    measure_epochs = settings["measure_epochs"]
    return RunConfig(
        model=ModelConfig(kind=kind, width=width, depth=depth,
                          activation=settings["activation"], init=settings["init"],
                          batchnorm=batchnorm, skip=skip),
        data=DataConfig(name=settings["dataset"], root=root, augment=settings["augment"],
                        max_train=settings["max_train"]),
        train=TrainConfig(
            epochs=settings["epochs"],
            lr=settings["lr_grid"][0],
            batch_size=settings["batch_size"],
            momentum=settings["momentum"],
            weight_decay=settings["weight_decay"],
            lr_decay_at=tuple(settings["lr_decay_at"]),
            lr_decay_factor=settings["lr_decay_factor"],
            measure_epochs=None if measure_epochs is None else tuple(measure_epochs),
        ),
        measure=MeasureConfig(granularity="minibatch", pairing="disjoint",
                              num_pairs=settings["num_pairs"],
                              batch_size=settings["measure_batch_size"], batchnorm="train"),
        device=device,
    )


def plan_grid(
    points: Sequence[GridPoint], learning_rates: Sequence[float], seeds: Sequence[int]
) -> list[PlannedRun]:
    """Expand points × rates × seeds into runs, seeds fastest.

    A run id is the sweep id of the varied fields, the rate and the seed, e.g.
    ``model.depth=16,lr=0.1,seed=0``.
    """
    for name, values in (("key", [point.key for point in points]),
                         ("varied values", [run_id_for(point.varied) for point in points])):
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise ValueError(
                f"grid points must differ in their {name}, but {', '.join(duplicates)} "
                "appear more than once. List every configuration once."
            )
    for name, values in (("learning_rates", learning_rates), ("seeds", seeds)):
        if not values or len(set(values)) != len(values):
            raise ValueError(
                f"{name}={list(values)} is invalid; it must list at least one value, each once."
            )
    planned = []
    for point in points:
        for rate in learning_rates:
            for seed in seeds:
                config = point.config.replace(**{"train.lr": float(rate), "seed": int(seed)})
                labels = {**point.labels, "config_key": point.key, "lr": float(rate),
                          "seed": int(seed)}
                run_id = run_id_for({**point.varied, "train.lr": float(rate), "seed": int(seed)})
                planned.append(PlannedRun(run_id, labels, config))
    return planned


def default_jobs(device: str) -> int:
    """Return how many runs to train at once: 1 on a GPU, else one per core up to 4."""
    if resolve_device(device).type != "cpu":
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # sched_getaffinity does not exist on macOS and Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_CPU_JOBS))


def _execute(
    planned: list[PlannedRun], out_dir: Path, *, progress: bool, jobs: int
) -> StudyOutcome:
    """Train the runs that are not complete, in this process or in ``jobs`` worker processes."""
    if jobs <= 1:
        return execute_plan(planned, out_dir, progress=progress)
    from gradconf.sweeps.execute import LocalExecutor

    pending = [run for run in planned if not _is_complete(run, out_dir)]
    # Largest networks first (cost about width² × depth), so that no worker idles for long
    # while the last, long run of the other finishes.
    pending.sort(key=lambda run: run.config.model.width**2 * run.config.model.depth,
                 reverse=True)
    counts = {"completed": 0, "diverged": 0, "skipped": len(planned) - len(pending)}
    failed: dict[str, str] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc="runs", unit="run")
    try:
        for result in LocalExecutor(jobs).run(pending, str(out_dir)):
            if result.status == "failed":
                failed[result.run_id] = result.error or "unknown error"
            else:
                counts[result.status] += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return StudyOutcome(failed=failed, **counts)


def _is_complete(run: PlannedRun, out_dir: Path) -> bool:
    """Return True when ``out_dir/runs/<run_id>`` contains a complete run of this config."""
    return complete_digest(out_dir / "runs" / run.run_id) == run.config.digest()


def selection_table(planned: Sequence[PlannedRun], out_dir: Path) -> pd.DataFrame:
    """Apply the selection rule to the complete runs of ``planned`` under ``out_dir/runs``.

    Runs that are not complete (failed, not run yet, or a folder holding another config's
    run) are left out of the means and counted in ``seeds_planned`` only.
    """
    rows = []
    for run in planned:
        run_dir = out_dir / "runs" / run.run_id
        loss = final_train_loss(run_dir) if _is_complete(run, out_dir) else math.nan
        rows.append({"config_key": run.labels["config_key"], "lr": run.labels["lr"],
                     "seed": run.labels["seed"], "final_train_loss": loss})
    return select_from_losses(pd.DataFrame(rows, columns=["config_key", "lr", "seed",
                                                          "final_train_loss"]))


def _selected_runs(planned: list[PlannedRun], selection: pd.DataFrame) -> list[PlannedRun]:
    """Return the runs at each configuration's selected rate.

    A configuration without a selected rate (every rate diverged) keeps its runs at the
    smallest rate, so it stays in the analysis as diverged runs rather than disappearing.
    """
    chosen = {row.config_key: row.lr for row in selection.itertuples() if row.selected}
    smallest = selection.groupby("config_key")["lr"].min().to_dict()
    kept = []
    for run in planned:
        key = run.labels["config_key"]
        if run.labels["lr"] == chosen.get(key, smallest.get(key)):
            kept.append(run)
    return kept


def _write_study(out_dir: Path, name: str, runs: list[PlannedRun]) -> None:
    entries = [{"run_id": run.run_id, "dir": f"runs/{run.run_id}", **run.labels}
               for run in runs]
    write_json_atomic(
        out_dir / "study.json",
        {"kind": GRID_KIND, "name": name, "rule": LR_RULE,
         "written_at": dt.datetime.now(dt.timezone.utc).isoformat(), "runs": entries},
    )


def run_grid(
    points: Sequence[GridPoint],
    learning_rates: Sequence[float],
    seeds: Sequence[int],
    out_dir: str | Path,
    *,
    name: str,
    progress: bool = True,
    jobs: int = 1,
) -> GridResult:
    """Train (or resume) every run of the grid, select the rates and load the selected runs.

    Runs go to ``out_dir/runs`` through ``execute_plan`` (``jobs=1``) or through the sweep
    runner's worker processes (``jobs > 1``); complete runs are skipped either way. A run
    that raises is recorded in ``runs/.<run_id>.error.txt`` and left out, and the others go
    on. ``name`` is the study name written to study.json.
    """
    out_dir = Path(out_dir)
    planned = plan_grid(points, learning_rates, seeds)
    outcome = _execute(planned, out_dir, progress=progress, jobs=jobs)
    logger.info("%s: %d runs trained, %d already complete, %d diverged, %d failed", name,
                outcome.completed, outcome.skipped, outcome.diverged, len(outcome.failed))
    for run_id, error in outcome.failed.items():
        logger.error("%s: run %s failed: %s", name, run_id, error)

    selection = selection_table(planned, out_dir)
    write_text_atomic(out_dir / SELECTION_FILE, selection.to_csv(index=False))
    _write_study(out_dir, name, _selected_runs(planned, selection))
    return GridResult(planned, outcome, selection, load_study(out_dir))


def selection_html(result: GridResult) -> str:
    """Render the selection table, and the selected runs left out, as HTML for a report."""
    table = result.selection.rename(columns={
        "config_key": "configuration", "lr": "learning rate", "seeds_done": "seeds done",
        "seeds_planned": "seeds planned", "mean_final_train_loss": "mean final train loss",
    })
    markup = (
        f'<p class="note">Rule: {LR_RULE}. The figures and claims use the runs at the '
        "selected rates.</p>" + table_html(table)
    )
    chosen = result.selection[result.selection["selected"]]
    rates = result.selection["lr"]
    at_edge = chosen.loc[chosen["lr"].isin([rates.min(), rates.max()]), "config_key"].tolist()
    if at_edge and rates.nunique() > 1:
        markup += (
            '<p class="note">Selected at an end of the grid, so a rate outside it might train '
            f"these better: {', '.join(at_edge)}.</p>"
        )
    if result.data.incomplete:
        left_out = ", ".join(run.run_id for run in result.data.incomplete)
        markup += f'<p class="note">Selected runs left out as incomplete: {left_out}.</p>'
    return markup

