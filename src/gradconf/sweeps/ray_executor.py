"""Run a sweep on Ray: one Ray task per run, each calling ``execute_run`` on a shared path.

Every node must see the output directory under the same absolute path (a shared filesystem
such as NFS or Lustre), and every node needs the same Python environment with gradconf
installed. Ray is an optional dependency, imported only here: ``pip install 'gradconf[ray]'``.

Each task reserves ``cpus`` CPUs and ``gpus`` GPUs of the cluster. Ray sets
``CUDA_VISIBLE_DEVICES`` for a task to the GPUs it reserved, and to none when it reserved
none, so a run with device "auto" uses its own GPU, or the CPU when ``gpus`` is 0.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradconf.runs.io import write_text_atomic
from gradconf.runs.plan import PlannedRun, error_file
from gradconf.sweeps.execute import RunResult, execute_planned

__all__ = ["RayExecutor", "RESOURCE_KEYS"]

logger = logging.getLogger(__name__)

RESOURCE_KEYS = ("cpus", "gpus")
# Seconds to wait for a TCP connection to the cluster before calling it unreachable.
CONNECT_TIMEOUT_SECONDS = 5.0
INSTALL_HINT = "install it with: pip install 'gradconf[ray]'"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ImportError(f"executor 'ray' needs the ray package, which is not installed "
                          f"({error}); {INSTALL_HINT}, or use --executor local.") from None
    return ray


def _check_resources(resources: dict[str, float]) -> tuple[float, float]:
    unknown = sorted(set(resources) - set(RESOURCE_KEYS))
    if unknown:
        raise ValueError(f"unknown resource(s) {', '.join(unknown)}; known resources per run: "
                         f"{', '.join(RESOURCE_KEYS)}.")
    cpus = float(resources.get("cpus", 1.0))
    gpus = float(resources.get("gpus", 0.0))
    if not cpus > 0:
        raise ValueError(f"cpus per run={cpus} is invalid; it must be > 0.")
    if gpus < 0:
        raise ValueError(f"gpus per run={gpus} is invalid; it must be >= 0.")
    return cpus, gpus


def _host_and_port(address: str) -> tuple[str, int]:
    text = address.removeprefix("ray://")
    host, separator, port = text.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r} is invalid; use 'auto', HOST:PORT (for "
                         "example 10.0.0.5:6379) or ray://HOST:PORT.")
    return host.strip("[]"), int(port)


def _resolve_auto() -> str:
    """Return HOST:PORT of the cluster that ``ray start`` recorded on this machine."""
    # NOTE: Ray has no public API for this lookup; the private helper below exists in Ray 2.9
    # to 2.60 at least. Without it, "auto" is passed to ray.init unchecked.
    try:
        from ray._private.services import canonicalize_bootstrap_address_or_die
    except ImportError:
        return "auto"
    try:
        return canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as error:
        raise ConnectionError(f"--address auto found no running Ray cluster on this machine "
                              f"({error}). Start one with `ray start --head`, or pass "
                              "HOST:PORT of the head node.") from None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Raise ConnectionError unless a TCP connection to ``address`` opens within ``timeout``."""
    host, port = _host_and_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        raise ConnectionError(
            f"cannot reach a Ray cluster at {address} ({error}, timeout {timeout:g} s). Check "
            "that the head node runs (`ray status` on it) and that --address is its HOST:PORT "
            "(port 6379 by default)."
        ) from None


def _run_task(run: PlannedRun, out_dir: str, threads: int) -> RunResult:
    import torch

    torch.set_num_threads(threads)
    return execute_planned(run, out_dir)


class RayExecutor:
    """A connection to a Ray cluster (or a local Ray instance) that runs planned runs.

    ``address`` is None (connect to ``RAY_ADDRESS`` when set, else start a local instance),
    "auto" (the cluster started by ``ray start`` on this machine), or HOST:PORT. The address
    is checked with a TCP connection first, so an unreachable one fails within
    ``CONNECT_TIMEOUT_SECONDS`` without starting anything.
    """

    def __init__(self, address: str | None, resources: dict[str, float]) -> None:
        self.cpus, self.gpus = _check_resources(resources)
        self.label = f"ray, {self.cpus:g} CPU(s) and {self.gpus:g} GPU(s) per run"
        self._ray = _import_ray()
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address == "auto":
            address = _resolve_auto()
        if address is not None and address != "auto":
            check_reachable(address)
        self._owns_connection = not self._ray.is_initialized()
        if self._owns_connection:
            if address is None:
                logger.info("starting a local Ray instance")
                self._ray.init(include_dashboard=False)
            else:
                logger.info("connecting to the Ray cluster at %s", address)
                self._ray.init(address=address)
        logger.info("Ray cluster resources: %s", self._ray.cluster_resources())

    def run(self, pending: list[PlannedRun], out_dir: str) -> Iterator[RunResult]:
        """Submit one task per run and yield each result as it finishes."""
        ray = self._ray
        if not Path(out_dir).is_absolute():
            raise ValueError(f"out_dir={out_dir!r} must be absolute for Ray tasks.")
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus)(_run_task)
        threads = max(1, int(self.cpus))
        waiting = {task.remote(run, out_dir, threads): run for run in pending}
        try:
            while waiting:
                ready, _ = ray.wait(list(waiting), num_returns=1)
                run = waiting.pop(ready[0])
                try:
                    yield ray.get(ready[0])
                except ray.exceptions.RayError as error:
                    # The worker died or the task could not run (retried by Ray before).
                    logger.error("run %s failed in Ray: %s", run.run_id, error)
                    write_text_atomic(error_file(Path(out_dir), run.run_id), f"{error}\n")
                    yield RunResult(run.run_id, "failed", f"{type(error).__name__}: {error}")
        finally:
            for reference in waiting:
                ray.cancel(reference, force=True)

    def close(self) -> None:
        """Disconnect from Ray; a local instance started here is shut down."""
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()
