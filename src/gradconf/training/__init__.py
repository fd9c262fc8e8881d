"""Training under the protocol of Sankararaman et al. (ICML 2020), with confusion measured along the way."""

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
