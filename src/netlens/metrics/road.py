"""ROAD (Rong et al. 2022): remove pixels, fill them in by noisy linear imputation, score."""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from netlens.attribution.base import Target
from netlens.hooks import OutputFn
from netlens.metrics._common import (
    Scorer,
    check_count,
    check_inputs,
    check_maps,
    resize_maps,
    tie_broken_ranks,
)
from netlens.metrics._score import MetricResult

__all__ = ["NEIGHBOUR_WEIGHTS", "Order", "impute", "road"]

Order = Literal["morf", "lerf", "both"]

#: ROAD's neighbours of a pixel, ``(row offset, column offset, weight)``: 1/6 for the
#: four that share an edge, 1/12 for the four that share a corner.
NEIGHBOUR_WEIGHTS: tuple[tuple[int, int, float], ...] = (
    (-1, 0, 1 / 6),
    (1, 0, 1 / 6),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (-1, -1, 1 / 12),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (1, 1, 1 / 12),
)

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def road(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    percentiles: Sequence[float] = PERCENTILES,
    order: Order = "both",
    noise: float = 0.01,
    batch_size: int | None = None,
    progress: bool = False,
    seed: int = 0,
    output: OutputFn | None = None,
) -> MetricResult:
    r"""ROAD: the class probability after the map's pixels are removed and filled in.

    For each percentage :math:`q` of ``percentiles``, the :math:`\mathrm{round}(qP/100)`
    most relevant pixels of the map (MoRF, "most relevant first") or the
    least relevant (LeRF) are removed and imputed: each removed pixel takes
    the weighted mean of its eight neighbours (weight 1/6 for those that
    share an edge, 1/12 for the corners), removed neighbours being unknowns of
    the same sparse linear system, solved exactly for every channel; then
    Gaussian noise of standard deviation ``noise`` (in the input's units) is
    added to the imputed pixels. The imputation makes the removal hard to see
    for the model, so that the score measures the information removed rather
    than the shape of the hole (Rong, Leemann, Borisov, Kasneci and Kasneci,
    *A Consistent and Efficient Evaluation Strategy for Attribution Methods*,
    ICML 2022; "remove and debias").

    The value of a sample for one order is the mean over the percentages of
    the change of the class probability, :math:`p_c(\tilde x_q) - p_c(x)`;
    for MoRF lower is better, for LeRF higher. ``order="both"`` returns
    :math:`(\mathrm{LeRF} - \mathrm{MoRF}) / 2` (higher is better) with the
    two orders in :attr:`MetricResult.parts`. The paper plots the accuracy of
    the model over a test set at each percentage; the per-image probability
    change here gives an interval over images.

    With ``noise=0`` this equals pytorch-grad-cam's
    ``ROADMostRelevantFirstAverage``, ``ROADLeastRelevantFirstAverage`` and
    ``ROADCombined`` with ``ClassifierOutputSoftmaxTarget`` on the same maps
    when every :math:`qP/100` is a whole number and the maps have no ties
    (pytorch-grad-cam's ``percentile`` :math:`r` removes the pixels at or
    above the :math:`r`-th percentile of the map, that is :math:`q = 100 - r`
    percent; its noise comes from torch's global generator). Ties are ranked
    at random here, seeded with ``seed``, as is the noise.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    x
        Images ``(N, C, H, W)``.
    maps
        One map per image, ``(N, h, w)`` or ``(N, 1, h, w)``, at most the
        images' size (a smaller one is resized bilinearly first).
    target
        The class of each image: ``None`` (top-1), an ``int``, one per image,
        or a function of the logits.
    percentiles
        Percentages of pixels removed, each strictly between 0 and 100.
    order
        ``"morf"``, ``"lerf"`` or ``"both"``.
    noise
        Standard deviation of the noise added to imputed pixels (0: none).
    batch_size
        Images per forward pass; ``None``: as for :func:`deletion`.
    progress
        Show a progress bar over the batches (imputation included).
    seed
        Seeds the order of tied pixels, the noise and the bootstrap interval.
    output
        How to read logits from what the model returns.

    Returns
    -------
    MetricResult
        ``values`` per image; for one order also ``x`` (the percentages) and
        ``curves`` (``(N, len(percentiles))`` probabilities).

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens import GradCAM
    >>> from netlens.metrics import road
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> x = torch.rand(2, 3, 32, 32)
    >>> result = road(model, x, GradCAM(model)(x), percentiles=(20, 50, 80))
    >>> sorted(result.parts), result.parts["morf"].curves.shape
    (['lerf', 'morf'], (2, 3))
    """
    x = check_inputs(model, x)
    maps = check_maps(maps, x)
    shares = _percentiles(percentiles)
    if order not in ("morf", "lerf", "both"):
        raise ValueError(f"order must be 'morf', 'lerf' or 'both', not {order!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0, not {noise!r}")
    seed = check_count(seed, "seed", minimum=0)
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    pixels = height * width
    orders = ("morf", "lerf") if order == "both" else (order,)
    ranks = tie_broken_ranks(resize_maps(maps, (height, width)), seed).cpu()
    counts = [round(q * pixels / 100) for q in shares]
    if min(counts) < 1 or max(counts) >= pixels:
        raise ValueError(
            f"percentiles {list(shares)} of {pixels} pixels remove "
            f"{min(counts)} to {max(counts)}; each must remove at least one pixel and keep one"
        )
    scorer = Scorer(
        model,
        x,
        target,
        output=output,
        batch_size=batch_size,
        progress=progress,
        title="ROAD",
        passes=len(orders) * len(counts),
    )
    classes = scorer.start(x)

    # One job per image, order and percentage. Each job's noise has its own seed, so it does
    # not depend on the batch size, nor on which other orders and percentages are asked for.
    jobs = [(i, o, k) for i in range(n) for o in orders for k in range(len(counts))]
    images_cpu = x.detach().cpu()

    def images(rows: slice) -> Tensor:
        made = []
        for i, o, k in jobs[rows]:
            rank = ranks[i].view(height, width)
            removed = rank < counts[k] if o == "morf" else rank >= pixels - counts[k]
            generator = torch.Generator().manual_seed(_job_seed(seed, i, o, shares[k]))
            made.append(impute(images_cpu[i], removed, noise=float(noise), generator=generator))
        return torch.stack(made).to(x.device)

    def job_classes(rows: slice) -> Tensor:
        return classes[torch.tensor([i for i, _, _ in jobs[rows]], device=classes.device)]

    scores = scorer.scores(len(jobs), images, job_classes).double().cpu()
    curves = scores.view(n, len(orders), len(counts))
    before = scorer.original.double().cpu()
    results = {
        o: MetricResult.of(
            o,
            (curves[:, j] - before[:, None]).mean(1).numpy(),
            higher_is_better=o == "lerf",
            seed=seed,
            x=np.asarray(shares),
            curves=curves[:, j].numpy(),
        )
        for j, o in enumerate(orders)
    }
    if order != "both":
        single = results[order]
        return MetricResult.of(
            f"road_{order}",
            single.values,
            higher_is_better=single.higher_is_better,
            seed=seed,
            x=single.x,
            curves=single.curves,
        )
    combined = (results["lerf"].values - results["morf"].values) / 2
    return MetricResult.of("road", combined, higher_is_better=True, seed=seed, parts=results)


