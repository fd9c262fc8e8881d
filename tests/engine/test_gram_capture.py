"""GramCapture in a training loop: .grad untouched, hooks removed, accumulation, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from gram_models import RTOL_FLOAT32, Gain, assert_grams_match, build, cross_entropy_loss
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from gradconf.engine import GramCapture, ghost_gram, reference_gram


def _hook_counts(model: nn.Module) -> list[int]:
    counts = []
    for module in model.modules():
        counts += [len(module._forward_hooks), len(module._forward_pre_hooks)]
        counts += [len(module._backward_hooks)]
    for param in model.parameters():
        counts.append(len(param._backward_hooks or {}))
    return counts


def _snapshot(model: nn.Module) -> dict:
    return {
        "modes": [module.training for module in model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "buffers": [buffer.clone() for buffer in model.buffers()],
        "hooks": _hook_counts(model),
    }


def _assert_same_state(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["grad_ids"] == before["grad_ids"]
    for grad, saved in zip(after["grads"], before["grads"], strict=True):
        assert (grad is None) == (saved is None)
        if grad is not None:
            assert torch.equal(grad, saved)
    for buffer, saved in zip(after["buffers"], before["buffers"], strict=True):
        assert torch.equal(buffer, saved)
    assert after["hooks"] == before["hooks"]


@pytest.mark.parametrize("name", ["residual", "conv2d", "embedding", "fallback"])
def test_capture_leaves_grad_bit_identical(name: str) -> None:
    torch.manual_seed(0)
    batch = build(name, 4, 2)
    plain, captured = batch.model, copy.deepcopy(batch.model)
    loss_fn = cross_entropy_loss("mean")
    for model in (plain, captured):
        model.eval()
        for param in model.parameters():
            param.grad = torch.ones_like(param)  # backward adds onto existing gradients

    loss_fn(plain(batch.inputs), batch.targets).backward()
    with GramCapture(captured) as capture:
        loss_fn(captured(batch.inputs), batch.targets).backward()

    for expected, actual in zip(plain.parameters(), captured.parameters(), strict=True):
        assert torch.equal(actual.grad, expected.grad)
    assert _hook_counts(captured) == _hook_counts(plain)
    # The training-loop path agrees with ghost_gram, which skips parameter gradients.
    assert_grams_match(
        capture.result(),
        ghost_gram(captured, loss_fn, batch.inputs, batch.targets),
        RTOL_FLOAT32,
    )


def test_ghost_gram_leaves_model_as_found() -> None:
    torch.manual_seed(0)
    batch = build("batchnorm", 3, 2)
    model = batch.model.train()
    model[0].weight.grad = torch.randn_like(model[0].weight)
    before = _snapshot(model)
    ghost_gram(model, cross_entropy_loss("mean"), batch.inputs, batch.targets)
    _assert_same_state(model, before)


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom in forward")


def test_hooks_removed_after_forward_raises() -> None:
    model = nn.Sequential(nn.Linear(3, 3), Gain(3), Exploding())
    model[0].weight.grad = torch.zeros_like(model[0].weight)
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom in forward"):
        ghost_gram(model, F.cross_entropy, torch.randn(2, 3), torch.tensor([0, 1]))
    _assert_same_state(model, before)
    with pytest.raises(RuntimeError, match="boom in forward"):
        with GramCapture(model):
            model(torch.randn(2, 3))
    assert _hook_counts(model) == before["hooks"]


def test_gradient_accumulation_gives_one_result_per_micro_batch() -> None:
    torch.manual_seed(0)
    model = build("residual", 1, 1).model
    loss_fn = cross_entropy_loss("mean")
    micro_batches = [(torch.randn(3, 5), torch.randint(0, 3, (3,))) for _ in range(2)]
    micro_batches.append((torch.randn(2, 5), torch.randint(0, 3, (2,))))

    with GramCapture(model) as capture:
        for inputs, targets in micro_batches:
            loss_fn(model(inputs), targets).backward()
    results = capture.results()

    assert [result.num_gradients for result in results] == [3, 3, 2]
    for result, (inputs, targets) in zip(results, micro_batches, strict=True):
        expected = reference_gram(model, loss_fn, inputs, targets)
        assert_grams_match(result, expected, RTOL_FLOAT32)
    with pytest.raises(RuntimeError, match=r"3 backward passes.*results\(\)"):
        capture.result()


def test_siamese_forward_sums_both_calls() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    left, right = torch.randn(3, 4), torch.randn(3, 4)
    targets = torch.randint(0, 2, (3,))

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    class Siamese(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model

        def forward(self, pair: torch.Tensor) -> torch.Tensor:
            return self.body(pair[:, 0]) + self.body(pair[:, 1])

    pairs = torch.stack([left, right], dim=1)  # (B, 2, 4)
    actual = ghost_gram(Siamese(), loss_fn, pairs, targets)
    expected = reference_gram(Siamese(), loss_fn, pairs, targets)
    assert_grams_match(actual, expected, RTOL_FLOAT32)


def test_capture_without_backward_raises() -> None:
    model = nn.Linear(3, 2)
    with GramCapture(model) as capture:
        model(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match="no backward pass ran"):
        capture.result()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_reduction": "avg"}, "loss_reduction='avg'"),
        ({"route": "fast"}, "route='fast'.*'ghost'"),
        ({"batchnorm": "train"}, "batchnorm='train'.*'eval'"),
        ({"quantity": "cosine"}, "quantity='cosine'"),
    ],
    ids=["loss-reduction", "route", "batchnorm", "quantity"],
)
def test_invalid_arguments_rejected_early(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GramCapture(nn.Linear(3, 2), **kwargs)


def test_batchnorm_train_mode_rejected() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    inputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"batchnorm='eval'.*minibatch_gram"):
        ghost_gram(model, F.cross_entropy, inputs, targets, batchnorm="none")
    with GramCapture(model) as capture:
        model[1].train()  # switched back inside the capture
        F.cross_entropy(model(inputs), targets).backward()
    with pytest.raises(ValueError, match=r"train mode.*batchnorm='eval'.*minibatch_gram"):
        capture.result()
    assert model[1].training


def test_batchnorm_without_running_stats_rejected() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        ghost_gram(model, lambda o, t: o.pow(2).mean(), torch.randn(4, 3), torch.zeros(4))


class FunctionalReuse(nn.Module):
    """Uses its layer's weight a second time through F.linear, outside the layer's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.tanh(self.layer(x)), self.layer.weight)


