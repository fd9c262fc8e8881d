"""Leave the model as found: train/eval modes and ``.grad`` restored, also on error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = [
    "BATCHNORM_TYPES",
    "grams_from_gradients",
    "preserved_model_state",
    "require_trainable",
    "set_batchnorm_eval",
    "trainable_parameters",
]

BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextlib.contextmanager
def preserved_model_state(model: nn.Module) -> Iterator[None]:
    """Restore every module's ``training`` flag, every parameter's ``.grad`` and every buffer
    (BatchNorm running statistics) on exit."""
    modes = [(module, module.training) for module in model.modules()]
    grads = [(param, param.grad) for param in model.parameters()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    for param, _ in grads:
        param.grad = None
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, grad in grads:
            param.grad = grad
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def set_batchnorm_eval(model: nn.Module) -> int:
    """Put every BatchNorm module in eval mode (running statistics); return how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, BATCHNORM_TYPES):
            module.eval()
            count += 1
    return count


def batchnorm_in_train_mode(model: nn.Module) -> list[str]:
    """Return the names of BatchNorm modules that are in train mode."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, BATCHNORM_TYPES) and module.training
    ]


def trainable_parameters(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[str]]:
    """Split named parameters into trainable (name, param) pairs and frozen names.

    A parameter shared by several modules appears once, under its first name.
    """
    trainable: list[tuple[str, nn.Parameter]] = []
    frozen: list[str] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            trainable.append((name, param))
        else:
            frozen.append(name)
    return trainable, frozen


def reject_empty_batch(inputs: torch.Tensor) -> int:
    """Return the batch size B of ``inputs``, raising ValueError for an empty batch."""
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError(
            f"received inputs of shape {tuple(inputs.shape)}; a Gram needs at least one example "
            "along dimension 0. Pass a batch [B, ...] with B >= 1."
        )
    return int(inputs.shape[0])


def require_trainable(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[str]]:
    """Return ``trainable_parameters(model)``, raising ValueError when none is trainable."""
    trainable, frozen = trainable_parameters(model)
    if not trainable:
        raise ValueError(
            "the model has no trainable parameters (all have requires_grad=False); there is "
            "no gradient to measure. Unfreeze at least one parameter."
        )
    return trainable, frozen


def grams_from_gradients(
    trainable: list[tuple[str, nn.Parameter]],
    frozen: list[str],
    rows: list[list[torch.Tensor | None]],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], "Coverage"]:
    """Turn one gradient per row and parameter into per-parameter Grams: [M, P_k] -> [M, M].

    ``rows[m][k]`` is gradient m of parameter k (None where autograd returned none). A
    parameter that received no gradient in any row is reported as unused. Returns the total
    Gram, the per-parameter Grams (float64, CPU) and the coverage.
    """
    from gradconf.engine.result import Coverage

    layer_grams: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for column, (name, param) in enumerate(trainable):
        column_grads = [row[column] for row in rows]
        if all(grad is None for grad in column_grads):
            unused.append(name)
            continue
        flat = torch.stack(
            [
                torch.zeros(param.numel(), device=param.device) if grad is None
                else grad.detach().reshape(-1)
                for grad in column_grads
            ]
        ).to(torch.float64)  # [M, P_k]
        layer_grams[name] = (flat @ flat.T).cpu()  # [M, M]
    if not layer_grams:
        raise ValueError(
            "no trainable parameter received a gradient from the loss; check that the loss "
            "depends on the model's outputs."
        )
    gram = torch.stack(list(layer_grams.values())).sum(dim=0)
    coverage = Coverage(
        included=tuple(layer_grams),
        frozen=tuple(frozen),
        unused=tuple(unused),
        included_numel=sum(param.numel() for name, param in trainable if name in layer_grams),
        trainable_numel=sum(param.numel() for _, param in trainable),
    )
    return gram, layer_grams, coverage
