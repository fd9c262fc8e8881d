"""Build and initialize the model that a ``ModelConfig`` describes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from torch import nn

from gradconf.config import ModelConfig
from gradconf.models.cnn import CNN
from gradconf.models.init import initialize
from gradconf.models.mlp import MLP

__all__ = ["build_model", "count_parameters"]

logger = logging.getLogger(__name__)

# Length of input_shape (batch dimension excluded) -> spatial dimensions of the CNN.
_CNN_SPATIAL_DIMS = {2: 1, 3: 2}


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    valid = len(shape) > 0 and all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in shape
    )
    if not valid:
        raise ValueError(
            f"input_shape={input_shape!r} is invalid; it must be a non-empty tuple of positive "
            "integers without the batch dimension, e.g. (3, 32, 32) or (40,)."
        )
    return shape


def build_model(
    config: ModelConfig, input_shape: Sequence[int], num_classes: int
) -> MLP | CNN:
    """Build the network of ``config`` and apply its initialization.

    ``input_shape`` excludes the batch dimension. An MLP accepts any shape and flattens it.
    The CNN needs (C, H, W), which uses Conv2d, or (C, L), which uses Conv1d.
    ``num_classes`` is the output width, and 1 gives a scalar output for regression.
    The model maps inputs [B, *input_shape] to outputs [B, num_classes].

    Raises ValueError for an invalid shape or class count and for a CNN on a flat input.
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"config must be a gradconf.config.ModelConfig, got {type(config).__name__}. "
            "Build one with ModelConfig(...) or config_from_dict(ModelConfig, data)."
        )
    shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes={num_classes!r} is invalid; it must be an integer >= 1 "
            "(1 gives a scalar output for regression)."
        )

    model: MLP | CNN
    if config.kind == "mlp":
        model = MLP(
            math.prod(shape),
            config.width,
            config.depth,
            num_classes,
            config.activation,
            batchnorm=config.batchnorm,
            skip=config.skip,
            bias=config.bias,
        )
    else:
        if len(shape) not in _CNN_SPATIAL_DIMS:
            fix = "Use kind='mlp' or reshape the inputs."
            if len(shape) == 1:
                fix = (
                    "Use kind='mlp' for flat inputs, or add a channel axis for a 1-D conv, "
                    f"e.g. input_shape=(1, {shape[0]})."
                )
            raise ValueError(
                f"kind='cnn' cannot take input_shape={shape}; it needs (C, H, W) for images or "
                f"(C, L) for sequences, without the batch dimension. {fix}"
            )
        model = CNN(
            shape[0],
            config.depth,
            config.width,
            num_classes,
            config.activation,
            spatial_dims=_CNN_SPATIAL_DIMS[len(shape)],
            batchnorm=config.batchnorm,
            skip=config.skip,
            bias=config.bias,
        )

    initialize(model, config.init, config.kappa, config.activation)
    logger.debug(
        "built %s for input shape %s with %d parameters (init=%s)",
        model.name,
        shape,
        count_parameters(model),
        config.init,
    )
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Return the number of scalar parameters in ``model``, each shared tensor counted once.

    With ``trainable_only`` only parameters with ``requires_grad`` are counted. Buffers such
    as BatchNorm running statistics are never counted.
    """
    return sum(
        parameter.numel()
        for parameter in model.parameters()
        if parameter.requires_grad or not trainable_only
    )
