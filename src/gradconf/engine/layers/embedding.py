"""Kernel for ``nn.Embedding``: the activations are indices, y_it = W[idx_it].

indices [B, *] and backprops [B, *, D]; T is the product of the * dimensions. The
weight's per-example gradient adds b_it to row idx_it: g_i = Σ_t e_{idx_it} ⊗ b_it.
"""

from __future__ import annotations

import torch
from torch import nn

from gradconf.engine.layers.terms import IndexTerm, Term

__all__ = ["check_embedding", "embedding_terms"]


def check_embedding(module: nn.Embedding) -> None:
    """Raise ValueError for ``scale_grad_by_freq=True``, which couples the examples."""
    if module.scale_grad_by_freq:
        raise ValueError(
            "nn.Embedding with scale_grad_by_freq=True divides each row's gradient by its "
            "count in the whole batch, so one example's gradient depends on the others and "
            "per-example gradients are not defined. Set scale_grad_by_freq=False or use "
            "engine='loop'."
        )


def embedding_terms(
    module: nn.Embedding, activations: torch.Tensor, backprops: torch.Tensor
) -> dict[str, Term]:
    """Describe nn.Embedding's per-example gradient: indices [B, *], [B, *, D] -> terms.

    weight [V, D]: ⟨g_i, g_j⟩ = Σ_{t,s} [idx_it = idx_js] (b_it·b_js). Positions at
    ``padding_idx`` get no gradient, as in autograd, so their backprops are zeroed.
    """
    batch = activations.shape[0]
    indices = activations.reshape(batch, -1)  # (B, T)
    b = backprops.reshape(batch, indices.shape[1], -1)  # (B, T, D)
    if module.padding_idx is not None:
        b = b.masked_fill((indices == module.padding_idx)[..., None], 0.0)
    return {"weight": IndexTerm(indices, b, module.num_embeddings)}
