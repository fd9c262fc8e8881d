"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse


def int_list(text: str) -> tuple[int, ...]:
    """Parse "8,32,128" into (8, 32, 128); argparse shows the error on bad input."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 8,32,128; received {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer, received an empty list")
    return values


def positive_int(text: str) -> int:
    """Parse an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, received {value}")
    return value
