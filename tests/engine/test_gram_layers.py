"""Layer kernel table, route cost model and the Gram kernels on their own."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradconf.engine.layers import (
    LAYER_KERNELS,
    LayerKernel,
    _build_table,
    choose_route,
    kernel_for,
    register_kernel,
)
from gradconf.engine.layers import terms as terms_module
from gradconf.engine.layers.conv import _unfold
from gradconf.engine.layers.linear import linear_terms
from gradconf.engine.layers.routes import RouteCost, index_cost, outer_product_cost
from gradconf.engine.layers.terms import (
    IndexTerm,
    OuterProductTerm,
    SampleTerm,
    combine_terms,
    ghost_gram_index,
    ghost_gram_outer,
    ghost_sq_norms_index,
    ghost_sq_norms_outer,
)


def test_table_rejects_duplicate_class() -> None:
    kernel = LayerKernel(linear_terms)
    with pytest.raises(ValueError, match="Linear is listed twice"):
        _build_table([(nn.Linear, kernel), (nn.Linear, kernel)])


def test_register_kernel_rejects_silent_overwrite() -> None:
    with pytest.raises(ValueError, match=r"Linear already has a Gram kernel.*replace=True"):
        register_kernel(nn.Linear, LayerKernel(linear_terms))
    assert LAYER_KERNELS[nn.Linear].terms is linear_terms


class PlainSubclass(nn.Linear):
    pass


class OverridingSubclass(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2.0


def test_kernel_for_subclasses() -> None:
    assert kernel_for(PlainSubclass(2, 2)) is LAYER_KERNELS[nn.Linear]
    assert kernel_for(OverridingSubclass(2, 2)) is None
    assert kernel_for(nn.PReLU()) is None


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (outer_product_cost(128, 1, 1, 512, 512, diagonal=False), "ghost"),  # MLP layer
        (outer_product_cost(128, 1, 1024, 27, 32, diagonal=False), "materialize"),  # first conv
        (outer_product_cost(32, 1, 128, 768, 768, diagonal=False), "materialize"),  # tokens
        (outer_product_cost(32, 1, 128, 768, 768, diagonal=True), "ghost"),  # norms only
        (index_cost(32, 16, 50_000, 256, diagonal=False), "ghost"),  # large vocabulary
        (None, "materialize"),
    ],
    ids=["mlp", "conv-first", "tokens", "tokens-diagonal", "embedding", "bias"],
)
def test_choose_route(cost: RouteCost | None, expected: str) -> None:
    assert choose_route(cost) == expected


def test_choose_route_avoids_large_materialization() -> None:
    cost = RouteCost(ghost_flops=10, materialize_flops=1, materialize_numel=100)
    assert choose_route(cost) == "materialize"
    assert choose_route(cost, max_materialize_numel=99) == "ghost"
    assert choose_route(cost, override="ghost") == "ghost"


def test_ghost_route_wins_below_threshold_positions() -> None:
    # Ghost wins roughly while T < sqrt(d·p / (d + p)) = 16 for d = p = 512.
    assert choose_route(outer_product_cost(64, 1, 8, 512, 512, diagonal=False)) == "ghost"
    assert choose_route(outer_product_cost(64, 1, 64, 512, 512, diagonal=False)) == "materialize"


@pytest.mark.parametrize(
    ("stride", "padding", "dilation"), [(1, 0, 1), (2, 1, 1), (1, 2, 2), (3, 1, 2)]
)
def test_unfold_matches_torch_unfold(stride: int, padding: int, dilation: int) -> None:
    torch.manual_seed(0)
    inputs = torch.randn(2, 3, 9, 8)
    padded = F.pad(inputs, [padding] * 4)
    expected = F.unfold(inputs, (3, 2), stride=stride, padding=padding, dilation=dilation)
    actual = _unfold(padded, (3, 2), (stride, stride), (dilation, dilation))
    torch.testing.assert_close(actual, expected.transpose(1, 2), rtol=0.0, atol=0.0)


def _outer_term(batch: int, groups: int, positions: int, dtype=torch.float64) -> OuterProductTerm:
    activations = torch.randn(batch, groups, positions, 5, dtype=dtype)
    backprops = torch.randn(batch, groups, positions, 3, dtype=dtype)
    return OuterProductTerm(activations, backprops, torch.Size([groups * 3, 5]))


@pytest.mark.parametrize(("groups", "positions"), [(1, 1), (2, 1), (1, 4), (3, 5)])
def test_ghost_outer_matches_materialized(groups: int, positions: int, monkeypatch) -> None:
    torch.manual_seed(0)
    term = _outer_term(6, groups, positions)
    flat = term.materialize().reshape(6, -1)
    torch.testing.assert_close(ghost_gram_outer(term.activations, term.backprops), flat @ flat.T)
    torch.testing.assert_close(
        ghost_sq_norms_outer(term.activations, term.backprops), flat.pow(2).sum(dim=1)
    )
    # Blocks of one example each take the blocked path of both kernels.
    monkeypatch.setattr(terms_module, "GHOST_BLOCK_NUMEL", 1)
    torch.testing.assert_close(ghost_gram_outer(term.activations, term.backprops), flat @ flat.T)
    torch.testing.assert_close(
        ghost_sq_norms_outer(term.activations, term.backprops), flat.pow(2).sum(dim=1)
    )


@pytest.mark.parametrize("block_numel", [2**24, 1], ids=["one-block", "row-blocks"])
def test_ghost_index_matches_materialized(block_numel: int, monkeypatch) -> None:
    torch.manual_seed(0)
    monkeypatch.setattr(terms_module, "GHOST_BLOCK_NUMEL", block_numel)
    term = IndexTerm(torch.randint(0, 4, (5, 6)), torch.randn(5, 6, 3, dtype=torch.float64), 4)
    flat = term.materialize().reshape(5, -1)
    torch.testing.assert_close(ghost_gram_index(term.indices, term.backprops), flat @ flat.T)
    sq_norms = ghost_sq_norms_index(term.indices, term.backprops)
    torch.testing.assert_close(sq_norms, flat.pow(2).sum(dim=1))


def test_combine_terms_keeps_cross_terms_between_uses() -> None:
    torch.manual_seed(0)
    first, second = _outer_term(4, 1, 2), _outer_term(4, 1, 3)
    summed = first.materialize() + second.materialize()
    expected = summed.reshape(4, -1) @ summed.reshape(4, -1).T
    combined = combine_terms([first, second])
    assert isinstance(combined, OuterProductTerm)
    torch.testing.assert_close(combined.gram("ghost"), expected)
    torch.testing.assert_close(combined.gram("materialize"), expected)
    separate = first.gram("ghost") + second.gram("ghost")
    assert not torch.allclose(separate, expected)  # the cross terms matter


def test_combine_terms_of_different_kinds_sums_grad_samples() -> None:
    torch.manual_seed(0)
    outer = OuterProductTerm(
        torch.randn(3, 1, 2, 5, dtype=torch.float64),
        torch.randn(3, 1, 2, 4, dtype=torch.float64),
        torch.Size([4, 5]),
    )
    index = IndexTerm(torch.randint(0, 4, (3, 2)), torch.randn(3, 2, 5, dtype=torch.float64), 4)
    combined = combine_terms([outer, index])
    assert isinstance(combined, SampleTerm)
    torch.testing.assert_close(combined.grad_sample, outer.materialize() + index.materialize())


@pytest.mark.parametrize("kind", ["sample", "outer", "index"])
def test_probe_equals_batch_gradient_projection(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "sample":
        term = SampleTerm(torch.randn(4, 3, 5, dtype=torch.float64))
    elif kind == "outer":
        term = _outer_term(4, 1, 3)
    else:
        term = IndexTerm(torch.randint(0, 3, (4, 2)), torch.randn(4, 2, 5, dtype=torch.float64), 3)
    left, right = torch.randn(3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    value, scale = term.probe(left, right)
    batch_gradient = term.materialize().sum(dim=0).reshape(3, 5)
    torch.testing.assert_close(value, left @ batch_gradient @ right)
    assert float(scale) >= abs(float(value))
