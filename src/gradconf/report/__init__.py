"""Study reports: load a study, test its claims, draw its figures, write a self-contained page.

The pieces are reusable by other reports: ``trend_verdict`` and ``evaluate_claims`` test any
monotone-trend claim on a per-run table, the ``plot_*`` helpers draw on a given axes, and
``html_page`` with ``Section`` assembles a page with inline CSS and embedded figures.

Example, on a study directory written by the width-depth study runner::

    from gradconf.report import build_report
    index = build_report("runs/my-study")  # runs/my-study/report/index.html
"""

from gradconf.report.build import build_report
from gradconf.report.claims import WIDTH_DEPTH_CLAIMS, TrendClaim, evaluate_claims
from gradconf.report.figures import (
    figure_to_base64,
    figure_to_png,
    new_figure,
    ordered_colors,
    plot_curves,
    plot_density,
    plot_metric_vs_x,
)
from gradconf.report.files import write_bytes_atomic, write_text_atomic
from gradconf.report.html import (
    Section,
    claims_markdown,
    claims_table_html,
    figure_html,
    html_page,
    key_value_table_html,
    table_html,
)
from gradconf.report.load import IncompleteRun, StudyData, load_study
from gradconf.report.stats import (
    VERDICT_RULE,
    Verdict,
    bootstrap_spearman,
    rank_average,
    spearman,
    trend_verdict,
    verdict_rule,
)
from gradconf.report.summary import final_cosine_samples, run_summary, train_loss_auc

__all__ = [
    "IncompleteRun",
    "Section",
    "StudyData",
    "TrendClaim",
    "VERDICT_RULE",
    "Verdict",
    "WIDTH_DEPTH_CLAIMS",
    "bootstrap_spearman",
    "build_report",
    "claims_markdown",
    "claims_table_html",
    "evaluate_claims",
    "figure_html",
    "figure_to_base64",
    "figure_to_png",
    "final_cosine_samples",
    "html_page",
    "key_value_table_html",
    "load_study",
    "new_figure",
    "ordered_colors",
    "plot_curves",
    "plot_density",
    "plot_metric_vs_x",
    "rank_average",
    "run_summary",
    "spearman",
    "table_html",
    "train_loss_auc",
    "trend_verdict",
    "verdict_rule",
    "write_bytes_atomic",
    "write_text_atomic",
]
