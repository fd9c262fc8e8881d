"""Wall time and peak memory of repeated calls.

Timing uses ``time.perf_counter`` around each call, with ``torch.cuda.synchronize`` before
and after on CUDA. Memory on the CPU is the peak resident set size (RSS) of the process
minus its RSS before the method's setup: Linux resets the peak (``VmHWM`` in
``/proc/self/status``) when "5" is written to ``/proc/self/clear_refs``. PyTorch's CPU
allocations bypass ``tracemalloc``, so RSS is the measure that includes them. On CUDA the
measure is ``torch.cuda.max_memory_allocated`` minus the allocation before setup.

NOTE: the CUDA paths (``--device cuda``) have not been run on a GPU yet.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["MemoryProbe", "Timing", "time_calls"]

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field_name: str) -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])  # "VmRSS:   123456 kB"
    return None


class MemoryProbe:
    """Peak memory above a baseline, in bytes: ``start()`` sets the baseline, ``peak_bytes()``
    reads the growth since. ``method`` names the measure; ``peak_bytes()`` returns None when
    the platform offers none (a CPU run outside Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = "cuda max_memory_allocated" if device.type == "cuda" else "peak RSS"
        self._baseline: int | None = None

    def start(self) -> None:
        """Record the current usage as the baseline and reset the peak to it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
            return
        try:
            _CLEAR_REFS.write_text("5")
        except OSError as error:
            logger.warning("cannot reset the peak RSS (%s); memory is not reported", error)
            self._baseline = None
            return
        rss = _status_kib("VmRSS")
        self._baseline = None if rss is None else rss * 1024

    def peak_bytes(self) -> int | None:
        """Return the peak usage since ``start()`` minus the baseline, or None."""
        if self._baseline is None:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self._baseline
        peak = _status_kib("VmHWM")
        return None if peak is None else peak * 1024 - self._baseline


@dataclass(frozen=True)
class Timing:
    """Wall times of the timed calls in milliseconds (warm-up calls excluded)."""

    times_ms: tuple[float, ...]
    warmup: int

    @property
    def median_ms(self) -> float:
        """Median of the timed calls."""
        return statistics.median(self.times_ms)


def _timed_call(call: Callable[[], object], device: torch.device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    output = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1e3, output


def time_calls(
    call: Callable[[], object],
    *,
    device: torch.device,
    repeats: int,
    warmup: int,
    time_budget_s: float,
    min_repeats: int = 3,
) -> tuple[Timing, object]:
    """Time ``call`` after ``warmup`` untimed calls; return the timing and the last output.

    At most ``repeats`` calls are timed. When the warm-up shows that they would take more
    than ``time_budget_s`` seconds, fewer are timed, but never fewer than
    ``min(min_repeats, repeats)``.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} is invalid; time at least one call.")
    output: object = None
    warmup_ms: list[float] = []
    for _ in range(warmup):
        elapsed_ms, output = _timed_call(call, device)
        warmup_ms.append(elapsed_ms)

    count = repeats
    if warmup_ms:
        affordable = int(time_budget_s * 1e3 / max(min(warmup_ms), 1e-3))
        count = max(min(repeats, affordable), min(min_repeats, repeats))
    times_ms: list[float] = []
    for _ in range(count):
        elapsed_ms, output = _timed_call(call, device)
        times_ms.append(elapsed_ms)
    return Timing(tuple(times_ms), warmup), output
