"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100, read through torchvision from ``data.root``.

The files must sit where torchvision looks for them (see ``VISION_SOURCES``), or are
downloaded there when ``data.download`` is true. Every image is held in memory as float32
[N, C, H, W], standardized per channel with the training set's statistics.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradconf.config import DataConfig
from gradconf.data.augment import RandomCropFlip
from gradconf.data.dataset import Dataset, normalize_channels

__all__ = ["VISION_SOURCES", "VisionSource", "load_vision"]

logger = logging.getLogger(__name__)

# NOTE: torchvision's CIFAR classes require each file to match the md5 sum of the official
# release, which small files in the same format, such as the test fixtures, cannot. Files of
# at least this size keep that check and smaller ones only need to exist and parse. Each
# official data file contains 10,000 or more images of 3,072 bytes, so all of them are checked.
# The metadata files contain only class names and are below the limit.
MD5_MIN_BYTES = 1 << 20

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class VisionSource:
    """Location of one dataset's files as torchvision expects them, relative to the root."""

    title: str
    torchvision_class: str
    folder: str
    files: tuple[str, ...]
    num_classes: int
    # IDX files may also be gzip'd (name + ".gz"), and are then unpacked next to the archive.
    gzip_allowed: bool = False


VISION_SOURCES: dict[str, VisionSource] = {
    "mnist": VisionSource("MNIST", "MNIST", "MNIST/raw", _IDX_FILES, 10, gzip_allowed=True),
    "fashion-mnist": VisionSource(
        "Fashion-MNIST", "FashionMNIST", "FashionMNIST/raw", _IDX_FILES, 10, gzip_allowed=True
    ),
    "cifar10": VisionSource(
        "CIFAR-10",
        "CIFAR10",
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
        10,
    ),
    "cifar100": VisionSource(
        "CIFAR-100", "CIFAR100", "cifar-100-python", ("train", "test", "meta"), 100
    ),
}


def _import_torchvision_datasets() -> Any:
    try:
        import torchvision.datasets
    except ImportError as err:
        raise ImportError(
            "MNIST, Fashion-MNIST and CIFAR need torchvision, which is not installed. "
            "Install it with `pip install 'gradconf[vision]'` or `pip install torchvision`."
        ) from err
    return torchvision.datasets


