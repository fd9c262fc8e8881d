"""Small models and batches for the Gram engine tests, and the comparison helper.

``build(name, B, T)`` draws from the global random state, so callers seed it first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

# Relative tolerance against max |G_ref| per parameter, for models in each dtype.
RTOL_FLOAT32 = 1e-5
RTOL_FLOAT64 = 1e-10
RTOL = {torch.float32: RTOL_FLOAT32, torch.float64: RTOL_FLOAT64}


def cross_entropy_loss(reduction: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy over [B, C] or [B, T, C] outputs, reduced over the batch as given."""

    def loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Positions are summed per example, so per-example losses do not depend on B.
        per_position = F.cross_entropy(
            outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1), reduction="none"
        ).view(outputs.shape[0], -1)
        per_example = per_position.sum(dim=1)
        return per_example.mean() if reduction == "mean" else per_example.sum()

    return loss


class Residual(nn.Module):
    """h + relu(W h): an MLP block with an identity skip connection."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + torch.relu(self.linear(h))


class ReusedLinear(nn.Module):
    """One nn.Linear called twice in the forward: lin(tanh(lin(x)))."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lin(torch.tanh(self.lin(x))))


class TiedLinear(nn.Module):
    """Two nn.Linear modules sharing one weight (and each its own bias)."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.first = nn.Linear(width, width)
        self.second = nn.Linear(width, width)
        self.second.weight = self.first.weight
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.second(torch.tanh(self.first(x))))


class TiedEmbedding(nn.Module):
    """A language-model-like net whose output layer reuses the embedding matrix."""

    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.decode = nn.Linear(width, vocab, bias=False)
        self.decode.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.tanh(self.mix(self.embed(tokens))))


class Gain(nn.Module):
    """A module without a Gram kernel: y = x ⊙ gain + shift (the torch.func fallback)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.randn(width))
        self.shift = nn.Parameter(torch.randn(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain + self.shift


class PairOutput(nn.Module):
    """A kernel-less module with a tuple output, of which only the first reaches the loss."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, width) / width**0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        product = x @ self.weight.T
        return torch.tanh(product), product.sum(dim=-1)


class First(nn.Module):
    """Keep the first entry of a tuple output."""

    def forward(self, pair: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return pair[0]


class WithUnused(nn.Module):
    """An MLP holding one layer that its forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(5, 3)
        self.spare = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


class Dangling(WithUnused):
    """Calls its spare layer too, but its output never reaches the loss."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.spare(x)
        return self.used(x)


class Attention(nn.Module):
    """Self-attention through nn.MultiheadAttention, whose out_proj is used functionally."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, 2, batch_first=True)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed, _ = self.attention(x, x, x, need_weights=False)
        return self.head(mixed)


class RootParameter(nn.Module):
    """A model owning a parameter itself (like a learned position embedding), so the model
    as a whole goes through the fallback while its layers keep their kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(3, 4))
        self.mix = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mix(x + self.position)))


@dataclass(frozen=True)
class Batch:
    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor


def _classes(batch: int, positions: int | None, classes: int) -> torch.Tensor:
    shape = (batch,) if positions is None else (batch, positions)
    return torch.randint(0, classes, shape)


def build(name: str, batch: int, positions: int) -> Batch:
    """Build model ``name`` and a batch; ``positions`` is T where the model has positions."""
    t = positions
    if name == "linear":
        model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
        shape = (batch, 5) if t == 1 else (batch, t, 5)
        return Batch(model, torch.randn(shape), _classes(batch, None if t == 1 else t, 3))
    if name == "conv2d":
        # stride 2, padding 1, then dilation 2, groups 2, "same" reflect padding, then T = 1
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Tanh(),
            nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2, padding_mode="reflect"),
            nn.Tanh(), nn.Conv2d(6, 5, 2 * t), nn.Flatten(), nn.Linear(5, 3),
        )
        return Batch(model, torch.randn(batch, 3, 4 * t, 4 * t), _classes(batch, None, 3))
    if name == "conv1d":
        model = nn.Sequential(
            nn.Conv1d(2, 4, 3, stride=2, padding=2, dilation=2), nn.Tanh(),
            # an even kernel with "same" padding pads one more at the end than at the start
            nn.Conv1d(4, 4, 2, groups=4, bias=False, padding="same"),
            nn.Flatten(),
            nn.LazyLinear(3),
        )
        model(torch.randn(1, 2, 2 * t + 2))  # materialize the lazy layer
        return Batch(model, torch.randn(batch, 2, 2 * t + 2), _classes(batch, None, 3))
    if name == "conv3d":
        model = nn.Sequential(
            nn.Conv3d(2, 3, 2, padding=1), nn.Tanh(), nn.Flatten(), nn.LazyLinear(3)
        )
        model(torch.randn(1, 2, t, 2, 2))
        return Batch(model, torch.randn(batch, 2, t, 2, 2), _classes(batch, None, 3))
    if name == "embedding":
        model = nn.Sequential(nn.Embedding(7, 4, padding_idx=0), nn.Tanh(), nn.Linear(4, 3))
        tokens = torch.randint(0, 7, (batch, t))
        tokens[0, 0] = 0  # one position at padding_idx, which gets no gradient
        return Batch(model, tokens, _classes(batch, t, 3))
    if name in ("layernorm", "rmsnorm"):
        norm = nn.LayerNorm(4) if name == "layernorm" else nn.RMSNorm(4)
        model = nn.Sequential(nn.Linear(5, 4), norm, nn.Tanh(), nn.Linear(4, 3))
        shape = (batch, 5) if t == 1 else (batch, t, 5)
        return Batch(model, torch.randn(shape), _classes(batch, None if t == 1 else t, 3))
    if name == "groupnorm":
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.GroupNorm(2, 4),
            nn.Tanh(),
            nn.Flatten(),
            nn.LazyLinear(3),
        )
        model(torch.randn(1, 2, t, t))
        return Batch(model, torch.randn(batch, 2, t, t), _classes(batch, None, 3))
    if name == "batchnorm":
        model = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(),
            nn.LazyLinear(6), nn.BatchNorm1d(6), nn.Linear(6, 3),
        )
        model(torch.randn(4, 2, t, t))  # materialize; train mode moves the running statistics
        return Batch(model, torch.randn(batch, 2, t, t), _classes(batch, None, 3))
    if name == "residual":
        model = nn.Sequential(nn.Linear(5, 6), Residual(6), Residual(6), nn.Linear(6, 3))
        return Batch(model, torch.randn(batch, 5), _classes(batch, None, 3))
    if name == "inplace-relu":
        model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(inplace=True), nn.Linear(6, 3))
        return Batch(model, torch.randn(batch, 5), _classes(batch, None, 3))
    if name == "reused":
        shape = (batch, 4) if t == 1 else (batch, t, 4)
        targets = _classes(batch, None if t == 1 else t, 3)
        return Batch(ReusedLinear(4, 3), torch.randn(shape), targets)
    if name == "tied-linear":
        return Batch(TiedLinear(4, 3), torch.randn(batch, 4), _classes(batch, None, 3))
    if name == "tied-embedding":
        return Batch(TiedEmbedding(6, 4), torch.randint(0, 6, (batch, t)), _classes(batch, t, 6))
    if name == "frozen":
        model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
        model[0].weight.requires_grad_(False)
        return Batch(model, torch.randn(batch, 5), _classes(batch, None, 3))
    if name == "unused":
        return Batch(WithUnused(), torch.randn(batch, 5), _classes(batch, None, 3))
    if name == "dangling":
        return Batch(Dangling(), torch.randn(batch, 5), _classes(batch, None, 3))
    if name == "fallback":
        model = nn.Sequential(
            nn.Linear(5, 4), Gain(4), nn.Tanh(), PairOutput(4), First(), nn.Linear(4, 3)
        )
        return Batch(model, torch.randn(batch, 5), _classes(batch, None, 3))
    if name == "root-parameter":
        return Batch(RootParameter(), torch.randn(batch, 3, 4), _classes(batch, 3, 3))
    if name == "attention":
        return Batch(Attention(4, 3), torch.randn(batch, t, 4), _classes(batch, t, 3))
    raise KeyError(name)


def assert_grams_match(actual, expected, rtol: float) -> None:
    """Compare every parameter's Gram term and the total; report all mismatches at once."""
    assert set(actual.layer_grams) == set(expected.layer_grams)
    errors = {}
    for name, reference in expected.layer_grams.items():
        scale = float(reference.abs().max()) or 1.0
        errors[name] = float((actual.layer_grams[name] - reference).abs().max()) / scale
    scale = float(expected.gram.abs().max()) or 1.0
    errors["<total>"] = float((actual.gram - expected.gram).abs().max()) / scale
    mismatches = {name: error for name, error in errors.items() if error > rtol}
    assert not mismatches, f"relative errors above {rtol}: {mismatches}"
