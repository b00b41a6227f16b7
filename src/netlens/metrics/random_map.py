"""RandomMap: uniform noise as an attribution map, the chance level of every metric."""

from __future__ import annotations

import hashlib
from typing import ClassVar

import torch
from torch import Tensor, nn

from netlens.attribution.base import Attribution, Targets
from netlens.hooks import OutputFn
from netlens.metrics._common import check_count

__all__ = ["RandomMap"]


class RandomMap(Attribution):
    r"""A map of independent uniform noise: what any metric gives by chance.

    .. math::

        M_{ij} \sim \mathcal{U}[0, 1) \quad \text{independently for every pixel}

    at the input's resolution. Each map is a function of ``seed``, the image's
    values and the class alone: the same image gets the same map in any batch
    and on any call, and different images or classes get independent maps.
    The model runs once, to resolve and check the targets; the map does not
    depend on it, so :func:`~netlens.metrics.model_randomization` finds it
    unchanged by any randomisation, the failure that test exists to catch.

    Read a metric of a method against this baseline: a deletion AUC no lower
    than RandomMap's says the map orders pixels no better than chance.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    seed
        Seeds every map (with the image and the class).
    output
        How to read logits from what the model returns.

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens.metrics import RandomMap
    >>> random_map = RandomMap(torchvision.models.resnet18(num_classes=10).eval())
    >>> x = torch.rand(2, 3, 32, 32)
    >>> maps = random_map(x)
    >>> maps.shape, bool(((maps >= 0) & (maps < 1)).all())
    (torch.Size([2, 32, 32]), True)
    >>> torch.equal(random_map(x[1:]), maps[1:])
    True
    """

    title = "Random"
    needs_gradients: ClassVar[bool] = False

    def __init__(self, model: nn.Module, *, seed: int = 0, output: OutputFn | None = None) -> None:
        super().__init__(model, output=output)
        self.seed = check_count(seed, "seed", minimum=0)

    def __repr__(self) -> str:
        return f"RandomMap({type(self.model).__name__}, seed={self.seed})"

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        with torch.no_grad():
            classes = targets.resolve(self.logits(self.model(x)))
        n, k = classes.shape
        height, width = x.shape[-2:]
        maps = torch.empty(n, k, height, width)
        for i in range(n):
            image = x[i].detach().cpu().contiguous()
            raw = image.reshape(-1).view(torch.uint8).numpy().tobytes()
            digest = hashlib.blake2b(raw, digest_size=8)
            digest.update(str(image.dtype).encode())
            for j, c in enumerate(classes[i].tolist()):
                key = digest.copy()
                key.update(f"{self.seed}:{c}".encode())
                generator = torch.Generator().manual_seed(int.from_bytes(key.digest(), "little"))
                maps[i, j] = torch.rand(height, width, generator=generator)
        return maps.to(x.device)
