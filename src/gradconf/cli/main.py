"""The ``gradconf`` command: subcommands registered in one table, logging set up here only."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from gradconf import __version__
from gradconf.bench import cli as bench
from gradconf.cli import measure, plot, report, reproduce, study, sweep

__all__ = ["main"]

# Subcommand name -> (module with add_arguments(parser) and run(args) -> int, one-line help).
COMMANDS: dict[str, tuple[object, str]] = {
    "study": (study, "run the width/depth study on real data and write its report"),
    "measure": (measure, "measure gradient confusion of one model at initialization"),
    "report": (report, "rebuild the report of a study directory"),
    "reproduce": (reproduce, "run the paper's reproduction experiments and their claims report"),
    "sweep": (sweep, "run or resume a sweep file, locally or on a Ray cluster"),
    "status": (sweep.StatusCommand, "show the done, failed and pending runs of a sweep"),
    "bench": (bench, "time per-example Gram matrices against BackPACK, Opacus and torch.func"),
    "plot": (plot, "draw loss and gradient confusion of a monitor record"),
}

# Errors that mean bad input: shown as one line, not as a traceback.
USER_ERRORS = (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="gradconf",
        description="Measure gradient confusion and how architecture shapes it.",
    )
    parser.add_argument("--version", action="version", version=f"gradconf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="intra-op CPU threads per process (default: %(default)s; gradconf's models are "
        "small, and more threads than free cores slow every operation down)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser)  # type: ignore[attr-defined]
        subparser.set_defaults(handler=module.run)  # type: ignore[attr-defined]
    return parser


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.INFO
    if verbose:
        level = logging.DEBUG
    elif quiet:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 success, 1 failed runs, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, received {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except USER_ERRORS as error:
        print(f"gradconf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gradconf {args.command}: interrupted; completed runs are kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
