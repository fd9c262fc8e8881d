"""The cost model that picks a route ("ghost" or "materialize") per parameter.

Both routes give the same Gram; they differ in cost. For g_i = Σ_t b_ikt ⊗ a_ikt the
ghost route takes inner products of activations and of backprops over all position pairs,
about K·B²·T²·(d + p) multiply-adds; the materialize route forms grad_sample [B, K·p, d]
(K·B·T·d·p) and takes its Gram (K·B²·d·p). Ghost wins roughly when
T < sqrt(d·p / (d + p)), for example always for an MLP layer (T = 1). The choice is
memory-aware: a materialized tensor above ``MATERIALIZE_MAX_NUMEL`` elements is avoided,
because the ghost route's memory is bounded by ``GHOST_BLOCK_NUMEL`` whatever the shapes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = [
    "MATERIALIZE_MAX_NUMEL",
    "ROUTES",
    "RouteCost",
    "choose_route",
    "index_cost",
    "outer_product_cost",
]

ROUTES = ("ghost", "materialize")

# Largest grad_sample [B, *param.shape] the cost model materializes by choice: 2**27
# elements are 512 MiB in float32. A forced route="materialize" ignores this limit.
MATERIALIZE_MAX_NUMEL = 2**27


@dataclass(frozen=True)
class RouteCost:
    """Estimated multiply-adds of both routes and the elements of the materialized tensor."""

    ghost_flops: int
    materialize_flops: int
    materialize_numel: int


@functools.lru_cache(maxsize=4096)
def outer_product_cost(
    batch: int, groups: int, positions: int, width_in: int, width_out: int, *, diagonal: bool
) -> RouteCost:
    """Estimate both routes for g_i = Σ_t b_ikt ⊗ a_ikt with shapes (B, K, T, d, p).

    Gram: ghost K·B²·T²·(d + p + 1), materialize K·(B·T·d·p + B²·d·p). Squared norms
    only: ghost K·B·T²·(d + p + 1), materialize K·(B·T·d·p + B·d·p).
    """
    pairs = batch if diagonal else batch * batch
    ghost = groups * pairs * positions**2 * (width_in + width_out + 1)
    materialize = groups * width_in * width_out * (batch * positions + pairs)
    return RouteCost(ghost, materialize, batch * groups * width_in * width_out)


@functools.lru_cache(maxsize=4096)
def index_cost(
    batch: int, positions: int, num_embeddings: int, width: int, *, diagonal: bool
) -> RouteCost:
    """Estimate both routes for embedding gradients with shapes (B, T, V, D).

    Gram: ghost B²·T²·(D + 1), materialize B·T·D + B²·V·D. Squared norms only: ghost
    B·T²·(D + 1), materialize B·T·D + B·V·D.
    """
    pairs = batch if diagonal else batch * batch
    ghost = pairs * positions**2 * (width + 1)
    materialize = batch * positions * width + pairs * num_embeddings * width
    return RouteCost(ghost, materialize, batch * num_embeddings * width)


def choose_route(
    cost: RouteCost | None,
    *,
    override: str = "auto",
    max_materialize_numel: int = MATERIALIZE_MAX_NUMEL,
) -> str:
    """Return "ghost" or "materialize" for a parameter whose routes cost ``cost``.

    ``cost=None`` means the term has only the materialize route (biases, normalization
    parameters, the torch.func fallback). ``override`` "ghost" or "materialize" forces a
    route, for tests and benchmarks. "auto" takes the route with fewer multiply-adds. It
    prefers ghost on a tie, and when the materialized tensor would exceed
    ``max_materialize_numel`` elements.
    """
    if cost is None:
        return "materialize"
    if override != "auto":
        return override
    if cost.ghost_flops <= cost.materialize_flops:
        return "ghost"
    if cost.materialize_numel > max_materialize_numel:
        return "ghost"
    return "materialize"
