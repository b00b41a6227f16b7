"""FeatureExtractor: the outputs of any named layers, for a batch or a dataset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from types import TracebackType
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens._checks import check_images, model_device
from netlens.hooks import HookSession, StopForward, Tap, eval_mode
from netlens.layers import LayerLike, resolve_layer

Reduce = Literal["mean", "max"] | None


class FeatureExtractor:
    """Capture the outputs of named layers during forward passes.

    Each captured output is a copy taken the moment the layer returns, so a
    later in-place operation (an ``inplace=True`` ReLU right after a
    convolution, ``out += identity`` in a residual block) does not change it:
    ``features["features.28"]`` of a VGG is the convolution's output, not the
    ReLU's.

    Parameters
    ----------
    model
        Any ``nn.Module``.
    layers
        One layer or a sequence of layers: dotted names from
        ``model.named_modules()`` or the modules themselves.
    detach
        ``True`` (default): features are detached copies and :meth:`__call__`
        runs without gradients. ``False``: features stay attached to the
        autograd graph, so they can be differentiated.
    stop_early
        Stop the forward pass as soon as every requested layer has run: no
        later module runs and no logits are computed. Inside a ``with`` block
        the model call then ends at once and the block is left quietly.

    Attributes
    ----------
    features : dict[str, Tensor]
        The outputs of the latest forward pass, keyed by layer name.

    Notes
    -----
    A module that runs more than once in one forward pass (the ``relu`` that a
    torchvision ResNet block calls twice) has no single output: capturing it
    raises :class:`netlens.hooks.RepeatedCallError` naming the module. Pick
    the block or the layer before the activation instead.

    Calling the extractor (``fx(x)``, ``fx.extract(loader)``) runs the model in
    eval mode and restores every module's ``training`` flag afterwards, so
    BatchNorm statistics are never updated. Inside ``with fx:`` you run the
    model yourself, in whatever mode it is in.

    Examples
    --------
    >>> import torch, torchvision
    >>> resnet = torchvision.models.resnet18()
    >>> fx = FeatureExtractor(resnet, ["layer3", "layer4"])
    >>> feats = fx(torch.randn(2, 3, 64, 64))
    >>> feats["layer4"].shape
    torch.Size([2, 512, 2, 2])
    >>> with fx:
    ...     logits = resnet(torch.randn(1, 3, 64, 64))
    >>> fx.features["layer3"].shape
    torch.Size([1, 256, 4, 4])
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerLike | Sequence[LayerLike],
        *,
        detach: bool = True,
        stop_early: bool = False,
    ) -> None:
        if isinstance(layers, (str, nn.Module)):
            layers = [layers]
        resolved = [resolve_layer(model, layer) for layer in layers]
        if not resolved:
            raise ValueError("give at least one layer to extract")
        self.model = model
        self.layers: dict[str, nn.Module] = dict(resolved)
        self.detach = detach
        self.stop_early = stop_early
        self.features: dict[str, Tensor] = {}
        self._session: HookSession | None = None

    def _new_session(self) -> HookSession:
        mode = "copy" if self.detach else "graph"
        taps = [Tap(name, module, mode, stop=True) for name, module in self.layers.items()]
        return HookSession(self.model, taps, stop_early=self.stop_early)

    def __enter__(self) -> FeatureExtractor:
        if self._session is not None:
            raise RuntimeError(
                "this FeatureExtractor is already active (nested `with` or a call inside "
                "its own `with` block); use a second FeatureExtractor instead."
            )
        session = self._new_session()
        session.__enter__()
        self._session = session
        self.features = session.results
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        session, self._session = self._session, None
        assert session is not None
        session.__exit__(exc_type, exc, tb)
        self.features = dict(session.results)
        if exc_type is None and session.passes > 0:
            session.check_reached()
        return exc_type is not None and issubclass(exc_type, StopForward)

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        """Run ``model(x)`` in eval mode and return ``{layer name: output}``."""
        check_images(x)
        with self, eval_mode(self.model), torch.no_grad() if self.detach else nullcontext():
            self.model(x)
        return self.features

    def extract(
        self,
        loader: Iterable[object],
        reduce: Reduce = None,
        progress: bool = True,
    ) -> dict[str, Tensor]:
        """Stream a dataset through the model and concatenate each layer's outputs.

        Parameters
        ----------
        loader
            An iterable of batches (a ``DataLoader``): each batch is a tensor
            ``(N, C, H, W)`` or a tuple / list whose first item is one
            (``(images, labels)``). Batches are moved to the model's device.
        reduce
            ``None`` keeps full feature maps; ``"mean"`` or ``"max"`` reduce
            every dimension after the channel one, so a large dataset fits in
            memory (``(N, C)`` per layer).
        progress
            Show a tqdm progress bar.

        Returns
        -------
        dict[str, Tensor]
            ``{layer name: features}`` on the CPU, in dataset order.

        Examples
        --------
        >>> import torch, torchvision
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = TensorDataset(torch.randn(6, 3, 32, 32), torch.zeros(6))
        >>> fx = FeatureExtractor(torchvision.models.resnet18(), "layer4")
        >>> fx.extract(DataLoader(data, batch_size=4), reduce="mean", progress=False)[
        ...     "layer4"
        ... ].shape
        torch.Size([6, 512])
        """
        if reduce not in (None, "mean", "max"):
            raise ValueError(f"reduce must be None, 'mean' or 'max', not {reduce!r}")
        device = model_device(self.model)
        chunks: dict[str, list[Tensor]] = {name: [] for name in self.layers}
        total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
        bar = tqdm(loader, total=total, desc="extracting", unit="batch", disable=not progress)
        try:
            for batch in bar:
                x = _images_of(batch).to(device, non_blocking=True)
                for name, value in self(x).items():
                    chunks[name].append(_reduce(value.detach(), reduce).cpu())
        finally:
            bar.close()
        if not any(chunks.values()):
            raise ValueError("the loader yielded no batches")
        return {name: torch.cat(parts) for name, parts in chunks.items()}


def _images_of(batch: object) -> Tensor:
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if isinstance(batch, dict):
        raise TypeError("dict batches are not understood; yield (images, labels) or images alone")
    return check_images(batch)


def _reduce(value: Tensor, reduce: Reduce) -> Tensor:
    if reduce is None or value.dim() <= 2:
        return value
    dims = tuple(range(2, value.dim()))
    if reduce == "mean":
        return value.mean(dim=dims)
    return value.amax(dim=dims)
