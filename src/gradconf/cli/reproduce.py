"""``gradconf reproduce NAME|all``: run reproduction experiments and write their report."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from gradconf.reproduce.base import SCALES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the reproduce options."""
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="experiments to run, or 'all'; see --list")
    parser.add_argument("--list", action="store_true",
                        help="list the experiments and exit")
    parser.add_argument("--scale", choices=SCALES, default="quick",
                        help="'quick' (all experiments sized to take under 45 minutes on 2 CPU "
                             "cores) or 'paper' (the paper's settings where it states them, "
                             "much longer); default: %(default)s")
    parser.add_argument("--out", type=Path, default=Path("results/reproduce"),
                        help="output directory (default: %(default)s); rerun to resume")
    parser.add_argument("--smoke", action="store_true",
                        help="run a drastically reduced version of each experiment (seconds), "
                             "for tests; its verdicts mean nothing")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="directory holding downloaded datasets such as MNIST or CIFAR-10")
    parser.add_argument("--device", default="auto",
                        help="'auto' (CUDA when present), 'cpu' or 'cuda:N' (default: auto)")
    parser.add_argument("--write-docs", type=Path, default=None, metavar="PATH",
                        help="also write the generated reproduction page (Markdown) to PATH")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the experiments, write the report, print the verdicts; return 1 if any failed."""
    from gradconf.reproduce.registry import EXPERIMENTS, run_experiments
    from gradconf.reproduce.report import write_docs, write_report

    if args.list:
        for name, experiment in EXPERIMENTS.items():
            print(f"{name:20s} {experiment.TITLE}")
        return 0
    if not args.names:
        raise ValueError(
            f"no experiment named; pass one or more of {', '.join(EXPERIMENTS)}, or 'all'. "
            "Use --list to see their titles."
        )

    records = run_experiments(
        args.names,
        args.scale,
        args.out,
        progress=not args.no_progress,
        smoke=args.smoke,
        data_root=args.data_root,
        device=args.device,
    )
    index = write_report(records, args.out, scale=args.scale, smoke=args.smoke)
    if args.write_docs is not None:
        # The output directory is left out because it is machine-specific.
        command = shlex.join(
            ["gradconf", "reproduce", *args.names, "--scale", args.scale]
            + (["--smoke"] if args.smoke else [])
            + ["--out", "DIR", "--write-docs", str(args.write_docs)]
        )
        write_docs(records, args.write_docs, scale=args.scale, command=command)
        print(f"Docs: {args.write_docs}")

    for record in records:
        print(f"{record.name}: {record.status} in {record.wall_s:.1f} s")
        if record.output is not None:
            for verdict in record.output.verdicts:
                print(f"  {verdict.verdict:13s} {verdict.claim}")
    print(f"Report: {index}")
    return 1 if any(record.status == "failed" for record in records) else 0
