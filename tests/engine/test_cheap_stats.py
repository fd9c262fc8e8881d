"""Cheap tier against statistics computed directly from per-example gradient vectors."""

from __future__ import annotations

import math

import pytest
import torch
from gram_models import build, cross_entropy_loss

from gradconf.engine import cheap_stats, cheap_stats_from_gram, minibatch_gram, reference_gram


def _per_example_gradients(model, loss_fn, inputs, targets) -> torch.Tensor:
    """Per-example loss gradients ∇f_i as rows of a [B, P] float64 matrix."""
    rows = []
    params = [param for param in model.parameters() if param.requires_grad]
    for index in range(inputs.shape[0]):
        loss = loss_fn(model(inputs[index : index + 1]), targets[index : index + 1])
        grads = torch.autograd.grad(loss, params)
        rows.append(torch.cat([grad.reshape(-1) for grad in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", ["residual", "conv2d", "embedding"])
def test_cheap_stats_match_direct_computation(name: str, reduction: str) -> None:
    torch.manual_seed(0)
    batch = build(name, 5, 2)
    model = batch.model.to(torch.float64).eval()
    inputs = batch.inputs.to(torch.float64) if batch.inputs.is_floating_point() else batch.inputs
    loss_fn = cross_entropy_loss(reduction)

    stats = cheap_stats(model, loss_fn, inputs, batch.targets, loss_reduction=reduction)

    # ∇f_i: gradients of the per-example losses; g_i = ∇f_i / B under a mean loss.
    example = _per_example_gradients(model, cross_entropy_loss("sum"), inputs, batch.targets)
    size = example.shape[0]
    g = example / size if reduction == "mean" else example
    torch.testing.assert_close(stats.sq_norms, g.pow(2).sum(dim=1), rtol=1e-10, atol=0.0)
    batch_sq_norm = float(g.sum(dim=0).pow(2).sum())
    assert stats.batch_sq_norm == pytest.approx(batch_sq_norm, rel=1e-10)
    diversity = float(g.pow(2).sum()) / batch_sq_norm
    assert stats.gradient_diversity == pytest.approx(diversity, rel=1e-10)
    inner = g @ g.T
    off_diagonal = float(inner.sum() - inner.trace()) / (size * (size - 1))
    assert stats.mean_inner_product == pytest.approx(off_diagonal, rel=1e-9)

    # Unbiased |G|² and tr(Σ) from the sample mean and sample covariance of ∇f_i.
    mean = example.mean(dim=0)
    trace_covariance = float((example - mean).pow(2).sum()) / (size - 1)
    grad_sq_norm = float(mean.pow(2).sum()) - trace_covariance / size
    assert stats.trace_covariance_estimate == pytest.approx(trace_covariance, rel=1e-9)
    assert stats.grad_sq_norm_estimate == pytest.approx(grad_sq_norm, rel=1e-9)
    assert stats.simple_noise_scale == pytest.approx(trace_covariance / grad_sq_norm, rel=1e-8)


def test_cheap_stats_from_gram_agree_with_cheap_stats() -> None:
    torch.manual_seed(0)
    batch = build("conv2d", 4, 2)
    model, loss_fn = batch.model.to(torch.float64).eval(), cross_entropy_loss("mean")
    inputs = batch.inputs.to(torch.float64)
    direct = cheap_stats(model, loss_fn, inputs, batch.targets)
    from_gram = cheap_stats_from_gram(reference_gram(model, loss_fn, inputs, batch.targets))
    torch.testing.assert_close(direct.sq_norms, from_gram.sq_norms, rtol=1e-10, atol=0.0)
    fields = ("batch_sq_norm", "gradient_diversity", "mean_inner_product", "simple_noise_scale")
    for field in fields:
        assert getattr(direct, field) == pytest.approx(getattr(from_gram, field), rel=1e-8), field


def test_cheap_stats_batch_of_one() -> None:
    torch.manual_seed(0)
    batch = build("linear", 1, 1)
    stats = cheap_stats(batch.model, cross_entropy_loss("mean"), batch.inputs, batch.targets)
    assert stats.gradient_diversity == pytest.approx(1.0, rel=1e-6)
    assert math.isnan(stats.mean_inner_product)
    assert math.isnan(stats.simple_noise_scale)


def test_cheap_stats_from_minibatch_gram_rejected() -> None:
    torch.manual_seed(0)
    batch = build("linear", 2, 1)
    pairs = [(batch.inputs, batch.targets), (batch.inputs, batch.targets)]
    result = minibatch_gram(batch.model, cross_entropy_loss("mean"), pairs)
    with pytest.raises(ValueError, match="granularity 'minibatch'"):
        cheap_stats_from_gram(result)
