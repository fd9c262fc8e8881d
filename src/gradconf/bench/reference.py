"""The float64 reference Gram that every method's Gram is compared with.

The reference is ``gradconf.engine.reference_gram``: one float64 autograd call per example,
sharing no code with the timed methods. It runs in a worker process of its own, so that its
B × P float64 gradients are returned to the system before the timed workers start.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from gradconf.engine import reference_gram

__all__ = ["blocked_reference_gram", "relative_error"]

logger = logging.getLogger(__name__)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Return max|actual − expected| / max|expected| (the plain max difference if
    ``expected`` is zero)."""
    difference = float((actual.to(torch.float64) - expected).abs().max())
    scale = float(expected.abs().max())
    return difference / scale if scale > 0.0 else difference


def blocked_reference_gram(
    model: nn.Module,
    loss_fn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    memory_mb: int,
) -> torch.Tensor:
    """Compute the float64 mean-loss Gram [B, B] with ``reference_gram`` in blocks.

    ``reference_gram`` keeps all B per-example gradients (B × P float64). When that exceeds
    ``memory_mb``, the batch is split into blocks of k examples and the oracle runs on every
    pair of blocks (2k examples), which yields every entry at the cost of more passes.
    """
    batch_size = inputs.shape[0]
    num_params = sum(param.numel() for param in model.parameters())
    # 8 bytes per float64 entry, plus a quarter for the per-parameter copies of the oracle.
    per_call = max(2, int(memory_mb * 2**20 / (num_params * 8 * 1.25)))
    if batch_size <= per_call:
        return reference_gram(model, loss_fn, inputs, targets, loss_reduction="mean").gram

    block = per_call // 2
    starts = list(range(0, batch_size, block))
    blocks = [torch.arange(start, min(start + block, batch_size)) for start in starts]
    logger.info("reference in %d blocks of %d examples (%d calls)", len(blocks), block,
                len(blocks) * (len(blocks) - 1) // 2)
    gram = torch.zeros(batch_size, batch_size, dtype=torch.float64)
    for first in range(len(blocks)):
        for second in range(first + 1, len(blocks)):
            index = torch.cat([blocks[first], blocks[second]])  # [≤ 2k]
            # "sum" keeps each example's gradient ∇f_i; the 1/B² of the mean loss comes last.
            pair = reference_gram(
                model, loss_fn, inputs[index], targets[index], loss_reduction="sum"
            ).gram
            gram[index[:, None], index[None, :]] = pair
    return gram / batch_size**2

