"""Which map can be trusted: faithfulness metrics and sanity checks of attribution maps.

Every metric takes the model, the images and one map per image (any
method's output, or your own), and returns a :class:`MetricResult`: a value
per image, their mean, and a seeded bootstrap 95% interval of the mean.

* :func:`deletion` and :func:`insertion` (Petsiuk et al. 2018): the class
  probability as the map's most relevant pixels are removed / added back;
* :func:`average_drop` and :func:`increase_in_confidence` (Chattopadhyay et
  al. 2018): the image seen only through the map;
* :func:`road` (Rong et al. 2022): removal with noisy linear imputation,
  most and least relevant first;
* :func:`model_randomization` (Adebayo et al. 2018): the maps of ever more
  randomised copies of the model, compared with the trained model's;
* :class:`RandomMap`: a uniform-noise method, the chance level of each score.

See :doc:`/guide/metrics`.
"""

from netlens.metrics._score import MetricResult, bootstrap_interval
from netlens.metrics.deletion import deletion, insertion, substrate_like
from netlens.metrics.drop import average_drop, increase_in_confidence
from netlens.metrics.random_map import RandomMap
from netlens.metrics.randomization import (
    RandomizationResult,
    default_blocks,
    model_randomization,
    randomise,
    spearman,
    ssim,
)
from netlens.metrics.road import impute, road

__all__ = [
    "MetricResult",
    "RandomMap",
    "RandomizationResult",
    "average_drop",
    "bootstrap_interval",
    "default_blocks",
    "deletion",
    "impute",
    "increase_in_confidence",
    "insertion",
    "model_randomization",
    "randomise",
    "road",
    "spearman",
    "ssim",
    "substrate_like",
]
