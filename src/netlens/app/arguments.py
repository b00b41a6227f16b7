"""Argument types shared by the subcommands of ``netlens``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["integer_at_least"]


def integer_at_least(minimum: int = 1, noun: str = "") -> Callable[[str], int]:
    """An argparse ``type=``: an integer of at least ``minimum`` (``noun`` names what it counts).

    Examples
    --------
    >>> integer_at_least(1)("3")
    3
    >>> integer_at_least(2, "images")("1")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: expected at least 2 images, got 1
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
        if value < minimum:
            wanted = "a positive integer" if minimum == 1 else f"at least {minimum} {noun}".strip()
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return parse
