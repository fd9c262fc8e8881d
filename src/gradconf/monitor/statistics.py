"""Statistics of one monitored step from the per-example Gram blocks of its backward passes.

A step runs K ≥ 1 backward passes (micro-batches) of b_k examples, N = Σ_k b_k in all.
``GramCapture`` returns, per micro-batch, the [b_k, b_k] Gram of the gradients of the loss
as it was differentiated. This module converts each block to per-example-loss units,
G_ij = ⟨∇f_i, ∇f_j⟩, by the factor (c_k / s)², where c_k = b_k under a mean loss (each
example enters the loss as f_i / b_k), c_k = 1 under a sum, and s is the loss scale (the
factor the reduced loss was multiplied by before ``backward``, e.g. 1/K for gradient
accumulation or the GradScaler scale). Cosines do not depend on these factors.

Pairs are the pairs i < j inside one micro-batch: inner products between examples of
different micro-batches are not computed by the engine. With one backward per step
(K = 1) the pairs are all B(B − 1)/2 pairs of the batch and every statistic equals
``gram_statistics`` and ``cheap_stats_from_gram`` on the same Gram.

Cheap tier, from the per-example squared norms and m, the mean inner product over the
pairs (an unbiased estimate of |E ∇f|² for independently drawn examples):

- gradient diversity Σ_i ‖∇f_i‖² / ‖Σ_i ∇f_i‖², where ‖Σ_i ∇f_i‖² = Σ_i ‖∇f_i‖² +
  N(N − 1)·m is exact for K = 1 and an estimate for K > 1;
- trace of the per-example gradient covariance, mean_i ‖∇f_i‖² − m;
- simple noise scale (McCandlish et al., 2018, arXiv:1812.06162), trace / m.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["STAT_COLUMNS", "MicroBatchGram", "layer_of", "step_statistics"]

# Statistics of a measured step, in record column order. NaN marks an undefined value.
STAT_COLUMNS = (
    "num_pairs",
    "eta",
    "min_inner",
    "mean_inner",
    "min_cosine",
    "mean_cosine",
    "median_cosine",
    "q05_cosine",
    "q95_cosine",
    "negative_fraction",
    "undefined_cosines",
    "mean_sq_norm",
    "min_sq_norm",
    "max_sq_norm",
    "gradient_diversity",
    "trace_covariance",
    "noise_scale",
)
_QUANTILES = (0.05, 0.5, 0.95)


@dataclass(frozen=True)
class MicroBatchGram:
    """One backward pass's Gram terms in per-example-loss units.

    ``layer_grams`` maps each layer (module name, see ``layer_of``) to the [b, b] float64
    Gram of that layer's parameters; ``gram`` is their sum over layers.
    """

    gram: np.ndarray
    layer_grams: dict[str, np.ndarray]


def layer_of(parameter_name: str) -> str:
    """Return the module that owns a parameter: "features.0.weight" -> "features.0".

    A parameter registered on the model itself has no module path; it is its own layer.
    """
    module, _, _ = parameter_name.rpartition(".")
    return module or parameter_name


def to_example_units(
    values: dict[str, torch.Tensor], batch_size: int, *, loss_reduction: str, loss_scale: float
) -> MicroBatchGram:
    """Sum per-parameter Gram terms by layer and rescale to ⟨∇f_i, ∇f_j⟩ ([b, b] each)."""
    per_example = float(batch_size) if loss_reduction == "mean" else 1.0
    factor = (per_example / loss_scale) ** 2
    layer_grams: dict[str, np.ndarray] = {}
    for name, term in values.items():
        layer = layer_of(name)
        block = term.numpy() * factor
        if layer in layer_grams:
            layer_grams[layer] += block
        else:
            layer_grams[layer] = block
    gram = functools.reduce(np.add, layer_grams.values())
    return MicroBatchGram(gram=gram, layer_grams=layer_grams)


@functools.lru_cache(maxsize=64)
def _upper_triangle(size: int) -> np.ndarray:
    """Boolean mask of the entries i < j of a [size, size] matrix, in row-major order."""
    return np.triu(np.ones((size, size), dtype=bool), k=1)


def _cosine_matrix(gram: np.ndarray) -> np.ndarray:
    """Return gram_ij / (‖g_i‖ ‖g_j‖) clipped to [-1, 1]; NaN where a norm is zero ([b, b])."""
    norms = np.sqrt(np.maximum(np.diagonal(gram), 0.0))
    inverse = np.divide(1.0, norms, out=np.full_like(norms, np.nan), where=norms > 0)
    cosine = gram * inverse[:, None]
    cosine *= inverse[None, :]
    np.minimum(cosine, 1.0, out=cosine)  # NaN stays NaN
    np.maximum(cosine, -1.0, out=cosine)
    return cosine


def _pairs(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the inner products and cosines of the pairs i < j of one block ([b(b−1)/2] each)."""
    mask = _upper_triangle(gram.shape[0])
    return gram[mask], _cosine_matrix(gram)[mask]


