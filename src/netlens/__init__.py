"""netlens: hook-based interpretability for PyTorch CNNs."""

from netlens.ablate import UnitAblator, fewest_units_to_flip, rank_units
from netlens.attribution import CAM, GradCAM, Saliency
from netlens.extract import FeatureExtractor

__all__ = [
    "CAM",
    "GradCAM",
    "Saliency",
    "FeatureExtractor",
    "UnitAblator",
    "fewest_units_to_flip",
    "rank_units",
]

__version__ = "0.1.0.dev0"
