"""The experiment protocol of ``gradconf reproduce`` and helpers shared by the experiments.

An experiment is anything with the attributes of ``Experiment``: a module, or an object
such as ``gradconf.reproduce.cnn.DEPTH``. ``run`` writes its raw results under ``out_dir``
(``OUT/<NAME>``) with atomic writes, skips work that an earlier call already completed, and
returns an ``ExperimentOutput``. The runner in ``gradconf.reproduce.registry`` times each
experiment, records a failure without stopping the others, and passes the outputs to
``gradconf.reproduce.report``.

Scales: "quick" is sized so that the whole suite takes less than 45 minutes on 2 CPU cores.
"paper" uses the settings of Sankararaman et al., "The Impact of Neural Network
Overparameterization on Gradient Confusion and Stochastic Gradient Descent" (ICML 2020)
where the paper states them, and larger Monte Carlo or seed counts elsewhere. ``smoke=True`` shrinks either scale to a run of seconds for tests; it is not a scale
of its own, so ``settings`` never describes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from gradconf.report import Section, Verdict, key_value_table_html
from gradconf.runs.io import write_parquet_atomic

__all__ = [
    "SCALES",
    "Experiment",
    "ExperimentOutput",
    "cached_frame",
    "check_scale",
    "mean_interval",
    "settings_html",
    "wilson_interval",
]

logger = logging.getLogger(__name__)

SCALES = ("quick", "paper")

# Two-sided 95% Student t quantiles t_{0.975, df} for df = 1..30; larger df use 1.96 + 2.4/df,
# which stays within 0.002 of the exact quantile there.
_T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_Z_975 = 1.959964


@dataclass(frozen=True)
class ExperimentOutput:
    """Result of one experiment, as returned to the runner.

    ``verdicts`` become rows of the claims table. ``sections`` are the experiment's part of
    the HTML report (figures with captions, tables, its resolved settings). ``notes`` are
    short caveats shown next to the claims, e.g. what the quick scale cannot show and why.
    """

    name: str
    verdicts: list[Verdict] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@runtime_checkable
class Experiment(Protocol):
    """One reproduction experiment: a module or an object with these members.

    ``settings(scale)`` returns the fully resolved settings (JSON-compatible) of a scale,
    without ``smoke``. ``run`` computes or resumes the experiment under ``out_dir`` and
    returns its output. ``data_root`` is the directory with downloaded datasets (None for
    experiments on generated data). ``device`` is "auto", "cpu" or "cuda:N", and an
    experiment that ignores it because it always runs on the CPU documents that in ``run``.
    """

    NAME: str
    TITLE: str

    def settings(self, scale: str) -> dict[str, Any]:
        """Return the resolved settings of ``scale`` ("quick" or "paper")."""
        ...

    def run(
        self,
        scale: str,
        out_dir: Path,
        *,
        progress: bool = True,
        smoke: bool = False,
        data_root: Path | None = None,
        device: str = "auto",
    ) -> ExperimentOutput:
        """Run or resume the experiment and return its verdicts, sections and notes."""
        ...


def check_scale(scale: str) -> str:
    """Return ``scale`` if it is one of ``SCALES``; raise ValueError otherwise."""
    if scale not in SCALES:
        raise ValueError(
            f"scale={scale!r} is not supported; allowed: {', '.join(map(repr, SCALES))}. "
            "Use 'quick' for a run of minutes or 'paper' for the paper's settings."
        )
    return scale


def cached_frame(path: Path, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Return the Parquet table at ``path``, or compute it, write it atomically and return it.

    This is the resume rule of every experiment: one file per completed unit of work (a
    Monte Carlo cell, a run), so a rerun skips the units whose file exists.
    """
    if path.exists():
        logger.debug("reusing %s", path)
        return pd.read_parquet(path)
    frame = compute()
    write_parquet_atomic(path, frame)
    return frame


def t_quantile_975(degrees_of_freedom: int) -> float:
    """Return the 0.975 quantile of Student's t with ``degrees_of_freedom`` >= 1."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees_of_freedom={degrees_of_freedom} is invalid; it must be >= 1.")
    if degrees_of_freedom <= len(_T_975):
        return _T_975[degrees_of_freedom - 1]
    return _Z_975 + 2.4 / degrees_of_freedom


def mean_interval(values: Any) -> tuple[float, float, float]:
    """Return (mean, low, high): the mean and its 95% Student t interval.

    The interval assumes roughly normal values, the usual choice for a handful of seeds.
    With one value both bounds are NaN. Non-finite values are an error.
    """
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError(
            f"mean_interval needs at least one finite value; received {array.size} value(s), "
            f"{int((~np.isfinite(array)).sum())} of them not finite."
        )
    mean = float(array.mean())
    if array.size == 1:
        return mean, math.nan, math.nan
    half = t_quantile_975(array.size - 1) * float(array.std(ddof=1)) / math.sqrt(array.size)
    return mean, mean - half, mean + half


def wilson_interval(successes: int, trials: int) -> tuple[float, float]:
    """Return the 95% Wilson score interval of a binomial proportion successes / trials.

    Unlike the normal-approximation interval it stays inside [0, 1] and has width > 0 when
    the proportion is 0 or 1.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(
            f"wilson_interval received successes={successes}, trials={trials}; it needs "
            "trials >= 1 and 0 <= successes <= trials."
        )
    z2 = _Z_975**2
    proportion = successes / trials
    center = (proportion + z2 / (2 * trials)) / (1 + z2 / trials)
    half = (
        _Z_975
        * math.sqrt(proportion * (1 - proportion) / trials + z2 / (4 * trials**2))
        / (1 + z2 / trials)
    )
    # The interval contains the proportion exactly; min/max remove rounding at 0 and 1.
    return max(0.0, min(proportion, center - half)), min(1.0, max(proportion, center + half))


def settings_html(settings: dict[str, Any]) -> str:
    """Render resolved settings as a two-column table; nested values are shown as text."""
    return key_value_table_html(sorted(settings.items()))
