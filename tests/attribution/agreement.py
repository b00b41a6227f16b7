"""The agreement matrix: each netlens method against every peer library that has it.

Every ``peers_*.py`` module beside this one lists :class:`Case` rows in a
``CASES`` list. ``test_agreement.py`` runs each row on every family of
:data:`FAMILIES` (torchvision networks with random weights *and* random
BatchNorm statistics, small inputs, one target class per sample), and
``docs/conf.py`` writes the table "method x peer: equal / differs because ..."
of ``docs/guide/agreement.rst`` from the same rows, so the page says exactly
what the tests check.

A row with ``verdict="equal"`` asserts ``ours`` equals ``theirs`` to
``rtol`` relative to the largest value of ``theirs``. A row with
``verdict="differs"`` asserts that they are *not* equal (the note must say
why, and which definition netlens follows); it usually has an ``equal`` twin
comparing netlens with the peer's definition computed independently, or with
the other peer.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

#: Families the matrix runs on, with the layer layer methods read by default
#: (the last convolutional feature map). DenseNet's forward rectifies its
#: ``features`` output in place after the layer returns: hook-based peers that
#: keep a reference to the output see the rectified tensor (see peers_core.py).
FAMILIES: dict[str, str] = {
    "resnet18": "layer4",
    "vgg11_bn": "features.27",
    "densenet121": "features",
    "mobilenet_v3_small": "features",
    "efficientnet_b0": "features",
    "convnext_tiny": "features",
}

#: Input side of the matrix's images (two images, one target class each).
SIDE = 64
TARGETS = (3, 977)

PEERS = ("captum", "pytorch-grad-cam", "torchcam")

#: ours / theirs: ``(model, layer_name, x, targets) -> maps (N, h, w)``, with
#: ``targets`` a long tensor ``(N,)`` and ``layer_name`` ``None`` for input methods.
Run = Callable[[nn.Module, "str | None", Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: a netlens method against one peer."""

    #: The method's name in ``netlens.attribution.METHODS``.
    method: str
    #: One of :data:`PEERS`.
    peer: str
    #: ``"equal"`` or ``"differs"``.
    verdict: str
    #: For the docs table: what is compared (the peer's call) and, for
    #: ``"differs"``, why, and which definition netlens follows.
    note: str
    ours: Run
    theirs: Run
    rtol: float = 1e-5
    #: Families to run on (default: all of :data:`FAMILIES`).
    families: tuple[str, ...] = tuple(FAMILIES)
    #: Per-family layer overrides (e.g. a layer with fewer channels for Score-CAM).
    layers: dict[str, str] = field(default_factory=dict)
    #: Distinguishes two rows of the same method and peer.
    variant: str = ""
    slow: bool = False

    def __post_init__(self) -> None:
        assert self.peer in PEERS, self.peer
        assert self.verdict in ("equal", "differs"), self.verdict
        assert set(self.families) <= set(FAMILIES), self.families

    @property
    def id(self) -> str:
        return f"{self.method}-{self.peer}" + (f"-{self.variant}" if self.variant else "")

    def layer(self, family: str) -> str:
        return self.layers.get(family, FAMILIES[family])


@functools.cache
def family(name: str) -> nn.Module:
    """A torchvision network with random weights and random BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
                module.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
    return model.eval()


def images(n: int = 2, side: int = SIDE, seed: int = 0) -> Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def relative_error(ours: Tensor, theirs: Tensor) -> float:
    ours, theirs = ours.detach().double().cpu(), theirs.detach().double().cpu()
    scale = theirs.abs().max().clamp_min(1e-30)
    return float((ours - theirs).abs().max() / scale)


def all_cases() -> list[Case]:
    """Every row of every ``peers_*.py`` module beside this file."""
    here = Path(__file__).parent
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda m: m.name):
        if info.name.startswith("peers_"):
            cases.extend(importlib.import_module(info.name).CASES)
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids)), f"two rows with one id: {ids}"
    return cases


def grad_cam_raw(cls: type, model: nn.Module, layer: str, x: Tensor, targets: Tensor, **kwargs):
    """pytorch-grad-cam's map at the layer's resolution, rectified, without its min-max scaling.

    ``cls`` is one of its CAM classes; its ``scale_cam_image`` (min-max scaling
    and OpenCV resizing) is replaced by the identity for the call, and its
    hooks are released afterwards.
    """
    import numpy as np
    from pytorch_grad_cam import base_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from netlens.layers import resolve_layer

    module = resolve_layer(model, layer)[1]
    scale = base_cam.scale_cam_image
    base_cam.scale_cam_image = lambda cam, target_size=None: np.float32(cam)
    try:
        with cls(model=model, target_layers=[module], **kwargs) as cam:
            maps = cam(x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    finally:
        base_cam.scale_cam_image = scale
        model.zero_grad(set_to_none=True)
    return torch.from_numpy(np.asarray(maps))


def torchcam_raw(cls: type, model: nn.Module, layer: str, x: Tensor, targets: Tensor, **kwargs):
    """torchcam's map at the layer's resolution, unnormalised, hooks removed afterwards."""
    with cls(model, layer, **kwargs) as extractor:
        scores = model(x)
        maps = extractor([int(t) for t in targets], scores, normalized=False)[0]
    return maps.detach()
