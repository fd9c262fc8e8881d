"""CNN-β-ℓ without batch norm or skips: gradient confusion and training speed vs depth and width.

Sankararaman et al. (ICML 2020) train the Wide-ResNet layout CNN-β-ℓ (depth β, width factor
ℓ) with batch norm and skip connections removed. They report that deeper networks have
higher gradient confusion (a lower minimum cosine between mini-batch gradients) and train
slower, while wider ones have lower confusion and train faster. ``DEPTH`` varies β at a
fixed ℓ and ``WIDTH`` varies ℓ at a fixed β. Every configuration is trained with each rate of
a log grid and several seeds, and the rate with the lowest final training loss is kept
(``lr_grid``).

Scales:

- paper: CIFAR-10 (``--data-root``, augmented), β ∈ {16, 22, 28, 34, 40} at ℓ = 2 and
  ℓ ∈ {2, 3, 4, 5, 6} at β = 16, the protocol of ``lr_grid.PAPER_PROTOCOL``.
- quick: the bundled 8×8 digits as 1-channel images, β ∈ {10, 16, 22} at ℓ = 1 and
  ℓ ∈ {1, 2, 4} at β = 10, 20 epochs, 2 rates, 3 seeds, 20 pairs measured at 3 epochs.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from gradconf.report import (
    Section,
    TrendClaim,
    evaluate_claims,
    figure_html,
    run_summary,
    table_html,
)
from gradconf.report.summary import select_measurement
from gradconf.report.width_depth import group_figures, run_table
from gradconf.reproduce.base import ExperimentOutput, check_scale, settings_html
from gradconf.reproduce.lr_grid import (
    PAPER_PROTOCOL,
    QUICK_PROTOCOL,
    GridPoint,
    GridResult,
    default_jobs,
    run_config,
    run_grid,
    selection_html,
    smoke_settings,
)

__all__ = ["CONFOUND_NOTE", "DEPTH", "WIDTH", "CNNExperiment", "require_data_root"]

logger = logging.getLogger(__name__)

CONFOUND_NOTE = (
    "The minimum cosine after training also depends on how far each network trained: the "
    "gradients of a network far from fitting the data stay aligned (high minimum cosine), "
    "while those of a network that fits it are small and noisy (low minimum cosine). When "
    "the networks reach different training losses, the confusion claims at initialization "
    "isolate the effect of the architecture."
)
# The plain network of both experiments: no batch norm, no skip connections.
PLAIN = {"batchnorm": False, "skip": False}
# Datasets read from files under --data-root (the others are bundled or generated).
FILE_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100")


def require_data_root(name: str, scale: str, settings: dict[str, Any], data_root: Any) -> None:
    """Raise ValueError when the settings need dataset files and no ``data_root`` is given."""
    if settings["dataset"] in FILE_DATASETS and data_root is None:
        raise ValueError(
            f"{name} at scale {scale!r} trains on {settings['dataset']}, which is read from "
            "files, but no data root was given. Pass --data-root DIR (data_root=) with the "
            "torchvision files of that dataset, or use --scale quick."
        )


class CNNExperiment:
    """The depth or the width experiment on CNN-β-ℓ (``axis`` "depth" or "width")."""

    def __init__(self, name: str, title: str, axis: str, scales: dict[str, dict[str, Any]]):
        if axis not in ("depth", "width"):
            raise ValueError(f"axis={axis!r} is invalid; allowed: 'depth', 'width'.")
        self.NAME = name
        self.TITLE = title
        self.axis = axis
        self._scales = scales

    def settings(self, scale: str) -> dict[str, Any]:
        """Return the resolved settings of ``scale`` ("quick" or "paper")."""
        return copy.deepcopy(self._scales[check_scale(scale)])

    def points(
        self, settings: dict[str, Any], *, data_root: Path | None = None, device: str = "auto"
    ) -> list[GridPoint]:
        """Return one grid point per depth (or width), before the rate and seed are set."""
        values = settings["depths"] if self.axis == "depth" else settings["widths"]
        points = []
        for value in values:
            depth = value if self.axis == "depth" else settings["depth"]
            width = value if self.axis == "width" else settings["width"]
            config = run_config(settings, kind="cnn", width=width, depth=depth,
                                batchnorm=settings["batchnorm"], skip=settings["skip"],
                                data_root=data_root, device=device)
            labels = {"group": self.axis, "x_name": self.axis, "x": value,
                      "width": width, "depth": depth}
            varied = {f"model.{self.axis}": value}
            points.append(GridPoint(f"{self.axis}-{value}", labels, config, varied))
        return points

    def claims(self) -> list[TrendClaim]:
        """Return the confusion and training-speed claims of this axis."""
        sign = -1 if self.axis == "depth" else 1
        more = "Deeper" if self.axis == "depth" else "Wider"
        confusion = "higher" if self.axis == "depth" else "lower"
        speed = "slower" if self.axis == "depth" else "faster"
        common = {"experiment": self.NAME, "experiment_column": "experiment", "x": "x",
                  "x_label": "β" if self.axis == "depth" else "ℓ"}
        return [
            TrendClaim(claim=f"{more} CNNs have {confusion} gradient confusion at "
                             "initialization", y="init_min_cosine", expected_sign=sign,
                       y_label="min cosine at epoch 0", **common),
            TrendClaim(claim=f"{more} CNNs have {confusion} gradient confusion after "
                             "training", y="final_min_cosine", expected_sign=sign,
                       y_label="final min cosine", **common),
            TrendClaim(claim=f"{more} CNNs train {speed}", y="train_loss_auc",
                       expected_sign=-sign, y_label="mean train loss, epochs 1..E", **common),
        ]

    def run(
        self,
        scale: str,
        out_dir: Path,
        *,
        progress: bool = True,
        smoke: bool = False,
        data_root: Path | None = None,
        device: str = "auto",
    ) -> ExperimentOutput:
        """Train or resume the grid under ``out_dir``, select the rates and test the claims."""
        settings = self.settings(scale)
        if smoke:
            settings = smoke_settings(settings, scale, [f"{self.axis}s"])
        require_data_root(self.NAME, scale, settings, data_root)
        points = self.points(settings, data_root=data_root, device=device)
        result = run_grid(points, settings["lr_grid"], settings["seeds"], out_dir,
                          name=self.NAME, progress=progress,
                          jobs=1 if smoke else default_jobs(device))
        return self.analyze(result, settings, scale)

    def analyze(
        self, result: GridResult, settings: dict[str, Any], scale: str
    ) -> ExperimentOutput:
        """Turn the selected runs into verdicts, figures and tables."""
        data = result.data
        summary = run_summary(data)
        summary["experiment"] = self.NAME
        verdicts = evaluate_claims(summary, self.claims())
        figures = group_figures(data, summary, select_measurement(data.confusion), self.axis)
        sections = [
            Section("Learning-rate selection", selection_html(result)),
            Section(f"Results by {self.axis}", "".join(
                figure_html(figure.png, figure.caption, alt=figure.alt) for figure in figures
            ) or "<p>No complete run to plot.</p>"),
            Section("Final metrics per run", table_html(run_table(summary))),
            Section("Settings", settings_html(settings)),
        ]
        return ExperimentOutput(self.NAME, verdicts, sections, self.notes(scale, summary))

    def notes(self, scale: str, summary: pd.DataFrame) -> list[str]:
        """Return the caveats shown next to this experiment's claims."""
        notes = [
            "Confusion is read from the minimum cosine over the measured mini-batch pairs, at "
            "epoch 0 and at the last measured epoch. Training speed is the mean training loss "
            "over epochs 1..E. Both use each configuration's selected learning rate.",
        ]
        diverged = summary.loc[summary["status"] == "diverged", "run_id"].tolist()
        if diverged:
            notes.append(f"Every rate diverged for these runs, kept as the slowest: "
                         f"{', '.join(diverged)}.")
        notes.append(CONFOUND_NOTE)
        if scale == "quick":
            notes.append(
                "Quick scale: 8×8 digits, 3 values of the axis, 3 seeds and 20 pairs per "
                "measurement. The trends can be checked, but their size cannot be compared "
                "with CIFAR-10, and the minimum over 20 pairs is less extreme than over the "
                "paper's 100. The deepest plain networks barely train in 20 epochs."
            )
        return notes


DEPTH = CNNExperiment(
    "cnn-depth",
    "CNN-β-ℓ without batch norm or skips: confusion and training speed vs depth",
    "depth",
    {"paper": {**PAPER_PROTOCOL, **PLAIN, "depths": [16, 22, 28, 34, 40], "width": 2},
     "quick": {**QUICK_PROTOCOL, **PLAIN, "depths": [10, 16, 22], "width": 1}},
)
WIDTH = CNNExperiment(
    "cnn-width",
    "CNN-β-ℓ without batch norm or skips: confusion and training speed vs width",
    "width",
    {"paper": {**PAPER_PROTOCOL, **PLAIN, "widths": [2, 3, 4, 5, 6], "depth": 16},
     "quick": {**QUICK_PROTOCOL, **PLAIN, "widths": [1, 2, 4], "depth": 10}},
)
