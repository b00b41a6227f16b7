"""Attribution methods, their public base classes and the method registry.

:data:`METHODS` maps each method's command-line name to its class; every
class says whether it reads a layer (``needs_layer``) and whether it
differentiates (``needs_gradients``). Every registered class is also served
here by its name (``netlens.attribution.LayerCAM``).
"""

from typing import Any

from netlens.attribution.base import Attribution, LayerAttribution
from netlens.attribution.cam import CAM
from netlens.attribution.gradcam import GradCAM
from netlens.attribution.gradient_cam import GradientCAM
from netlens.attribution.perturbation import LayerPerturbation, PerturbationAttribution
from netlens.attribution.registry import METHODS, load_builtins, register
from netlens.attribution.saliency import Saliency
from netlens.errors import CAMNotApplicableError

load_builtins()

__all__ = [
    "CAM",
    "METHODS",
    "Attribution",
    "CAMNotApplicableError",
    "GradCAM",
    "GradientCAM",
    "LayerAttribution",
    "LayerPerturbation",
    "PerturbationAttribution",
    "Saliency",
    "register",
]


def __getattr__(name: str) -> Any:
    for cls in METHODS.values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module 'netlens.attribution' has no attribute {name!r}")
