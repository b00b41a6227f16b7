"""netlens: hook-based interpretability for PyTorch CNNs."""

from netlens import viz
from netlens.ablate import UnitAblator, fewest_units_to_flip, rank_units
from netlens.attribution import CAM, GradCAM, Saliency
from netlens.dissect import RegionUnits, units_for_region
from netlens.extract import FeatureExtractor
from netlens.receptive_field import ReceptiveField, conv_output_size, receptive_field

__all__ = [
    "CAM",
    "FeatureExtractor",
    "GradCAM",
    "ReceptiveField",
    "RegionUnits",
    "Saliency",
    "UnitAblator",
    "conv_output_size",
    "fewest_units_to_flip",
    "rank_units",
    "receptive_field",
    "units_for_region",
    "viz",
]

__version__ = "0.1.0.dev0"
