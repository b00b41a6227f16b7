"""Occlusion (Zeiler and Fergus 2014)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from netlens.attribution.base import Targets
from netlens.attribution.perturbation import PerturbationAttribution
from netlens.attribution.saliency import ChannelReduce
from netlens.hooks import OutputFn

__all__ = ["Occlusion"]

Pair = int | tuple[int, int]
Box = tuple[int, int, int, int]


class Occlusion(PerturbationAttribution):
    r"""Mean drop of the target logit when a sliding window of the image is replaced.

    A window of :math:`h \times w` pixels, over every colour channel, slides
    over the image from the top-left corner by ``stride``; each position
    :math:`p` gives an image :math:`x^{(p)}` with the window's pixels set to
    ``baseline``. A pixel's value is the mean drop of the target logit
    :math:`y^t` over the windows :math:`W(i, j)` that cover it:

    .. math::

        O_{ij} = \frac{1}{|W(i, j)|} \sum_{p \in W(i, j)} \big(y^t(x) - y^t(x^{(p)})\big)

    (Zeiler and Fergus, *Visualizing and Understanding Convolutional
    Networks*, ECCV 2014). Positive: hiding the patch lowers the class score;
    negative: the patch worked against the class. Every colour channel gets
    the same value, so with the defaults (``abs=False``, ``channel_reduce=
    "mean"``; ``"max"`` gives the same) the map is the signed mean drop.
    Equals captum's ``Occlusion(model).attribute(x, sliding_window_shapes=(C,
    h, w), strides=(C, s_h, s_w), baselines=baseline, target=target)`` on any
    one of its ``C`` equal channels.

    Windows start at rows :math:`0, s_h, 2 s_h, \dots` up to the first start at
    or past :math:`H - h` (:math:`\lceil (H - h) / s_h \rceil + 1` rows of
    windows, the same along the width); where the stride does not tile the
    image, the last window is cut off at the border. Every pixel lies in at
    least one window (a stride larger than the window is refused).

    Cost: image by image, the image itself and its :math:`P` occluded
    copies in :math:`\lceil (P + 1) / \text{batch\_size} \rceil` forward
    passes without gradients, :math:`N \lceil (P + 1) / \text{batch\_size}
    \rceil` in all; the image's own row gives the logits that choose the
    targets (``None``: each image's top-1 class). Each drop is the difference
    of two logits from the same batches, so an image's map does not depend on
    the other images of the batch. Any number of targets per image comes from
    the same passes. On the CPU the batches are made channels-last where the
    size plan says that is faster for batches of ``batch_size`` (every batch
    of a call alike); the first call of an image size runs its first image
    once more to plan that.

    Parameters
    ----------
    model
        The classifier.
    window
        The window's height and width, an ``int`` for a square. Default: a
        quarter of the image's height and width, rounded up.
    stride
        The step between windows, at most the window; default: half the
        window, rounded up. With both defaults an image has at most
        :math:`7 \times 7 = 49` windows, whatever its size (56 x 56 pixels
        in steps of 28 on a 224 x 224 image).
    baseline
        What replaces the window: a number, or a tensor broadcastable to one
        image ``(C, H, W)`` (e.g. the per-channel mean, ``(C, 1, 1)``). The
        default, 0, is the mean grey of images normalised per channel.
    abs
        Return the absolute value of the mean drop.
    channel_reduce
        How the ``C`` equal channel values become one: ``"mean"`` and
        ``"max"`` give the value itself, ``"sum"`` ``C`` times it.
    batch_size
        Occluded images per forward pass.
    progress
        Show a progress bar over the forward passes.
    output
        How to read logits from the model's output.

    Examples
    --------
    >>> import torch, torchvision
    >>> occlusion = Occlusion(torchvision.models.resnet18().eval(), window=16, stride=8)
    >>> occlusion.windows(64, 64)[:2]
    [(0, 16, 0, 16), (0, 16, 8, 24)]
    >>> occlusion(torch.randn(2, 3, 64, 64), target=[1, 7]).shape
    torch.Size([2, 64, 64])
    """

    title = "Occlusion"

    def __init__(
        self,
        model: nn.Module,
        *,
        window: Pair | None = None,
        stride: Pair | None = None,
        baseline: float | Tensor = 0.0,
        abs: bool = False,
        channel_reduce: ChannelReduce = "mean",
        batch_size: int = 64,
        progress: bool = False,
        output: OutputFn | None = None,
    ) -> None:
        if channel_reduce not in ("max", "mean", "sum"):
            raise ValueError(
                f"channel_reduce must be 'max', 'mean' or 'sum', not {channel_reduce!r}"
            )
        if not isinstance(abs, bool):
            raise TypeError(f"abs must be True or False, not {abs!r}")
        self.window = None if window is None else _pair(window, "window")
        self.stride = None if stride is None else _pair(stride, "stride")
        self.baseline = _check_baseline(baseline)
        super().__init__(model, batch_size=batch_size, progress=progress, output=output)
        self.abs = abs
        self.channel_reduce = channel_reduce

    def __repr__(self) -> str:
        return f"Occlusion({type(self.model).__name__}, window={self.window}, stride={self.stride})"

    def windows(self, height: int, width: int) -> list[Box]:
        """The windows of an image of ``height`` x ``width``: ``(top, bottom, left, right)``.

        Row-major (left to right, then down), bounds exclusive at the bottom and right.
        """
        window = self.window or (math.ceil(height / 4), math.ceil(width / 4))
        stride = self.stride or (math.ceil(window[0] / 2), math.ceil(window[1] / 2))
        rows = _starts(height, window[0], stride[0], "height")
        cols = _starts(width, window[1], stride[1], "width")
        return [
            (top, min(top + window[0], height), left, min(left + window[1], width))
            for top in rows
            for left in cols
        ]

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        n, channels, height, width = x.shape
        boxes = self.windows(height, width)
        fill = self._fill(x)
        # Row 0 of each image is the image itself, run in the same batches as its
        # occluded copies: each drop is a difference of two logits computed alike,
        # an image's map does not depend on the other images of the batch, and
        # the classes are resolved on those rows: no pass on the images alone.
        rows = len(boxes) + 1
        found: list[list[Tensor]] = [[] for _ in range(n)]
        image = x.detach()
        images = min(self.batch_size, rows)
        for i, part in self._slices(n, rows):
            layout = self.batch_layout(x, images)
            found[i].append(self.batch_logits(_occluded(image[i], boxes, fill, part, layout)))
        scores = [torch.cat(parts) for parts in found]  # (1 + P, classes) per image
        classes = targets.resolve(torch.stack([s[0] for s in scores]))
        kind = torch.promote_types(scores[0].dtype, torch.float32)
        maps = []
        for chosen_all, wanted in zip(scores, classes, strict=True):
            chosen = chosen_all[:, wanted].to(kind)  # (1 + P, K)
            drops = chosen[0] - chosen[1:]
            total = torch.zeros(len(wanted), height, width, dtype=kind, device=x.device)
            covered = torch.zeros(height, width, dtype=kind, device=x.device)
            for drop, (top, bottom, left, right) in zip(drops, boxes, strict=True):
                total[:, top:bottom, left:right] += drop[:, None, None]
                covered[top:bottom, left:right] += 1
            assert bool((covered > 0).all()), "every pixel lies in a window"
            maps.append(total / covered)
        result = torch.stack(maps)
        if self.abs:
            result = result.abs()
        return result * channels if self.channel_reduce == "sum" else result

    def _fill(self, x: Tensor) -> Tensor:
        """The baseline as one image ``(C, H, W)`` on ``x``'s device and dtype."""
        image = tuple(x.shape[1:])
        baseline = self.baseline
        if not isinstance(baseline, Tensor):
            return torch.full(image, float(baseline), dtype=x.dtype, device=x.device)
        try:
            shape = torch.broadcast_shapes(tuple(baseline.shape), image)
        except RuntimeError:
            shape = None
        if shape != image:
            raise ValueError(
                f"a baseline of shape {tuple(baseline.shape)} does not broadcast to one image "
                f"of shape {image}; give a number, (C, 1, 1), (C, H, W) or (H, W)"
            )
        return baseline.to(device=x.device, dtype=x.dtype).expand(image)


def _occluded(
    image: Tensor,
    boxes: list[Box],
    fill: Tensor,
    part: slice,
    layout: torch.memory_format,
) -> Tensor:
    """Rows ``part`` of one image's batch: row 0 the image, row ``p + 1`` window ``p`` filled.

    Made in ``layout``.
    """
    rows = (part.stop - part.start, *image.shape)
    batch = torch.empty(rows, dtype=image.dtype, device=image.device, memory_format=layout)
    batch.copy_(image.expand(rows))
    for j, row in enumerate(range(part.start, part.stop)):
        if row:
            top, bottom, left, right = boxes[row - 1]
            batch[j, :, top:bottom, left:right] = fill[:, top:bottom, left:right]
    return batch


def _pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name} must be an int or (height, width) ints, not {value!r}")
    if not all(int(v) >= 1 for v in value):
        raise ValueError(f"{name} must be positive, not {value!r}")
    return int(value[0]), int(value[1])


def _check_baseline(baseline: object) -> float | Tensor:
    if isinstance(baseline, Tensor):
        if not baseline.is_floating_point():
            raise TypeError(f"a baseline tensor must be floating-point, not {baseline.dtype}")
        if not bool(torch.isfinite(baseline).all()):
            raise ValueError("the baseline has NaN or infinite values")
        return baseline.detach()
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        if not math.isfinite(float(baseline)):
            raise ValueError(f"baseline must be finite, not {baseline!r}")
        return float(baseline)
    raise TypeError(f"baseline must be a number or a tensor, not {type(baseline).__name__}")


def _starts(side: int, window: int, stride: int, what: str) -> list[int]:
    """Starts along one side: every ``stride`` up to the first at or past ``side - window``."""
    if window > side:
        raise ValueError(
            f"the occlusion window ({window} px) is larger than the image's {what} ({side} px)"
        )
    if stride > window and window < side:
        raise ValueError(
            f"a stride of {stride} px with a window of {window} px along the {what} leaves pixels "
            "that no window covers; use a stride of at most the window"
        )
    steps = math.ceil((side - window) / stride)
    return [i * stride for i in range(steps + 1)]
