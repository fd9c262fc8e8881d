"""Confusion statistics of a set of gradient pairs.

For pairs (i, j) with inner products ⟨g_i, g_j⟩ and squared norms ‖g_i‖², ‖g_j‖²:
η̂ = max(0, −min ⟨g_i, g_j⟩) is the smallest confusion bound η with ⟨g_i, g_j⟩ ≥ −η on these
pairs, and cos_ij = ⟨g_i, g_j⟩ / (‖g_i‖ ‖g_j‖). A pair with a zero-norm gradient has no
cosine; it is counted in ``undefined_cosines`` and left out of the cosine statistics only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["ConfusionStats", "gram_pairs", "pair_statistics"]


@dataclass(frozen=True)
class ConfusionStats:
    """Summary of pairwise gradient inner products and cosines.

    Cosine fields are NaN only when every pair has a zero-norm gradient, and
    ``undefined_cosines`` then equals ``num_pairs``.
    """

    num_gradients: int
    num_pairs: int
    eta: float
    min_inner: float
    mean_inner: float
    min_cosine: float
    mean_cosine: float
    median_cosine: float
    q05_cosine: float
    q95_cosine: float
    negative_fraction: float
    undefined_cosines: int
    mean_sq_norm: float
    min_sq_norm: float
    max_sq_norm: float

    def to_dict(self) -> dict[str, float | int]:
        """Return the fields as a plain dict (one row of confusion.parquet)."""
        return asdict(self)


def gram_pairs(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (inner, sq_norm_i, sq_norm_j) for all pairs i < j of a [B, B] Gram: each [B(B−1)/2]."""
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"expected a square [B, B] Gram matrix, received shape {tuple(gram.shape)}.")
    rows, cols = torch.triu_indices(gram.shape[0], gram.shape[0], offset=1)
    diagonal = torch.diagonal(gram)
    return gram[rows, cols], diagonal[rows], diagonal[cols]


def cosines_of_pairs(
    inner: torch.Tensor, sq_norm_a: torch.Tensor, sq_norm_b: torch.Tensor
) -> torch.Tensor:
    """Return the cosine of each pair ([K]); NaN where either gradient has zero norm."""
    denominator = torch.sqrt(torch.clamp(sq_norm_a, min=0.0) * torch.clamp(sq_norm_b, min=0.0))
    cosine = inner / denominator
    cosine = torch.clamp(cosine, -1.0, 1.0)
    return torch.where(denominator > 0, cosine, torch.full_like(cosine, float("nan")))


def pair_statistics(
    inner: torch.Tensor,
    sq_norm_a: torch.Tensor,
    sq_norm_b: torch.Tensor,
    *,
    sq_norms: torch.Tensor | None = None,
) -> tuple[ConfusionStats, np.ndarray]:
    """Compute confusion statistics from K pairs; return (stats, cosines [K] as float64 array).

    ``sq_norms`` are the squared norms of the distinct gradients (for the norm statistics);
    by default the norms of both pair members are pooled.
    """
    inner = inner.detach().to(torch.float64).cpu().reshape(-1)
    sq_norm_a = sq_norm_a.detach().to(torch.float64).cpu().reshape(-1)
    sq_norm_b = sq_norm_b.detach().to(torch.float64).cpu().reshape(-1)
    num_pairs = int(inner.numel())
    if num_pairs < 1:
        raise ValueError(
            "a pairwise statistic needs at least two gradients (one pair); received none. "
            "Measure at least two examples or mini-batches."
        )
    if not (torch.isfinite(inner).all() and torch.isfinite(sq_norm_a).all()
            and torch.isfinite(sq_norm_b).all()):
        raise FloatingPointError(
            "gradient inner products contain NaN or infinity; the model has probably diverged. "
            "Lower the learning rate or check the inputs."
        )
    if sq_norms is None:
        sq_norms = torch.cat([sq_norm_a, sq_norm_b])
    sq_norms = sq_norms.detach().to(torch.float64).cpu().reshape(-1)
    cosine = cosines_of_pairs(inner, sq_norm_a, sq_norm_b).numpy()
    defined = cosine[~np.isnan(cosine)]
    undefined = num_pairs - int(defined.size)
    if defined.size:
        cosine_summary = (
            float(defined.min()),
            float(defined.mean()),
            float(np.median(defined)),
            float(np.quantile(defined, 0.05)),
            float(np.quantile(defined, 0.95)),
        )
    else:
        cosine_summary = (math.nan,) * 5
    min_inner = float(inner.min())
    stats = ConfusionStats(
        num_gradients=int(sq_norms.numel()),
        num_pairs=num_pairs,
        eta=max(0.0, -min_inner),
        min_inner=min_inner,
        mean_inner=float(inner.mean()),
        min_cosine=cosine_summary[0],
        mean_cosine=cosine_summary[1],
        median_cosine=cosine_summary[2],
        q05_cosine=cosine_summary[3],
        q95_cosine=cosine_summary[4],
        negative_fraction=float((inner < 0).to(torch.float64).mean()),
        undefined_cosines=undefined,
        mean_sq_norm=float(sq_norms.mean()),
        min_sq_norm=float(sq_norms.min()),
        max_sq_norm=float(sq_norms.max()),
    )
    return stats, cosine


def gram_statistics(gram: torch.Tensor) -> tuple[ConfusionStats, np.ndarray]:
    """Compute confusion statistics over all pairs i < j of a [B, B] Gram (B >= 2)."""
    if gram.ndim == 2 and gram.shape[0] < 2:
        raise ValueError(
            f"a pairwise statistic needs at least two gradients; received a Gram of shape "
            f"{tuple(gram.shape)}. Measure at least two examples or mini-batches."
        )
    inner, sq_a, sq_b = gram_pairs(gram)
    return pair_statistics(inner, sq_a, sq_b, sq_norms=torch.diagonal(gram))
