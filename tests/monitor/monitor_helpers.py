"""Small models, batches and a plain training loop for the monitor tests.

``build(name)`` draws from the global random state, so callers seed it first.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from gradconf.engine import GramResult
from gradconf.measure.stats import ConfusionStats, pair_statistics

# Monitor rows of a float64 model against the float64 per-example loop.
RTOL_FLOAT64 = 1e-9
# Monitor rows of a float32 model against ghost_gram on a copy of it: the same kernels,
# summed in another order, so only rounding differs.
RTOL_FLOAT32 = 1e-4
ATOL_COSINE_FLOAT32 = 1e-5

# Columns of a row that depend on wall time rather than on the computation.
TIMING_COLUMNS = ["measure_seconds", "step_seconds"]


class ScaledLinear(nn.Module):
    """y = gain ⊙ (x W^T): a layer outside the engine's table (torch.func fallback)."""

    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width_out, width_in) / math.sqrt(width_in))
        self.gain = nn.Parameter(torch.ones(width_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain * (x @ self.weight.T)


def build(name: str) -> tuple[nn.Module, tuple[int, ...], int]:
    """Return (model, input shape without batch, number of classes)."""
    if name == "mlp":
        model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 4))
        return model, (6,), 4
    if name == "cnn":
        model = nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
        )
        return model, (1, 8, 8), 5
    if name == "fallback":
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), ScaledLinear(8, 8), nn.Tanh(), nn.Linear(8, 3))
        return model, (6,), 3
    if name == "batchnorm-eval":
        model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
        model[1].eval()  # running statistics, e.g. a fine-tuned backbone
        return model, (6,), 3
    raise ValueError(f"unknown test model {name!r}")


def batch(shape: tuple[int, ...], classes: int, size: int, dtype: torch.dtype = torch.float32):
    """Return random inputs [size, *shape] and class targets [size]."""
    return torch.randn(size, *shape, dtype=dtype), torch.randint(0, classes, (size,))


def loss_fn(reduction: str):
    """Cross-entropy reduced over the batch as given."""
    return lambda outputs, targets: F.cross_entropy(outputs, targets, reduction=reduction)


def expected_statistics(results: list[GramResult]) -> tuple[ConfusionStats, np.ndarray]:
    """Confusion statistics over the pairs inside each result's Gram, in per-example units.

    ``results`` hold one Gram per micro-batch, each computed on that micro-batch alone
    with its loss unscaled, so ``example_gram()`` is already in per-example units.
    """
    inner, norm_a, norm_b, norms = [], [], [], []
    for result in results:
        gram = result.example_gram()
        rows, cols = torch.triu_indices(gram.shape[0], gram.shape[0], offset=1)
        diagonal = torch.diagonal(gram)
        inner.append(gram[rows, cols])
        norm_a.append(diagonal[rows])
        norm_b.append(diagonal[cols])
        norms.append(diagonal)
    return pair_statistics(
        torch.cat(inner), torch.cat(norm_a), torch.cat(norm_b), sq_norms=torch.cat(norms)
    )


def layer_min_cosines(result: GramResult) -> dict[str, float]:
    """Minimum pair cosine per layer (module) of a Gram, from its per-parameter terms."""
    layers: dict[str, torch.Tensor] = {}
    for name, term in result.layer_grams.items():
        layer = name.rpartition(".")[0] or name
        layers[layer] = layers.get(layer, 0) + term
    minima = {}
    for layer, gram in layers.items():
        norms = torch.sqrt(torch.diagonal(gram))
        cosine = gram / (norms[:, None] * norms[None, :])
        rows, cols = torch.triu_indices(gram.shape[0], gram.shape[0], offset=1)
        minima[layer] = float(cosine[rows, cols].min())
    return minima


def assert_rows_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Assert two record frames are equal except for their wall-time columns."""
    pd.testing.assert_frame_equal(
        actual.drop(columns=TIMING_COLUMNS), expected.drop(columns=TIMING_COLUMNS)
    )
