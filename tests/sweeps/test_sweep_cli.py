import json
import shutil
import sys

import pytest

from gradconf.cli.main import main

TINY_TOML = """
name = "tiny"
seeds = [0, 1]

[base]
device = "cpu"

[base.model]
width = 8

[base.data]
name = "digits"
max_train = 256

[base.train]
epochs = 1
batch_size = 32

[base.measure]
num_pairs = 4
batch_size = 32

[grid]
"model.depth" = [1, 2]

[lr_selection]
grid = [0.01, 0.1]
"""


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


def test_cli_dry_run_lists_runs(sweep_file, tmp_path, capsys):
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model.depth=1,lr=0.01,seed=0"
    assert lines[-1] == "8 runs"
    assert len(lines) == 9
    assert not (tmp_path / "out").exists()


def test_cli_dry_run_shipped_name(capsys):
    assert main(["sweep", "example", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "24 runs"


def test_cli_list_shipped(capsys):
    assert main(["sweep", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert "example" in names
    assert "study" in names


def test_cli_typo_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "typo.toml"
    path.write_text('name = "typo"\n[grid]\n"model.widht" = [8]\n')
    assert main(["sweep", str(path), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "gradconf sweep: error:" in error
    assert "unknown field 'model.widht' in [grid]; known fields: model.kind" in error


def test_cli_missing_file_is_error(capsys):
    assert main(["sweep"]) == 2
    assert "no sweep file given" in capsys.readouterr().err


def test_cli_ray_missing_is_error(sweep_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--executor", "ray"]) == 2
    assert "pip install 'gradconf[ray]'" in capsys.readouterr().err


def test_cli_local_options_rejected_for_ray_only(sweep_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--gpus-per-run", "1"]) == 2
    assert "apply to executor='ray' only" in capsys.readouterr().err


def test_cli_sweep_then_status(sweep_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(sweep_file), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Selected learning rates" in printed
    assert f"Results: {out}" in printed
    selection = json.loads((out / "lr_selection.json").read_text())
    assert selection["rule"] == "lowest_final_train_loss"
    assert sum(row["selected"] for row in selection["rows"]) == 2

    shutil.rmtree(out / "runs" / "model.depth=2,lr=0.1,seed=1")
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"sweep 'tiny' in {out}: 8 runs, 7 done (0 diverged), 0 failed, 1 pending" in status
    assert "  model.depth=2,lr=0.1,seed=1" in status

    assert main(["sweep", str(sweep_file), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"8 runs, 7 already complete in {out}"


def test_cli_status_not_a_sweep(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "contains no sweep.json" in capsys.readouterr().err
