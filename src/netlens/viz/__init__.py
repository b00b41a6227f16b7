"""Pictures of what a CNN sees: filters, activation maps, overlays, top-k bars, embeddings.

One module per kind of picture, every function also here:

* :mod:`netlens.viz.image`: :func:`to_image`, :func:`normalize`, :func:`blend`;
* :mod:`netlens.viz.filters`: :func:`filter_grid`;
* :mod:`netlens.viz.activations`: :func:`activation_grid`;
* :mod:`netlens.viz.attribution`: :func:`overlay`, :func:`attribution_grid`;
* :mod:`netlens.viz.classes`: :func:`topk_bars`, :func:`ablation_comparison`;
* :mod:`netlens.viz.regions`: :func:`region_units`;
* :mod:`netlens.viz.dissection`: :func:`unit_images`;
* :mod:`netlens.viz.embedding`: :func:`tsne_scatter`, :func:`neighbour_grid`,
  :func:`compare_tsne`;
* :mod:`netlens.viz.save`: :func:`save_figures` (a script's figures as PNG files).

A function that draws into one Axes takes a keyword-only ``ax=`` and returns
the Axes; one that fills a whole figure takes a keyword-only ``fig=`` (a
figure or subfigure, cleared first) and returns it. Without them it draws on a
new pyplot figure (so ``plt.show()`` shows it; close it with ``plt.close(fig)``
when drawing many). Nothing here computes attributions or features: pass the
tensors that :class:`netlens.FeatureExtractor`, CAM, Grad-CAM, saliency or
:class:`netlens.EmbeddingProbe` returned. Maps are scaled for display only:
a map with a negative value is drawn centred at zero (red positive, blue
negative), any other from its minimum (black) to its maximum (pale yellow), the
top of the scale at the 99th percentile (``clip=``; see
:mod:`netlens.viz.attribution`). Images are read by the rules of :func:`to_image`.

:func:`~netlens.channels.reduce_channels` (mean, max or PCA of channels)
lives with the features, in :mod:`netlens.channels`, and is served here too.
"""

from netlens.channels import reduce_channels
from netlens.viz.activations import activation_grid
from netlens.viz.attribution import attribution_grid, overlay
from netlens.viz.classes import ablation_comparison, topk_bars
from netlens.viz.dissection import unit_images
from netlens.viz.embedding import compare_tsne, neighbour_grid, tsne_scatter
from netlens.viz.filters import filter_grid
from netlens.viz.image import IMAGENET_MEAN, IMAGENET_STD, blend, normalize, to_image
from netlens.viz.regions import region_units
from netlens.viz.save import save_figures

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ablation_comparison",
    "activation_grid",
    "attribution_grid",
    "blend",
    "compare_tsne",
    "filter_grid",
    "neighbour_grid",
    "normalize",
    "overlay",
    "reduce_channels",
    "region_units",
    "save_figures",
    "to_image",
    "topk_bars",
    "tsne_scatter",
    "unit_images",
]
