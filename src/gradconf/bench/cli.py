"""Command line of the Gram benchmark: ``gradconf bench``, ``python -m gradconf.bench`` or
``python benchmarks/gram.py``.

The ``gradconf`` CLI registers it as a subcommand through ``add_arguments(subparser)`` and
``run(args)``. ``--worker-threads`` is distinct from the CLI's global ``--threads``, which
sets the threads of the parent process only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path

from gradconf.bench.cases import CASES, QUICK_BATCH_SIZE, QUICK_CASES
from gradconf.bench.methods import METHODS
from gradconf.bench.report import evaluate_targets, render_section, write_section
from gradconf.bench.runner import BenchConfig, run_benchmark

__all__ = ["add_arguments", "json_path_for", "main", "run"]

logger = logging.getLogger(__name__)


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def json_path_for(markdown_path: Path) -> Path:
    """Return the raw-results path next to the markdown: docs/benchmarks.md ->
    docs/benchmarks-gram.json."""
    return markdown_path.with_name(f"{markdown_path.stem}-gram.json")


def add_arguments(parser: argparse.ArgumentParser, default_out: str = "docs/benchmarks.md") -> None:
    """Add the benchmark options to ``parser``."""
    # What runs.
    parser.add_argument(
        "--quick", action="store_true",
        help=f"smoke run: B capped at {QUICK_BATCH_SIZE}, 3 timed calls after 1 warm-up, "
        f"cases {', '.join(QUICK_CASES)} unless --cases is given",
    )
    parser.add_argument("--cases", type=_names, default=None,
                        help=f"comma-separated cases (default: all): {', '.join(CASES)}")
    parser.add_argument(
        "--methods", type=_names, default=None,
        help=f"comma-separated methods (default: all): {', '.join(METHODS)}; "
        "plain always runs because every ratio divides by it",
    )

    # How it is timed.
    parser.add_argument("--repeats", type=int, default=None,
                        help="max timed calls per (case, method) (default: 10, quick: 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls before timing (default: 2, quick: 1)")
    parser.add_argument("--time-budget", type=float, default=None, dest="time_budget_s",
                        help="seconds of timed calls per (case, method) beyond which fewer "
                        "than --repeats (at least 3) are timed (default: 30)")

    # Where it runs and where the results go.
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--worker-threads", type=int, default=None,
                        help="intra-op CPU threads per worker process, 0 for torch's default "
                        "(default: 1, which other load on the machine disturbs least)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument("--reference-memory-mb", type=int, default=None,
                        help="memory for the float64 reference Gram before it is computed "
                        "in blocks, in MiB (default: 4096)")
    parser.add_argument("--out", type=Path, default=Path(default_out),
                        help="markdown file whose gram section is replaced; the raw results "
                        "go to <stem>-gram.json next to it (default: %(default)s)")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="render the markdown section from an earlier results JSON "
                        "instead of running; the JSON itself is left as is")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with the parsed options, then write the markdown section and JSON."""
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        write_section(args.out, render_section(results))
        logger.info("rendered %s from %s", args.out, args.from_json)
        _log_targets(results)
        return 0

    # Option dest -> BenchConfig field, for the options given on the command line.
    fields = {"warmup": "warmup", "time_budget_s": "time_budget_s",
              "reference_memory_mb": "reference_memory_mb", "worker_threads": "threads"}
    settings = {
        field: getattr(args, dest) for dest, field in fields.items()
        if getattr(args, dest) is not None
    }
    config = BenchConfig.create(
        cases=args.cases, methods=args.methods, quick=args.quick, repeats=args.repeats,
        device=args.device, seed=args.seed, **settings,
    )
    logger.info("gram benchmark: cases %s, methods %s", config.cases, config.methods)
    redirect = contextlib.nullcontext()
    if not args.no_progress:
        with contextlib.suppress(ImportError):
            from tqdm.contrib.logging import logging_redirect_tqdm

            redirect = logging_redirect_tqdm()
    with redirect:
        results = run_benchmark(config, progress=not args.no_progress)

    json_path = json_path_for(args.out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    write_section(args.out, render_section(results))
    logger.info("wrote %s and %s", args.out, json_path)
    _log_targets(results)
    return 0


def _log_targets(results: dict) -> None:
    for case in results["cases"]:
        for target, verdict in evaluate_targets(case):
            logger.info("%s: %s: %s", case["case"], target, verdict)


def main(argv: list[str] | None = None, default_out: str = "docs/benchmarks.md") -> int:
    """Parse ``argv``, set up logging to stderr and run the benchmark."""
    parser = argparse.ArgumentParser(
        prog="gradconf bench",
        description="Time per-example Gram matrices: gradconf against the per-example loop, "
        "torch.func, BackPACK and Opacus, as ratios to a plain forward+backward.",
    )
    add_arguments(parser, default_out)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(args)
