"""Build the HTML report of a width-depth study, with its claims file and summary table.

``build_report(STUDY)`` writes, atomically, into ``STUDY/report/`` (or ``out_dir``):

- ``index.html``: a self-contained page (inline CSS, figures as base64 PNG)
- ``figures/*.png``: the same figures as files
- ``claims.json``: the verdicts, the rule and the runs left out
- ``summary.csv``: one row per complete run (``run_summary``)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import json
import logging
from pathlib import Path

import pandas as pd

from gradconf import __version__
from gradconf.report.claims import WIDTH_DEPTH_CLAIMS, evaluate_claims
from gradconf.report.files import write_bytes_atomic, write_text_atomic
from gradconf.report.html import (
    Section,
    claims_table_html,
    figure_html,
    html_page,
    key_value_table_html,
    table_html,
)
from gradconf.report.load import StudyData, load_study
from gradconf.report.stats import VERDICT_RULE, Verdict
from gradconf.report.summary import run_summary, select_measurement
from gradconf.report.width_depth import (
    GROUPS,
    ReportFigure,
    describe_setup,
    group_figures,
    provenance,
    run_table,
)

__all__ = ["REPORT_DIR", "build_report"]

logger = logging.getLogger(__name__)

REPORT_DIR = "report"
FIGURES_DIR = "figures"
STUDY_KIND = "width-depth"


def _claims_section(verdicts: list[Verdict]) -> Section:
    intro = (
        "<p>The claims are those of Sankararaman et al., <em>The Impact of Neural Network "
        "Overparameterization on Gradient Confusion and Stochastic Gradient Descent</em> "
        "(ICML 2020, arXiv:1904.06963). Each verdict is computed from the runs below.</p>"
    )
    body = (
        claims_table_html(verdicts)
        + f"<p><strong>Rule.</strong> {html.escape(VERDICT_RULE)}</p>"
        + '<p class="note">ρ is computed over runs (one point per run and seed). Confusion is '
        "read from the minimum pairwise gradient cosine at the last measured epoch: a higher "
        'minimum cosine means less confusion, so "lower confusion" predicts a positive ρ. '
        "Training speed is the mean training loss over epochs 1..E: a smaller value means "
        'faster training, so "trains faster" predicts a negative ρ. A diverged run counts as '
        "the slowest run and is left out of the confusion claims. When the seeds of different "
        "x values barely overlap, the interval can lie wholly above or below ρ, because "
        "resampling within an x value repeats runs and so shrinks the spread within it.</p>"
    )
    return Section("Claims and verdicts", intro + body, anchor="claims")


def _group_section(group: str, figures: list[ReportFigure]) -> Section:
    if not figures:
        body = f"<p>No complete run in the {group} experiment, so there is nothing to plot.</p>"
    else:
        body = "".join(
            figure_html(figure.png, figure.caption, alt=figure.alt) for figure in figures
        )
    return Section(f"{group.capitalize()} experiment", body, anchor=group)


def _incomplete_section(data: StudyData) -> Section:
    if not data.incomplete:
        body = f"<p>All {len(data.runs)} runs listed in study.json are complete.</p>"
    else:
        frame = pd.DataFrame([dataclasses.asdict(run) for run in data.incomplete])
        frame = frame.rename(columns={"run_id": "run", "dir": "directory"})
        body = (
            f"<p>{len(data.incomplete)} of {len(data.incomplete) + len(data.runs)} runs listed in "
            "study.json are left out of every table, figure and verdict:</p>" + table_html(frame)
        )
    return Section("Incomplete runs", body, anchor="incomplete")


def _claims_document(data: StudyData, verdicts: list[Verdict], generated_at: str) -> str:
    document = {
        "study": data.name,
        "kind": data.kind,
        "generated_at": generated_at,
        "gradconf_version": __version__,
        "rule": VERDICT_RULE,
        "verdicts": [verdict.to_dict() for verdict in verdicts],
        "incomplete_runs": [dataclasses.asdict(run) for run in data.incomplete],
        "diverged_runs": data.runs.loc[data.runs["status"] == "diverged", "run_id"].tolist(),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def build_report(
    study_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    granularity: str | None = None,
    pairing: str | None = None,
) -> Path:
    """Write the report of a width-depth study and return the path of its index.html.

    ``out_dir`` defaults to ``study_dir/report``. ``granularity`` and ``pairing`` choose the
    measurement protocol when confusion.parquet contains several (see ``select_measurement``).
    Raises FileNotFoundError or ValueError when ``study_dir`` is not a readable study, and
    ValueError when the study is not of kind "width-depth".
    """
    data = load_study(study_dir)
    if data.kind != STUDY_KIND:
        raise ValueError(
            f"study {str(data.path)!r} has kind {data.kind!r}; build_report covers "
            f"{STUDY_KIND!r} studies only. Use the report builder for that kind of study."
        )
    out = Path(out_dir) if out_dir is not None else data.path / REPORT_DIR
    generated_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    logger.info("building the report of %s into %s", data.path, out)

    summary = run_summary(data, granularity=granularity, pairing=pairing)
    confusion = select_measurement(data.confusion, granularity, pairing)
    verdicts = evaluate_claims(summary, WIDTH_DEPTH_CLAIMS)

    sections = [
        Section("What was run", key_value_table_html(describe_setup(data)), anchor="setup"),
        _claims_section(verdicts),
    ]
    for group in GROUPS:
        figures = group_figures(data, summary, confusion, group)
        for figure in figures:
            write_bytes_atomic(out / FIGURES_DIR / figure.name, figure.png)
        sections.append(_group_section(group, figures))
    sections.append(
        Section(
            "Final metrics per run",
            '<p class="note">Values at the last recorded epoch. η̂ = max(0, −min ⟨g_i, g_j⟩) '
            'over the measured gradient pairs; "cosine epoch" is the last measured epoch.</p>'
            + table_html(run_table(summary)),
            anchor="runs",
        )
    )
    sections.append(_incomplete_section(data))
    sections.append(
        Section("Provenance", key_value_table_html(provenance(data)), anchor="provenance")
    )

    page = html_page(
        f"Gradient confusion: {data.name}",
        sections,
        subtitle=f"Width-depth study report, generated {generated_at} by gradconf {__version__}",
    )
    index = write_text_atomic(out / "index.html", page)
    write_text_atomic(out / "claims.json", _claims_document(data, verdicts, generated_at))
    write_text_atomic(out / "summary.csv", summary.to_csv(index=False))
    logger.info(
        "wrote %s (%d verdicts, %d runs left out)", index, len(verdicts), len(data.incomplete)
    )
    return index
