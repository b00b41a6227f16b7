"""Maps that netlens and a peer compute alike, compared on the benchmark's own input."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from netlens._plan import forced_layout
from netlens.errors import CAMNotApplicableError
from netlens_bench import cases, models
from netlens_bench.measure import prepare_worker
from netlens_bench.models import Config

#: (method, peer): the same definition, the same layer, no rescaling
PAIRS = [
    ("gradcam", "captum"),
    ("saliency", "captum"),
    ("cam", "torchcam"),
    ("gradcam", "torchcam"),
]
BOUND = 1e-5


def relative_error(ours: object, reference: object) -> float:
    """The largest absolute difference over the reference's largest magnitude."""
    a, b = _tensor(ours), _tensor(reference)
    scale = b.abs().max().clamp_min(1e-12)
    return float((a - b.reshape(a.shape)).abs().max() / scale)


def _tensor(value: object) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    assert isinstance(value, Tensor)
    return value.detach().double().cpu()


def map_errors(
    config: Config,
    device: str,
    methods: list[str],
    libraries: list[str],
    threads: int,
    weights: str | None = None,
) -> dict[str, float]:
    """``{"<method>: netlens vs <peer>": max relative error}`` for the selected pairs."""
    prepare_worker(threads)
    s = models.build(config, device, weights)
    errors: dict[str, float] = {}
    for method, peer in PAIRS:
        if method not in methods or peer not in libraries:
            continue
        try:
            # In the input's layout, as the peers run: float32 maps depend on the layout the
            # convolutions ran in, by more than the bound on these random networks (captum's
            # saliency of ResNet-50 on 4 images moves by 1.8e-2 of its largest value between
            # a channels-last and a default input). The test suite compares netlens'
            # channels-last path with captum's on a channels-last input.
            with forced_layout(channels_last=False):
                ours = cases.find(method, "netlens").build(s)()
        except CAMNotApplicableError:
            continue
        theirs = cases.find(method, peer).build(s)()
        errors[f"{method}: netlens vs {peer}"] = relative_error(ours, theirs)
    return errors
