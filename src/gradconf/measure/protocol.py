"""Sample gradients, pair them and summarize their confusion at frozen weights.

Two granularities: ``"example"`` (per-example gradients, the definition of the confusion
bound) and ``"minibatch"`` (the mean-loss gradients of random mini-batches, the protocol of
Sankararaman et al., 2020: 100 pairs of mini-batches of 128 after every epoch). Two pairings:
``"disjoint"`` draws K independent pairs (2K gradients, K cosines); ``"all"`` takes all
M(M−1)/2 pairs among M gradients (cheaper per pair, but the pairs are not independent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from gradconf.config import MeasureConfig
from gradconf.engine import minibatch_gram, per_example_gram
from gradconf.engine.result import Coverage, GramResult
from gradconf.measure.stats import ConfusionStats, cosines_of_pairs, gram_pairs, pair_statistics

__all__ = ["LayerStats", "Measurement", "measure_confusion"]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LayerStats:
    """Cosine summary of one parameter tensor's share of the gradients."""

    min_cosine: float
    mean_cosine: float
    mean_sq_norm: float


@dataclass(frozen=True)
class Measurement:
    """One confusion measurement: statistics, cosine samples and per-parameter breakdown."""

    stats: ConfusionStats
    cosines: np.ndarray
    layers: dict[str, LayerStats]
    granularity: str
    pairing: str
    engine: str
    batchnorm: str
    coverage: Coverage
    routes: dict[str, str] = field(default_factory=dict)


def _layer_stats(inner: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor) -> LayerStats:
    cosine = cosines_of_pairs(inner, sq_a, sq_b)
    defined = cosine[~torch.isnan(cosine)]
    sq_norms = torch.cat([sq_a, sq_b])
    if defined.numel() == 0:
        return LayerStats(float("nan"), float("nan"), float(sq_norms.mean()))
    return LayerStats(float(defined.min()), float(defined.mean()), float(sq_norms.mean()))


def _sample_batches(
    num_examples: int, count: int, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Draw ``count`` index sets of ``batch_size`` examples, each without replacement."""
    if batch_size > num_examples:
        raise ValueError(
            f"measure.batch_size={batch_size} exceeds the {num_examples} available examples; "
            "lower measure.batch_size."
        )
    return [torch.randperm(num_examples, generator=generator)[:batch_size] for _ in range(count)]


def measure_confusion(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: MeasureConfig,
    *,
    generator: torch.Generator,
) -> Measurement:
    """Measure gradient confusion of ``model`` on examples drawn from ``inputs``/``targets``.

    ``loss_fn(outputs, targets)`` must average over the batch. Weights are not changed and the
    model is left as found. Sampling uses ``generator`` only, so a seeded generator gives the
    same pairs on every run.
    """
    num_examples = int(inputs.shape[0])
    device = next(model.parameters()).device
    if config.granularity == "minibatch":
        count = 2 * config.num_pairs if config.pairing == "disjoint" else config.num_gradients
        index_sets = _sample_batches(num_examples, count, config.batch_size, generator)
        batches = [(inputs[idx].to(device), targets[idx].to(device)) for idx in index_sets]
        if config.pairing == "all":
            result = minibatch_gram(model, loss_fn, batches, batchnorm=config.batchnorm)
            return _from_gram(result, config)
        return _from_disjoint_minibatches(model, loss_fn, batches, config)

    count = 2 * config.num_pairs if config.pairing == "disjoint" else config.num_gradients
    if count > num_examples:
        raise ValueError(
            f"measuring {count} distinct examples needs at least that many, but only "
            f"{num_examples} are available; lower measure.num_pairs or measure.num_gradients."
        )
    index = torch.randperm(num_examples, generator=generator)[:count]

    def summed_loss(outputs: torch.Tensor, batch_targets: torch.Tensor) -> torch.Tensor:
        return loss_fn(outputs, batch_targets) * outputs.shape[0]

    result = per_example_gram(
        model,
        summed_loss,
        inputs[index].to(device),
        targets[index].to(device),
        loss_reduction="sum",
        engine=config.engine,
        batchnorm=config.batchnorm,
    )
    if config.pairing == "all":
        return _from_gram(result, config)
    first = torch.arange(0, count, 2)
    second = first + 1

    def pick(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        diagonal = torch.diagonal(gram)
        return gram[first, second], diagonal[first], diagonal[second]

    return _assemble(result, config, pick)


def _from_gram(result: GramResult, config: MeasureConfig) -> Measurement:
    return _assemble(result, config, gram_pairs)


def _assemble(
    result: GramResult,
    config: MeasureConfig,
    pick: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> Measurement:
    inner, sq_a, sq_b = pick(result.gram)
    stats, cosines = pair_statistics(inner, sq_a, sq_b, sq_norms=torch.diagonal(result.gram))
    layers = {name: _layer_stats(*pick(gram)) for name, gram in result.layer_grams.items()}
    return Measurement(
        stats=stats,
        cosines=cosines,
        layers=layers,
        granularity=config.granularity,
        pairing=config.pairing,
        engine=result.engine,
        batchnorm=result.batchnorm,
        coverage=result.coverage,
        routes=dict(result.routes),
    )


def _from_disjoint_minibatches(
    model: nn.Module,
    loss_fn: LossFn,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    config: MeasureConfig,
) -> Measurement:
    """Compute K pairs one at a time, so memory keeps two gradients at a time, not 2K."""
    pair_grams: list[GramResult] = []
    for k in range(0, len(batches), 2):
        pair_grams.append(
            minibatch_gram(model, loss_fn, batches[k : k + 2], batchnorm=config.batchnorm)
        )
    inner = torch.stack([r.gram[0, 1] for r in pair_grams])
    sq_a = torch.stack([r.gram[0, 0] for r in pair_grams])
    sq_b = torch.stack([r.gram[1, 1] for r in pair_grams])
    stats, cosines = pair_statistics(inner, sq_a, sq_b)
    layers = {}
    for name in pair_grams[0].layer_grams:
        layer_inner = torch.stack([r.layer_grams[name][0, 1] for r in pair_grams])
        layer_a = torch.stack([r.layer_grams[name][0, 0] for r in pair_grams])
        layer_b = torch.stack([r.layer_grams[name][1, 1] for r in pair_grams])
        layers[name] = _layer_stats(layer_inner, layer_a, layer_b)
    first = pair_grams[0]
    return Measurement(
        stats=stats,
        cosines=cosines,
        layers=layers,
        granularity=config.granularity,
        pairing=config.pairing,
        engine=first.engine,
        batchnorm=first.batchnorm,
        coverage=first.coverage,
        routes=dict(first.routes),
    )
