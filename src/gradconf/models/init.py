"""Weight initializations and the activation table shared by the models.

Notation: a weight of shape [p, d, *kernel] maps d input channels (or features) to p
output channels through a kernel of k = prod(kernel) taps (k = 1 for a Linear layer).
Then fan_in = d·k and fan_out = p·k, the number of inputs that feed one output unit and the
number of outputs that one input unit feeds.

Every scheme draws from a zero-mean normal distribution, except "orthogonal":

==============  ==========================================================================
``he``          Var = gain² / fan_in (Kaiming normal, fan_in mode)
``glorot``      Var = 2 / (fan_in + fan_out) (Xavier normal, gain 1)
``lecun``       Var = 1 / fan_in
``orthogonal``  W, flattened to [p, d·k], has orthonormal rows (or columns when p > d·k),
                scaled by gain
``gaussian``    Var = 1 / fan_in in the first layer and 1 / (kappa·fan_in) in every later
                layer, the kappa scaling of the gradient confusion analysis
==============  ==========================================================================

The gain depends on the activation: sqrt(2) for relu, 5/3 for tanh, 1 for identity (the
values of ``torch.nn.init.calculate_gain``).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "activation_gain",
    "fan_in",
    "fan_out",
    "initialize",
    "make_activation",
]

logger = logging.getLogger(__name__)

# Activation name -> (module class, init gain). The gains are the values of
# torch.nn.init.calculate_gain ("linear" for identity).
ACTIVATIONS: dict[str, tuple[type[nn.Module], float]] = {
    "relu": (nn.ReLU, math.sqrt(2.0)),
    "tanh": (nn.Tanh, 5.0 / 3.0),
    "identity": (nn.Identity, 1.0),
}
INITS = ("he", "glorot", "lecun", "orthogonal", "gaussian")

# Modules whose weights ``initialize`` sets. Any other module type with parameters of its
# own makes ``initialize`` raise, so that no parameter keeps PyTorch's default by accident.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation={activation!r} is not supported; allowed: "
            f"{', '.join(map(repr, ACTIVATIONS))}. Pick one of them."
        )


def make_activation(activation: str) -> nn.Module:
    """Create the activation module for a name in ``ACTIVATIONS`` (shape-preserving)."""
    _check_activation(activation)
    module_class, _ = ACTIVATIONS[activation]
    return module_class()


def activation_gain(activation: str) -> float:
    """Return the init gain for an activation: sqrt(2) for relu, 5/3 for tanh, 1 for identity."""
    _check_activation(activation)
    _, gain = ACTIVATIONS[activation]
    return gain


def _check_weight(weight: torch.Tensor) -> None:
    if weight.dim() < 2:
        raise ValueError(
            f"a weight of shape {tuple(weight.shape)} has no fan-in; expected at least 2 "
            "dimensions [p, d, *kernel]. Pass the weight of a Linear or Conv layer."
        )


def fan_in(weight: torch.Tensor) -> int:
    """Return d·k for a weight [p, d, *kernel]: the inputs feeding one output unit.

    For a Linear weight [p, d] this is d. For a grouped convolution PyTorch stores
    [p, d/groups, *kernel], so the result counts the inputs of one group, which is the
    number that actually feeds an output unit.
    """
    _check_weight(weight)
    return weight.shape[1] * math.prod(weight.shape[2:])


def fan_out(weight: torch.Tensor) -> int:
    """Return p·k for a weight [p, d, *kernel]: the outputs fed by one input unit."""
    _check_weight(weight)
    return weight.shape[0] * math.prod(weight.shape[2:])


def _init_weight(
    weight: torch.Tensor, init: str, gain: float, kappa: float, is_first: bool
) -> None:
    """Overwrite ``weight`` [p, d, *kernel] in place with the named scheme."""
    if init == "orthogonal":
        # orthogonal_ flattens the weight to [p, d·k] before the QR step.
        nn.init.orthogonal_(weight, gain=gain)
        return

    if init == "he":
        variance = gain**2 / fan_in(weight)
    elif init == "glorot":
        variance = 2.0 / (fan_in(weight) + fan_out(weight))
    elif init == "lecun":
        variance = 1.0 / fan_in(weight)
    else:  # "gaussian"
        scale = 1.0 if is_first else kappa
        variance = 1.0 / (scale * fan_in(weight))
    weight.normal_(0.0, math.sqrt(variance))


def _reject_unknown_parameters(model: nn.Module) -> None:
    known = WEIGHT_LAYERS + NORM_LAYERS
    unknown = [
        f"{name or '<root>'} ({type(module).__name__})"
        for name, module in model.named_modules()
        if not isinstance(module, known) and any(True for _ in module.parameters(recurse=False))
    ]
    if unknown:
        raise ValueError(
            f"initialize cannot set the parameters of {', '.join(unknown)}; it supports "
            "Linear, Conv1d/2d/3d and BatchNorm1d/2d/3d. Initialize those modules yourself "
            "or build the model from these layers."
        )


def initialize(model: nn.Module, init: str, kappa: float = 1.0, activation: str = "relu") -> None:
    """Initialize every Linear and Conv weight of ``model`` in place with the named scheme.

    Biases are set to 0, BatchNorm weights to 1 and BatchNorm biases to 0, and BatchNorm
    running statistics are reset. The gain for
    ``he`` and ``orthogonal`` is that of ``activation``. For ``gaussian`` the first layer is
    the first Linear or Conv module in ``model.modules()`` order, which is the input layer
    of every model built by ``build_model``. ``kappa`` only affects ``gaussian``.

    Raises ValueError for an unknown scheme or activation, for kappa <= 0, for a model
    without Linear or Conv layers, and for a module type with parameters that this
    function does not know (so no parameter silently keeps its default init).
    """
    if init not in INITS:
        raise ValueError(
            f"init={init!r} is not supported; allowed: {', '.join(map(repr, INITS))}. "
            "Pick one of them."
        )
    if not kappa > 0:
        raise ValueError(f"kappa={kappa!r} is invalid; it must be > 0.")
    gain = activation_gain(activation)
    _reject_unknown_parameters(model)

    layers = [module for module in model.modules() if isinstance(module, WEIGHT_LAYERS)]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no Linear or Conv layer to initialize; initialize "
            "works on models built from Linear, Conv1d/2d/3d and BatchNorm layers."
        )

    with torch.no_grad():
        for index, layer in enumerate(layers):
            _init_weight(layer.weight, init, gain, kappa, is_first=index == 0)
            if layer.bias is not None:
                layer.bias.zero_()
        for module in model.modules():
            if isinstance(module, NORM_LAYERS) and module.affine:
                module.weight.fill_(1.0)
                module.bias.zero_()
            if isinstance(module, NORM_LAYERS) and module.track_running_stats:
                module.reset_running_stats()
    logger.debug(
        "initialized %d layers of %s with init=%s, kappa=%g, activation=%s",
        len(layers),
        type(model).__name__,
        init,
        kappa,
        activation,
    )
