"""Batch augmentation for CIFAR: random crops after padding, and random horizontal flips."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RandomCropFlip"]


@dataclass(frozen=True)
class RandomCropFlip:
    """Pad each image by ``padding`` pixels, crop it back at a random offset, maybe flip it.

    This is the standard CIFAR augmentation (4-pixel padding, 50% horizontal flips) done
    on a whole batch at once. ``fill`` contains one value per channel for the padding. The
    CIFAR loader sets it to the normalized value of a black pixel, so the result equals
    zero padding of the raw image before normalization, as in the usual torchvision
    pipeline ``RandomCrop(32, padding=4)`` followed by ``Normalize``.
    """

    fill: tuple[float, ...]
    padding: int = 4
    flip: bool = True

    def __call__(self, inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment images [B, C, H, W] -> [B, C, H, W], drawing every choice from ``generator``.

        The same generator state gives the same crops and flips. The draws happen on the
        generator's device and the result stays on the device of ``inputs``.
        """
        if inputs.dim() != 4 or inputs.shape[1] != len(self.fill):
            raise ValueError(
                f"RandomCropFlip expects images [B, C, H, W] with C={len(self.fill)} channels "
                f"(one fill value each), got shape {tuple(inputs.shape)}."
            )
        batch, channels, height, width = inputs.shape
        pad = self.padding

        fill = torch.tensor(self.fill, dtype=inputs.dtype, device=inputs.device)
        padded = fill.view(1, channels, 1, 1).expand(
            batch, channels, height + 2 * pad, width + 2 * pad
        ).clone()
        padded[:, :, pad : pad + height, pad : pad + width] = inputs

        # One top-left corner per image, each coordinate uniform in 0..2*pad.
        offsets = torch.randint(
            0, 2 * pad + 1, (2, batch), generator=generator, device=generator.device
        ).to(inputs.device)
        rows = offsets[0, :, None] + torch.arange(height, device=inputs.device)  # [B, H]
        column_steps = torch.arange(width, device=inputs.device).expand(batch, width)  # [B, W]
        if self.flip:
            flipped = torch.rand(batch, generator=generator, device=generator.device) < 0.5
            flipped = flipped.to(inputs.device)
            # A flipped image reads its crop's columns from right to left.
            column_steps = torch.where(flipped[:, None], column_steps.flip(1), column_steps)
        columns = offsets[1, :, None] + column_steps  # [B, W]

        # Advanced indexing broadcasts [B,1,1,1], [1,C,1,1], [B,1,H,1], [B,1,1,W] -> [B, C, H, W].
        example_index = torch.arange(batch, device=inputs.device).view(batch, 1, 1, 1)
        channel_index = torch.arange(channels, device=inputs.device).view(1, channels, 1, 1)
        return padded[
            example_index,
            channel_index,
            rows.view(batch, 1, height, 1),
            columns.view(batch, 1, 1, width),
        ]
