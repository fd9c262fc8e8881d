"""Monitor inside a plain training loop: gradients untouched, statistics right, record resumable."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from monitor_helpers import (
    ATOL_COSINE_FLOAT32,
    RTOL_FLOAT32,
    RTOL_FLOAT64,
    assert_rows_equal,
    batch,
    build,
    expected_statistics,
    layer_min_cosines,
    loss_fn,
)

from gradconf.engine import cheap_stats_from_gram, ghost_gram, reference_gram
from gradconf.monitor import Monitor, read_record

STAT_FIELDS = [
    "eta", "min_inner", "mean_inner", "min_cosine", "mean_cosine", "median_cosine",
    "q05_cosine", "q95_cosine", "negative_fraction", "mean_sq_norm", "min_sq_norm",
    "max_sq_norm",
]


def _train(model, monitor, batches, *, reduction="mean", lr=0.1):
    """Run SGD over ``batches``; return each step's gradients (cloned) after backward."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    grads = []
    for step, (inputs, targets) in enumerate(batches):
        if monitor is None:
            loss = loss_fn(reduction)(model(inputs), targets)
            loss.backward()
        else:
            with monitor.step(step):
                loss = loss_fn(reduction)(model(inputs), targets)
                loss.backward()
        grads.append([param.grad.clone() for param in model.parameters()])
        optimizer.step()
        optimizer.zero_grad()
        if monitor is not None:
            monitor.record_loss(loss)
    return grads


@pytest.mark.parametrize("name", ["mlp", "cnn", "fallback", "batchnorm-eval"])
def test_gradients_bitwise_unchanged(name):
    torch.manual_seed(0)
    model, shape, classes = build(name)
    twin = copy.deepcopy(model)
    batches = [batch(shape, classes, 8) for _ in range(4)]

    monitor = Monitor(model, every=1)
    monitored = _train(model, monitor, batches)
    plain = _train(twin, None, batches)

    assert monitor.history()["measured"].all()
    for step, (ours, theirs) in enumerate(zip(monitored, plain, strict=True)):
        for index, (grad, expected) in enumerate(zip(ours, theirs, strict=True)):
            assert torch.equal(grad, expected), f"step {step}, parameter {index}"
    for param, expected in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(param, expected)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", ["mlp", "cnn", "fallback"])
def test_statistics_match_float64_loop(name, reduction):
    torch.manual_seed(1)
    model, shape, classes = build(name)
    model = model.double()
    inputs, targets = batch(shape, classes, 6, torch.float64)
    expected_result = reference_gram(model, loss_fn(reduction), inputs, targets, loss_reduction=reduction)
    expected, _ = expected_statistics([expected_result])
    cheap = cheap_stats_from_gram(expected_result)

    monitor = Monitor(model, every=1, loss_reduction=reduction)
    with monitor.step(0):
        loss_fn(reduction)(model(inputs), targets).backward()
    row = monitor.latest

    assert row["num_pairs"] == 15
    assert row["batch_size"] == 6
    for field in STAT_FIELDS:
        assert row[field] == pytest.approx(getattr(expected, field), rel=RTOL_FLOAT64, abs=1e-12), field
    assert row["gradient_diversity"] == pytest.approx(cheap.gradient_diversity, rel=RTOL_FLOAT64)
    assert row["trace_covariance"] == pytest.approx(cheap.trace_covariance_estimate, rel=RTOL_FLOAT64)
    assert row["noise_scale"] == pytest.approx(cheap.simple_noise_scale, rel=1e-7)
    for layer, minimum in layer_min_cosines(expected_result).items():
        assert row[f"min_cosine/{layer}"] == pytest.approx(minimum, rel=RTOL_FLOAT64, abs=1e-12), layer


def test_statistics_match_ghost_gram_float32():
    torch.manual_seed(2)
    model, shape, classes = build("cnn")
    inputs, targets = batch(shape, classes, 16)
    result = ghost_gram(copy.deepcopy(model), loss_fn("mean"), inputs, targets, batchnorm="none")
    expected, _ = expected_statistics([result])

    monitor = Monitor(model, every=1)
    with monitor.step(0):
        loss_fn("mean")(model(inputs), targets).backward()
    row = monitor.latest

    for field in STAT_FIELDS:
        if "cosine" in field or field == "negative_fraction":
            assert row[field] == pytest.approx(getattr(expected, field), abs=ATOL_COSINE_FLOAT32), field
        else:
            assert row[field] == pytest.approx(getattr(expected, field), rel=RTOL_FLOAT32), field


