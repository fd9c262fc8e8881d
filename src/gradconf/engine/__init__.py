"""Gram engines: inner products of per-example or per-mini-batch gradients.

``per_example_gram`` is the entry point; callers do not change when the engine does. The
engines are listed in one table, ``ENGINES``; "auto" picks the fastest available one.
See ``gradconf.engine.result`` for the notation and the scaling under a mean loss.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gradconf.engine.capture import CapturedBatch, GramCapture
from gradconf.engine.cheap import CheapStats, cheap_stats, cheap_stats_from_gram
from gradconf.engine.ghost import ghost_gram
from gradconf.engine.minibatch import minibatch_gram
from gradconf.engine.reference import EngineCheck, check_engine, loop_gram, reference_gram
from gradconf.engine.result import Coverage, GramResult

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "CapturedBatch",
    "CheapStats",
    "Coverage",
    "EngineCheck",
    "GramCapture",
    "GramResult",
    "cheap_stats",
    "cheap_stats_from_gram",
    "check_engine",
    "ghost_gram",
    "loop_gram",
    "minibatch_gram",
    "per_example_gram",
    "reference_gram",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Engine name -> function with the signature of ``loop_gram``.
ENGINES: dict[str, Callable[..., GramResult]] = {
    "ghost": ghost_gram,
    "loop": loop_gram,
}
# One forward and backward per batch; "loop" stays available as the slow oracle.
DEFAULT_ENGINE = "ghost"


def per_example_gram(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_reduction: str = "mean",
    engine: str = "auto",
    batchnorm: str = "eval",
) -> GramResult:
    """Compute the Gram of per-example gradients: inputs [B, ...] -> gram [B, B].

    ``loss_fn(outputs, targets)`` reduces over the batch as ``loss_reduction`` states ("mean"
    scales every inner product by 1/B², cosines are unchanged). ``engine`` is a key of
    ``ENGINES`` or "auto". The model is left as found: modes, ``.grad``, buffers and hooks.
    """
    name = DEFAULT_ENGINE if engine == "auto" else engine
    if name not in ENGINES:
        raise ValueError(
            f"engine={engine!r} is not available; allowed: 'auto', {', '.join(map(repr, ENGINES))}."
        )
    return ENGINES[name](
        model, loss_fn, inputs, targets, loss_reduction=loss_reduction, batchnorm=batchnorm
    )
