import pytest
import torch

# The test models are tiny; one thread avoids oversubscribing a shared 2-core machine.
torch.set_num_threads(1)

from gradconf.config import DataConfig, MeasureConfig, ModelConfig, RunConfig, TrainConfig


@pytest.fixture
def tiny_run_config():
    """A run that trains in about a second on the bundled digits."""
    return RunConfig(
        model=ModelConfig(width=8, depth=1),
        data=DataConfig(name="digits", max_train=256),
        train=TrainConfig(epochs=2, lr=0.1, batch_size=32),
        measure=MeasureConfig(num_pairs=4, batch_size=32),
        device="cpu",
    )
