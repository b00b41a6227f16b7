"""Units versus concepts: which units of a layer fire on a region, or detect a concept.

:func:`units_for_region` ranks the units of one image's feature map by their
intersection over union with a region you mark on that image;
:func:`dissect` scores every unit against every concept mask over a whole
dataset (Network Dissection) and returns a :class:`Dissection`.
"""

from netlens.dissect.dataset import Dissection, dissect
from netlens.dissect.region import RegionUnits, units_for_region

__all__ = ["Dissection", "RegionUnits", "dissect", "units_for_region"]
