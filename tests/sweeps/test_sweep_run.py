import json
import shutil

import pytest
from sweep_helpers import assert_same_results, run_ids

import gradconf.sweeps.execute as execute_module
from gradconf.sweeps import parse_sweep, run_sweep, sweep_status
from gradconf.sweeps.directory import SWEEP_FILE


def test_sweep_writes_directory(finished_sweep):
    sweep = json.loads((finished_sweep / SWEEP_FILE).read_text())
    assert sweep["kind"] == "sweep"
    assert sweep["name"] == "tiny"
    assert [entry["run_id"] for entry in sweep["runs"]] == [
        "model.depth=1,seed=0", "model.depth=1,seed=1",
        "model.depth=2,seed=0", "model.depth=2,seed=1",
    ]
    assert sweep["runs"][0]["model.depth"] == 1
    assert sweep["runs"][0]["dir"] == "runs/model.depth=1,seed=0"
    assert run_ids(finished_sweep) == sorted(entry["run_id"] for entry in sweep["runs"])
    manifest = json.loads((finished_sweep / "runs" / "model.depth=2,seed=1" /
                           "manifest.json").read_text())
    assert manifest["labels"] == {"model.depth": 2, "seed": 1}


def test_sweep_two_jobs_identical(finished_sweep, tmp_path, tiny_sweep):
    outcome = run_sweep(parse_sweep(tiny_sweep), tmp_path / "jobs2", jobs=2, progress=False)
    assert outcome.completed == 4
    assert_same_results(finished_sweep, tmp_path / "jobs2")


def test_sweep_resume_redoes_only_missing(finished_sweep, tmp_path, tiny_sweep, capsys):
    out_dir = tmp_path / "resumed"
    shutil.copytree(finished_sweep, out_dir)
    runs = out_dir / "runs"
    shutil.rmtree(runs / "model.depth=1,seed=1")
    # A run killed midway leaves only its hidden partial folder.
    (runs / "model.depth=2,seed=0").rename(runs / ".model.depth=2,seed=0.partial")
    untouched_mtimes = {run_id: (runs / run_id / "metrics.parquet").stat().st_mtime_ns
            for run_id in ("model.depth=1,seed=0", "model.depth=2,seed=1")}

    outcome = run_sweep(parse_sweep(tiny_sweep), out_dir, progress=True)

    assert outcome.completed == 2
    assert outcome.skipped == 2
    assert not (runs / ".model.depth=2,seed=0.partial").exists()
    for run_id, mtime in untouched_mtimes.items():
        assert (runs / run_id / "metrics.parquet").stat().st_mtime_ns == mtime, run_id
    assert_same_results(finished_sweep, out_dir)
    assert "2/4" in capsys.readouterr().err  # the skipped runs start the progress bar


def test_sweep_rejects_other_sweep(finished_sweep, tiny_sweep):
    tiny_sweep["base"]["train"]["epochs"] = 2
    before = (finished_sweep / SWEEP_FILE).read_text()
    with pytest.raises(FileExistsError, match=r"contains another sweep \('tiny'\); settings that "
                                              r"differ: base.train.epochs"):
        run_sweep(parse_sweep(tiny_sweep), finished_sweep, progress=False)
    assert (finished_sweep / SWEEP_FILE).read_text() == before


def test_sweep_rejects_foreign_directory(tmp_path, tiny_sweep):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"is not empty and contains no sweep.json"):
        run_sweep(parse_sweep(tiny_sweep), tmp_path, progress=False)


def test_sweep_continue_adds_runs(finished_sweep, tmp_path, tiny_sweep):
    out_dir = tmp_path / "continued"
    shutil.copytree(finished_sweep, out_dir)
    tiny_sweep["seeds"] = [0, 1, 2]
    outcome = run_sweep(parse_sweep(tiny_sweep), out_dir, progress=False, continue_other=True)
    assert outcome.completed == 2
    assert outcome.skipped == 4
    sweep = json.loads((out_dir / SWEEP_FILE).read_text())
    assert sweep["spec"]["seeds"] == [0, 1, 2]
    assert sweep["previous"][0]["spec"]["seeds"] == [0, 1]
    assert sweep_status(out_dir).done == 6


def test_sweep_status_counts_failed_run(tmp_path, tiny_sweep):
    # The sphere data is a regression task, so execute_run raises for cross-entropy.
    tiny_sweep["grid"] = {"data.name": ["digits", "sphere"]}
    tiny_sweep["seeds"] = [0]
    out_dir = tmp_path / "failing"
    outcome = run_sweep(parse_sweep(tiny_sweep), out_dir, progress=False)
    assert outcome.completed == 1
    assert list(outcome.failed) == ["data.name=sphere,seed=0"]
    assert "regression task" in outcome.failed["data.name=sphere,seed=0"]
    assert (out_dir / "runs" / ".data.name=sphere,seed=0.error.txt").is_file()

    shutil.rmtree(out_dir / "runs" / "data.name=digits,seed=0")
    status = sweep_status(out_dir)
    assert status.total == 2
    assert status.done == 0
    assert status.pending == ["data.name=digits,seed=0"]
    assert list(status.failed) == ["data.name=sphere,seed=0"]
    assert "regression task" in status.failed["data.name=sphere,seed=0"]


def test_sweep_interrupt_keeps_finished_runs(tmp_path, tiny_sweep, monkeypatch):
    real_execute_run = execute_module.execute_run
    started = []

    def interrupt_second_run(config, run_dir, **kwargs):
        started.append(run_dir.name)
        if len(started) == 2:
            raise KeyboardInterrupt
        return real_execute_run(config, run_dir, **kwargs)

    monkeypatch.setattr(execute_module, "execute_run", interrupt_second_run)
    out_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(parse_sweep(tiny_sweep), out_dir, progress=False)
    assert run_ids(out_dir) == ["model.depth=1,seed=0"]
    status = sweep_status(out_dir)
    assert status.done == 1
    assert len(status.pending) == 3
    assert status.failed == {}


def test_sweep_rejects_bad_executor_options(tmp_path, tiny_sweep):
    spec = parse_sweep(tiny_sweep)
    with pytest.raises(ValueError, match=r"executor='dask' is not supported; allowed executors: "
                                         r"local, ray"):
        run_sweep(spec, tmp_path, executor="dask")
    with pytest.raises(ValueError, match=r"apply to executor='ray' only"):
        run_sweep(spec, tmp_path, address="auto")
    with pytest.raises(ValueError, match=r"jobs=0 is invalid"):
        run_sweep(spec, tmp_path, jobs=0)
    assert not any(tmp_path.iterdir())
