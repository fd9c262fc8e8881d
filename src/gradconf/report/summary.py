"""Per-run summary numbers of a loaded study: final metrics, training speed, final confusion.

``run_summary`` reduces each run to one row, which is the table the verdicts and the
metric-versus-x figures use. "Final" means the last epoch a run recorded: the last row of
metrics.parquet for losses and accuracy, and the last measured epoch of confusion.parquet
for cosines. The two can differ when ``train.measure_epochs`` skips the last epoch, so both
epochs are kept as columns. A diverged run stopped early, so its last recorded values are not
comparable with other runs' final values: its cosine columns are NaN and its
``train_loss_auc`` is +inf, which ranks it as the slowest run.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd

from gradconf.report.load import LABEL_COLUMNS, StudyData

__all__ = ["final_cosine_samples", "run_summary", "select_measurement", "train_loss_auc"]

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = (
    *LABEL_COLUMNS,
    "status",
    "final_epoch",
    "final_train_loss",
    "train_loss_auc",
    "final_test_loss",
    "final_test_accuracy",
    "confusion_epoch",
    "final_min_cosine",
    "final_mean_cosine",
    "final_eta",
    "init_min_cosine",
    "wall_seconds",
)


def train_loss_auc(epochs: Any, losses: Any) -> float:
    """Return the mean training loss over epochs 1..E, the area under the loss curve per epoch.

    Epoch 0 (before training) is excluded, so the value measures how fast training lowers
    the loss. A run that diverged (a NaN or infinite loss at any epoch) gets +inf, which ranks
    it as the slowest run. Returns NaN when no epoch after 0 was recorded.
    """
    epochs_array = np.asarray(epochs)
    losses_array = np.asarray(losses, dtype=float)
    trained = losses_array[epochs_array >= 1]
    if trained.size == 0:
        return math.nan
    if not np.isfinite(trained).all():
        return math.inf
    return float(trained.mean())


def select_measurement(
    confusion: pd.DataFrame, granularity: str | None = None, pairing: str | None = None
) -> pd.DataFrame:
    """Keep the confusion rows of one measurement protocol (granularity and pairing).

    With ``granularity`` or ``pairing`` left as None, the frame must contain a single value
    of that column; otherwise ValueError lists the values found.
    """
    selected = confusion
    for column, wanted in (("granularity", granularity), ("pairing", pairing)):
        if column not in selected.columns or selected.empty:
            continue
        found = sorted(map(str, selected[column].dropna().unique()))
        if wanted is None:
            if len(found) > 1:
                raise ValueError(
                    f"confusion.parquet contains several {column} values ({', '.join(found)}); "
                    f"a summary needs one. Pass {column}= one of them."
                )
            continue
        if wanted not in found:
            raise ValueError(
                f"{column}={wanted!r} not found in confusion.parquet; values present: "
                f"{', '.join(found) or 'none'}."
            )
        selected = selected[selected[column] == wanted]
    return selected


def _last_row(frame: pd.DataFrame) -> pd.Series | None:
    if frame.empty:
        return None
    return frame.sort_values("epoch").iloc[-1]


def _value(row: pd.Series | None, column: str) -> float:
    if row is None or column not in row.index:
        return math.nan
    return float(row[column])


def run_summary(
    data: StudyData, *, granularity: str | None = None, pairing: str | None = None
) -> pd.DataFrame:
    """Return one row per complete run with its final metrics and confusion (``SUMMARY_COLUMNS``).

    ``train_loss_auc`` is ``train_loss_auc(epochs, train_loss)``; ``final_min_cosine``,
    ``final_mean_cosine`` and ``final_eta`` come from the last measured epoch of the chosen
    measurement protocol (see ``select_measurement``), ``init_min_cosine`` from epoch 0
    (initialization, where the theory applies). A diverged run gets NaN final cosine
    columns and a ``train_loss_auc`` of +inf.
    """
    confusion = select_measurement(data.confusion, granularity, pairing)
    metrics_by_run = dict(tuple(data.metrics.groupby("run_id"))) if not data.metrics.empty else {}
    confusion_by_run = dict(tuple(confusion.groupby("run_id"))) if not confusion.empty else {}

    rows = []
    for run in data.runs.itertuples(index=False):
        metrics = metrics_by_run.get(run.run_id, pd.DataFrame())
        measured = confusion_by_run.get(run.run_id, pd.DataFrame())
        last_metrics = _last_row(metrics)
        last_measured = _last_row(measured)
        initial = measured[measured["epoch"] == 0] if not measured.empty else measured
        init_measured = None if initial.empty else initial.iloc[0]
        diverged = run.status == "diverged"
        if diverged:
            last_measured = None
        elif last_measured is None:
            logger.warning("run %s has no confusion rows; its cosine columns are NaN", run.run_id)
        if diverged or metrics.empty:
            auc = math.inf if diverged else math.nan
        else:
            auc = train_loss_auc(metrics["epoch"], metrics["train_loss"])
        wall = data.manifests.get(run.run_id, {}).get("wall_seconds")
        rows.append(
            {
                **{name: getattr(run, name) for name in LABEL_COLUMNS},
                "status": run.status,
                "final_epoch": _value(last_metrics, "epoch"),
                "final_train_loss": _value(last_metrics, "train_loss"),
                "train_loss_auc": auc,
                "final_test_loss": _value(last_metrics, "test_loss"),
                "final_test_accuracy": _value(last_metrics, "test_accuracy"),
                "confusion_epoch": _value(last_measured, "epoch"),
                "final_min_cosine": _value(last_measured, "min_cosine"),
                "final_mean_cosine": _value(last_measured, "mean_cosine"),
                "final_eta": _value(last_measured, "eta"),
                "init_min_cosine": _value(init_measured, "min_cosine"),
                "wall_seconds": float(wall) if wall is not None else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def final_cosine_samples(data: StudyData, group: str) -> dict[Any, np.ndarray]:
    """Pool the cosine samples of each run's last measured epoch over seeds, keyed by x.

    Only runs of ``group`` ("width" or "depth" in a width-depth study) that did not diverge
    are used. The keys are sorted by x. NaN cosines (pairs with a zero gradient) are dropped.
    """
    # NOTE: cosines.parquet has no granularity or pairing column, so a run that recorded
    # several measurement protocols at its last epoch contributes the samples of all of them.
    if data.cosines.empty:
        return {}
    finished = data.runs.loc[data.runs["status"] != "diverged", "run_id"]
    cosines = data.cosines[(data.cosines["group"] == group) & data.cosines["run_id"].isin(finished)]
    pooled: dict[Any, list[np.ndarray]] = {}
    for (x_value, _run_id), samples in cosines.groupby(["x", "run_id"]):
        last = samples[samples["epoch"] == samples["epoch"].max()]["cosine"].to_numpy(dtype=float)
        pooled.setdefault(x_value, []).append(last[~np.isnan(last)])
    return {x_value: np.concatenate(pooled[x_value]) for x_value in sorted(pooled)}
