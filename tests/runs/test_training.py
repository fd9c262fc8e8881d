import pytest

from gradconf.config import ConfigError, RunConfig, TrainConfig, config_from_dict
from gradconf.training import learning_rate_at


def test_lr_schedule_decays_at_40_and_80_percent():
    config = TrainConfig(epochs=10, lr=1.0)
    rates = [learning_rate_at(config, epoch) for epoch in range(10)]
    assert rates[:4] == [1.0] * 4
    assert rates[4:8] == [pytest.approx(0.1)] * 4
    assert rates[8:] == [pytest.approx(0.01)] * 2


def test_config_rejects_unknown_key():
    with pytest.raises(ConfigError, match="unknown key.*model.widht.*known keys"):
        RunConfig().replace(**{"model.widht": 3})


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="model.width=0"):
        RunConfig().replace(**{"model.width": 0})
    with pytest.raises(ConfigError, match="data.name='imagenet'.*digits"):
        RunConfig().replace(**{"data.name": "imagenet"})
    with pytest.raises(ConfigError, match="model.init='xavier'.*glorot"):
        RunConfig().replace(**{"model.init": "xavier"})
    with pytest.raises(ConfigError, match="must be an integer"):
        RunConfig().replace(**{"model.depth": "2"})


def test_config_round_trip():
    config = RunConfig().replace(**{"train.measure_epochs": [0, 5], "seed": 3})
    assert config_from_dict(RunConfig, config.to_dict()) == config
    assert config.digest() != RunConfig().digest()
