"""Monitor on bad input: clear errors at attach time or at the next measured step."""

from __future__ import annotations

import pytest
import torch
from monitor_helpers import batch, build, loss_fn
from torch import nn

from gradconf.monitor import Monitor


class SequenceHead(nn.Module):
    """A recurrent or attention core followed by a linear head on the last position."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.core(x)[0][:, -1])


UNSUPPORTED = [
    pytest.param(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)),
                 "BatchNorm1d\\) is in train mode", id="batchnorm-train"),
    pytest.param(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, track_running_stats=False).eval()),
                 "track_running_stats=False", id="batchnorm-no-running-stats"),
    pytest.param(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, affine=False), nn.Linear(8, 3)),
                 "1 \\(BatchNorm1d\\) is in train mode", id="batchnorm-without-parameters"),
    pytest.param(nn.Sequential(nn.Embedding(10, 8, scale_grad_by_freq=True), nn.Linear(8, 3)),
                 "scale_grad_by_freq=True", id="embedding-scale-grad-by-freq"),
    pytest.param(SequenceHead(nn.GRU(8, 8, batch_first=True)), "core \\(GRU\\) returns its hidden state",
                 id="gru"),
    pytest.param(SequenceHead(nn.LSTM(8, 8)), "core \\(LSTM\\) has batch_first=False", id="lstm-time-first"),
    pytest.param(SequenceHead(nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=True)),
                 "applies dropout \\(p=0.1\\)", id="attention-dropout"),
]


@pytest.mark.parametrize(("model", "match"), UNSUPPORTED)
def test_unsupported_layer_rejected_at_attach(model, match):
    with pytest.raises(ValueError, match=match):
        Monitor(model, every=1)


def test_all_problems_listed_at_once():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Embedding(3, 3, scale_grad_by_freq=True))
    with pytest.raises(ValueError, match="2 layer\\(s\\)") as raised:
        Monitor(model, every=1)
    assert "1 (BatchNorm1d)" in str(raised.value)
    assert "2 (Embedding)" in str(raised.value)


def test_supported_sequence_layers_attach():
    Monitor(SequenceHead(nn.LSTM(8, 8, batch_first=True)), every=1)
    Monitor(SequenceHead(nn.MultiheadAttention(8, 2, batch_first=True)), every=1)


def test_batchnorm_eval_option_measures_train_mode_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    monitor = Monitor(model, every=1, batchnorm="eval")
    inputs, targets = batch((4,), 3, 6)
    with monitor.step(0):
        loss_fn("mean")(model(inputs), targets).backward()
    assert monitor.latest["finite"]
    assert model[1].training  # mode restored after the measured step


def test_batchnorm_switched_to_train_after_attach():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    model.eval()
    monitor = Monitor(model, every=2)
    model.train()
    with monitor.step(1):  # unmeasured: no check, no cost
        pass
    with pytest.raises(ValueError, match="are in train mode at step 2"):
        monitor.start(2)


def test_attached_twice_rejected():
    model, _, _ = build("mlp")
    first = Monitor(model, every=1)
    with pytest.raises(RuntimeError, match="already attached to this model"):
        Monitor(model, every=5)
    with pytest.raises(RuntimeError, match="a model sharing its parameters"):
        Monitor(model[0], every=5)
    first.detach()
    Monitor(model, every=5)


def test_model_changed_after_attach():
    torch.manual_seed(1)
    model, shape, classes = build("mlp")
    monitor = Monitor(model, every=1)
    model.append(nn.Linear(4, 4))
    inputs, targets = batch(shape, classes, 4)
    with pytest.raises(ValueError, match=r"new parameters \['5.weight', '5.bias'\]"):
        with monitor.step(0):
            loss_fn("mean")(model(inputs), targets).backward()
    assert not any(module._forward_hooks for module in model.modules())

    monitor.inspect()
    with monitor.step(1):
        loss_fn("mean")(model(inputs), targets).backward()
    assert "min_cosine/5" in monitor.latest


def test_unfrozen_layer_checked_at_next_measured_step():
    model = SequenceHead(nn.GRU(8, 8, batch_first=True))
    model.core.requires_grad_(False)
    monitor = Monitor(model, every=1)  # a frozen GRU is not measured
    model.core.requires_grad_(True)
    with pytest.raises(ValueError, match="GRU\\) returns its hidden state"):
        monitor.start(0)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        pytest.param({}, ValueError, "exactly one of every=k", id="no-schedule"),
        pytest.param({"every": 2, "schedule": bool}, ValueError, "exactly one of every=k", id="both"),
        pytest.param({"every": 0}, ValueError, "every=0 is invalid", id="every-zero"),
        pytest.param({"schedule": 3}, TypeError, "schedule must be a callable", id="schedule-not-callable"),
        pytest.param({"every": 1, "loss_reduction": "none"}, ValueError, "loss_reduction='none'",
                     id="loss-reduction"),
        pytest.param({"every": 1, "batchnorm": "train"}, ValueError, "batchnorm='train'", id="batchnorm"),
        pytest.param({"every": 1, "loss_scale": 0.0}, ValueError, "loss_scale=0.0 is invalid",
                     id="loss-scale"),
    ],
)
def test_invalid_options_rejected(options, error, match):
    model, _, _ = build("mlp")
    with pytest.raises(error, match=match):
        Monitor(model, **options)


def test_model_without_parameters_rejected():
    with pytest.raises(ValueError, match="has no parameters"):
        Monitor(nn.ReLU(), every=1)


def test_start_while_measuring_rejected():
    model, _, _ = build("mlp")
    monitor = Monitor(model, every=1)
    monitor.start(0)
    with pytest.raises(RuntimeError, match="step 0 is still being measured"):
        monitor.start(1)
    monitor.abort()
    assert not any(module._forward_hooks for module in model.modules())


def test_exception_in_step_removes_hooks():
    model, _, _ = build("mlp")
    monitor = Monitor(model, every=1)
    with pytest.raises(KeyError):
        with monitor.step(0):
            raise KeyError("user error")
    assert not any(module._forward_hooks for module in model.modules())
    assert monitor.history().empty


def test_detached_monitor_rejects_steps():
    model, _, _ = build("mlp")
    with Monitor(model, every=1) as monitor:
        pass
    with pytest.raises(RuntimeError, match="was detached"):
        monitor.start(0)


def test_loss_tensor_with_several_entries_rejected():
    model, _, _ = build("mlp")
    monitor = Monitor(model, every=2)
    with monitor.step(1):
        pass
    with pytest.raises(ValueError, match="loss tensor of shape \\(3,\\)"):
        monitor.record_loss(torch.ones(3))


def test_load_state_from_other_loss_reduction_rejected():
    model, _, _ = build("mlp")
    state = Monitor(model, every=1, loss_reduction="sum").state_dict()
    other, _, _ = build("mlp")
    with pytest.raises(ValueError, match="loss_reduction='sum'"):
        Monitor(other, every=1).load_state_dict(state)
    state["version"] = 99
    with pytest.raises(ValueError, match="version 99"):
        Monitor(build("mlp")[0], every=1, loss_reduction="sum").load_state_dict(state)


def test_step_without_backward_raises_engine_error():
    model, shape, classes = build("mlp")
    monitor = Monitor(model, every=1)
    inputs, _ = batch(shape, classes, 4)
    with pytest.raises(RuntimeError, match="no backward pass ran"):
        with monitor.step(0):
            model(inputs)
    assert monitor.latest is None
