"""Fully connected network: Flatten, ``depth`` hidden layers of ``width`` units, Linear head.

Shapes: inputs [B, *input_shape] are flattened to [B, d0] with d0 = prod(input_shape). Each
hidden layer maps to [B, width], and the head maps to [B, num_classes].
"""

from __future__ import annotations

import torch
from torch import nn

from gradconf.models.init import make_activation

__all__ = ["MLP", "HiddenLayer"]


class HiddenLayer(nn.Module):
    """One hidden layer: act(BN(W h + b)), plus h when ``residual`` is set.

    Shapes: [B, in_features] -> [B, out_features]. ``norm`` is ``nn.Identity`` without
    batch norm, so the module tree has the same names in every variant.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str,
        *,
        batchnorm: bool = False,
        residual: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if residual and in_features != out_features:
            raise ValueError(
                f"a residual hidden layer needs in_features == out_features, got "
                f"{in_features} and {out_features}. Set residual=False for a layer that "
                "changes width."
            )
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.norm: nn.Module = nn.BatchNorm1d(out_features) if batchnorm else nn.Identity()
        self.activation = make_activation(activation)
        self.residual = residual

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Map [B, in_features] to [B, out_features]."""
        outputs = self.activation(self.norm(self.linear(inputs)))
        if self.residual:
            outputs = inputs + outputs
        return outputs

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class MLP(nn.Sequential):
    """Multilayer perceptron ``MLP-depth-width``, a deep linear net with ``activation="identity"``.

    The children are, in order: ``nn.Flatten()``, ``depth`` ``HiddenLayer`` modules and the
    ``nn.Linear`` head. With ``skip=True`` every hidden layer after the first computes
    h + act(BN(W h + b)). The first one changes the width from d0 to ``width``, so it has
    no skip.
    Weights keep PyTorch's default init; ``build_model`` applies the configured one.

    Shapes: [B, *input_shape] -> [B, num_classes].
    """

    def __init__(
        self,
        in_features: int,
        width: int,
        depth: int,
        num_classes: int,
        activation: str = "relu",
        *,
        batchnorm: bool = False,
        skip: bool = False,
        bias: bool = True,
    ) -> None:
        for label, value in (
            ("in_features", in_features),
            ("width", width),
            ("depth", depth),
            ("num_classes", num_classes),
        ):
            if value < 1:
                raise ValueError(f"MLP {label}={value!r} is invalid; it must be at least 1.")

        layers: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for index in range(depth):
            layers.append(
                HiddenLayer(
                    features,
                    width,
                    activation,
                    batchnorm=batchnorm,
                    residual=skip and index > 0,
                    bias=bias,
                )
            )
            features = width
        layers.append(nn.Linear(width, num_classes, bias=bias))
        super().__init__(*layers)

        self.in_features = in_features
        self.width = width
        self.depth = depth
        self.num_classes = num_classes
        self.activation = activation
        self.batchnorm = batchnorm
        self.skip = skip

    @property
    def name(self) -> str:
        """Short label such as ``MLP-2-64`` (depth 2, width 64), plus ``-bn`` or ``-skip``."""
        name = f"MLP-{self.depth}-{self.width}"
        if self.batchnorm:
            name += "-bn"
        if self.skip:
            name += "-skip"
        return name

    def extra_repr(self) -> str:
        return f"{self.name}, activation={self.activation}"
