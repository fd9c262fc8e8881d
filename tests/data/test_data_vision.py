"""MNIST, Fashion-MNIST and CIFAR loading from tiny files written in the standard formats."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import torch

from gradconf.config import DataConfig
from gradconf.data import RandomCropFlip, load_dataset
from gradconf.data import vision

pytest.importorskip("torchvision")

TOLERANCE = 1e-5


def expected_normalized(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardize uint8 [N, C, H, W] per channel with train statistics, in float64 NumPy."""
    train = train.astype(np.float64) / 255.0
    test = test.astype(np.float64) / 255.0
    mean = train.mean(axis=(0, 2, 3), keepdims=True)
    std = train.std(axis=(0, 2, 3), keepdims=True)
    return (train - mean) / std, (test - mean) / std


def config_for(name: str, root, **changes) -> DataConfig:
    return DataConfig(name=name, root=str(root), **changes)


@pytest.mark.parametrize("compress", [False, True], ids=["idx", "idx-gz"])
@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_idx_files_load(mnist_files, name, folder, compress):
    written = mnist_files(folder=folder, compress=compress)
    dataset = load_dataset(config_for(name, written.root))
    expected_train, expected_test = expected_normalized(
        written.train_images, written.test_images
    )

    assert dataset.train_inputs.shape == (30, 1, 28, 28)
    assert dataset.test_inputs.shape == (10, 1, 28, 28)
    assert dataset.input_shape == (1, 28, 28)
    assert dataset.train_inputs.dtype == torch.float32
    assert dataset.train_targets.dtype == torch.int64
    assert dataset.train_targets.tolist() == written.train_labels.tolist()
    assert dataset.test_targets.tolist() == written.test_labels.tolist()
    torch.testing.assert_close(
        dataset.train_inputs, torch.from_numpy(expected_train).float(), atol=TOLERANCE, rtol=0
    )
    torch.testing.assert_close(
        dataset.test_inputs, torch.from_numpy(expected_test).float(), atol=TOLERANCE, rtol=0
    )
    assert dataset.num_classes == 10
    assert dataset.task == "classification"
    assert dataset.augment is None
    assert "30 train / 10 test" in dataset.description


def test_gzip_unpacked_next_to_archive(mnist_files):
    written = mnist_files(compress=True)
    load_dataset(config_for("mnist", written.root))
    raw = written.root / "MNIST" / "raw"

    assert (raw / "train-images-idx3-ubyte").is_file()
    assert (raw / "train-images-idx3-ubyte.gz").is_file()
    assert not list(raw.glob("*.partial"))


