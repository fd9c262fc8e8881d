"""build_report on synthetic studies: files, content, verdicts and errors."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from gradconf.report import build_report

FIGURE_NAMES = {
    f"{group}_{name}.png"
    for group in ("width", "depth")
    for name in ("train_loss", f"min_cosine_vs_{group}", "cosine_density",
                 "min_cosine_over_epochs", f"test_accuracy_vs_{group}")
}


@pytest.fixture(scope="module")
def paper_report(shared_study):
    """A report of a study that follows every claim, with one incomplete and one diverged run."""
    root = shared_study(trend="paper", incomplete=["width-32-seed1"], diverged=["depth-8-seed2"])
    return root, build_report(root)


def test_report_writes_all_files(paper_report):
    root, index = paper_report
    report_dir = root / "report"

    assert index == report_dir / "index.html"
    assert {path.name for path in (report_dir / "figures").iterdir()} == FIGURE_NAMES
    assert (report_dir / "claims.json").is_file()
    assert (report_dir / "summary.csv").is_file()
    assert not [path for path in report_dir.rglob("*") if path.name.endswith(".tmp")]


def test_report_html_embeds_figures_and_claims(paper_report):
    _, index = paper_report
    page = index.read_text(encoding="utf-8")

    assert page.count('<img src="data:image/png;base64,') == len(FIGURE_NAMES)
    assert not re.search(r'(src|href)="https?:', page)
    for claim in ("Wider networks have lower gradient confusion after training",
                  "Deeper networks have higher gradient confusion",
                  "Wider networks train faster", "Deeper networks train slower"):
        assert claim in page
    assert page.count('">supported</span>') == 6
    assert "digits" in page
    assert "Total wall time" in page


def test_report_lists_incomplete_and_diverged_runs(paper_report):
    root, index = paper_report
    page = index.read_text(encoding="utf-8")
    claims = json.loads((root / "report" / "claims.json").read_text())
    summary = pd.read_csv(root / "report" / "summary.csv")

    assert "<td>width-32-seed1</td><td>runs/width-32-seed1</td><td>complete.json is missing" in page
    assert [run["run_id"] for run in claims["incomplete_runs"]] == ["width-32-seed1"]
    assert claims["diverged_runs"] == ["depth-8-seed2"]
    assert "width-32-seed1" not in set(summary["run_id"])
    assert len(summary) == 23
    assert "Left out because training diverged: depth-8-seed2." in page


def test_report_claims_json_holds_verdicts(paper_report):
    root, _ = paper_report
    claims = json.loads((root / "report" / "claims.json").read_text())

    assert claims["kind"] == "width-depth"
    assert "bootstrap" in claims["rule"]
    assert [v["verdict"] for v in claims["verdicts"]] == ["supported"] * 6
    width_confusion = claims["verdicts"][0]
    assert width_confusion["experiment"] == "width"
    assert width_confusion["expected_sign"] == 1
    assert width_confusion["n_runs"] == 11
    assert width_confusion["ci_low"] > 0


def test_report_verdicts_change_with_data(shared_study, tmp_path):
    root = shared_study(trend="reversed")

    index = build_report(root, out_dir=tmp_path / "out")

    claims = json.loads((tmp_path / "out" / "claims.json").read_text())
    assert index == tmp_path / "out" / "index.html"
    assert [v["verdict"] for v in claims["verdicts"]] == ["not supported"] * 6
    assert index.read_text(encoding="utf-8").count('">not supported</span>') == 6
    assert not (root / "report").exists()


def test_report_without_complete_runs(study_factory):
    root = study_factory(widths=(8, 32, 128), depths=(1, 2, 4), seeds=(0,),
                         incomplete=["width-8-seed0", "width-32-seed0", "width-128-seed0",
                                     "depth-1-seed0", "depth-2-seed0", "depth-4-seed0"])

    index = build_report(root)

    page = index.read_text(encoding="utf-8")
    claims = json.loads((root / "report" / "claims.json").read_text())
    assert [v["verdict"] for v in claims["verdicts"]] == ["inconclusive"] * 6
    assert "No complete run in the width experiment" in page
    assert "6 of 6 runs listed in study.json are left out" in page
    assert not (root / "report" / "figures").exists()


def test_report_rejects_other_study_kind(study_factory):
    root = study_factory(widths=(8, 32, 128), depths=(1, 2, 4), seeds=(0,), kind="linreg")

    with pytest.raises(ValueError, match="has kind 'linreg'; build_report covers 'width-depth'"):
        build_report(root)


def test_report_rejects_non_study_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")

    with pytest.raises(FileNotFoundError, match="is not a study directory: study.json is missing"):
        build_report(tmp_path)
