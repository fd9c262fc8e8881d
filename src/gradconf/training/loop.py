"""The paper's training protocol: plain SGD with step decay, confusion measured at frozen weights.

Defaults follow Sankararaman et al. (2020): momentum 0, no weight decay, batch size 128, the
learning rate divided by 10 at 40% and 80% of the epochs. Confusion is measured at
initialization (epoch 0) and after the epochs in ``TrainConfig.epochs_to_measure()``.
Shuffling, augmentation and measurement each draw from their own seeded generator, so adding
or removing measurements does not change the training trajectory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gradconf.config import MeasureConfig, TrainConfig
from gradconf.measure import Measurement, measure_confusion

__all__ = [
    "EpochMetrics",
    "TrainState",
    "TrainingDiverged",
    "evaluate",
    "learning_rate_at",
    "loss_function",
    "train",
]

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Offsets that separate the generators of one run; any fixed distinct values work.
SHUFFLE_STREAM = 1
MEASURE_STREAM = 2
AUGMENT_STREAM = 3


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float) -> None:
        super().__init__(
            f"training diverged at epoch {epoch}, step {step}: loss={loss}. Lower the "
            "learning rate (train.lr)."
        )
        self.epoch = epoch
        self.step = step
        self.loss = loss


@dataclass(frozen=True)
class EpochMetrics:
    """Metrics after one epoch (epoch 0: at initialization, before any step)."""

    epoch: int
    lr: float
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    wall_seconds: float


@dataclass
class TrainState:
    """Everything needed to continue training after ``epoch`` completed epochs.

    Restoring it reproduces the uninterrupted run exactly on the same device: weights,
    optimizer buffers and every random generator are saved.
    """

    epoch: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    generators: dict[str, torch.Tensor]
    global_rng: torch.Tensor
    wall_seconds: float


def loss_function(name: str) -> LossFn:
    """Return the mean-reduced loss ``name`` ("cross_entropy" or "mse")."""
    if name == "cross_entropy":
        return F.cross_entropy
    if name == "mse":
        return F.mse_loss
    raise ValueError(f"unknown loss {name!r}; allowed: 'cross_entropy', 'mse'.")


def learning_rate_at(config: TrainConfig, epoch_index: int) -> float:
    """Return the learning rate for 0-based ``epoch_index`` under the step-decay schedule."""
    milestones = [round(fraction * config.epochs) for fraction in config.lr_decay_at]
    decays = sum(1 for milestone in milestones if epoch_index >= milestone)
    return config.lr / config.lr_decay_factor**decays


def _generator(seed: int, stream: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed * 1000 + stream)
    return generator


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int = 1024,
) -> tuple[float, float]:
    """Return (mean loss, accuracy) over a dataset in eval mode; accuracy is NaN for regression.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_loss = 0.0
    correct = 0
    classification = not targets.is_floating_point()
    try:
        for start in range(0, inputs.shape[0], batch_size):
            batch_inputs = inputs[start : start + batch_size].to(device)
            batch_targets = targets[start : start + batch_size].to(device)
            outputs = model(batch_inputs)
            total_loss += float(loss_fn(outputs, batch_targets)) * batch_inputs.shape[0]
            if classification:
                correct += int((outputs.argmax(dim=1) == batch_targets).sum())
    finally:
        model.train(was_training)
    count = inputs.shape[0]
    accuracy = correct / count if classification else math.nan
    return total_loss / count, accuracy


