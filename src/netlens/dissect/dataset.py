r"""Network dissection over a dataset: which units of a layer detect which concepts.

:func:`dissect` follows Network Dissection (Bau et al., *Network Dissection:
Quantifying Interpretability of Deep Visual Representations*, CVPR 2017).
Every unit :math:`k` of a layer gets one threshold :math:`T_k`, the level that
only the top ``quantile`` of its activations over the whole dataset exceed;
its activation map on each image, upsampled bilinearly to the masks'
resolution, is cut at :math:`T_k`, and the unit is scored against each concept
:math:`c` by the intersection over union summed over all images :math:`x`:

.. math::

    \mathrm{IoU}_{k,c} = \frac{\sum_x |S_k(x) \cap L_c(x)|}{\sum_x |S_k(x) \cup L_c(x)|},
    \qquad S_k(x) = \{p : \mathrm{up}(A_k(x))_p > T_k\},

where :math:`L_c(x)` is the concept's mask on image :math:`x`. A unit whose
best IoU is large is a *detector* of that concept (Bau et al. count a unit from
IoU 0.04 on).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens._checks import check_images, check_positive_int, model_device, split_batch
from netlens.extract import FeatureExtractor
from netlens.layers import LayerLike, channel_axis

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

__all__ = ["Dissection", "dissect"]

#: Bau et al.'s threshold: the top 0.5 % of a unit's activations over the dataset.
DEFAULT_QUANTILE = 0.005
#: The most activation values the exact thresholds may hold at once (over all units).
MAX_KEPT_VALUES = 2**27
_CHUNK_ELEMENTS = 2**22  # upsampled values per step of the IoU pass (16 MiB in float32)


@dataclass
class Dissection:
    """What :func:`dissect` measured: every unit's IoU with every concept.

    Attributes
    ----------
    layer : str
        The layer dissected.
    concepts : list[str]
        The concepts, in the column order of :attr:`iou`.
    iou : Tensor
        ``(units, concepts)`` float64: intersection over union, summed over
        the dataset.
    thresholds : Tensor
        ``(units,)`` float64: each unit's activation threshold, the
        ``1 - quantile`` quantile of its activations at the layer's own
        resolution over all images and positions (numpy's ``"linear"`` rule).
    quantile : float
        The share of each unit's activations above its threshold.
    unit_fraction : Tensor
        ``(units,)``: the share of mask pixels where the upsampled map exceeds
        the threshold (close to ``quantile``, not equal: upsampling smooths).
    concept_fraction : Tensor
        ``(concepts,)``: the share of mask pixels each concept covers.
    intersection : Tensor
        ``(units, concepts)`` float64: pixels in both, over the dataset.
    images : int
        Number of images dissected.
    top_images : Tensor
        ``(units, examples)`` int64: the images where each unit peaks
        highest, best first (index into the dataset).
    top_maps : Tensor
        ``(units, examples, h, w)``: the unit's activation map on each of them,
        at the layer's resolution.

    Notes
    -----
    IoU cannot exceed :attr:`ceiling`, ``min(a, m) / max(a, m)`` for a unit
    covering a share ``a`` of the pixels and a concept covering ``m``: at the
    default quantile (``a`` about 0.005) a concept covering a third of the
    pixels, like the sky, scores at most about 0.015 even for a perfect
    detector. Dissect again with ``quantile`` near the concept's share
    (:attr:`concept_fraction`) to compare units on a concept that large.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Identity())  # its layer "0" shows the input itself
    >>> x = torch.zeros(4, 2, 8, 8)
    >>> x[:, 0, :2] = 1.0  # channel 0 lights up the top quarter of every image
    >>> masks = {"top": x[:, 0] > 0, "bottom": torch.zeros(4, 8, 8, dtype=torch.bool)}
    >>> masks["bottom"][:, 6:] = True
    >>> found = dissect(net, "0", x, masks, quantile=0.25, progress=False)
    >>> found.label(0), found.top("bottom", 1)
    (('top', 1.0), [(0, 0.0)])
    >>> found
    Dissection(layer='0', units=2, concepts=2, images=4, quantile=0.25)
    """

    layer: str
    concepts: list[str]
    iou: Tensor
    thresholds: Tensor
    quantile: float
    unit_fraction: Tensor
    concept_fraction: Tensor
    intersection: Tensor
    images: int
    top_images: Tensor
    top_maps: Tensor

    def __repr__(self) -> str:
        return (
            f"Dissection(layer={self.layer!r}, units={self.units}, "
            f"concepts={len(self.concepts)}, images={self.images}, quantile={self.quantile:g})"
        )

    @property
    def units(self) -> int:
        """Number of units (channels) of the layer."""
        return int(self.iou.shape[0])

    @property
    def ceiling(self) -> Tensor:
        """``(units, concepts)``: the largest IoU each unit could reach with each concept.

        ``min(a, m) / max(a, m)`` with ``a`` = :attr:`unit_fraction` and
        ``m`` = :attr:`concept_fraction`: the IoU when the smaller region lies
        entirely inside the larger one.
        """
        a = self.unit_fraction[:, None]
        m = self.concept_fraction[None, :]
        low, high = torch.minimum(a, m), torch.maximum(a, m)
        return torch.where(high > 0, low / high.clamp(min=1e-300), torch.zeros_like(high))

    def _column(self, concept: str) -> int:
        if concept not in self.concepts:
            raise KeyError(f"no concept {concept!r}; the concepts are {self.concepts}")
        return self.concepts.index(concept)

    def top(self, concept: str, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` units with the highest IoU for ``concept``: ``[(unit, iou), ...]``.

        Raises
        ------
        KeyError
            For a concept that was not dissected.
        ValueError
            When the concept covers no pixel of the dataset: no unit can match it.

        Examples
        --------
        >>> found = dissect(nn.Sequential(nn.Identity()), "0", *_toy(), quantile=0.25,
        ...                 progress=False)
        >>> found.top("top", 1)
        [(0, 1.0)]
        """
        column = self._column(concept)
        k = check_positive_int(k, "k")
        if float(self.concept_fraction[column]) == 0.0:
            raise ValueError(
                f"the concept {concept!r} covers no pixel of the {self.images} images; "
                "no unit can match it"
            )
        scores = self.iou[:, column]
        order = torch.sort(scores, descending=True, stable=True).indices[:k]
        return [(int(u), float(scores[u])) for u in order]

    def label(self, unit: int) -> tuple[str, float]:
        """The concept ``unit`` matches best and its IoU: ``(concept, iou)``.

        A unit that never exceeds its threshold (a dead unit) has IoU 0 with
        every concept; its label is the first concept, with IoU 0.0.

        Examples
        --------
        >>> found = dissect(nn.Sequential(nn.Identity()), "0", *_toy(), quantile=0.25,
        ...                 progress=False)
        >>> found.label(0)
        ('top', 1.0)
        """
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)):
            raise TypeError(f"unit must be an integer, not {type(unit).__name__}")
        if not 0 <= unit < self.units:
            raise IndexError(f"unit {unit} is out of range: the layer has {self.units} units")
        row = self.iou[unit]
        best = int(torch.argmax(row))
        return self.concepts[best], float(row[best])

    def rows(self, count: int | None = None, *, min_iou: float = 0.0) -> list[dict[str, Any]]:
        """One dict per unit, best first: unit, concept, iou, ceiling, threshold, fraction.

        Parameters
        ----------
        count
            Keep the first this many rows (all when ``None``).
        min_iou
            Keep units whose best IoU is at least this (Bau et al. call a unit
            a detector from 0.04 on, at their default quantile).

        Examples
        --------
        >>> found = dissect(nn.Sequential(nn.Identity()), "0", *_toy(), quantile=0.25,
        ...                 progress=False)
        >>> row = found.rows(1)[0]
        >>> row["unit"], row["concept"], row["iou"]
        (0, 'top', 1.0)
        """
        best, column = self.iou.max(1)
        order = torch.sort(best, descending=True, stable=True).indices
        ceiling = self.ceiling
        out = []
        for unit in order.tolist():
            if float(best[unit]) < min_iou:
                continue
            c = int(column[unit])
            out.append(
                {
                    "unit": unit,
                    "concept": self.concepts[c],
                    "iou": float(best[unit]),
                    "ceiling": float(ceiling[unit, c]),
                    "threshold": float(self.thresholds[unit]),
                    "fraction": float(self.unit_fraction[unit]),
                }
            )
        return out if count is None else out[:count]

    def table(self, count: int | None = 20, *, min_iou: float = 0.0) -> str:
        """:meth:`rows` as a plain-text table (the ``count`` best units).

        Examples
        --------
        >>> found = dissect(nn.Sequential(nn.Identity()), "0", *_toy(), quantile=0.25,
        ...                 progress=False)
        >>> print(found.table(1))
        unit  concept  IoU    ceiling  threshold  above
           0  top      1.000    1.000       0.25  0.250
        """
        rows = self.rows(count, min_iou=min_iou)
        width = max([len("concept"), *(len(r["concept"]) for r in rows)])
        lines = [f"unit  {'concept':<{width}}  IoU    ceiling  threshold  above"]
        for r in rows:
            lines.append(
                f"{r['unit']:>4}  {r['concept']:<{width}}  {r['iou']:.3f}  {r['ceiling']:>7.3f}  "
                f"{r['threshold']:>9.4g}  {r['fraction']:.3f}"
            )
        return "\n".join(lines)

    def plot(
        self,
        images: Tensor,
        masks: Mapping[str, Any] | None = None,
        *,
        units: Sequence[int] | None = None,
        concept: str | None = None,
        count: int = 4,
        examples: int | None = None,
        fig: FigureBase | None = None,
        **kwargs: Any,
    ) -> FigureBase:
        """Each unit's top images with its region outlined: see
        :func:`netlens.viz.dissection.unit_images`.

        Examples
        --------
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> x, masks = _toy()
        >>> found = dissect(nn.Sequential(nn.Identity()), "0", x, masks, quantile=0.25,
        ...                 progress=False)
        >>> fig = found.plot(x[:, :1].expand(-1, 3, -1, -1), masks, units=[0], examples=2)
        >>> len(fig.axes)
        2
        """
        from netlens.viz.dissection import unit_images

        return unit_images(
            self,
            images,
            masks,
            units=units,
            concept=concept,
            count=count,
            examples=examples,
            fig=fig,
            **kwargs,
        )

    def regions(self, unit: int, size: tuple[int, int]) -> Tensor:
        """``(examples, *size)`` bool: where ``unit`` exceeds its threshold on its top images.

        The stored maps of :attr:`top_maps`, upsampled bilinearly to ``size``
        as in the dissection itself.
        """
        maps = self.top_maps[unit].float()[:, None]
        up = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
        return up > _below(self.thresholds[unit : unit + 1])


