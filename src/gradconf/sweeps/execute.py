"""Run a sweep: skip complete runs, hand the others to an executor, record what happened.

Executors:

- ``local`` with ``jobs=1`` runs in this process, one run after the other.
- ``local`` with ``jobs=N`` runs N spawned worker processes (``ProcessPoolExecutor``). Each
  worker limits torch to ``cores // N`` threads (at most the caller's thread count), and when
  CUDA is present worker k makes GPU ``k % num_gpus`` its current device, so runs with device
  "auto" or "cuda" spread over the GPUs.
- ``ray`` submits one Ray task per run (see ``gradconf.sweeps.ray_executor``).

Every executor calls ``execute_run``, which writes each run atomically. A run that raises is
recorded in ``OUT/runs/.<run_id>.error.txt`` and the sweep goes on. Ctrl-C stops the sweep:
finished runs are kept, and the next invocation resumes an interrupted run from its last
finished epoch (``execute_run`` checkpoints every epoch).
"""

from __future__ import annotations

import concurrent.futures as futures
import logging
import multiprocessing
import os
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gradconf.runs.io import write_json_atomic, write_text_atomic
from gradconf.runs.plan import PlannedRun, error_file
from gradconf.runs.run import execute_run
from gradconf.sweeps.directory import complete_digest, prepare_directory
from gradconf.sweeps.expand import expand
from gradconf.sweeps.spec import SweepSpec

__all__ = [
    "EXECUTORS",
    "LocalExecutor",
    "RunExecutor",
    "RunResult",
    "SweepOutcome",
    "execute_planned",
    "run_sweep",
]

logger = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
SELECTION_FILE = "lr_selection.json"


@dataclass(frozen=True)
class SweepOutcome:
    """Counts of what one sweep invocation did, and the runs that failed with their errors.

    ``skipped`` counts runs that were already complete; ``selection`` is the path of
    ``lr_selection.json`` when the sweep selects learning rates.
    """

    out_dir: Path
    completed: int
    skipped: int
    diverged: int
    failed: dict[str, str] = field(default_factory=dict)
    selection: Path | None = None


class RunExecutor(Protocol):
    """Interface of an executor for ``run_sweep``: run planned runs, then release resources."""

    label: str

    def run(self, pending: list[PlannedRun], out_dir: str) -> Iterator[RunResult]:
        """Yield the result of each run as it finishes."""
        ...

    def close(self) -> None:
        """Release what the executor holds (processes, a cluster connection)."""
        ...


@dataclass(frozen=True)
class RunResult:
    """Outcome of one run as reported to the sweep: its status, or the error that stopped it."""

    run_id: str
    status: str
    error: str | None = None


def execute_planned(run: PlannedRun, out_dir: str) -> RunResult:
    """Execute one planned run into ``out_dir/runs``; record an exception instead of raising.

    This is the unit of work of every executor, so it takes plain picklable arguments.
    """
    out_path = Path(out_dir)
    errors = error_file(out_path, run.run_id)
    try:
        outcome = execute_run(run.config, out_path / "runs" / run.run_id, labels=run.labels)
    except Exception as error:  # noqa: BLE001 - one failed run must not stop the others
        logger.error("run %s failed: %s", run.run_id, error)
        write_text_atomic(errors, traceback.format_exc())
        return RunResult(run.run_id, "failed", f"{type(error).__name__}: {error}")
    errors.unlink(missing_ok=True)
    return RunResult(run.run_id, outcome.status)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS and Windows
        return os.cpu_count() or 1


def _init_worker(threads: int, gpu_slots: Any) -> None:
    # NOTE: the GPU branch is not covered by the tests, which run on CPU-only machines.
    import torch

    torch.set_num_threads(threads)
    if gpu_slots is not None:
        gpu = gpu_slots.get()
        torch.cuda.set_device(gpu)
        logger.info("worker %d uses %d threads and GPU %d", os.getpid(), threads, gpu)


class LocalExecutor:
    """Executor that runs in this process (``jobs=1``) or in ``jobs`` spawned processes."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.label = f"local, {jobs} job(s)"

    def run(self, pending: list[PlannedRun], out_dir: str) -> Iterator[RunResult]:
        """Yield the result of each run as it finishes."""
        if self.jobs == 1:
            for run in pending:
                yield execute_planned(run, out_dir)
            return
        yield from self._run_in_pool(pending, out_dir)

    def _run_in_pool(self, pending: list[PlannedRun], out_dir: str) -> Iterator[RunResult]:
        import torch

        context = multiprocessing.get_context("spawn")
        # Never more threads than the caller uses (the CLI's --threads), nor more than the
        # worker's share of the cores.
        threads = max(1, min(torch.get_num_threads(), _available_cores() // self.jobs))
        gpu_slots = None
        if torch.cuda.is_available():
            gpu_slots = context.Queue()
            for worker in range(self.jobs):
                gpu_slots.put(worker % torch.cuda.device_count())
        pool = futures.ProcessPoolExecutor(max_workers=self.jobs, mp_context=context,
                                           initializer=_init_worker,
                                           initargs=(threads, gpu_slots))
        try:
            submitted = [pool.submit(execute_planned, run, out_dir) for run in pending]
            for future in futures.as_completed(submitted):
                yield future.result()
        finally:
            # On Ctrl-C in a terminal the workers get the signal too and stop their runs;
            # queued runs are dropped, and the next invocation runs them.
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Release nothing: the process pool lives only while ``run`` yields."""


