"""METHODS: every attribution method by its command-line name.

The command line, the tour, the docs' method table and the tests read this one
dict, so a new method is one file plus one line: a line in :data:`BUILTIN` for
a method that ships with netlens, or :func:`register` for one of your own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

from netlens.attribution.base import Attribution

__all__ = ["BUILTIN", "METHODS", "register"]

#: netlens' own methods: command-line name -> ``"module:Class"``.
BUILTIN = {
    "cam": "netlens.attribution.cam:CAM",
    "gradcam": "netlens.attribution.gradcam:GradCAM",
    "layercam": "netlens.attribution.layercam:LayerCAM",
    "saliency": "netlens.attribution.saliency:Saliency",
    # gradient-weighted CAMs
    "gradcampp": "netlens.attribution.gradcampp:GradCAMPlusPlus",
    "xgradcam": "netlens.attribution.xgradcam:XGradCAM",
    "hirescam": "netlens.attribution.hirescam:HiResCAM",
    "eigencam": "netlens.attribution.eigencam:EigenCAM",
    # layer perturbations
    "scorecam": "netlens.attribution.scorecam:ScoreCAM",
    "ablationcam": "netlens.attribution.ablationcam:AblationCAM",
    # input gradients
    "integratedgradients": "netlens.attribution.integrated_gradients:IntegratedGradients",
    "inputxgradient": "netlens.attribution.input_x_gradient:InputXGradient",
    "guidedbackprop": "netlens.attribution.guided_backprop:GuidedBackprop",
    "guidedgradcam": "netlens.attribution.guided_gradcam:GuidedGradCAM",
    # input perturbations and wrappers
    "occlusion": "netlens.attribution.occlusion:Occlusion",
    "smoothgrad": "netlens.attribution.smoothgrad:SmoothGrad",
}

#: Every registered method: command-line name -> class.
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


def load_builtins() -> None:
    """Import and register every method of :data:`BUILTIN`."""
    for name, where in BUILTIN.items():
        module, cls = where.split(":")
        register(name)(getattr(importlib.import_module(module), cls))
