"""One call for a person: the maps of an image's top classes, named, with their probabilities.

:func:`explain` runs the model once for the classes and probabilities and the
chosen method for the maps of the top ``k`` classes of every image, and
returns an :class:`Explanation` that draws itself (:meth:`Explanation.plot`,
and as a PNG in a notebook).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from netlens._checks import check_images
from netlens.attribution.base import Attribution, LayerAttribution, Size, Target, Targets
from netlens.layers import LayerLike

if TYPE_CHECKING:
    from matplotlib.figure import FigureBase

__all__ = ["Explanation", "build_method", "explain"]


@dataclass(frozen=True, eq=False)
class Explanation:
    """Maps of the top classes of a batch of images, with what made them.

    Attributes
    ----------
    images
        The images explained, ``(N, C, H, W)``, as they went into the model.
    maps
        ``(N, K, H, W)``: the map of each image's ``k``-th class, raw values
        (not normalised) at the resolution asked for.
    classes
        ``(N, K)`` class indices, each image's most probable first (or as given by
        ``target=``).
    probs
        ``(N, K)`` softmax probabilities of those classes.
    method
        The method's title (``"Grad-CAM"``, ...).
    layer
        The layer the maps were read from, ``None`` for input methods.
    class_names
        A name per class of the model, or ``None``.
    mean, std
        The normalisation of ``images`` that :meth:`plot` undoes for display.

    Examples
    --------
    >>> import torch, torchvision
    >>> from netlens import explain
    >>> e = explain(torchvision.models.resnet18(num_classes=4).eval(), torch.rand(1, 3, 32, 32),
    ...             "cam", topk=2, class_names=["cat", "dog", "owl", "fox"])
    >>> len(e), e.topk, e.maps.shape
    (1, 2, torch.Size([1, 2, 32, 32]))
    >>> e.labels()[0] == [["cat", "dog", "owl", "fox"][int(c)] for c in e.classes[0]]
    True
    >>> len(e.plot().axes)  # the image, then one panel per class
    3
    """

    images: Tensor
    maps: Tensor
    classes: Tensor
    probs: Tensor
    method: str
    layer: str | None = None
    class_names: Sequence[str] | None = None
    mean: Sequence[float] | float | None = field(default=None, repr=False)
    std: Sequence[float] | float | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    @property
    def topk(self) -> int:
        """The number of classes explained per image, ``K``."""
        return int(self.maps.shape[1])

    def label(self, image: int, k: int = 0) -> str:
        """The name of image ``image``'s ``k``-th class (``"class 7"`` without names)."""
        index = int(self.classes[image, k])
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return f"class {index}"

    def labels(self) -> list[list[str]]:
        """The names of every image's classes, ``N`` lists of ``K``."""
        return [[self.label(n, k) for k in range(self.topk)] for n in range(len(self))]

    def __repr__(self) -> str:
        where = f" at '{self.layer}'" if self.layer else ""
        images = "1 image" if len(self) == 1 else f"{len(self)} images"
        first = ", ".join(
            f"{self.label(0, k)} {float(self.probs[0, k]):.3f}" for k in range(min(self.topk, 3))
        )
        more = ", ..." if self.topk > 3 else ""
        return (
            f"Explanation({self.method}{where}: {images} x top-{self.topk}; "
            f"first image: {first}{more})"
        )

    def plot(
        self,
        *,
        fig: FigureBase | None = None,
        images: Sequence[int] | None = None,
        alpha: float | None = None,
        cmap: str | None = None,
    ) -> FigureBase:
        """One row per image: the image, then its ``K`` maps over it, titled by class.

        Parameters
        ----------
        fig
            A figure or subfigure to fill (cleared first); a new pyplot figure
            when ``None``.
        images
            Which images to draw (default: all).
        alpha, cmap
            How the map is drawn over the image (:func:`netlens.viz.overlay`;
            ``None``: its defaults).

        Returns
        -------
        The figure, with ``N x (K + 1)`` axes.

        An image outside [0, 1] with no ``mean`` / ``std`` is min-max scaled
        for display.
        """
        from netlens import viz
        from netlens.viz._common import new_figure

        rows = list(range(len(self))) if images is None else [int(i) for i in images]
        for row in rows:
            if not 0 <= row < len(self):
                raise IndexError(f"image {row} is out of range for {len(self)} images")
        if not rows:
            raise ValueError("images must name at least one image")
        columns = self.topk + 1
        fig = new_figure(fig, (2.4 * columns, 2.6 * len(rows) + 0.3))
        axes = fig.subplots(len(rows), columns, squeeze=False)
        style: dict[str, Any] = {}
        if alpha is not None:
            style["alpha"] = alpha
        if cmap is not None:
            style["cmap"] = cmap
        for r, n in enumerate(rows):
            shown = self._picture(n)
            axes[r, 0].imshow(shown)
            axes[r, 0].set_axis_off()
            axes[r, 0].set_title(f"image {n}")
            for k in range(self.topk):
                viz.overlay(
                    shown,
                    self.maps[n, k].detach().cpu(),
                    ax=axes[r, k + 1],
                    **style,
                    title=f"{self.label(n, k)}\np = {float(self.probs[n, k]):.3f}",
                )
        where = f" at {self.layer}" if self.layer else ""
        fig.suptitle(f"{self.method}{where}: top-{self.topk} classes")
        return fig

    def _picture(self, n: int) -> Any:
        """Image ``n`` for display: its normalisation undone, else scaled to [0, 1] if outside."""
        from netlens import viz

        picture = self.images[n].detach().cpu().float()
        if self.mean is None and self.std is None:
            low, high = picture.aminmax()
            if low < 0 or high > 1:
                picture = viz.normalize(picture)
        return viz.to_image(picture, mean=self.mean, std=self.std)

    def _repr_png_(self) -> bytes:
        """The :meth:`plot` as PNG bytes, for notebooks (no pyplot figure is left open)."""
        import io

        from matplotlib.figure import Figure

        columns = self.topk + 1
        figure = Figure(figsize=(2.4 * columns, 2.6 * len(self) + 0.3), layout="constrained")
        self.plot(fig=figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=72)
        return buffer.getvalue()


