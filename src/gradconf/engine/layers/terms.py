"""Per-example gradient terms of one parameter and their Gram kernels.

A layer kernel describes the per-example gradient of each of its parameters as a *term*,
without forming it. Every term offers two routes to the [B, B] Gram:

- "ghost": inner products from activations and backprops, never forming g_i;
- "materialize": form the per-example gradients [B, *param.shape], then take their Gram.

Notation (see also ``gradconf.engine.result``): B examples, K groups (conv groups, else 1),
T positions per example, d input width per group, p output width per group, V embedding
rows, D embedding width. a_ikt ∈ R^d are activations and b_ikt ∈ R^p backprops.

Each kernel computes in the dtype of its inputs and returns float64, because the Gram
terms of all parameters are summed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from gradconf.engine.layers.routes import RouteCost, index_cost, outer_product_cost

__all__ = [
    "GHOST_BLOCK_NUMEL",
    "IndexTerm",
    "OuterProductTerm",
    "SampleTerm",
    "SharedGram",
    "Term",
    "combine_terms",
    "flat_gram",
    "flat_sq_norms",
    "ghost_gram_index",
    "ghost_gram_outer",
    "ghost_sq_norms_index",
    "ghost_sq_norms_outer",
]

# Maximum elements of one [K, rows·T, B·T] block of position inner products in the ghost
# kernels: 2**24 float32 elements are 64 MiB, and two blocks are alive at once.
GHOST_BLOCK_NUMEL = 2**24

_F64 = torch.float64


def _row_blocks(batch_size: int, elements_per_row: int) -> list[tuple[int, int]]:
    rows = max(1, GHOST_BLOCK_NUMEL // max(1, elements_per_row))
    return [(start, min(batch_size, start + rows)) for start in range(0, batch_size, rows)]


def ghost_gram_outer(activations: torch.Tensor, backprops: torch.Tensor) -> torch.Tensor:
    """Gram of g_i = Σ_t b_ikt ⊗ a_ikt: [B, K, T, d], [B, K, T, p] -> [B, B] float64.

    Identity: ⟨g_i, g_j⟩ = Σ_k Σ_{t,s} (a_ikt·a_jks)(b_ikt·b_jks). Costs about
    K·B²·T²·(d + p); rows are processed in blocks of at most ``GHOST_BLOCK_NUMEL``
    position pairs and only the upper triangle is computed.
    """
    batch, groups, positions, _ = activations.shape
    if positions == 1:
        a = activations[:, :, 0].transpose(0, 1)  # (K, B, d)
        b = backprops[:, :, 0].transpose(0, 1)  # (K, B, p)
        products = torch.bmm(a, a.mT) * torch.bmm(b, b.mT)  # (K, B, B)
        return products.sum(dim=0, dtype=_F64)
    a = activations.transpose(0, 1).reshape(groups, batch * positions, -1)  # (K, B·T, d)
    b = backprops.transpose(0, 1).reshape(groups, batch * positions, -1)  # (K, B·T, p)
    gram = torch.empty(batch, batch, dtype=_F64, device=activations.device)
    for start, stop in _row_blocks(batch, groups * positions * batch * positions):
        rows = slice(start * positions, stop * positions)
        cols = slice(start * positions, None)
        products = torch.bmm(a[:, rows], a[:, cols].mT) * torch.bmm(b[:, rows], b[:, cols].mT)
        # (K, rows·T, cols·T) -> (K, rows, T, cols, T), summed over k, t, s
        block = products.view(groups, stop - start, positions, batch - start, positions)
        block = block.sum(dim=(0, 2, 4), dtype=_F64)
        gram[start:stop, start:] = block
        gram[start:, start:stop] = block.T
    return gram


def ghost_sq_norms_outer(activations: torch.Tensor, backprops: torch.Tensor) -> torch.Tensor:
    """Squared norms of g_i = Σ_t b_ikt ⊗ a_ikt: [B, K, T, d], [B, K, T, p] -> [B] float64.

    Identity: ‖g_i‖² = Σ_k Σ_{t,s} (a_ikt·a_iks)(b_ikt·b_iks), about B·K·T²·(d + p).
    """
    batch, groups, positions, _ = activations.shape
    if positions == 1:
        a_sq = activations.pow(2).sum(dim=-1)  # (B, K, 1)
        b_sq = backprops.pow(2).sum(dim=-1)
        return (a_sq * b_sq).sum(dim=(1, 2), dtype=_F64)
    norms = torch.empty(batch, dtype=_F64, device=activations.device)
    for start, stop in _row_blocks(batch, groups * positions * positions):
        a = activations[start:stop].flatten(0, 1)  # (rows·K, T, d)
        b = backprops[start:stop].flatten(0, 1)  # (rows·K, T, p)
        products = torch.bmm(a, a.mT) * torch.bmm(b, b.mT)  # (rows·K, T, T)
        norms[start:stop] = products.view(stop - start, -1).sum(dim=1, dtype=_F64)
    return norms


def ghost_gram_index(indices: torch.Tensor, backprops: torch.Tensor) -> torch.Tensor:
    """Gram of embedding gradients g_i = Σ_t e_{idx_it} ⊗ b_it: [B, T], [B, T, D] -> [B, B].

    Identity: ⟨g_i, g_j⟩ = Σ_{t,s} [idx_it = idx_js] (b_it·b_js), about B²·T²·(D + 1).
    """
    batch, positions = indices.shape
    flat_indices = indices.reshape(batch * positions)
    b = backprops.reshape(batch * positions, -1)  # (B·T, D)
    gram = torch.empty(batch, batch, dtype=_F64, device=backprops.device)
    for start, stop in _row_blocks(batch, positions * batch * positions):
        rows = slice(start * positions, stop * positions)
        cols = slice(start * positions, None)
        same_row = flat_indices[rows, None] == flat_indices[None, cols]  # (rows·T, cols·T)
        products = (b[rows] @ b[cols].T) * same_row
        block = products.view(stop - start, positions, batch - start, positions)
        block = block.sum(dim=(1, 3), dtype=_F64)
        gram[start:stop, start:] = block
        gram[start:, start:stop] = block.T
    return gram


def ghost_sq_norms_index(indices: torch.Tensor, backprops: torch.Tensor) -> torch.Tensor:
    """Squared norms of embedding gradients: [B, T], [B, T, D] -> [B] float64.

    Identity: ‖g_i‖² = Σ_{t,s} [idx_it = idx_is] (b_it·b_is), about B·T²·(D + 1).
    """
    batch, positions = indices.shape
    norms = torch.empty(batch, dtype=_F64, device=backprops.device)
    for start, stop in _row_blocks(batch, positions * positions):
        idx = indices[start:stop]
        same_row = idx[:, :, None] == idx[:, None, :]  # (rows, T, T)
        b = backprops[start:stop]
        products = torch.bmm(b, b.mT) * same_row
        norms[start:stop] = products.view(stop - start, -1).sum(dim=1, dtype=_F64)
    return norms


def flat_gram(grad_sample: torch.Tensor) -> torch.Tensor:
    """Gram of formed per-example gradients: [B, *param.shape] -> [B, B] float64."""
    flat = grad_sample.reshape(grad_sample.shape[0], -1)  # (B, P_k)
    return (flat @ flat.T).to(_F64)


def flat_sq_norms(grad_sample: torch.Tensor) -> torch.Tensor:
    """Squared norms of formed per-example gradients: [B, *param.shape] -> [B] float64."""
    return grad_sample.reshape(grad_sample.shape[0], -1).pow(2).sum(dim=1, dtype=_F64)


class SharedGram:
    """The Gram X Xᵀ [B, B] of one [B, n] matrix, computed on first use, then reused.

    A linear layer at T = 1 needs b bᵀ of its backprops twice: in the weight's ghost Gram
    (a aᵀ) ⊙ (b bᵀ) and as the bias's Gram.
    """

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows
        self._value: torch.Tensor | None = None

    def value(self) -> torch.Tensor:
        if self._value is None:
            self._value = self.rows @ self.rows.T
        return self._value


@dataclass
class SampleTerm:
    """Per-example gradients formed directly: grad_sample [B, *param.shape].

    Used where they are no larger than the layer's output (biases, normalization
    affine parameters) and for the torch.func fallback. Its only route is "materialize".
    """

    grad_sample: torch.Tensor
    # grad_sample's own Gram, when another term of the same call shares it
    shared_gram: SharedGram | None = None

    @property
    def batch_size(self) -> int:
        return int(self.grad_sample.shape[0])

    def cost(self, diagonal: bool) -> RouteCost | None:
        return None

    def gram(self, route: str) -> torch.Tensor:
        if self.shared_gram is not None:
            return self.shared_gram.value().to(_F64)
        return flat_gram(self.grad_sample)

    def sq_norms(self, route: str) -> torch.Tensor:
        return flat_sq_norms(self.grad_sample)

    def materialize(self) -> torch.Tensor:
        return self.grad_sample

    def probe(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ⟨Σ_i g_i, left ⊗ right⟩ and Σ_i |⟨g_i, left ⊗ right⟩| (float64 scalars)."""
        flat = self.grad_sample.reshape(self.batch_size, left.numel(), right.numel())
        per_example = (flat @ right.to(flat.dtype)) @ left.to(flat.dtype)  # (B,)
        return per_example.sum(dtype=_F64), per_example.abs().sum(dtype=_F64)


