import json
import math
from pathlib import Path

import pytest

from gradconf.cli.main import main
from gradconf.report import Section, Verdict
from gradconf.reproduce.base import (
    Experiment,
    ExperimentOutput,
    mean_interval,
    wilson_interval,
)
from gradconf.reproduce.registry import EXPERIMENTS, resolve_names, run_experiments
from gradconf.reproduce.report import claims_markdown, write_docs, write_report

THEORY_NAMES = ["linreg", "theory-width-depth", "theory-orthogonal", "sgd-bound"]
TRAINING_NAMES = ["cnn-depth", "cnn-width", "bn-skip", "mlp-mnist"]


class FakeExperiment:
    """An experiment object that returns one verdict and counts its runs."""

    def __init__(self, name, value=1.0):
        self.NAME = name
        self.TITLE = f"Fake experiment {name}"
        self.value = value
        self.calls = 0

    def settings(self, scale):
        return {"scale": scale, "value": self.value}

    def run(self, scale, out_dir, *, progress=True, smoke=False, data_root=None, device="auto"):
        self.calls += 1
        verdict = Verdict(
            claim=f"{self.NAME} claim holds", experiment=self.NAME, statistic="fake statistic",
            value=self.value, ci_low=0.5, ci_high=1.5, expected_sign=1, verdict="supported",
            rule="fake rule: supported if the interval is above 0", n_runs=3,
        )
        return ExperimentOutput(self.NAME, [verdict],
                                [Section("Fake figure", "<p>fake section body</p>")],
                                [f"note from {self.NAME}"])


class BrokenExperiment(FakeExperiment):
    def run(self, scale, out_dir, **options):
        raise RuntimeError("simulated failure inside the experiment")


@pytest.fixture
def fakes(monkeypatch):
    """Replace the registry's entries with one working and one failing fake."""
    table = {"fake": FakeExperiment("fake"), "broken": BrokenExperiment("broken")}
    for name in list(EXPERIMENTS):
        monkeypatch.delitem(EXPERIMENTS, name)
    for name, experiment in table.items():
        monkeypatch.setitem(EXPERIMENTS, name, experiment)
    return table


def test_registry_lists_theory_experiments():
    for name in THEORY_NAMES:
        assert name in EXPERIMENTS
    assert list(EXPERIMENTS)[: len(THEORY_NAMES)] == THEORY_NAMES


def test_registry_names_match_experiments():
    for name, experiment in EXPERIMENTS.items():
        assert experiment.NAME == name
        assert isinstance(experiment, Experiment)
        assert experiment.TITLE


def test_registry_settings_of_both_scales_are_json():
    for name, experiment in EXPERIMENTS.items():
        for scale in ("quick", "paper"):
            assert json.loads(json.dumps(experiment.settings(scale))), name


def test_registry_lists_training_experiments():
    assert list(EXPERIMENTS)[len(THEORY_NAMES):] == TRAINING_NAMES


def test_resolve_names_expands_all():
    assert resolve_names(["all"]) == list(EXPERIMENTS)
    assert resolve_names(["sgd-bound", "linreg", "linreg"]) == ["linreg", "sgd-bound"]


def test_resolve_names_rejects_unknown():
    with pytest.raises(ValueError, match=r"unknown experiment\(s\): nope.*linreg.*'all'"):
        resolve_names(["linreg", "nope"])


def test_run_experiments_rejects_unknown_scale(tmp_path):
    with pytest.raises(ValueError, match="scale='huge' is not supported"):
        run_experiments(["linreg"], "huge", tmp_path)


def test_cli_list_prints_every_experiment(capsys):
    assert main(["reproduce", "--list"]) == 0
    printed = capsys.readouterr().out
    for name, experiment in EXPERIMENTS.items():
        assert name in printed
        assert experiment.TITLE in printed


def test_cli_unknown_name_lists_known(capsys):
    assert main(["reproduce", "nope", "--out", "unused"]) == 2
    error = capsys.readouterr().err
    assert "unknown experiment(s): nope" in error
    assert "linreg" in error


def test_cli_without_names_is_an_error(capsys):
    assert main(["reproduce", "--out", "unused"]) == 2
    assert "no experiment named" in capsys.readouterr().err