def train(
    model: nn.Module,
    dataset: object,
    config: TrainConfig,
    measure_config: MeasureConfig,
    *,
    seed: int,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_measure: Callable[[int, Measurement], None] | None = None,
    on_checkpoint: Callable[[TrainState], None] | None = None,
    resume_from: TrainState | None = None,
    progress: bool = False,
) -> None:
    """Train ``model`` on ``dataset`` with SGD and measure confusion on the training set.

    ``dataset`` is a ``gradconf.data.Dataset``. ``on_epoch`` receives each epoch's metrics
    (epoch 0 first) and ``on_measure`` each measurement, as soon as they exist, so a caller
    can write them out incrementally; ``on_checkpoint`` receives the state after each
    epoch's callbacks. ``resume_from`` continues from such a state, skipping the epochs it
    covers. Raises ``TrainingDiverged`` on a non-finite loss.
    """
    device = next(model.parameters()).device
    loss_fn = loss_function(config.loss)
    train_inputs = dataset.train_inputs  # type: ignore[attr-defined]
    train_targets = dataset.train_targets  # type: ignore[attr-defined]
    test_inputs = dataset.test_inputs  # type: ignore[attr-defined]
    test_targets = dataset.test_targets  # type: ignore[attr-defined]
    augment = getattr(dataset, "augment", None)
    shuffle_generator = _generator(seed, SHUFFLE_STREAM)
    measure_generator = _generator(seed, MEASURE_STREAM)
    augment_generator = _generator(seed, AUGMENT_STREAM)
    measure_epochs = set(config.epochs_to_measure())
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    generators = {"shuffle": shuffle_generator, "measure": measure_generator,
                  "augment": augment_generator}
    first_epoch = 0
    elapsed_before = 0.0
    if resume_from is not None:
        model.load_state_dict(resume_from.model)
        optimizer.load_state_dict(resume_from.optimizer)
        for name, generator in generators.items():
            generator.set_state(resume_from.generators[name])
        torch.set_rng_state(resume_from.global_rng)
        first_epoch = resume_from.epoch
        elapsed_before = resume_from.wall_seconds
        logger.info("resuming training after epoch %d", first_epoch)
    start_time = time.perf_counter() - elapsed_before

    def checkpoint(epoch: int) -> None:
        if on_checkpoint is None:
            return
        on_checkpoint(TrainState(
            epoch=epoch,
            model={key: value.detach().clone() for key, value in model.state_dict().items()},
            optimizer=optimizer.state_dict(),
            generators={name: generator.get_state() for name, generator in generators.items()},
            global_rng=torch.get_rng_state(),
            wall_seconds=time.perf_counter() - start_time,
        ))

    def finish_epoch(epoch: int, lr: float) -> None:
        train_loss, train_accuracy = evaluate(model, loss_fn, train_inputs, train_targets)
        test_loss, test_accuracy = evaluate(model, loss_fn, test_inputs, test_targets)
        metrics = EpochMetrics(
            epoch=epoch,
            lr=lr,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            test_loss=test_loss,
            test_accuracy=test_accuracy,
            wall_seconds=time.perf_counter() - start_time,
        )
        if on_epoch is not None:
            on_epoch(metrics)
        if epoch in measure_epochs:
            measurement = measure_confusion(
                model, loss_fn, train_inputs, train_targets, measure_config,
                generator=measure_generator,
            )
            if on_measure is not None:
                on_measure(epoch, measurement)
        logger.debug("epoch %d: train loss %.4f, test accuracy %.4f", epoch, train_loss, test_accuracy)
        checkpoint(epoch)

    model.train()
    if resume_from is None:
        finish_epoch(0, learning_rate_at(config, 0))
    epochs = range(first_epoch, config.epochs)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="epochs", leave=False)
    num_examples = train_inputs.shape[0]
    for epoch_index in epochs:
        lr = learning_rate_at(config, epoch_index)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(num_examples, generator=shuffle_generator)
        for step, start in enumerate(range(0, num_examples, config.batch_size)):
            index = order[start : start + config.batch_size]
            inputs = train_inputs[index]
            if augment is not None:
                inputs = augment(inputs, augment_generator)
            inputs = inputs.to(device)
            targets = train_targets[index].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs), targets)
            if not torch.isfinite(loss):
                raise TrainingDiverged(epoch_index + 1, step, loss.item())
            loss.backward()
            optimizer.step()
        finish_epoch(epoch_index + 1, lr)
