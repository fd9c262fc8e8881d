"""Kernels for the affine parameters of LayerNorm, RMSNorm, GroupNorm and BatchNorm (eval).

Each layer computes y = γ ⊙ x̂ + β, where x̂ is the normalized input. When x̂ of example
i depends only on example i (every case here; BatchNorm only with running statistics),
the per-example gradients are ∇γ_i = Σ_t b_it ⊙ x̂_it and ∇β_i = Σ_t b_it, summed over
the positions t that share one γ. They are no larger than one output row, so they are
formed directly. x̂ is recomputed from the captured input.
"""

from __future__ import annotations

import torch
from torch import nn

from gradconf.engine.layers.terms import SampleTerm, Term

__all__ = [
    "batch_norm_terms",
    "check_batch_norm",
    "group_norm_terms",
    "layer_norm_terms",
    "rms_norm_terms",
]


def _affine_terms(
    module: nn.Module,
    normalized: torch.Tensor,
    backprops: torch.Tensor,
    reduce_dims: tuple[int, ...],
) -> dict[str, Term]:
    # NOTE: sum(dim=()) would reduce every dimension, so T = 1 inputs skip the sum.
    def over_positions(values: torch.Tensor) -> torch.Tensor:
        return values.sum(dim=reduce_dims) if reduce_dims else values

    terms: dict[str, Term] = {}
    if getattr(module, "weight", None) is not None:
        terms["weight"] = SampleTerm(over_positions(backprops * normalized))
    if getattr(module, "bias", None) is not None:
        terms["bias"] = SampleTerm(over_positions(backprops))
    return terms


def layer_norm_terms(
    module: nn.LayerNorm, activations: torch.Tensor, backprops: torch.Tensor
) -> dict[str, Term]:
    """Describe LayerNorm's per-example gradients: [B, *, *N], [B, *, *N] -> [B, *N] each.

    x̂ normalizes over the last len(N) dimensions with the biased variance; the
    * dimensions are the T positions summed over.
    """
    dims = tuple(range(-len(module.normalized_shape), 0))
    mean = activations.mean(dim=dims, keepdim=True)
    variance = activations.var(dim=dims, unbiased=False, keepdim=True)
    normalized = (activations - mean) * torch.rsqrt(variance + module.eps)
    return _affine_terms(module, normalized, backprops, tuple(range(1, activations.ndim + dims[0])))


def rms_norm_terms(
    module: nn.RMSNorm, activations: torch.Tensor, backprops: torch.Tensor
) -> dict[str, Term]:
    """Describe RMSNorm's per-example gradient: [B, *, *N], [B, *, *N] -> [B, *N].

    x̂ = x / sqrt(mean(x²) + eps) over the last len(N) dimensions; eps=None means the
    machine epsilon of the input dtype, as in torch.nn.RMSNorm.
    """
    dims = tuple(range(-len(module.normalized_shape), 0))
    eps = module.eps if module.eps is not None else torch.finfo(activations.dtype).eps
    normalized = activations * torch.rsqrt(activations.pow(2).mean(dim=dims, keepdim=True) + eps)
    return _affine_terms(module, normalized, backprops, tuple(range(1, activations.ndim + dims[0])))


def group_norm_terms(
    module: nn.GroupNorm, activations: torch.Tensor, backprops: torch.Tensor
) -> dict[str, Term]:
    """Describe GroupNorm's per-example gradients: [B, C, *S], [B, C, *S] -> [B, C] each.

    x̂ normalizes each example's C/G channels of a group over the channels and S.
    """
    batch = activations.shape[0]
    grouped = activations.reshape(batch, module.num_groups, -1)  # (B, G, C/G·prod(S))
    mean = grouped.mean(dim=-1, keepdim=True)
    variance = grouped.var(dim=-1, unbiased=False, keepdim=True)
    normalized = ((grouped - mean) * torch.rsqrt(variance + module.eps)).view_as(activations)
    return _affine_terms(module, normalized, backprops, tuple(range(2, activations.ndim)))


def check_batch_norm(module: nn.modules.batchnorm._BatchNorm) -> None:
    """Raise ValueError unless the module normalizes with its running statistics."""
    if module.training:
        raise ValueError(
            f"{type(module).__name__} ran in train mode, where it normalizes with the batch's "
            "statistics, so each example's gradient depends on the other examples and "
            "per-example gradients are not defined. Pass batchnorm='eval' to use the running "
            "statistics, or measure mini-batch gradients with "
            "gradconf.engine.minibatch_gram(..., batchnorm='train')."
        )
    if module.running_mean is None:
        raise ValueError(
            f"{type(module).__name__} has track_running_stats=False, so it normalizes with "
            "the batch's statistics even in eval mode and per-example gradients are not "
            "defined. Use gradconf.engine.minibatch_gram(..., batchnorm='train') for this model."
        )


def batch_norm_terms(
    module: nn.modules.batchnorm._BatchNorm, activations: torch.Tensor, backprops: torch.Tensor
) -> dict[str, Term]:
    """Describe eval-mode BatchNorm's per-example gradients: [B, C, *S], [B, C, *S] -> [B, C].

    x̂ = (x − running_mean) / sqrt(running_var + eps), per channel.
    """
    shape = (1, -1) + (1,) * (activations.ndim - 2)
    mean = module.running_mean.view(shape)
    scale = torch.rsqrt(module.running_var.view(shape) + module.eps)
    normalized = (activations - mean) * scale
    return _affine_terms(module, normalized, backprops, tuple(range(2, activations.ndim)))
