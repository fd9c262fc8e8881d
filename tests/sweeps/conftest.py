import copy

import pytest

from gradconf.sweeps import parse_sweep, run_sweep

# Four runs of about a second each: 2 depths x 2 seeds, one epoch on 256 digits.
TINY_SWEEP = {
    "name": "tiny",
    "seeds": [0, 1],
    "base": {
        "device": "cpu",
        "model": {"kind": "mlp", "width": 8},
        "data": {"name": "digits", "max_train": 256},
        "train": {"epochs": 1, "lr": 0.1, "batch_size": 32},
        "measure": {"num_pairs": 4, "batch_size": 32},
    },
    "grid": {"model.depth": [1, 2]},
}


@pytest.fixture
def tiny_sweep():
    """Plain sweep data (as parsed from TOML) that each test may change."""
    return copy.deepcopy(TINY_SWEEP)


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory):
    """The tiny sweep run in this process, shared by the tests that only read it."""
    out_dir = tmp_path_factory.mktemp("sweep") / "jobs1"
    outcome = run_sweep(parse_sweep(TINY_SWEEP), out_dir, progress=False)
    assert outcome.completed == 4
    return out_dir
