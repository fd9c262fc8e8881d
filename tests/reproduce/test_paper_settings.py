"""Paper scale: the protocol of Sankararaman et al. (ICML 2020) unchanged, and a run of it.

The protocol: SGD without momentum or weight decay, batch 128, 200 epochs, the rate divided
by 10 at epochs 80 and 160, He init, 5 seeds, 100 pairs of mini-batches of 128 measured
after every epoch, CIFAR-10 with augmentation (MNIST for the MLPs).
"""

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradconf.reproduce import bn_skip, mlp
from gradconf.reproduce.cnn import DEPTH, WIDTH
from gradconf.reproduce.lr_grid import plan_grid
from gradconf.sweeps import expand, load_sweep
from gradconf.training import learning_rate_at

EXPERIMENTS = {"cnn-depth": DEPTH, "cnn-width": WIDTH, "bn-skip": bn_skip, "mlp-mnist": mlp}
PROTOCOL = {
    "epochs": 200,
    "batch_size": 128,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "lr_decay_at": [0.4, 0.8],
    "lr_decay_factor": 10.0,
    "seeds": [0, 1, 2, 3, 4],
    "measure_epochs": None,
    "num_pairs": 100,
    "measure_batch_size": 128,
    "init": "he",
    "activation": "relu",
}
# Training images per fake CIFAR-10 batch file; 5 files give 200, above the smoke subset.
FAKE_PER_BATCH = 40


def paper_points(name, data_root):
    experiment = EXPERIMENTS[name]
    resolved = experiment.settings("paper")
    return experiment.points(resolved, data_root=data_root, device="cpu")


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_paper_protocol_settings(name):
    resolved = EXPERIMENTS[name].settings("paper")
    for key, value in PROTOCOL.items():
        assert resolved[key] == value, key
    assert resolved["lr_grid"] == [0.003, 0.01, 0.03, 0.1]


@pytest.mark.parametrize(
    "name, axis, values, fixed",
    [("cnn-depth", "depths", [16, 22, 28, 34, 40], ("width", 2)),
     ("cnn-width", "widths", [2, 3, 4, 5, 6], ("depth", 16)),
     ("bn-skip", "depths", [16, 28, 40, 52, 76, 100], ("width", 2))],
    ids=["cnn-depth", "cnn-width", "bn-skip"],
)
def test_paper_cnn_grid(name, axis, values, fixed):
    resolved = EXPERIMENTS[name].settings("paper")
    assert resolved["dataset"] == "cifar10"
    assert resolved["augment"] is True
    assert resolved[axis] == values
    assert resolved[fixed[0]] == fixed[1]


@pytest.mark.parametrize("name", ["cnn-depth", "cnn-width", "bn-skip", "mlp-mnist"])
def test_paper_run_configs(name, tmp_path):
    points = paper_points(name, tmp_path)
    for point in points:
        config = point.config
        assert config.data.name == ("mnist" if name == "mlp-mnist" else "cifar10")
        assert config.data.augment is (name != "mlp-mnist")
        assert config.data.max_train is None
        assert config.data.root == str(tmp_path.resolve())
        assert config.model.init == "he"
        assert (config.train.epochs, config.train.batch_size) == (200, 128)
        assert (config.train.momentum, config.train.weight_decay) == (0.0, 0.0)
        assert config.train.epochs_to_measure() == tuple(range(201))
        assert (config.measure.granularity, config.measure.pairing) == ("minibatch", "disjoint")
        assert (config.measure.num_pairs, config.measure.batch_size) == (100, 128)
        if name.startswith("cnn-"):
            assert not config.model.batchnorm
            assert not config.model.skip
    planned = plan_grid(points, EXPERIMENTS[name].settings("paper")["lr_grid"], range(5))
    assert len(planned) == len(points) * 4 * 5


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_paper_sweep_file_matches_experiment(name):
    spec = load_sweep(f"paper-{name}")
    swept = {run.run_id: run.config.digest() for run in expand(spec)}
    experiment = EXPERIMENTS[name]
    resolved = experiment.settings("paper")
    points = experiment.points(resolved, data_root=spec.base["data"]["root"])
    planned = plan_grid(points, resolved["lr_grid"], resolved["seeds"])
    assert {run.run_id: run.config.digest() for run in planned} == swept


def test_paper_rate_decay_epochs(tmp_path):
    train = paper_points("cnn-depth", tmp_path)[0].config.train
    rates = [learning_rate_at(train, index) for index in (0, 79, 80, 159, 160, 199)]
    assert rates == pytest.approx([0.003, 0.003, 0.0003, 0.0003, 0.00003, 0.00003])


def test_bn_skip_paper_variants(tmp_path):
    points = paper_points("bn-skip", tmp_path)
    flags = {(p.config.model.batchnorm, p.config.model.skip) for p in points}
    assert flags == {(False, False), (False, True), (True, False), (True, True)}


def _write_pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as stream:
        pickle.dump(content, stream)


@pytest.fixture
def fake_cifar10(tmp_path):
    """Write a tiny CIFAR-10 in the standard python-pickle format; return its root."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, count in [*((f"data_batch_{i}", FAKE_PER_BATCH) for i in range(1, 6)),
                        ("test_batch", 20)]:
        # Each image is one row of 3,072 bytes: all red values, then green, then blue.
        images = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, 10, count).tolist()
        _write_pickle(folder / name, {"data": images, "labels": labels})
    _write_pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return tmp_path / "data"


def test_paper_scale_smoke_epoch(fake_cifar10, tmp_path):
    out_dir = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        output = DEPTH.run("paper", out_dir, progress=False, smoke=True,
                           data_root=fake_cifar10, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert len(output.verdicts) == 3
    run_dirs = sorted(path for path in (out_dir / "runs").iterdir() if path.is_dir())
    assert [path.name for path in run_dirs] == ["model.depth=16,lr=0.003,seed=0",
                                                "model.depth=16,lr=0.01,seed=0"]
    for run_dir in run_dirs:
        config = json.loads((run_dir / "config.json").read_text())
        assert config["data"]["name"] == "cifar10"
        assert config["data"]["augment"] is True
        assert (config["model"]["depth"], config["model"]["width"]) == (16, 2)
        assert config["train"]["batch_size"] == 128
        assert config["measure"]["batch_size"] == 128
        metrics = pd.read_parquet(run_dir / "metrics.parquet")
        assert metrics["epoch"].tolist() == [0, 1]
        confusion = pd.read_parquet(run_dir / "confusion.parquet")
        assert confusion["epoch"].tolist() == [0, 1]
        assert confusion["num_pairs"].tolist() == [1, 1]
