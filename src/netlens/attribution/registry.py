"""METHODS: every attribution method by its command-line name.

The command line, the tour, the docs' method table and the tests read this one
dict, so a new method is one file plus one :func:`register` line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from netlens.attribution.base import Attribution

__all__ = ["METHODS", "register"]

METHODS: dict[str, type[Attribution]] = {}

A = TypeVar("A", bound=type[Attribution])


def register(name: str) -> Callable[[A], A]:
    """Class decorator: list an :class:`~netlens.attribution.Attribution` under ``name``.

    Examples
    --------
    >>> from netlens.attribution import METHODS
    >>> METHODS["gradcam"].__name__, METHODS["gradcam"].needs_layer
    ('GradCAM', True)
    """
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"a method name is a lower-case identifier, not {name!r}")

    def add(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Attribution)):
            raise TypeError(f"only Attribution subclasses can be registered, not {cls!r}")
        if METHODS.get(name, cls) is not cls:
            raise ValueError(f"a method named {name!r} is registered already: {METHODS[name]}")
        METHODS[name] = cls
        return cls

    return add
