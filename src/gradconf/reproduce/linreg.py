"""Linear least squares, under- vs over-parameterized: training speed and gradient confusion.

Problem (one per run, shared by both dimensions): N inputs x_i ~ N(0, I_D) with D the larger
dimension, a teacher w* ~ N(0, I_k/k) on the first k coordinates (k the smaller dimension),
and targets y_i = x_i[:k]ᵀw* + ε_i with ε_i ~ N(0, σ²), σ = ``noise``. The model of
dimension d takes the first d coordinates of every x_i, so the smaller model is the teacher's
own class, the larger one adds D − k irrelevant features. It is w ∈ R^d,
started at w_0 = 0, with per-example losses f_i(w) = ½(x_iᵀw − y_i)² and training loss
F(w) = (1/N) Σ_i f_i(w). SGD uses batch size 1, one pass over a fresh permutation per
epoch, and the constant step α = ``step``/d (‖x_i‖² ≈ d, so α‖x_i‖² ≈ ``step``).

With d < N the noise cannot be fitted, so F stalls near F* ≈ ½σ²(1 − d/N) and the
per-example gradients ∇f_i = r_i x_i (r_i the residual) stay apart at the minimum. With
d > N the model interpolates, every f_i reaches 0 at once, and SGD converges to F* = 0.

Confusion is measured on the normalized problem, with inputs x_i/√d (‖x_i‖ ≈ 1 for every
d), so values are comparable across d: there ⟨∇f_i, ∇f_j⟩ = r_i r_j x_iᵀx_j / d.
Cosines do not depend on this scaling.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from gradconf.measure import gram_statistics
from gradconf.runs.io import write_parquet_atomic
from gradconf.report import (
    Section,
    Verdict,
    figure_html,
    new_figure,
    plot_curves,
    plot_density,
    table_html,
)
from gradconf.reproduce.base import (
    ExperimentOutput,
    check_scale,
    mean_interval,
    settings_html,
)

__all__ = ["NAME", "TITLE", "run", "settings", "train_run"]

logger = logging.getLogger(__name__)

NAME = "linreg"
TITLE = "Linear regression: under- vs over-parameterized SGD"

_QUICK: dict[str, Any] = {
    "num_examples": 100,
    "dims": [80, 120],
    "batch_size": 1,
    "runs": 3,
    "epochs": 200,
    # Confusion statistics every this many epochs (and at epochs 0 and ``epochs``).
    "measure_every": 5,
    # α·‖x_i‖² ≈ 0.5, well inside the stability limit 2 of a per-example step.
    "step": 0.5,
    "noise": 0.1,
    "seed": 0,
}
_PAPER = {**_QUICK, "epochs": 400}
_SMOKE = {"num_examples": 12, "dims": [8, 16], "runs": 2, "epochs": 6, "measure_every": 2}

MEAN_INTERVAL_RULE = (
    "Per-run difference, mean over runs with a 95% Student t interval. Supported if the "
    "interval excludes 0 on the expected side, not supported if it excludes 0 on the other "
    "side, otherwise inconclusive."
)


def settings(scale: str) -> dict[str, Any]:
    """Return the resolved settings of ``scale``; only the number of epochs differs between scales.

    N = 100, d = 80 and 120, batch size 1 and 3 runs are the paper-scale values of this
    experiment. The step size, the noise and the epoch counts are this reproduction's own
    choices, not values taken from Sankararaman et al. (ICML 2020).
    """
    return dict(_QUICK if check_scale(scale) == "quick" else _PAPER)


def _problem(dim: int, run_index: int, config: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Return the first ``dim`` input columns, the targets and the SGD generator of a run.

    All dimensions of one run share the inputs and targets, so their comparison is paired.
    """
    dims = config["dims"]
    rng = np.random.default_rng([config["seed"], run_index])
    inputs = rng.standard_normal((config["num_examples"], max(dims)))  # [N, d_max]
    teacher = rng.standard_normal(min(dims)) / math.sqrt(min(dims))
    noise = config["noise"] * rng.standard_normal(config["num_examples"])
    targets = inputs[:, : min(dims)] @ teacher + noise
    sgd_rng = np.random.default_rng([config["seed"], run_index, dim])
    return inputs[:, :dim], targets, sgd_rng


def normalized_gram(inputs: np.ndarray, residuals: np.ndarray) -> torch.Tensor:
    """Return ⟨∇f_i, ∇f_j⟩ = r_i r_j x_iᵀx_j / d of the normalized problem: [N, d] -> [N, N]."""
    dim = inputs.shape[1]
    gram = np.outer(residuals, residuals) * (inputs @ inputs.T) / dim
    return torch.from_numpy(gram)


