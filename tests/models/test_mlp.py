"""MLP: output shapes, parameter counts and the skip connections."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradconf.models import MLP, HiddenLayer, count_parameters

SHAPE_ARGS = ("input_shape", "depth", "width", "num_classes", "batchnorm", "skip")
SHAPE_CASES = [
    pytest.param((10,), 1, 8, 3, False, False, id="flat-d1"),
    pytest.param((1, 8, 8), 3, 16, 10, False, False, id="image-d3"),
    pytest.param((1, 40), 2, 12, 10, True, False, id="sequence-bn"),
    pytest.param((3, 4, 4), 4, 8, 1, False, True, id="image-skip-scalar"),
    pytest.param((5,), 3, 6, 2, True, True, id="flat-bn-skip"),
]


def hand_count(in_features: int, width: int, depth: int, num_classes: int, batchnorm: bool) -> int:
    """Parameters of an MLP with biases, counted layer by layer."""
    total = in_features * width + width  # first hidden layer
    total += (depth - 1) * (width * width + width)  # other hidden layers
    total += width * num_classes + num_classes  # head
    if batchnorm:
        total += depth * 2 * width  # weight and bias per BatchNorm1d
    return total


@pytest.mark.parametrize(SHAPE_ARGS, SHAPE_CASES)
def test_mlp_output_shape(input_shape, depth, width, num_classes, batchnorm, skip):
    in_features = torch.Size(input_shape).numel()
    model = MLP(in_features, width, depth, num_classes, batchnorm=batchnorm, skip=skip)

    outputs = model(torch.randn(4, *input_shape))

    assert outputs.shape == (4, num_classes)


@pytest.mark.parametrize(SHAPE_ARGS, SHAPE_CASES)
def test_mlp_parameter_count(input_shape, depth, width, num_classes, batchnorm, skip):
    in_features = torch.Size(input_shape).numel()
    model = MLP(in_features, width, depth, num_classes, batchnorm=batchnorm, skip=skip)

    assert count_parameters(model) == hand_count(in_features, width, depth, num_classes, batchnorm)


def test_mlp_layer_order():
    model = MLP(6, 5, 2, 3, batchnorm=True)

    assert isinstance(model[0], nn.Flatten)
    assert isinstance(model[1], HiddenLayer)
    assert isinstance(model[1].norm, nn.BatchNorm1d)
    assert isinstance(model[2], HiddenLayer)
    assert isinstance(model[3], nn.Linear)
    assert len(model) == 4


def test_mlp_first_layer_no_skip():
    model = MLP(6, 5, 3, 2, skip=True)

    residual = [layer.residual for layer in model if isinstance(layer, HiddenLayer)]

    assert residual == [False, True, True]


def test_mlp_skip_zero_weights():
    # With zero weights after the first layer, h + act(0) = h, so the later layers vanish.
    torch.manual_seed(0)
    model = MLP(7, 6, 4, 3, activation="identity", skip=True)
    with torch.no_grad():
        for layer in list(model)[2:-1]:
            layer.linear.weight.zero_()
            layer.linear.bias.zero_()
    inputs = torch.randn(5, 7)

    expected = model[-1](model[1](inputs))

    torch.testing.assert_close(model(inputs), expected)


def test_mlp_no_skip_zero_weights():
    # The same zeroing without skips cuts the input off, so only the head bias remains.
    torch.manual_seed(0)
    model = MLP(7, 6, 4, 3, activation="identity", skip=False)
    with torch.no_grad():
        for layer in list(model)[2:-1]:
            layer.linear.weight.zero_()
            layer.linear.bias.zero_()
    inputs = torch.randn(5, 7)

    expected = model[-1].bias.expand(5, 3)

    torch.testing.assert_close(model(inputs), expected)


def test_mlp_identity_is_linear():
    torch.manual_seed(0)
    model = MLP(4, 8, 3, 2, activation="identity", bias=False).double()
    first, second = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)

    combined = model(2.0 * first - 3.0 * second)

    torch.testing.assert_close(combined, 2.0 * model(first) - 3.0 * model(second))


def test_mlp_bias_false():
    model = MLP(4, 8, 2, 3, bias=False)

    biases = [module.bias for module in model.modules() if isinstance(module, nn.Linear)]

    assert biases == [None, None, None]


def test_mlp_name():
    assert MLP(4, 64, 2, 3).name == "MLP-2-64"
    assert MLP(4, 8, 3, 3, batchnorm=True, skip=True).name == "MLP-3-8-bn-skip"
    assert "MLP-2-64" in repr(MLP(4, 64, 2, 3))


def test_mlp_invalid_width():
    with pytest.raises(ValueError, match=r"width=0 is invalid; it must be at least 1"):
        MLP(4, 0, 2, 3)


def test_hidden_layer_residual_width_mismatch():
    with pytest.raises(ValueError, match=r"in_features == out_features, got 4 and 8"):
        HiddenLayer(4, 8, "relu", residual=True)


def test_mlp_invalid_activation():
    with pytest.raises(ValueError, match=r"activation='gelu' is not supported; allowed: 'relu'"):
        MLP(4, 8, 2, 3, activation="gelu")
