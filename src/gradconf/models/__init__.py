"""Networks whose gradient confusion gradconf measures: MLPs and the CNN-β-ℓ family.

``build_model(config, input_shape, num_classes)`` is the entry point: it builds the network
of a ``ModelConfig`` and applies its initialization. Every model maps inputs
[B, *input_shape] to outputs [B, num_classes], and ``model.name`` is a short label such as
``MLP-2-64`` or ``CNN-16-2``. See docs/models.md for the layouts and the init formulas.
"""

from gradconf.models.build import build_model, count_parameters
from gradconf.models.cnn import CNN, ConvBlock
from gradconf.models.init import (
    ACTIVATIONS,
    INITS,
    activation_gain,
    fan_in,
    fan_out,
    initialize,
    make_activation,
)
from gradconf.models.mlp import MLP, HiddenLayer

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "INITS",
    "MLP",
    "ConvBlock",
    "HiddenLayer",
    "activation_gain",
    "build_model",
    "count_parameters",
    "fan_in",
    "fan_out",
    "initialize",
    "make_activation",
]