def train_run(dim: int, run_index: int, config: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train one run; return (per-epoch table, pairwise cosines at init and at the end).

    The per-epoch table has a row for epoch 0 (w_0), every ``measure_every``-th epoch and
    the last epoch: the training loss and the confusion statistics of all pairs. The cosine table has columns stage ("init",
    "final") and cosine.
    """
    inputs, targets, rng = _problem(dim, run_index, config)
    step = config["step"] / dim
    weights = np.zeros(dim)
    rows, cosines = [], []

    def record(epoch: int) -> None:
        residuals = inputs @ weights - targets
        stats, pair_cosines = gram_statistics(normalized_gram(inputs, residuals))
        rows.append(
            {
                "dim": dim,
                "run": run_index,
                "epoch": epoch,
                "loss": 0.5 * float(np.mean(residuals**2)),
                "eta": stats.eta,
                "min_cosine": stats.min_cosine,
                "mean_sq_norm": stats.mean_sq_norm,
            }
        )
        if epoch in (0, config["epochs"]):
            stage = "init" if epoch == 0 else "final"
            cosines.append(pd.DataFrame({"stage": stage, "cosine": pair_cosines}))

    record(0)
    for epoch in range(1, config["epochs"] + 1):
        for index in rng.permutation(config["num_examples"]):
            residual = inputs[index] @ weights - targets[index]
            weights -= step * residual * inputs[index]
        if epoch % config["measure_every"] == 0 or epoch == config["epochs"]:
            record(epoch)
    return pd.DataFrame(rows), pd.concat(cosines, ignore_index=True)


def _paired_verdict(
    per_run: pd.DataFrame, column: str, claim: str, statistic: str
) -> Verdict:
    """Test that the per-run values of ``column`` are > 0: their mean and 95% t interval."""
    values = per_run[column].to_numpy(dtype=float)
    mean, low, high = mean_interval(values)
    if math.isnan(low):
        verdict, reason = "inconclusive", "one run only, so there is no interval"
    elif low > 0:
        verdict, reason = "supported", ""
    elif high < 0:
        verdict, reason = "not supported", ""
    else:
        verdict, reason = "inconclusive", ""
    return Verdict(claim=claim, experiment=NAME, statistic=statistic, value=mean, ci_low=low,
                   ci_high=high, expected_sign=1, verdict=verdict, rule=MEAN_INTERVAL_RULE,
                   n_runs=len(values), reason=reason)


def _log10(values: pd.Series) -> pd.Series:
    # A loss or η̂ of exactly 0 is clipped to 1e-300, so its logarithm stays finite.
    return np.log10(values.clip(lower=1e-300))


def _verdicts(history: pd.DataFrame, under: int, over: int) -> list[Verdict]:
    last = history["epoch"].max()
    at = {stage: history[history["epoch"] == epoch].set_index(["run", "dim"])
          for stage, epoch in (("init", 0), ("final", last))}
    per_run = pd.DataFrame({
        "log_loss_gap": _log10(at["final"]["loss"].xs(under, level="dim"))
        - _log10(at["final"]["loss"].xs(over, level="dim")),
        "min_cosine_gap": at["init"]["min_cosine"].xs(over, level="dim")
        - at["init"]["min_cosine"].xs(under, level="dim"),
        "log_eta_gap": _log10(at["final"]["eta"].xs(under, level="dim"))
        - _log10(at["final"]["eta"].xs(over, level="dim")),
    })
    return [
        _paired_verdict(
            per_run, "log_loss_gap",
            f"Over-parameterized least squares (d={over}) reaches a lower training loss than "
            f"under-parameterized (d={under})",
            f"log10 F(d={under}) − log10 F(d={over}) after {last} epochs",
        ),
        _paired_verdict(
            per_run, "min_cosine_gap",
            f"d={over} has lower gradient confusion than d={under} at initialization",
            f"min cosine(d={over}) − min cosine(d={under}) over all pairs at w_0",
        ),
        _paired_verdict(
            per_run, "log_eta_gap",
            f"d={over} has lower gradient confusion than d={under} after training",
            f"log10 η̂(d={under}) − log10 η̂(d={over}) after {last} epochs, normalized "
            "inputs x/√d",
        ),
    ]


def _sections(history: pd.DataFrame, cosines: pd.DataFrame, config: dict[str, Any]) -> list[Section]:
    figure, ax = new_figure()
    plot_curves(history, "epoch", "loss", "dim", ax=ax, hue_label="d", logy=True)

    ax.set(xlabel="epoch", ylabel="training loss F(w)")
    loss_html = figure_html(
        figure,
        "Training loss per epoch (mean ± std over runs, log scale). Look for the d="
        f"{config['dims'][1]} curve falling below the d={config['dims'][0]} curve and "
        "continuing down, while the under-parameterized model levels off at its noise floor.",
        alt="training loss curves",
    )

    figure = Figure(figsize=(10.0, 3.8), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    for ax, stage in zip(panels, ("init", "final")):
        rows = cosines[cosines["stage"] == stage]
        plot_density({dim: group["cosine"] for dim, group in rows.groupby("dim")}, ax=ax,
                     value_range=(-1.0, 1.0), label_prefix="d=")
        ax.set(title=f"{stage} weights", xlabel="cosine of ∇f_i, ∇f_j")
    density_html = figure_html(
        figure,
        "Density of the pairwise cosines of per-example gradients, pooled over runs, at w_0 "
        "and after training. Look for the wider spread (more strongly negative pairs) of "
        "the smaller d.",
        alt="cosine densities",
    )

    eta_figure, ax = new_figure()
    plot_curves(history, "epoch", "eta", "dim", ax=ax, hue_label="d", logy=True)
    ax.set(xlabel="epoch", ylabel="η̂ (normalized inputs)")
    eta_html = figure_html(
        eta_figure,
        "Confusion bound η̂ = max(0, −min_{i≠j}⟨∇f_i, ∇f_j⟩) along training, normalized inputs. "
        "Look for η̂ shrinking towards 0 for the interpolating model only.",
        alt="eta along training",
    )

    last = history[history["epoch"] == history["epoch"].max()]
    table = last.groupby("dim")[["loss", "eta", "min_cosine"]].mean().reset_index()
    return [
        Section("Training loss", loss_html),
        Section("Confusion", density_html + eta_html
                + table_html(table, caption="Final epoch, mean over runs")),
        Section("Settings", settings_html(config)),
    ]


def run(
    scale: str,
    out_dir: Path,
    *,
    progress: bool = True,
    smoke: bool = False,
    data_root: Path | None = None,
    device: str = "auto",
) -> ExperimentOutput:
    """Train every (d, run) pair not yet stored under ``out_dir``, then test the claims.

    Each run is stored as ``runs/d{d}-run{r}.parquet`` (per-epoch history) and
    ``runs/d{d}-run{r}-cosines.parquet``. ``data_root`` and ``device`` are unused: the
    problem is generated and solved in NumPy float64 on the CPU.
    """
    config = {**settings(scale), **(_SMOKE if smoke else {})}
    under, over = config["dims"]
    histories, cosine_tables = [], []
    jobs = [(dim, run_index) for dim in config["dims"] for run_index in range(config["runs"])]
    for dim, run_index in tqdm(jobs, desc=NAME, disable=not progress):
        history_path = out_dir / "runs" / f"d{dim}-run{run_index}.parquet"
        cosine_path = out_dir / "runs" / f"d{dim}-run{run_index}-cosines.parquet"
        if history_path.exists() and cosine_path.exists():
            history, cosines = pd.read_parquet(history_path), pd.read_parquet(cosine_path)
        else:
            history, cosines = train_run(dim, run_index, config)
            logger.debug("trained d=%d run %d: final loss %.3g", dim, run_index,
                         history["loss"].iloc[-1])
            # The history is written last, so its presence marks a completed run.
            write_parquet_atomic(cosine_path, cosines)
            write_parquet_atomic(history_path, history)
        histories.append(history)
        cosine_tables.append(cosines.assign(dim=dim, run=run_index))
    history = pd.concat(histories, ignore_index=True)
    cosines = pd.concat(cosine_tables, ignore_index=True)

    notes = [
        f"Targets have noise σ = {config['noise']}, so d={under} cannot fit them and stalls "
        f"near ½σ²(1 − d/N) ≈ {0.5 * config['noise']**2 * (1 - under / config['num_examples']):.1e}, "
        f"while d={over} interpolates.",
        "In the first epochs the under-parameterized model can be ahead, because both are "
        "ill-conditioned (d/N close to 1) in different ways; the claim is tested at the last epoch.",
    ]
    return ExperimentOutput(NAME, _verdicts(history, under, over),
                            _sections(history, cosines, config), notes)