def test_accumulation_pools_micro_batch_pairs():
    torch.manual_seed(3)
    model, shape, classes = build("mlp")
    model = model.double()
    twin = copy.deepcopy(model)
    micro_batches = [batch(shape, classes, size, torch.float64) for size in (4, 4, 4)]
    expected_results = [
        reference_gram(model, loss_fn("mean"), inputs, targets) for inputs, targets in micro_batches
    ]
    expected, _ = expected_statistics(expected_results)

    # Each micro-batch loss is divided by their number, so loss_scale is 1/3.
    monitor = Monitor(model, every=1, loss_scale=1 / 3)
    with monitor.step(0):
        for inputs, targets in micro_batches:
            (loss_fn("mean")(model(inputs), targets) / 3).backward()
    for inputs, targets in micro_batches:
        (loss_fn("mean")(twin(inputs), targets) / 3).backward()
    row = monitor.latest

    assert row["num_micro_batches"] == 3
    assert row["batch_size"] == 12
    assert row["num_pairs"] == 3 * 6
    for field in STAT_FIELDS:
        assert row[field] == pytest.approx(getattr(expected, field), rel=RTOL_FLOAT64, abs=1e-12), field
    for param, reference in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(param.grad, reference.grad)


def test_off_step_registers_no_hooks():
    torch.manual_seed(4)
    model, shape, classes = build("cnn")
    monitor = Monitor(model, every=2)
    inputs, targets = batch(shape, classes, 4)

    def hook_count() -> int:
        count = sum(
            len(module._forward_hooks) + len(module._forward_pre_hooks)
            + len(module._backward_hooks) + len(module._backward_pre_hooks)
            for module in model.modules()
        )
        return count + sum(len(param._backward_hooks or {}) for param in model.parameters())

    with monitor.step(0) as measured:
        assert measured.measuring
        assert hook_count() > 0
        loss_fn("mean")(model(inputs), targets).backward()
    assert hook_count() == 0
    with monitor.step(1) as unmeasured:
        assert not unmeasured.measuring
        assert hook_count() == 0
        loss_fn("mean")(model(inputs), targets).backward()
    assert hook_count() == 0
    assert monitor.history()["measured"].tolist() == [True]


def test_schedule_and_default_step_numbers():
    torch.manual_seed(5)
    model, shape, classes = build("mlp")
    monitor = Monitor(model, schedule=lambda step: step in (1, 4))
    for _ in range(6):
        inputs, targets = batch(shape, classes, 4)
        with monitor.step() as context:
            loss = loss_fn("mean")(model(inputs), targets)
            loss.backward()
            context.record_loss(loss)
        model.zero_grad()
    history = monitor.history()
    assert history["step"].tolist() == [0, 1, 2, 3, 4, 5]
    assert history.loc[history["measured"], "step"].tolist() == [1, 4]
    assert np.isfinite(history["loss"]).all()


def test_resume_continues_record(tmp_path):
    torch.manual_seed(6)
    model, shape, classes = build("mlp")
    initial = copy.deepcopy(model.state_dict())
    batches = [batch(shape, classes, 6) for _ in range(8)]
    options = {"every": 3, "keep_cosines": True}

    uninterrupted = Monitor(model, **options)
    _run_steps(model, uninterrupted, batches, range(8), torch.optim.SGD(model.parameters(), lr=0.1))
    expected = uninterrupted.history()
    uninterrupted.detach()

    first_model, _, _ = build("mlp")
    first_model.load_state_dict(initial)
    first_optimizer = torch.optim.SGD(first_model.parameters(), lr=0.1)
    first = Monitor(first_model, **options)
    _run_steps(first_model, first, batches, range(5), first_optimizer)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": first_model.state_dict(), "monitor": first.state_dict()}, checkpoint)

    state = torch.load(checkpoint, weights_only=True)
    resumed_model, _, _ = build("mlp")
    resumed_model.load_state_dict(state["model"])
    resumed = Monitor(resumed_model, **options)
    resumed.load_state_dict(state["monitor"])
    _run_steps(resumed_model, resumed, batches, range(5, 8), torch.optim.SGD(resumed_model.parameters(), lr=0.1))

    actual = resumed.history()
    cosines = actual.pop("cosines"), expected.pop("cosines")
    assert_rows_equal(actual, expected)
    for ours, theirs in zip(*cosines, strict=True):
        assert (ours is None and theirs is None) or np.array_equal(ours, theirs)


