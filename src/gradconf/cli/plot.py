"""``gradconf plot RECORD.parquet --out plot.png``: draw a monitor record."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the plot options."""
    parser.add_argument("record", type=Path, help="a Parquet record written by Monitor.save()")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="PNG file to write (default: the record's path with the suffix .png)",
    )
    parser.add_argument("--title", default=None, help="figure title (default: the record's file name)")


def run(args: argparse.Namespace) -> int:
    """Draw loss, cosines and η̂ over steps and print the PNG's path."""
    from gradconf.monitor import plot_record, read_record

    if not args.record.is_file():
        raise FileNotFoundError(
            f"{args.record} does not exist; pass the Parquet file written by Monitor.save()."
        )
    out = args.out if args.out is not None else args.record.with_suffix(".png")
    frame = read_record(args.record)
    print(f"Plot: {plot_record(frame, out, title=args.title or args.record.name)}")
    return 0
