"""scikit-learn's bundled handwritten digits: 1,797 real 8×8 grayscale images, no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits as sklearn_load_digits

from gradconf.config import DataConfig
from gradconf.data.dataset import Dataset, normalize_channels, stratified_split

__all__ = ["load_digits"]


def load_digits(config: DataConfig) -> Dataset:
    """Load the digits as inputs [N, 1, 8, 8] and int64 labels [N] in 0..9.

    The split is stratified and seeded by ``config.split_seed``, with ``config.test_fraction``
    of the images in the test set. ``config.max_train`` keeps the first training images of
    that shuffled split. Pixels are standardized with one mean and one std over all pixels
    of the kept training images, the per-channel rule used for MNIST and CIFAR as well.
    Per-pixel statistics would divide the border pixels, which are 0 in nearly every image,
    by a tiny std and turn their few nonzero values into outliers of 10 or more.
    """
    bunch = sklearn_load_digits()
    # [N, 64] -> [N, 1, 8, 8]. The pixel values are integers 0..16.
    images = bunch.data.reshape(-1, 1, 8, 8)
    train_images, train_labels, test_images, test_labels = stratified_split(
        images, bunch.target, config.test_fraction, config.split_seed
    )

    train_inputs = torch.as_tensor(train_images)[: config.max_train]
    train_targets = torch.as_tensor(train_labels, dtype=torch.int64)[: config.max_train]
    train_inputs, test_inputs, _, _ = normalize_channels(
        train_inputs, torch.as_tensor(test_images)
    )

    description = (
        f"digits: {train_inputs.shape[0]:,} train / {test_inputs.shape[0]:,} test 8x8 "
        f"grayscale images, 10 classes (scikit-learn load_digits, stratified split, "
        f"seed {config.split_seed})"
    )
    return Dataset(
        name="digits",
        train_inputs=train_inputs,
        train_targets=train_targets,
        test_inputs=test_inputs,
        test_targets=torch.as_tensor(test_labels, dtype=torch.int64),
        input_shape=(1, 8, 8),
        num_classes=10,
        task="classification",
        description=description,
    )