def dissect(
    model: nn.Module,
    layer: LayerLike,
    images: Tensor | Iterable[Any],
    masks: Mapping[str, Tensor | np.ndarray],
    *,
    quantile: float = DEFAULT_QUANTILE,
    batch_size: int = 64,
    examples: int = 8,
    progress: bool = True,
) -> Dissection:
    """Score every unit of ``layer`` against every concept mask over a dataset.

    Two passes over the data: the first finds each unit's threshold, the
    second measures the IoU of the upsampled, thresholded maps with the masks
    (both are exact; see Notes). The model runs in eval mode without
    gradients, each forward pass stopped after ``layer``; every submodule's
    ``training`` flag is restored and no hook is left behind.

    Parameters
    ----------
    model
        Any ``nn.Module``.
    layer
        The layer to dissect: a name from ``model.named_modules()``
        (``"layer4"``) or the module. Its output must be ``(N, C, h, w)`` (or
        channels-last ``(N, h, w, C)``).
    images
        ``(N, C, H, W)`` tensor, read in batches of ``batch_size``; or
        anything that can be iterated twice and yields batches in the same
        order both times (a ``DataLoader`` without shuffling, a list of
        tensors): each batch a tensor or a tuple / list whose first item is
        one. Moved to the model's device.
    masks
        ``{concept: (N, H', W')}`` bool (or 0/1 integer) tensors or arrays,
        image ``i`` of the data matching entry ``i``; all of one size, which
        may differ from the images' (the maps are upsampled to it). Numpy
        memory maps work: one batch is read at a time.
    quantile
        Share of each unit's activations above its threshold, in (0, 1).
        Bau et al. use 0.005; a concept covering more of the image needs a
        larger one to be matched well (see :attr:`Dissection.ceiling`).
    batch_size
        Images per forward pass when ``images`` is a tensor.
    examples
        Images kept per unit (where it peaks highest), for the plot.
    progress
        Show a progress bar over both passes.

    Returns
    -------
    Dissection

    Raises
    ------
    ValueError
        For masks of different sizes, a data set with another number of images
        than the masks, or non-binary masks.
    TypeError
        For a one-shot iterator (the data is read twice) or float masks.

    Notes
    -----
    The thresholds are exact order statistics, not estimates: the first pass
    keeps, per unit, the ``quantile`` share of its largest values seen so far
    (or the ``1 - quantile`` share of its smallest, whichever is fewer), and
    interpolates between the two that enclose the quantile as
    ``numpy.quantile`` does. Memory is that many values per unit (for 10,000
    images, a 2x2 ``layer4`` of 512 units and the default quantile, 200 per
    unit) plus one batch; more than :data:`MAX_KEPT_VALUES` in all is refused
    before the pass goes on. The second pass adds counts batch by batch,
    upsampling a few units at a time, so its memory does not grow with the
    dataset.

    Examples
    --------
    >>> import torchvision
    >>> from netlens.datasets import scenes
    >>> data = scenes(8, size=64)
    >>> net = torchvision.models.resnet18()
    >>> found = dissect(net, "layer4", data.images, data.masks, quantile=0.05, progress=False)
    >>> found.iou.shape, found.thresholds.shape
    (torch.Size([512, 11]), torch.Size([512]))
    >>> unit, iou = found.top("sky", 1)[0]
    >>> 0.0 <= iou <= float(found.ceiling[unit, found.concepts.index("sky")])
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    quantile = _check_quantile(quantile)
    batch_size = check_positive_int(batch_size, "batch_size")
    examples = check_positive_int(examples, "examples")
    concepts, mask_list, count, size = _check_masks(masks)
    if isinstance(images, Tensor):
        check_images(images)
        if len(images) != count:
            raise ValueError(f"{len(images)} images but masks for {count}; give one mask per image")
        total: int | None = math.ceil(len(images) / batch_size)
    else:
        if iter(images) is images:  # type: ignore[call-overload]
            raise TypeError(
                "images is an iterator, which can be read only once; dissection reads the "
                "data twice (thresholds, then IoU): pass a tensor, a DataLoader or a list"
            )
        total = len(images) if hasattr(images, "__len__") else None  # type: ignore[arg-type]
    extractor = FeatureExtractor(model, layer, stop_early=True)
    name = next(iter(extractor.layers))
    device = model_device(model)
    bar = tqdm(
        total=None if total is None else 2 * total,
        desc="dissecting",
        unit="batch",
        disable=not progress,
    )
    try:
        thresholds = _thresholds(extractor, name, images, batch_size, quantile, count, device, bar)
        result = _tally(
            extractor,
            name,
            images,
            batch_size,
            thresholds,
            mask_list,
            size,
            count,
            examples,
            device,
            bar,
        )
    finally:
        bar.close()
    intersection, unit_area, concept_area, top_images, top_maps = result
    pixels = float(count * size[0] * size[1])
    union = unit_area[:, None] + concept_area[None, :] - intersection
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    return Dissection(
        layer=name,
        concepts=concepts,
        iou=iou,
        thresholds=thresholds,
        quantile=quantile,
        unit_fraction=unit_area / pixels,
        concept_fraction=concept_area / pixels,
        intersection=intersection,
        images=count,
        top_images=top_images,
        top_maps=top_maps,
    )


# -- checks -------------------------------------------------------------------


def _check_quantile(quantile: object) -> float:
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float, np.floating)):
        raise TypeError(f"quantile must be a number in (0, 1), not {type(quantile).__name__}")
    quantile = float(quantile)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), not {quantile}")
    return quantile


def _check_masks(
    masks: Mapping[str, Tensor | np.ndarray],
) -> tuple[list[str], list[Tensor | np.ndarray], int, tuple[int, int]]:
    if not isinstance(masks, Mapping):
        raise TypeError(
            f"masks must be a mapping {{concept: (N, H, W) bool}}, not {type(masks).__name__}"
        )
    if not masks:
        raise ValueError("masks is empty; give at least one concept")
    shapes = {}
    for concept, mask in masks.items():
        if not isinstance(concept, str):
            raise TypeError(f"concept names must be strings, not {type(concept).__name__}")
        if not isinstance(mask, (Tensor, np.ndarray)):
            raise TypeError(
                f"the mask of {concept!r} must be a tensor or numpy array, "
                f"not {type(mask).__name__}"
            )
        if mask.ndim != 3:
            raise ValueError(
                f"the mask of {concept!r} must be (N, H, W), got shape {tuple(mask.shape)}"
            )
        dtype = mask.dtype
        floating = dtype.is_floating_point if isinstance(mask, Tensor) else dtype.kind in "fc"
        if floating or (isinstance(mask, Tensor) and mask.is_complex()):
            raise TypeError(
                f"the mask of {concept!r} has dtype {dtype}; masks must be bool (or 0/1 "
                "integers): threshold soft masks yourself, e.g. mask > 0.5"
            )
        shapes[concept] = tuple(mask.shape)
    first = next(iter(shapes.values()))
    for concept, shape in shapes.items():
        if shape != first:
            others = next(c for c in shapes if shapes[c] == first)
            raise ValueError(
                f"the masks differ in shape: {concept!r} is {shape}, {others!r} is {first}"
            )
    if first[0] == 0:
        raise ValueError("the masks hold no image (N = 0)")
    return list(masks), list(masks.values()), int(first[0]), (int(first[1]), int(first[2]))


def _mask_batch(masks: list[Tensor | np.ndarray], start: int, stop: int, device) -> Tensor:
    """``(K, b, H, W)`` float 0/1 of images ``start:stop``; non-binary values raise."""
    parts = []
    for mask in masks:
        part = mask[start:stop]
        part = part if isinstance(part, Tensor) else torch.from_numpy(np.ascontiguousarray(part))
        if part.dtype != torch.bool:
            if bool(((part != 0) & (part != 1)).any()):
                raise ValueError(
                    "a mask holds values other than 0 and 1 (images "
                    f"{start} to {stop - 1}); masks must be binary"
                )
        parts.append(part.to(device=device, dtype=torch.float32))
    return torch.stack(parts)


def _batches(images: Tensor | Iterable[Any], batch_size: int, device) -> Iterator[Tensor]:
    if isinstance(images, Tensor):
        for start in range(0, len(images), batch_size):
            yield images[start : start + batch_size].to(device)
        return
    for batch in images:
        yield split_batch(batch)[0].to(device)


def _features(extractor: FeatureExtractor, name: str, x: Tensor) -> Tensor:
    """The layer's output for ``x`` as float ``(b, C, h, w)``."""
    value = extractor(x)[name]
    if not isinstance(value, Tensor) or value.dim() != 4:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"layer {name!r} gives {shape}, not (N, C, h, w) maps; dissection needs a layer "
            "with spatial maps (a convolution or a block, not a pooled vector)"
        )
    if channel_axis(extractor.model, name, 4) != 1:
        value = value.permute(0, 3, 1, 2)
    return value.float()


