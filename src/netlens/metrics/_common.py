"""What the metrics share: input checks, the classes to score, batched class probabilities."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens._checks import check_images, check_matches_model
from netlens.attribution.base import Target, Targets
from netlens.errors import UndefinedMapError
from netlens.hooks import OutputFn, as_logits, eval_mode

#: Input elements (images x channels x pixels) a pass holds when ``batch_size=None``.
ELEMENT_BUDGET = 2**23
#: The most images in one pass when ``batch_size=None``.
MAX_BATCH = 128


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    return model


def check_inputs(model: object, x: object) -> Tensor:
    """``x`` checked as images the model can run on."""
    check_model(model)
    assert isinstance(model, nn.Module)
    x = check_images(x)
    check_matches_model(x, model)
    return x.detach()


def check_maps(maps: object, x: Tensor, what: str = "maps") -> Tensor:
    """One finite map per image, ``(N, H, W)`` on ``x``'s device, at most the input's size.

    ``(N, 1, H, W)`` is accepted. A map smaller than the input is returned as
    it is (see :func:`resize_maps`); one larger than the input, of another
    batch size or with ``K > 1`` maps per image is refused.
    """
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(maps)
    if not isinstance(maps, Tensor):
        raise TypeError(f"{what} must be a tensor (N, H, W), not {type(maps).__name__}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    if maps.dim() != 3:
        hint = (
            "; one map per image: pass maps[:, k] for the k-th of several targets"
            if maps.dim() == 4
            else ""
        )
        raise ValueError(
            f"{what} must have shape (N, H, W) or (N, 1, H, W), got {tuple(maps.shape)}{hint}"
        )
    if maps.shape[0] != n:
        raise ValueError(f"{maps.shape[0]} {what} for {n} images; give one map per image")
    if maps.shape[1] > height or maps.shape[2] > width:
        raise ValueError(
            f"{what} of {tuple(maps.shape[1:])} pixels are larger than the images "
            f"({height}, {width}); give maps at the input's size or smaller (they are resized)"
        )
    if maps.is_complex() or maps.dtype == torch.bool:
        raise TypeError(f"{what} must be real numbers, got dtype {maps.dtype}")
    maps = maps.detach().to(device=x.device, dtype=torch.float32)
    finite = torch.isfinite(maps).flatten(1).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[:, 0].tolist()
        raise ValueError(f"{what} of images {bad} hold NaN or infinite values")
    return maps


def resize_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resizing of ``(N, h, w)`` maps to ``size`` (unchanged when it already is)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def check_count(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def batch_size_for(batch_size: object, x: Tensor, count: int) -> int:
    """Images per pass: ``batch_size``, or with ``None`` as many as the budget allows."""
    if batch_size is None:
        per_image = max(1, x[0].numel())
        return max(1, min(MAX_BATCH, count, ELEMENT_BUDGET // per_image))
    return check_count(batch_size, "batch_size")


class Scorer:
    """Class probabilities of a model: the targets resolved once, batches scored without gradients.

    The probability of a class is the softmax of the logits at that class,
    computed in float32.
    """

    def __init__(
        self,
        model: nn.Module,
        x: Tensor,
        target: Target,
        *,
        output: OutputFn | None,
        batch_size: object,
        progress: bool,
        title: str,
        passes: int = 1,
    ) -> None:
        if output is not None and not callable(output):
            raise TypeError(f"output must be a function of the model's output, not {output!r}")
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True or False, not {progress!r}")
        self.model = model
        self.output = output
        self.progress = progress
        self.title = title
        self.targets = Targets.parse(target, x.shape[0])
        self.batch_size = batch_size_for(batch_size, x, x.shape[0] * passes)
        self.classes = torch.empty(0, dtype=torch.long)
        self.original = torch.empty(0)

    def logits(self, images: Tensor) -> Tensor:
        return as_logits(self.model(images), self.output)

    def start(self, x: Tensor) -> Tensor:
        """The classes ``(N,)`` to score and their probabilities on ``x``, from its logits."""
        with eval_mode(self.model), torch.no_grad():
            logits = torch.cat(
                [self.logits(x[i : i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
            )
        classes = self.targets.resolve(logits)
        if classes.shape[1] != 1:
            raise ValueError(
                f"targets of shape {tuple(classes.shape)}: a metric scores one class per "
                "image; pass one column at a time"
            )
        self.classes = classes[:, 0]
        self.original = self.pick(logits, self.classes)
        return self.classes

    @staticmethod
    def pick(logits: Tensor, classes: Tensor) -> Tensor:
        probabilities = logits.detach().float().softmax(1)
        return probabilities.gather(1, classes.to(logits.device)[:, None])[:, 0]

    def scores(
        self, count: int, images: Callable[[slice], Tensor], classes: Callable[[slice], Tensor]
    ) -> Tensor:
        """Probabilities ``(count,)``: ``images(rows)`` scored at ``classes(rows)``, batched."""
        starts = range(0, count, self.batch_size)
        found = []
        with eval_mode(self.model), torch.no_grad():
            for start in tqdm(starts, desc=self.title, unit="batch", disable=not self.progress):
                rows = slice(start, min(start + self.batch_size, count))
                found.append(self.pick(self.logits(images(rows)), classes(rows)))
        return torch.cat(found) if found else torch.empty(0)


def normalise_maps(maps: Tensor, what: str = "map") -> Tensor:
    """Each map min-max scaled to [0, 1]; a constant map has no such scaling and is refused."""
    flat = maps.flatten(1)
    low = flat.amin(1)
    span = flat.amax(1) - low
    flat_maps = span == 0
    if bool(flat_maps.any()):
        bad = flat_maps.nonzero()[:, 0].tolist()
        raise UndefinedMapError(
            f"the {what}s of images {bad} are constant: min-max scaling to [0, 1] is undefined "
            "(the map ranks no pixel above another)"
        )
    return (maps - low[:, None, None]) / span[:, None, None]


def tie_broken_ranks(maps: Tensor, seed: int) -> Tensor:
    """Each pixel's rank ``(N, H*W)`` in descending order of its map, 0 for the most relevant.

    Ties are broken at random (a generator seeded with ``seed``), so that a
    map which does not order some pixels says nothing about their order: a
    constant map ranks every pixel at random.
    """
    flat = maps.flatten(1)
    n, pixels = flat.shape
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.rand(n, pixels, generator=generator).argsort(1).to(flat.device)
    ranked = torch.argsort(flat.gather(1, shuffle), dim=1, descending=True, stable=True)
    order = shuffle.gather(1, ranked)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(pixels, device=flat.device).expand(n, -1))
    return ranks
