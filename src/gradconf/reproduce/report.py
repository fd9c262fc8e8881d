"""The reproduction report: one HTML page, the claims in Markdown, and the generated docs page.

The claims table here differs from ``gradconf.report.claims_table_html`` in three ways,
because the reproduction claims need them. The value column is any statistic (a Spearman
ρ, a loss difference, a log ratio). The expected outcome may be "≈ 0" (no trend) as well as
a sign. Every row points to its own decision rule, and the rules are listed under the table.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import torch

from gradconf import __version__
from gradconf.report import Section, Verdict, html_page
from gradconf.report.html import VERDICT_COLORS
from gradconf.reproduce.registry import ExperimentRecord
from gradconf.runs.io import write_json_atomic, write_text_atomic

__all__ = ["claims_markdown", "claims_table_html", "write_docs", "write_report"]

logger = logging.getLogger(__name__)

MISSING = "n/a"
EXPECTED = {1: "> 0", -1: "< 0", 0: "≈ 0"}


def _number(value: float) -> str:
    return MISSING if value is None or math.isnan(value) else f"{value:+.3g}"


def _interval(verdict: Verdict) -> str:
    if math.isnan(verdict.ci_low) or math.isnan(verdict.ci_high):
        return MISSING
    return f"[{verdict.ci_low:+.3g}, {verdict.ci_high:+.3g}]"


def _rule_numbers(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Number the distinct rules 1, 2, ... in order of first use."""
    numbers: dict[str, int] = {}
    for verdict in verdicts:
        numbers.setdefault(verdict.rule, len(numbers) + 1)
    return numbers


def _row_cells(verdict: Verdict, rule_number: int) -> list[str]:
    """Return the plain-text cells of one claims row, in column order."""
    return [
        verdict.claim,
        verdict.experiment,
        verdict.statistic,
        _number(verdict.value),
        _interval(verdict),
        EXPECTED.get(verdict.expected_sign, str(verdict.expected_sign)),
        verdict.verdict,
        str(verdict.n_runs),
        f"R{rule_number}",
        verdict.reason,
    ]


COLUMNS = (
    "Claim", "Experiment", "Statistic", "Value", "95% interval", "Expected", "Verdict",
    "Runs", "Rule", "Note",
)


def claims_table_html(verdicts: Sequence[Verdict]) -> str:
    """Render verdicts as an HTML table with colored verdicts, then the numbered rules."""
    numbers = _rule_numbers(verdicts)
    head = "".join(f"<th>{column}</th>" for column in COLUMNS)
    rows = []
    for verdict in verdicts:
        cells = [html.escape(text) for text in _row_cells(verdict, numbers[verdict.rule])]
        color = VERDICT_COLORS.get(verdict.verdict, "#555")
        cells[6] = f'<span class="verdict" style="background:{color}">{cells[6]}</span>'
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    rules = "".join(
        f"<li><b>R{number}</b>: {html.escape(rule)}</li>" for rule, number in numbers.items()
    )
    return (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f'<ul class="note">{rules}</ul>'
    )


def claims_markdown(verdicts: Sequence[Verdict]) -> str:
    """Render verdicts as a Markdown table followed by the numbered rules."""

    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    numbers = _rule_numbers(verdicts)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for verdict in verdicts:
        cells = [escape(text) for text in _row_cells(verdict, numbers[verdict.rule])]
        cells[6] = f"**{cells[6]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.extend(f"- **R{number}**: {escape(rule)}" for rule, number in numbers.items())
    return "\n".join(lines) + "\n"


def _all_verdicts(records: Sequence[ExperimentRecord]) -> list[Verdict]:
    return [v for record in records if record.output for v in record.output.verdicts]


def _failures_html(records: Sequence[ExperimentRecord]) -> str:
    failed = [record.name for record in records if record.status == "failed"]
    if not failed:
        return ""
    return (
        f'<p class="note"><b>Failed experiments</b> (no claims): {html.escape(", ".join(failed))}.'
        " Their sections below show the error.</p>"
    )


