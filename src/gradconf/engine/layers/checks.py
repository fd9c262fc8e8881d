"""Checks that the per-example terms of a parameter account for its whole gradient.

A parameter's per-example gradients must sum to the batch gradient g = Σ_i g_i. A use of
the parameter that no hooked module call saw (``F.linear(x, layer.weight)`` outside the
layer's forward, say) breaks that, and these checks turn it into an error instead of a
Gram of part of the gradient:

- numerically, when autograd delivers g: the Gram must sum to ‖g‖², and squared norms
  carry a projection ⟨Σ_i g_i, u ⊗ v⟩ on fixed random u, v that must equal uᵀ g v;
- structurally, when parameter gradients are skipped: every edge of the autograd graph
  into a trainable parameter must lie inside a hooked module call.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

__all__ = [
    "BATCH_GRADIENT_RTOL",
    "gram_matches",
    "in_backward",
    "parameter_edges",
    "probe_matches",
    "probe_vectors",
    "used_outside_error",
]

# Tolerance of the numeric checks per parameter dtype, relative to the magnitude of the
# terms summed. The float32 value is about 8000 machine epsilons, far above rounding.
# A missed use of the parameter typically changes the sum by a share of order one.
BATCH_GRADIENT_RTOL = {
    torch.float64: 1e-8,
    torch.float32: 1e-3,
    torch.float16: 5e-2,
    torch.bfloat16: 1e-1,
}
_PROBE_SEED = 0x5EED


def gram_matches(gram: torch.Tensor, batch_sq_norm: float, dtype: torch.dtype) -> bool:
    """Check Σ_ij G_ij = ‖g‖² for one parameter's Gram [B, B] and batch gradient g.

    The tolerance is relative to (Σ_i ‖g_i‖)² + ‖g‖², which bounds the magnitude of the
    terms summed.
    """
    norms_sum = float(torch.diagonal(gram).clamp(min=0.0).sqrt().sum())
    scale = norms_sum**2 + batch_sq_norm
    return abs(float(gram.sum()) - batch_sq_norm) <= BATCH_GRADIENT_RTOL.get(dtype, 1e-1) * scale


def probe_matches(
    ours: float, ours_scale: float, reference: float, reference_scale: float, dtype: torch.dtype
) -> bool:
    """Check ⟨Σ_i g_i, u ⊗ v⟩ (ours) against uᵀ g v (autograd's), each with its scale.

    Our scale is the sum of absolute terms; autograd's is ‖u‖·‖g‖·‖v‖ ≥ |u|ᵀ|g||v|.
    """
    return abs(ours - reference) <= BATCH_GRADIENT_RTOL.get(dtype, 1e-1) * (
        ours_scale + reference_scale
    )


@functools.lru_cache(maxsize=1024)
def probe_vectors(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return fixed random u [shape[0]], v [prod(shape[1:])] and ‖u‖·‖v‖ for a parameter."""
    # A private generator, so the global random state of the training run is untouched.
    generator = torch.Generator().manual_seed(_PROBE_SEED)
    rows = shape[0] if shape else 1
    columns = max(1, math.prod(shape) // max(rows, 1))
    left = torch.randn(rows, generator=generator, dtype=torch.float64)
    right = torch.randn(columns, generator=generator, dtype=torch.float64)
    norms = torch.linalg.vector_norm(left) * torch.linalg.vector_norm(right)
    return left.to(device, dtype), right.to(device, dtype), norms.to(device, dtype)


def parameter_edges(
    roots: list[Any], stop: set[int], names: dict[int, str], seen: set[int] | None = None
) -> set[tuple[int, int]]:
    """Return the (node id, parameter id) edges into trainable parameters below ``roots``.

    Walks the autograd graph from ``roots`` through ``next_functions`` without entering
    the nodes in ``stop``, and adds the ids of the nodes visited to ``seen``. ``names``
    maps the ids of the trainable parameters to their names.
    """
    edges: set[tuple[int, int]] = set()
    seen = set() if seen is None else seen
    stack = [root for root in roots if root is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for next_node, _ in node.next_functions:
            if next_node is None:
                continue
            variable = getattr(next_node, "variable", None)  # set on AccumulateGrad nodes
            if variable is not None:
                if id(variable) in names:
                    edges.add((id(node), id(variable)))
            elif id(next_node) not in stop:
                stack.append(next_node)
    return edges


def used_outside_error(names: list[str]) -> RuntimeError:
    """Build the error for parameters with gradient contributions no hook saw."""
    return RuntimeError(
        f"parameters {names} receive gradients through operations outside their modules' "
        "forward (e.g. F.linear(x, layer.weight)), which GramCapture cannot see. Use "
        "engine='loop' for this model."
    )


def in_backward() -> bool:
    """Return True while the autograd engine runs a backward pass on this thread."""
    # NOTE: torch._C._current_graph_task_id is private (-1 outside a backward pass in
    # torch 2.x); without it, forwards inside a backward pass are captured like others.
    current = getattr(torch._C, "_current_graph_task_id", None)
    return current is not None and current() != -1
