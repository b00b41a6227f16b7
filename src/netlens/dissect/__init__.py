"""Units versus concepts: which units of a layer fire on a region of an image.

:func:`units_for_region` ranks the units of one image's feature map by their
intersection over union with a region you mark on that image.
"""

from netlens.dissect.region import RegionUnits, units_for_region

__all__ = ["RegionUnits", "units_for_region"]
