"""Kernel for ``nn.Linear``: y = W a + b at T positions per example.

activations [B, *, d] and backprops [B, *, p], where * is empty (T = 1) or any extra
position dimensions (T = their product, e.g. tokens). The weight's per-example gradient
is g_i = Σ_t b_it a_itᵀ and the bias's is Σ_t b_it.
"""

from __future__ import annotations

import torch
from torch import nn

from gradconf.engine.layers.terms import OuterProductTerm, SampleTerm, SharedGram, Term

__all__ = ["linear_terms"]


def linear_terms(
    module: nn.Linear, activations: torch.Tensor, backprops: torch.Tensor
) -> dict[str, Term]:
    """Describe nn.Linear's per-example gradients: [B, *, d], [B, *, p] -> terms.

    weight [p, d]: outer product over T positions, ⟨g_i, g_j⟩ = Σ_{t,s} (a_it·a_js)(b_it·b_js).
    bias [p]: Σ_t b_it, formed directly ([B, p]).
    """
    batch = activations.shape[0]
    a = activations.reshape(batch, 1, -1, activations.shape[-1])  # (B, 1, T, d)
    b = backprops.reshape(batch, 1, -1, backprops.shape[-1])  # (B, 1, T, p)
    if a.shape[2] == 1:
        # At T = 1 the bias's Gram b bᵀ is also a factor of the weight's ghost Gram.
        rows = b[:, 0, 0]  # (B, p)
        shared = SharedGram(rows)
        terms: dict[str, Term] = {"weight": OuterProductTerm(a, b, module.weight.shape, shared)}
        if module.bias is not None:
            terms["bias"] = SampleTerm(rows, shared)
        return terms
    terms = {"weight": OuterProductTerm(a, b, module.weight.shape)}
    if module.bias is not None:
        terms["bias"] = SampleTerm(b.sum(dim=(1, 2)))  # (B, p)
    return terms