def _run_steps(model, monitor, batches, steps, optimizer):
    for step in steps:
        inputs, targets = batches[step]
        with monitor.step(step):
            loss = loss_fn("mean")(model(inputs), targets)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        monitor.record_loss(loss)


def test_save_writes_parquet_record(tmp_path):
    torch.manual_seed(7)
    model, shape, classes = build("cnn")
    monitor = Monitor(model, every=2)
    _run_steps(model, monitor, [batch(shape, classes, 5) for _ in range(4)], range(4),
               torch.optim.SGD(model.parameters(), lr=0.1))
    path = tmp_path / "record" / "confusion.parquet"
    monitor.save(path)

    record = read_record(path)
    assert_rows_equal(record, monitor.history())
    assert [column for column in record if column.startswith("min_cosine/")] == [
        "min_cosine/0", "min_cosine/2", "min_cosine/5"
    ]
    assert record["measure_seconds"].notna().sum() == 2
    assert not list(path.parent.glob(".*.tmp"))


def test_batch_of_one_has_undefined_pairs(caplog):
    torch.manual_seed(8)
    model, shape, classes = build("mlp")
    monitor = Monitor(model, every=1)
    inputs, targets = batch(shape, classes, 1)
    with monitor.step(0):
        loss_fn("mean")(model(inputs), targets).backward()
    row = monitor.latest

    assert row["finite"]
    assert row["num_pairs"] == 0
    assert math.isnan(row["eta"])
    assert math.isnan(row["min_cosine"])
    assert row["mean_sq_norm"] > 0
    assert row["gradient_diversity"] == 1.0
    assert "without pairs" in caplog.text


def test_nonfinite_loss_recorded_as_nan(caplog):
    torch.manual_seed(9)
    model, shape, classes = build("mlp")
    monitor = Monitor(model, every=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    poisoned = batch(shape, classes, 4)
    poisoned[0][0, 0] = float("nan")
    _run_steps(model, monitor, [poisoned], range(1), optimizer)
    row = monitor.latest

    assert not row["finite"]
    assert math.isnan(row["loss"])
    assert math.isnan(row["eta"])
    assert math.isnan(row["mean_sq_norm"])
    assert "NaN or infinite" in caplog.text


def test_nonfinite_loss_after_finite_gradients():
    torch.manual_seed(10)
    model, shape, classes = build("mlp")
    monitor = Monitor(model, every=1)
    inputs, targets = batch(shape, classes, 4)
    with monitor.step(0):
        loss_fn("mean")(model(inputs), targets).backward()
    monitor.record_loss(float("inf"))

    row = monitor.history().iloc[0]
    assert not row["finite"]
    assert math.isnan(row["min_cosine"])
    assert math.isnan(row["min_cosine/0"])


def test_grad_scaler_loss_scale_gives_unscaled_statistics():
    torch.manual_seed(11)
    model, shape, classes = build("mlp")
    twin = copy.deepcopy(model)
    inputs, targets = batch(shape, classes, 8)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    scaled = Monitor(model, every=1, loss_scale=scaler.get_scale)
    with scaled.step(0):
        scaler.scale(loss_fn("mean")(model(inputs), targets)).backward()
    plain = Monitor(twin, every=1)
    with plain.step(0):
        loss_fn("mean")(twin(inputs), targets).backward()

    for field in STAT_FIELDS:
        assert scaled.latest[field] == pytest.approx(plain.latest[field], rel=1e-5, abs=1e-7), field


@pytest.mark.parametrize("size", [2, 3, 7])
def test_statistics_small_batches(size):
    torch.manual_seed(12)
    model, shape, classes = build("mlp")
    model = model.double()
    inputs, targets = batch(shape, classes, size, torch.float64)
    expected, _ = expected_statistics([reference_gram(model, loss_fn("mean"), inputs, targets)])

    monitor = Monitor(model, every=1)
    with monitor.step(0):
        loss_fn("mean")(model(inputs), targets).backward()
    row = monitor.latest

    assert row["num_pairs"] == size * (size - 1) // 2
    for field in STAT_FIELDS:
        assert row[field] == pytest.approx(getattr(expected, field), rel=RTOL_FLOAT64, abs=1e-12), field
