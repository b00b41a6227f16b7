"""Agreement rows of Grad-CAM++, XGrad-CAM, HiResCAM and Eigen-CAM (see ``agreement.py``).

pytorch-grad-cam is read before its min-max scaling and resizing
(``agreement.grad_cam_raw``); where a row needs what its ``get_cam_image``
receives or returns, a subclass of its class says so.

DenseNet's ``features`` output is rectified in place by the model's forward
pass right after the layer returns; the peers keep a reference to that tensor
(``detach()`` shares its storage) and so read the rectified values, while
netlens reads the layer's output as it returned. The rows therefore read
DenseNet at ``features.denseblock4``, whose output nothing modifies in place.

XGrad-CAM divides by each channel's activation sum. On ``features.denseblock4``
(values of both signs) some channels nearly cancel (sum / sum of magnitudes
3e-3), and float32 rounding of the activations alone moves the map by 4e-4
relative from the float64 network's, for netlens and both peers alike; its
rows read DenseNet after a ReLU instead, where XGrad-CAM's normalisation is
meant to be used.
"""

from __future__ import annotations

import numpy as np
import torch
from agreement import Case, grad_cam_raw, torchcam_raw
from torch import Tensor, nn

from netlens.attribution import METHODS

LAYERS = {"densenet121": "features.denseblock4"}
POST_RELU = {"densenet121": "features.denseblock4.denselayer16.relu2"}

#: Gradients times SCALE and activations divided by it leave the paper's
#: Grad-CAM++ map unchanged (its weights scale by SCALE, the activations by
#: 1 / SCALE) and make pytorch-grad-cam's 1e-6 in the denominator negligible
#: (used by test_cam_family.py).
SCALE = 1e6


def _ours(name: str):
    def run(model: nn.Module, layer: str, x: Tensor, targets: Tensor) -> Tensor:
        return METHODS[name](model, layer)(x, targets, size=None)

    return run


def _grad_cam(cls_name: str):
    def run(model: nn.Module, layer: str, x: Tensor, targets: Tensor) -> Tensor:
        import pytorch_grad_cam

        return grad_cam_raw(getattr(pytorch_grad_cam, cls_name), model, layer, x, targets)

    return run


def _torchcam(cls_name: str):
    def run(model: nn.Module, layer: str, x: Tensor, targets: Tensor) -> Tensor:
        import torchcam.methods

        return torchcam_raw(getattr(torchcam.methods, cls_name), model, layer, x, targets)

    return run


def grad_cam_plus_plus_rescaled(model: nn.Module, layer: str, x: Tensor, targets: Tensor):
    """pytorch-grad-cam's Grad-CAM++ map on gradients times SCALE, activations over SCALE."""
    from pytorch_grad_cam import GradCAMPlusPlus

    class Rescaled(GradCAMPlusPlus):
        def get_cam_image(self, input_tensor, layer, targets, activations, grads, smooth):
            return super().get_cam_image(
                input_tensor, layer, targets, activations / SCALE, grads * SCALE, smooth
            )

    return grad_cam_raw(Rescaled, model, layer, x, targets)


def _eigencam_grad_cam(model: nn.Module, layer: str, x: Tensor, targets: Tensor) -> Tensor:
    """pytorch-grad-cam's signed projection, sign-aligned with netlens', then rectified."""
    from pytorch_grad_cam import EigenCAM

    kept: list[np.ndarray] = []

    class Keep(EigenCAM):
        def get_cam_image(self, *args):
            kept.append(super().get_cam_image(*args))
            return kept[-1]

    grad_cam_raw(Keep, model, layer, x, targets)
    theirs = torch.from_numpy(np.asarray(kept[-1])).double()
    reference = METHODS["eigencam"](model, layer).projection(_activation(model, layer, x))
    sign = torch.sign((theirs * reference).sum(dim=(1, 2), keepdim=True))
    return torch.relu(sign * theirs)


def _activation(model: nn.Module, layer: str, x: Tensor) -> Tensor:
    found = []
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, out: found.append(out.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return found[0]


CASES = [
    Case(
        method="gradcampp",
        peer="pytorch-grad-cam",
        verdict="differs",
        note=(
            "Compared with ``GradCAMPlusPlus`` before its min-max scaling and resizing. Its "
            "formula is the paper's, but it adds 1e-6 to alpha's denominator 2 g^2 + sum(A) g^3, "
            "which is as small as g^2 at a late layer; with that constant made negligible it "
            "equals netlens."
        ),
        ours=_ours("gradcampp"),
        theirs=_grad_cam("GradCAMPlusPlus"),
        layers=LAYERS,
    ),
    Case(
        method="gradcampp",
        peer="torchcam",
        verdict="differs",
        note=(
            "Compared with ``GradCAMpp(...)(target, scores, normalized=False)``. Its alpha stays "
            "the squared gradient (the in-place division applies to a copy made by boolean-mask "
            "indexing), so its weights are sum_ij ReLU(g)^3; the denominator it meant to use, "
            "2 g^2 + sum_ab(A_ab g_ab^3), is not the paper's either."
        ),
        ours=_ours("gradcampp"),
        theirs=_torchcam("GradCAMpp"),
        layers=LAYERS,
    ),
    Case(
        method="xgradcam",
        peer="pytorch-grad-cam",
        verdict="equal",
        note=(
            "Compared with ``XGradCAM`` before its min-max scaling and resizing (it adds 1e-7 to "
            "each channel's activation sum; netlens divides by the sum itself). DenseNet-121 is "
            "read after a ReLU, where the sums do not cancel."
        ),
        ours=_ours("xgradcam"),
        theirs=_grad_cam("XGradCAM"),
        layers=POST_RELU,
    ),
    Case(
        method="xgradcam",
        peer="torchcam",
        verdict="equal",
        note=(
            "Compared with ``XGradCAM(...)(target, scores, normalized=False)`` (it adds 1e-8 to "
            "each channel's activation sum; netlens divides by the sum itself). DenseNet-121 is "
            "read after a ReLU, where the sums do not cancel."
        ),
        ours=_ours("xgradcam"),
        theirs=_torchcam("XGradCAM"),
        layers=POST_RELU,
    ),
    Case(
        method="hirescam",
        peer="pytorch-grad-cam",
        verdict="equal",
        note="Compared with ``HiResCAM`` before its min-max scaling and resizing.",
        ours=_ours("hirescam"),
        theirs=_grad_cam("HiResCAM"),
        layers=LAYERS,
    ),
    Case(
        method="eigencam",
        peer="pytorch-grad-cam",
        verdict="differs",
        note=(
            "Compared with ``EigenCAM``'s projection, sign-aligned with netlens' (the SVD's sign "
            "is arbitrary), then rectified. It subtracts each channel's spatial mean before the "
            "SVD; the paper, and netlens, project the activations themselves."
        ),
        ours=_ours("eigencam"),
        theirs=_eigencam_grad_cam,
        layers=LAYERS,
    ),
]
