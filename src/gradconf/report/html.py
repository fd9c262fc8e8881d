"""Self-contained HTML building blocks: page, sections, tables, figures and claims.

Pages use inline CSS and embed figures as base64 PNG data URIs, so one ``index.html`` can
be mailed or archived without its folder. Every text value is HTML-escaped here, except
``Section.html``, which is markup.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from gradconf.report.figures import figure_to_base64
from gradconf.report.stats import Verdict

__all__ = [
    "VERDICT_COLORS",
    "Section",
    "claims_markdown",
    "claims_table_html",
    "figure_html",
    "html_page",
    "key_value_table_html",
    "table_html",
]

VERDICT_COLORS = {
    "supported": "#1b7a3a",
    "not supported": "#b3261e",
    "inconclusive": "#8a6d00",
}
MISSING = "n/a"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } .subtitle { color: #555; margin-top: 0; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
nav ul { columns: 2; } table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top; }
th { background: #f3f3f5; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { color: white; border-radius: 0.8rem; padding: 0.1rem 0.6rem; white-space: nowrap; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #333; font-size: 0.9rem; max-width: 900px; }
.note { color: #555; font-size: 0.9rem; } code { background: #f3f3f5; padding: 0 0.2rem; }
"""


@dataclass(frozen=True)
class Section:
    """One titled part of a page. ``html`` is markup and is inserted unescaped."""

    title: str
    html: str
    anchor: str | None = None

    @property
    def slug(self) -> str:
        """Anchor id of the section: ``anchor``, or the title in lower case with dashes."""
        return self.anchor or re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def _cell(value: Any, digits: int) -> tuple[str, bool]:
    """Return the escaped text of a table cell and whether it is a number."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING, False
    if isinstance(value, bool):
        return html.escape(str(value)), False
    if isinstance(value, (int, float)) or pd.api.types.is_number(value):
        number = float(value)
        if number.is_integer() and abs(number) < 1e15:
            return str(int(number)), True
        return f"{number:.{digits}g}", True
    return html.escape(str(value)), False


def table_html(frame: pd.DataFrame, *, digits: int = 4, caption: str | None = None) -> str:
    """Render ``frame`` as an HTML table, numbers right-aligned to ``digits`` significant digits."""
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            text, numeric = _cell(value, digits)
            cells.append(f'<td class="number">{text}</td>' if numeric else f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    caption_html = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f"<table>{caption_html}<thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def key_value_table_html(items: Iterable[tuple[str, Any]]) -> str:
    """Render (name, value) pairs as a two-column table, both escaped."""
    rows = "".join(
        f"<tr><th>{html.escape(str(name))}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in items
    )
    return f"<table><tbody>{rows}</tbody></table>"


def figure_html(figure: Figure | bytes, caption: str, *, alt: str) -> str:
    """Embed a figure (or its PNG bytes) as a base64 data URI with a caption."""
    data = figure_to_base64(figure)
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _interval(verdict: Verdict) -> str:
    if math.isnan(verdict.ci_low) or math.isnan(verdict.ci_high):
        return MISSING
    return f"[{verdict.ci_low:+.3f}, {verdict.ci_high:+.3f}]"


def _rho(verdict: Verdict) -> str:
    return MISSING if math.isnan(verdict.value) else f"{verdict.value:+.3f}"


def _expected(verdict: Verdict) -> str:
    return "positive" if verdict.expected_sign > 0 else "negative"


def claims_table_html(verdicts: Sequence[Verdict]) -> str:
    """Render verdicts as an HTML table with a colored verdict label per claim."""
    head = (
        "<tr><th>Claim</th><th>Experiment</th><th>Statistic</th><th>ρ</th><th>Interval</th>"
        "<th>Expected sign</th><th>Verdict</th><th>Runs</th><th>Note</th></tr>"
    )
    rows = []
    for verdict in verdicts:
        color = VERDICT_COLORS.get(verdict.verdict, "#555")
        rows.append(
            "<tr>"
            f"<td>{html.escape(verdict.claim)}</td>"
            f"<td>{html.escape(verdict.experiment)}</td>"
            f"<td>{html.escape(verdict.statistic)}</td>"
            f'<td class="number">{_rho(verdict)}</td>'
            f'<td class="number">{_interval(verdict)}</td>'
            f"<td>{_expected(verdict)}</td>"
            f'<td><span class="verdict" style="background:{color}">'
            f"{html.escape(verdict.verdict)}</span></td>"
            f'<td class="number">{verdict.n_runs}</td>'
            f"<td>{html.escape(verdict.reason)}</td>"
            "</tr>"
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def claims_markdown(verdicts: Sequence[Verdict]) -> str:
    """Render verdicts as a Markdown table (pipes in text are escaped)."""

    def escape(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "| Claim | Experiment | Statistic | ρ | Interval | Expected sign | Verdict | Runs "
        "| Note |",
        "|---|---|---|---:|---|---|---|---:|---|",
    ]
    for verdict in verdicts:
        cells = [
            escape(verdict.claim),
            escape(verdict.experiment),
            escape(verdict.statistic),
            _rho(verdict),
            _interval(verdict),
            _expected(verdict),
            f"**{verdict.verdict}**",
            str(verdict.n_runs),
            escape(verdict.reason),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html_page(title: str, sections: Sequence[Section], *, subtitle: str = "") -> str:
    """Return a complete HTML document with inline CSS, a table of contents and the sections."""
    contents = "".join(
        f'<li><a href="#{section.slug}">{html.escape(section.title)}</a></li>'
        for section in sections
    )
    body = "".join(
        f'<section id="{section.slug}"><h2>{html.escape(section.title)}</h2>'
        f"{section.html}</section>"
        for section in sections
    )
    subtitle_html = f'<p class="subtitle">{html.escape(subtitle)}</p>' if subtitle else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{subtitle_html}"
        f"<nav><ul>{contents}</ul></nav>{body}</body></html>\n"
    )