# -- the two passes -------------------------------------------------------------


class _ExactQuantile:
    """Streaming exact ``numpy.quantile(values, level)`` per row, keeping few values.

    With ``m`` values per row, numpy interpolates between the sorted values at
    indices ``lo = floor(g)`` and ``lo + 1`` where ``g = m * level + (1 -
    level) - 1``. Only the ``m - lo`` largest values (or the ``lo + 2``
    smallest) can be those two, so only they are kept.
    """

    def __init__(self, rows: int, count: int, level: float) -> None:
        self.level = level
        self.virtual = count * level + (1 - level) - 1
        self.lo = min(max(math.floor(self.virtual), 0), count - 1)
        self.hi = min(self.lo + 1, count - 1)
        self.largest = count - self.lo <= self.hi + 1
        self.keep = count - self.lo if self.largest else self.hi + 1
        self.count = count
        if rows * self.keep > MAX_KEPT_VALUES:
            raise ValueError(
                f"the exact thresholds would hold {rows * self.keep:,} activations "
                f"({rows} units x {self.keep:,}), more than {MAX_KEPT_VALUES:,}; use a quantile "
                "nearer 0, fewer images or a layer with fewer positions"
            )
        self.kept: Tensor | None = None
        self.seen = 0

    def add(self, values: Tensor) -> None:
        self.seen += values.shape[1]
        kept = values if self.kept is None else torch.cat([self.kept, values], 1)
        if kept.shape[1] > self.keep:
            kept = kept.topk(self.keep, dim=1, largest=self.largest, sorted=False).values
        self.kept = kept

    def result(self) -> Tensor:
        assert self.kept is not None and self.seen == self.count
        ordered = torch.sort(self.kept.double(), dim=1, descending=self.largest).values
        if self.largest:  # ascending index j is position count - 1 - j
            low = ordered[:, self.count - 1 - self.lo]
            high = ordered[:, self.count - 1 - self.hi]
        else:
            low, high = ordered[:, self.lo], ordered[:, self.hi]
        gamma = (
            self.virtual - math.floor(self.virtual) if self.lo == math.floor(self.virtual) else 0
        )
        diff = high - low
        if gamma >= 0.5:  # numpy's lerp, the same rounding
            return high - diff * (1 - gamma)
        return low + diff * gamma


