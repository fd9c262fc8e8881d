"""Sweeps: a grid of runs described once in a TOML file, run locally or on a Ray cluster.

A sweep file fixes a base ``RunConfig`` and the axes varied around it (``[grid]``, ``[zip]``,
``seeds``, ``[lr_selection]``); see ``gradconf.sweeps.spec`` and docs/sweeps.md. Running it
writes one directory: ``OUT/sweep.json`` with the validated sweep and its runs, and
``OUT/runs/<run_id>/`` per run. Rerunning resumes: complete runs are skipped.

Example::

    from gradconf.sweeps import load_sweep, run_sweep, sweep_status

    spec = load_sweep("example")          # a shipped file, or a path to a .toml file
    outcome = run_sweep(spec, "results/example", jobs=2)
    print(sweep_status("results/example").done)
"""

from gradconf.sweeps.directory import SweepStatus, sweep_status
from gradconf.sweeps.execute import EXECUTORS, SweepOutcome, run_sweep
from gradconf.sweeps.expand import expand, run_id_for
from gradconf.sweeps.selection import select_from_losses, select_learning_rates
from gradconf.sweeps.spec import (
    LearningRateSelection,
    SweepSpec,
    load_sweep,
    parse_sweep,
    shipped_sweeps,
)

__all__ = [
    "EXECUTORS",
    "LearningRateSelection",
    "SweepOutcome",
    "SweepSpec",
    "SweepStatus",
    "expand",
    "load_sweep",
    "parse_sweep",
    "run_id_for",
    "run_sweep",
    "select_from_losses",
    "select_learning_rates",
    "shipped_sweeps",
    "sweep_status",
]
