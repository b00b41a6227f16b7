"""Agreement rows of occlusion and SmoothGrad (see ``agreement.py``)."""

from __future__ import annotations

import torch
from agreement import Case

from netlens.attribution import METHODS, Saliency

#: Families where occlusion changes the logits by more than float rounding. With random
#: weights, MobileNetV3-Small's and EfficientNet-B0's features do not depend on a 64 px input
#: (a whole-image change moves the logits by about 1e-8), so their occlusion maps are rounding
#: noise in either library.
RESPONSIVE = ("resnet18", "vgg11_bn", "densenet121", "convnext_tiny")

#: A drop is the difference of two logits, which carry float32 rounding that depends on the
#: batch an image runs in: about 1e-6 of the logits, up to 2e-5 of the largest drop here.
OCCLUSION_RTOL = 1e-4

#: SmoothGrad's rows: noisy copies per image and the noise level (of each image's range).
SAMPLES, NOISE, SEED = 4, 0.15, 0


def _occlusion(window, stride):
    def ours(model, layer, x, targets):
        return METHODS["occlusion"](model, window=window, stride=stride)(x, targets)

    def theirs(model, layer, x, targets):
        from captum.attr import Occlusion

        maps = Occlusion(model).attribute(
            x,
            sliding_window_shapes=(x.shape[1], *window),
            strides=(x.shape[1], *stride),
            baselines=0.0,
            target=targets,
            perturbations_per_eval=16,
        )
        return maps.mean(1).detach()  # the channels are equal: the window spans them all

    return ours, theirs


def _smoothgrad(abs: bool, reduce: str):
    def ours(model, layer, x, targets):
        wrapped = Saliency(model, abs=abs, channel_reduce=reduce)
        return METHODS["smoothgrad"](wrapped, samples=SAMPLES, noise=NOISE, seed=SEED)(x, targets)

    def theirs(model, layer, x, targets):
        from captum.attr import NoiseTunnel
        from captum.attr import Saliency as CaptumSaliency

        maps = []
        for image, target in zip(x, targets.tolist(), strict=True):
            image = image.unsqueeze(0)
            sigma = float(NOISE * (image.max() - image.min()))  # captum's stdevs is absolute
            # captum draws its noise from torch's global generator; seeded like netlens' own.
            with torch.random.fork_rng():
                torch.manual_seed(SEED)
                found = NoiseTunnel(CaptumSaliency(model)).attribute(
                    image,
                    nt_type="smoothgrad",
                    nt_samples=SAMPLES,
                    stdevs=sigma,
                    target=target,
                    abs=abs,
                )
            maps.append(found.sum(1) if reduce == "sum" else found.amax(1))
        return torch.cat(maps).detach()

    return ours, theirs


CASES = [
    Case(
        "occlusion",
        "captum",
        "equal",
        "``Occlusion(model).attribute(x, sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), "
        "baselines=0)``: the mean drop of the target logit over the windows covering each pixel, "
        "the same on every channel. Equal to 1e-4: a drop is a difference of two logits and "
        "carries their float32 rounding. Random-weight MobileNetV3-Small and EfficientNet-B0 "
        "ignore a 64 px input up to rounding, so they are left out.",
        *_occlusion((16, 16), (8, 8)),
        rtol=OCCLUSION_RTOL,
        families=RESPONSIVE,
    ),
    Case(
        "occlusion",
        "captum",
        "equal",
        "A 24 x 20 window with strides 18 and 16, which do not tile the 64 px image: like captum, "
        "netlens adds windows up to the border and cuts the last one off there.",
        *_occlusion((24, 20), (18, 16)),
        rtol=OCCLUSION_RTOL,
        families=RESPONSIVE,
        variant="non-tiling",
    ),
    Case(
        "smoothgrad",
        "captum",
        "equal",
        "``NoiseTunnel(Saliency(model)).attribute(x, nt_type='smoothgrad', nt_samples=4, "
        "stdevs=sigma, abs=False)`` summed over channels, one image per call, sigma = 0.15 x its "
        "range and torch's generator seeded with netlens' seed (the same noise draws); netlens "
        "smooths ``Saliency(model, abs=False, channel_reduce='sum')``, linear in the gradient, "
        "so mean and channel sum commute.",
        *_smoothgrad(False, "sum"),
    ),
    Case(
        "smoothgrad",
        "captum",
        "differs",
        "netlens averages the wrapped method's final map, here ``max_c |g|`` "
        "(``Saliency(model)``); captum averages ``|g|`` per channel and takes the channel maximum "
        "afterwards. The paper averages the gradient per channel and takes absolute values "
        "for display; netlens "
        "averages final maps so that any method (Grad-CAM, occlusion) can be smoothed, and equals "
        "the paper for maps linear in the gradient (row above).",
        *_smoothgrad(True, "max"),
        variant="abs-max",
    ),
]
