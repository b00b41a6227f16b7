"""netlens: hook-based interpretability for PyTorch CNNs.

Public names are imported on first use, so ``import netlens`` stays light
(no matplotlib until a picture is drawn).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

# name -> module that defines it
_EXPORTS = {
    "CAM": "netlens.attribution",
    "GradCAM": "netlens.attribution",
    "Saliency": "netlens.attribution",
    "FeatureExtractor": "netlens.extract",
    "UnitAblator": "netlens.ablate",
    "fewest_units_to_flip": "netlens.ablate",
    "rank_units": "netlens.ablate",
    "RegionUnits": "netlens.dissect",
    "units_for_region": "netlens.dissect",
    "Comparison": "netlens.embedding",
    "EmbeddingProbe": "netlens.embedding",
    "compare": "netlens.embedding",
    "RotationDataset": "netlens.datasets",
    "rotate_batch": "netlens.datasets",
    "NetlensError": "netlens.errors",
    "RepeatedCallError": "netlens.errors",
    "LayerNotReachedError": "netlens.errors",
    "Explanation": "netlens.explanation",
    "explain": "netlens.explanation",
    "extract_dataset": "netlens.feature_store",
    "load_features": "netlens.feature_store",
    "Features": "netlens.feature_store",
    "FeatureArray": "netlens.feature_store",
}
_SUBMODULES = (
    "attribution",
    "channels",
    "datasets",
    "dissect",
    "errors",
    "hooks",
    "layers",
    "metrics",
    "models",
    "testing",
    "viz",
)

# Eager: the submodule shares the function's name, and importing a submodule
# sets it as an attribute of the package.
from netlens.receptive_field import ReceptiveField, conv_output_size, receptive_field  # noqa: E402

__all__ = [
    "CAM",
    "Comparison",
    "EmbeddingProbe",
    "Explanation",
    "FeatureArray",
    "FeatureExtractor",
    "Features",
    "GradCAM",
    "LayerNotReachedError",
    "NetlensError",
    "ReceptiveField",
    "RegionUnits",
    "RepeatedCallError",
    "RotationDataset",
    "Saliency",
    "UnitAblator",
    "compare",
    "conv_output_size",
    "explain",
    "extract_dataset",
    "fewest_units_to_flip",
    "load_features",
    "rank_units",
    "receptive_field",
    "rotate_batch",
    "units_for_region",
    "viz",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"netlens.{name}")
    else:
        raise AttributeError(f"module 'netlens' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:
    from netlens import viz as viz
    from netlens.ablate import UnitAblator, fewest_units_to_flip, rank_units
    from netlens.attribution import CAM, GradCAM, Saliency
    from netlens.datasets import RotationDataset, rotate_batch
    from netlens.dissect import RegionUnits, units_for_region
    from netlens.embedding import Comparison, EmbeddingProbe, compare
    from netlens.errors import NetlensError
    from netlens.extract import FeatureExtractor
