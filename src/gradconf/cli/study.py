"""``gradconf study``: the main job, a width and a depth sweep of MLPs, then the report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from gradconf.cli.options import int_list, positive_int
from gradconf.config import DATASETS
from gradconf.runs.study import StudySpec, run_study

logger = logging.getLogger(__name__)

DEFAULTS = StudySpec()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the study options."""
    parser.add_argument("--out", type=Path, default=Path("results/study"),
                        help="output directory (default: %(default)s); rerun to resume")
    parser.add_argument("--dataset", choices=DATASETS, default=DEFAULTS.dataset,
                        help="dataset (default: %(default)s, bundled, no download)")
    parser.add_argument("--data-root", default=None,
                        help="directory holding MNIST/CIFAR files (not needed for digits)")
    parser.add_argument("--widths", type=int_list, default=DEFAULTS.widths,
                        help="hidden widths of the width sweep, e.g. 8,32,128,512")
    parser.add_argument("--depths", type=int_list, default=DEFAULTS.depths,
                        help="hidden-layer counts of the depth sweep, e.g. 1,2,4,8")
    parser.add_argument("--base-width", type=positive_int, default=DEFAULTS.base_width,
                        help="width of the depth sweep (default: %(default)s)")
    parser.add_argument("--base-depth", type=positive_int, default=DEFAULTS.base_depth,
                        help="depth of the width sweep (default: %(default)s)")
    parser.add_argument("--seeds", type=int_list, default=DEFAULTS.seeds,
                        help="seeds, e.g. 0,1,2 (default: 0,1,2)")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULTS.epochs,
                        help="training epochs per run (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr,
                        help="initial SGD learning rate (default: %(default)s)")
    parser.add_argument("--measure-every", type=positive_int, default=DEFAULTS.measure_every,
                        help="measure confusion every N epochs (default: %(default)s)")
    parser.add_argument("--num-pairs", type=positive_int, default=DEFAULTS.num_pairs,
                        help="mini-batch pairs per measurement (default: %(default)s)")
    parser.add_argument("--device", default=DEFAULTS.device,
                        help="'auto' (CUDA when present), 'cpu' or 'cuda:N'")
    parser.add_argument("--no-report", action="store_true", help="skip building the report")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Run or resume the study, build the report and print the verdicts."""
    spec = StudySpec(
        dataset=args.dataset, data_root=args.data_root, widths=args.widths, depths=args.depths,
        base_width=args.base_width, base_depth=args.base_depth, seeds=args.seeds,
        epochs=args.epochs, lr=args.lr, measure_every=args.measure_every,
        num_pairs=args.num_pairs, device=args.device,
    )
    outcome = run_study(spec, args.out, progress=not args.no_progress)
    logger.info("runs completed: %d, skipped (already complete): %d, diverged: %d, failed: %d",
                outcome.completed, outcome.skipped, outcome.diverged, len(outcome.failed))
    for run_id, error in outcome.failed.items():
        logger.error("run %s failed: %s", run_id, error)
    if not args.no_report:
        from gradconf.report import build_report

        index = build_report(args.out)
        _print_claims(Path(index).parent / "claims.json")
        print(f"Report: {index}")
    return 1 if outcome.failed else 0


def _print_claims(claims_file: Path) -> None:
    if not claims_file.is_file():
        return
    verdicts = json.loads(claims_file.read_text()).get("verdicts", [])
    width = max((len(verdict["claim"]) for verdict in verdicts), default=10)
    for verdict in verdicts:
        value = verdict["value"]
        rho = "n/a" if value is None else f"{value:+.2f}"
        if verdict["ci_low"] is None or verdict["ci_high"] is None:
            interval = ""
        else:
            interval = f" [{verdict['ci_low']:+.2f}, {verdict['ci_high']:+.2f}]"
        sys.stdout.write(f"{verdict['claim']:<{width}}  rho={rho}{interval}  {verdict['verdict']}\n")
