"""Agreement rows of Integrated Gradients, Input x Gradient, Guided Backprop and Guided Grad-CAM.

Each method is compared per channel where the peer keeps the channels: netlens with
``abs=False, channel_reduce="sum"`` against the peer's signed attribution summed over
channels, and (rows ``abs-max``) netlens' default map against the peer's
``.abs().amax(1)``.
"""

from __future__ import annotations

import torch
from agreement import Case
from torch import nn

from netlens.attribution import METHODS
from netlens.layers import resolve_layer

#: Integration steps of the Integrated Gradients rows.
STEPS = 16
#: DenseNet applies its last ReLU functionally; every other family's ReLUs are modules.
NOT_DENSENET = ("resnet18", "vgg11_bn", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny")
SIGNED = {"abs": False, "channel_reduce": "sum"}


def _reduce(maps: torch.Tensor, signed: bool) -> torch.Tensor:
    maps = maps.detach()
    return maps.sum(1) if signed else maps.abs().amax(1)


def _ours(name: str, **kwargs):
    def run(model, layer, x, targets):
        cls = METHODS[name]
        method = cls(model, layer, **kwargs) if cls.needs_layer else cls(model, **kwargs)
        return method(x, targets)

    return run


def _captum(name: str, signed: bool, *args, **kwargs):
    """captum's ``name(model).attribute(x, target=..., **kwargs)``, reduced over channels."""

    def run(model, layer, x, targets):
        import captum.attr

        cls = getattr(captum.attr, name)
        method = cls(model, *(resolve_layer(model, layer)[1] for _ in args))
        return _reduce(method.attribute(x, target=targets, **kwargs), signed)

    return run


def _scaled(run, factor: float):
    def scaled(model, layer, x, targets):
        return run(model, layer, x, targets) * factor

    return scaled


def _grad_cam_guided(model, layer, x, targets):
    """pytorch-grad-cam's ``GuidedBackpropReLUModel``, one image at a time, summed over channels.

    It replaces every ``nn.ReLU`` module of the model by its own module, and after the call
    by new ``nn.ReLU()`` modules; the original modules (and ``.grad``) are put back here.
    """
    from pytorch_grad_cam import GuidedBackpropReLUModel

    originals = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.ReLU)
    ]
    grads = {p: p.grad for p in model.parameters()}
    maps = []
    try:
        guided = GuidedBackpropReLUModel(model)
        for image, target in zip(x, targets.tolist(), strict=True):
            found = guided(image.unsqueeze(0).clone(), target_category=target)  # (H, W, C)
            maps.append(torch.from_numpy(found).permute(2, 0, 1).sum(0))
    finally:
        for parent, name, child in originals:
            parent._modules[name] = child
        for parameter, grad in grads.items():
            parameter.grad = grad
    return torch.stack(maps)


_FUNCTIONAL_RELU = (
    "DenseNet's forward applies its last ReLU functionally (``F.relu(features, "
    "inplace=True)``); {peer} changes only ``nn.ReLU`` modules, so that ReLU keeps its "
    "ordinary gradient there. netlens gives every ReLU the guided rule, as the paper does, "
    "functional ones too."
)

_TRAPEZOID = (
    "captum's ``riemann_trapezoid`` weights are 1/n, halved at both ends, which sum to "
    "(n - 1)/n; netlens uses the trapezoid rule's h = 1/(n - 1), weights summing to 1, so "
    "captum's map is netlens' times (n - 1)/n."
)

