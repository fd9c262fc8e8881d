"""Leave the model as found: train/eval modes and ``.grad`` restored, also on error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["BATCHNORM_TYPES", "preserved_model_state", "set_batchnorm_eval", "trainable_parameters"]

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