def test_mnist_missing_file_message(mnist_files):
    written = mnist_files()
    (written.root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    expected_path = re.escape(str(written.root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"))

    with pytest.raises(FileNotFoundError, match=expected_path) as info:
        load_dataset(config_for("mnist", written.root))
    assert "--download" in str(info.value)
    assert "Copy the standard MNIST files" in str(info.value)


def test_empty_root_lists_all_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="Missing: .*data_batch_1.*batches.meta"):
        load_dataset(config_for("cifar10", tmp_path))


def test_root_unset_raises():
    with pytest.raises(ValueError, match="needs data.root"):
        load_dataset(DataConfig(name="cifar100"))


def test_mnist_label_out_of_range(mnist_files):
    written = mnist_files(max_label=12)

    with pytest.raises(ValueError, match=r"outside 0\.\.9"):
        load_dataset(config_for("mnist", written.root))


def test_cifar10_pickles_load(cifar10_files):
    written = cifar10_files()
    dataset = load_dataset(config_for("cifar10", written.root))
    expected_train, expected_test = expected_normalized(
        written.train_images, written.test_images
    )

    assert dataset.train_inputs.shape == (30, 3, 32, 32)
    assert dataset.test_inputs.shape == (8, 3, 32, 32)
    assert dataset.input_shape == (3, 32, 32)
    assert dataset.train_targets.tolist() == written.train_labels.tolist()
    assert dataset.test_targets.tolist() == written.test_labels.tolist()
    torch.testing.assert_close(
        dataset.train_inputs, torch.from_numpy(expected_train).float(), atol=TOLERANCE, rtol=0
    )
    torch.testing.assert_close(
        dataset.test_inputs, torch.from_numpy(expected_test).float(), atol=TOLERANCE, rtol=0
    )
    assert dataset.num_classes == 10


def test_cifar_channels_standardized(cifar10_files):
    written = cifar10_files()
    dataset = load_dataset(config_for("cifar10", written.root))
    channel_mean = dataset.train_inputs.double().mean(dim=(0, 2, 3))
    channel_std = dataset.train_inputs.double().std(dim=(0, 2, 3), unbiased=False)

    torch.testing.assert_close(channel_mean, torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(channel_std, torch.ones(3, dtype=torch.float64), atol=1e-5, rtol=0)


def test_cifar100_uses_fine_labels(cifar100_files):
    written = cifar100_files()
    dataset = load_dataset(config_for("cifar100", written.root))

    assert dataset.train_inputs.shape == (24, 3, 32, 32)
    assert dataset.test_inputs.shape == (8, 3, 32, 32)
    assert dataset.train_targets.tolist() == written.train_labels.tolist()
    assert dataset.test_targets.tolist() == written.test_labels.tolist()
    assert dataset.num_classes == 100


def test_cifar_missing_meta_message(cifar100_files):
    written = cifar100_files()
    (written.root / "cifar-100-python" / "meta").unlink()

    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.meta.*--download"):
        load_dataset(config_for("cifar100", written.root))


def test_cifar_md5_checked_above_limit(cifar10_files, monkeypatch):
    written = cifar10_files()
    monkeypatch.setattr(vision, "MD5_MIN_BYTES", 0)

    with pytest.raises(RuntimeError, match="data_batch_1 failed its md5 check"):
        load_dataset(config_for("cifar10", written.root))


def test_corrupt_pickle_message(cifar10_files):
    written = cifar10_files()
    (written.root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")

    with pytest.raises(RuntimeError, match="Reading the CIFAR-10 train files"):
        load_dataset(config_for("cifar10", written.root))


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_skipped_when_present(mnist_files, cifar10_files, no_network, name):
    written = mnist_files() if name == "mnist" else cifar10_files()
    dataset = load_dataset(config_for(name, written.root, download=True))

    assert dataset.num_train == 30


def test_max_train_seeded_subset(cifar10_files):
    written = cifar10_files()
    first = load_dataset(config_for("cifar10", written.root, max_train=10, split_seed=3))
    again = load_dataset(config_for("cifar10", written.root, max_train=10, split_seed=3))
    other = load_dataset(config_for("cifar10", written.root, max_train=10, split_seed=4))

    assert first.num_train == 10
    assert first.num_test == 8
    assert torch.equal(first.train_inputs, again.train_inputs)
    assert not torch.equal(first.train_inputs, other.train_inputs)
    assert "subset of the 30" in first.description
    channel_mean = first.train_inputs.double().mean(dim=(0, 2, 3))
    torch.testing.assert_close(channel_mean, torch.zeros(3, dtype=torch.float64), atol=1e-6, rtol=0)


def is_crop_of(image: torch.Tensor, original: torch.Tensor, fill: torch.Tensor) -> bool:
    """Return whether image [C, H, W] equals some crop of the 4-pixel padded original, or its
    mirror image, by trying all 9 x 9 offsets and both orientations."""
    padded = fill.view(-1, 1, 1).expand(3, 40, 40).clone()
    padded[:, 4:36, 4:36] = original
    for top, left, flip in itertools.product(range(9), range(9), (False, True)):
        crop = padded[:, top : top + 32, left : left + 32]
        if flip:
            crop = crop.flip(-1)
        if torch.equal(crop, image):
            return True
    return False


def test_cifar_augment_crops_and_flips(cifar10_files):
    written = cifar10_files()
    dataset = load_dataset(config_for("cifar10", written.root, augment=True))
    batch = dataset.train_inputs[:16]
    augmented = dataset.augment(batch, torch.Generator().manual_seed(0))
    pixels = written.train_images.astype(np.float64) / 255.0
    black = -pixels.mean(axis=(0, 2, 3)) / pixels.std(axis=(0, 2, 3))

    assert isinstance(dataset.augment, RandomCropFlip)
    torch.testing.assert_close(
        torch.tensor(dataset.augment.fill, dtype=torch.float64),
        torch.from_numpy(black),
        atol=1e-6,
        rtol=0,
    )
    assert augmented.shape == batch.shape
    assert not torch.equal(augmented, batch)
    fill = torch.tensor(dataset.augment.fill, dtype=torch.float32)
    for index in range(16):
        assert is_crop_of(augmented[index], batch[index], fill), f"image {index}"


def test_augment_same_seed_same_output():
    augment = RandomCropFlip(fill=(0.0, 0.0, 0.0))
    batch = torch.randn(32, 3, 32, 32, generator=torch.Generator().manual_seed(5))

    first = augment(batch, torch.Generator().manual_seed(1))
    again = augment(batch, torch.Generator().manual_seed(1))
    other = augment(batch, torch.Generator().manual_seed(2))

    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_augment_rejects_wrong_channels():
    augment = RandomCropFlip(fill=(0.0, 0.0, 0.0))

    with pytest.raises(ValueError, match="C=3 channels"):
        augment(torch.zeros(2, 1, 28, 28), torch.Generator())
