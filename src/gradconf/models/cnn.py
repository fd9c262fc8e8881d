"""CNN-β-ℓ: the Wide-ResNet layout, plain (no batch norm, no skips) unless asked.

Layout for depth β = 6n + 4 and width factor ℓ:

- The stem is one 3×3 conv from C input channels to 16.
- Stages 1, 2 and 3 have n blocks each. A block is two 3×3 convs with 16ℓ, 32ℓ or 64ℓ
  output channels, and the first conv of stages 2 and 3 has stride 2.
- The activation follows every conv. With ``batchnorm=True`` a BatchNorm sits between
  the conv and the activation.
- Global average pooling and a Linear classifier end the network.

The plain network has 6n + 1 convs and one Linear layer. Its name keeps the Wide-ResNet
depth β = 6n + 4, so CNN-16-2 has the layout of WRN-16-2.

Shapes: inputs [B, C, H, W] use Conv2d and inputs [B, C, L] use Conv1d with the same
layout. Every 3×3 conv has padding 1, so a stride-2 conv maps a side of length s to
ceil(s / 2). An 8×8 input gives 8×8, 4×4 and 2×2 maps in the three stages.
"""

from __future__ import annotations

import torch
from torch import nn

from gradconf.models.init import make_activation

__all__ = ["CNN", "ConvBlock"]

STEM_CHANNELS = 16
STAGE_CHANNELS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)

# Spatial dimensions -> (conv, batch norm, global average pool).
_LAYERS_BY_DIMS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d),
}


def _check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims not in _LAYERS_BY_DIMS:
        raise ValueError(
            f"spatial_dims={spatial_dims!r} is not supported; allowed: 1 (inputs [B, C, L]) "
            "or 2 (inputs [B, C, H, W])."
        )


class ConvBlock(nn.Module):
    """Two 3×3 convs, each with optional BatchNorm and the activation, and an optional skip.

    Shapes: [B, in_channels, *S] -> [B, out_channels, *S'] where S' = ceil(S / stride).
    Without ``residual`` the block computes act(BN(conv2(act(BN(conv1 x))))). With
    ``residual`` it adds ``shortcut(x)`` to that. The shortcut is the identity when the
    shapes match and a 1×1 conv with the block's stride otherwise. The skip is added after
    the last activation, as in ``HiddenLayer`` of the MLP. So a block with an identity
    shortcut whose second conv has zero weight and bias passes x through unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        activation: str,
        *,
        spatial_dims: int = 2,
        batchnorm: bool = False,
        residual: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        conv_class, norm_class, _ = _LAYERS_BY_DIMS[spatial_dims]

        self.conv1 = conv_class(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)
        self.norm1: nn.Module = norm_class(out_channels) if batchnorm else nn.Identity()
        self.activation1 = make_activation(activation)
        self.conv2 = conv_class(out_channels, out_channels, 3, stride=1, padding=1, bias=bias)
        self.norm2: nn.Module = norm_class(out_channels) if batchnorm else nn.Identity()
        self.activation2 = make_activation(activation)

        self.residual = residual
        self.shortcut: nn.Module | None = None
        if residual:
            if in_channels == out_channels and stride == 1:
                self.shortcut = nn.Identity()
            else:
                self.shortcut = conv_class(in_channels, out_channels, 1, stride=stride, bias=bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Map [B, in_channels, *S] to [B, out_channels, *S']."""
        hidden = self.activation1(self.norm1(self.conv1(inputs)))
        outputs = self.activation2(self.norm2(self.conv2(hidden)))
        if self.shortcut is not None:
            outputs = self.shortcut(inputs) + outputs
        return outputs


class CNN(nn.Module):
    """The CNN-β-ℓ network described in the module docstring, with ``name`` such as ``CNN-16-2``.

    Children: ``stem`` (conv, norm, activation), ``stages`` (3 ``nn.Sequential`` of
    ``ConvBlock``), ``pool`` and the Linear ``classifier``. Weights keep PyTorch's default
    init; ``build_model`` applies the configured one.

    Shapes: [B, C, H, W] (``spatial_dims=2``) or [B, C, L] (``spatial_dims=1``) ->
    [B, num_classes].
    """

    def __init__(
        self,
        in_channels: int,
        depth: int,
        width: int,
        num_classes: int,
        activation: str = "relu",
        *,
        spatial_dims: int = 2,
        batchnorm: bool = False,
        skip: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"CNN depth={depth!r} is invalid; the Wide-ResNet layout needs depth = 6n + 4 "
                "with n >= 1 (10, 16, 22, 28, ...)."
            )
        for label, value in (
            ("in_channels", in_channels),
            ("width", width),
            ("num_classes", num_classes),
        ):
            if value < 1:
                raise ValueError(f"CNN {label}={value!r} is invalid; it must be at least 1.")
        _check_spatial_dims(spatial_dims)
        conv_class, norm_class, pool_class = _LAYERS_BY_DIMS[spatial_dims]

        self.depth = depth
        self.width = width
        self.num_classes = num_classes
        self.activation = activation
        self.spatial_dims = spatial_dims
        self.batchnorm = batchnorm
        self.skip = skip
        self.blocks_per_stage = (depth - 4) // 6

        self.stem = nn.Sequential(
            conv_class(in_channels, STEM_CHANNELS, 3, padding=1, bias=bias),
            norm_class(STEM_CHANNELS) if batchnorm else nn.Identity(),
            make_activation(activation),
        )

        stages = []
        channels = STEM_CHANNELS
        for base_channels, stride in zip(STAGE_CHANNELS, STAGE_STRIDES):
            blocks = []
            for index in range(self.blocks_per_stage):
                blocks.append(
                    ConvBlock(
                        channels,
                        base_channels * width,
                        stride if index == 0 else 1,
                        activation,
                        spatial_dims=spatial_dims,
                        batchnorm=batchnorm,
                        residual=skip,
                        bias=bias,
                    )
                )
                channels = base_channels * width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

        self.pool = pool_class(1)
        self.classifier = nn.Linear(channels, num_classes, bias=bias)

    @property
    def name(self) -> str:
        """Short label ``CNN-β-ℓ`` such as ``CNN-16-2``, with ``-bn`` or ``-skip`` appended."""
        name = f"CNN-{self.depth}-{self.width}"
        if self.batchnorm:
            name += "-bn"
        if self.skip:
            name += "-skip"
        return name

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Map [B, C, *S] to [B, num_classes]."""
        features = self.stages(self.stem(inputs))  # [B, 64ℓ, *ceil(S / 4)]
        pooled = self.pool(features).flatten(1)  # [B, 64ℓ, 1, ...] -> [B, 64ℓ]
        return self.classifier(pooled)

    def extra_repr(self) -> str:
        return f"{self.name}, activation={self.activation}, spatial_dims={self.spatial_dims}"
