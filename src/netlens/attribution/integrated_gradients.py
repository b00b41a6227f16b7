"""Integrated Gradients (Sundararajan, Taly and Yan 2017)."""

from __future__ import annotations

import functools
import numbers
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens._plan import Plan, in_plan_layout, size_plan
from netlens.attribution.base import Targets
from netlens.attribution.saliency import ChannelReduce, InputGradientAttribution
from netlens.hooks import OutputFn

__all__ = ["QUADRATURES", "IntegratedGradients", "Quadrature", "quadrature"]

Quadrature = Literal[
    "gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"
]

#: The quadrature rules along the path, by name.
QUADRATURES: tuple[str, ...] = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
)


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Nodes :math:`\alpha_i \in [0, 1]` and weights :math:`w_i` of a rule for :math:`\int_0^1`.

    ``"gausslegendre"``: the Gauss-Legendre nodes and weights mapped from
    :math:`[-1, 1]`; exact for polynomials of degree below ``2 * steps``.
    ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``: ``steps``
    equal cells of width :math:`1/n`, sampled at their left end, right end or
    middle. ``"riemann_trapezoid"``: the trapezoid rule on ``steps`` equally
    spaced nodes from 0 to 1, weights :math:`h/2, h, \dots, h, h/2` with
    :math:`h = 1/(n - 1)`. Every rule's weights sum to 1.

    Examples
    --------
    >>> alphas, weights = quadrature("riemann_trapezoid", 3)
    >>> alphas.tolist(), weights.tolist()
    ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    >>> alphas, weights = quadrature("gausslegendre", 4)
    >>> round(float(weights.sum()), 12), round(float((weights * alphas**7).sum()), 12)
    (1.0, 0.125)
    """
    if method not in QUADRATURES:
        names = ", ".join(map(repr, QUADRATURES))
        raise ValueError(f"method must be one of {names}, not {method!r}")
    least = 2 if method == "riemann_trapezoid" else 1
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < least:
        raise ValueError(f"steps must be an int >= {least} for {method!r}, not {steps!r}")
    n = int(steps)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1) / 2, weights / 2
    if method == "riemann_trapezoid":
        weights = np.full(n, 1 / (n - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, n), weights
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (np.arange(n) + offset) / n, np.full(n, 1 / n)


class IntegratedGradients(InputGradientAttribution):
    r"""Integrated Gradients: the gradient averaged along the straight path from a baseline.

    .. math::

        A_{c,ij} = (x - b)_{c,ij} \sum_{s=1}^{n} w_s \,
        \frac{\partial y^t}{\partial x_{c,ij}}\Big(b + \alpha_s (x - b)\Big)
        \approx (x - b)_{c,ij} \int_0^1 \frac{\partial y^t}{\partial x_{c,ij}}
        \big(b + \alpha (x - b)\big)\, d\alpha,

    reduced over colour channels to :math:`\max_c |A_{c,ij}|` by default, for
    target logit :math:`y^t`, baseline :math:`b` and the nodes
    :math:`\alpha_s` and weights :math:`w_s` of a quadrature rule
    (:func:`quadrature`) (Sundararajan, Taly and Yan, *Axiomatic Attribution
    for Deep Networks*, ICML 2017). The target is resolved on the logits of
    ``x`` itself (``None``: each image's top-1 class there), never on those of
    the interpolated images.

    **Completeness.** With ``abs=False, channel_reduce="sum"`` the map sums,
    over all pixels, to :math:`\sum_s w_s F'(\alpha_s)` for
    :math:`F(\alpha) = y^t(b + \alpha (x - b))`: the rule's estimate of
    :math:`\int_0^1 F' = y^t(x) - y^t(b)`. The gap is the quadrature error,
    plus float rounding. For a smooth network it falls like :math:`1/n` for
    ``"riemann_left"`` and ``"riemann_right"``, like :math:`1/n^2` for
    ``"riemann_middle"`` and ``"riemann_trapezoid"``, and faster than any
    power of :math:`1/n` for ``"gausslegendre"`` (exact when :math:`F` is a
    polynomial of degree up to :math:`2n`): on a small tanh / softplus network
    in float64, 64 Gauss-Legendre steps leave a gap below :math:`10^{-10}` of
    :math:`|y^t(x) - y^t(b)|`, 64 midpoint steps one of about
    :math:`3 \cdot 10^{-4}`; in float32 the rounding, about :math:`10^{-5}` of
    the change, is the floor. A ReLU network makes :math:`F'` piecewise
    constant, and every rule then errs by up to about one step's weight times
    each jump of :math:`F'`: expect a gap of order :math:`1/n`, and check it
    on your own model and images.

    Equals captum's ``IntegratedGradients(model).attribute(x, baselines=b,
    target=t, n_steps=n, method=m)`` reduced the same way, for every rule
    but ``"riemann_trapezoid"``, whose captum weights :math:`1/n` (halved at
    both ends) sum to :math:`(n - 1)/n`: captum's trapezoid map is netlens'
    times :math:`(n - 1)/n`.

    The ``steps * N`` interpolated images are run ``batch_size`` at a time,
    one forward pass each and one backward pass per requested class, with
    the lean memory rules of :class:`~netlens.attribution.Saliency`
    (:func:`netlens.hooks.input_gradients_only`).

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    steps
        Number of quadrature nodes :math:`n` along the path.
    baseline
        The path's start: a float (every pixel and channel) or a tensor
        broadcastable to the input ``(N, C, H, W)``, e.g. ``(C, 1, 1)`` for a
        per-channel value or ``(1, C, H, W)`` for one image.
    method
        The quadrature rule: ``"gausslegendre"`` (default), ``"riemann_left"``,
        ``"riemann_right"``, ``"riemann_middle"`` or ``"riemann_trapezoid"``.
    abs
        Take the absolute value of the attribution (``False`` keeps its sign).
    channel_reduce
        How the colour channels become one map: ``"max"``, ``"mean"`` or ``"sum"``.
    batch_size
        Interpolated images per forward and backward pass (bounds the memory).
    progress
        Show a progress bar over the batches.

    Examples
    --------
    >>> import torch, torchvision
    >>> resnet = torchvision.models.resnet18().eval()
    >>> ig = IntegratedGradients(resnet, steps=8, batch_size=16)
    >>> ig(torch.randn(2, 3, 32, 32), target=[1, 7]).shape
    torch.Size([2, 32, 32])

    Completeness on a smooth network: the signed map sums to the change of the
    logit from the baseline to the input.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 3)).eval()
    >>> x = torch.randn(1, 3, 16, 16)
    >>> signed = IntegratedGradients(net, steps=16, abs=False, channel_reduce="sum")
    >>> total = signed(x, 2).sum()
    >>> with torch.no_grad():
    ...     change = net(x)[0, 2] - net(torch.zeros_like(x))[0, 2]
    >>> bool((total - change).abs() <= 1e-4 * change.abs())
    True
    """

    title = "Integrated Gradients"

    def __init__(
        self,
        model: nn.Module,
        *,
        steps: int = 50,
        baseline: float | Tensor = 0.0,
        method: Quadrature = "gausslegendre",
        abs: bool = True,
        channel_reduce: ChannelReduce = "max",
        batch_size: int = 64,
        progress: bool = False,
        output: OutputFn | None = None,
    ) -> None:
        super().__init__(model, abs=abs, channel_reduce=channel_reduce, output=output)
        self.alphas, self.weights = quadrature(method, steps)
        self.steps = int(steps)
        self.method = method
        if isinstance(baseline, Tensor):
            if not baseline.is_floating_point():
                raise TypeError(f"a baseline tensor must be floating point, not {baseline.dtype}")
            self.baseline: float | Tensor = baseline.detach()
        elif isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
            self.baseline = float(baseline)
        else:
            raise TypeError(f"baseline must be a float or a tensor, not {baseline!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
        self.batch_size = batch_size
        self.progress = progress

    def __repr__(self) -> str:
        model = type(self.model).__name__
        return f"IntegratedGradients({model}, steps={self.steps}, method={self.method!r})"

    def baseline_for(self, x: Tensor) -> Tensor:
        """The baseline as a tensor of ``x``'s shape, dtype and device."""
        if isinstance(self.baseline, float):
            return torch.full_like(x, self.baseline)
        baseline = self.baseline.to(device=x.device, dtype=x.dtype)
        try:
            shape = torch.broadcast_shapes(baseline.shape, x.shape)
        except RuntimeError:
            shape = None
        if shape != x.shape:
            raise ValueError(
                f"a baseline of shape {tuple(baseline.shape)} does not broadcast to the "
                f"input's shape {tuple(x.shape)}"
            )
        return baseline.expand_as(x)

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        baseline = self.baseline_for(x)
        classes = None
        if targets.needs_logits:  # the top class or a function of the input's own logits
            with torch.no_grad():
                classes = targets.resolve(self.logits(self.model(x)))
        path = (x - baseline).detach()
        n = x.shape[0]
        accumulate = torch.promote_types(x.dtype, torch.float32)
        totals: list[Tensor] = []
        alphas = torch.as_tensor(self.alphas, device=x.device)
        weights = torch.as_tensor(self.weights, device=x.device)
        count = self.steps * n  # step-major: image p is step p // n of sample p % n
        starts = range(0, count, self.batch_size)
        for start in tqdm(starts, desc=self.title, unit="batch", disable=not self.progress):
            pair = torch.arange(start, min(start + self.batch_size, count), device=x.device)
            step, sample = pair // n, pair % n
            alpha = alphas[step].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
            inputs = baseline[sample] + alpha * path[sample]
            with size_plan(self.model, inputs) as plan:
                run = functools.partial(
                    self._batch, x=x, targets=targets, classes=classes, sample=sample, plan=plan
                )
                classes, gradients = in_plan_layout(self.model, inputs, plan, run)
            if not totals:
                totals = [
                    torch.zeros(x.shape, dtype=accumulate, device=x.device)
                    for _ in range(classes.shape[1])
                ]
            weight = weights[step].to(accumulate).view(-1, *([1] * (x.dim() - 1)))
            for total, gradient in zip(totals, gradients, strict=True):
                total.index_add_(0, sample, gradient.to(accumulate) * weight)
        path = path.to(accumulate)
        return torch.stack([self.reduce(path * total) for total in totals], 1)

    def _batch(
        self,
        inputs: Tensor,
        *,
        x: Tensor,
        targets: Targets,
        classes: Tensor | None,
        sample: Tensor,
        plan: Plan,
    ) -> tuple[Tensor, list[Tensor]]:
        """One batch of interpolated images: the classes and their input gradients.

        Given classes are resolved here, on the first batch's logits (which checks them
        against the logits' width), and returned for the batches after it.
        """
        inputs = inputs.detach().requires_grad_(True)
        with torch.enable_grad(), self.lean_backward(plan):
            scores = self.logits(self.model(inputs))
        if classes is None:
            classes = targets.resolve(scores)
        gradients = self.class_gradients(x, scores, classes[sample], inputs, "the input")
        return classes, list(gradients)
