import json

import pytest

from gradconf.cli.main import main

TINY_STUDY = ["--widths", "4,8,16", "--depths", "1,2,3", "--seeds", "0,1", "--epochs", "2",
              "--num-pairs", "4", "--device", "cpu", "--no-progress", "--base-width", "8",
              "--base-depth", "1"]


def test_cli_study_end_to_end(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), *TINY_STUDY]) == 0
    printed = capsys.readouterr().out
    assert "Report:" in printed
    assert "Wider networks have lower gradient confusion after training" in printed
    assert (out / "report" / "index.html").is_file()
    runs = sorted(path.name for path in (out / "runs").iterdir() if not path.name.startswith("."))
    assert len(runs) == 12


def test_cli_study_resume_redoes_only_missing(tmp_path, caplog):
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), "--no-report", *TINY_STUDY]) == 0
    victim = out / "runs" / "depth-2-seed1"
    victim.rename(out / "runs" / ".depth-2-seed1.partial")
    kept = (out / "runs" / "width-4-seed0" / "metrics.parquet").stat().st_mtime_ns
    caplog.set_level("INFO")
    assert main(["study", "--out", str(out), "--no-report", *TINY_STUDY]) == 0
    assert "completed: 1, skipped (already complete): 11" in caplog.text
    assert (victim / "complete.json").is_file()
    assert (out / "runs" / "width-4-seed0" / "metrics.parquet").stat().st_mtime_ns == kept


def test_cli_study_rejects_other_study(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["study", "--out", str(out), "--no-report", *TINY_STUDY]) == 0
    changed = [*TINY_STUDY]
    changed[changed.index("--epochs") + 1] = "3"
    assert main(["study", "--out", str(out), "--no-report", *changed]) == 2
    assert "contains another study" in capsys.readouterr().err


def test_cli_study_rejects_bad_width(tmp_path, capsys):
    assert main(["study", "--out", str(tmp_path / "s"), "--widths", "0,8"]) == 2
    assert "widths contains [0]" in capsys.readouterr().err


def test_cli_study_rejects_unknown_dataset(capsys):
    with pytest.raises(SystemExit) as info:
        main(["study", "--dataset", "imagenet"])
    assert info.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_cli_measure_json(capsys):
    assert main(["measure", "--width", "16", "--num-gradients", "8", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["stats"]["num_gradients"] == 8
    assert payload["stats"]["num_pairs"] == 28
    assert payload["coverage"] == 1.0


def test_cli_measure_table(capsys):
    assert main(["measure", "--width", "16", "--num-gradients", "8"]) == 0
    printed = capsys.readouterr().out
    assert "min_cosine" in printed
    assert "eta" in printed


def test_cli_report_missing_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
