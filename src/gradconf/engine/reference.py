"""The simple engine: one autograd call per example, and the float64 reference check.

``loop_gram`` computes g_i by ``torch.autograd.grad`` on example i alone and takes
G_ij = ⟨g_i, g_j⟩ per parameter ([B, P_k] -> [B, B]). It is slow (B forward and backward
passes) but needs no knowledge of the layers, so it serves as the oracle for every fast
engine. ``check_engine`` runs it in float64 on a copy of the user's model.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradconf.engine.result import GramResult, check_loss_reduction
from gradconf.engine.state import (
    batchnorm_in_train_mode,
    preserved_model_state,
    reject_empty_batch,
    grams_from_gradients,
    require_trainable,
    set_batchnorm_eval,
)

__all__ = ["EngineCheck", "check_engine", "loop_gram", "reference_gram"]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_batchnorm(model: nn.Module, batchnorm: str) -> None:
    if batchnorm == "eval":
        set_batchnorm_eval(model)
        return
    if batchnorm != "none":
        raise ValueError(
            f"batchnorm={batchnorm!r} is not supported for per-example gradients; allowed: "
            "'eval' (running statistics). Per-example gradients under batch statistics "
            "couple the examples; use the mini-batch protocol for train-mode BatchNorm."
        )
    in_train = batchnorm_in_train_mode(model)
    if in_train:
        raise ValueError(
            f"BatchNorm modules {in_train} are in train mode, where per-example gradients are "
            "not defined. Pass batchnorm='eval' to use running statistics."
        )


def loop_gram(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_reduction: str = "mean",
    batchnorm: str = "eval",
) -> GramResult:
    """Compute the per-example Gram by one autograd call per example: [B, ...] -> [B, B].

    ``loss_fn(outputs, targets)`` must reduce as ``loss_reduction`` states. Under "mean"
    example i's gradient is ∇f_i / B, so every entry is 1/B² times ⟨∇f_i, ∇f_j⟩.
    ``batchnorm="eval"`` evaluates BatchNorm with running statistics. The model is left as
    found.
    """
    check_loss_reduction(loss_reduction)
    batch_size = reject_empty_batch(inputs)
    scale = 1.0 / batch_size if loss_reduction == "mean" else 1.0
    trainable, frozen = require_trainable(model)
    params = [param for _, param in trainable]
    rows: list[list[torch.Tensor | None]] = []
    with preserved_model_state(model):
        _check_batchnorm(model, batchnorm)
        for index in range(batch_size):
            outputs = model(inputs[index : index + 1])
            loss = loss_fn(outputs, targets[index : index + 1])
            if not torch.isfinite(loss).all():
                raise FloatingPointError(
                    f"loss of example {index} is {loss.item()}; a Gram of non-finite "
                    "gradients is meaningless. Check the inputs and the model's weights."
                )
            grads = torch.autograd.grad(loss * scale, params, allow_unused=True)
            rows.append(list(grads))

    gram, layer_grams, coverage = grams_from_gradients(trainable, frozen, rows)
    return GramResult(
        gram=gram,
        layer_grams=layer_grams,
        coverage=coverage,
        granularity="example",
        loss_reduction=loss_reduction,
        batchnorm=batchnorm,
        engine="loop",
        routes={name: "loop" for name in layer_grams},
        batch_size=batch_size,
    )


def reference_gram(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_reduction: str = "mean",
    batchnorm: str = "eval",
) -> GramResult:
    """Compute the per-example Gram in float64 on a copy of the model (the oracle).

    Floating-point inputs and targets are cast to float64; integer targets (class labels)
    are kept. The user's model is not touched.
    """
    model64 = copy.deepcopy(model).to(torch.float64)
    inputs64 = inputs.to(torch.float64) if inputs.is_floating_point() else inputs
    targets64 = targets.to(torch.float64) if targets.is_floating_point() else targets
    return loop_gram(
        model64,
        loss_fn,
        inputs64,
        targets64,
        loss_reduction=loss_reduction,
        batchnorm=batchnorm,
    )


@dataclass(frozen=True)
class EngineCheck:
    """Agreement of an engine with the float64 per-example loop.

    ``relative_errors`` maps each parameter to max|G − G_ref| / max|G_ref|; ``mismatches``
    lists those above ``rtol``; ``passed`` is True when there are none and both cover the
    same parameters.
    """

    engine: str
    rtol: float
    max_relative_error: float
    relative_errors: dict[str, float]
    mismatches: tuple[str, ...]
    coverage_differs: bool

    @property
    def passed(self) -> bool:
        """True when every parameter agrees within ``rtol`` and coverage matches."""
        return not self.mismatches and not self.coverage_differs


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = float(expected.abs().max())
    difference = float((actual.to(torch.float64) - expected).abs().max())
    if scale == 0.0:
        return difference
    return difference / scale


def check_engine(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_reduction: str = "mean",
    engine: str = "auto",
    batchnorm: str = "eval",
    rtol: float = 1e-5,
) -> EngineCheck:
    """Compare an engine's per-example Gram with the float64 loop on the user's model.

    Run this once on a new model before trusting a fast engine with it. Every mismatching
    parameter is reported at once, as is a difference in which parameters are covered.
    """
    from gradconf.engine import per_example_gram

    actual = per_example_gram(
        model, loss_fn, inputs, targets,
        loss_reduction=loss_reduction, engine=engine, batchnorm=batchnorm,
    )
    expected = reference_gram(
        model, loss_fn, inputs, targets, loss_reduction=loss_reduction, batchnorm=batchnorm
    )
    errors = {
        name: _relative_error(actual.layer_grams[name], expected.layer_grams[name])
        for name in expected.layer_grams
        if name in actual.layer_grams
    }
    errors["<total>"] = _relative_error(actual.gram, expected.gram)
    mismatches = tuple(name for name, error in errors.items() if error > rtol)
    coverage_differs = set(actual.layer_grams) != set(expected.layer_grams)
    if mismatches or coverage_differs:
        logger.warning(
            "engine %s disagrees with the float64 loop: mismatches=%s, coverage differs=%s",
            actual.engine, mismatches, coverage_differs,
        )
    return EngineCheck(
        engine=actual.engine,
        rtol=rtol,
        max_relative_error=max(errors.values()),
        relative_errors=errors,
        mismatches=mismatches,
        coverage_differs=coverage_differs,
    )
