"""Every case of the benchmark: the baselines, netlens' methods and their peers.

A :class:`Method` is one row group of the matrix: netlens' implementation and
each peer library's, with the same parameters, on the same layer, input and
targets. Its ``kind`` says on which configuration of a matrix cell it runs
(:func:`config_for`): methods with one backward pass (or none) on the cell
itself, methods that run many passes per image with reduced parameters (and,
at batches above one, on a smaller batch of smaller images), the per-channel
methods on ResNet-18 at batch 1 only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from netlens_bench import peers
from netlens_bench.models import Config, Setup, score

Run = Callable[[], object]
Builder = Callable[[Setup], Run]

ONE_PASS, MANY_PASSES, PER_CHANNEL = "one pass", "many passes", "per channel"

#: library -> the module that must be importable to run it
IMPORTS = {"captum": "captum", "pytorch-grad-cam": "pytorch_grad_cam", "torchcam": "torchcam"}
LIBRARIES = ["netlens", *IMPORTS]


@dataclass(frozen=True)
class Case:
    method: str  # a METHODS name, or a baseline's description
    library: str  # "netlens", a peer, or "baseline"
    build: Builder

    @property
    def key(self) -> str:
        return f"{self.library}: {self.method}"


@dataclass(frozen=True)
class Method:
    name: str
    kind: str
    netlens: Builder
    peers: tuple[tuple[str, Builder], ...]  # (library, builder)
    settings: str = ""

    def cases(self) -> list[Case]:
        """netlens first, then every peer."""
        return [Case(self.name, "netlens", self.netlens)] + [
            Case(self.name, library, build) for library, build in self.peers
        ]


# --- baselines -------------------------------------------------------------------


def forward(s: Setup) -> Run:
    def run() -> object:
        with torch.no_grad():
            return s.model(s.x)

    return run


def forward_backward(s: Setup) -> Run:
    """The full autograd graph and the backward pass to the input: what a plain saliency costs."""

    def run() -> object:
        inputs = s.x.detach().requires_grad_(True)
        return torch.autograd.grad(score(s.model(inputs), s.targets), inputs)

    return run


FORWARD = Case("forward (no grad)", "baseline", forward)
FORWARD_BACKWARD = Case("forward + backward to input", "baseline", forward_backward)
BASELINES = [FORWARD, FORWARD_BACKWARD]


# --- netlens ---------------------------------------------------------------------


def netlens(name: str, **kwargs: object) -> Builder:
    """``METHODS[name](model[, layer], **kwargs)(x, targets, size=None)``."""

    def build(s: Setup) -> Run:
        from netlens.attribution import METHODS

        cls = METHODS[name]

        def run() -> object:
            method = cls(s.model, s.layer, **kwargs) if cls.needs_layer else cls(s.model, **kwargs)
            return method(s.x, s.targets, size=None)

        return run

    return build


def netlens_cam(s: Setup) -> Run:
    """``CAM(model, layer, fc)``: given the classifier, as torchcam is (else it finds it first)."""
    from netlens.attribution import CAM

    return lambda: CAM(s.model, s.layer, s.classifier)(s.x, s.targets, size=None)


def netlens_smoothgrad(s: Setup) -> Run:
    """SmoothGrad of the signed, channel-summed input gradient, as ``NoiseTunnel(Saliency)``."""
    from netlens.attribution import METHODS, Saliency

    def run() -> object:
        inner = Saliency(s.model, abs=False, channel_reduce="sum")
        method = METHODS["smoothgrad"](inner, samples=peers.SMOOTH_SAMPLES, noise=peers.NOISE)
        return method(s.x, s.targets, size=None)

    return run


# --- the matrix ------------------------------------------------------------------

_G, _T, _C = "pytorch-grad-cam", "torchcam", "captum"
_IG = f"{peers.IG_STEPS} steps, Gauss-Legendre"

MATRIX = [
    Method("cam", ONE_PASS, netlens_cam, ((_T, peers.torchcam("CAM", gradients=False)),)),
    Method(
        "gradcam",
        ONE_PASS,
        netlens("gradcam"),
        (
            (_C, peers.captum("LayerGradCam", layer=True, relu_attributions=True)),
            (_G, peers.grad_cam("GradCAM")),
            (_T, peers.torchcam("GradCAM")),
        ),
    ),
    Method("saliency", ONE_PASS, netlens("saliency"), ((_C, peers.captum_saliency),)),
    Method(
        "gradcampp",
        ONE_PASS,
        netlens("gradcampp"),
        ((_G, peers.grad_cam("GradCAMPlusPlus")), (_T, peers.torchcam("GradCAMpp"))),
    ),
    Method(
        "xgradcam",
        ONE_PASS,
        netlens("xgradcam"),
        ((_G, peers.grad_cam("XGradCAM")), (_T, peers.torchcam("XGradCAM"))),
    ),
    Method("hirescam", ONE_PASS, netlens("hirescam"), ((_G, peers.grad_cam("HiResCAM")),)),
    Method(
        "layercam",
        ONE_PASS,
        netlens("layercam"),
        ((_G, peers.grad_cam("LayerCAM")), (_T, peers.torchcam("LayerCAM"))),
    ),
    Method("eigencam", ONE_PASS, netlens("eigencam"), ((_G, peers.grad_cam("EigenCAM")),)),
    Method(
        "inputxgradient",
        ONE_PASS,
        netlens("inputxgradient"),
        ((_C, peers.captum("InputXGradient")),),
    ),
    Method(
        "guidedbackprop",
        ONE_PASS,
        netlens("guidedbackprop"),
        ((_C, peers.captum("GuidedBackprop")), (_G, peers.grad_cam_guided)),
    ),
    Method(
        "guidedgradcam",
        ONE_PASS,
        netlens("guidedgradcam"),
        ((_C, peers.captum("GuidedGradCam", layer=True)),),
    ),
    Method(
        "integratedgradients",
        MANY_PASSES,
        netlens(
            "integratedgradients",
            steps=peers.IG_STEPS,
            method="gausslegendre",
            abs=False,
            channel_reduce="sum",
        ),
        ((_C, peers.CAPTUM_IG),),
        _IG,
    ),
    Method(
        "smoothgrad",
        MANY_PASSES,
        netlens_smoothgrad,
        ((_C, peers.captum_smoothgrad),),
        f"{peers.SMOOTH_SAMPLES} samples, noise {peers.NOISE}",
    ),
    Method(
        "occlusion",
        MANY_PASSES,
        netlens("occlusion", window=peers.WINDOW, stride=peers.WINDOW),
        ((_C, peers.captum_occlusion),),
        f"window = stride = {peers.WINDOW}",
    ),
    Method(
        "scorecam",
        PER_CHANNEL,
        netlens("scorecam"),
        (
            (_G, peers.grad_cam("ScoreCAM")),
            (_T, peers.torchcam("ScoreCAM", gradients=False, batch_size=64)),
        ),
        "every channel of the layer",
    ),
    Method(
        "ablationcam",
        PER_CHANNEL,
        netlens("ablationcam"),
        ((_G, peers.grad_cam("AblationCAM")),),
        "every channel of the layer",
    ),
]
BY_NAME = {method.name: method for method in MATRIX}

#: the methods of the many-targets section
MANY_TARGETS = ["cam", "gradcam", "saliency"]


def find(method: str, library: str) -> Case:
    """The case of ``method`` (a METHODS name or a baseline) in ``library``."""
    for case in BASELINES:
        if (case.method, case.library) == (method, library):
            return case
    for case in BY_NAME[method].cases():
        if case.library == library:
            return case
    raise KeyError(f"no case {library}: {method}")


def config_for(kind: str, cell: Config) -> Config | None:
    """The configuration a method of ``kind`` runs on for a matrix cell (``None``: not run).

    Methods that run many passes per image run on the cell at batch 1 and on
    at most 4 images of half the side at larger batches; the per-channel
    methods (a forward pass per channel of the layer: 512 for ResNet-18's
    ``layer4``, 2,048 for ResNet-50's) on ResNet-18 at batch 1 and half the
    side only.
    """
    if kind == ONE_PASS:
        return cell
    if kind == MANY_PASSES:
        if cell.batch == 1:
            return cell
        return Config(cell.model, min(cell.batch, 4), cell.side // 2)
    if cell.model == "resnet18" and cell.batch == 1:
        return Config(cell.model, 1, cell.side // 2)
    return None
