"""Agreement rows of CAM, Grad-CAM, LayerCAM and saliency (see ``agreement.py``)."""

from __future__ import annotations

import torch
from agreement import Case, grad_cam_raw, torchcam_raw

from netlens.attribution import METHODS
from netlens.layers import resolve_layer


def _ours(name: str, **kwargs):
    def run(model, layer, x, targets):
        cls = METHODS[name]
        method = cls(model, layer, **kwargs) if cls.needs_layer else cls(model, **kwargs)
        return method(x, targets, size=None if cls.needs_layer else "input")

    return run


def _captum_gradcam(model, layer, x, targets):
    from captum.attr import LayerGradCam

    module = resolve_layer(model, layer)[1]
    maps = LayerGradCam(model, module).attribute(x, target=targets, relu_attributions=True)
    return maps.squeeze(1).detach()


def _captum_saliency(model, layer, x, targets):
    from captum.attr import Saliency

    return Saliency(model).attribute(x, target=targets, abs=True).amax(1).detach()


def _grad_cam(cls_name: str):
    def run(model, layer, x, targets):
        import pytorch_grad_cam

        return grad_cam_raw(getattr(pytorch_grad_cam, cls_name), model, layer, x, targets)

    return run


def _torchcam(cls_name: str, **kwargs):
    def run(model, layer, x, targets):
        import torchcam.methods

        return torchcam_raw(getattr(torchcam.methods, cls_name), model, layer, x, targets, **kwargs)

    return run


def _torchcam_cam(model, layer, x, targets):
    fc = {"resnet18": "fc", "densenet121": "classifier", "efficientnet_b0": "classifier.1"}
    name = next(n for n, m in fc.items() if _is(model, n))
    return _torchcam("CAM", fc_layer=fc[name])(model, layer, x, targets)


#: DenseNet's forward rectifies the feature map in place after the layer returns.
_INPLACE_NOTE = (
    "DenseNet's forward rectifies the layer's output in place (``F.relu(features, "
    "inplace=True)``) after the layer returns; {peer} keeps a reference to that tensor, so it "
    "weighs the rectified map with the gradient of the unrectified one. netlens (like captum) "
    "uses the layer's output as the layer returned it."
)
NOT_DENSENET = ("resnet18", "vgg11_bn", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny")


def _is(model, name):
    from agreement import family

    return family(name) is model


CASES = [
    Case(
        "cam",
        "torchcam",
        "equal",
        "``torchcam.methods.CAM(model, layer, fc_layer)`` with ``normalized=False``: the same "
        "class-weighted sum of the feature map's channels.",
        _ours("cam"),
        _torchcam_cam,
        # The other families have no global-average-pool + linear head.
        families=("resnet18", "densenet121", "efficientnet_b0"),
    ),
    Case(
        "gradcam",
        "captum",
        "equal",
        "``LayerGradCam(model, layer).attribute(x, target, relu_attributions=True)``.",
        _ours("gradcam"),
        _captum_gradcam,
    ),
    Case(
        "gradcam",
        "pytorch-grad-cam",
        "equal",
        "``GradCAM`` at the layer's resolution, before its min-max scaling and OpenCV resizing.",
        _ours("gradcam"),
        _grad_cam("GradCAM"),
        families=NOT_DENSENET,
    ),
    Case(
        "gradcam",
        "pytorch-grad-cam",
        "differs",
        _INPLACE_NOTE.format(peer="pytorch-grad-cam"),
        _ours("gradcam"),
        _grad_cam("GradCAM"),
        families=("densenet121",),
        variant="densenet",
    ),
    Case(
        "gradcam",
        "torchcam",
        "equal",
        "``torchcam.methods.GradCAM`` with ``normalized=False``.",
        _ours("gradcam"),
        _torchcam("GradCAM"),
        families=NOT_DENSENET,
    ),
    Case(
        "gradcam",
        "torchcam",
        "differs",
        _INPLACE_NOTE.format(peer="torchcam"),
        _ours("gradcam"),
        _torchcam("GradCAM"),
        families=("densenet121",),
        variant="densenet",
    ),
    Case(
        "layercam",
        "pytorch-grad-cam",
        "equal",
        "``LayerCAM`` at the layer's resolution, before its min-max scaling and OpenCV resizing.",
        _ours("layercam"),
        _grad_cam("LayerCAM"),
    ),
    Case(
        "layercam",
        "torchcam",
        "equal",
        "``torchcam.methods.LayerCAM`` with ``normalized=False``.",
        _ours("layercam"),
        _torchcam("LayerCAM"),
    ),
    Case(
        "saliency",
        "captum",
        "equal",
        "``Saliency(model).attribute(x, target, abs=True)``, maximum over colour channels.",
        _ours("saliency"),
        _captum_saliency,
    ),
]

__all__ = ["CASES", "torch"]
