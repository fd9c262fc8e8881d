"""Monte Carlo helpers shared by the theory experiments on random networks at initialization.

One draw is: N points uniform on the unit sphere of R^d, scalar targets from a random tanh
teacher (``gradconf.data.sphere_teacher``), a freshly initialized scalar-output MLP without
biases, and the per-example Gram of the square losses f_i = ½(f(x_i) − y_i)², from
``gradconf.engine.per_example_gram`` with ``loss_reduction="sum"``, so the Gram entries are
⟨∇f_i, ∇f_j⟩ without the 1/B² of a mean loss. Draw k uses the same data in every cell of a grid (common random
numbers), so cells differ only in the architecture and the init.

The normalized confusion of a draw is η̂ / mean_i ‖∇f_i‖², with η̂ = max(0, −min_{i≠j}
⟨∇f_i, ∇f_j⟩). It is unchanged when every gradient is scaled by the same factor, so it
compares networks whose gradient norms differ with width, depth or init.
"""

from __future__ import annotations

import copy
import logging
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from gradconf.config import ModelConfig
from gradconf.data import sphere_points, sphere_teacher
from gradconf.engine import per_example_gram
from gradconf.measure import gram_statistics
from gradconf.models import build_model, initialize
from gradconf.reproduce.base import cached_frame
from gradconf.runs.run import resolve_device

__all__ = ["derive_seed", "measure_draw", "run_cells", "sphere_problem", "square_loss"]

logger = logging.getLogger(__name__)


def derive_seed(*keys: int) -> int:
    """Return a 32-bit seed determined by the non-negative integer ``keys`` (``SeedSequence``)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def square_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Return Σ_i ½(f(x_i) − y_i)² for outputs and targets [B, 1] (a sum over the batch)."""
    return 0.5 * ((outputs - targets) ** 2).sum()


def sphere_problem(
    num_examples: int, dim: int, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return float64 inputs [N, d] on the unit sphere and tanh-teacher targets [N, 1]."""
    generator = torch.Generator().manual_seed(seed)
    inputs = sphere_points(num_examples, dim, generator)  # [N, d] float32
    targets = sphere_teacher(dim, generator)(inputs)  # [N, 1]
    return inputs.to(device, torch.float64), targets.to(device, torch.float64)


def measure_draw(
    model: nn.Module,
    config: ModelConfig,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    init_seed: int,
) -> dict[str, float]:
    """Re-initialize ``model`` with ``init_seed`` and return its confusion statistics.

    ``model`` is the float64 CPU model of ``config``; its weights are overwritten in place
    with ``config.init``, and a copy moves to the device of ``inputs``. Returns min_cosine,
    eta, mean_sq_norm and eta_normalized = eta / mean_sq_norm. The global torch generator
    is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        initialize(model, config.init, config.kappa, config.activation)
    if inputs.device.type != "cpu":
        model = copy.deepcopy(model).to(inputs.device)
    result = per_example_gram(model, square_loss, inputs, targets, loss_reduction="sum")
    stats, _ = gram_statistics(result.gram)
    return {
        "min_cosine": stats.min_cosine,
        "eta": stats.eta,
        "mean_sq_norm": stats.mean_sq_norm,
        "eta_normalized": stats.eta / stats.mean_sq_norm,
    }


def run_cells(
    cells: Sequence[dict[str, Any]],
    draws: int,
    out_dir: Path,
    make_config: Callable[[dict[str, Any]], ModelConfig],
    settings: dict[str, Any],
    *,
    name: str,
    progress: bool,
    device: str,
) -> pd.DataFrame:
    """Run ``draws`` draws in every cell not yet stored and return one row per draw.

    A cell is a dict of grid values, e.g. ``{"width": 40, "depth": 4}``; it is stored as
    ``out_dir/cells/<key>=<value>-....parquet``. ``make_config(cell)`` builds its model
    config. ``settings`` supplies num_examples, dim and seed.
    """
    torch_device = resolve_device(device)
    problems = [
        sphere_problem(settings["num_examples"], settings["dim"],
                       derive_seed(settings["seed"], draw), torch_device)
        for draw in range(draws)
    ]
    frames = []
    for cell in tqdm(cells, desc=name, disable=not progress):
        stem = "-".join(f"{key}={value}" for key, value in cell.items())
        config = make_config(cell)
        model = build_model(config, (settings["dim"],), 1).to(torch.float64)
        # The init seed depends on the cell's values, not on its position in the grid.
        cell_key = zlib.crc32(stem.encode())

        def compute(cell: dict[str, Any] = cell, config: ModelConfig = config,
                    model: nn.Module = model, cell_key: int = cell_key) -> pd.DataFrame:
            rows = []
            for draw, (inputs, targets) in enumerate(problems):
                init_seed = derive_seed(settings["seed"], draw, cell_key)
                rows.append({**cell, "draw": draw,
                             **measure_draw(model, config, inputs, targets, init_seed)})
            logger.debug("%s: measured %d draws of cell %s", name, draws, stem)
            return pd.DataFrame(rows)

        frames.append(cached_frame(out_dir / "cells" / f"{stem}.parquet", compute))
    return pd.concat(frames, ignore_index=True)
