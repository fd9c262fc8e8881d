"""build_model: the config decides the model, its init and the errors for impossible inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradconf.config import ModelConfig
from gradconf.models import CNN, MLP, build_model, count_parameters


def test_build_mlp_from_config():
    config = ModelConfig(
        kind="mlp", width=16, depth=3, activation="tanh", batchnorm=True, skip=True
    )

    model = build_model(config, (1, 8, 8), 10)

    assert isinstance(model, MLP)
    assert model.name == "MLP-3-16-bn-skip"
    assert model[1].linear.in_features == 64
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_build_cnn_2d():
    model = build_model(ModelConfig(kind="cnn", depth=10, width=1), (1, 8, 8), 10)

    assert isinstance(model, CNN)
    assert model.spatial_dims == 2
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_build_cnn_1d():
    model = build_model(ModelConfig(kind="cnn", depth=10, width=1, skip=True), (1, 40), 10)

    assert isinstance(model.stem[0], nn.Conv1d)
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)


def test_build_scalar_output():
    model = build_model(ModelConfig(width=8), (5,), 1)

    assert model(torch.randn(3, 5)).shape == (3, 1)


def test_build_applies_init():
    torch.manual_seed(0)
    config = ModelConfig(width=256, depth=2, init="gaussian", kappa=4.0)

    model = build_model(config, (256,), 10)

    later = model[2].linear.weight.detach().double()
    assert later.var().item() == pytest.approx(1.0 / (4.0 * 256), rel=0.05)
    assert torch.count_nonzero(model[2].linear.bias) == 0


def test_build_bias_false():
    model = build_model(ModelConfig(kind="cnn", depth=10, width=1, bias=False), (3, 8, 8), 10)

    assert all(module.bias is None for module in model.modules() if hasattr(module, "bias"))


def test_build_cnn_flat_input():
    config = ModelConfig(kind="cnn", depth=16, width=2)

    with pytest.raises(ValueError, match=r"kind='cnn' cannot take input_shape=\(40,\).*\(1, 40\)"):
        build_model(config, (40,), 10)


def test_build_cnn_3d_input():
    config = ModelConfig(kind="cnn", depth=16, width=2)

    with pytest.raises(ValueError, match=r"input_shape=\(1, 4, 4, 4\); it needs \(C, H, W\)"):
        build_model(config, (1, 4, 4, 4), 10)


@pytest.mark.parametrize(
    "input_shape", [(), (0, 8), (3, -1), (2.0,)], ids=["empty", "zero", "negative", "float"]
)
def test_build_invalid_input_shape(input_shape):
    message = r"input_shape=.* is invalid; it must be a non-empty tuple"
    with pytest.raises(ValueError, match=message):
        build_model(ModelConfig(), input_shape, 10)


@pytest.mark.parametrize("num_classes", [0, -2, True], ids=["zero", "negative", "bool"])
def test_build_invalid_num_classes(num_classes):
    with pytest.raises(ValueError, match=r"num_classes=.* is invalid; it must be an integer >= 1"):
        build_model(ModelConfig(), (4,), num_classes)


def test_build_dict_config():
    with pytest.raises(TypeError, match=r"config must be a gradconf.config.ModelConfig, got dict"):
        build_model({"kind": "mlp"}, (4,), 10)


def test_count_parameters_trainable():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)

    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2 + 2
    assert count_parameters(model, trainable_only=True) == 4 + 4 * 2 + 2


def test_count_parameters_shared():
    layer = nn.Linear(3, 3)
    model = nn.Sequential(layer, nn.ReLU(), layer)

    assert count_parameters(model) == 3 * 3 + 3
