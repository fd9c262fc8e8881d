"""``gradconf sweep FILE`` runs a sweep file; ``gradconf status DIR`` shows its progress."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from gradconf.cli.options import positive_int
from gradconf.sweeps import (
    EXECUTORS,
    expand,
    load_sweep,
    run_sweep,
    select_learning_rates,
    shipped_sweeps,
    sweep_status,
)
from gradconf.runs.plan import PlannedRun
from gradconf.sweeps.directory import complete_digest, read_sweep_file

logger = logging.getLogger(__name__)

# Ids listed by `gradconf status` before the rest are summarized as a count.
MAX_LISTED_RUNS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sweep options."""
    parser.add_argument("file", nargs="?",
                        help="sweep file (.toml), or the name of a shipped sweep (see --list)")
    parser.add_argument("--list", action="store_true", help="list the shipped sweep files")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: results/<sweep name>); rerun to resume")
    parser.add_argument("--executor", choices=EXECUTORS, default="local",
                        help="where runs execute (default: %(default)s)")
    parser.add_argument("--jobs", type=positive_int, default=1,
                        help="local executor: runs in parallel, one process each "
                             "(default: %(default)s, in this process)")
    parser.add_argument("--address", default=None,
                        help="ray executor: 'auto' or HOST:PORT of the cluster's head node "
                             "(default: start a local Ray instance)")
    parser.add_argument("--cpus-per-run", type=_positive_float, default=None,
                        help="ray executor: CPUs reserved per run (default: 1)")
    parser.add_argument("--gpus-per-run", type=_non_negative_float, default=None,
                        help="ray executor: GPUs reserved per run, fractions allowed "
                             "(default: 0, runs on CPU)")
    parser.add_argument("--continue", dest="continue_other", action="store_true",
                        help="add this sweep's runs to a directory that contains another sweep")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the run ids and their count, run nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Run or resume the sweep; exit status 1 when a run failed."""
    if args.list:
        for name, path in shipped_sweeps().items():
            sys.stdout.write(f"{name:<12} {path}\n")
        return 0
    if args.file is None:
        raise ValueError("no sweep file given; pass a .toml file or a shipped name "
                         f"({', '.join(shipped_sweeps())}).")
    spec = load_sweep(args.file)
    out_dir = args.out or Path("results") / re.sub(r"[^A-Za-z0-9._-]", "_", spec.name)

    if args.dry_run:
        _print_plan(expand(spec), out_dir)
        return 0
    resources = {key: value for key, value in
                 (("cpus", args.cpus_per_run), ("gpus", args.gpus_per_run)) if value is not None}
    try:
        outcome = run_sweep(spec, out_dir, executor=args.executor, jobs=args.jobs,
                            address=args.address, resources=resources or None,
                            progress=not args.no_progress, continue_other=args.continue_other)
    except (ImportError, ConnectionError) as error:
        sys.stderr.write(f"gradconf sweep: error: {error}\n")
        return 2

    logger.info("runs completed: %d, skipped (already complete): %d, diverged: %d, failed: %d",
                outcome.completed, outcome.skipped, outcome.diverged, len(outcome.failed))
    for run_id, error in outcome.failed.items():
        logger.error("run %s failed: %s (traceback in %s)", run_id, error,
                     outcome.out_dir / "runs" / f".{run_id}.error.txt")
    if outcome.selection is not None:
        _print_selection(outcome.out_dir)
    sys.stdout.write(f"Results: {outcome.out_dir}\n")
    return 1 if outcome.failed else 0


def _print_plan(planned: list[PlannedRun], out_dir: Path) -> None:
    done = 0
    if (out_dir / "sweep.json").is_file():
        done = sum(complete_digest(out_dir / "runs" / run.run_id) == run.config.digest()
                   for run in planned)
    for run in planned:
        sys.stdout.write(f"{run.run_id}\n")
    suffix = f", {done} already complete in {out_dir}" if done else ""
    sys.stdout.write(f"{len(planned)} runs{suffix}\n")


def _print_selection(out_dir: Path) -> None:
    table = select_learning_rates(out_dir)
    chosen = table[table["selected"]].drop(columns=["selected"])
    sys.stdout.write("Selected learning rates (lowest mean final training loss):\n")
    sys.stdout.write(("(none yet)" if chosen.empty else chosen.to_string(index=False)) + "\n")


def _positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, received {text!r}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, received {text!r}") from None


class StatusCommand:
    """``gradconf status DIR``: counts of done, failed and pending runs of a sweep."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add the status options."""
        parser.add_argument("directory", type=Path, help="output directory of a sweep")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        """Print the status of the sweep in ``args.directory``."""
        status = sweep_status(args.directory)
        sys.stdout.write(
            f"sweep {status.name!r} in {args.directory}: {status.total} runs, {status.done} "
            f"done ({status.diverged} diverged), {len(status.failed)} failed, "
            f"{len(status.pending)} pending\n"
        )
        if status.failed:
            sys.stdout.write("failed runs (tracebacks in runs/.<run_id>.error.txt):\n")
            for run_id, error in list(status.failed.items())[:MAX_LISTED_RUNS]:
                sys.stdout.write(f"  {run_id}: {error}\n")
            _write_rest(len(status.failed))
        if status.pending:
            sys.stdout.write("pending runs:\n")
            for run_id in status.pending[:MAX_LISTED_RUNS]:
                sys.stdout.write(f"  {run_id}\n")
            _write_rest(len(status.pending))
        if read_sweep_file(args.directory)["spec"].get("lr_selection"):
            _print_selection(args.directory)
        return 0


def _write_rest(count: int) -> None:
    if count > MAX_LISTED_RUNS:
        sys.stdout.write(f"  ... and {count - MAX_LISTED_RUNS} more\n")
