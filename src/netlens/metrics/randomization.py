"""The model randomisation test (Adebayo et al. 2018): do the maps change when the weights go?"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens.attribution.base import Attribution, Target, Targets
from netlens.hooks import as_logits, eval_mode
from netlens.layers import resolve_layer, trace
from netlens.metrics._common import check_count, check_inputs
from netlens.metrics._score import MetricResult

__all__ = [
    "RandomizationResult",
    "default_blocks",
    "model_randomization",
    "randomise",
    "spearman",
    "ssim",
]

MethodLike = str | type[Attribution] | Callable[[nn.Module], Attribution]

#: Side of SSIM's Gaussian window (sigma 1.5, truncated at 3.5 sigma), as in Wang et al. 2004.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


@dataclass(frozen=True)
class RandomizationResult:
    """The maps of a cascade of randomised models compared with the trained model's.

    Entry ``j`` of each tuple is measured after the first ``j + 1`` blocks
    of :attr:`blocks` are randomised (the cascade), between each image's
    map and its map on the trained model. :attr:`values`, :attr:`mean` and
    :attr:`interval` are those of :attr:`spearman`, one row per block.

    Attributes
    ----------
    method
        The method's title.
    blocks
        The randomised blocks, in the order they were randomised (top first).
    spearman
        Spearman rank correlation of the maps, per block; near 0 once the map
        no longer depends on the weights, 1 for a map that ignores them.
    spearman_abs
        The same, of the maps' absolute values.
    ssim
        Structural similarity (Wang et al. 2004) of the maps, each min-max
        scaled to [0, 1].
    maps
        With ``keep_maps=True``: ``(1 + len(blocks), N, H, W)`` float32 on
        the CPU, the trained model's maps first; else ``None``.
    """

    method: str
    blocks: tuple[str, ...]
    spearman: tuple[MetricResult, ...]
    spearman_abs: tuple[MetricResult, ...]
    ssim: tuple[MetricResult, ...]
    maps: Tensor | None = None

    @property
    def values(self) -> np.ndarray:
        """Spearman rank correlation per block and image, ``(len(blocks), N)``."""
        return np.stack([r.values for r in self.spearman])

    @property
    def mean(self) -> np.ndarray:
        """Mean Spearman rank correlation per block, ``(len(blocks),)``."""
        return np.array([r.mean for r in self.spearman])

    @property
    def interval(self) -> np.ndarray:
        """Bootstrap 95% interval of that mean per block, ``(len(blocks), 2)``."""
        return np.array([r.interval for r in self.spearman])

    def __repr__(self) -> str:
        means = ", ".join(f"{b}: {m:.2f}" for b, m in zip(self.blocks, self.mean, strict=True))
        return f"RandomizationResult({self.method}; Spearman after randomising {means})"

    def to_dict(self, *, values: bool = True) -> dict[str, object]:
        """The result as JSON-ready built-in types."""
        return {
            "method": self.method,
            "blocks": list(self.blocks),
            **{
                name: [r.to_dict(values=values) for r in getattr(self, name)]
                for name in ("spearman", "spearman_abs", "ssim")
            },
        }


def model_randomization(
    model: nn.Module,
    x: Tensor,
    method: MethodLike,
    target: Target = None,
    *,
    blocks: Sequence[str] | None = None,
    seed: int = 0,
    keep_maps: bool = False,
    progress: bool = False,
) -> RandomizationResult:
    r"""Cascading model randomisation: the maps of ever more randomised copies of the model.

    A deep copy of ``model`` is randomised one block at a time from the top
    (the logits) down; after each block the method maps the same images for
    the same classes (those of the trained model, ``target=None``: its top-1),
    and each map is compared with the trained model's map of that image by
    the Spearman rank correlation (of the values and of their absolute
    values) and the SSIM (Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim,
    *Sanity Checks for Saliency Maps*, NeurIPS 2018). A method whose maps
    explain the model loses its similarity as its weights go; one whose maps
    stay alike (the paper finds this of Guided Backprop) shows something other
    than what the model learned.

    ``model`` itself is never changed: the copy doubles the model's memory
    for the call. Each block is randomised by each of its modules' own
    ``reset_parameters()``, PyTorch's initialisation (random for
    convolutions and linear layers; BatchNorm back to weight 1, bias 0 and
    running statistics 0 and 1); a module with parameters and no
    ``reset_parameters`` gets each parameter drawn from a normal distribution
    with that parameter's mean and standard deviation. The draws come from
    torch's generator seeded with ``seed`` and the block's position, on the
    CPU (the same weights on any device), inside :func:`torch.random.fork_rng`,
    so the caller's generator is left as it was.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    x
        Images ``(N, C, H, W)`` (at least 11 x 11 pixels, SSIM's window).
    method
        What makes the maps on each copy: an
        :class:`~netlens.attribution.Attribution` subclass (built as
        ``method(model)``), its name in :data:`netlens.attribution.METHODS`,
        or a function ``model -> method`` for other parameters, e.g.
        ``lambda m: GradCAM(m, "layer3")``; not an instance, which is bound
        to the trained model.
    target
        The class of each image: ``None`` (the trained model's top-1), an
        ``int``, one per image.
    blocks
        Names of the modules to randomise, in the order to randomise them
        (top first); default: :func:`default_blocks`.
    seed
        Seeds the randomised weights and the bootstrap intervals.
    keep_maps
        Return every map in :attr:`RandomizationResult.maps`.
    progress
        Show a progress bar over the blocks.

    Returns
    -------
    RandomizationResult
        Per block, per image and on average: Spearman (with and without
        absolute values) and SSIM, each with its bootstrap interval.

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens.metrics import model_randomization
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> result = model_randomization(model, torch.rand(2, 3, 32, 32), "gradcam")
    >>> result.blocks
    ('fc', 'layer4', 'layer3', 'layer2', 'layer1', 'bn1', 'conv1')
    >>> result.values.shape, len(result.ssim)
    ((7, 2), 7)
    """
    x = check_inputs(model, x)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"images of {tuple(x.shape[-2:])} pixels are smaller than SSIM's "
            f"{SSIM_WINDOW} x {SSIM_WINDOW} window"
        )
    build = _factory(method)
    seed = check_count(seed, "seed", minimum=0)
    if not isinstance(keep_maps, bool) or not isinstance(progress, bool):
        raise TypeError("keep_maps and progress must be True or False")
    names = default_blocks(model, x) if blocks is None else _check_blocks(model, blocks)

    explainer = build(model)
    _check_built(explainer, model)
    targets = Targets.parse(target, x.shape[0])
    with eval_mode(model), torch.no_grad():
        classes = targets.resolve(as_logits(model(x), explainer.output))
    if classes.shape[1] != 1:
        raise ValueError("model_randomization explains one class per image; pass one column")
    classes = classes[:, 0]
    original = explainer(x, classes).detach().double().cpu()

    twin = copy.deepcopy(model)
    modules = dict(twin.named_modules())
    kept = [original.float()] if keep_maps else []
    rows: dict[str, list[MetricResult]] = {"spearman": [], "spearman_abs": [], "ssim": []}
    for j, name in enumerate(tqdm(names, desc="randomising", unit="block", disable=not progress)):
        randomise(modules[resolve_layer(twin, name)[0]], seed=seed * 1_000_003 + j)
        on_twin = build(twin)
        _check_built(on_twin, twin)
        maps = on_twin(x, classes).detach().double().cpu()
        if keep_maps:
            kept.append(maps.float())
        rows["spearman"].append(
            MetricResult.of("spearman", spearman(original, maps), higher_is_better=False, seed=seed)
        )
        rows["spearman_abs"].append(
            MetricResult.of(
                "spearman_abs",
                spearman(original.abs(), maps.abs()),
                higher_is_better=False,
                seed=seed,
            )
        )
        rows["ssim"].append(
            MetricResult.of("ssim", ssim(original, maps), higher_is_better=False, seed=seed)
        )
    return RandomizationResult(
        method=explainer.title,
        blocks=tuple(names),
        spearman=tuple(rows["spearman"]),
        spearman_abs=tuple(rows["spearman_abs"]),
        ssim=tuple(rows["ssim"]),
        maps=torch.stack(kept) if keep_maps else None,
    )


def _factory(method: object) -> Callable[[nn.Module], Attribution]:
    if isinstance(method, Attribution):
        raise TypeError(
            f"pass the method's class, its name or a function model -> method, not an instance "
            f"bound to the trained model (e.g. lambda m: {type(method).__name__}(m, ...))"
        )
    if isinstance(method, str):
        from netlens.attribution import METHODS

        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        method = METHODS[method]
    if isinstance(method, type):
        if not issubclass(method, Attribution):
            raise TypeError(f"{method.__name__} is not a netlens.attribution.Attribution subclass")
        cls = method
        return lambda m: cls(m)
    if not callable(method):
        raise TypeError(
            f"method must be an Attribution subclass, its name or a function, not {method!r}"
        )
    return method  # type: ignore[return-value]


def _check_built(explainer: object, model: nn.Module) -> None:
    if not isinstance(explainer, Attribution):
        raise TypeError(
            f"the method function returned a {type(explainer).__name__}, not an Attribution"
        )
    if explainer.model is not model:
        raise ValueError(
            "the method function must build the method on the model it is given (it is "
            "called with each randomised copy), not on another model"
        )


def default_blocks(model: nn.Module, x: Tensor) -> list[str]:
    """The blocks :func:`model_randomization` randomises by default, top first.

    The model's direct submodules that hold parameters and run in its
    forward pass on ``x[:1]``, in reverse order of running; when there are
    fewer than three, each ``nn.Sequential`` / ``nn.ModuleList`` among them
    is replaced by its own submodules with parameters (VGG's ``features``
    becomes its layers).

    Examples
    --------
    >>> import torch, torchvision
    >>> default_blocks(torchvision.models.resnet18(), torch.rand(1, 3, 32, 32))
    ['fc', 'layer4', 'layer3', 'layer2', 'layer1', 'bn1', 'conv1']
    """
    finished: dict[str, int] = {}
    for i, call in enumerate(trace(model, x)):
        finished.setdefault(call.name, i)

    def holds(module: nn.Module) -> bool:
        return next(module.parameters(), None) is not None

    top = [(n, m) for n, m in model.named_children() if holds(m) and n in finished]
    if len(top) < 3:
        expanded = []
        for name, module in top:
            inner = []
            if isinstance(module, (nn.Sequential, nn.ModuleList)):
                inner = [
                    (f"{name}.{k}", c)
                    for k, c in module.named_children()
                    if holds(c) and f"{name}.{k}" in finished
                ]
            expanded += inner or [(name, module)]
        top = expanded
    if not top:
        raise ValueError(f"{type(model).__name__} has no submodule with parameters to randomise")
    return [name for name, _ in sorted(top, key=lambda item: finished[item[0]], reverse=True)]


def _check_blocks(model: nn.Module, blocks: object) -> list[str]:
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence) or not blocks:
        raise TypeError(f"blocks must be a non-empty list of layer names, not {blocks!r}")
    names = []
    for block in blocks:
        name, module = resolve_layer(model, block)
        if ":" in name:
            raise ValueError(f"{name!r} names a call; randomise the module, {name.split(':')[0]!r}")
        if next(module.parameters(), None) is None:
            raise ValueError(f"block {name!r} has no parameters to randomise")
        if name in names:
            raise ValueError(f"block {name!r} is listed twice")
        names.append(name)
    return names


def randomise(module: nn.Module, *, seed: int = 0) -> nn.Module:
    """Re-initialise every parameter of ``module`` in place (see :func:`model_randomization`).

    The draws are made on the CPU (a module elsewhere is moved there and
    back), so the weights are the same on every device.

    Examples
    --------
    >>> import torch
    >>> layer = torch.nn.Linear(3, 2)
    >>> before = layer.weight.detach().clone()
    >>> bool((randomise(layer, seed=1).weight != before).all())
    True
    """
    tensors = [*module.parameters(), *module.buffers()]
    places = [t.device for t in tensors]
    elsewhere = any(device.type != "cpu" for device in places)
    if elsewhere:
        module.cpu()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            for part in module.modules():
                own = list(part.parameters(recurse=False))
                reset = getattr(part, "reset_parameters", None)
                if callable(reset):
                    reset()
                else:
                    for parameter in own:
                        spread = float(parameter.std()) if parameter.numel() > 1 else 1.0
                        parameter.normal_(float(parameter.mean()), spread if spread > 0 else 1.0)
    finally:
        if elsewhere:
            for tensor, device in zip(
                [*module.parameters(), *module.buffers()], places, strict=True
            ):
                tensor.data = tensor.data.to(device)
    return module


def _ranks(values: Tensor) -> Tensor:
    """Ranks from 1 along the last axis of ``(N, P)``, ties sharing their mean rank."""
    ranks = torch.empty_like(values, dtype=torch.float64)
    for i, row in enumerate(values):
        _, inverse, counts = torch.unique(row, return_inverse=True, return_counts=True)
        ends = counts.cumsum(0).double()
        ranks[i] = (ends - (counts.double() - 1) / 2)[inverse]
    return ranks


def spearman(a: Tensor, b: Tensor) -> np.ndarray:
    """Spearman rank correlation of each pair of maps ``(N, ...)``; NaN where a map is constant.

    The Pearson correlation of the ranks, ties sharing their mean rank.

    Examples
    --------
    >>> import torch
    >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    >>> spearman(a, a ** 3).tolist(), spearman(a, -a).tolist()
    ([1.0], [-1.0])
    """
    if a.shape != b.shape:
        raise ValueError(f"maps of shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    ra = _ranks(a.detach().flatten(1).double().cpu())
    rb = _ranks(b.detach().flatten(1).double().cpu())
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    scale = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    out = (ra * rb).sum(1) / scale
    out[scale == 0] = math.nan
    return out.numpy()


def ssim(a: Tensor, b: Tensor) -> np.ndarray:
    """SSIM of each pair of maps ``(N, H, W)``, each min-max scaled to [0, 1] first.

    Wang et al.'s index (*Image Quality Assessment: From Error Visibility to
    Structural Similarity*, IEEE TIP 2004) with their settings: a Gaussian
    window of sigma 1.5 truncated to 11 x 11 taps, :math:`K_1 = 0.01`,
    :math:`K_2 = 0.03`, data range 1, population covariances; edges mirrored
    (half-sample symmetric) and the mean taken away from the 5 pixels of each
    border. A constant map is scaled to zeros. Equals scikit-image's
    ``structural_similarity(a, b, data_range=1, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)`` on the scaled maps.

    Examples
    --------
    >>> import torch
    >>> a = torch.rand(2, 16, 16)
    >>> [round(v, 6) for v in ssim(a, a).tolist()]
    [1.0, 1.0]
    """
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(
            f"SSIM compares maps (N, H, W) of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"maps of {tuple(a.shape[-2:])} pixels are smaller than SSIM's window")
    x, y = _unit(a.detach().double().cpu()), _unit(b.detach().double().cpu())
    radius = SSIM_WINDOW // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    taps = taps / taps.sum()

    def smooth(image: Tensor) -> Tensor:
        out = image[:, None]
        for dim in (2, 3):
            size = out.shape[dim]
            # Half-sample symmetric edges: ... b a | a b c ... (scipy.ndimage's "reflect").
            index = torch.arange(-radius, size + radius)
            index = torch.where(index < 0, -index - 1, index)
            index = torch.where(index >= size, 2 * size - index - 1, index)
            out = out.index_select(dim, index)
            kernel = taps.view(1, 1, -1, 1) if dim == 2 else taps.view(1, 1, 1, -1)
            out = F.conv2d(out, kernel)
        return out[:, 0]

    c1, c2 = 0.01**2, 0.03**2
    mx, my = smooth(x), smooth(y)
    vx = smooth(x * x) - mx * mx
    vy = smooth(y * y) - my * my
    cxy = smooth(x * y) - mx * my
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    cropped = index[:, radius:-radius, radius:-radius]
    return cropped.mean((1, 2)).numpy()


def _unit(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    low = flat.amin(1)[:, None, None]
    span = (flat.amax(1) - flat.amin(1))[:, None, None]
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1.0), 0.0)
