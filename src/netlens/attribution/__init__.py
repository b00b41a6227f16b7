"""Attribution methods: CAM, Grad-CAM and saliency maps."""

from netlens.attribution.cam import CAM, CAMNotApplicableError
from netlens.attribution.gradcam import GradCAM
from netlens.attribution.saliency import Saliency

__all__ = ["CAM", "CAMNotApplicableError", "GradCAM", "Saliency"]