def test_failure_recorded_others_continue(tmp_path, fakes):
    records = run_experiments(["all"], "quick", tmp_path, progress=False)
    status = {record.name: record.status for record in records}
    assert status == {"fake": "completed", "broken": "failed"}
    broken = records[1]
    assert broken.output is None
    assert "simulated failure inside the experiment" in broken.error
    assert "simulated failure" in (tmp_path / "broken" / "error.txt").read_text()
    assert fakes["fake"].calls == 1


def test_report_and_claims_written(tmp_path, fakes):
    records = run_experiments(["all"], "quick", tmp_path, progress=False)
    index = write_report(records, tmp_path, scale="quick")
    page = index.read_text()
    assert index == tmp_path / "report" / "index.html"
    assert page.index("fake claim holds") < page.index("fake section body")
    assert "simulated failure" in page
    assert "note from fake" in page
    claims = (tmp_path / "report" / "claims.md").read_text()
    assert "| fake claim holds | fake |" in claims
    assert "**R1**: fake rule" in claims
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [item["status"] for item in summary["experiments"]] == ["completed", "failed"]


def test_cli_reproduce_writes_report_and_docs(tmp_path, fakes, capsys):
    docs = tmp_path / "reproduction.md"
    code = main(["reproduce", "all", "--out", str(tmp_path / "out"), "--no-progress",
                 "--write-docs", str(docs)])
    assert code == 1
    printed = capsys.readouterr().out
    assert "broken: failed" in printed
    assert "supported     fake claim holds" in printed
    assert (tmp_path / "out" / "report" / "index.html").is_file()
    text = docs.read_text()
    assert "gradconf reproduce all --scale quick --out DIR --write-docs" in text
    assert "| fake claim holds |" in text
    assert "| value | 1.0 |" in text
    assert "Error: `RuntimeError: simulated failure inside the experiment`" in text


def test_rerun_with_other_settings_fails(tmp_path, fakes):
    run_experiments(["fake"], "quick", tmp_path, progress=False)
    fakes["fake"].value = 2.0
    records = run_experiments(["fake"], "quick", tmp_path, progress=False)
    assert records[0].status == "failed"
    assert "contains results of scale 'quick'" in records[0].error
    assert fakes["fake"].calls == 1


def test_write_docs_lists_settings(tmp_path, fakes):
    records = run_experiments(["fake"], "paper", tmp_path, progress=False)
    path = write_docs(records, tmp_path / "docs.md", scale="paper", command="gradconf x")
    text = path.read_text()
    assert "## Fake experiment fake (`fake`)" in text
    assert "| scale | paper |" in text
    assert "- note from fake" in text


def test_claims_markdown_escapes_pipes():
    verdict = Verdict(claim="a | b", experiment="e", statistic="s", value=math.nan,
                      ci_low=math.nan, ci_high=math.nan, expected_sign=0,
                      verdict="inconclusive", rule="r", n_runs=0)
    text = claims_markdown([verdict])
    assert "| a \\| b | e | s | n/a | n/a | ≈ 0 | **inconclusive** | 0 | R1 |" in text


def test_wilson_interval_known_values():
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4)
    assert high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)


@pytest.mark.parametrize("successes,trials", [(0, 1), (0, 7), (3, 7), (7, 7), (1, 3)])
def test_wilson_interval_contains_proportion(successes, trials):
    low, high = wilson_interval(successes, trials)
    assert 0.0 <= low <= successes / trials
    assert successes / trials <= high <= 1.0


def test_wilson_interval_rejects_bad_counts():
    with pytest.raises(ValueError, match="trials >= 1"):
        wilson_interval(3, 2)


def test_mean_interval_student_t():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert high - mean == pytest.approx(4.303 / math.sqrt(3), rel=1e-6)
    assert mean - low == pytest.approx(high - mean)
    _, low, high = mean_interval([4.0])
    assert math.isnan(low)
    assert math.isnan(high)


def test_experiment_protocol_accepts_objects():
    assert isinstance(FakeExperiment("x"), Experiment)
    assert not isinstance(Path("."), Experiment)
