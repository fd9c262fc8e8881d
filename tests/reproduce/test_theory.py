import numpy as np
import pandas as pd
import pytest
import torch

from gradconf.config import ModelConfig
from gradconf.engine import reference_gram
from gradconf.models import build_model
from gradconf.reproduce import theory, theory_orthogonal, theory_width_depth
from gradconf.reproduce.theory import derive_seed, measure_draw, sphere_problem, square_loss
from gradconf.reproduce.theory_orthogonal import independence_verdict
from gradconf.reproduce.theory_width_depth import cell_probabilities

CPU = torch.device("cpu")


def fail_if_called(*args, **kwargs):
    raise AssertionError("a stored cell was measured again")


def test_width_depth_paper_settings():
    paper = theory_width_depth.settings("paper")
    assert paper["widths"] == [10, 40, 160, 640]
    assert paper["depths"] == [2, 4, 8, 16]
    assert paper["num_examples"] == 32
    assert paper["dim"] == 10
    assert paper["draws"] == 500
    assert paper["activation"] == "tanh"
    assert paper["init"] == "gaussian"
    assert paper["bias"] is False
    assert theory_width_depth.settings("quick")["draws"] == 50


def test_orthogonal_paper_settings():
    paper = theory_orthogonal.settings("paper")
    assert paper["inits"] == ["orthogonal", "gaussian"]
    assert paper["activation"] == "identity"
    assert paper["depths"] == [1, 2, 4, 8, 16, 32]
    assert paper["draws"] == 500
    assert paper["bias"] is False


def test_width_depth_smoke_run_and_resume(tmp_path, monkeypatch):
    output = theory_width_depth.run("quick", tmp_path, progress=False, smoke=True, device="cpu")
    assert output.name == "theory-width-depth"
    assert len(output.verdicts) == 4
    assert {v.verdict for v in output.verdicts} <= {"supported", "not supported", "inconclusive"}
    cells = sorted(path.name for path in (tmp_path / "cells").glob("*.parquet"))
    assert len(cells) == 9
    assert "width=4-depth=1.parquet" in cells
    assert "data:image/png;base64," in output.sections[0].html

    monkeypatch.setattr(theory, "measure_draw", fail_if_called)
    again = theory_width_depth.run("quick", tmp_path, progress=False, smoke=True, device="cpu")
    assert [v.value for v in again.verdicts] == [v.value for v in output.verdicts]


def test_orthogonal_smoke_run_and_resume(tmp_path, monkeypatch):
    output = theory_orthogonal.run("quick", tmp_path, progress=False, smoke=True, device="cpu")
    assert len(output.verdicts) == 4
    assert {v.expected_sign for v in output.verdicts} == {0, 1, -1}
    assert len(list((tmp_path / "cells").glob("*.parquet"))) == 6
    monkeypatch.setattr(theory, "measure_draw", fail_if_called)
    theory_orthogonal.run("quick", tmp_path, progress=False, smoke=True, device="cpu")


def test_probability_estimator_constructed_case():
    frame = pd.DataFrame({
        "width": [10] * 4 + [20] * 4,
        "depth": [2] * 8,
        "eta_normalized": [0.1, 0.2, 0.9, 1.0, 0.1, 0.1, 0.2, 0.9],
        "min_cosine": [-0.5] * 8,
    })
    table = cell_probabilities(frame, threshold=0.5).set_index("width")
    assert table.loc[10, "successes"] == 2
    assert table.loc[10, "probability"] == 0.5
    assert table.loc[20, "successes"] == 3
    assert table.loc[20, "probability"] == 0.75
    assert table.loc[10, "ci_low"] < 0.5 < table.loc[10, "ci_high"]


def test_threshold_counts_equal_as_success():
    frame = pd.DataFrame({"width": [1, 1], "depth": [1, 1], "eta_normalized": [0.5, 0.6],
                          "min_cosine": [0.0, 0.0]})
    assert cell_probabilities(frame, threshold=0.5)["successes"].item() == 1


