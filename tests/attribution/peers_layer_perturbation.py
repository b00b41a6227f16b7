"""Agreement rows of Score-CAM and Ablation-CAM (see ``agreement.py``)."""

from __future__ import annotations

import torch
from agreement import Case, grad_cam_raw, torchcam_raw

from netlens.attribution import METHODS
from netlens.layers import resolve_layer


def _ours(name: str):
    def run(model, layer, x, targets):
        return METHODS[name](model, layer)(x, targets, size=None)

    return run


def _grad_cam_scorecam(softmax: bool):
    """pytorch-grad-cam's Score-CAM map at the layer's resolution, rectified, hooks released."""

    def run(model, layer, x, targets):
        import numpy as np
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import (
            ClassifierOutputSoftmaxTarget,
            ClassifierOutputTarget,
        )

        target = ClassifierOutputSoftmaxTarget if softmax else ClassifierOutputTarget
        module = resolve_layer(model, layer)[1]
        cam = ScoreCAM(model=model, target_layers=[module])
        try:
            cam.activations_and_grads(x)
            activations = cam.activations_and_grads.activations[0].numpy()
            maps = cam.get_cam_image(
                x, module, [target(int(t)) for t in targets], activations, None
            )
        finally:
            cam.activations_and_grads.release()
        return torch.from_numpy(np.maximum(maps, 0))

    return run


def _torchcam_scorecam(model, layer, x, targets):
    import torchcam.methods

    return torchcam_raw(torchcam.methods.ScoreCAM, model, layer, x, targets)


def _grad_cam_ablationcam(model, layer, x, targets):
    import pytorch_grad_cam

    return grad_cam_raw(pytorch_grad_cam.AblationCAM, model, layer, x, targets)


#: Score-CAM runs the whole network once per channel: layers with few channels.
SCORECAM_LAYERS = {
    "resnet18": "layer1",  # 64 channels, 16 x 16
    "vgg11_bn": "features.3",  # 64, 32 x 32
    "densenet121": "features.pool0",  # 64, 16 x 16
    "mobilenet_v3_small": "features.1.block.0",  # 16, 16 x 16
    "efficientnet_b0": "features.0",  # 32, 32 x 32
    "convnext_tiny": "features.0.0",  # 96, 16 x 16 (the stem's LayerNorm sums to 0 over channels)
}
#: Where the two scores differ visibly (elsewhere the random-weight logits barely move).
SCORE_MATTERS = ("resnet18", "densenet121")

#: Post-ReLU layers (minimum 0), where pytorch-grad-cam zeroes the ablated channel;
#: it runs the whole network once per channel, so layers with few channels.
RECTIFIED_LAYERS = {
    "resnet18": "layer1",  # 64 channels
    "vgg11_bn": "features.3",  # 64 (max-pooled ReLU)
    "densenet121": "features.relu0",  # 64
}
#: Layers whose minimum is negative (Hardswish, SiLU, LayerNorm outputs).
SIGNED_LAYERS = {
    "mobilenet_v3_small": "features.2",  # 24 channels
    "efficientnet_b0": "features.7",  # 320 (earlier ones barely move its logits)
    "convnext_tiny": "features.0",  # 96
}

CASES = [
    Case(
        "scorecam",
        "pytorch-grad-cam",
        "equal",
        "``ScoreCAM(model, [layer])`` with ``targets=[ClassifierOutputSoftmaxTarget(c)]`` (the "
        "paper's post-softmax score), its rectified ``get_cam_image`` at the layer's resolution, "
        "before its min-max scaling and resizing; on layers with few channels.",
        _ours("scorecam"),
        _grad_cam_scorecam(softmax=True),
        layers=SCORECAM_LAYERS,
        slow=True,
    ),
    Case(
        "scorecam",
        "pytorch-grad-cam",
        "differs",
        "With its default ``ClassifierOutputTarget(c)``, pytorch-grad-cam scores each masked "
        "image by the logit; the paper (Section 3.2) and netlens score it by the post-softmax "
        "probability before the softmax over channels.",
        _ours("scorecam"),
        _grad_cam_scorecam(softmax=False),
        families=SCORE_MATTERS,
        layers=SCORECAM_LAYERS,
        variant="logits",
    ),
    Case(
        "scorecam",
        "torchcam",
        "differs",
        "``torchcam.methods.ScoreCAM`` (``normalized=False``) scores each masked image by the "
        "logit, where the paper and netlens use the post-softmax probability, and min-max scales "
        "each channel at the layer's resolution before upsampling it, where the paper upsamples "
        "first.",
        _ours("scorecam"),
        _torchcam_scorecam,
        families=SCORE_MATTERS,
        layers=SCORECAM_LAYERS,
    ),
    Case(
        "ablationcam",
        "pytorch-grad-cam",
        "equal",
        "``AblationCAM(model, [layer])`` at the layer's resolution, before its min-max scaling "
        "and resizing, on post-ReLU layers (minimum 0), where it sets the ablated channel to "
        "zero as the paper does. To 1e-3: each weight is a small difference of two float32 "
        "logits (netlens takes both from one computation, and is the closer to float64).",
        _ours("ablationcam"),
        _grad_cam_ablationcam,
        rtol=1e-3,
        families=tuple(RECTIFIED_LAYERS),
        layers=RECTIFIED_LAYERS,
        slow=True,
    ),
    Case(
        "ablationcam",
        "pytorch-grad-cam",
        "differs",
        "On a layer whose minimum is not 0 (Hardswish, SiLU or LayerNorm outputs), "
        "pytorch-grad-cam sets the ablated channel to the layer's minimum minus 1e7, a heuristic "
        "of its own; the paper and netlens set it to zero.",
        _ours("ablationcam"),
        _grad_cam_ablationcam,
        families=tuple(SIGNED_LAYERS),
        layers=SIGNED_LAYERS,
        variant="signed",
        slow=True,
    ),
]
