"""Gram benchmark: gradconf against per-example peers, as ratios to plain forward+backward.

``gradconf bench`` (or ``python benchmarks/gram.py``) times, for every case in
``gradconf.bench.cases.CASES``, a plain forward+backward, the per-example loop, torch.func
``vmap(grad)``, BackPACK ``BatchGrad``, Opacus ``GradSampleModule`` and
``gradconf.engine.per_example_gram``. Each (case, method) runs in its own process
(``gradconf.bench.worker``) so its peak memory is measured alone. The results go to a marked
section of ``docs/benchmarks.md`` and to ``docs/benchmarks-gram.json``.

BackPACK and Opacus are optional: install them with ``pip install gradconf[bench]``; rows of
a peer that does not import are marked as skipped with the reason.
"""

from gradconf.bench.cli import add_arguments, main, run
from gradconf.bench.runner import BenchConfig, run_benchmark

__all__ = ["BenchConfig", "add_arguments", "main", "run_benchmark", "run"]
