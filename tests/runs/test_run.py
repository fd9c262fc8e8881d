import json

import pandas as pd
import pytest

from gradconf.runs.run import execute_run, run_state

RUN_FILES = ("config.json", "manifest.json", "metrics.parquet", "confusion.parquet",
             "layers.parquet", "cosines.parquet", "complete.json")


def test_run_writes_all_files(tmp_path, tiny_run_config):
    outcome = execute_run(tiny_run_config, tmp_path / "run", labels={"width": 8})
    assert outcome.status == "completed"
    for name in RUN_FILES:
        assert (tmp_path / "run" / name).is_file(), name
    metrics = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    assert list(metrics["epoch"]) == [0, 1, 2]
    confusion = pd.read_parquet(tmp_path / "run" / "confusion.parquet")
    assert list(confusion["epoch"]) == [0, 1, 2]
    assert (confusion["num_pairs"] == 4).all()
    cosines = pd.read_parquet(tmp_path / "run" / "cosines.parquet")
    assert len(cosines) == 12
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["labels"] == {"width": 8}
    assert manifest["seed"] == 0
    assert manifest["wall_seconds"] > 0


def test_run_same_seed_identical(tmp_path, tiny_run_config):
    execute_run(tiny_run_config, tmp_path / "a")
    execute_run(tiny_run_config, tmp_path / "b")
    for name in ("metrics.parquet", "confusion.parquet", "cosines.parquet"):
        first = pd.read_parquet(tmp_path / "a" / name).drop(columns=["wall_seconds"], errors="ignore")
        second = pd.read_parquet(tmp_path / "b" / name).drop(columns=["wall_seconds"], errors="ignore")
        pd.testing.assert_frame_equal(first, second)


def test_run_other_seed_differs(tmp_path, tiny_run_config):
    execute_run(tiny_run_config, tmp_path / "a")
    execute_run(tiny_run_config.replace(seed=1), tmp_path / "b")
    first = pd.read_parquet(tmp_path / "a" / "metrics.parquet")
    second = pd.read_parquet(tmp_path / "b" / "metrics.parquet")
    assert first["train_loss"].iloc[-1] != second["train_loss"].iloc[-1]


def test_run_complete_is_skipped(tmp_path, tiny_run_config):
    execute_run(tiny_run_config, tmp_path / "run")
    before = (tmp_path / "run" / "metrics.parquet").stat().st_mtime_ns
    outcome = execute_run(tiny_run_config, tmp_path / "run")
    assert outcome.status == "skipped"
    assert (tmp_path / "run" / "metrics.parquet").stat().st_mtime_ns == before


def test_run_partial_is_redone(tmp_path, tiny_run_config):
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    (partial / "metrics.parquet").write_text("half written")
    assert run_state(tmp_path / "run") == "incomplete"
    outcome = execute_run(tiny_run_config, tmp_path / "run")
    assert outcome.status == "completed"
    assert not partial.exists()
    assert run_state(tmp_path / "run") == "complete"


def test_run_other_config_rejected(tmp_path, tiny_run_config):
    execute_run(tiny_run_config, tmp_path / "run")
    with pytest.raises(FileExistsError, match="different configuration"):
        execute_run(tiny_run_config.replace(**{"model.width": 9}), tmp_path / "run")


def test_run_diverged_is_recorded(tmp_path, tiny_run_config):
    config = tiny_run_config.replace(**{"train.lr": 1e30})
    outcome = execute_run(config, tmp_path / "run")
    assert outcome.status == "diverged"
    complete = json.loads((tmp_path / "run" / "complete.json").read_text())
    assert "diverged" in complete["error"]


def test_run_resumes_from_checkpoint(tmp_path, tiny_run_config, monkeypatch):
    import gradconf.runs.run as run_module

    config = tiny_run_config.replace(**{"train.epochs": 3})
    execute_run(config, tmp_path / "uninterrupted")

    save = run_module._save_checkpoint

    def save_then_crash(folder, state):
        save(folder, state)
        if state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        execute_run(config, tmp_path / "resumed")
    assert run_state(tmp_path / "resumed") == "incomplete"
    monkeypatch.setattr(run_module, "_save_checkpoint", save)
    execute_run(config, tmp_path / "resumed")

    manifest = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert manifest["resumed_after_epoch"] == 2
    assert not (tmp_path / "resumed" / "checkpoint.pt").exists()
    for name in ("metrics.parquet", "confusion.parquet", "layers.parquet", "cosines.parquet"):
        expected = pd.read_parquet(tmp_path / "uninterrupted" / name)
        actual = pd.read_parquet(tmp_path / "resumed" / name)
        expected = expected.drop(columns=["wall_seconds"], errors="ignore")
        actual = actual.drop(columns=["wall_seconds"], errors="ignore")
        pd.testing.assert_frame_equal(actual, expected)