def test_orthogonal_linear_gram_is_depth_scaled():
    # An orthogonal linear network has Gram (depth + 1) r_i r_j x_iᵀx_j exactly.
    inputs, targets = sphere_problem(5, 4, seed=3, device=CPU)
    for depth in (1, 3):
        torch.manual_seed(depth)
        config = ModelConfig(width=6, depth=depth, activation="identity", init="orthogonal",
                             bias=False)
        model = build_model(config, (4,), 1).double()
        residuals = (model(inputs) - targets).detach().reshape(-1)
        expected = (depth + 1) * torch.outer(residuals, residuals) * (inputs @ inputs.T)
        gram = reference_gram(model, square_loss, inputs, targets, loss_reduction="sum").gram
        # The init runs in float32, so the layers are orthogonal to float32 precision only.
        torch.testing.assert_close(gram, expected, rtol=1e-5, atol=1e-6)


def test_measure_draw_normalizes_by_mean_sq_norm():
    inputs, targets = sphere_problem(6, 3, seed=1, device=CPU)
    config = ModelConfig(width=5, depth=2, activation="tanh", init="gaussian", bias=False)
    model = build_model(config, (3,), 1).double()
    stats = measure_draw(model, config, inputs, targets, init_seed=7)
    assert stats["eta_normalized"] == pytest.approx(stats["eta"] / stats["mean_sq_norm"])
    assert -1.0 <= stats["min_cosine"] <= 1.0
    assert measure_draw(model, config, inputs, targets, init_seed=7) == stats
    assert measure_draw(model, config, inputs, targets, init_seed=8) != stats


def test_measure_draw_matches_reference_gram():
    inputs, targets = sphere_problem(6, 3, seed=2, device=CPU)
    config = ModelConfig(width=4, depth=3, activation="tanh", init="gaussian", bias=False)
    model = build_model(config, (3,), 1).double()
    stats = measure_draw(model, config, inputs, targets, init_seed=5)
    gram = reference_gram(model, square_loss, inputs, targets, loss_reduction="sum").gram
    off_diagonal = gram[~torch.eye(6, dtype=torch.bool)]
    assert stats["eta"] == pytest.approx(max(0.0, -off_diagonal.min().item()), rel=1e-9)
    assert stats["mean_sq_norm"] == pytest.approx(torch.diagonal(gram).mean().item(), rel=1e-9)


def test_measure_draw_keeps_global_generator():
    inputs, targets = sphere_problem(4, 3, seed=1, device=CPU)
    config = ModelConfig(width=3, depth=1, init="gaussian")
    model = build_model(config, (3,), 1).double()
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    measure_draw(model, config, inputs, targets, init_seed=1)
    torch.testing.assert_close(torch.rand(1), expected)


def test_derive_seed_is_deterministic():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert derive_seed(0, 1, 2) != derive_seed(0, 2, 1)


def depth_frame(trend):
    rng = np.random.default_rng(0)
    rows = []
    for depth in (1, 2, 4, 8):
        for value in rng.normal(1.0 + trend * depth, 0.05, size=30):
            rows.append({"depth": depth, "eta_normalized": value})
    return pd.DataFrame(rows)


def test_independence_verdict_flat_supported():
    verdict = independence_verdict(depth_frame(0.0), "eta_normalized", "η", 1.25, claim="flat")
    assert verdict.verdict == "supported"
    assert verdict.ci_low <= 0 <= verdict.ci_high
    assert verdict.expected_sign == 0


def test_independence_verdict_trend_not_supported():
    verdict = independence_verdict(depth_frame(0.5), "eta_normalized", "η", 1.25, claim="trend")
    assert verdict.verdict == "not supported"
    assert "R = " in verdict.reason


def test_independence_verdict_small_trend_inconclusive():
    # A detectable trend whose size stays within the band.
    verdict = independence_verdict(depth_frame(0.01), "eta_normalized", "η", 1.25, claim="small")
    assert verdict.verdict == "inconclusive"
