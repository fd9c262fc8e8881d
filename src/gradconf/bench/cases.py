"""Benchmark cases: a model layout, an input shape and a batch size B.

The models are built here, independently of ``gradconf.models``, so that the benchmark
measures fixed layouts. Every model is an ``nn.Sequential`` of ``Linear``, ``Conv2d``,
``ReLU``, ``MaxPool2d``, ``AdaptiveAvgPool2d`` and ``Flatten``, which all four per-example
methods (loop, torch.func, BackPACK, Opacus) support. The loss is cross-entropy over 10
classes with ``reduction="mean"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["CASES", "NUM_CLASSES", "QUICK_BATCH_SIZE", "QUICK_CASES", "BenchCase", "build_case"]

NUM_CLASSES = 10
# Quick mode (a smoke run) caps every case at this batch size.
QUICK_BATCH_SIZE = 8


def mlp(widths: tuple[int, ...]) -> nn.Sequential:
    """Build an MLP with ReLU between ``Linear`` layers: widths[0] -> ... -> widths[-1]."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        if index > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)


def small_cnn() -> nn.Sequential:
    """Build a two-conv CNN for [B, 3, 32, 32] inputs (about 25k parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # [B, 16, 16, 16]
        nn.Conv2d(16, 32, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # [B, 32, 8, 8]
        nn.Flatten(),
        nn.Linear(32 * 8 * 8, NUM_CLASSES),
    )


def plain_wide_resnet_16_2() -> nn.Sequential:
    """Build the Wide-ResNet-16-2 conv layout without BatchNorm or skip connections.

    A 3×3 conv maps to 16 channels. Three stages of 2 blocks of two 3×3 convs follow, with
    32, 64 and 128 channels and stride 2 on the first conv of stages 2 and 3. ReLU follows
    every conv, then global average pooling and a linear classifier: 13 convs and 1 linear,
    about 0.68M parameters. The two 1×1 shortcut convs of the original go with the skips.
    """
    layers: list[nn.Module] = [nn.Conv2d(3, 16, kernel_size=3, padding=1), nn.ReLU()]
    in_channels = 16
    for stage, channels in enumerate((32, 64, 128)):
        for conv_index in range(4):  # 2 blocks × 2 convs
            stride = 2 if stage > 0 and conv_index == 0 else 1
            layers.append(nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1))
            layers.append(nn.ReLU())
            in_channels = channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, NUM_CLASSES)]  # [B, 128]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class BenchCase:
    """One benchmark case: ``build()`` returns the model, inputs are [B, *input_shape].

    ``family`` ("mlp" or "cnn") selects which targets apply to the case.
    """

    name: str
    description: str
    family: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    batch_size: int


_MLP_512 = (64, 512, 512, 512, 512, NUM_CLASSES)
_MLP_2048 = (64, 2048, 2048, 2048, 2048, NUM_CLASSES)

CASES: dict[str, BenchCase] = {
    case.name: case
    for case in (
        BenchCase("mlp512-b32", "MLP 64→512×4→10", "mlp", lambda: mlp(_MLP_512), (64,), 32),
        BenchCase("mlp512-b128", "MLP 64→512×4→10", "mlp", lambda: mlp(_MLP_512), (64,), 128),
        BenchCase("mlp512-b512", "MLP 64→512×4→10", "mlp", lambda: mlp(_MLP_512), (64,), 512),
        BenchCase(
            "mlp2048-b128", "MLP 64→2048×4→10", "mlp", lambda: mlp(_MLP_2048), (64,), 128
        ),
        BenchCase(
            "cnn-b128", "CNN conv 3→16→32, max-pool, linear", "cnn", small_cnn, (3, 32, 32), 128
        ),
        # B=64 keeps the per-example peers (B × 0.68M gradients each) within a few minutes.
        BenchCase(
            "wrn16-2-b64",
            "Wide-ResNet-16-2 layout, no BN, no skips",
            "cnn",
            plain_wide_resnet_16_2,
            (3, 32, 32),
            64,
        ),
    )
}
QUICK_CASES = ("mlp512-b32", "cnn-b128")


def build_case(
    case: BenchCase, *, seed: int, device: torch.device, batch_size: int | None = None
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Build the fp32 model, inputs [B, *input_shape] and class targets [B] from ``seed``.

    The same seed gives the same weights and data in every process, so each method gets
    identical inputs in its own subprocess.
    """
    size = case.batch_size if batch_size is None else batch_size
    torch.manual_seed(seed)
    model = case.build().to(device=device, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn((size, *case.input_shape), generator=generator)
    targets = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
    return model, inputs.to(device), targets.to(device)


def resolve_cases(names: list[str] | None, *, quick: bool) -> list[BenchCase]:
    """Return the cases named in ``names`` (all, or the quick set, when None)."""
    if names is None:
        names = list(QUICK_CASES if quick else CASES)
    unknown = [name for name in names if name not in CASES]
    if unknown:
        raise ValueError(
            f"unknown benchmark case(s) {unknown}; available: {', '.join(CASES)}. "
            "Pass a comma-separated subset to --cases."
        )
    return [CASES[name] for name in names]