def _thresholds(
    extractor: FeatureExtractor,
    name: str,
    images: Tensor | Iterable[Any],
    batch_size: int,
    quantile: float,
    count: int,
    device,
    bar: tqdm,
) -> Tensor:
    state: _ExactQuantile | None = None
    seen = 0
    shape = None
    for x in _batches(images, batch_size, device):
        features = _features(extractor, name, x)
        seen += len(features)
        if seen > count:
            raise ValueError(f"the data holds more images than the {count} masks")
        if shape is None:
            shape = tuple(features.shape[1:])
            state = _ExactQuantile(shape[0], count * shape[1] * shape[2], 1 - quantile)
        elif tuple(features.shape[1:]) != shape:
            raise ValueError(
                f"layer {name!r} gave maps of {tuple(features.shape[1:])} after {shape}; "
                "give images of one size"
            )
        assert state is not None
        state.add(features.transpose(0, 1).reshape(shape[0], -1))
        bar.update()
    if seen != count:
        raise ValueError(f"the data holds {seen} images but the masks {count}")
    assert state is not None
    return state.result().cpu()


def _tally(
    extractor: FeatureExtractor,
    name: str,
    images: Tensor | Iterable[Any],
    batch_size: int,
    thresholds: Tensor,
    masks: list[Tensor | np.ndarray],
    size: tuple[int, int],
    count: int,
    examples: int,
    device,
    bar: tqdm,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    units = len(thresholds)
    intersection = torch.zeros(units, len(masks), dtype=torch.float64)
    unit_area = torch.zeros(units, dtype=torch.float64)
    concept_area = torch.zeros(len(masks), dtype=torch.float64)
    best_values: Tensor | None = None
    best_images = torch.zeros(units, 0, dtype=torch.int64)
    best_maps: Tensor | None = None
    threshold = _below(thresholds).to(device)
    pixels = size[0] * size[1]
    # float32 sums of 0/1 values are exact below 2**24 terms; larger images count in float64
    counts = torch.float32 if pixels <= 2**24 else torch.float64
    start = 0
    for x in _batches(images, batch_size, device):
        features = _features(extractor, name, x)
        b = len(features)
        if start + b > count:
            raise ValueError(
                f"the data holds more images on the second pass than the {count} of the first; "
                "it must yield the same batches every time it is read"
            )
        concept = _mask_batch(masks, start, start + b, device)  # (K, b, H, W)
        concept_area += concept.sum((1, 2, 3), dtype=torch.float64).cpu()
        for lo in range(0, b, max(1, _CHUNK_ELEMENTS // pixels)):
            hi = min(b, lo + max(1, _CHUNK_ELEMENTS // pixels))
            flat = concept[:, lo:hi].reshape(len(masks), -1).T.to(counts)  # (b' H W, K)
            step = max(1, _CHUNK_ELEMENTS // ((hi - lo) * pixels))
            for c0 in range(0, units, step):
                c1 = min(units, c0 + step)
                up = F.interpolate(
                    features[lo:hi, c0:c1], size=size, mode="bilinear", align_corners=False
                )
                above = up > threshold[c0:c1].view(1, -1, 1, 1)
                above = above.transpose(0, 1).reshape(c1 - c0, -1).to(counts)
                intersection[c0:c1] += (above @ flat).double().cpu()
                unit_area[c0:c1] += above.sum(1).double().cpu()
        # the images where each unit peaks highest, with their maps
        peaks = features.flatten(2).amax(2).T.cpu()  # (units, b)
        maps = features.transpose(0, 1).cpu()  # (units, b, h, w)
        index = torch.arange(start, start + b).expand(units, b)
        if best_values is None:
            values, images_, maps_ = peaks, index, maps
        else:
            assert best_maps is not None
            values = torch.cat([best_values, peaks], 1)
            images_ = torch.cat([best_images, index], 1)
            maps_ = torch.cat([best_maps, maps], 1)
        keep = min(examples, values.shape[1])
        order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :keep]
        best_values = values.gather(1, order)
        best_images = images_.gather(1, order)
        best_maps = maps_[torch.arange(units)[:, None], order]
        start += b
        bar.update()
    if start != count:
        raise ValueError(
            f"the data held {start} images on the second pass, {count} on the first; it must "
            "yield the same batches every time it is read"
        )
    assert best_maps is not None
    return intersection, unit_area, concept_area, best_images, best_maps


def _below(thresholds: Tensor) -> Tensor:
    """The float32 thresholds that float32 maps exceed exactly where they exceed the float64 ones.

    For a float32 ``x``, ``x > t`` holds exactly when ``x > t32`` with ``t32``
    the largest float32 not above ``t``.
    """
    rounded = thresholds.float()
    above = rounded.double() > thresholds
    return torch.where(
        above, torch.nextafter(rounded, torch.full_like(rounded, -math.inf)), rounded
    )


def _toy() -> tuple[Tensor, dict[str, Tensor]]:
    """Four 8x8 two-channel images whose channel 0 is the mask "top" (for the examples)."""
    x = torch.zeros(4, 2, 8, 8)
    x[:, 0, :2] = 1.0
    bottom = torch.zeros(4, 8, 8, dtype=torch.bool)
    bottom[:, 6:] = True
    return x, {"top": x[:, 0] > 0, "bottom": bottom}