def _job_seed(seed: int, image: int, order: str, percentile: float) -> int:
    key = f"{seed}:{image}:{order}:{percentile!r}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def _percentiles(percentiles: object) -> tuple[float, ...]:
    if isinstance(percentiles, (str, bytes)) or not isinstance(percentiles, Sequence):
        raise TypeError(f"percentiles must be a sequence of numbers, not {percentiles!r}")
    if not percentiles:
        raise ValueError("percentiles is empty; give at least one percentage")
    shares = []
    for q in percentiles:
        if isinstance(q, bool) or not isinstance(q, numbers.Real):
            raise TypeError(f"percentiles must be numbers, got {q!r}")
        if not 0 < q < 100:
            raise ValueError(f"each percentile must lie strictly between 0 and 100, got {q!r}")
        shares.append(float(q))
    return tuple(shares)


def impute(
    image: Tensor,
    removed: Tensor,
    *,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ROAD's noisy linear imputation of the ``removed`` pixels of one image ``(C, H, W)``.

    Every removed pixel becomes the weighted mean of its neighbours in the
    image (:data:`NEIGHBOUR_WEIGHTS`, renormalised at the border), removed
    neighbours included as unknowns; the sparse system is solved exactly, in
    float64, for all channels at once, and ``noise`` times standard normal
    noise is added to the imputed values. Kept pixels are returned as they
    were. At least one pixel must be kept.

    Examples
    --------
    >>> import torch
    >>> image = torch.arange(9.0).view(1, 3, 3)
    >>> hole = torch.zeros(3, 3, dtype=torch.bool)
    >>> hole[1, 1] = True
    >>> impute(image, hole)[0, 1, 1].item()  # the mean of its neighbours
    4.0
    """
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    if removed.shape != (height, width):
        raise ValueError(
            f"removed has shape {tuple(removed.shape)}; the image's pixels are ({height}, {width})"
        )
    flat_removed = removed.reshape(-1).cpu().numpy().astype(bool)
    unknown = np.flatnonzero(flat_removed)
    if len(unknown) == 0:
        return image.clone()
    if len(unknown) == height * width:
        raise ValueError("every pixel is removed: there is nothing to impute from")
    values = image.detach().reshape(channels, -1).cpu().double().numpy()
    variable = np.full(height * width, -1)
    variable[unknown] = np.arange(len(unknown))
    rows_of, cols_of = np.divmod(unknown, width)
    diagonal = np.zeros(len(unknown))
    right = np.zeros((len(unknown), channels))
    entries_i, entries_j, entries_w = [], [], []
    for dy, dx, weight in NEIGHBOUR_WEIGHTS:
        r, c = rows_of + dy, cols_of + dx
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        diagonal[inside] += weight
        neighbour = r[inside] * width + c[inside]
        who = np.flatnonzero(inside)
        missing = flat_removed[neighbour]
        entries_i.append(who[missing])
        entries_j.append(variable[neighbour[missing]])
        entries_w.append(np.full(int(missing.sum()), -weight))
        known = ~missing
        np.add.at(right, who[known], weight * values[:, neighbour[known]].T)
    size = len(unknown)
    rows = np.concatenate([np.arange(size), *entries_i])
    cols = np.concatenate([np.arange(size), *entries_j])
    data = np.concatenate([diagonal, *entries_w])
    system = csc_matrix((data, (rows, cols)), shape=(size, size))
    solved = np.asarray(spsolve(system, right)).reshape(size, channels)
    filled = torch.from_numpy(solved.T.copy()).to(image.dtype)
    if noise:
        filled = filled + noise * torch.randn(filled.shape, generator=generator).to(filled)
    out = image.detach().reshape(channels, -1).cpu().clone()
    out[:, torch.from_numpy(unknown)] = filled
    return out.view(channels, height, width).to(image.device)
