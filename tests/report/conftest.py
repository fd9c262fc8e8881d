"""Synthetic width-depth study directories in the format the study runner writes.

``make_study(root, trend=...)`` writes study.json and one run directory per run. The data
are built so the expected verdict is known:

- trend="paper": the final minimum cosine rises with width and falls with depth, and the
  loss falls faster for wider and slower for deeper networks (every claim holds).
- trend="reversed": every dependence is flipped (every claim fails).
- trend="noise": every value is drawn independently of width and depth.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gradconf.config import ModelConfig, RunConfig, TrainConfig

TRENDS = ("paper", "reversed", "noise")
LAYERS = ("layers.0.weight", "layers.0.bias", "head.weight", "head.bias")
COSINES_PER_MEASUREMENT = 40


def _goodness(group: str, position: float, trend: str, rng: np.random.Generator) -> float:
    """Return a score in [0, 1]: higher means higher min cosine and faster training."""
    if trend == "noise":
        return float(rng.uniform())
    score = position if group == "width" else 1.0 - position
    return score if trend == "paper" else 1.0 - score


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2))


def _run_frames(
    goodness: float, epochs: int, rng: np.random.Generator, diverge_at: int | None
) -> dict[str, pd.DataFrame]:
    last_epoch = epochs if diverge_at is None else diverge_at - 1
    epoch_index = np.arange(last_epoch + 1)
    rate = 0.2 + 0.6 * goodness + 0.01 * rng.normal()
    train_loss = 2.3 * np.exp(-rate * epoch_index)
    metrics = pd.DataFrame(
        {
            "epoch": epoch_index,
            "lr": np.full(epoch_index.size, 0.05),
            "train_loss": train_loss,
            "train_accuracy": 1.0 - train_loss / 2.5,
            "test_loss": train_loss * 1.1,
            "test_accuracy": 0.5 + 0.4 * goodness + 0.01 * rng.normal(size=epoch_index.size),
            "wall_seconds": 0.1 * epoch_index,
        }
    )

    final_min = -0.6 + 0.4 * goodness + 0.005 * rng.normal()
    initial_min = -0.5 + 0.1 * goodness + 0.005 * rng.normal()
    confusion_rows, layer_rows, cosine_frames = [], [], []
    for epoch in epoch_index:
        # The minimum cosine moves linearly from its initial to its final value.
        min_cosine = initial_min + (final_min - initial_min) * epoch / max(epochs, 1)
        spread = 0.8 * rng.beta(2, 2, COSINES_PER_MEASUREMENT - 1)
        samples = np.concatenate([[min_cosine], min_cosine + spread])
        confusion_rows.append(
            {
                "epoch": int(epoch), "granularity": "minibatch", "pairing": "disjoint",
                "engine": "minibatch", "batchnorm": "train", "coverage": 1.0,
                "num_gradients": 2 * COSINES_PER_MEASUREMENT, "num_pairs": COSINES_PER_MEASUREMENT,
                "eta": max(0.0, -min_cosine * 0.01), "min_inner": min_cosine * 0.01,
                "mean_inner": float(samples.mean()) * 0.01, "min_cosine": min_cosine,
                "mean_cosine": float(samples.mean()), "median_cosine": float(np.median(samples)),
                "q05_cosine": float(np.quantile(samples, 0.05)),
                "q95_cosine": float(np.quantile(samples, 0.95)),
                "negative_fraction": float((samples < 0).mean()), "undefined_cosines": 0,
                "mean_sq_norm": 0.01, "min_sq_norm": 0.005, "max_sq_norm": 0.02,
            }
        )
        for layer in LAYERS:
            layer_rows.append(
                {"epoch": int(epoch), "layer": layer, "min_cosine": min_cosine,
                 "mean_cosine": float(samples.mean()), "mean_sq_norm": 0.0025}
            )
        cosine_frames.append(
            pd.DataFrame({"epoch": np.full(samples.size, epoch, dtype=np.int64),
                          "cosine": samples.astype(np.float32)})
        )
    return {
        "metrics": metrics,
        "confusion": pd.DataFrame(confusion_rows),
        "layers": pd.DataFrame(layer_rows),
        "cosines": pd.concat(cosine_frames, ignore_index=True),
    }


def make_study(
    root: Path,
    *,
    trend: str = "paper",
    widths: Iterable[int] = (8, 32, 128, 512),
    depths: Iterable[int] = (1, 2, 4, 8),
    seeds: Iterable[int] = (0, 1, 2),
    epochs: int = 4,
    incomplete: Iterable[str] = (),
    diverged: Iterable[str] = (),
    kind: str = "width-depth",
    base_width: int = 64,
    base_depth: int = 2,
    rng_seed: int = 0,
) -> Path:
    """Write a synthetic study under ``root`` and return ``root``.

    Runs named in ``incomplete`` get every file except complete.json; runs named in
    ``diverged`` stop after epoch 1 and have status "diverged".
    """
    if trend not in TRENDS:
        raise ValueError(f"trend={trend!r}; use one of {TRENDS}")
    rng = np.random.default_rng(rng_seed)
    incomplete, diverged = set(incomplete), set(diverged)
    widths, depths, seeds = list(widths), list(depths), list(seeds)
    entries = []
    for group, values in (("width", widths), ("depth", depths)):
        for index, value in enumerate(values):
            position = index / max(len(values) - 1, 1)
            for seed in seeds:
                width = value if group == "width" else base_width
                depth = value if group == "depth" else base_depth
                run_id = f"{group}-{value}-seed{seed}"
                entries.append({"run_id": run_id, "group": group, "x_name": group, "x": value,
                                "seed": seed, "width": width, "depth": depth,
                                "dir": f"runs/{run_id}"})
                config = RunConfig(
                    model=ModelConfig(width=width, depth=depth),
                    train=TrainConfig(epochs=epochs),
                    seed=seed,
                )
                run_dir = root / "runs" / run_id
                run_dir.mkdir(parents=True)
                goodness = _goodness(group, position, trend, rng)
                frames = _run_frames(goodness, epochs, rng, 2 if run_id in diverged else None)
                for name, frame in frames.items():
                    frame.to_parquet(run_dir / f"{name}.parquet", index=False)
                status = "diverged" if run_id in diverged else "completed"
                _write_json(run_dir / "config.json", config.to_dict())
                _write_json(
                    run_dir / "manifest.json",
                    {"gradconf_version": "0.1.0", "python": "3.11.0", "torch": "2.4.0",
                     "platform": "Linux", "seed": seed, "device": "cpu",
                     "started_at": "2025-01-01T00:00:00+00:00",
                     "finished_at": "2025-01-01T00:01:00+00:00", "wall_seconds": 60.0,
                     "deterministic": {"deterministic_algorithms": False}, "status": status,
                     "config_digest": config.digest(), "labels": entries[-1]},
                )
                if run_id not in incomplete:
                    _write_json(run_dir / "complete.json",
                                {"status": status, "config_digest": config.digest(), "error": None,
                                 "loss": "cross_entropy"})
    _write_json(
        root / "study.json",
        {"kind": kind, "name": f"synthetic {trend} study",
         "created_at": "2025-01-01T00:00:00+00:00",
         "settings": {"widths": widths, "depths": depths, "seeds": seeds, "epochs": epochs},
         "runs": entries},
    )
    return root


@pytest.fixture
def study_factory(tmp_path: Path) -> Callable[..., Path]:
    """Return ``make(name="study", **options)``, which writes a fresh study under tmp_path.

    Use it when a test changes the study's files; otherwise use ``shared_study``.
    """

    def make(name: str = "study", **options: Any) -> Path:
        return make_study(tmp_path / name, **options)

    return make


@pytest.fixture(scope="session")
def shared_study(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Return ``make(**options)``, which writes each distinct study once per session.

    Tests must not change these files, because other tests read the same directory.
    """
    made: dict[str, Path] = {}

    def make(**options: Any) -> Path:
        key = repr(sorted(options.items()))
        if key not in made:
            made[key] = make_study(tmp_path_factory.mktemp("study"), **options)
        return made[key]

    return make