@pytest.mark.parametrize("quantity", ["gram", "sq_norms"])
def test_use_outside_module_forward_detected(quantity: str) -> None:
    torch.manual_seed(0)
    model = FunctionalReuse()
    with GramCapture(model, quantity=quantity) as capture:
        F.cross_entropy(model(torch.randn(4, 3)), torch.tensor([0, 1, 2, 0])).backward()
    with pytest.raises(RuntimeError, match=r"\['layer.weight'\] do not sum to the batch gradient"):
        capture.captured_batches()


def test_use_outside_module_forward_detected_in_graph() -> None:
    torch.manual_seed(0)
    inputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with pytest.raises(RuntimeError, match=r"\['layer.weight'\] receive gradients through"):
        ghost_gram(FunctionalReuse(), F.cross_entropy, inputs, targets)


def test_parameter_used_only_outside_its_module_detected() -> None:
    class OnlyFunctional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, self.layer.weight, self.layer.bias)

    with pytest.raises(RuntimeError, match=r"\['layer.weight', 'layer.bias'\] receive gradients"):
        ghost_gram(OnlyFunctional(), F.cross_entropy, torch.randn(4, 3), torch.tensor([0, 1, 2, 0]))


class ExpInput(nn.Module):
    """A kernel-less module whose autograd graph keeps exp(x), not x itself."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.exp() @ self.weight


def test_input_modified_in_place_detected() -> None:
    module = ExpInput()
    inputs = torch.randn(2, 3)
    with GramCapture(module) as capture:
        hidden = inputs * 1.0
        outputs = module(hidden)
        hidden.mul_(2.0)  # changes what a re-run of the module would see
        outputs.sum().backward()
    with pytest.raises(RuntimeError, match="modified in place"):
        capture.result()


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": x * self.weight}


def test_unsupported_output_structure_rejected() -> None:
    model = DictOutput()
    with GramCapture(model) as capture:
        model(torch.randn(2, 3))["out"].sum().backward()
    with pytest.raises(TypeError, match="returned dict.*engine='loop'"):
        capture.result()


class NoisyGain(Gain):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(super().forward(x), 0.5, training=True)


def test_fallback_with_random_draws_raises() -> None:
    model = nn.Sequential(NoisyGain(3), nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match=r"torch.func fallback failed for NoisyGain.*eval mode"):
        ghost_gram(model, F.cross_entropy, torch.randn(2, 3), torch.tensor([0, 1]))


class SharedProjection(nn.Module):
    """Applies a layer to a batch-independent tensor: its gradient has no per-example split."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(4, 3))
        self.project = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.project(self.table).T


