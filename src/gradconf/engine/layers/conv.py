"""Kernel for ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` with any stride, padding,
padding mode, dilation and groups.

Unfolding the padded input gives, per group k, activations a_ikt ∈ R^d at the T output
positions, d = C_in/K · prod(kernel); backprops b_ikt ∈ R^p with p = C_out/K. The
weight's per-example gradient is then the outer-product sum Σ_t b_ikt ⊗ a_ikt, as for a
linear layer. The materialize route does not unfold: it computes all B per-example
weight gradients as one convolution weight gradient with the batch folded into groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gradconf.engine.layers.routes import RouteCost, outer_product_cost
from gradconf.engine.layers.terms import (
    OuterProductTerm,
    SampleTerm,
    Term,
    flat_gram,
    flat_sq_norms,
)

__all__ = ["ConvWeightTerm", "conv_terms"]

_WEIGHT_GRAD = {
    1: torch.nn.grad.conv1d_weight,
    2: torch.nn.grad.conv2d_weight,
    3: torch.nn.grad.conv3d_weight,
}


def _explicit_padding(module: nn.modules.conv._ConvNd) -> list[int]:
    """Return the padding in F.pad order (last dimension first, (left, right) pairs)."""
    pads: list[int] = []
    for index in reversed(range(len(module.kernel_size))):
        if module.padding == "valid":
            left = right = 0
        elif module.padding == "same":
            # Same split as torch.nn.Conv*d: the odd remainder goes to the end.
            total = module.dilation[index] * (module.kernel_size[index] - 1)
            left, right = total // 2, total - total // 2
        else:
            left = right = module.padding[index]
        pads.extend((left, right))
    return pads


def _unfold(
    padded: torch.Tensor,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> torch.Tensor:
    """Unfold [B, C, *S] into [B, T, C·prod(kernel)], channels outer as in F.unfold."""
    windows = padded
    for index, (size, step, spacing) in enumerate(zip(kernel, stride, dilation, strict=True)):
        windows = windows.unfold(2 + index, spacing * (size - 1) + 1, step)
        if spacing > 1:
            windows = windows[..., ::spacing]
    dims = len(kernel)
    # (B, C, *S_out, *kernel) -> (B, *S_out, C, *kernel)
    order = [0, *range(2, 2 + dims), 1, *range(2 + dims, 2 + 2 * dims)]
    windows = windows.permute(order)
    batch, channels = padded.shape[:2]
    return windows.reshape(batch, -1, channels * math.prod(kernel))


@dataclass
class ConvWeightTerm:
    """Per-example gradients of a conv weight [C_out, C_in/K, *kernel].

    activations [B, C_in, *S] (the input before padding), backprops [B, C_out, *S_out];
    ``pads`` is the padding in F.pad order and ``padding_mode`` the module's.
    """

    activations: torch.Tensor
    backprops: torch.Tensor
    weight_shape: torch.Size
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    pads: list[int]
    padding_mode: str
    # Set by gram() and sq_norms(), so probe() can reuse what they formed.
    _formed: torch.Tensor | OuterProductTerm | None = None

    @property
    def batch_size(self) -> int:
        return int(self.activations.shape[0])

    @property
    def dims(self) -> tuple[int, int, int, int, int]:
        """(B, K, T, d, p)."""
        positions = math.prod(self.backprops.shape[2:])
        width_in = math.prod(self.weight_shape[1:])
        width_out = self.weight_shape[0] // self.groups
        return self.batch_size, self.groups, positions, width_in, width_out

    def cost(self, diagonal: bool) -> RouteCost:
        return outer_product_cost(*self.dims, diagonal=diagonal)

    def _padded(self) -> torch.Tensor:
        if not any(self.pads):
            return self.activations
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        return F.pad(self.activations, self.pads, mode=mode)

    def as_outer_product(self) -> OuterProductTerm:
        """Unfold into activations [B, K, T, d] and backprops [B, K, T, p]."""
        batch, groups, positions, width_in, width_out = self.dims
        kernel = tuple(self.weight_shape[2:])
        unfolded = _unfold(self._padded(), kernel, self.stride, self.dilation)  # (B, T, K·d)
        a = unfolded.view(batch, positions, groups, width_in).transpose(1, 2)  # (B, K, T, d)
        b = self.backprops.reshape(batch, groups, width_out, positions).mT  # (B, K, T, p)
        return OuterProductTerm(a, b, self.weight_shape)

    def gram(self, route: str) -> torch.Tensor:
        if route == "ghost":
            self._formed = self.as_outer_product()
            return self._formed.gram("ghost")
        self._formed = self.materialize()
        return flat_gram(self._formed)

    def sq_norms(self, route: str) -> torch.Tensor:
        if route == "ghost":
            self._formed = self.as_outer_product()
            return self._formed.sq_norms("ghost")
        self._formed = self.materialize()
        return flat_sq_norms(self._formed)

    def materialize(self) -> torch.Tensor:
        """Form grad_sample [B, *weight_shape] as one weight gradient with B·K groups."""
        batch = self.batch_size
        left_pads, right_pads = self.pads[0::2], self.pads[1::2]
        if self.padding_mode == "zeros" and left_pads == right_pads:
            # The convolution pads by itself, which saves a padded copy of the input.
            inputs, padding = self.activations, tuple(reversed(left_pads))
        else:
            inputs, padding = self._padded(), 0
        folded_input = inputs.reshape(1, -1, *inputs.shape[2:])  # (1, B·C_in, *S)
        folded_backprops = self.backprops.reshape(1, -1, *self.backprops.shape[2:])
        folded_shape = (batch * self.weight_shape[0], *self.weight_shape[1:])
        grad_sample = _WEIGHT_GRAD[len(self.weight_shape) - 2](
            folded_input, folded_shape, folded_backprops,
            stride=self.stride, padding=padding, dilation=self.dilation,
            groups=batch * self.groups,
        )  # (B·C_out, C_in/K, *kernel)
        return grad_sample.view(batch, *self.weight_shape)

    def probe(self, left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ⟨Σ_i g_i, left ⊗ right⟩ and a scale of its rounding error.

        Reuses the unfolded or materialized tensors of the last gram() or sq_norms() call.
        """
        formed = self._formed if self._formed is not None else self.materialize()
        if isinstance(formed, OuterProductTerm):
            return formed.probe(left, right)
        return SampleTerm(formed).probe(left, right)


def conv_terms(
    module: nn.modules.conv._ConvNd, activations: torch.Tensor, backprops: torch.Tensor
) -> dict[str, Term]:
    """Describe a convolution's per-example gradients: [B, C_in, *S], [B, C_out, *S_out] -> terms.

    weight: ⟨g_i, g_j⟩ = Σ_k Σ_{t,s} (a_ikt·a_jks)(b_ikt·b_jks) over unfolded positions.
    bias [C_out]: Σ_t b_it, formed directly ([B, C_out]).
    """
    terms: dict[str, Term] = {
        "weight": ConvWeightTerm(
            activations, backprops, module.weight.shape,
            tuple(module.stride), tuple(module.dilation), module.groups,
            _explicit_padding(module), module.padding_mode,
        )
    }
    if module.bias is not None:
        terms["bias"] = SampleTerm(backprops.flatten(2).sum(dim=2))  # (B, C_out)
    return terms
