"""Deletion and insertion (Petsiuk et al. 2018): the class probability as pixels go or come."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
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

__all__ = ["BLUR_SIGMA", "BLUR_TAPS", "Substrate", "deletion", "insertion", "substrate_like"]

Substrate = Literal["zero", "blur", "mean"] | Tensor

#: The Gaussian blur of the ``"blur"`` substrate: taps per side and sigma in pixels.
BLUR_TAPS = 11
BLUR_SIGMA = 5.0


def deletion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    steps: int = 50,
    substrate: Substrate = "zero",
    batch_size: int | None = None,
    progress: bool = False,
    seed: int = 0,
    output: OutputFn | None = None,
) -> MetricResult:
    r"""Deletion: how fast the class probability falls as the most relevant pixels are removed.

    Pixels are ranked by the map, most relevant first; at step :math:`k` of
    :math:`T` the first :math:`n_k = \lfloor kP / T \rfloor` of the :math:`P`
    pixels (all channels of each) are replaced by the substrate, and the
    model scores the result. The value of a sample is the area under that
    curve of probabilities over the fraction removed:

    .. math::

        \mathrm{deletion} = \int_0^1 p_c\big(x_{\text{first } tP \text{ pixels removed}}\big)
        \, dt \approx \sum_{k=1}^{T} \frac{t_k - t_{k-1}}{2}
        \big(p_c(x^{(k-1)}) + p_c(x^{(k)})\big), \quad t_k = n_k / P

    (Petsiuk, Das and Saenko, *RISE: Randomized Input Sampling for Explanation
    of Black-box Models*, BMVC 2018). Lower is better: a faithful map names
    first the pixels without which the model no longer sees the class.
    :math:`p_c` is the softmax of the logits at class :math:`c` (the paper uses
    the class probability). Read it against a :class:`RandomMap`: the deletion
    of a random order is the chance value.

    All ``N * T`` perturbed images (plus the ``N`` originals) run as batches of
    ``batch_size`` forward passes without gradients; each batch is made when
    it runs. With ``substrate="zero"`` this equals torchcam's
    ``DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1),
    steps=T)`` deletion AUC for the same maps when ``P`` is a multiple of
    ``T`` and the map has no ties (torchcam ranks tied pixels in raster order;
    here ties are ranked at random, seeded with ``seed``, so a constant map
    scores as a random one).

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    x
        Images ``(N, C, H, W)``.
    maps
        One map per image, ``(N, H, W)`` or ``(N, 1, H, W)``, larger values
        more relevant. A map smaller than the images (a CAM at its layer's
        resolution) is resized bilinearly to the images' size first.
    target
        The class of each image: ``None`` (each image's top-1 class), an
        ``int``, one per image, or a function of the logits.
    steps
        :math:`T`, the number of removal steps (at least 1, at most the number
        of pixels); the curve has ``steps + 1`` points.
    substrate
        What a removed pixel becomes: ``"zero"`` (0 in every channel: the
        paper's deletion), ``"blur"`` (the image blurred by an 11-tap Gaussian
        of sigma 5 pixels, the paper's insertion start, with reflected edges),
        ``"mean"`` (each image's per-channel mean), or a tensor that
        broadcasts to ``x``.
    batch_size
        Images per forward pass; ``None``: as many as hold 2**23 input values
        (32 MiB in float32), at most 128.
    progress
        Show a progress bar over the batches.
    seed
        Seeds the order of tied pixels and the bootstrap interval.
    output
        How to read logits from what the model returns (see
        :func:`netlens.hooks.as_logits`).

    Returns
    -------
    MetricResult
        ``values`` (AUC per image), ``mean``, ``interval``, ``x`` (the
        fractions removed, ``(steps + 1,)``) and ``curves`` (``(N, steps + 1)``
        probabilities).

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens import GradCAM
    >>> from netlens.metrics import deletion
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> x = torch.rand(2, 3, 32, 32)
    >>> result = deletion(model, x, GradCAM(model)(x), steps=8)
    >>> result.values.shape, result.curves.shape
    ((2,), (2, 9))
    """
    return _curve_metric(
        "deletion",
        model,
        x,
        maps,
        target,
        steps=steps,
        substrate=substrate,
        batch_size=batch_size,
        progress=progress,
        seed=seed,
        output=output,
    )


def insertion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    steps: int = 50,
    substrate: Substrate = "blur",
    batch_size: int | None = None,
    progress: bool = False,
    seed: int = 0,
    output: OutputFn | None = None,
) -> MetricResult:
    r"""Insertion: how fast the class probability rises as the most relevant pixels come back.

    The mirror of :func:`deletion`: the curve starts from the substrate alone
    and at step :math:`k` the first :math:`n_k = \lfloor kP / T \rfloor`
    pixels of the map's ranking are those of the image; the value is the area
    under the curve of class probabilities over the fraction inserted
    (Petsiuk, Das and Saenko, *RISE: Randomized Input Sampling for Explanation
    of Black-box Models*, BMVC 2018). Higher is better. The default substrate
    is the paper's: the image blurred (an 11-tap Gaussian of sigma 5 pixels,
    reflected edges), so that inserting a pixel adds detail rather than an
    edge against black.

    With ``substrate="zero"`` this equals torchcam's
    ``DeletionInsertionMetric`` insertion AUC under the conditions given in
    :func:`deletion`. Parameters and return value are those of
    :func:`deletion`.

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens import Saliency
    >>> from netlens.metrics import insertion
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> x = torch.rand(2, 3, 32, 32)
    >>> result = insertion(model, x, Saliency(model)(x), steps=8)
    >>> result.x.tolist()[:3], result.higher_is_better
    ([0.0, 0.125, 0.25], True)
    """
    return _curve_metric(
        "insertion",
        model,
        x,
        maps,
        target,
        steps=steps,
        substrate=substrate,
        batch_size=batch_size,
        progress=progress,
        seed=seed,
        output=output,
    )


def _curve_metric(
    kind: str,
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target,
    *,
    steps: int,
    substrate: Substrate,
    batch_size: int | None,
    progress: bool,
    seed: int,
    output: OutputFn | None,
) -> MetricResult:
    x = check_inputs(model, x)
    maps = check_maps(maps, x)
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    pixels = height * width
    steps = check_count(steps, "steps")
    if steps > pixels:
        raise ValueError(f"steps={steps} is more than the {pixels} pixels of the images")
    seed = check_count(seed, "seed", minimum=0)
    zero = isinstance(substrate, str) and substrate == "zero"
    background = x if zero else substrate_like(x, substrate)  # zero: filled in place
    ranks = tie_broken_ranks(resize_maps(maps, (height, width)), seed)
    scorer = Scorer(
        model,
        x,
        target,
        output=output,
        batch_size=batch_size,
        progress=progress,
        title=kind,
        passes=steps + 1,
    )
    classes = scorer.start(x)

    counts = torch.arange(steps + 1, device=x.device) * pixels // steps
    # The image itself is the curve's first point of deletion and its last of insertion.
    points = torch.arange(1, steps + 1) if kind == "deletion" else torch.arange(0, steps)
    points = points.to(x.device)
    samples = torch.arange(n, device=x.device).repeat_interleave(len(points))
    at = points.repeat(n)
    shape = (1, height, width)

    def images(rows: slice) -> Tensor:
        index = samples[rows]
        out = x[index]  # advanced indexing: a copy, faster on the CPU than index_select
        chosen = (ranks[index] < counts[at[rows], None]).view(-1, *shape)
        replaced = chosen if kind == "deletion" else ~chosen
        if zero:
            return out.masked_fill_(replaced, 0)
        return torch.where(replaced, background[index], out, out=out)

    scores = scorer.scores(len(samples), images, lambda rows: classes[samples[rows]])
    curves = torch.empty(n, steps + 1, device=scores.device)
    curves[samples.to(scores.device), at.to(scores.device)] = scores
    curves[:, 0 if kind == "deletion" else steps] = scorer.original.to(scores.device)
    fractions = counts.double().cpu() / pixels
    curves = curves.double().cpu()
    area = torch.trapezoid(curves, fractions, dim=1)
    return MetricResult.of(
        kind,
        area.numpy(),
        higher_is_better=kind == "insertion",
        seed=seed,
        x=fractions.numpy(),
        curves=curves.numpy(),
    )


def substrate_like(x: Tensor, substrate: Substrate) -> Tensor:
    """What removed pixels become, ``(N, C, H, W)`` like ``x``.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 3, 16, 16)
    >>> substrate_like(x, "mean")[0, :, 0, 0].allclose(x[0].mean((1, 2)))
    True
    >>> blurred = substrate_like(x, "blur")
    >>> blurred.shape, bool(blurred.std() < x.std())
    (torch.Size([2, 3, 16, 16]), True)
    """
    if isinstance(substrate, Tensor):
        try:
            return torch.broadcast_to(substrate.detach().to(x), x.shape)
        except RuntimeError:
            raise ValueError(
                f"a substrate of shape {tuple(substrate.shape)} does not broadcast to the "
                f"images' shape {tuple(x.shape)}"
            ) from None
    if substrate == "zero":
        return torch.zeros_like(x)
    if substrate == "mean":
        return x.mean((2, 3), keepdim=True).expand_as(x)
    if substrate == "blur":
        return _blur(x)
    raise ValueError(f"substrate must be 'zero', 'blur', 'mean' or a tensor, not {substrate!r}")


def _blur(x: Tensor) -> Tensor:
    radius = BLUR_TAPS // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / BLUR_SIGMA) ** 2)
    taps = (taps / taps.sum()).to(x)
    channels = x.shape[1]
    out = x
    for dim, kernel in ((3, taps.view(1, 1, 1, -1)), (2, taps.view(1, 1, -1, 1))):
        pad = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
        mode = "reflect" if out.shape[dim] > radius else "replicate"
        weights = kernel.expand(channels, 1, -1, -1)
        out = F.conv2d(F.pad(out, pad, mode=mode), weights, groups=channels)
    return out