@dataclass
class OuterProductTerm:
    """Per-example gradients g_i = Σ_t b_ikt ⊗ a_ikt of a weight viewed as [K·p, d].

    activations [B, K, T, d], backprops [B, K, T, p]. Linear weights have K = 1; conv
    weights [C_out, C_in/K, *kernel] have p = C_out/K and d = C_in/K · prod(kernel).
    """

    activations: torch.Tensor
    backprops: torch.Tensor
    param_shape: torch.Size
    # b bᵀ of the backprops at K = T = 1, when the bias's term shares it
    backprop_gram: SharedGram | None = None

    @property
    def batch_size(self) -> int:
        return int(self.activations.shape[0])

    @property
    def dims(self) -> tuple[int, int, int, int, int]:
        """(B, K, T, d, p)."""
        batch, groups, positions, width_in = self.activations.shape
        return batch, groups, positions, width_in, int(self.backprops.shape[-1])

    def cost(self, diagonal: bool) -> RouteCost:
        return outer_product_cost(*self.dims, diagonal=diagonal)

    def gram(self, route: str) -> torch.Tensor:
        if route == "ghost" and self.backprop_gram is not None:
            a = self.activations[:, 0, 0]  # (B, d) at K = T = 1
            return ((a @ a.T) * self.backprop_gram.value()).to(_F64)
        if route == "ghost":
            return ghost_gram_outer(self.activations, self.backprops)
        return flat_gram(self.materialize())

    def sq_norms(self, route: str) -> torch.Tensor:
        if route == "ghost":
            return ghost_sq_norms_outer(self.activations, self.backprops)
        return flat_sq_norms(self.materialize())

    def materialize(self) -> torch.Tensor:
        """Form grad_sample [B, *param_shape] as Σ_t b_ikt ⊗ a_ikt."""
        grad_sample = torch.matmul(self.backprops.mT, self.activations)  # (B, K, p, d)
        return grad_sample.reshape(self.batch_size, *self.param_shape)

    def probe(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ⟨Σ_i g_i, left ⊗ right⟩ and Σ_{i,k,t} |(b_ikt·left_k)(a_ikt·right)|."""
        _, groups, _, _, width_out = self.dims
        left = left.to(self.backprops.dtype).view(groups, width_out, 1)
        b_left = torch.matmul(self.backprops, left)  # (B, K, T, 1)
        a_right = torch.matmul(self.activations, right.to(self.activations.dtype))  # (B, K, T)
        products = b_left[..., 0] * a_right
        return products.sum(dtype=_F64), products.abs().sum(dtype=_F64)


@dataclass
class IndexTerm:
    """Per-example embedding gradients g_i = Σ_t e_{idx_it} ⊗ b_it, weight [V, D].

    indices [B, T] (int64), backprops [B, T, D]; positions whose gradient is dropped
    (``padding_idx``) already have zero backprops.
    """

    indices: torch.Tensor
    backprops: torch.Tensor
    num_embeddings: int

    @property
    def batch_size(self) -> int:
        return int(self.indices.shape[0])

    def cost(self, diagonal: bool) -> RouteCost:
        batch, positions = self.indices.shape
        return index_cost(
            batch, positions, self.num_embeddings, int(self.backprops.shape[-1]),
            diagonal=diagonal,
        )

    def gram(self, route: str) -> torch.Tensor:
        if route == "ghost":
            return ghost_gram_index(self.indices, self.backprops)
        return flat_gram(self.materialize())

    def sq_norms(self, route: str) -> torch.Tensor:
        if route == "ghost":
            return ghost_sq_norms_index(self.indices, self.backprops)
        return flat_sq_norms(self.materialize())

    def materialize(self) -> torch.Tensor:
        """Scatter the backprops into grad_sample [B, V, D]."""
        batch, positions = self.indices.shape
        width = int(self.backprops.shape[-1])
        grad_sample = self.backprops.new_zeros(batch * self.num_embeddings, width)
        offsets = torch.arange(batch, device=self.indices.device)[:, None] * self.num_embeddings
        rows = (self.indices + offsets).reshape(-1)  # (B·T,) rows of the (B·V, D) view
        grad_sample.index_add_(0, rows, self.backprops.reshape(batch * positions, width))
        return grad_sample.view(batch, self.num_embeddings, width)

    def probe(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ⟨Σ_i g_i, left ⊗ right⟩ and Σ_{i,t} |left[idx_it] (b_it·right)|."""
        left, right = left.to(self.backprops.dtype), right.to(self.backprops.dtype)
        products = left[self.indices] * torch.matmul(self.backprops, right)  # (B, T)
        return products.sum(dtype=_F64), products.abs().sum(dtype=_F64)


class Term(Protocol):
    """Interface of a parameter's per-example gradient description, as the capture uses it."""

    @property
    def batch_size(self) -> int: ...

    def cost(self, diagonal: bool) -> RouteCost | None:
        """Both routes' cost, or None when only "materialize" exists."""

    def gram(self, route: str) -> torch.Tensor:
        """[B, B] float64 Gram by ``route``."""

    def sq_norms(self, route: str) -> torch.Tensor:
        """[B] float64 squared norms by ``route``."""

    def materialize(self) -> torch.Tensor:
        """grad_sample [B, *param.shape]."""

    def probe(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """⟨Σ_i g_i, left ⊗ right⟩ and a scale for its rounding error (float64 scalars)."""


def combine_terms(terms: list[Term]) -> Term:
    """Combine the terms of one parameter used several times in a forward into one term.

    The per-example gradient is the sum over uses, so the Gram needs the cross terms
    between uses, not only each use's own Gram. Outer products with equal (K, d, p), and
    embeddings with equal (V, D), are concatenated along T, which adds exactly those cross
    terms. Uses of different kinds (a weight tied between an embedding and a linear layer)
    are materialized and summed.
    """
    if len(terms) == 1:
        return terms[0]
    outer = []
    for term in terms:
        convert = getattr(term, "as_outer_product", None)  # convolutions unfold
        outer.append(convert() if convert is not None else term)
    if all(isinstance(term, OuterProductTerm) for term in outer):
        if len({term.dims[:2] + term.dims[3:] for term in outer}) == 1:
            return OuterProductTerm(
                torch.cat([term.activations for term in outer], dim=2),
                torch.cat([term.backprops for term in outer], dim=2),
                outer[0].param_shape,
            )
    if all(isinstance(term, IndexTerm) for term in terms):
        if len({(term.num_embeddings, term.backprops.shape[-1]) for term in terms}) == 1:
            return IndexTerm(
                torch.cat([term.indices for term in terms], dim=1),
                torch.cat([term.backprops for term in terms], dim=1),
                terms[0].num_embeddings,
            )
    total = terms[0].materialize().clone()
    for term in terms[1:]:
        total += term.materialize()
    return SampleTerm(total)
