"""Bases of methods that explain by changing what the network sees and watching the logits.

Occlusion, RISE and their kin change the input; Score-CAM and Ablation-CAM
change one layer's feature map. Either way the work is many forward passes
of one image under different perturbations, batched. The bases here run them:
:class:`PerturbationAttribution` for the input, :class:`LayerPerturbation`
for a layer, where only the part of the network above the layer runs once per
perturbation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens.attribution.base import Attribution, LayerAttribution
from netlens.errors import NetlensError
from netlens.hooks import HookSession, OutputFn, Tap, run_forward
from netlens.layers import LayerLike

__all__ = ["LayerPerturbation", "PerturbationAttribution"]


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
    return batch_size


class PerturbationAttribution(Attribution):
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
        chunks = []
        starts = range(0, count, self.batch_size)
        for start in tqdm(starts, desc=self.title, unit="batch", disable=not self.progress):
            part = slice(start, min(start + self.batch_size, count))
            with torch.no_grad():
                chunks.append(self.logits(self.model(perturbed(part))))
        return torch.cat(chunks)


class LayerPerturbation(LayerAttribution):
    """Base of methods that perturb one layer's feature map: Score-CAM, Ablation-CAM.

    :meth:`layer_scores` runs the network once below the layer on one image,
    then the part above the layer on a batch of replacement feature maps at a
    time: at the layer, the batch of one becomes a batch of ``B`` (everything
    computed below is the same for every perturbation, so broadcasting it is
    exact). A model whose code above the layer cannot take that change of
    batch size (it concatenates a tensor from below, it stored the batch size
    at the start) raises, and the batch is then run whole, the input repeated
    ``B`` times, with the same result.
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

    def layer_scores(self, x: Tensor, replacements: Tensor) -> Tensor:
        """Logits ``(B, classes)`` with the layer's output of image ``x`` replaced by each of ``B``.

        ``x`` is one image ``(1, C, H, W)``; ``replacements`` has the layer
        output's shape with a batch of ``B``.

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
        """
        if x.shape[0] != 1:
            raise ValueError(f"layer_scores takes one image (1, C, H, W), got {tuple(x.shape)}")
        name, module = self._resolve(x)
        count = replacements.shape[0]
        chunks = []
        starts = range(0, count, self.batch_size)
        for start in tqdm(starts, desc=self.title, unit="batch", disable=not self.progress):
            part = replacements[start : start + self.batch_size]
            chunks.append(self._above(x, name, module, part))
        return torch.cat(chunks)

    def _above(self, x: Tensor, name: str, module: nn.Module, part: Tensor) -> Tensor:
        def swap(out: Tensor) -> Tensor:
            if out.shape[1:] != part.shape[1:]:
                raise ValueError(
                    f"replacements of shape {tuple(part.shape[1:])} for layer '{name}', whose "
                    f"output has shape {tuple(out.shape[1:])}"
                )
            return part.to(dtype=out.dtype, device=out.device)

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
