"""Fixtures that write tiny MNIST and CIFAR files in the standard formats, and a network guard."""

from __future__ import annotations

import gzip
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass(frozen=True)
class WrittenImages:
    """Arrays written to disk: uint8 images [N, C, H, W] and labels [N] per split."""

    root: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """Write a uint8 array in the IDX format: 0, 0, type 0x08, ndim, big-endian sizes, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    content = header + array.astype(np.uint8).tobytes()
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)


def _write_pickle(path: Path, content: dict) -> None:
    with open(path, "wb") as stream:
        pickle.dump(content, stream)


@pytest.fixture
def mnist_files(tmp_path: Path) -> Callable[..., WrittenImages]:
    """Return a writer of MNIST-format files under tmp_path/<folder>/raw."""

    def write(
        folder: str = "MNIST",
        compress: bool = False,
        num_train: int = 30,
        num_test: int = 10,
        max_label: int = 9,
    ) -> WrittenImages:
        rng = np.random.default_rng(0)
        raw = tmp_path / folder / "raw"
        raw.mkdir(parents=True)
        train_images = rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8)
        test_images = rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8)
        train_labels = rng.integers(0, max_label + 1, num_train, dtype=np.uint8)
        test_labels = rng.integers(0, max_label + 1, num_test, dtype=np.uint8)
        _write_idx(raw / "train-images-idx3-ubyte", train_images, compress)
        _write_idx(raw / "train-labels-idx1-ubyte", train_labels, compress)
        _write_idx(raw / "t10k-images-idx3-ubyte", test_images, compress)
        _write_idx(raw / "t10k-labels-idx1-ubyte", test_labels, compress)
        return WrittenImages(
            tmp_path, train_images[:, None], train_labels, test_images[:, None], test_labels
        )

    return write


def _cifar_arrays(
    rng: np.random.Generator, count: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw uint8 images [count, 3, 32, 32] with a different mean per channel, and labels."""
    images = rng.integers(0, 128, (count, 3, 32, 32), dtype=np.uint8)
    images[:, 1] += 64
    images[:, 2] += 127
    labels = rng.integers(0, num_classes, count)
    return images, labels


@pytest.fixture
def cifar10_files(tmp_path: Path) -> Callable[..., WrittenImages]:
    """Return a writer of CIFAR-10 python pickles under tmp_path/cifar-10-batches-py."""

    def write(per_batch: int = 6, num_test: int = 8) -> WrittenImages:
        rng = np.random.default_rng(1)
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        batches = [_cifar_arrays(rng, per_batch, 10) for _ in range(5)]
        for index, (images, labels) in enumerate(batches, start=1):
            # The format stores each image as one row of 3,072 bytes: all red, green, blue.
            content = {"data": images.reshape(per_batch, -1), "labels": labels.tolist()}
            _write_pickle(folder / f"data_batch_{index}", content)
        test_images, test_labels = _cifar_arrays(rng, num_test, 10)
        _write_pickle(
            folder / "test_batch",
            {"data": test_images.reshape(num_test, -1), "labels": test_labels.tolist()},
        )
        _write_pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
        return WrittenImages(
            tmp_path,
            np.concatenate([images for images, _ in batches]),
            np.concatenate([labels for _, labels in batches]),
            test_images,
            test_labels,
        )

    return write


@pytest.fixture
def cifar100_files(tmp_path: Path) -> Callable[..., WrittenImages]:
    """Return a writer of CIFAR-100 python pickles under tmp_path/cifar-100-python."""

    def write(num_train: int = 24, num_test: int = 8) -> WrittenImages:
        rng = np.random.default_rng(2)
        folder = tmp_path / "cifar-100-python"
        folder.mkdir()
        arrays = {}
        for split, count in (("train", num_train), ("test", num_test)):
            images, fine = _cifar_arrays(rng, count, 100)
            coarse = fine // 5
            content = {
                "data": images.reshape(count, -1),
                "fine_labels": fine.tolist(),
                "coarse_labels": coarse.tolist(),
            }
            _write_pickle(folder / split, content)
            arrays[split] = (images, fine)
        names = {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        }
        _write_pickle(folder / "meta", names)
        return WrittenImages(tmp_path, *arrays["train"], *arrays["test"])

    return write


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every socket connection attempt raise, so a test fails if code goes online."""

    def reject_connection(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", reject_connection)
    monkeypatch.setattr(socket.socket, "connect_ex", reject_connection)
    monkeypatch.setattr(socket, "create_connection", reject_connection)
    monkeypatch.setattr(socket, "getaddrinfo", reject_connection)
