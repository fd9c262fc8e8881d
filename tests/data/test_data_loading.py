"""``load_dataset`` dispatch, its checks and warnings, and the ``Dataset`` container."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gradconf import config
from gradconf.config import DataConfig
from gradconf.data import LOADERS, Dataset, load_dataset


def test_loaders_match_config_names():
    assert set(LOADERS) == set(config.DATASETS)


def test_unknown_name_lists_allowed():
    bad = DataConfig()
    # DataConfig rejects unknown names itself; bypass it to reach load_dataset's own check.
    object.__setattr__(bad, "name", "svhn")

    expected = r"'svhn' is not a known dataset\. Allowed names: digits, mnist1d, sphere, mnist"
    with pytest.raises(ValueError, match=expected):
        load_dataset(bad)


def test_negative_split_seed_raises():
    with pytest.raises(ValueError, match=r"data.split_seed=-1 is invalid"):
        load_dataset(DataConfig(split_seed=-1))


def test_augment_without_augmentation_warns():
    with pytest.warns(UserWarning, match="data.augment=true has no effect for 'digits'"):
        dataset = load_dataset(DataConfig(augment=True))

    assert dataset.augment is None


def test_max_train_above_size_warns():
    with pytest.warns(UserWarning, match="data.max_train=5000 exceeds the 1437"):
        dataset = load_dataset(DataConfig(max_train=5000))

    assert dataset.num_train == 1437


def make_dataset(**changes) -> Dataset:
    fields = {
        "name": "toy",
        "train_inputs": torch.zeros(4, 3),
        "train_targets": torch.zeros(4, dtype=torch.int64),
        "test_inputs": torch.zeros(2, 3),
        "test_targets": torch.zeros(2, dtype=torch.int64),
        "input_shape": (3,),
        "num_classes": 2,
        "task": "classification",
        "description": "toy",
    }
    return Dataset(**{**fields, **changes})


def test_dataset_checks_shapes():
    with pytest.raises(ValueError, match=r"test inputs have shape \(2, 4\)"):
        make_dataset(test_inputs=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="train has 4 inputs but 3 targets"):
        make_dataset(train_targets=torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="task='ranking' is not supported"):
        make_dataset(task="ranking")


def test_dataset_frozen_and_short_repr():
    dataset = make_dataset()

    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset.name = "other"
    assert "tensor" not in repr(dataset)
    assert dataset.num_train == 4
    assert dataset.num_test == 2
