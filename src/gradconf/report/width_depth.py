"""Figures and page sections of the width-depth study report.

The width experiment varies the MLP width at a fixed depth; the depth experiment varies the
depth at a fixed width. Each experiment gets five figures, all colored by x in the same order.
Runs that diverged are left out of the figures (each caption names them) but stay in the
per-run table and in the training-speed claims, where they rank as the slowest runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.ticker import MaxNLocator

from gradconf.report.figures import (
    figure_to_png,
    format_value,
    new_figure,
    ordered_colors,
    plot_curves,
    plot_density,
    plot_metric_vs_x,
)
from gradconf.report.load import StudyData
from gradconf.report.summary import final_cosine_samples

__all__ = ["GROUPS", "ReportFigure", "describe_setup", "group_figures", "provenance", "run_table"]

GROUPS = ("width", "depth")
# Axis names of width and depth per model kind. For the CNN they are Wide-ResNet parameters.
X_AXIS_LABELS = {
    ("mlp", "width"): "width (hidden units per layer)",
    ("mlp", "depth"): "depth (hidden layers)",
    ("cnn", "width"): "width factor ℓ (Wide-ResNet)",
    ("cnn", "depth"): "depth β (Wide-ResNet layers)",
}
LOSS_LABELS = {
    "cross_entropy": "training loss (cross-entropy, nats)",
    "mse": "training loss (mean squared error)",
}
# Per experiment: how the min cosine, the loss curves and the cosine density change as x grows,
# as predicted by Sankararaman et al. (ICML 2020, arXiv:1904.06963).
EXPECTATIONS = {
    "width": (
        "rise",
        "fall faster",
        "less confusion, so the mass should shift right, with a thinner negative tail",
    ),
    "depth": (
        "fall",
        "fall more slowly",
        "more confusion, so the mass should shift left, with a heavier negative tail",
    ),
}


@dataclass(frozen=True)
class ReportFigure:
    """A rendered figure: PNG file name, PNG bytes, caption and alt text."""

    name: str
    png: bytes
    caption: str
    alt: str


def _distinct(values: Iterable[Any]) -> str:
    unique = sorted({format_value(value) for value in values if value is not None})
    return ", ".join(unique) if unique else "n/a"


def _sorted_values(values: Iterable[Any]) -> str:
    return ", ".join(format_value(value) for value in sorted(set(values)))


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value)
    return flat


def _reference_config(data: StudyData) -> dict[str, Any]:
    """Return the config of the first complete run (empty when there is none)."""
    return next(iter(data.configs.values()), {})


def _model_kind(data: StudyData) -> str:
    return str(_reference_config(data).get("model", {}).get("kind", "mlp"))


def _measurement_text(measure: dict[str, Any]) -> str:
    if measure.get("granularity") == "example":
        gradients = "per-example gradients"
    else:
        gradients = f"mean-loss gradients of mini-batches of {measure.get('batch_size')} examples"
    if measure.get("pairing") == "all":
        pairs = f"all pairs among {measure.get('num_gradients')} gradients"
    else:
        pairs = f"{measure.get('num_pairs')} disjoint pairs"
    return f"{gradients}; {pairs}; BatchNorm in {measure.get('batchnorm')} mode"


def describe_setup(data: StudyData) -> list[tuple[str, str]]:
    """Return (item, description) rows describing what the study ran, from configs and manifests."""
    study = data.study
    items = [("Study", f"{data.name} (kind {data.kind}, created {study.get('created_at', 'n/a')})")]
    config = _reference_config(data)
    if not config:
        return [*items, ("Runs", "no complete run, so no configuration to describe")]

    dataset, model = config.get("data", {}), config.get("model", {})
    train, measure = config.get("train", {}), config.get("measure", {})
    subset = f", first {dataset['max_train']} training examples" if dataset.get("max_train") else ""
    items.append(
        ("Dataset", f"{dataset.get('name')}{subset}; test fraction {dataset.get('test_fraction')}, "
         f"split seed {dataset.get('split_seed')}, augmentation {dataset.get('augment')}")
    )
    items.append(
        ("Model", f"{str(model.get('kind')).upper()}, {model.get('activation')} activation, "
         f"{model.get('init')} initialization, bias {model.get('bias')}, "
         f"batch norm {model.get('batchnorm')}, skip connections {model.get('skip')}")
    )
    for group, fixed in (("width", "depth"), ("depth", "width")):
        rows = data.runs[data.runs["group"] == group]
        text = (
            f"{group} {_sorted_values(rows['x'])} at {fixed} {_distinct(rows[fixed])}"
            if not rows.empty else "no complete run"
        )
        items.append((f"{group.capitalize()} experiment", text))
    items.append(("Seeds", _sorted_values(data.runs["seed"])))
    decay = ", ".join(f"{fraction:g}" for fraction in train.get("lr_decay_at", [])) or "never"
    items.append(
        ("Training", f"{train.get('epochs')} epochs of SGD, learning rate {train.get('lr')} "
         f"divided by {train.get('lr_decay_factor')} at fractions {decay} of training, "
         f"batch size {train.get('batch_size')}, momentum {train.get('momentum')}, "
         f"weight decay {train.get('weight_decay')}, loss {train.get('loss')}")
    )
    measured = train.get("measure_epochs")
    if measured is None:
        epochs_text = "every epoch"
    else:
        epochs_text = f"epochs {', '.join(map(str, measured))}"
    items.append(
        ("Measurement protocol", f"{_measurement_text(measure)}; measured after {epochs_text}")
    )
    engines = data.confusion["engine"] if "engine" in data.confusion.columns else []
    items.append(("Engine", f"requested {measure.get('engine')}; used {_distinct(engines)}"))
    items.append(("Device", _distinct(m.get("device") for m in data.manifests.values())))

    flat = [_flatten(run_config) for run_config in data.configs.values()]
    ignored = {"model.width", "model.depth", "seed"}
    varying = sorted(
        key for key in set().union(*flat) - ignored if len({f.get(key) for f in flat}) > 1
    )
    if varying:
        differences = [f"{key}: {_distinct(f.get(key) for f in flat)}" for key in varying]
        items.append(("Also varies across runs", "; ".join(differences)))
    items.append(("Study settings", json.dumps(study.get("settings", {}), sort_keys=True)))
    items.append(("Runs", f"{len(data.runs)} complete, {len(data.incomplete)} incomplete"))
    return items


def _diverged_note(rows: pd.DataFrame) -> str:
    diverged = rows.loc[rows["status"] == "diverged", "run_id"].tolist()
    if not diverged:
        return ""
    return f" Left out because training diverged: {', '.join(diverged)}."


def group_figures(
    data: StudyData, summary: pd.DataFrame, confusion: pd.DataFrame, group: str
) -> list[ReportFigure]:
    """Render the five figures of one experiment ("width" or "depth"); empty without runs."""
    runs = summary[summary["group"] == group]
    if runs.empty:
        return []
    fixed_name = "depth" if group == "width" else "width"
    fixed = _distinct(runs[fixed_name])
    kept = runs.loc[runs["status"] != "diverged", "run_id"]
    colors = ordered_colors(runs["x"].tolist())
    x_label = X_AXIS_LABELS.get((_model_kind(data), group), group)
    loss = str(_reference_config(data).get("train", {}).get("loss", "cross_entropy"))
    note = _diverged_note(runs)
    rise, speed, shift = EXPECTATIONS[group]
    figures = []

    def render(name: str, figure: Any, caption: str, alt: str) -> None:
        png = figure_to_png(figure)
        figures.append(ReportFigure(f"{group}_{name}.png", png, caption + note, alt))

    metrics = data.metrics[data.metrics["run_id"].isin(kept)]
    figure, ax = new_figure()
    plot_curves(
        metrics, "epoch", "train_loss", "x", ax=ax, colors=colors, hue_label=group, logy=True
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel=LOSS_LABELS.get(loss, "training loss"),
           title=f"Training loss by {group} ({fixed_name} {fixed})")
    render("train_loss", figure,
           f"Mean training loss over seeds after each epoch (band: ±1 std; epoch 0 is before "
           f"training; log scale). Sankararaman et al. (2020) predict that the loss curves "
           f"{speed} as {group} grows. The training-speed claim tests the mean of each run's "
           "curve over epochs 1..E.",
           f"training loss curves per {group}")

    figure, ax = new_figure()
    plot_metric_vs_x(runs, "x", "final_min_cosine", ax=ax, colors=colors)
    ax.set(xlabel=x_label, ylabel="minimum gradient cosine (last measured epoch)",
           title=f"Final minimum cosine vs {group} ({fixed_name} {fixed})")
    render(f"min_cosine_vs_{group}", figure,
           "Each dot is one seed; error bars are mean ± std over seeds. A higher minimum cosine "
           "means less gradient confusion, so Sankararaman et al. (2020) predict that the "
           f"points {rise} with {group}. The confusion claim tests the rank correlation of "
           "these dots.",
           f"final minimum cosine versus {group}")

    figure, ax = new_figure()
    plot_density(final_cosine_samples(data, group), ax=ax, colors=colors, label_prefix=f"{group} ")
    ax.set(xlabel="cosine of gradient pairs (last measured epoch)",
           ylabel="density (per unit cosine)",
           title=f"Pairwise gradient cosines by {group} ({fixed_name} {fixed})")
    render("cosine_density", figure,
           "Histogram density of every pairwise cosine at the last measured epoch, pooled over "
           f"seeds (n = number of pairs). Sankararaman et al. (2020) predict {shift}, as "
           f"{group} grows.",
           f"density of pairwise gradient cosines per {group}")

    measured = confusion[confusion["run_id"].isin(kept)]
    figure, ax = new_figure()
    plot_curves(measured, "epoch", "min_cosine", "x", ax=ax, colors=colors, hue_label=group)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="minimum gradient cosine",
           title=f"Minimum cosine during training by {group} ({fixed_name} {fixed})")
    render("min_cosine_over_epochs", figure,
           "Mean over seeds of the minimum pairwise cosine at each measured epoch (band: ±1 std). "
           f"Look for a consistent ordering by {group} across epochs, not only at the end.",
           f"minimum cosine over epochs per {group}")

    figure, ax = new_figure()
    finished = runs[runs["status"] != "diverged"]
    plot_metric_vs_x(finished, "x", "final_test_accuracy", ax=ax, colors=colors)
    ax.set(xlabel=x_label, ylabel="test accuracy (fraction correct, final epoch)",
           title=f"Final test accuracy vs {group} ({fixed_name} {fixed})")
    render(f"test_accuracy_vs_{group}", figure,
           "Test accuracy after the last epoch; each dot is one seed, error bars are mean ± std. "
           "This is context for the confusion results and no claim is tested on it.",
           f"final test accuracy versus {group}")
    return figures


def run_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Return the per-run summary with readable column names for the report."""
    columns = {
        "run_id": "run",
        "status": "status",
        "width": "width",
        "depth": "depth",
        "seed": "seed",
        "final_epoch": "last epoch",
        "final_train_loss": "train loss",
        "train_loss_auc": "mean train loss, epochs 1..E",
        "final_test_accuracy": "test accuracy",
        "final_min_cosine": "min cosine",
        "final_eta": "η̂",
        "confusion_epoch": "cosine epoch",
        "wall_seconds": "wall time (s)",
    }
    return summary[list(columns)].rename(columns=columns)


