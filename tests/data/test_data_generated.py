"""MNIST-1D and the sphere data: generated in memory, seeded, with no files or network."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from gradconf.config import DataConfig
from gradconf.data import generated, load_dataset, sphere_points, sphere_teacher


@pytest.fixture(scope="module")
def mnist1d():
    return load_dataset(DataConfig(name="mnist1d"))


def test_mnist1d_shapes(mnist1d):
    assert mnist1d.train_inputs.shape == (4000, 1, 40)
    assert mnist1d.test_inputs.shape == (1000, 1, 40)
    assert mnist1d.input_shape == (1, 40)
    assert mnist1d.train_inputs.dtype == torch.float32
    assert mnist1d.train_targets.dtype == torch.int64
    assert mnist1d.num_classes == 10
    assert mnist1d.task == "classification"
    assert "mnist1d" in mnist1d.description


def test_mnist1d_standardized_and_stratified(mnist1d):
    all_labels = torch.cat([mnist1d.train_targets, mnist1d.test_targets])
    all_counts = torch.bincount(all_labels, minlength=10)
    test_counts = torch.bincount(mnist1d.test_targets, minlength=10)

    assert abs(float(mnist1d.train_inputs.double().mean())) < 1e-6
    assert abs(float(mnist1d.train_inputs.double().std(unbiased=False)) - 1.0) < 1e-5
    assert torch.all((test_counts - 0.2 * all_counts).abs() <= 1)


def test_mnist1d_seeded(mnist1d):
    again = load_dataset(DataConfig(name="mnist1d"))
    other = load_dataset(DataConfig(name="mnist1d", split_seed=1, max_train=50))

    assert torch.equal(mnist1d.train_inputs, again.train_inputs)
    assert torch.equal(mnist1d.test_targets, again.test_targets)
    assert other.num_train == 50
    assert not torch.equal(other.train_inputs, mnist1d.train_inputs[:50])


def test_mnist1d_offline_and_no_files(tmp_path, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    random.seed(11)
    np.random.seed(11)
    expected_python = random.random()
    expected_numpy = np.random.rand()
    random.seed(11)
    np.random.seed(11)

    load_dataset(DataConfig(name="mnist1d", max_train=10))

    assert list(tmp_path.iterdir()) == []
    assert random.random() == expected_python
    assert np.random.rand() == expected_numpy


def test_sphere_shapes_and_norms():
    dataset = load_dataset(DataConfig(name="sphere", num_examples=100, input_dim=7))
    norms = dataset.train_inputs.double().norm(dim=1)

    assert dataset.train_inputs.shape == (80, 7)
    assert dataset.test_inputs.shape == (20, 7)
    assert dataset.train_targets.shape == (80, 1)
    assert dataset.train_targets.dtype == torch.float32
    assert dataset.input_shape == (7,)
    assert dataset.num_classes == 1
    assert dataset.task == "regression"
    torch.testing.assert_close(norms, torch.ones(80, dtype=torch.float64), atol=1e-6, rtol=0)
    assert "R^7" in dataset.description


def test_sphere_targets_from_teacher(monkeypatch):
    teachers = []

    def record_teacher(*args, **kwargs):
        teacher = sphere_teacher(*args, **kwargs)
        teachers.append(teacher)
        return teacher

    monkeypatch.setattr(generated, "sphere_teacher", record_teacher)
    small = load_dataset(DataConfig(name="sphere", num_examples=50, split_seed=3))
    large = load_dataset(DataConfig(name="sphere", num_examples=300, split_seed=3))
    first, second = teachers

    torch.testing.assert_close(small.train_targets, first(small.train_inputs))
    torch.testing.assert_close(large.test_targets, second(large.test_inputs))
    for before, after in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(before, after)


def test_sphere_seeded():
    first = load_dataset(DataConfig(name="sphere", split_seed=5))
    again = load_dataset(DataConfig(name="sphere", split_seed=5))
    other = load_dataset(DataConfig(name="sphere", split_seed=6))

    assert torch.equal(first.train_inputs, again.train_inputs)
    assert torch.equal(first.train_targets, again.train_targets)
    assert not torch.equal(first.train_inputs, other.train_inputs)


@pytest.mark.parametrize(
    ("num_examples", "test_fraction", "num_test"),
    [(2, 0.2, 1), (2, 0.9, 1), (10, 0.25, 2), (512, 0.2, 102)],
    ids=["N2-small-fraction", "N2-large-fraction", "N10", "N512"],
)
def test_sphere_split_sizes(num_examples, test_fraction, num_test):
    config = DataConfig(name="sphere", num_examples=num_examples, test_fraction=test_fraction)
    dataset = load_dataset(config)

    assert dataset.num_test == num_test
    assert dataset.num_train == num_examples - num_test


def test_sphere_points_uniform():
    """Uniform points on the sphere in R^d have mean 0 and second moment I / d."""
    d = 5
    points = sphere_points(20000, d, torch.Generator().manual_seed(0), dtype=torch.float64)
    second_moment = points.T @ points / len(points)

    assert points.shape == (20000, d)
    assert points.dtype == torch.float64
    torch.testing.assert_close(points.norm(dim=1), torch.ones(20000, dtype=torch.float64))
    assert float(points.mean(dim=0).abs().max()) < 0.02
    torch.testing.assert_close(
        second_moment, torch.eye(d, dtype=torch.float64) / d, atol=0.01, rtol=0
    )


def test_sphere_points_empty_and_invalid():
    generator = torch.Generator().manual_seed(0)

    assert sphere_points(0, 3, generator).shape == (0, 3)
    with pytest.raises(ValueError, match="n=-1 is invalid"):
        sphere_points(-1, 3, generator)
    with pytest.raises(ValueError, match="d=0 is invalid"):
        sphere_points(4, 0, generator)


def test_teacher_weight_scales():
    """Hidden pre-activations of a point on the unit sphere are N(0, 1), and output weights
    have variance 1/width."""
    width = 4096
    generator = torch.Generator().manual_seed(0)
    teacher = sphere_teacher(10, generator, width=width)
    hidden, activation, output = teacher
    pre_activations = hidden(sphere_points(64, 10, generator))

    assert isinstance(activation, torch.nn.Tanh)
    assert hidden.bias is None
    assert output.bias is None
    assert math.isclose(float(pre_activations.var()), 1.0, abs_tol=0.05)
    assert math.isclose(float(output.weight.var()) * width, 1.0, abs_tol=0.05)
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
