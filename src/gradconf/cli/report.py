"""``gradconf report DIR``: rebuild the report of a study directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the report options."""
    parser.add_argument("directory", type=Path, help="a study directory written by gradconf")


def run(args: argparse.Namespace) -> int:
    """Rebuild the HTML report and print its path."""
    from gradconf.report import build_report

    if not args.directory.is_dir():
        raise NotADirectoryError(
            f"{args.directory} is not a directory; pass the --out directory of a study."
        )
    print(f"Report: {build_report(args.directory)}")
    return 0
