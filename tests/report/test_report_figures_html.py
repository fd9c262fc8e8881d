"""Reusable figure and HTML helpers."""

from __future__ import annotations

import base64
import math

import numpy as np
import pandas as pd
import pytest

from gradconf.report.figures import (
    figure_to_base64,
    format_value,
    new_figure,
    ordered_colors,
    plot_curves,
    plot_density,
    plot_metric_vs_x,
)
from gradconf.report.html import (
    Section,
    claims_markdown,
    claims_table_html,
    figure_html,
    html_page,
    key_value_table_html,
    table_html,
)
from gradconf.report.stats import Verdict

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _curves_frame():
    rows = []
    for width in (8, 64, 512):
        for seed in (0, 1, 2):
            for epoch in range(4):
                rows.append({"width": width, "seed": seed, "epoch": epoch,
                             "loss": 2.0 / (1 + epoch * width / 64) + 0.01 * seed})
    return pd.DataFrame(rows)


def test_ordered_colors_follow_sorted_values():
    colors = ordered_colors([512, 8, 64, 8])

    assert list(colors) == [8, 64, 512]
    assert colors[8] != colors[64] != colors[512]
    assert len(ordered_colors([3])) == 1


def test_format_value_writes_whole_floats_as_integers():
    assert format_value(64.0) == "64"
    assert format_value(0.5) == "0.5"
    assert format_value("relu") == "relu"
    assert format_value(math.inf) == "inf"


def test_plot_curves_draws_mean_line_per_hue():
    figure, ax = new_figure()

    plot_curves(_curves_frame(), "epoch", "loss", "width", ax=ax, hue_label="width", logy=True)

    assert len(ax.lines) == 3
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "width 8 (n=3)", "width 64 (n=3)", "width 512 (n=3)"
    ]
    # Width 8: loss = 2 / (1 + epoch / 8) + 0.01 * seed, averaged over seeds 0, 1, 2.
    expected = [2.0 / (1 + epoch / 8) + 0.01 for epoch in range(4)]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), expected)
    assert ax.get_yscale() == "log"


def test_plot_metric_vs_x_log_axis():
    frame = _curves_frame().query("epoch == 3")
    figure, ax = new_figure()

    plot_metric_vs_x(frame, "width", "loss", ax=ax)

    assert ax.get_xscale() == "log"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["8", "64", "512"]
    assert len(ax.collections) >= 1


def test_plot_metric_vs_x_skips_nonfinite_values():
    frame = pd.DataFrame({"depth": [1, 2, 3], "auc": [1.0, math.inf, math.nan]})
    figure, ax = new_figure()

    plot_metric_vs_x(frame, "depth", "auc", ax=ax)

    assert ax.get_xscale() == "linear"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["1"]


def test_plot_metric_vs_x_with_hue_series():
    frame = pd.DataFrame({
        "depth": [10, 10, 16, 16, 22, 22] * 2,
        "min_cosine": [-0.1, -0.2, -0.3, -0.35, -0.5, -0.45, 0.1, 0.0, 0.05, 0.0, -0.05, -0.1],
        "architecture": ["plain"] * 6 + ["bn-skip"] * 6,
    })
    figure, ax = new_figure()

    plot_metric_vs_x(frame, "depth", "min_cosine", ax=ax, hue="architecture")

    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["architecture bn-skip", "architecture plain"]
    assert ax.get_xscale() == "linear"
    # Each errorbar container holds the mean line first, then its caps and bars.
    means = [container.lines[0].get_ydata() for container in ax.containers]
    np.testing.assert_allclose(means[0], [0.05, 0.025, -0.075])
    np.testing.assert_allclose(means[1], [-0.15, -0.325, -0.475])


def test_plot_density_shares_bin_edges():
    rng = np.random.default_rng(0)
    samples = {8: rng.normal(-0.2, 0.1, 500), 512: rng.normal(0.2, 0.1, 300)}
    figure, ax = new_figure()

    plot_density(samples, ax=ax, bins=20, label_prefix="width ")

    edges = [patch.get_data().edges for patch in ax.patches]
    assert len(edges) == 2
    np.testing.assert_array_equal(edges[0], edges[1])
    for patch in ax.patches:
        values, bin_edges = patch.get_data().values, patch.get_data().edges
        assert float(np.sum(values * np.diff(bin_edges))) == pytest.approx(1.0)
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["width 8 (n=500)", "width 512 (n=300)"]


def test_plot_density_rejects_zero_bins():
    figure, ax = new_figure()

    with pytest.raises(ValueError, match="bins=0 is invalid"):
        plot_density({1: [0.1, 0.2]}, ax=ax, bins=0)


def test_figure_to_base64_encodes_png():
    figure, ax = new_figure(2, 2)
    ax.plot([0, 1], [0, 1])

    png = base64.b64decode(figure_to_base64(figure))

    assert png.startswith(PNG_SIGNATURE)


def _verdicts():
    return [
        Verdict("Wider | lower", "width", "Spearman ρ(width, y)", 0.9, 0.8, 0.95, 1, "supported",
                "rule", 12),
        Verdict("Deeper <slower>", "depth", "Spearman ρ(depth, y)", math.nan, math.nan, math.nan,
                1, "inconclusive", "rule", 1, reason="too few runs"),
    ]


def test_claims_table_colors_and_escapes():
    table = claims_table_html(_verdicts())

    assert "Deeper &lt;slower&gt;" in table
    assert "background:#1b7a3a\">supported" in table
    assert "background:#8a6d00\">inconclusive" in table
    assert "[+0.800, +0.950]" in table
    assert "too few runs" in table


def test_claims_markdown_escapes_pipes():
    markdown = claims_markdown(_verdicts())
    lines = markdown.splitlines()

    assert len(lines) == 4
    assert lines[2].startswith("| Wider \\| lower | width |")
    assert "| +0.900 | [+0.800, +0.950] | positive | **supported** | 12 |" in lines[2]
    assert "| n/a | n/a |" in lines[3]


def test_table_html_formats_numbers_and_missing_values():
    frame = pd.DataFrame({"run": ["a<b"], "loss": [0.123456], "epoch": [4.0], "eta": [math.nan]})

    table = table_html(frame, digits=3)

    assert "<td>a&lt;b</td>" in table
    assert '<td class="number">0.123</td>' in table
    assert '<td class="number">4</td>' in table
    assert "<td>n/a</td>" in table


def test_html_page_is_self_contained():
    figure, ax = new_figure(2, 2)
    ax.plot([0, 1], [1, 0])
    sections = [
        Section("What was run", key_value_table_html([("Dataset", "digits & more")])),
        Section("Figures", figure_html(figure, "A caption", alt="a line")),
    ]

    page = html_page("Study <1>", sections, subtitle="generated now")

    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Study &lt;1&gt;</title>" in page
    assert '<a href="#what-was-run">What was run</a>' in page
    assert '<section id="figures">' in page
    assert "digits &amp; more" in page
    assert '<img src="data:image/png;base64,' in page
    assert "<style>" in page
    assert "http://" not in page
    assert "https://" not in page
