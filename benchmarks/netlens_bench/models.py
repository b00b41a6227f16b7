"""Models, inputs and targets of the benchmark, and a counter of forward passes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

#: torchvision model -> the layer every layer method reads (netlens and the peers alike).
LAYERS = {
    "resnet18": "layer4",
    "resnet50": "layer4",
    "mobilenet_v3_large": "features.16",  # the last block: 160 -> 960 channels, 7 x 7 at 224 px
    "convnext_tiny": "features.7",  # the last stage
}

Targets = list[int] | Tensor  # one class per image, or (N, K) classes: K maps per image


@dataclass(frozen=True)
class Config:
    """What one case runs on: a model, a batch of random images, their target classes."""

    model: str
    batch: int
    side: int
    classes: int = 1  # 1: one class per image; K > 1: each image's top-K classes

    @property
    def label(self) -> str:
        text = f"{self.model}, batch {self.batch}, {self.side} px"
        return text + (f", top-{self.classes} classes" if self.classes > 1 else "")

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model,
            "batch": self.batch,
            "side": self.side,
            "classes": self.classes,
        }


@dataclass(frozen=True)
class Setup:
    """A built configuration: what a case's builder receives."""

    model: nn.Module
    x: Tensor
    targets: Targets
    layer: str  # the name of the layer methods' layer
    module: nn.Module  # that layer
    classifier: str  # the name of the last nn.Linear

    def head(self, n: int = 1) -> Setup:
        """The first ``n`` images with their targets."""
        return replace(self, x=self.x[:n], targets=self.targets[:n])


def build(config: Config, device: str, weights: str | None = None) -> Setup:
    """The model (random weights, eval mode), the input and the targets of ``config``.

    ``weights``: a folder of :func:`save_weights` files, to load a model's
    random weights from instead of drawing them again (which takes a second
    for ConvNeXt-Tiny).
    """
    model = load_model(config.model, weights).eval().to(device)
    shape = (config.batch, 3, config.side, config.side)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(device)
    targets: Targets
    if config.classes == 1:
        targets = [(37 * i + 1) % 1000 for i in range(config.batch)]
    else:
        with torch.no_grad():
            targets = model(x).topk(config.classes, dim=1).indices.cpu()
    layer = LAYERS[config.model]
    return Setup(model, x, targets, layer, model.get_submodule(layer), _names(model)[1])


def _random(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None)


def save_weights(name: str, folder: str) -> None:
    """The random weights of model ``name`` (seed 0), for :func:`build`."""
    torch.save(_random(name).state_dict(), Path(folder) / f"{name}.pt")


def load_model(name: str, folder: str | None = None) -> nn.Module:
    """Model ``name`` with its random weights (seed 0), from ``folder`` where saved there."""
    path = Path(folder or "") / f"{name}.pt"
    if folder is None or not path.exists():
        return _random(name)
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    model.load_state_dict(torch.load(path, weights_only=True), assign=True)
    tensors = [*model.parameters(), *model.buffers()]
    return model if not any(t.is_meta for t in tensors) else _random(name)


def _names(model: nn.Module) -> tuple[str, str]:
    """The first convolution and the last linear layer."""
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return convs[0], linears[-1]


def rows(x: Tensor, targets: Targets) -> tuple[Tensor, list[int]]:
    """One row per map, as a library with one class per sample takes them.

    ``(N, K)`` targets repeat every image ``K`` times (a batch of ``N * K``)
    with the ``N * K`` classes; one class per image leaves the batch as is.
    """
    if isinstance(targets, Tensor) and targets.dim() == 2:
        return x.repeat_interleave(targets.shape[1], 0), targets.flatten().tolist()
    return x, [int(t) for t in targets]


def columns(targets: Targets) -> list[list[int]]:
    """The targets as ``K`` lists of one class per image (``K = 1`` for one class per image)."""
    if isinstance(targets, Tensor) and targets.dim() == 2:
        return [column.tolist() for column in targets.t()]
    return [[int(t) for t in targets]]


def score(logits: Tensor, targets: Targets) -> Tensor:
    """The sum of every requested logit."""
    index = torch.as_tensor(targets, device=logits.device).reshape(len(logits), -1)
    return logits.gather(1, index).sum()


class PassCounter:
    """Counts images through the first convolution (whole passes) and the last linear layer."""

    def __init__(self, model: nn.Module) -> None:
        first, last = _names(model)
        self.whole = self.head = 0
        self.handles = [
            model.get_submodule(first).register_forward_pre_hook(self._whole),
            model.get_submodule(last).register_forward_pre_hook(self._head),
        ]

    def _whole(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.whole += args[0].shape[0]

    def _head(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.head += args[0].shape[0]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
