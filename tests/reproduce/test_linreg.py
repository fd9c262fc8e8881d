import math

import numpy as np
import pytest
import torch
from torch import nn

from gradconf.engine import reference_gram
from gradconf.reproduce import linreg


def fail_if_called(*args, **kwargs):
    raise AssertionError("a stored run was trained again")


def test_linreg_paper_settings():
    paper = linreg.settings("paper")
    assert paper["num_examples"] == 100
    assert paper["dims"] == [80, 120]
    assert paper["batch_size"] == 1
    assert paper["runs"] == 3
    quick = linreg.settings("quick")
    assert {k: v for k, v in quick.items() if k != "epochs"} == {
        k: v for k, v in paper.items() if k != "epochs"
    }
    assert paper["epochs"] >= quick["epochs"]


def test_linreg_rejects_unknown_scale():
    with pytest.raises(ValueError, match="scale='medium' is not supported"):
        linreg.settings("medium")


def test_linreg_smoke_run_and_resume(tmp_path, monkeypatch):
    output = linreg.run("quick", tmp_path, progress=False, smoke=True)
    assert len(output.verdicts) == 3
    assert all(v.n_runs == 2 for v in output.verdicts)
    stored = sorted(path.name for path in (tmp_path / "runs").glob("*.parquet"))
    assert stored == [
        "d16-run0-cosines.parquet", "d16-run0.parquet", "d16-run1-cosines.parquet",
        "d16-run1.parquet", "d8-run0-cosines.parquet", "d8-run0.parquet",
        "d8-run1-cosines.parquet", "d8-run1.parquet",
    ]
    monkeypatch.setattr(linreg, "train_run", fail_if_called)
    again = linreg.run("quick", tmp_path, progress=False, smoke=True)
    assert [v.value for v in again.verdicts] == [v.value for v in output.verdicts]


def test_normalized_gram_matches_engine():
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((7, 5))
    targets = rng.standard_normal(7)
    weights = rng.standard_normal(5)
    residuals = inputs @ weights - targets
    model = nn.Linear(5, 1, bias=False).double()
    # The normalized problem: inputs x/√d and weights √d·w give the same residuals.
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(weights * math.sqrt(5))[None, :])
    scaled = torch.from_numpy(inputs / math.sqrt(5))
    expected = reference_gram(
        model, lambda out, y: 0.5 * ((out - y) ** 2).sum(), scaled,
        torch.from_numpy(targets)[:, None], loss_reduction="sum",
    ).gram
    torch.testing.assert_close(linreg.normalized_gram(inputs, residuals), expected)


def test_train_run_history_and_noise_floor():
    config = {**linreg.settings("quick"), "num_examples": 30, "dims": [10, 40], "epochs": 60,
              "measure_every": 20}
    under, cosines = linreg.train_run(10, 0, config)
    over, _ = linreg.train_run(40, 0, config)
    assert list(under["epoch"]) == [0, 20, 40, 60]
    assert set(cosines["stage"]) == {"init", "final"}
    assert len(cosines) == 2 * 30 * 29 // 2
    floor = 0.5 * config["noise"] ** 2 * (1 - 10 / 30)
    # The under-parameterized model stalls near its noise floor; the other goes below it.
    assert under["loss"].iloc[-1] == pytest.approx(floor, rel=0.6)
    assert over["loss"].iloc[-1] < 0.2 * floor
