"""Mini-batch gradients and their Gram: the measurement protocol of Sankararaman et al. (2020).

Each gradient is the mean-loss gradient of one mini-batch, taken by an ordinary
forward and backward pass; G_kl = ⟨∇F_k, ∇F_l⟩ over M mini-batches ([M, P] -> [M, M]).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from gradconf.engine.result import GramResult
from gradconf.engine.state import (
    BATCHNORM_TYPES,
    preserved_model_state,
    reject_empty_batch,
    grams_from_gradients,
    require_trainable,
    set_batchnorm_eval,
)

__all__ = ["minibatch_gram"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


def _set_batchnorm(model: nn.Module, batchnorm: str) -> None:
    if batchnorm == "eval":
        set_batchnorm_eval(model)
    elif batchnorm == "train":
        for module in model.modules():
            if isinstance(module, BATCHNORM_TYPES):
                module.train()
    else:
        raise ValueError(
            f"batchnorm={batchnorm!r} is not supported; allowed: 'train' (each mini-batch's "
            "own statistics, as in training) or 'eval' (running statistics)."
        )


def minibatch_gram(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Batch],
    *,
    batchnorm: str = "train",
) -> GramResult:
    """Compute the Gram of the mean-loss gradients of M mini-batches: [M, P] -> [M, M].

    ``loss_fn(outputs, targets)`` must average over the batch. With ``batchnorm="train"``
    BatchNorm normalizes by each mini-batch's statistics, as during training; the running
    statistics are restored afterwards. Dropout and other modules keep their mode. The
    model is left as found.
    """
    if len(batches) < 1:
        raise ValueError("received no mini-batches; pass at least one (inputs, targets) pair.")
    trainable, frozen = require_trainable(model)
    params = [param for _, param in trainable]
    rows: list[list[torch.Tensor | None]] = []
    with preserved_model_state(model):
        _set_batchnorm(model, batchnorm)
        for index, (inputs, targets) in enumerate(batches):
            reject_empty_batch(inputs)
            loss = loss_fn(model(inputs), targets)
            if not torch.isfinite(loss).all():
                raise FloatingPointError(
                    f"loss of mini-batch {index} is {loss.item()}; a Gram of non-finite "
                    "gradients is meaningless. The model has probably diverged; lower the "
                    "learning rate."
                )
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            rows.append(list(grads))

    gram, layer_grams, coverage = grams_from_gradients(trainable, frozen, rows)
    return GramResult(
        gram=gram,
        layer_grams=layer_grams,
        coverage=coverage,
        granularity="minibatch",
        loss_reduction="mean",
        batchnorm=batchnorm,
        engine="minibatch-autograd",
        routes={name: "minibatch-autograd" for name in layer_grams},
        batch_size=int(batches[0][0].shape[0]),
    )