def explain(
    model: nn.Module,
    x: Tensor,
    method: str | type[Attribution] | Attribution = "gradcam",
    topk: int = 5,
    *,
    target: Target = None,
    layer: LayerLike | None = None,
    class_names: Sequence[str] | None = None,
    size: Size = "input",
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> Explanation:
    """Maps of the ``topk`` most probable classes of each image, in one call.

    The model runs once for the classes and their probabilities, inside the
    method's own call: every method gets all ``K`` classes of an image at once
    (Grad-CAM and its family differentiate only the part above the layer, ``K``
    times; CAM reads all classes off one forward pass).

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    x
        One image ``(C, H, W)`` or a batch ``(N, C, H, W)``, ready for the model.
    method
        A name of :data:`netlens.attribution.METHODS` (``"gradcam"``,
        ``"cam"``, ``"saliency"``, ...), a method class, or a method already
        built on ``model``.
    topk
        How many classes per image, most probable first (at most the number
        of classes).
    target
        Classes to explain instead of the top ``k``: an ``int``, one per
        image, or ``(N, K)``; their probabilities are reported all the same.
    layer
        The layer of a layer method (default: the model's last feature map);
        not allowed for input methods or a method already built.
    class_names
        A name per class, for titles; default: ImageNet's names for a model
        with 1000 classes, else ``"class 7"``.
    size
        The maps' resolution, as for every method (default: the input's).
    mean, std
        The normalisation of ``x``, undone when :meth:`Explanation.plot`
        draws it (e.g. :data:`netlens.viz.IMAGENET_MEAN` /
        :data:`netlens.viz.IMAGENET_STD`).

    Returns
    -------
    Explanation

    Examples
    --------
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> e = explain(model, torch.randn(3, 32, 32), "cam", topk=3)
    >>> e.maps.shape, e.classes.shape, e.probs.shape, e.layer
    (torch.Size([1, 3, 32, 32]), torch.Size([1, 3]), torch.Size([1, 3]), 'layer4')
    >>> bool((e.probs[:, :-1] >= e.probs[:, 1:]).all())
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    if isinstance(x, Tensor) and x.dim() == 3:
        x = x.unsqueeze(0)
    check_images(x)
    if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
        raise ValueError(f"topk must be a positive int, not {topk!r}")
    attribution = build_method(method, model, layer)
    if attribution.model is not model:
        raise ValueError("the method given is built on another model than the one given")

    seen: dict[str, Any] = {}

    given = None if target is None else Targets.parse(target, x.shape[0])
    if given is not None and given.needs_logits:
        raise TypeError("target must be class indices here; topk= picks the top classes")

    def top_classes(logits: Tensor) -> Tensor:
        # Called with the logits of ``x`` by the method; the first call decides.
        if "classes" not in seen:
            probs = logits.detach().double().softmax(1)
            if given is not None:
                classes = given.resolve(logits)
            elif topk > logits.shape[1]:
                raise ValueError(f"topk={topk} but the model has only {logits.shape[1]} classes")
            else:
                classes = probs.topk(topk, dim=1).indices
            seen["classes"], seen["probs"] = classes, probs.gather(1, classes)
            seen["width"] = logits.shape[1]
        return seen["classes"]

    maps = attribution(x, top_classes, size=size)
    if "classes" not in seen:  # a method that never read the logits of x
        raise RuntimeError(f"{attribution.title} did not run the model on the images")
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    width = seen["width"]
    if class_names is None and width == 1000:
        class_names = imagenet_classes()
    elif class_names is not None and len(class_names) != width:
        raise ValueError(f"{len(class_names)} class_names for a model with {width} classes")
    layer_name = attribution.layer_name if isinstance(attribution, LayerAttribution) else None
    return Explanation(
        images=x.detach(),
        maps=maps,
        classes=seen["classes"].cpu(),
        probs=seen["probs"].float().cpu(),
        method=attribution.title,
        layer=layer_name,
        class_names=list(class_names) if class_names is not None else None,
        mean=mean,
        std=std,
    )


def build_method(
    method: str | type[Attribution] | Attribution,
    model: nn.Module,
    layer: LayerLike | None = None,
) -> Attribution:
    """A method on ``model``: by :data:`~netlens.attribution.METHODS` name, class, or as given.

    A layer method gets ``layer`` (``None``: its default); a method that runs
    many passes (Score-CAM, Occlusion, ...) shows a progress bar.

    Examples
    --------
    >>> import torchvision
    >>> build_method("scorecam", torchvision.models.resnet18(), "layer3")
    ScoreCAM(ResNet, layer='layer3')
    """
    from netlens.attribution import METHODS

    if isinstance(method, Attribution):
        if layer is not None:
            raise ValueError("layer= is for a method given by name or class, not one already built")
        return method
    if isinstance(method, str):
        if method not in METHODS:
            import difflib

            close = difflib.get_close_matches(method, list(METHODS), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"unknown method {method!r}{hint} (known: {', '.join(METHODS)})")
        cls = METHODS[method]
    elif isinstance(method, type) and issubclass(method, Attribution):
        cls = method
    else:
        raise TypeError(f"method must be a name, an Attribution class or instance, not {method!r}")
    if layer is not None and not cls.needs_layer:
        raise ValueError(f"{cls.title} reads no layer: leave layer=None")
    options: dict[str, Any] = {}
    if "progress" in inspect.signature(cls).parameters:
        options["progress"] = True
    return cls(model, layer, **options) if cls.needs_layer else cls(model, **options)


def imagenet_classes() -> list[str]:
    """ImageNet's 1000 class names, from torchvision's weight metadata (no download)."""
    import torchvision

    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
