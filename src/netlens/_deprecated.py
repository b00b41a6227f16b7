"""Old import paths that still work for one release, with a warning."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` that serves names from ``new``, warning once per use.

    Examples
    --------
    >>> import warnings
    >>> getattr_ = moved("netlens._old", "netlens.errors")
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     getattr_("NetlensError").__name__
    'NetlensError'
    >>> str(caught[0].message)
    'netlens._old is now netlens.errors; the old path goes away in netlens 0.3'
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(importlib.import_module(new), name)
        warnings.warn(
            f"{old} is now {new}; the old path goes away in netlens 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return value

    return __getattr__
