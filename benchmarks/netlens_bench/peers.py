"""The peers' implementations, called as their documentation shows.

Every builder takes a :class:`~netlens_bench.models.Setup` and returns the
call to time. The explainer is built inside the call, and hooks are removed
before it returns (the peers' ``with`` blocks). Peers take one class per
sample: for ``(N, K)`` targets, captum and pytorch-grad-cam get every image
``K`` times with the ``N * K`` classes (:func:`~netlens_bench.models.rows`);
torchcam runs one forward pass and then its extractor once per class column,
keeping the graph between the columns (``retain_graph``) where it
differentiates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from netlens_bench.models import Setup, columns, rows

Run = Callable[[], object]
Builder = Callable[[Setup], Run]

IG_STEPS, SMOOTH_SAMPLES, NOISE, WINDOW = 16, 8, 0.15, 32


# --- captum ----------------------------------------------------------------------


def captum(name: str, layer: bool = False, **attribute: object) -> Builder:
    """``captum.attr.<name>(model[, layer module]).attribute(x, target=..., **attribute)``."""

    def build(s: Setup) -> Run:
        import captum.attr

        cls = getattr(captum.attr, name)

        def run() -> object:
            x, targets = rows(s.x, s.targets)
            method = cls(s.model, s.module) if layer else cls(s.model)
            return method.attribute(x, target=targets, **attribute)

        return run

    return build


def captum_saliency(s: Setup) -> Run:
    """``Saliency(abs=True)`` reduced by a maximum over colour channels, as netlens' default."""
    from captum.attr import Saliency

    def run() -> object:
        x, targets = rows(s.x, s.targets)
        return Saliency(s.model).attribute(x, target=targets, abs=True).amax(1)

    return run


def captum_smoothgrad(s: Setup) -> Run:
    from captum.attr import NoiseTunnel, Saliency

    stdev = float(NOISE * (s.x.max() - s.x.min()))

    def run() -> object:
        x, targets = rows(s.x, s.targets)
        return NoiseTunnel(Saliency(s.model)).attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=SMOOTH_SAMPLES,
            stdevs=stdev,
            target=targets,
            abs=False,
        )

    return run


def captum_occlusion(s: Setup) -> Run:
    from captum.attr import Occlusion

    window = (3, WINDOW, WINDOW)

    def run() -> object:
        x, targets = rows(s.x, s.targets)
        return Occlusion(s.model).attribute(
            x,
            sliding_window_shapes=window,
            strides=window,
            target=targets,
            perturbations_per_eval=64,
        )

    return run


CAPTUM_IG = captum(
    "IntegratedGradients", n_steps=IG_STEPS, method="gausslegendre", internal_batch_size=64
)


# --- pytorch-grad-cam ------------------------------------------------------------


def grad_cam(name: str, **kwargs: object) -> Builder:
    """``pytorch_grad_cam.<name>(model, target_layers=[module])`` with one target per row.

    It returns min-max-scaled numpy maps and leaves parameter gradients
    behind: they are cleared inside the timed call, as a user would.
    """

    def build(s: Setup) -> Run:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = getattr(pytorch_grad_cam, name)

        def run() -> object:
            x, targets = rows(s.x, s.targets)
            with cls(model=s.model, target_layers=[s.module], **kwargs) as cam:
                maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
            s.model.zero_grad(set_to_none=True)
            return maps

        return run

    return build


def grad_cam_guided(s: Setup) -> Run:
    """``GuidedBackpropReLUModel``: it takes one image at a time."""
    from pytorch_grad_cam import GuidedBackpropReLUModel

    def run() -> object:
        x, targets = rows(s.x, s.targets)
        guided = GuidedBackpropReLUModel(model=s.model, device=x.device)
        maps = [guided(x[i : i + 1], target_category=t) for i, t in enumerate(targets)]
        s.model.zero_grad(set_to_none=True)
        return maps

    return run


# --- torchcam --------------------------------------------------------------------


def torchcam(name: str, gradients: bool = True, **kwargs: object) -> Builder:
    """``torchcam.methods.<name>(model, layer)``: a forward pass, the extractor per column."""

    def build(s: Setup) -> Run:
        import torchcam.methods

        cls = getattr(torchcam.methods, name)
        extra = {"fc_layer": s.classifier} if name == "CAM" else {}

        def run() -> object:
            targets = columns(s.targets)
            with torch.set_grad_enabled(gradients), cls(s.model, s.layer, **extra, **kwargs) as cam:
                scores = s.model(s.x)
                maps = []
                for k, column in enumerate(targets):
                    more = {"retain_graph": k < len(targets) - 1} if gradients else {}
                    maps.append(cam(class_idx=column, scores=scores, normalized=False, **more)[0])
            return maps[0] if len(maps) == 1 else torch.stack(maps, 1)

        return run

    return build
