"""FeatureExtractor: the outputs of any named layers, for a batch or a dataset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens._checks import check_images, check_matches_model, model_device, split_batch
from netlens.hooks import ActiveSessions, HookSession, SessionBlock, Tap, eval_mode, run_forward
from netlens.layers import LayerLike, channel_axis, resolve_layer

__all__ = ["FeatureExtractor", "Reduce"]

Reduce = Literal["mean", "max"] | None


class FeatureExtractor(SessionBlock):
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
        self._active = ActiveSessions(self, "FeatureExtractor")

    def _new_session(self) -> HookSession:
        mode = "copy" if self.detach else "graph"
        taps = [Tap(name, module, mode, stop=True) for name, module in self.layers.items()]
        return HookSession(self.model, taps, stop_early=self.stop_early)

    def _entered(self, session: HookSession) -> None:
        self.features = session.results

    def _left(self, session: HookSession) -> None:
        self.features = dict(session.results)

    def __call__(self, x: Tensor) -> dict[str, Tensor]:
        """Run ``model(x)`` in eval mode and return ``{layer name: output}``."""
        check_images(x)
        check_matches_model(x, self.model)
        session = self._new_session()
        with eval_mode(self.model), torch.no_grad() if self.detach else nullcontext():
            run_forward(self.model, x, session, output=_ignore)
        self.features = dict(session.results)
        return dict(self.features)

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
            every dimension but the channel one, so a large dataset fits in
            memory (``(N, C)`` per layer). A channels-last layer (``(N, H, W,
            C)``, inside ConvNeXt blocks) is reduced over ``H`` and ``W``
            (:func:`netlens.layers.channel_axis`).
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
                x = split_batch(batch)[0].to(device, non_blocking=True)
                for name, value in self(x).items():
                    axis = channel_axis(self.model, name, value.dim())
                    chunks[name].append(_reduce(value.detach(), reduce, axis).cpu())
        finally:
            bar.close()
        if not any(chunks.values()):
            raise ValueError("the loader yielded no batches")
        return {name: torch.cat(parts) for name, parts in chunks.items()}


def _reduce(value: Tensor, reduce: Reduce, axis: int = 1) -> Tensor:
    """Reduce every dimension but the batch and the channel one (``axis``: 1 or -1)."""
    if reduce is None or value.dim() <= 2:
        return value
    channel = axis % value.dim()
    dims = tuple(d for d in range(1, value.dim()) if d != channel)
    if reduce == "mean":
        return value.mean(dim=dims)
    return value.amax(dim=dims)


def _ignore(output: object) -> Tensor:
    """The extractor reads layers, not logits: whatever the model returns is fine."""
    return torch.empty(0)
