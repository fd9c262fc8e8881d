"""Gram kernels per layer family, listed in one table keyed by module class.

``LAYER_KERNELS`` maps a module class to a ``LayerKernel``. Its ``terms`` function has the
fixed signature ``terms(module, activations, backprops) -> {param_name: Term}``:
activations are the module's first input, backprops the gradient of the loss with
respect to its output, and each term describes one parameter's per-example gradients
(see ``gradconf.engine.layers.terms``). Modules not in the table, or subclasses that
override ``forward``, use the torch.func fallback (``gradconf.engine.layers.fallback``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from gradconf.engine.layers.conv import conv_terms
from gradconf.engine.layers.embedding import check_embedding, embedding_terms
from gradconf.engine.layers.linear import linear_terms
from gradconf.engine.layers.normalization import (
    batch_norm_terms,
    check_batch_norm,
    group_norm_terms,
    layer_norm_terms,
    rms_norm_terms,
)
from gradconf.engine.layers.routes import (
    MATERIALIZE_MAX_NUMEL,
    ROUTES,
    RouteCost,
    choose_route,
)
from gradconf.engine.layers.terms import Term

__all__ = [
    "LAYER_KERNELS",
    "MATERIALIZE_MAX_NUMEL",
    "ROUTES",
    "LayerKernel",
    "RouteCost",
    "Term",
    "choose_route",
    "kernel_for",
    "register_kernel",
]


@dataclass(frozen=True)
class LayerKernel:
    """How one layer family's per-example gradients are described.

    ``terms(module, activations, backprops)`` runs once the backward pass has reached the
    module. ``check(module)``, if given, runs at each forward and raises ValueError when
    the module's configuration has no per-example gradients.
    """

    terms: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, Term]]
    check: Callable[[nn.Module], None] | None = None


def _build_table(
    entries: Iterable[tuple[type[nn.Module], LayerKernel]],
) -> dict[type[nn.Module], LayerKernel]:
    table: dict[type[nn.Module], LayerKernel] = {}
    for module_class, kernel in entries:
        if module_class in table:
            raise ValueError(f"{module_class.__name__} is listed twice in the layer kernel table.")
        table[module_class] = kernel
    return table


_CONV = LayerKernel(conv_terms)
_BATCH_NORM = LayerKernel(batch_norm_terms, check_batch_norm)

LAYER_KERNELS: dict[type[nn.Module], LayerKernel] = _build_table(
    [
        (nn.Linear, LayerKernel(linear_terms)),
        (nn.Conv1d, _CONV),
        (nn.Conv2d, _CONV),
        (nn.Conv3d, _CONV),
        (nn.Embedding, LayerKernel(embedding_terms, check_embedding)),
        (nn.LayerNorm, LayerKernel(layer_norm_terms)),
        (nn.RMSNorm, LayerKernel(rms_norm_terms)),
        (nn.GroupNorm, LayerKernel(group_norm_terms)),
        (nn.BatchNorm1d, _BATCH_NORM),
        (nn.BatchNorm2d, _BATCH_NORM),
        (nn.BatchNorm3d, _BATCH_NORM),
        (nn.SyncBatchNorm, _BATCH_NORM),
    ]
)


def register_kernel(
    module_class: type[nn.Module], kernel: LayerKernel, *, replace: bool = False
) -> None:
    """Add a kernel for ``module_class`` to ``LAYER_KERNELS``.

    Raises ValueError if the class already has one, unless ``replace=True``.
    """
    if module_class in LAYER_KERNELS and not replace:
        raise ValueError(
            f"{module_class.__name__} already has a Gram kernel "
            f"({LAYER_KERNELS[module_class].terms.__name__}); pass replace=True to replace it."
        )
    LAYER_KERNELS[module_class] = kernel


def kernel_for(module: nn.Module) -> LayerKernel | None:
    """Return the kernel for ``module``, or None when it needs the torch.func fallback.

    A subclass of a listed class uses that class's kernel only if it does not override
    ``forward``, because the kernel assumes the listed class's computation.
    """
    for module_class in type(module).__mro__:
        kernel = LAYER_KERNELS.get(module_class)
        if kernel is not None:
            return kernel if type(module).forward is module_class.forward else None
    return None