def test_non_batch_first_module_input_rejected() -> None:
    with pytest.raises(ValueError, match=r"'project' received input of shape \(4, 3\).*2 examples"):
        ghost_gram(SharedProjection(), F.cross_entropy, torch.randn(2, 3), torch.tensor([0, 1]))


def test_sq_norms_quantity_matches_gram_diagonal() -> None:
    torch.manual_seed(0)
    batch = build("conv2d", 3, 2)
    model, loss_fn = batch.model.eval(), cross_entropy_loss("mean")
    for route in ("ghost", "materialize"):
        with GramCapture(model, quantity="sq_norms", route=route) as capture:
            loss_fn(model(batch.inputs), batch.targets).backward()
        (captured,) = capture.captured_batches()
        gram = ghost_gram(model, loss_fn, batch.inputs, batch.targets, route=route)
        for name, sq_norms in captured.values.items():
            expected = torch.diagonal(gram.layer_grams[name])
            torch.testing.assert_close(sq_norms, expected, rtol=1e-5, atol=0.0)
        with pytest.raises(ValueError, match="quantity='sq_norms'"):
            capture.result()


class Checkpointed(nn.Module):
    def __init__(self, use_reentrant: bool) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)
        self.use_reentrant = use_reentrant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = checkpoint(
            lambda z: torch.tanh(self.body(z)), x, use_reentrant=self.use_reentrant
        )
        return self.head(hidden)


def test_activation_checkpointing_recomputation_ignored() -> None:
    torch.manual_seed(0)
    model = Checkpointed(use_reentrant=False)
    inputs, targets = torch.randn(3, 4), torch.tensor([0, 1, 2])
    actual = ghost_gram(model, F.cross_entropy, inputs, targets)
    expected = reference_gram(model, F.cross_entropy, inputs, targets)
    assert_grams_match(actual, expected, RTOL_FLOAT32)


def test_reentrant_checkpointing_rejected() -> None:
    torch.manual_seed(0)
    model = Checkpointed(use_reentrant=True)
    inputs = torch.randn(3, 4).requires_grad_()  # reentrant checkpointing needs it
    with GramCapture(model) as capture:
        F.cross_entropy(model(inputs), torch.tensor([0, 1, 2])).backward()
    # The checkpointed forward ran without gradients, so no backprops were captured.
    with pytest.raises(RuntimeError, match=r"\['body.weight', 'body.bias'\] receive gradients"):
        capture.result()


@pytest.mark.parametrize("name", ["residual", "conv2d", "tied-embedding", "fallback"])
def test_backward_measures_during_backward_pass(name: str, monkeypatch) -> None:
    # Measuring inside the backward pass frees each layer's backprops early.
    torch.manual_seed(0)
    batch = build(name, 3, 2)
    model, loss_fn = batch.model.eval(), cross_entropy_loss("mean")
    inside = []
    measure = GramCapture._measure_parameter

    def recording(self, param, grad):
        inside.append(torch._C._current_graph_task_id() != -1)
        measure(self, param, grad)

    monkeypatch.setattr(GramCapture, "_measure_parameter", recording)
    with GramCapture(model) as capture:
        capture.backward(loss_fn(model(batch.inputs), batch.targets))
    assert len(inside) == len(capture.result().layer_grams)
    assert all(inside)


def test_backward_needs_gram_quantity() -> None:
    model = nn.Linear(3, 2)
    with GramCapture(model, quantity="sq_norms") as capture:
        with pytest.raises(ValueError, match=r"needs quantity='gram'.*loss.backward\(\)"):
            capture.backward(model(torch.randn(2, 3)).sum())
    with GramCapture(model) as capture:
        pass
    with pytest.raises(RuntimeError, match="inside the `with` block"):
        capture.backward(model(torch.randn(2, 3)).sum())
