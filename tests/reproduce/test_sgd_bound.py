import numpy as np
import pytest
import torch

from gradconf.measure import gram_statistics
from gradconf.reproduce import sgd_bound
from gradconf.reproduce.sgd_bound import bound_constants, make_problem, path_confusion, sgd_path


def fail_if_called(*args, **kwargs):
    raise AssertionError("a stored seed was run again")


def losses(inputs, targets):
    """Return F and the per-example f_i as functions of a float64 tensor w."""
    x = torch.from_numpy(inputs)
    y = torch.from_numpy(targets)

    def example_loss(i):
        return lambda w: 0.5 * (x[i] @ w - y[i]) ** 2

    return (lambda w: 0.5 * torch.mean((x @ w - y) ** 2)), example_loss


@pytest.mark.parametrize("shape", [(8, 3), (4, 9)], ids=["N8-d3", "N4-d9"])
def test_bound_constants_match_hessians(shape):
    inputs, targets = make_problem(*shape, "sphere", 0.1, seed=2)
    inputs = inputs * np.linspace(0.5, 2.0, shape[0])[:, None]  # unequal norms
    full, example = losses(inputs, targets)
    start = torch.zeros(shape[1], dtype=torch.float64)
    smoothness = max(
        torch.linalg.eigvalsh(torch.autograd.functional.hessian(example(i), start)).max().item()
        for i in range(shape[0])
    )
    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(full, start))
    pl = eigenvalues[eigenvalues > 1e-10].min().item()
    expected_smoothness, expected_pl = bound_constants(inputs)
    assert expected_smoothness == pytest.approx(smoothness, rel=1e-12)
    assert expected_pl == pytest.approx(pl, rel=1e-9)


def test_pl_inequality_holds_and_is_tight():
    inputs, targets = make_problem(6, 10, "sphere", 0.1, seed=4)
    _, pl = bound_constants(inputs)
    optimum = np.linalg.lstsq(inputs, targets, rcond=None)[0]
    minimum = 0.5 * np.mean((inputs @ optimum - targets) ** 2)
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(200):
        w = optimum + rng.standard_normal(10)
        residuals = inputs @ w - targets
        gradient = inputs.T @ residuals / len(targets)
        ratios.append(0.5 * gradient @ gradient / (0.5 * np.mean(residuals**2) - minimum))
    assert min(ratios) >= pl * (1 - 1e-9)
    # Along the eigenvector of the smallest non-zero eigenvalue the inequality is an equality.
    eigenvalues, vectors = np.linalg.eigh(inputs.T @ inputs / len(targets))
    direction = vectors[:, np.flatnonzero(eigenvalues > 1e-10)[0]]
    residuals = inputs @ (optimum + direction) - targets
    gradient = inputs.T @ residuals / len(targets)
    ratio = 0.5 * gradient @ gradient / (0.5 * np.mean(residuals**2) - minimum)
    assert ratio == pytest.approx(pl, rel=1e-8)


def test_path_confusion_matches_gram_statistics():
    inputs, targets = make_problem(7, 4, "sphere", 0.1, seed=1)
    path = sgd_path(inputs, targets, step=0.05, steps=30, seed=0)
    etas = path_confusion(inputs, targets, path)
    assert etas.shape == (31,)
    for t in (0, 10, 30):
        residuals = inputs @ path[t] - targets
        gradients = residuals[:, None] * inputs  # [N, d]
        stats, _ = gram_statistics(torch.from_numpy(gradients @ gradients.T))
        assert etas[t] == pytest.approx(stats.eta, rel=1e-12, abs=1e-15)


def test_orthonormal_inputs_have_no_confusion():
    inputs, targets = make_problem(5, 8, "orthonormal", 0.1, seed=0)
    np.testing.assert_allclose(inputs @ inputs.T, np.eye(5), atol=1e-12)
    path = sgd_path(inputs, targets, step=0.1, steps=50, seed=1)
    assert path_confusion(inputs, targets, path).max() < 1e-12


def test_orthonormal_needs_enough_dimensions():
    with pytest.raises(ValueError, match="orthonormal inputs need N <= d"):
        make_problem(5, 3, "orthonormal", 0.1, seed=0)


def test_sgd_bound_paper_settings():
    paper = sgd_bound.settings("paper")
    assert paper["step_fraction"] == 0.5  # α = 1/(N L) < 2/(N L)
    assert paper["seeds"] == 100
    assert paper["steps"] == 100000
    assert set(paper["problems"]) == {"under", "over", "orthonormal"}


def test_sgd_bound_smoke_run_and_resume(tmp_path, monkeypatch):
    output = sgd_bound.run("quick", tmp_path, progress=False, smoke=True)
    assert len(output.verdicts) == 3
    under = output.verdicts[0]
    # With η > 0 the bound is far above the observed suboptimality.
    assert under.verdict == "supported"
    assert under.value < -1
    assert len(list((tmp_path / "under").glob("seed*.parquet"))) == 3
    monkeypatch.setattr(sgd_bound, "sgd_path", fail_if_called)
    again = sgd_bound.run("quick", tmp_path, progress=False, smoke=True)
    assert [v.value for v in again.verdicts] == [v.value for v in output.verdicts]
