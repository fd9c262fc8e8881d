"""Every benchmarked method's Gram against the float64 per-example loop."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradconf.bench.cases import CASES, build_case
from gradconf.bench.methods import METHODS, gram_from_grad_samples, unavailable_reason
from gradconf.bench.reference import blocked_reference_gram, relative_error
from gradconf.engine import reference_gram

# The benchmark's correctness target for fp32 Grams, relative to max|G_ref|.
FP32_RTOL = 1e-5
# Optional peers: the module each needs.
OPTIONAL = {"backpack": "backpack", "opacus": "opacus"}


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 3, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # [B, 3, 2, 2]
        nn.Flatten(),
        nn.Linear(12, 3),
    )


MODELS = {"tiny-mlp": (tiny_mlp, (6,)), "tiny-cnn": (tiny_cnn, (2, 4, 4))}
GRAM_METHODS = [name for name in METHODS if name != "plain"]


def make_batch(model_name: str, batch_size: int = 5):
    build, input_shape = MODELS[model_name]
    torch.manual_seed(0)
    model = build()
    inputs = torch.randn(batch_size, *input_shape)
    targets = torch.randint(0, 3, (batch_size,))
    return model, inputs, targets


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("method", GRAM_METHODS)
def test_method_gram_matches_reference(method, model_name):
    if method in OPTIONAL:
        pytest.importorskip(OPTIONAL[method])
    model, inputs, targets = make_batch(model_name)
    loss_fn = nn.CrossEntropyLoss()
    expected = reference_gram(model, loss_fn, inputs, targets, loss_reduction="mean").gram

    prepared = METHODS[method].prepare(copy.deepcopy(model), loss_fn, inputs, targets)
    first = prepared.run()
    second = prepared.run()  # a repeated call must start from a clean state

    assert first.dtype == torch.float64
    assert first.shape == (5, 5)
    assert relative_error(first, expected) <= FP32_RTOL
    assert relative_error(second, expected) <= FP32_RTOL


def test_gradconf_method_records_engine():
    model, inputs, targets = make_batch("tiny-mlp")
    prepared = METHODS["gradconf"].prepare(model, nn.CrossEntropyLoss(), inputs, targets)
    prepared.run()
    assert prepared.details["engine"]


def test_plain_method_leaves_no_grad():
    model, inputs, targets = make_batch("tiny-mlp")
    prepared = METHODS["plain"].prepare(model, nn.CrossEntropyLoss(), inputs, targets)
    assert prepared.run() is None
    assert all(param.grad is None for param in model.parameters())


def test_unavailable_reason_for_core_methods():
    for name in ("plain", "loop", "vmap", "gradconf"):
        assert unavailable_reason(name) is None


def test_gram_from_grad_samples_rejects_empty():
    with pytest.raises(ValueError, match="no per-example gradients"):
        gram_from_grad_samples([], 1.0)


def test_blocked_reference_matches_direct():
    model, inputs, targets = make_batch("tiny-cnn", batch_size=7)
    loss_fn = nn.CrossEntropyLoss()
    expected = reference_gram(model, loss_fn, inputs, targets, loss_reduction="mean").gram

    # memory_mb=0 forces blocks of one example, so every entry comes from a pair call.
    blocked = blocked_reference_gram(model, loss_fn, inputs, targets, memory_mb=0)

    torch.testing.assert_close(blocked, expected, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("case_name", list(CASES))
def test_case_builds_and_runs_forward(case_name):
    model, inputs, targets = build_case(
        CASES[case_name], seed=0, device=torch.device("cpu"), batch_size=2
    )
    outputs = model(inputs)
    assert outputs.shape == (2, 10)
    assert targets.shape == (2,)


def test_case_inputs_repeat_with_seed():
    case = CASES["cnn-b128"]
    first = build_case(case, seed=3, device=torch.device("cpu"), batch_size=4)
    second = build_case(case, seed=3, device=torch.device("cpu"), batch_size=4)
    torch.testing.assert_close(second[1], first[1])
    torch.testing.assert_close(second[0][0].weight, first[0][0].weight)
