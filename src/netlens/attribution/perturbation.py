"""Bases of methods that explain by changing what the network sees and watching the logits.

Occlusion, RISE and Score-CAM change the input (Score-CAM with masks made
from one layer's feature map); Ablation-CAM changes one layer's feature map.
Either way the work is many forward passes of changed copies of the images,
batched. The bases here run them: :class:`PerturbationAttribution` for the
input, :class:`LayerPerturbation` for methods that read a layer, with
:meth:`LayerPerturbation.scores` for changed inputs and
:meth:`LayerPerturbation.layer_scores` for changed feature maps, where only the
part of the network above the layer runs once per perturbation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens._plan import channels_last_possible, run_channels_last, size_plan
from netlens.attribution.base import Attribution, LayerAttribution
from netlens.errors import NetlensError
from netlens.hooks import HookSession, OutputFn, Tap, run_forward
from netlens.layers import LayerLike

__all__ = ["LayerPerturbation", "PerturbationAttribution"]


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
    return batch_size


class _Batches:
    """The loop over batches of perturbed images both bases share."""

    title: str
    batch_size: int
    progress: bool

    def _slices(self, groups: int, count: int) -> Iterator[tuple[int, slice]]:
        """``(group, rows)`` for ``groups`` runs of ``count`` rows, ``batch_size`` at a time."""
        starts = [(g, s) for g in range(groups) for s in range(0, count, self.batch_size)]
        for group, start in tqdm(starts, desc=self.title, unit="batch", disable=not self.progress):
            yield group, slice(start, min(start + self.batch_size, count))

    def scores(self, count: int, perturbed: Callable[[slice], Tensor]) -> Tensor:
        """Logits ``(count, classes)`` of ``perturbed(slice)`` batches, without gradients.

        Examples
        --------
        >>> import torch, torchvision
        >>> class Flip(PerturbationAttribution):
        ...     pass
        >>> method = Flip(torchvision.models.resnet18().eval(), batch_size=2)
        >>> x = torch.randn(1, 3, 32, 32)
        >>> method.scores(3, lambda part: x.expand(part.stop - part.start, -1, -1, -1)).shape
        torch.Size([3, 1000])
        """
        assert isinstance(self, Attribution)
        return torch.cat([self.batch_logits(perturbed(part)) for _, part in self._slices(1, count)])

    def batch_layout(self, x: Tensor, images: int) -> torch.memory_format:
        """The layout to make batches of ``images`` perturbed copies of ``x``'s images in.

        ``torch.channels_last`` where the size plan says so for batches of that
        size (on the CPU, where they read more activations than weights:
        Score-CAM's batches of 64 masked ResNet-18 images at 112 px then ran
        about a fifth faster), else ``torch.contiguous_format``. A batch made
        in its layout needs no copy into it, and every batch of a call, the
        last and smaller one included, is made the same way.
        """
        assert isinstance(self, Attribution)
        if not channels_last_possible(self.model, x):
            return torch.contiguous_format
        with size_plan(self.model, x, images=images) as plan:
            return torch.channels_last if plan.channels_last else torch.contiguous_format

    def batch_logits(self, batch: Tensor) -> Tensor:
        """The logits of one batch of perturbed images, without gradients.

        Where the model's own code raises on a channels-last batch, the layout
        is refused for that image size (:func:`netlens._plan.run_channels_last`),
        so that :meth:`batch_layout` says NCHW from then on, and the batch runs
        again in NCHW.
        """
        assert isinstance(self, Attribution)

        def run(images: Tensor) -> Tensor:
            return self.logits(self.model(images))

        with torch.no_grad():
            if batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous():
                return run_channels_last(self.model, batch, run, batch.contiguous)
            return run(batch)


class PerturbationAttribution(_Batches, Attribution):
    """Base of methods that perturb the input: batched forward passes of changed images.

    A subclass implements ``_attribute(x, targets)`` with :meth:`scores`, which
    runs ``count`` perturbed copies of one image ``batch_size`` at a time
    without gradients and returns their logits.

    Parameters
    ----------
    model
        The classifier.
    batch_size
        Perturbed images per forward pass.
    progress
        Show a progress bar over the batches.
    output
        How to read logits from the model's output.
    """

    needs_gradients = False

    def __init__(
        self,
        model: nn.Module,
        *,
        batch_size: int = 64,
        progress: bool = False,
        output: OutputFn | None = None,
    ) -> None:
        super().__init__(model, output=output)
        self.batch_size = _check_batch_size(batch_size)
        self.progress = progress


class LayerPerturbation(_Batches, LayerAttribution):
    """Base of perturbation methods that read one layer: Score-CAM, Ablation-CAM.

    :meth:`activation` gives the layer's output and the logits in one forward
    pass. :meth:`scores` runs changed inputs (Score-CAM's images masked by the
    layer's channels), ``batch_size`` at a time, like
    :meth:`PerturbationAttribution.scores`.

    :meth:`layer_scores` changes the layer's output instead: it runs the
    network once below the layer on one image, then the part above the layer
    on a batch of replacement feature maps at a time: at the layer, the batch
    of one becomes a batch of ``B`` (everything computed below is the same for
    every perturbation, so broadcasting it is exact). A model whose code above
    the layer cannot take that change of batch size (it concatenates a tensor
    from below, it stored the batch size at the start) raises, and the batch
    is then run whole, the input repeated ``B`` times, with the same result.

    Parameters
    ----------
    model
        The classifier.
    layer
        The layer to read or change; default: the last convolutional feature map.
    batch_size
        Perturbed images (or feature maps) per forward pass.
    progress
        Show a progress bar over the batches.
    output
        How to read logits from the model's output.
    channels_last
        Whether the layer's output is ``(N, H, W, C)``; default: found out.
    """

    needs_gradients = False

    def __init__(
        self,
        model: nn.Module,
        layer: LayerLike | None = None,
        *,
        batch_size: int = 64,
        progress: bool = False,
        output: OutputFn | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(model, layer, output=output, channels_last=channels_last)
        self.batch_size = _check_batch_size(batch_size)
        self.progress = progress
        self._broadcast = True

    def activation(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The layer's output for ``x`` and the logits, in one forward pass without gradients."""
        name, module = self._resolve(x)
        with torch.no_grad():
            logits, found = run_forward(
                self.model, x, HookSession(self.model, [Tap(name, module)]), output=self.output
            )
        assert logits is not None
        return found[name], logits

    def layer_scores(
        self,
        x: Tensor,
        replacements: Tensor | Callable[[int, slice], Tensor],
        count: int | None = None,
    ) -> Tensor:
        """Logits with the layer's output replaced, ``batch_size`` replacements per pass.

        With a tensor, ``x`` is one image ``(1, C, H, W)`` and ``replacements``
        has the layer output's shape with a batch of ``B``: the logits are
        ``(B, classes)``, one row per replacement.

        With a function, ``x`` is a batch ``(N, C, H, W)`` and
        ``replacements(i, rows)`` returns rows ``rows`` (a slice of
        ``range(count)``) of image ``i``'s replacements: the logits are
        ``(N, count, classes)``, from ``N * ceil(count / batch_size)`` passes
        under one progress bar. Each batch of replacements is made when it
        runs, so they never all exist at once.

        Examples
        --------
        >>> import torch, torchvision
        >>> class Probe(LayerPerturbation):
        ...     pass
        >>> resnet = torchvision.models.resnet18().eval()
        >>> probe = Probe(resnet, "layer4", batch_size=4)
        >>> x = torch.randn(1, 3, 32, 32)
        >>> a, logits = probe.activation(x)
        >>> torch.allclose(probe.layer_scores(x, a.expand(3, -1, -1, -1))[2], logits[0], atol=1e-5)
        True
        >>> two = torch.randn(2, 3, 32, 32)
        >>> a, logits = probe.activation(two)
        >>> def unchanged(i, rows):
        ...     return a[i : i + 1].expand(rows.stop - rows.start, -1, -1, -1)
        >>> same = probe.layer_scores(two, unchanged, 5)
        >>> same.shape, torch.allclose(same[1, 4], logits[1], atol=1e-5)
        (torch.Size([2, 5, 1000]), True)
        """
        name, module = self._resolve(x)
        if isinstance(replacements, Tensor):
            if count is not None:
                raise TypeError("count= goes with a function of replacements, not a tensor")
            if x.shape[0] != 1:
                raise ValueError(
                    f"layer_scores with a tensor takes one image (1, C, H, W), got "
                    f"{tuple(x.shape)}; pass a function (i, rows) -> replacements for a batch"
                )
            table = replacements
            groups, count = 1, table.shape[0]

            def make(i: int, rows: slice) -> Tensor:
                return table[rows]

        else:
            if not callable(replacements):
                raise TypeError(
                    f"replacements must be a tensor or a function (i, rows) -> tensor, not "
                    f"{type(replacements).__name__}"
                )
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"count must be a positive int, not {count!r}")
            groups, make = x.shape[0], replacements
        chunks: list[list[Tensor]] = [[] for _ in range(groups)]
        for i, rows in self._slices(groups, count):
            part = make(i, rows)
            if part.shape[0] != rows.stop - rows.start:
                raise ValueError(
                    f"replacements({i}, {rows}) gave {part.shape[0]} feature maps, not "
                    f"{rows.stop - rows.start}"
                )
            chunks[i].append(self._above(x[i : i + 1], name, module, part))
        logits = torch.stack([torch.cat(row) for row in chunks])
        return logits[0] if isinstance(replacements, Tensor) else logits

    def _above(self, x: Tensor, name: str, module: nn.Module, part: Tensor) -> Tensor:
        def swap(out: Tensor) -> Tensor:
            if out.shape[1:] != part.shape[1:]:
                raise ValueError(
                    f"replacements of shape {tuple(part.shape[1:])} for layer '{name}', whose "
                    f"output has shape {tuple(out.shape[1:])}"
                )
            # A copy: the model's code may change it in place (ResNet's `out += identity`).
            return part.to(dtype=out.dtype, device=out.device, copy=True)

        def run(images: Tensor) -> Tensor:
            session = HookSession(self.model, [Tap(name, module, None, replace=swap)])
            with torch.no_grad():
                logits, _ = run_forward(self.model, images, session, output=self.output)
            assert logits is not None
            return logits

        if self._broadcast:
            try:
                logits = run(x)
                if logits.shape[0] == part.shape[0]:
                    return logits
            except NetlensError:
                raise
            except Exception:  # noqa: BLE001 - the model needs the whole batch below the layer
                pass
            self._broadcast = False
        return run(x.expand(part.shape[0], *x.shape[1:]))
