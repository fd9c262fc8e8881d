"""Loading a study directory: labels, incomplete runs and invalid directories."""

from __future__ import annotations

import json
import shutil

import pytest

from gradconf.report.load import LABEL_COLUMNS, load_study

# Loading does not depend on the study's size, so most tests use 12 runs.
SMALL = {"widths": (8, 32, 128), "depths": (1, 2, 4), "seeds": (0, 1)}


def test_load_joins_run_labels(shared_study):
    root = shared_study(**SMALL, epochs=3)

    data = load_study(root)

    assert len(data.runs) == 12
    assert data.incomplete == []
    assert data.kind == "width-depth"
    assert data.name == "synthetic paper study"
    for frame in (data.metrics, data.confusion, data.layers, data.cosines):
        assert list(frame.columns[: len(LABEL_COLUMNS)]) == list(LABEL_COLUMNS)
    run = data.metrics[data.metrics["run_id"] == "width-32-seed1"]
    assert run["epoch"].tolist() == [0, 1, 2, 3]
    assert set(run["width"]) == {32}
    assert set(run["depth"]) == {2}
    assert set(run["group"]) == {"width"}
    assert set(data.runs["status"]) == {"completed"}
    assert set(data.configs) == set(data.runs["run_id"])
    assert data.configs["depth-4-seed0"]["model"]["depth"] == 4


def test_load_lists_run_without_complete_json(shared_study):
    root = shared_study(**SMALL, incomplete=["width-32-seed1"])

    data = load_study(root)

    assert "width-32-seed1" not in set(data.runs["run_id"])
    assert "width-32-seed1" not in set(data.metrics["run_id"])
    assert [run.run_id for run in data.incomplete] == ["width-32-seed1"]
    assert "complete.json is missing" in data.incomplete[0].reason


def test_load_lists_missing_and_failed_runs(study_factory):
    root = study_factory(**SMALL)
    shutil.rmtree(root / "runs" / "depth-1-seed0")
    shutil.rmtree(root / "runs" / "depth-2-seed0")
    (root / "runs" / ".depth-2-seed0.error.txt").write_text(
        "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n"
    )
    shutil.move(root / "runs" / "depth-4-seed0", root / "runs" / ".depth-4-seed0.partial")

    reasons = {run.run_id: run.reason for run in load_study(root).incomplete}

    assert reasons["depth-1-seed0"] == "run directory is missing (the run has not been started)"
    assert reasons["depth-2-seed0"].startswith("run failed: RuntimeError: CUDA out of memory")
    assert "partial directory .depth-4-seed0.partial" in reasons["depth-4-seed0"]


def test_load_lists_run_with_missing_data_file(study_factory):
    root = study_factory(**SMALL)
    (root / "runs" / "width-8-seed0" / "cosines.parquet").unlink()

    data = load_study(root)

    assert [run.run_id for run in data.incomplete] == ["width-8-seed0"]
    assert "cosines.parquet is missing" in data.incomplete[0].reason


def test_load_lists_run_with_corrupt_parquet(study_factory):
    root = study_factory(**SMALL)
    (root / "runs" / "width-8-seed0" / "metrics.parquet").write_bytes(b"not parquet")

    data = load_study(root)

    assert [run.run_id for run in data.incomplete] == ["width-8-seed0"]
    assert "could not be read" in data.incomplete[0].reason


def test_load_reads_diverged_status(shared_study):
    root = shared_study(**SMALL, diverged=["depth-4-seed1"])

    data = load_study(root)

    statuses = dict(zip(data.runs["run_id"], data.runs["status"]))
    assert statuses["depth-4-seed1"] == "diverged"
    assert statuses["depth-4-seed0"] == "completed"


def test_load_rejects_directory_without_study_json(tmp_path):
    (tmp_path / "metrics.parquet").write_bytes(b"")

    with pytest.raises(FileNotFoundError, match="is not a study directory: study.json is missing "
                       r"\(found: metrics.parquet\)"):
        load_study(tmp_path)


def test_load_rejects_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist or is not a directory"):
        load_study(tmp_path / "absent")


def test_load_rejects_invalid_json(tmp_path):
    (tmp_path / "study.json").write_text("{not json")

    with pytest.raises(ValueError, match="is not valid JSON"):
        load_study(tmp_path)


def test_load_rejects_study_without_runs(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"kind": "width-depth"}))

    with pytest.raises(ValueError, match=r"has no 'runs' list \(top level: \['kind'\]\)"):
        load_study(tmp_path)


def test_load_rejects_run_entry_without_keys(tmp_path):
    (tmp_path / "study.json").write_text(json.dumps({"runs": [{"run_id": "a", "dir": "runs/a"}]}))

    with pytest.raises(ValueError, match=r"runs\[0\] lacks key\(s\) group, x_name, x, seed"):
        load_study(tmp_path)


def test_load_rejects_duplicate_run_id(study_factory):
    root = study_factory(**SMALL)
    study = json.loads((root / "study.json").read_text())
    study["runs"].append(study["runs"][0])
    (root / "study.json").write_text(json.dumps(study))

    with pytest.raises(ValueError, match="run_id 'width-8-seed0' appears more than once"):
        load_study(root)
