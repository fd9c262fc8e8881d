"""Markdown section replacement and the computed target verdicts."""

from __future__ import annotations

import pytest

from gradconf.bench.report import (
    DOC_TITLE,
    SECTION_END,
    SECTION_START,
    evaluate_targets,
    render_section,
    write_section,
)


def test_write_section_creates_file_with_title(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    write_section(path, "new body")
    text = path.read_text()
    assert text.startswith(DOC_TITLE)
    assert f"{SECTION_START}\nnew body\n{SECTION_END}" in text


def test_write_section_replaces_only_marked_text(tmp_path):
    path = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\n<!-- other:start -->\nother table\n<!-- other:end -->\n\n"
    after = "\n\ntrailing notes by hand\n"
    path.write_text(f"{before}{SECTION_START}\nold body\n{SECTION_END}{after}")

    write_section(path, "new body")

    assert path.read_text() == f"{before}{SECTION_START}\nnew body\n{SECTION_END}{after}"


def test_write_section_appends_without_markers(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nintro\n")
    write_section(path, "body")
    assert path.read_text() == f"# Benchmarks\n\nintro\n\n{SECTION_START}\nbody\n{SECTION_END}\n"


@pytest.mark.parametrize(
    "text",
    [f"{SECTION_START}\nonly start\n", f"{SECTION_END}\nx\n{SECTION_START}\n",
     f"{SECTION_START}\n{SECTION_END}\n{SECTION_START}\n{SECTION_END}\n"],
    ids=["start-only", "reversed", "two-pairs"],
)
def test_write_section_rejects_broken_markers(tmp_path, text):
    path = tmp_path / "benchmarks.md"
    path.write_text(text)
    with pytest.raises(ValueError, match="markers"):
        write_section(path, "body")
    assert path.read_text() == text


def row(method, median_ms, peak_mb=None, error=None, label=None):
    record = {
        "method": method, "label": label or method, "status": "ok", "median_ms": median_ms,
        "peak_bytes": None if peak_mb is None else int(peak_mb * 2**20), "details": {},
    }
    if error is not None:
        record["max_rel_error"] = error
    return record


def case(family, rows):
    plain_ms = next(r["median_ms"] for r in rows if r["method"] == "plain")
    for record in rows:
        if record["status"] == "ok":
            record["ratio_to_plain"] = record["median_ms"] / plain_ms
    return {"case": "c", "family": family, "rows": rows}


def test_mlp_targets_met():
    record = case("mlp", [row("plain", 10.0), row("vmap", 600.0), row("gradconf", 15.0, error=1e-7)])
    verdicts = dict(evaluate_targets(record))
    assert verdicts["gradconf ≤ 2× plain fwd+bwd"] == "met (1.50×)"
    assert verdicts["gradconf ≥ 30× faster than the fastest peer"] == "met (40× vs vmap)"
    assert verdicts["gradconf max rel. error ≤ 1e-05"] == "met (1.0e-07)"


def test_mlp_targets_not_met_uses_fastest_peer():
    rows = [row("plain", 10.0), row("loop", 900.0), row("backpack", 100.0),
            row("gradconf", 30.0, error=2e-5)]
    verdicts = dict(evaluate_targets(case("mlp", rows)))
    assert verdicts["gradconf ≤ 2× plain fwd+bwd"] == "not met (3.00×)"
    assert verdicts["gradconf ≥ 30× faster than the fastest peer"] == "not met (3.3× vs backpack)"
    assert verdicts["gradconf max rel. error ≤ 1e-05"].startswith("not met")


def test_cnn_memory_target_against_lowest_peer():
    rows = [row("plain", 10.0, 5), row("vmap", 20.0, 300), row("opacus", 12.0, 100),
            row("gradconf", 12.0, 120)]
    verdicts = dict(evaluate_targets(case("cnn", rows)))
    assert verdicts["gradconf not slower than the fastest peer"] == "met (1× vs opacus)"
    assert verdicts["gradconf peak memory below every peer's"] == (
        "not met (120.0 MB vs 100.0 MB, opacus)"
    )


def test_targets_leave_out_loop_baseline():
    rows = [row("plain", 10.0, 5), row("loop", 11.0, 1), row("backpack", 50.0, 200),
            row("gradconf", 12.0, 20)]
    verdicts = dict(evaluate_targets(case("cnn", rows)))
    assert verdicts["gradconf not slower than the fastest peer"] == "met (4.2× vs backpack)"
    assert verdicts["gradconf peak memory below every peer's"] == (
        "met (20.0 MB vs 200.0 MB, backpack)"
    )


def test_targets_not_evaluated_without_gradconf():
    verdicts = evaluate_targets(case("cnn", [row("plain", 10.0), row("vmap", 20.0)]))
    assert verdicts[0][1].startswith("not evaluated")


def test_targets_without_peers():
    verdicts = dict(evaluate_targets(case("mlp", [row("plain", 10.0), row("gradconf", 12.0)])))
    assert verdicts["speed and memory against peers"] == "not evaluated: no peer ran"


def synthetic_results(rows):
    return {
        "machine": {
            "date": "2026-01-01 00:00 UTC", "cpu": "test CPU", "logical_cores": 2,
            "device": "cpu", "python": "3.11", "torch": "2.x", "backpack": "not installed",
            "opacus": "1.6", "gradconf": "0.1.0", "commit": "abc1234",
        },
        "config": {"seed": 0, "repeats": 10, "warmup": 2, "time_budget_s": 30.0,
                   "quick": False, "reference_memory_mb": 4096},
        "cases": [{**case("mlp", rows), "description": "MLP", "batch_size": 4,
                   "input_shape": [6], "num_params": 53}],
    }


def test_render_section_escapes_failure_reason():
    skipped = {"method": "backpack", "label": "BackPACK BatchGrad", "status": "skipped",
               "reason": "backpack is not importable (a | b)"}
    rows = [row("plain", 10.0, 5), skipped, row("gradconf", 12.0, 6, error=1e-8)]
    rows[-1]["details"] = {"engine": "loop"}

    text = render_section(synthetic_results(rows))

    table_row = next(line for line in text.splitlines() if line.startswith("| BackPACK"))
    assert "(a \\| b)" in table_row
    assert table_row.replace("\\|", "").count("|") == 7
    assert "| gradconf → loop | 12.00 | 1.20 |" in text
    assert "resolved to: loop" in text
