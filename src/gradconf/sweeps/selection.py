"""Learning-rate selection: per configuration, the rate with the lowest mean final training loss.

A configuration is one combination of every varied value except the learning rate and the
seed. For each configuration and learning rate, the final training loss (the last row of a
run's ``metrics.parquet``) is averaged over the seeds whose runs are complete. A diverged run,
or one whose final loss is not finite, counts as +inf, so one diverged seed rules out that rate.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from gradconf.sweeps.directory import complete_digest, read_sweep_file

__all__ = ["final_train_loss", "select_learning_rates", "select_from_losses"]

logger = logging.getLogger(__name__)

RUN_KEYS = ("run_id", "dir", "config_digest")
LR_LABEL = "train.lr"


def final_train_loss(run_dir: Path) -> float:
    """Return the training loss after the last epoch of a complete run (+inf if diverged)."""
    status = json.loads((run_dir / "complete.json").read_text(encoding="utf-8"))
    if status.get("status") == "diverged":
        return math.inf
    metrics = pd.read_parquet(run_dir / "metrics.parquet", columns=["epoch", "train_loss"])
    if metrics.empty:
        return math.inf
    loss = float(metrics.sort_values("epoch")["train_loss"].iloc[-1])
    return loss if math.isfinite(loss) else math.inf


def select_from_losses(losses: pd.DataFrame) -> pd.DataFrame:
    """Select one learning rate per configuration from a table of final losses.

    ``losses`` has one row per run: the configuration's label columns, ``lr``, ``seed`` and
    ``final_train_loss`` (NaN for a run that is not complete yet). Returns one row per
    configuration and learning rate with ``seeds_done``, ``seeds_planned``,
    ``mean_final_train_loss`` and ``selected``. Only rates with at least one complete run
    compete; ties go to the smaller rate; no rate is selected when all of them diverged.
    """
    config_columns = [column for column in losses.columns
                      if column not in ("lr", "seed", "final_train_loss")]
    rows: dict[tuple[str, float], dict[str, Any]] = {}
    for record in losses.to_dict(orient="records"):
        labels = {column: record[column] for column in config_columns}
        key = (json.dumps(labels, sort_keys=True, default=str), float(record["lr"]))
        row = rows.setdefault(key, {**labels, "lr": float(record["lr"]), "losses": [],
                                    "seeds_planned": 0})
        row["seeds_planned"] += 1
        if not pd.isna(record["final_train_loss"]):
            row["losses"].append(float(record["final_train_loss"]))

    best: dict[str, tuple[float, float]] = {}
    for (config_key, rate), row in rows.items():
        row["seeds_done"] = len(row["losses"])
        # Any +inf makes the mean +inf, which is the rule for diverged runs.
        row["mean_final_train_loss"] = (sum(row["losses"]) / len(row["losses"])
                                        if row["losses"] else math.nan)
        mean = row["mean_final_train_loss"]
        if math.isfinite(mean) and (config_key not in best or (mean, rate) < best[config_key]):
            best[config_key] = (mean, rate)
    table = []
    for (config_key, rate), row in rows.items():
        row.pop("losses")
        row["selected"] = config_key in best and best[config_key][1] == rate
        table.append(row)
    unselected = {key for key, _ in rows} - set(best)
    if unselected:
        logger.warning("%d configuration(s) have no learning rate with a finite mean final "
                       "loss (all diverged or none complete); none is selected for them",
                       len(unselected))
    columns = [*config_columns, "lr", "seeds_done", "seeds_planned", "mean_final_train_loss",
               "selected"]
    return pd.DataFrame(table, columns=columns)


def select_learning_rates(out_dir: str | Path) -> pd.DataFrame:
    """Select a learning rate per configuration of the sweep in ``out_dir``.

    Returns the table of ``select_from_losses``; the label columns are the varied fields
    other than ``train.lr`` and ``seed``. Runs still pending are counted in
    ``seeds_planned`` but not in the mean, so the selection can change until the sweep is
    done. Raises ValueError when the sweep has no ``[lr_selection]``.
    """
    out_path = Path(out_dir)
    sweep = read_sweep_file(out_path)
    if not sweep.get("spec", {}).get("lr_selection"):
        raise ValueError(f"the sweep in {out_path} has no [lr_selection] table, so there is "
                         "no learning rate to select. Add one to the sweep file.")
    records = []
    for entry in sweep["runs"]:
        labels = {key: value for key, value in entry.items() if key not in RUN_KEYS}
        run_dir = out_path / entry["dir"]
        loss = math.nan
        if complete_digest(run_dir) == entry["config_digest"]:
            loss = final_train_loss(run_dir)
        record = {key: value for key, value in labels.items() if key not in (LR_LABEL, "seed")}
        record.update(lr=labels[LR_LABEL], seed=labels["seed"], final_train_loss=loss)
        records.append(record)
    return select_from_losses(pd.DataFrame(records))