def _order_statistics(values: np.ndarray, quantiles: Sequence[float]) -> tuple[float, list[float]]:
    """Return the minimum and the quantiles of ``values`` (NumPy's default "linear" method).

    One ``np.partition`` places the few order statistics needed, instead of a full sort.
    """
    last = values.size - 1
    positions = [last * quantile for quantile in quantiles]
    ranks = {0}
    for position in positions:
        below = int(math.floor(position))
        ranks.update((below, min(below + 1, last)))
    ordered = np.partition(values, sorted(ranks))
    results = []
    for position in positions:
        below = int(math.floor(position))
        low, high = float(ordered[below]), float(ordered[min(below + 1, last)])
        weight = position - below
        # NumPy interpolates from the nearer end, which keeps the result within [low, high].
        if weight >= 0.5:
            results.append(high - (high - low) * (1.0 - weight))
        else:
            results.append(low + (high - low) * weight)
    return float(ordered[0]), results


def _divide(numerator: float, denominator: float) -> float:
    if denominator == 0.0:
        return math.nan if numerator == 0.0 else math.copysign(math.inf, numerator)
    return numerator / denominator


def _nan_statistics(sq_norms: np.ndarray | None, num_pairs: int) -> dict[str, float]:
    stats = dict.fromkeys(STAT_COLUMNS, math.nan)
    stats["num_pairs"] = num_pairs
    stats["undefined_cosines"] = num_pairs
    if sq_norms is not None and sq_norms.size and np.isfinite(sq_norms).all():
        stats["mean_sq_norm"] = float(sq_norms.mean())
        stats["min_sq_norm"] = float(sq_norms.min())
        stats["max_sq_norm"] = float(sq_norms.max())
        if sq_norms.size == 1:
            stats["gradient_diversity"] = 1.0  # one gradient: Σ‖g_i‖² = ‖Σ g_i‖²
    return stats


def step_statistics(
    blocks: Sequence[MicroBatchGram], *, layers: bool
) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    """Compute the statistics of one step from its micro-batch Grams.

    Returns (statistics keyed by ``STAT_COLUMNS``, minimum cosine per layer, cosines of all
    pairs [num_pairs] float64). Pairwise entries are NaN without pairs (a batch of one);
    every entry is NaN when a Gram contains NaN or infinity.
    """
    sq_norms = np.concatenate([np.diagonal(block.gram) for block in blocks])
    num_pairs = sum(block.gram.shape[0] * (block.gram.shape[0] - 1) // 2 for block in blocks)
    if not all(np.isfinite(block.gram).all() for block in blocks):
        return _nan_statistics(None, num_pairs), {}, np.empty(0)
    if num_pairs == 0:
        return _nan_statistics(sq_norms, 0), {}, np.empty(0)

    pairs = [_pairs(block.gram) for block in blocks]
    inner = np.concatenate([block_inner for block_inner, _ in pairs])
    cosine = np.concatenate([block_cosine for _, block_cosine in pairs])
    defined = cosine[~np.isnan(cosine)]
    if defined.size:
        minimum, (q05, median, q95) = _order_statistics(defined, _QUANTILES)
        cosine_summary = (minimum, float(defined.mean()), median, q05, q95)
    else:
        cosine_summary = (math.nan,) * 5

    count = int(sq_norms.size)
    total = float(sq_norms.sum())
    mean_inner = float(inner.mean())
    mean_sq_norm = total / count
    trace_covariance = mean_sq_norm - mean_inner
    min_inner = float(inner.min())
    stats = {
        "num_pairs": num_pairs,
        "eta": max(0.0, -min_inner),
        "min_inner": min_inner,
        "mean_inner": mean_inner,
        "min_cosine": cosine_summary[0],
        "mean_cosine": cosine_summary[1],
        "median_cosine": cosine_summary[2],
        "q05_cosine": cosine_summary[3],
        "q95_cosine": cosine_summary[4],
        "negative_fraction": float((inner < 0).mean()),
        "undefined_cosines": num_pairs - int(defined.size),
        "mean_sq_norm": mean_sq_norm,
        "min_sq_norm": float(sq_norms.min()),
        "max_sq_norm": float(sq_norms.max()),
        "gradient_diversity": _divide(total, total + count * (count - 1) * mean_inner),
        "trace_covariance": trace_covariance,
        "noise_scale": _divide(trace_covariance, mean_inner),
    }
    layer_min = _layer_min_cosines(blocks) if layers else {}
    return stats, layer_min, cosine


def _layer_min_cosines(blocks: Sequence[MicroBatchGram]) -> dict[str, float]:
    minima: dict[str, float] = {}
    for block in blocks:
        if block.gram.shape[0] < 2:
            continue
        names = list(block.layer_grams)
        grams = np.stack([block.layer_grams[name] for name in names])  # (L, b, b)
        norms = np.sqrt(np.maximum(np.diagonal(grams, axis1=1, axis2=2), 0.0))  # (L, b)
        inverse = np.divide(1.0, norms, out=np.full_like(norms, np.nan), where=norms > 0)
        cosine = grams * inverse[:, :, None]
        cosine *= inverse[:, None, :]
        diagonal = np.arange(grams.shape[1])
        cosine[:, diagonal, diagonal] = np.nan
        # fmin skips NaN (zero-norm gradients, the diagonal); a layer is NaN only if all are.
        values = np.fmin.reduce(cosine.reshape(len(names), -1), axis=1)
        for name, value in zip(names, np.clip(values, -1.0, 1.0).tolist(), strict=True):
            previous = minima.get(name, math.nan)
            minima[name] = value if math.isnan(previous) else min(previous, value)
    return minima
