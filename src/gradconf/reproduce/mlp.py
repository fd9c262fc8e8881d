"""MLPs on MNIST: gradient confusion and training speed vs width and depth.

The width/depth study of ``gradconf.runs.study`` (a width sweep at a fixed depth and a depth
sweep at a fixed width), trained with the protocol of the CNN experiments. Every
configuration is trained with each rate of a log grid and several seeds, and the rate with
the lowest final training loss is kept (``lr_grid``). The claims are the study's
(``gradconf.report.WIDTH_DEPTH_CLAIMS``): wider MLPs have lower confusion and train faster,
while deeper ones have higher confusion and train slower.

Scales:

- paper: MNIST from ``--data-root``, the protocol of ``lr_grid.PAPER_PROTOCOL``.
- quick: the bundled digits and the study's default widths and depths, 20 epochs.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

from gradconf.report import (
    WIDTH_DEPTH_CLAIMS,
    Section,
    evaluate_claims,
    figure_html,
    run_summary,
    table_html,
)
from gradconf.report.summary import select_measurement
from gradconf.report.width_depth import GROUPS, group_figures, run_table
from gradconf.reproduce.base import ExperimentOutput, check_scale, settings_html
from gradconf.reproduce.cnn import CONFOUND_NOTE, require_data_root
from gradconf.reproduce.lr_grid import (
    PAPER_PROTOCOL,
    QUICK_PROTOCOL,
    GridPoint,
    default_jobs,
    run_config,
    run_grid,
    selection_html,
    smoke_settings,
)
from gradconf.runs.study import StudySpec, plan_study

__all__ = ["NAME", "TITLE", "points", "run", "settings"]

logger = logging.getLogger(__name__)

NAME = "mlp-mnist"
TITLE = "MLPs: confusion and training speed vs width and depth (MNIST; digits when quick)"

# NOTE: the paper-scale widths and depths are gradconf's choice: a factor-of-32 range of
# widths and depths up to 16 hidden layers. The depth sweep's width of 100 is not among the
# widths, so the two sweeps share no configuration, as a sweep file requires.
_SCALES: dict[str, dict[str, Any]] = {
    "paper": {**PAPER_PROTOCOL, "dataset": "mnist", "augment": False,
              "widths": [16, 32, 64, 128, 256, 512], "base_depth": 4,
              "depths": [1, 2, 4, 8, 16], "base_width": 100},
    # MLPs on the digits train in a few seconds, so the quick scale measures the 100 pairs of
    # PAPER_PROTOCOL and adds the rate 0.3, because every configuration selected 0.1 when the
    # grid was (0.03, 0.1).
    "quick": {**QUICK_PROTOCOL, "widths": [8, 32, 128, 512], "base_depth": 2,
              "depths": [1, 2, 4, 8], "base_width": 64, "lr_grid": [0.03, 0.1, 0.3],
              "num_pairs": 100},
}


def settings(scale: str) -> dict[str, Any]:
    """Return the resolved settings of ``scale`` ("quick" or "paper")."""
    return copy.deepcopy(_SCALES[check_scale(scale)])


def points(
    resolved: dict[str, Any], *, data_root: Path | None = None, device: str = "auto"
) -> list[GridPoint]:
    """Return the study's width and depth configurations as grid points.

    ``plan_study`` expands the widths and depths into labeled runs (group, x_name, x, width,
    depth); each run's config is then rebuilt with this experiment's protocol.
    """
    spec = StudySpec(dataset=resolved["dataset"], widths=tuple(resolved["widths"]),
                     depths=tuple(resolved["depths"]), base_width=resolved["base_width"],
                     base_depth=resolved["base_depth"], seeds=(0,),
                     activation=resolved["activation"], init=resolved["init"])
    grid = []
    for planned in plan_study(spec):
        labels = {key: value for key, value in planned.labels.items() if key != "seed"}
        config = run_config(resolved, kind="mlp", width=labels["width"], depth=labels["depth"],
                            data_root=data_root, device=device)
        varied = {"model.width": labels["width"], "model.depth": labels["depth"]}
        grid.append(GridPoint(f"{labels['group']}-{labels['x']}", labels, config, varied))
    return grid


def run(
    scale: str,
    out_dir: Path,
    *,
    progress: bool = True,
    smoke: bool = False,
    data_root: Path | None = None,
    device: str = "auto",
) -> ExperimentOutput:
    """Train or resume the width and depth sweeps under ``out_dir`` and test the claims."""
    resolved = settings(scale)
    if smoke:
        resolved = smoke_settings(resolved, scale, ["widths", "depths"])
    require_data_root(NAME, scale, resolved, data_root)
    grid = points(resolved, data_root=data_root, device=device)
    result = run_grid(grid, resolved["lr_grid"], resolved["seeds"], out_dir, name=NAME,
                      progress=progress, jobs=1 if smoke else default_jobs(device))

    data = result.data
    summary = run_summary(data)
    verdicts = [
        dataclasses.replace(verdict, experiment=NAME,
                            claim=verdict.claim.replace("networks", "MLPs"))
        for verdict in evaluate_claims(summary, WIDTH_DEPTH_CLAIMS)
    ]
    confusion = select_measurement(data.confusion)
    sections = [Section("Learning-rate selection", selection_html(result))]
    for group in GROUPS:
        figures = group_figures(data, summary, confusion, group)
        body = "".join(figure_html(f.png, f.caption, alt=f.alt) for f in figures)
        sections.append(Section(f"{group.capitalize()} sweep",
                                body or "<p>No complete run to plot.</p>"))
    sections += [
        Section("Final metrics per run", table_html(run_table(summary))),
        Section("Settings", settings_html(resolved)),
    ]
    notes = [
        f"Width sweep at depth {resolved['base_depth']}, depth sweep at width "
        f"{resolved['base_width']} (hidden layers and hidden units). Each claim uses the runs "
        "at the selected learning rate of each configuration.",
    ]
    notes.append(CONFOUND_NOTE)
    if scale == "quick":
        notes.append(
            "Quick scale: the bundled 8×8 digits instead of MNIST, 20 epochs. The trends can "
            "be checked, but their size is not comparable with MNIST."
        )
    return ExperimentOutput(NAME, verdicts, sections, notes)