def _check_executor(executor: str, jobs: int, address: str | None,
                    resources: dict[str, float] | None) -> None:
    if executor not in EXECUTORS:
        raise ValueError(f"executor={executor!r} is not supported; allowed executors: "
                         f"{', '.join(EXECUTORS)}.")
    if jobs < 1:
        raise ValueError(f"jobs={jobs} is invalid; it must be at least 1.")
    if executor == "local" and (address is not None or resources):
        raise ValueError("address and resources (--address, --cpus-per-run, --gpus-per-run) "
                         "apply to executor='ray' only; add --executor ray or drop them.")
    if executor == "ray" and jobs != 1:
        raise ValueError("jobs applies to executor='local' only; with executor='ray' the "
                         "cluster's resources and cpus/gpus per run set the parallelism.")


def _progress_bar(total: int, skipped: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # With ``initial``, tqdm rates only the runs done in this invocation, so the estimated
    # time left ignores the skipped ones.
    return tqdm(total=total, initial=skipped, desc="runs", unit="run", smoothing=0.1)


def run_sweep(
    spec: SweepSpec,
    out_dir: str | Path,
    *,
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    resources: dict[str, float] | None = None,
    progress: bool = True,
    continue_other: bool = False,
) -> SweepOutcome:
    """Run (or resume) every run of ``spec`` into ``out_dir`` and return what happened.

    ``executor`` is "local" (``jobs`` processes) or "ray" (``address``: "auto", "HOST:PORT"
    or None to start a local Ray instance; ``resources``: {"cpus": C, "gpus": G} per run).
    Complete runs are skipped without being handed to the executor; runs that raise are
    recorded and counted in ``failed``. When the sweep selects learning rates, the selection
    is written to ``OUT/lr_selection.json``. Raises FileExistsError for a directory holding
    another sweep unless ``continue_other``; see ``prepare_directory``.
    """
    _check_executor(executor, jobs, address, resources)
    out_path = Path(out_dir).resolve()
    planned = expand(spec)
    runner: RunExecutor
    if executor == "ray":
        from gradconf.sweeps.ray_executor import RayExecutor

        # Connect before writing anything, so a bad address leaves no directory behind.
        runner = RayExecutor(address, resources or {})
    else:
        runner = LocalExecutor(jobs)
    try:
        return _run_pending(spec, planned, out_path, runner, progress, continue_other)
    finally:
        runner.close()


def _run_pending(spec: SweepSpec, planned: list[PlannedRun], out_path: Path,
                 runner: RunExecutor, progress: bool, continue_other: bool) -> SweepOutcome:
    prepare_directory(out_path, spec, planned, continue_other=continue_other)
    pending = [run for run in planned
               if complete_digest(out_path / "runs" / run.run_id) != run.config.digest()]
    skipped = len(planned) - len(pending)
    logger.info("sweep %r: %d runs, %d already complete, %d to run (executor: %s)",
                spec.name, len(planned), skipped, len(pending), runner.label)

    # "skipped" here counts runs that another process completed after the check above.
    counts = {"completed": 0, "diverged": 0, "skipped": 0}
    failed: dict[str, str] = {}
    bar = _progress_bar(len(planned), skipped, progress)
    try:
        for result in runner.run(pending, str(out_path)):
            if result.status == "failed":
                failed[result.run_id] = result.error or "unknown error"
            else:
                counts[result.status] += 1
            if bar is not None:
                bar.set_postfix_str(result.run_id, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    selection = _write_selection(spec, out_path)
    return SweepOutcome(out_dir=out_path, completed=counts["completed"],
                        skipped=skipped + counts["skipped"], diverged=counts["diverged"],
                        failed=failed, selection=selection)


def _write_selection(spec: SweepSpec, out_dir: Path) -> Path | None:
    if spec.lr_selection is None:
        return None
    from gradconf.sweeps.selection import select_learning_rates

    table = select_learning_rates(out_dir)
    path = out_dir / SELECTION_FILE
    write_json_atomic(path, {"rule": spec.lr_selection.rule,
                             "rows": table.to_dict(orient="records")})
    return path
