"""The ``Dataset`` container and the preprocessing steps that every loader shares.

Shapes use N (examples) and C (channels). Inputs keep their natural shape, e.g.
[N, C, H, W] for images, and the statistics of ``normalize_channels`` are per channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split

__all__ = ["Augment", "Dataset", "TASKS"]

TASKS = ("classification", "regression")

# A per-batch augmentation: inputs [B, *input_shape] and a generator -> inputs [B, *input_shape].
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair of in-memory tensors and what a training loop needs to know about it.

    Inputs are float32 [N, *input_shape]. Targets are int64 class labels [N] for
    ``task="classification"`` and float32 [N, 1] for ``task="regression"``, where
    ``num_classes`` is 1. ``augment``, when set, is applied by the training loop to each
    training batch. It is None unless the config requests augmentation and the dataset
    defines one. ``description`` is one line for reports, with sizes and source.
    """

    name: str
    train_inputs: torch.Tensor = field(repr=False)
    train_targets: torch.Tensor = field(repr=False)
    test_inputs: torch.Tensor = field(repr=False)
    test_targets: torch.Tensor = field(repr=False)
    input_shape: tuple[int, ...]
    num_classes: int
    task: str
    description: str
    augment: Augment | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(
                f"Dataset task={self.task!r} is not supported. Allowed tasks: {', '.join(TASKS)}."
            )
        for split, inputs, targets in (
            ("train", self.train_inputs, self.train_targets),
            ("test", self.test_inputs, self.test_targets),
        ):
            if tuple(inputs.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{self.name}: {split} inputs have shape {tuple(inputs.shape)}, which does "
                    f"not match input_shape={tuple(self.input_shape)} after the batch dimension."
                )
            if targets.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"{self.name}: {split} has {inputs.shape[0]} inputs but "
                    f"{targets.shape[0]} targets; both need one row per example."
                )

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return int(self.train_inputs.shape[0])

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return int(self.test_inputs.shape[0])


def stratified_split(
    inputs: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split examples into shuffled train and test parts with the same class proportions.

    ``inputs`` is [N, ...] and ``labels`` [N]. Returns (train_inputs, train_labels,
    test_inputs, test_labels). Both parts come out in a seeded random order, so the
    first k training examples are a random subset.
    """
    train_inputs, test_inputs, train_labels, test_labels = train_test_split(
        inputs,
        labels,
        test_size=test_fraction,
        random_state=seed,
        shuffle=True,
        stratify=labels,
    )
    return train_inputs, train_labels, test_inputs, test_labels


def normalize_channels(
    train: torch.Tensor, test: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardize [N, C, ...] inputs per channel with the training set's mean and std.

    The statistics are computed in float64 over every axis except the channel axis (dim 1)
    of ``train`` and applied to both parts. A channel with zero std is only centered.
    Returns (train, test, mean, std) with float32 inputs and float64 [C] statistics.
    """
    reduce_dims = [0, *range(2, train.dim())]
    train64 = train.double()
    mean = train64.mean(dim=reduce_dims)
    std = train64.std(dim=reduce_dims, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))

    # [C] -> [1, C, 1, ...] so the statistics broadcast over examples and positions.
    view = [1, -1, *([1] * (train.dim() - 2))]
    train_out = ((train64 - mean.view(view)) / std.view(view)).float()
    test_out = ((test.double() - mean.view(view)) / std.view(view)).float()
    return train_out, test_out, mean, std