def provenance(data: StudyData) -> list[tuple[str, str]]:
    """Return (item, value) rows: versions, devices, determinism settings and wall time."""
    manifests = list(data.manifests.values())
    walls = [float(m["wall_seconds"]) for m in manifests if m.get("wall_seconds") is not None]
    total = sum(walls)
    hours, rest = divmod(int(round(total)), 3600)
    settings = [json.dumps(m.get("deterministic"), sort_keys=True) for m in manifests]
    digests = {m.get("config_digest") for m in manifests}
    starts = [m["started_at"] for m in manifests if m.get("started_at")]
    finishes = [m["finished_at"] for m in manifests if m.get("finished_at")]
    return [
        ("gradconf version (runs)", _distinct(m.get("gradconf_version") for m in manifests)),
        ("torch version", _distinct(m.get("torch") for m in manifests)),
        ("Python version", _distinct(m.get("python") for m in manifests)),
        ("Platform", _distinct(m.get("platform") for m in manifests)),
        ("Device", _distinct(m.get("device") for m in manifests)),
        ("Determinism settings", _distinct(settings)),
        ("Config digests", f"{len(digests)} distinct over {len(manifests)} runs"),
        ("First start", min(starts, default="n/a")),
        ("Last finish", max(finishes, default="n/a")),
        ("Total wall time", f"{total:.1f} s ({hours} h {rest // 60} min {rest % 60} s), "
                            f"summed over {len(walls)} complete runs"),
    ]