def _dataset_class(source: VisionSource) -> type:
    """Return the torchvision class for ``source``.

    For CIFAR it is a subclass without the md5 checks, which ``_prepare_files`` does instead
    for files of at least MD5_MIN_BYTES.
    """
    base = getattr(_import_torchvision_datasets(), source.torchvision_class)
    if not hasattr(base, "train_list"):
        return base
    # train_list, test_list and meta are class attributes of torchvision's CIFAR10 (checked
    # with torchvision 0.29). An md5 of None makes its check_integrity test only existence.
    return type(
        f"{base.__name__}Files",
        (base,),
        {
            "train_list": [[name, None] for name, _ in base.train_list],
            "test_list": [[name, None] for name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        },
    )


def _official_md5(source: VisionSource) -> dict[str, str]:
    """Map each file name of a CIFAR source to its official md5 sum (empty for MNIST)."""
    base = getattr(_import_torchvision_datasets(), source.torchvision_class)
    if not hasattr(base, "train_list"):
        return {}
    sums = {name: md5 for name, md5 in base.train_list + base.test_list}
    sums[base.meta["filename"]] = base.meta["md5"]
    return sums


def _file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unpack_gzip(packed: Path, target: Path) -> None:
    """Unpack ``packed`` to ``target`` through a temporary file, so no partial file remains."""
    logger.info("Unpacking %s to %s", packed, target)
    partial = target.with_name(target.name + ".partial")
    try:
        with gzip.open(packed, "rb") as compressed, open(partial, "wb") as unpacked:
            shutil.copyfileobj(compressed, unpacked)
        partial.replace(target)
    except (OSError, EOFError) as err:
        partial.unlink(missing_ok=True)
        raise RuntimeError(
            f"Unpacking {packed} failed: {err}. torchvision reads only the unpacked file, so "
            f"unpack it to {target} yourself, or replace the .gz with an intact copy."
        ) from err


def _prepare_files(source: VisionSource, root: Path) -> None:
    """Check that every file of ``source`` is in place, unpacking gzip'd IDX files as needed.

    Raises FileNotFoundError naming every missing path, and RuntimeError for a file of at
    least MD5_MIN_BYTES whose md5 differs from the official release.
    """
    folder = root / source.folder
    missing = []
    for name in source.files:
        path = folder / name
        packed = folder / f"{name}.gz"
        if path.is_file():
            continue
        if source.gzip_allowed and packed.is_file():
            _unpack_gzip(packed, path)
            continue
        missing.append(f"{path}{' (or .gz)' if source.gzip_allowed else ''}")
    if missing:
        raise FileNotFoundError(
            f"{source.title} files not found under data.root={str(root)!r}. Missing: "
            f"{', '.join(missing)}. Copy the standard {source.title} files "
            f"({', '.join(source.files)}) into {folder}, or set data.download=true (CLI flag "
            f"--download) to download them there."
        )

    for name, expected in _official_md5(source).items():
        path = folder / name
        if path.stat().st_size < MD5_MIN_BYTES:
            continue
        actual = _file_md5(path)
        if actual != expected:
            raise RuntimeError(
                f"{path} failed its md5 check: expected {expected}, got {actual}, so the file is "
                f"corrupted or incomplete. Replace it with the standard {source.title} file, or "
                "delete it and set data.download=true (CLI flag --download)."
            )


def _read_split(source: VisionSource, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split as float32 images [N, C, H, W] in [0, 1] and int64 labels [N]."""
    split = "train" if train else "test"
    try:
        dataset = _dataset_class(source)(root=str(root), train=train, download=False)
    except (
        RuntimeError, ValueError, TypeError, AssertionError, EOFError, pickle.UnpicklingError
    ) as err:
        raise RuntimeError(
            f"Reading the {source.title} {split} files in {root / source.folder} failed: {err}. "
            f"The files may be incomplete or not in the standard format, so copy the standard "
            f"{source.title} files there again."
        ) from err

    images = torch.as_tensor(np.asarray(dataset.data))
    if images.dim() == 3:
        images = images.unsqueeze(1)  # MNIST: [N, H, W] -> [N, 1, H, W]
    else:
        images = images.permute(0, 3, 1, 2)  # CIFAR: [N, H, W, C] -> [N, C, H, W]
    images = images.contiguous().float() / 255.0
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)

    if labels.numel() > 0 and not 0 <= int(labels.min()) <= int(labels.max()) < source.num_classes:
        raise ValueError(
            f"{source.title} {split} labels in {root / source.folder} range from "
            f"{int(labels.min())} to {int(labels.max())}, outside 0..{source.num_classes - 1}; "
            "the files do not hold this dataset."
        )
    return images, labels


def _download(source: VisionSource, root: Path) -> None:
    """Download the files of ``source`` into ``root`` through torchvision, unless present."""
    logger.info("Downloading %s into %s unless it is already there", source.title, root)
    try:
        _dataset_class(source)(root=str(root), train=True, download=True)
    except (OSError, RuntimeError) as err:
        raise RuntimeError(
            f"Downloading {source.title} into {root} failed: {err}. Check the network "
            f"connection, or copy the standard files to {root / source.folder} and leave "
            "data.download false."
        ) from err


def load_vision(config: DataConfig) -> Dataset:
    """Load MNIST, Fashion-MNIST, CIFAR-10 or CIFAR-100 from ``config.root`` into memory.

    Inputs are float32 [N, 1, 28, 28] (MNIST, Fashion-MNIST) or [N, 3, 32, 32] (CIFAR),
    labels int64 [N]. The standard train/test split is kept. ``config.max_train`` keeps
    the first training images after a shuffle seeded by ``config.split_seed``. Each channel
    is standardized with the mean and std of the kept training images. For CIFAR with
    ``config.augment``, ``Dataset.augment`` is a ``RandomCropFlip``.
    """
    source = VISION_SOURCES[config.name]
    if config.root is None:
        raise ValueError(
            f"data.name={config.name!r} needs data.root, the directory that contains the "
            f"{source.title} files in {source.folder}/ (or receives them with "
            "data.download=true). Set data.root."
        )
    root = Path(config.root).expanduser()

    if config.download:
        _download(source, root)
    _prepare_files(source, root)
    logger.info("Reading %s from %s", source.title, root / source.folder)
    train_images, train_labels = _read_split(source, root, train=True)
    test_images, test_labels = _read_split(source, root, train=False)

    num_available = train_images.shape[0]
    if config.max_train is not None:
        generator = torch.Generator().manual_seed(config.split_seed)
        keep = torch.randperm(num_available, generator=generator)[: config.max_train]
        train_images, train_labels = train_images[keep], train_labels[keep]
    train_inputs, test_inputs, mean, std = normalize_channels(train_images, test_images)

    augment = None
    if config.augment and source.torchvision_class.startswith("CIFAR"):
        # A black pixel (0 before normalization) after normalization, one value per channel.
        augment = RandomCropFlip(fill=tuple((-mean / std).tolist()))

    subset = ""
    if train_inputs.shape[0] < num_available:
        subset = f", a seeded random subset of the {num_available:,}"
    channels, height, width = train_inputs.shape[1:]
    description = (
        f"{config.name}: {train_inputs.shape[0]:,} train{subset} / {test_inputs.shape[0]:,} "
        f"test images {channels}x{height}x{width}, {source.num_classes} classes "
        f"(torchvision {source.torchvision_class} from {root})"
    )
    return Dataset(
        name=config.name,
        train_inputs=train_inputs,
        train_targets=train_labels,
        test_inputs=test_inputs,
        test_targets=test_labels,
        input_shape=(channels, height, width),
        num_classes=source.num_classes,
        task="classification",
        description=description,
        augment=augment,
    )