def _experiment_section(record: ExperimentRecord) -> Section:
    parts = [f'<p class="note">Status: {record.status}; wall time {record.wall_s:.1f} s.</p>']
    if record.output is None:
        parts.append(f"<pre>{html.escape(record.error)}</pre>")
    else:
        if record.output.notes:
            notes = "".join(f"<li>{html.escape(note)}</li>" for note in record.output.notes)
            parts.append(f"<h3>Notes</h3><ul>{notes}</ul>")
        for section in record.output.sections:
            parts.append(f"<h3>{html.escape(section.title)}</h3>{section.html}")
    return Section(title=record.title, html="".join(parts), anchor=record.name)


def write_report(
    records: Sequence[ExperimentRecord], out: Path, *, scale: str, smoke: bool = False
) -> Path:
    """Write ``out/report/index.html``, ``claims.md`` and ``summary.json``; return the page.

    The page starts with the claims table of all verdicts, then one section per experiment.
    ``summary.json`` stores each record's status, wall time, settings, notes and verdicts.
    """
    report_dir = out / "report"
    verdicts = _all_verdicts(records)
    claims = Section(
        title="Claims",
        html=claims_table_html(verdicts) + _failures_html(records),
        anchor="claims",
    )
    sections = [claims] + [_experiment_section(record) for record in records]
    subtitle = f"scale {scale}{' (smoke)' if smoke else ''}; gradconf {__version__}"
    page = html_page("gradconf reproduction report", sections, subtitle=subtitle)
    index = report_dir / "index.html"
    write_text_atomic(index, page)
    write_text_atomic(report_dir / "claims.md", claims_markdown(verdicts))
    summary = [
        {
            "name": record.name,
            "title": record.title,
            "status": record.status,
            "wall_s": record.wall_s,
            "settings": record.settings,
            "notes": record.output.notes if record.output else [],
            "verdicts": [v.to_dict() for v in record.output.verdicts] if record.output else [],
            "error": record.error,
        }
        for record in records
    ]
    write_json_atomic(report_dir / "summary.json", {"scale": scale, "smoke": smoke,
                                                   "experiments": summary})
    logger.info("wrote the reproduction report to %s", index)
    return index


def _machine() -> str:
    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def write_docs(
    records: Sequence[ExperimentRecord], path: Path, *, scale: str, command: str
) -> Path:
    """Write the generated reproduction page (Markdown) from the records of one run.

    The page contains the claims table with its rules, then per experiment its status, wall
    time, notes and resolved settings. ``command`` is the command line that produced it.
    """
    lines = [
        "# Reproduction of the paper's claims",
        "",
        "<!-- Generated by `gradconf reproduce --write-docs`; edit the code, not this file. -->",
        "",
        "Sankararaman, De, Xu, Huang and Goldstein, \"The Impact of Neural Network "
        "Overparameterization on Gradient Confusion and Stochastic Gradient Descent\" "
        "(ICML 2020). Each row tests one claim of the paper with the rule it names.",
        "",
        f"Generated by `{command}` at scale `{scale}` with gradconf {__version__} on "
        f"{_machine()}. Wall times are those of that command; work that an earlier command "
        "had completed is skipped and not counted.",
        "",
        f"Experiments: {len(records)}, of which "
        f"{sum(record.status == 'completed' for record in records)} completed; total wall time "
        f"{sum(record.wall_s for record in records) / 60:.1f} min.",
        "",
        "## Claims",
        "",
        claims_markdown(_all_verdicts(records)),
    ]
    for record in records:
        lines += [f"## {record.title} (`{record.name}`)", ""]
        lines.append(f"Status: {record.status}; wall time {record.wall_s:.0f} s.")
        lines.append("")
        if record.output and record.output.notes:
            lines += [f"- {note}" for note in record.output.notes] + [""]
        if record.status == "failed":
            last_line = record.error.strip().splitlines()[-1] if record.error else ""
            lines += [f"Error: `{last_line}`", ""]
        lines += ["| Setting | Value |", "|---|---|"]
        for key, value in sorted(record.settings.items()):
            text = value if isinstance(value, str) else json.dumps(value)
            escaped = text.replace("|", "\\|")
            lines.append(f"| {key} | {escaped} |")
        lines.append("")
    write_text_atomic(path, "\n".join(lines))
    logger.info("wrote %s", path)
    return path
