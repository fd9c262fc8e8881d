"""Training under the paper's protocol, with confusion measured along the way."""

from gradconf.training.loop import (
    EpochMetrics,
    TrainState,
    TrainingDiverged,
    evaluate,
    learning_rate_at,
    loss_function,
    train,
)

__all__ = [
    "EpochMetrics",
    "TrainState",
    "TrainingDiverged",
    "evaluate",
    "learning_rate_at",
    "loss_function",
    "train",
]
