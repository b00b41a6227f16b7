"""Attribution methods, their public base classes and the method registry.

:data:`METHODS` maps each built-in method's command-line name to its class;
every class says whether it reads a layer (``needs_layer``) and whether it
differentiates (``needs_gradients``).
"""

from netlens.attribution.base import Attribution, LayerAttribution
from netlens.attribution.cam import CAM
from netlens.attribution.gradcam import GradCAM
from netlens.attribution.registry import METHODS, register
from netlens.attribution.saliency import Saliency
from netlens.errors import CAMNotApplicableError

register("cam")(CAM)
register("gradcam")(GradCAM)
register("saliency")(Saliency)

__all__ = [
    "CAM",
    "METHODS",
    "Attribution",
    "CAMNotApplicableError",
    "GradCAM",
    "LayerAttribution",
    "Saliency",
    "register",
]
