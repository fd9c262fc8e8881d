"""The bundled scikit-learn digits: split, standardization and max_train."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from gradconf.config import DataConfig
from gradconf.data import load_dataset


def pixel_values(inputs: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Undo the standardization of ``inputs`` [N, 1, 8, 8] using ``reference``, the
    training inputs it came with: their smallest value is pixel 0 and their largest 16."""
    low = float(reference.double().min())
    high = float(reference.double().max())
    scale = 16.0 / (high - low)
    return ((inputs.double() - low) * scale).numpy().reshape(len(inputs), 64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig())


def test_digits_shapes(digits):
    assert digits.train_inputs.shape == (1437, 1, 8, 8)
    assert digits.test_inputs.shape == (360, 1, 8, 8)
    assert digits.input_shape == (1, 8, 8)
    assert digits.train_inputs.dtype == torch.float32
    assert digits.train_targets.dtype == torch.int64
    assert digits.test_targets.dtype == torch.int64
    assert digits.num_classes == 10
    assert digits.task == "classification"
    assert digits.augment is None
    assert digits.description.startswith("digits: 1,437 train / 360 test")


def test_digits_split_is_partition(digits):
    """Train and test images, mapped back to pixel values, are exactly the 1,797 originals."""
    original = load_digits()
    train_pixels = pixel_values(digits.train_inputs, digits.train_inputs)
    test_pixels = pixel_values(digits.test_inputs, digits.train_inputs)
    returned = np.concatenate([train_pixels, test_pixels]).round()
    labels = torch.cat([digits.train_targets, digits.test_targets]).numpy()

    assert np.abs(np.concatenate([train_pixels, test_pixels]) - returned).max() < 1e-4
    expected_rows = sorted(map(tuple, np.column_stack([original.data, original.target])))
    returned_rows = sorted(map(tuple, np.column_stack([returned, labels])))
    assert returned_rows == expected_rows


def test_digits_test_set_stratified(digits):
    all_counts = np.bincount(load_digits().target, minlength=10)
    test_counts = np.bincount(digits.test_targets.numpy(), minlength=10)

    assert np.all(np.abs(test_counts - 0.2 * all_counts) <= 1)


def test_digits_train_statistics(digits):
    """One scalar mean and std over all training pixels: the result has mean 0 and std 1."""
    train = digits.train_inputs.double()
    pixels = pixel_values(digits.train_inputs, digits.train_inputs).round()
    expected = (pixels - pixels.mean()) / pixels.std()

    assert abs(float(train.mean())) < 1e-6
    assert abs(float(train.std(unbiased=False)) - 1.0) < 1e-5
    np.testing.assert_allclose(train.numpy().reshape(-1, 64), expected, atol=1e-5)


def test_digits_seeded_split():
    first = load_dataset(DataConfig(split_seed=7))
    again = load_dataset(DataConfig(split_seed=7))
    other = load_dataset(DataConfig(split_seed=8))

    assert torch.equal(first.train_inputs, again.train_inputs)
    assert torch.equal(first.test_targets, again.test_targets)
    assert not torch.equal(first.train_targets, other.train_targets)


def test_digits_test_fraction():
    dataset = load_dataset(DataConfig(test_fraction=0.5))

    assert dataset.num_test == 899
    assert dataset.num_train == 898


def test_digits_max_train_keeps_first(digits):
    subset = load_dataset(DataConfig(max_train=100))
    full_pixels = pixel_values(digits.train_inputs[:100], digits.train_inputs).round()
    subset_pixels = pixel_values(subset.train_inputs, subset.train_inputs).round()

    assert subset.num_train == 100
    assert subset.num_test == 360
    assert torch.equal(subset.train_targets, digits.train_targets[:100])
    np.testing.assert_array_equal(subset_pixels, full_pixels)
    assert abs(float(subset.train_inputs.double().mean())) < 1e-6
