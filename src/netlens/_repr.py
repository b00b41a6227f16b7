"""Short reprs for result objects: tensors and long lists summarised, floats rounded."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch import Tensor

#: Tensors and sequences up to this many elements are shown in full.
SHOWN = 8


def short(value: Any) -> str:
    """``value`` on one line: small tensors and lists in full, large ones by shape."""
    if isinstance(value, Tensor | np.ndarray):
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else value
        kind = "tensor" if isinstance(value, Tensor) else "array"
        if array.size <= SHOWN and array.ndim <= 1:
            return f"{kind}({short(array.tolist())})"
        return f"{kind}(shape={tuple(array.shape)}, dtype={array.dtype})"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else f"{round(value, 4)!r}"
    if isinstance(value, list | tuple):
        items = [short(v) for v in value[:SHOWN]]
        if len(value) > SHOWN:
            items.append(f"... ({len(value)} in all)")
        inner = ", ".join(items)
        return (
            f"[{inner}]"
            if isinstance(value, list)
            else f"({inner}{',' if len(value) == 1 else ''})"
        )
    if isinstance(value, dict):
        items = [f"{k!r}: {short(v)}" for k, v in list(value.items())[:SHOWN]]
        if len(value) > SHOWN:
            items.append(f"... ({len(value)} in all)")
        return "{" + ", ".join(items) + "}"
    return repr(value)


class ShortRepr:
    """Mixin for dataclasses: a one-line repr of the fields (``repr=False`` ones left out)."""

    def __repr__(self) -> str:
        assert dataclasses.is_dataclass(self)
        parts = [
            f"{f.name}={short(getattr(self, f.name))}" for f in dataclasses.fields(self) if f.repr
        ]
        return f"{type(self).__name__}({', '.join(parts)})"
