"""CNN-β-ℓ: layout, output shapes, feature map sizes and parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradconf.models import CNN, ConvBlock, count_parameters

STAGE_BASE = (16, 32, 64)


def conv_count(in_channels: int, out_channels: int, taps: int) -> int:
    """Parameters of one conv with bias."""
    return taps * in_channels * out_channels + out_channels


def hand_count(
    in_channels: int,
    depth: int,
    width: int,
    num_classes: int,
    *,
    spatial_dims: int = 2,
    batchnorm: bool = False,
    skip: bool = False,
) -> int:
    """Parameters of CNN-depth-width with biases, counted stage by stage."""
    taps = 3**spatial_dims
    blocks = (depth - 4) // 6
    total = conv_count(in_channels, 16, taps)
    convs_out = [16]  # output channels of every 3×3 conv, for the BatchNorm count
    previous = 16
    for stage, base in enumerate(STAGE_BASE):
        channels = base * width
        total += conv_count(previous, channels, taps) + conv_count(channels, channels, taps)
        total += (blocks - 1) * 2 * conv_count(channels, channels, taps)
        convs_out += [channels] * 2 * blocks
        needs_projection = previous != channels or stage > 0
        if skip and needs_projection:
            total += conv_count(previous, channels, 1)
        previous = channels
    total += previous * num_classes + num_classes
    if batchnorm:
        total += sum(2 * channels for channels in convs_out)
    return total


def test_cnn_16_2_count():
    # WRN-16-2 layout on 3×32×32, plain, with biases, and n = 2 blocks per stage.
    # stem 9·3·16 + 16 = 448
    # stage 1 (32 channels):  (9·16·32 + 32) + 3·(9·32·32 + 32)   = 4640 + 27744    = 32384
    # stage 2 (64 channels):  (9·32·64 + 64) + 3·(9·64·64 + 64)   = 18496 + 110784  = 129280
    # stage 3 (128 channels): (9·64·128 + 128) + 3·(9·128·128 + 128) = 73856 + 442752 = 516608
    # classifier 128·10 + 10 = 1290
    model = CNN(3, 16, 2, 10)

    assert count_parameters(model) == 448 + 32384 + 129280 + 516608 + 1290


COUNT_CASES = [
    # (in_channels, depth, width, num_classes, spatial_dims, batchnorm, skip)
    pytest.param(3, 10, 1, 10, 2, False, False, id="cnn10-1"),
    pytest.param(3, 22, 2, 100, 2, False, False, id="cnn22-2"),
    pytest.param(1, 16, 3, 10, 2, True, False, id="cnn16-3-bn"),
    pytest.param(1, 16, 2, 10, 2, False, True, id="cnn16-2-skip"),
    pytest.param(1, 10, 1, 10, 2, True, True, id="cnn10-1-bn-skip"),
    pytest.param(1, 16, 2, 10, 1, False, False, id="conv1d-16-2"),
    pytest.param(1, 10, 2, 1, 1, True, True, id="conv1d-bn-skip"),
]


@pytest.mark.parametrize(
    ("in_channels", "depth", "width", "num_classes", "spatial_dims", "batchnorm", "skip"),
    COUNT_CASES,
)
def test_cnn_parameter_count(in_channels, depth, width, num_classes, spatial_dims, batchnorm, skip):
    model = CNN(
        in_channels, depth, width, num_classes,
        spatial_dims=spatial_dims, batchnorm=batchnorm, skip=skip,
    )

    expected = hand_count(
        in_channels, depth, width, num_classes,
        spatial_dims=spatial_dims, batchnorm=batchnorm, skip=skip,
    )

    assert count_parameters(model) == expected


SHAPE_CASES = [
    # (input_shape, spatial_dims, batchnorm, skip)
    pytest.param((1, 8, 8), 2, False, False, id="digits"),
    pytest.param((3, 32, 32), 2, True, False, id="cifar-bn"),
    pytest.param((1, 8, 8), 2, True, True, id="digits-bn-skip"),
    pytest.param((3, 7, 5), 2, False, True, id="odd-size-skip"),
    pytest.param((1, 40), 1, False, False, id="mnist1d"),
    pytest.param((1, 40), 1, True, True, id="mnist1d-bn-skip"),
]


@pytest.mark.parametrize(("input_shape", "spatial_dims", "batchnorm", "skip"), SHAPE_CASES)
def test_cnn_output_shape(input_shape, spatial_dims, batchnorm, skip):
    model = CNN(
        input_shape[0], 10, 1, 10, spatial_dims=spatial_dims, batchnorm=batchnorm, skip=skip
    )

    outputs = model(torch.randn(2, *input_shape))

    assert outputs.shape == (2, 10)


def stage_output_shapes(model: CNN, inputs: torch.Tensor) -> list[tuple[int, ...]]:
    shapes = []
    handles = [
        stage.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
        for stage in model.stages
    ]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def test_cnn_feature_maps_8x8():
    model = CNN(1, 16, 2, 10)

    shapes = stage_output_shapes(model, torch.randn(2, 1, 8, 8))

    assert shapes == [(2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]


def test_cnn_feature_maps_1d():
    model = CNN(1, 10, 1, 10, spatial_dims=1)

    shapes = stage_output_shapes(model, torch.randn(2, 1, 40))

    assert shapes == [(2, 16, 40), (2, 32, 20), (2, 64, 10)]


def test_cnn_plain_layout():
    model = CNN(3, 22, 2, 10)
    convs = [module for module in model.modules() if isinstance(module, nn.Conv2d)]

    assert len(convs) == 6 * 3 + 1
    assert [conv.stride for conv in convs if conv.stride != (1, 1)] == [(2, 2), (2, 2)]
    assert all(conv.kernel_size == (3, 3) for conv in convs)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in model.modules())
    assert all(block.shortcut is None for block in model.modules() if isinstance(block, ConvBlock))


def test_cnn_skip_shortcuts():
    model = CNN(3, 16, 2, 10, skip=True)
    shortcuts = [block.shortcut for block in model.modules() if isinstance(block, ConvBlock)]

    # The first block of each stage changes the channels (16 -> 32, 32 -> 64, 64 -> 128).
    projections = [shortcuts[0], shortcuts[2], shortcuts[4]]
    identities = [shortcuts[1], shortcuts[3], shortcuts[5]]
    assert all(isinstance(shortcut, nn.Conv2d) for shortcut in projections)
    assert [shortcut.stride for shortcut in projections] == [(1, 1), (2, 2), (2, 2)]
    assert all(shortcut.kernel_size == (1, 1) for shortcut in projections)
    assert all(isinstance(shortcut, nn.Identity) for shortcut in identities)


def test_cnn_width_1_identity_shortcut():
    # With width 1 the first stage keeps 16 channels and stride 1, so no projection is needed.
    model = CNN(3, 10, 1, 10, skip=True)

    assert isinstance(model.stages[0][0].shortcut, nn.Identity)


def test_conv_block_skip_zero_conv():
    torch.manual_seed(0)
    block = ConvBlock(8, 8, 1, "relu", residual=True)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    inputs = torch.randn(2, 8, 5, 5)

    torch.testing.assert_close(block(inputs), inputs)


def test_conv_block_plain_zero_conv():
    torch.manual_seed(0)
    block = ConvBlock(8, 8, 1, "relu", residual=False)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()

    outputs = block(torch.randn(2, 8, 5, 5))

    torch.testing.assert_close(outputs, torch.zeros_like(outputs))


def test_cnn_name():
    assert CNN(3, 16, 2, 10).name == "CNN-16-2"
    assert CNN(3, 28, 10, 10, batchnorm=True, skip=True).name == "CNN-28-10-bn-skip"
    assert "CNN-16-2" in repr(CNN(3, 16, 2, 10))


def test_cnn_invalid_depth():
    with pytest.raises(ValueError, match=r"depth=12 is invalid; .* depth = 6n \+ 4"):
        CNN(3, 12, 2, 10)


def test_cnn_invalid_spatial_dims():
    with pytest.raises(ValueError, match=r"spatial_dims=3 is not supported; allowed: 1"):
        CNN(3, 10, 1, 10, spatial_dims=3)


def test_cnn_invalid_width():
    with pytest.raises(ValueError, match=r"CNN width=0 is invalid"):
        CNN(3, 10, 0, 10)
