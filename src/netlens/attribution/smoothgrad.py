"""SmoothGrad (Smilkov et al. 2017): any method's map, averaged over noisy copies of the image."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens.attribution.base import Attribution, Targets
from netlens.attribution.perturbation import _check_batch_size
from netlens.attribution.saliency import Saliency

__all__ = ["SmoothGrad"]


class SmoothGrad(Attribution):
    r"""The mean of a method's maps over copies of the image with Gaussian noise added.

    For an attribution method :math:`M` (default: :class:`Saliency`), image
    :math:`x` and class :math:`c`,

    .. math::

        \hat M^c(x) = \frac{1}{n} \sum_{s=1}^{n} M^c\big(x + \varepsilon_s\big),
        \qquad \varepsilon_s \sim \mathcal{N}(0, \sigma^2 I), \quad
        \sigma = \text{noise} \cdot \big(\max(x) - \min(x)\big)

    with the maximum and minimum over the image's pixels and channels
    (Smilkov, Thorat, Kim, Viegas and Wattenberg, *SmoothGrad: removing noise
    by adding noise*, ICML workshop 2017; the paper finds a noise level of 10
    to 20 % best). The mean is of the wrapped method's maps at its own
    resolution (a layer's, for Grad-CAM), resized afterwards. The classes
    are chosen once, on the image without noise (``None``: its top-1 class),
    and every noisy copy explains those.

    For a map linear in the gradient (``Saliency(model, abs=False,
    channel_reduce="sum")``) this equals captum's ``NoiseTunnel(Saliency(model))
    .attribute(x, nt_type="smoothgrad", nt_samples=n, stdevs=sigma, target=c,
    abs=False).sum(1)`` for one image, with captum's ``stdevs`` the absolute
    standard deviation :math:`\sigma` and torch's global generator seeded with
    ``seed`` before its call: the noise is drawn the same way. For other maps
    the order matters: captum averages its per-channel attribution and
    reduces the channels afterwards; netlens averages the wrapped method's
    final map, whatever the method.

    Noise: an image's :math:`n` draws come from a generator on the image's
    device seeded with ``seed``, started afresh for each image, so an image
    gets the same noise whatever the other images of the batch, and the same
    seed gives the same maps. ``seed=None`` draws from torch's global
    generator instead, image after image (new noise each call;
    ``torch.manual_seed`` makes it repeatable).

    Cost: one forward pass of the batch to choose the classes, then the
    wrapped method on the :math:`N n` noisy copies, image after image,
    ``batch_size`` at a time (one batch may hold the copies of several
    images): :math:`\lceil N n / \text{batch\_size} \rceil` calls. An
    image's map equals its map alone up to float rounding.

    Parameters
    ----------
    method
        The attribution method to smooth (any netlens method instance), or a
        model, meaning ``Saliency(model)``.
    samples
        Noisy copies per image, :math:`n`.
    noise
        The noise's standard deviation as a fraction of each image's range.
    seed
        Seed of the noise; ``None``: torch's global generator.
    batch_size
        Noisy images per call of the wrapped method.
    progress
        Show a progress bar over those calls.

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens.attribution import GradCAM
    >>> resnet = torchvision.models.resnet18().eval()
    >>> x = torch.randn(2, 3, 64, 64)
    >>> SmoothGrad(resnet, samples=4)(x, target=[1, 7]).shape
    torch.Size([2, 64, 64])
    >>> SmoothGrad(GradCAM(resnet), samples=4)(x, size=None).shape
    torch.Size([2, 2, 2])
    """

    title = "SmoothGrad"

    def __init__(
        self,
        method: Attribution | nn.Module,
        *,
        samples: int = 25,
        noise: float = 0.15,
        seed: int | None = 0,
        batch_size: int = 32,
        progress: bool = False,
    ) -> None:
        if isinstance(method, nn.Module):
            method = Saliency(method)
        if not isinstance(method, Attribution):
            raise TypeError(
                f"method must be a netlens attribution method or a model, not "
                f"{type(method).__name__}"
            )
        if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
            raise ValueError(f"samples must be a positive int, not {samples!r}")
        if (
            isinstance(noise, bool)
            or not isinstance(noise, numbers.Real)
            or not math.isfinite(float(noise))
            or noise < 0
        ):
            raise ValueError(f"noise must be a finite number of at least 0, not {noise!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an int or None, not {seed!r}")
        super().__init__(method.model, output=method.output)
        self.method = method
        self.samples = int(samples)
        self.noise = float(noise)
        self.seed = None if seed is None else int(seed)
        self.batch_size = _check_batch_size(batch_size)
        self.progress = progress
        #: Whether the wrapped method differentiates the model.
        self.needs_gradients = method.needs_gradients  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"SmoothGrad({self.method!r}, samples={self.samples}, noise={self.noise})"

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                "SmoothGrad needs finite images: the noise is a fraction of each image's range"
            )
        if targets.needs_logits:  # from the images without noise
            with torch.no_grad():
                classes = targets.resolve(self.logits(self.model(x)))
        else:  # checked by the wrapped method
            classes = targets.given(x.device)
        kind = torch.float64 if x.dtype == torch.float64 else torch.float32
        count = len(x) * self.samples  # image-major: noisy copy p is image p // samples
        starts = range(0, count, self.batch_size)
        queue = x.new_empty((0, *x.shape[1:]))  # drawn copies not yet explained
        drawn = 0  # images whose copies are in the queue or done
        sums: Tensor | None = None
        for start in tqdm(starts, desc=self.title, unit="batch", disable=not self.progress):
            stop = min(start + self.batch_size, count)
            while drawn * self.samples < stop:  # each image's noise drawn whole, in order
                copies = self._copies(x[drawn].detach(), kind).to(x.dtype)
                queue = torch.cat([queue, copies])
                drawn += 1
            part, queue = queue[: stop - start], queue[stop - start :]
            owners = torch.arange(start, stop, device=x.device) // self.samples
            maps = self.method(part, classes[owners], size=None)
            maps = maps.to(torch.promote_types(maps.dtype, torch.float32))
            if sums is None:
                sums = maps.new_zeros((len(x), *maps.shape[1:]))
            sums.index_add_(0, owners, maps)
        assert sums is not None
        return sums / self.samples

    def _copies(self, image: Tensor, kind: torch.dtype) -> Tensor:
        """The ``samples`` noisy copies of one image ``(C, H, W)``, in ``kind``."""
        image = image.to(kind)
        sigma = self.noise * (image.max() - image.min())
        shape = (self.samples, *image.shape)
        if self.seed is None:
            draws = torch.randn(shape, dtype=kind, device=image.device)
        else:
            generator = torch.Generator(device=image.device).manual_seed(self.seed)
            draws = torch.randn(shape, generator=generator, dtype=kind, device=image.device)
        return image + sigma * draws
