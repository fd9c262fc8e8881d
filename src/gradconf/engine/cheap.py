"""Cheap gradient statistics from per-example squared norms and the batch gradient.

These need only the diagonal of the Gram, ‖g_i‖², which the ghost route gives for about
B·T²·(d + p) per layer instead of B²·T²·(d + p), and the batch gradient Σ_i g_i, which
the backward computes anyway. With Q = Σ_i ‖g_i‖² and R = ‖Σ_i g_i‖²:

- gradient diversity Q / R (Yin et al., 2018, "Gradient Diversity: a Key Ingredient for
  Scalable Distributed Learning");
- mean off-diagonal inner product (R − Q) / (B(B − 1)), because R − Q = Σ_{i≠j} ⟨g_i, g_j⟩;
- the simple gradient noise scale B_simple = tr(Σ) / |G|² of McCandlish et al. (2018,
  "An Empirical Model of Large-Batch Training", arXiv:1812.06162), where G is the
  expected per-example gradient and Σ the per-example gradient covariance.

Estimator (derived here from E‖∇f_i‖² = |G|² + tr(Σ) and E⟨∇f_i, ∇f_j⟩ = |G|² for
i ≠ j, with per-example loss gradients ∇f_i = c·g_i, c = B under a mean loss, else 1):
|G|² ≈ c²(R − Q) / (B(B − 1)) and tr(Σ) ≈ c²(B·Q − R) / (B(B − 1)), both unbiased, so
B_simple ≈ (B·Q − R) / (R − Q). The ratio is not unbiased and is negative when the
|G|² estimate is; averaging both estimates over steps before dividing is more stable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradconf.engine.ghost import capture_batch
from gradconf.engine.result import GramResult

__all__ = ["CheapStats", "cheap_stats", "cheap_stats_from_gram"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CheapStats:
    """Gradient statistics of one batch from ‖g_i‖² and ‖Σ_i g_i‖².

    ``sq_norms`` [B] (float64, CPU), ``batch_sq_norm`` and ``mean_inner_product`` are in
    the units of the loss as given (1/B² times the per-example-loss values under a mean
    loss). ``grad_sq_norm_estimate`` (|G|²) and ``trace_covariance_estimate`` (tr Σ) are
    in per-example-loss units. ``gradient_diversity`` and ``simple_noise_scale`` do not
    depend on the scaling. Entries that need two examples are NaN when B = 1.
    """

    sq_norms: torch.Tensor
    batch_sq_norm: float
    batch_size: int
    loss_reduction: str
    gradient_diversity: float
    mean_inner_product: float
    grad_sq_norm_estimate: float
    trace_covariance_estimate: float
    simple_noise_scale: float


def _divide(numerator: float, denominator: float) -> float:
    if denominator == 0.0:
        return math.nan if numerator == 0.0 else math.copysign(math.inf, numerator)
    return numerator / denominator


def stats_from_norms(
    sq_norms: torch.Tensor, batch_sq_norm: float, *, loss_reduction: str
) -> CheapStats:
    """Compute ``CheapStats`` from ‖g_i‖² [B] and ‖Σ_i g_i‖² (formulas in the module doc)."""
    batch = int(sq_norms.shape[0])
    total = float(sq_norms.sum())  # Q
    scale = float(batch) ** 2 if loss_reduction == "mean" else 1.0  # c²
    if batch > 1:
        pairs = batch * (batch - 1)
        mean_inner = (batch_sq_norm - total) / pairs
        grad_sq_norm = scale * mean_inner
        trace_covariance = scale * (batch * total - batch_sq_norm) / pairs
        noise_scale = _divide(trace_covariance, grad_sq_norm)
    else:
        mean_inner = grad_sq_norm = trace_covariance = noise_scale = math.nan
    return CheapStats(
        sq_norms=sq_norms.to(torch.float64).cpu(),
        batch_sq_norm=batch_sq_norm,
        batch_size=batch,
        loss_reduction=loss_reduction,
        gradient_diversity=_divide(total, batch_sq_norm),
        mean_inner_product=mean_inner,
        grad_sq_norm_estimate=grad_sq_norm,
        trace_covariance_estimate=trace_covariance,
        simple_noise_scale=noise_scale,
    )


def cheap_stats_from_gram(result: GramResult) -> CheapStats:
    """Compute ``CheapStats`` from a per-example Gram: Q = trace(gram), R = sum(gram)."""
    if result.granularity != "example":
        raise ValueError(
            f"received a GramResult of granularity {result.granularity!r}; the cheap "
            "statistics are defined for per-example gradients. Pass a result of "
            "per_example_gram or ghost_gram."
        )
    return stats_from_norms(
        result.sq_norms, float(result.gram.sum()), loss_reduction=result.loss_reduction
    )


def cheap_stats(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_reduction: str = "mean",
    batchnorm: str = "eval",
) -> CheapStats:
    """Compute ``CheapStats`` from one forward and backward, measuring only ‖g_i‖².

    Same arguments as ``ghost_gram``; the model is left as found.
    """
    capture = capture_batch(
        model, loss_fn, inputs, targets,
        loss_reduction=loss_reduction, batchnorm=batchnorm, quantity="sq_norms",
    )
    (batch,) = capture.captured_batches()
    sq_norms = torch.stack(list(batch.values.values())).sum(dim=0)
    batch_sq_norm = float(sum(float(value) for value in batch.batch_sq_norms.values()))
    return stats_from_norms(sq_norms, batch_sq_norm, loss_reduction=loss_reduction)
