"""Weight initializations: fan-in, empirical variances, orthogonality and the kappa scaling."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradconf.models import CNN, MLP, activation_gain, fan_in, fan_out, initialize

# Relative tolerance on an empirical variance. Its relative standard error is sqrt(2 / N),
# under 0.6% for the N >= 65536 weights used below, so 5% leaves a wide margin.
VARIANCE_RTOL = 0.05
ORTHOGONAL_ATOL = 1e-4


def empirical_variance(weight: torch.Tensor) -> float:
    return weight.detach().double().var().item()


def test_fan_in_linear():
    weight = torch.empty(5, 7)

    assert fan_in(weight) == 7
    assert fan_out(weight) == 5


def test_fan_in_conv2d():
    weight = nn.Conv2d(4, 6, 3).weight

    assert fan_in(weight) == 4 * 9
    assert fan_out(weight) == 6 * 9


def test_fan_in_grouped_conv1d():
    weight = nn.Conv1d(8, 6, 5, groups=2).weight

    assert fan_in(weight) == 4 * 5


def test_fan_in_bias_rejected():
    with pytest.raises(ValueError, match=r"shape \(5,\) has no fan-in"):
        fan_in(torch.empty(5))


def test_activation_gains():
    assert activation_gain("relu") == pytest.approx(math.sqrt(2.0))
    assert activation_gain("tanh") == pytest.approx(5.0 / 3.0)
    assert activation_gain("identity") == 1.0
    assert activation_gain("relu") == pytest.approx(nn.init.calculate_gain("relu"))
    assert activation_gain("tanh") == pytest.approx(nn.init.calculate_gain("tanh"))


VARIANCE_CASES = [
    # (init, activation, expected variance of a 256 -> 256 Linear weight)
    pytest.param("he", "relu", 2.0 / 256, id="he-relu"),
    pytest.param("he", "tanh", (5.0 / 3.0) ** 2 / 256, id="he-tanh"),
    pytest.param("he", "identity", 1.0 / 256, id="he-identity"),
    pytest.param("glorot", "relu", 2.0 / (256 + 256), id="glorot"),
    pytest.param("lecun", "relu", 1.0 / 256, id="lecun"),
]


@pytest.mark.parametrize(("init", "activation", "expected"), VARIANCE_CASES)
def test_linear_variance(init, activation, expected):
    torch.manual_seed(0)
    model = MLP(256, 256, 2, 10)

    initialize(model, init, activation=activation)

    hidden = model[2].linear.weight
    assert empirical_variance(hidden) == pytest.approx(expected, rel=VARIANCE_RTOL)
    # The mean's standard error is std / 256, so 0.05 std is about 13 standard errors.
    assert hidden.detach().mean().abs().item() < 0.05 * math.sqrt(expected)


def test_glorot_rectangular():
    torch.manual_seed(0)
    layer = nn.Linear(512, 128)

    initialize(layer, "glorot")

    assert empirical_variance(layer.weight) == pytest.approx(2.0 / (512 + 128), rel=VARIANCE_RTOL)


def test_he_conv_variance():
    torch.manual_seed(0)
    model = CNN(3, 10, 2, 10)

    initialize(model, "he", activation="relu")

    weight = model.stages[2][0].conv2.weight  # [128, 128, 3, 3]
    assert empirical_variance(weight) == pytest.approx(2.0 / (128 * 9), rel=VARIANCE_RTOL)


def test_orthogonal_square_linear():
    torch.manual_seed(0)
    model = MLP(64, 64, 3, 10, activation="tanh")

    initialize(model, "orthogonal", activation="tanh")

    weight = model[2].linear.weight.detach().double()
    gain = 5.0 / 3.0
    eye = torch.eye(64, dtype=torch.float64)
    torch.testing.assert_close(weight @ weight.T, gain**2 * eye, atol=ORTHOGONAL_ATOL, rtol=0)
    torch.testing.assert_close(weight.T @ weight, gain**2 * eye, atol=ORTHOGONAL_ATOL, rtol=0)


def test_orthogonal_conv_rows():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3)

    initialize(conv, "orthogonal", activation="identity")

    flat = conv.weight.detach().double().reshape(32, 16 * 9)  # [p, d·k], p < d·k
    eye = torch.eye(32, dtype=torch.float64)
    torch.testing.assert_close(flat @ flat.T, eye, atol=ORTHOGONAL_ATOL, rtol=0)


def test_gaussian_kappa_mlp():
    torch.manual_seed(0)
    kappa = 4.0
    model = MLP(256, 256, 3, 256)

    initialize(model, "gaussian", kappa=kappa)

    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert empirical_variance(linears[0].weight) == pytest.approx(1.0 / 256, rel=VARIANCE_RTOL)
    for layer in linears[1:]:
        expected = 1.0 / (kappa * 256)
        assert empirical_variance(layer.weight) == pytest.approx(expected, rel=VARIANCE_RTOL)


def test_gaussian_kappa_ratio():
    # Only the later layers change with kappa, by exactly the factor 1 / kappa.
    model = MLP(256, 256, 2, 10)
    torch.manual_seed(0)
    initialize(model, "gaussian", kappa=1.0)
    first_before = model[1].linear.weight.detach().clone()
    later_before = model[2].linear.weight.detach().clone()

    torch.manual_seed(0)
    initialize(model, "gaussian", kappa=9.0)

    torch.testing.assert_close(model[1].linear.weight.detach(), first_before)
    torch.testing.assert_close(model[2].linear.weight.detach(), later_before / 3.0)


def test_gaussian_kappa_cnn():
    # The stem is the first layer. Every later conv, projection and the classifier get 1/kappa.
    torch.manual_seed(0)
    kappa = 2.0
    model = CNN(3, 10, 2, 10, skip=True)

    initialize(model, "gaussian", kappa=kappa)

    stem = model.stem[0].weight
    conv = model.stages[2][0].conv2.weight  # [128, 128, 3, 3]
    projection = model.stages[2][0].shortcut.weight  # [128, 64, 1, 1]
    assert stem.std().item() == pytest.approx(math.sqrt(1.0 / 27), rel=0.2)
    assert empirical_variance(conv) == pytest.approx(1.0 / (kappa * 128 * 9), rel=VARIANCE_RTOL)
    assert empirical_variance(projection) == pytest.approx(1.0 / (kappa * 64), rel=0.1)


def test_biases_and_batchnorm_reset():
    torch.manual_seed(0)
    model = MLP(8, 16, 2, 3, batchnorm=True)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(0.5)
    model.train()
    model(torch.randn(4, 8))

    initialize(model, "he")

    for module in model.modules():
        if isinstance(module, nn.Linear):
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, nn.BatchNorm1d):
            assert torch.all(module.weight == 1.0)
            assert torch.count_nonzero(module.bias) == 0
            assert torch.count_nonzero(module.running_mean) == 0
            assert module.num_batches_tracked.item() == 0


def test_initialize_unknown_init():
    with pytest.raises(ValueError, match=r"init='xavier' is not supported; allowed: 'he'"):
        initialize(nn.Linear(3, 3), "xavier")


def test_initialize_unknown_activation():
    with pytest.raises(ValueError, match=r"activation='gelu' is not supported"):
        initialize(nn.Linear(3, 3), "he", activation="gelu")


def test_initialize_invalid_kappa():
    with pytest.raises(ValueError, match=r"kappa=0.0 is invalid; it must be > 0"):
        initialize(nn.Linear(3, 3), "gaussian", kappa=0.0)


def test_initialize_unsupported_module():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))

    with pytest.raises(ValueError, match=r"cannot set the parameters of 1 \(LayerNorm\)"):
        initialize(model, "he")


def test_initialize_no_layers():
    with pytest.raises(ValueError, match=r"ReLU has no Linear or Conv layer"):
        initialize(nn.ReLU(), "he")