CASES = [
    # Integrated Gradients ----------------------------------------------------------
    Case(
        "integratedgradients",
        "captum",
        "equal",
        f"``IntegratedGradients(model).attribute(x, target, n_steps={STEPS})`` (Gauss-Legendre, "
        "zero baseline), summed over channels, against ``abs=False, channel_reduce='sum'``.",
        _ours("integratedgradients", steps=STEPS, **SIGNED),
        _captum("IntegratedGradients", True, n_steps=STEPS),
        slow=True,  # VGG-11's classifier: about 9 s
    ),
    Case(
        "integratedgradients",
        "captum",
        "equal",
        f"``IntegratedGradients(model).attribute(x, target, n_steps={STEPS})``, "
        "``.abs().amax(1)``, against the default map.",
        _ours("integratedgradients", steps=STEPS),
        _captum("IntegratedGradients", False, n_steps=STEPS),
        variant="abs-max",
        slow=True,
    ),
    *(
        Case(
            "integratedgradients",
            "captum",
            "equal",
            f"``method='{rule}'``, ``n_steps={STEPS}``, summed over channels.",
            _ours("integratedgradients", steps=STEPS, method=rule, **SIGNED),
            _captum("IntegratedGradients", True, n_steps=STEPS, method=rule),
            families=("resnet18",),
            variant=rule,
        )
        for rule in ("riemann_left", "riemann_right", "riemann_middle")
    ),
    Case(
        "integratedgradients",
        "captum",
        "differs",
        _TRAPEZOID,
        _ours("integratedgradients", steps=STEPS, method="riemann_trapezoid", **SIGNED),
        _captum("IntegratedGradients", True, n_steps=STEPS, method="riemann_trapezoid"),
        families=("resnet18",),
        variant="riemann_trapezoid",
    ),
    Case(
        "integratedgradients",
        "captum",
        "equal",
        f"``method='riemann_trapezoid'``: netlens' map times (n - 1)/n equals captum's "
        f"(n = {STEPS}).",
        _scaled(
            _ours("integratedgradients", steps=STEPS, method="riemann_trapezoid", **SIGNED),
            (STEPS - 1) / STEPS,
        ),
        _captum("IntegratedGradients", True, n_steps=STEPS, method="riemann_trapezoid"),
        families=("resnet18",),
        variant="riemann_trapezoid-rescaled",
    ),
    # Input x Gradient --------------------------------------------------------------
    Case(
        "inputxgradient",
        "captum",
        "equal",
        "``InputXGradient(model).attribute(x, target)``, summed over channels, against "
        "``abs=False, channel_reduce='sum'``.",
        _ours("inputxgradient", **SIGNED),
        _captum("InputXGradient", True),
    ),
    Case(
        "inputxgradient",
        "captum",
        "equal",
        "``InputXGradient(model).attribute(x, target)``, ``.abs().amax(1)``, against the "
        "default map.",
        _ours("inputxgradient"),
        _captum("InputXGradient", False),
        variant="abs-max",
    ),
    # Guided Backprop ---------------------------------------------------------------
    Case(
        "guidedbackprop",
        "captum",
        "equal",
        "``GuidedBackprop(model).attribute(x, target)``, summed over channels, against "
        "``abs=False, channel_reduce='sum'``, on families whose ReLUs are all ``nn.ReLU`` "
        "modules (none in EfficientNet-B0 and ConvNeXt: both give the plain gradient).",
        _ours("guidedbackprop", **SIGNED),
        _captum("GuidedBackprop", True),
        families=NOT_DENSENET,
    ),
    Case(
        "guidedbackprop",
        "captum",
        "equal",
        "``GuidedBackprop(model).attribute(x, target)``, ``.abs().amax(1)``, against the "
        "default map.",
        _ours("guidedbackprop"),
        _captum("GuidedBackprop", False),
        families=NOT_DENSENET,
        variant="abs-max",
    ),
    Case(
        "guidedbackprop",
        "captum",
        "differs",
        _FUNCTIONAL_RELU.format(peer="captum"),
        _ours("guidedbackprop", **SIGNED),
        _captum("GuidedBackprop", True),
        families=("densenet121",),
        variant="densenet",
    ),
    Case(
        "guidedbackprop",
        "pytorch-grad-cam",
        "equal",
        "``GuidedBackpropReLUModel(model)(image, target_category=t)`` one image at a time, "
        "summed over channels, against ``abs=False, channel_reduce='sum'``.",
        _ours("guidedbackprop", **SIGNED),
        _grad_cam_guided,
        families=NOT_DENSENET,
    ),
    Case(
        "guidedbackprop",
        "pytorch-grad-cam",
        "differs",
        _FUNCTIONAL_RELU.format(peer="pytorch-grad-cam"),
        _ours("guidedbackprop", **SIGNED),
        _grad_cam_guided,
        families=("densenet121",),
        variant="densenet",
    ),
    # Guided Grad-CAM ---------------------------------------------------------------
    Case(
        "guidedgradcam",
        "captum",
        "equal",
        "``GuidedGradCam(model, layer).attribute(x, target)`` (nearest upsampling, its "
        "default), summed over channels, against ``upsample='nearest', abs=False, "
        "channel_reduce='sum'``.",
        _ours("guidedgradcam", upsample="nearest", **SIGNED),
        _captum("GuidedGradCam", True, "layer"),
        families=NOT_DENSENET,
    ),
    Case(
        "guidedgradcam",
        "captum",
        "equal",
        "``GuidedGradCam(model, layer).attribute(x, target, interpolate_mode='bilinear')``, "
        "``.abs().amax(1)``, against the default map (bilinear upsampling, as in the paper).",
        _ours("guidedgradcam"),
        _captum("GuidedGradCam", False, "layer", interpolate_mode="bilinear"),
        families=NOT_DENSENET,
        variant="abs-max",
    ),
    Case(
        "guidedgradcam",
        "captum",
        "differs",
        "captum upsamples the Grad-CAM map to the input by nearest neighbour by default; "
        "netlens follows the paper and upsamples bilinearly (``upsample='nearest'`` gives "
        "captum's).",
        _ours("guidedgradcam"),
        _captum("GuidedGradCam", False, "layer"),
        families=("resnet18", "vgg11_bn"),
        variant="nearest",
    ),
    Case(
        "guidedgradcam",
        "captum",
        "differs",
        _FUNCTIONAL_RELU.format(peer="captum"),
        _ours("guidedgradcam", upsample="nearest", **SIGNED),
        _captum("GuidedGradCam", True, "layer"),
        families=("densenet121",),
        variant="densenet",
    ),
]
