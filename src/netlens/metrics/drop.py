"""Average drop and increase in confidence (Chattopadhyay et al. 2018): the image times its map."""

from __future__ import annotations

from torch import Tensor, nn

from netlens.attribution.base import Target
from netlens.errors import UndefinedMapError
from netlens.hooks import OutputFn
from netlens.metrics._common import (
    Scorer,
    check_count,
    check_inputs,
    check_maps,
    normalise_maps,
    resize_maps,
)
from netlens.metrics._score import MetricResult

__all__ = ["average_drop", "increase_in_confidence"]


def average_drop(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    output: OutputFn | None = None,
) -> MetricResult:
    r"""Average drop: how much class probability the image loses when seen only through the map.

    Each map is min-max scaled to :math:`E \in [0, 1]` at its own resolution,
    resized bilinearly to the image's, and multiplied into every channel; the
    value of a sample is the relative drop of the class probability,

    .. math::

        \mathrm{drop} = \frac{\max\big(0,\; Y_c - O_c\big)}{Y_c}, \qquad
        Y_c = p_c(x), \quad O_c = p_c(E \odot x)

    and :attr:`MetricResult.mean` is the average drop over the images (a
    fraction; the paper reports it as a percentage). Lower is better
    (Chattopadhyay, Sarkar, Howlader and Balasubramanian, *Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional
    Networks*, WACV 2018). :math:`p_c` is the softmax of the logits.

    This is the paper's relative drop, which torchcam's
    ``ClassificationMetric(extractor, partial(torch.softmax, dim=-1))``
    computes (its ``"avg_drop"``, with :math:`10^{-7}` added to :math:`Y_c`);
    pytorch-grad-cam's ``DropInConfidence`` is the absolute drop
    :math:`\max(0, Y_c - O_c)`, not divided by :math:`Y_c`. Both peers, like
    this function, scale the map before resizing it.

    A constant map has no min-max scaling, and a class probability of 0 (in
    float32) no relative drop: both raise :class:`~netlens.errors.UndefinedMapError`.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    x
        Images ``(N, C, H, W)``, as the model takes them.
    maps
        One map per image, ``(N, h, w)`` or ``(N, 1, h, w)``, at most the
        images' size (a smaller one is resized after scaling).
    target
        The class of each image: ``None`` (top-1), an ``int``, one per image,
        or a function of the logits.
    batch_size
        Images per forward pass; ``None``: as for :func:`deletion`.
    seed
        Seeds the bootstrap interval.
    output
        How to read logits from what the model returns.

    Returns
    -------
    MetricResult
        ``values``: the drop of each image, in [0, 1].

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens import GradCAM
    >>> from netlens.metrics import average_drop
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> x = torch.rand(2, 3, 32, 32)
    >>> result = average_drop(model, x, GradCAM(model)(x) + torch.rand(2, 32, 32))
    >>> bool(((result.values >= 0) & (result.values <= 1)).all()), result.higher_is_better
    (True, False)
    """
    seed = check_count(seed, "seed", minimum=0)
    before, after = _through_map(model, x, maps, target, batch_size, output)
    drop = (before - after).clamp(min=0) / before
    return MetricResult.of("average_drop", drop.numpy(), higher_is_better=False, seed=seed)


def increase_in_confidence(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    batch_size: int | None = None,
    seed: int = 0,
    output: OutputFn | None = None,
) -> MetricResult:
    r"""Increase in confidence: whether the image seen through the map is more of its class.

    With :math:`Y_c` and :math:`O_c` as in :func:`average_drop`, the value of
    a sample is :math:`\mathbb{1}[O_c > Y_c]`, and :attr:`MetricResult.mean`
    is the share of images whose class probability rose (Chattopadhyay et
    al., *Grad-CAM++*, WACV 2018; reported there as a percentage). Higher is
    better. Equals torchcam's ``ClassificationMetric`` ``"conf_increase"`` and
    pytorch-grad-cam's ``IncreaseInConfidence`` with
    ``ClassifierOutputSoftmaxTarget`` on the same maps. Parameters are those
    of :func:`average_drop`.

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens import GradCAM
    >>> from netlens.metrics import increase_in_confidence
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> x = torch.rand(2, 3, 32, 32)
    >>> result = increase_in_confidence(model, x, torch.rand(2, 32, 32))
    >>> set(result.values.tolist()) <= {0.0, 1.0}
    True
    """
    seed = check_count(seed, "seed", minimum=0)
    before, after = _through_map(model, x, maps, target, batch_size, output)
    rose = (after > before).double()
    return MetricResult.of("increase_in_confidence", rose.numpy(), higher_is_better=True, seed=seed)


def _through_map(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    target: Target,
    batch_size: int | None,
    output: OutputFn | None,
) -> tuple[Tensor, Tensor]:
    """Class probabilities of ``x`` and of ``x`` times its scaled map, float64 on the CPU."""
    x = check_inputs(model, x)
    maps = check_maps(maps, x)
    size = (x.shape[-2], x.shape[-1])
    scaled = resize_maps(normalise_maps(maps), size).to(x.dtype)
    scorer = Scorer(
        model, x, target, output=output, batch_size=batch_size, progress=False, title="drop"
    )
    classes = scorer.start(x)
    after = scorer.scores(
        len(x), lambda rows: x[rows] * scaled[rows, None], lambda rows: classes[rows]
    )
    before = scorer.original
    if bool((before == 0).any()):
        bad = (before == 0).nonzero()[:, 0].tolist()
        raise UndefinedMapError(
            f"the class probability of images {bad} is 0 in float32: the relative drop is undefined"
        )
    return before.double().cpu(), after.double().cpu()
