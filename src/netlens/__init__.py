"""netlens: hook-based interpretability for PyTorch CNNs."""

from netlens import viz
from netlens.ablate import UnitAblator, fewest_units_to_flip, rank_units
from netlens.attribution import CAM, GradCAM, Saliency
from netlens.dissect import RegionUnits, units_for_region
from netlens.embedding import Comparison, EmbeddingProbe, compare
from netlens.extract import FeatureExtractor
from netlens.receptive_field import ReceptiveField, conv_output_size, receptive_field
from netlens.rotation import RotationDataset, rotate_batch

__all__ = [
    "CAM",
    "Comparison",
    "EmbeddingProbe",
    "FeatureExtractor",
    "GradCAM",
    "ReceptiveField",
    "RotationDataset",
    "RegionUnits",
    "Saliency",
    "UnitAblator",
    "compare",
    "conv_output_size",
    "fewest_units_to_flip",
    "rank_units",
    "receptive_field",
    "rotate_batch",
    "units_for_region",
    "viz",
]

__version__ = "0.1.0.dev0"
