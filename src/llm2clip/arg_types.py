"""argparse types shared by the command lines (cli.py, embeddings/cli.py)."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An argparse type for counts: a whole number >= 1 (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
