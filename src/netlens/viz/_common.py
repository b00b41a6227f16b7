"""What every kind of picture needs: arrays from tensors, class names, a place to draw."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase
from torch import Tensor

from netlens._checks import check_labels

ArrayLike = Tensor | np.ndarray | Sequence[float]


def as_numpy(x: object) -> np.ndarray:
    """``x`` as a numpy array on the CPU, its dtype kept where numpy has it.

    Integer tensors stay integers (an index above 2**24 stays exact), float64
    stays float64; bfloat16, which numpy lacks, becomes float32.
    """
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def class_labels(labels: object) -> np.ndarray:
    """``(N,)`` integer labels; whole-number floats are converted, others raise."""
    return check_labels(labels).cpu().numpy()


def class_name(label: int, class_names: Sequence[str] | None) -> str:
    """The name of class ``label``, or ``"class {label}"`` when there are no names."""
    if class_names is None:
        return f"class {label}"
    if not 0 <= label < len(class_names):
        raise ValueError(f"label {label} has no entry in the {len(class_names)} class_names")
    return str(class_names[label])


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the axes of a new pyplot figure."""
    if ax is not None:
        return ax
    return plt.subplots(figsize=figsize, layout="constrained")[1]


def new_figure(fig: FigureBase | None, figsize: tuple[float, float]) -> FigureBase:
    """``fig`` cleared, or a new pyplot figure."""
    if fig is None:
        return plt.figure(figsize=figsize, layout="constrained")
    fig.clear()
    return fig


def hide_ticks(ax: Axes) -> None:
    """Keep the frame (it can carry a colour) but drop the ticks."""
    ax.set_xticks([])
    ax.set_yticks([])


def pick_indices(pick: int | Sequence[int], total: int, what: str) -> list[int]:
    """The first ``pick`` of ``total`` indices (an int) or the given ones, checked.

    ``what`` names them in the error, e.g. ``"channels"``; an empty choice or
    an index outside ``[0, total)`` raises ``IndexError``.
    """
    if isinstance(pick, Integral) and not isinstance(pick, bool):
        chosen = list(range(min(int(pick), total)))
    elif isinstance(pick, Sequence | np.ndarray | Tensor) and not isinstance(pick, str):
        values = pick.tolist() if isinstance(pick, np.ndarray | Tensor) else list(pick)
        if not isinstance(values, list) or not all(
            isinstance(i, Integral) and not isinstance(i, bool) for i in values
        ):
            raise TypeError(f"{what} must be an int or a sequence of int indices, not {pick!r}")
        chosen = [int(i) for i in values]
    else:
        raise TypeError(f"{what} must be an int or a sequence of int indices, not {pick!r}")
    bad = [i for i in chosen if not 0 <= i < total]
    if bad or not chosen:
        raise IndexError(f"{what} {bad or chosen} out of range: there are {total}")
    return chosen
