"""ghost_gram against the float64 per-example loop, per parameter, for every layer family."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from gram_models import RTOL, assert_grams_match, build, cross_entropy_loss
from torch import nn

from gradconf.engine import check_engine, ghost_gram, per_example_gram, reference_gram


@dataclass(frozen=True)
class Case:
    model: str
    batch: int
    positions: int
    reduction: str
    route: str
    # Expected route of one parameter, checked when given: (name, route).
    expect: tuple[str, str] | None = None

    @property
    def id(self) -> str:
        return f"{self.model}-B{self.batch}-T{self.positions}-{self.reduction}-{self.route}"


def _cases() -> list[Case]:
    cases = []
    families = [
        ("linear", 1), ("linear", 3), ("conv2d", 2), ("conv2d", 3), ("conv1d", 3),
        ("conv3d", 2), ("embedding", 1), ("embedding", 5), ("layernorm", 1), ("layernorm", 3),
        ("rmsnorm", 3), ("groupnorm", 3), ("batchnorm", 3), ("reused", 1), ("reused", 3),
        ("tied-linear", 1), ("tied-embedding", 3),
    ]
    for model, positions in families:
        for route in ("ghost", "materialize"):
            cases.append(Case(model, 4, positions, "mean", route))
        cases.append(Case(model, 3, positions, "sum", "auto"))
    cases += [
        Case("linear", 4, 1, "mean", "auto", ("0.weight", "ghost")),
        Case("linear", 1, 1, "mean", "auto"),
        Case("conv2d", 1, 2, "sum", "materialize"),
        Case("embedding", 1, 4, "mean", "ghost"),
        Case("residual", 4, 1, "mean", "auto"),
        Case("residual", 3, 1, "sum", "materialize"),
        Case("inplace-relu", 4, 1, "mean", "auto"),
        Case("inplace-relu", 4, 1, "sum", "materialize"),
        Case("frozen", 4, 1, "mean", "auto"),
        Case("unused", 4, 1, "mean", "auto"),
        Case("dangling", 3, 1, "sum", "auto"),
        Case("fallback", 4, 1, "mean", "auto", ("1.gain", "func-fallback")),
        Case("fallback", 3, 1, "sum", "ghost", ("3.weight", "func-fallback")),
        Case("attention", 3, 3, "mean", "auto", ("attention.out_proj.weight", "func-fallback")),
        Case("root-parameter", 3, 1, "mean", "auto", ("position", "func-fallback")),
        Case("root-parameter", 2, 1, "sum", "materialize", ("mix.weight", "materialize")),
    ]
    return cases


CASES = _cases()


# torch.func has no batching rule for CPU flash attention and warns that it falls back;
# torch warns that an even conv kernel with padding="same" pads a copy of the input.
@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_ghost_matches_loop(case: Case, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    batch = build(case.model, case.batch, case.positions)
    model = batch.model.to(dtype).eval() if case.model != "batchnorm" else batch.model.to(dtype)
    inputs = batch.inputs.to(dtype) if batch.inputs.is_floating_point() else batch.inputs
    loss_fn = cross_entropy_loss(case.reduction)

    actual = ghost_gram(
        model, loss_fn, inputs, batch.targets, loss_reduction=case.reduction, route=case.route
    )
    expected = reference_gram(model, loss_fn, inputs, batch.targets, loss_reduction=case.reduction)

    assert_grams_match(actual, expected, RTOL[dtype])
    assert actual.coverage == expected.coverage
    assert actual.engine == "ghost"
    assert actual.gram.dtype == torch.float64
    assert actual.gram.device.type == "cpu"
    assert set(actual.routes) == set(actual.layer_grams)
    assert set(actual.routes.values()) <= {"ghost", "materialize", "func-fallback"}
    if case.expect is not None:
        name, route = case.expect
        assert actual.routes[name] == route
    if case.route != "auto":
        weights = [name for name, route in actual.routes.items() if route == "func-fallback"]
        forced = {route for name, route in actual.routes.items() if name not in weights}
        assert case.route in forced


def test_coverage_reports_frozen_and_unused() -> None:
    torch.manual_seed(0)
    frozen = build("frozen", 3, 1)
    result = ghost_gram(frozen.model, cross_entropy_loss("mean"), frozen.inputs, frozen.targets)
    assert result.coverage.frozen == ("0.weight",)
    assert "0.weight" not in result.layer_grams
    assert result.coverage.share == pytest.approx((4 + 12 + 3) / (4 + 12 + 3))

    for name in ("unused", "dangling"):
        unused = build(name, 3, 1)
        result = ghost_gram(unused.model, cross_entropy_loss("mean"), unused.inputs, unused.targets)
        assert result.coverage.unused == ("spare.weight", "spare.bias")
        assert result.coverage.included == ("used.weight", "used.bias")
        assert result.coverage.share == pytest.approx(0.5)


def test_mean_loss_scales_gram_by_inverse_square_batch() -> None:
    torch.manual_seed(0)
    batch = build("conv2d", 4, 2)
    mean = ghost_gram(batch.model, cross_entropy_loss("mean"), batch.inputs, batch.targets)
    total = ghost_gram(
        batch.model, cross_entropy_loss("sum"), batch.inputs, batch.targets, loss_reduction="sum"
    )
    torch.testing.assert_close(mean.gram * 16, total.gram, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(mean.example_gram(), total.gram, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(mean.cosines(), total.cosines(), rtol=1e-5, atol=1e-7)


def test_auto_engine_is_ghost() -> None:
    torch.manual_seed(0)
    batch = build("linear", 3, 1)
    result = per_example_gram(batch.model, cross_entropy_loss("mean"), batch.inputs, batch.targets)
    assert result.engine == "ghost"


@pytest.mark.filterwarnings("ignore:There is a performance drop")
@pytest.mark.parametrize("name", ["residual", "conv2d", "embedding", "attention"])
def test_check_engine_passes(name: str) -> None:
    torch.manual_seed(0)
    batch = build(name, 4, 3)
    model = batch.model.eval()
    check = check_engine(model, cross_entropy_loss("mean"), batch.inputs, batch.targets)
    assert check.engine == "ghost"
    assert check.passed, check.relative_errors


def test_conv_route_choice_follows_cost_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16 * 16, 3))
    inputs, targets = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4,))
    result = ghost_gram(model, cross_entropy_loss("mean"), inputs, targets)
    # T = 256 positions against d·p/(d + p) = 27·8/35 ≈ 6: materializing is cheaper.
    assert result.routes["0.weight"] == "materialize"
    assert result.routes["2.weight"] == "ghost"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ghost_matches_loop_on_cuda() -> None:
    torch.manual_seed(0)
    batch = build("conv2d", 4, 3)
    model = batch.model.cuda().eval()
    loss_fn = cross_entropy_loss("mean")
    actual = ghost_gram(model, loss_fn, batch.inputs.cuda(), batch.targets.cuda())
    expected = reference_gram(model.cpu(), loss_fn, batch.inputs, batch.targets)
    assert_grams_match(actual, expected, RTOL[torch.float32])
