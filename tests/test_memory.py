"""Grad-CAM and saliency keep only the autograd history they need (peak memory, not time).

Peaks are read with :func:`netlens.testing.peak_memory`: the bytes held by the
tensors a call allocates, from torch's allocation events. Unlike the resident
set, that reading does not depend on what glibc's heap kept from earlier
calls, so repeated runs read the same and the calls can share one process.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from netlens import GradCAM, Saliency
from netlens.attribution import GuidedBackprop
from netlens.testing import peak_memory


@pytest.fixture(scope="module")
def resnet18_batch():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()
        yield model, torch.randn(16, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    finally:
        torch.set_num_threads(threads)


def _peaks(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    def full_graph(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(inputs)[:, 1].sum(), inputs)

    runs = {
        "full_graph": full_graph,
        "gradcam": lambda x: GradCAM(model, "layer4")(x, 1, size=None),
        "saliency": lambda x: Saliency(model)(x, 1),
    }
    peaks = {}
    for name, run in runs.items():
        run(x[:1])  # the size measured, one image
        peaks[name] = peak_memory(lambda run=run: run(x))
    return peaks


@pytest.mark.slow
def test_gradcam_and_saliency_need_far_less_memory_than_the_full_graph(resnet18_batch):
    peaks = _peaks(*resnet18_batch)
    reference = peaks["full_graph"]
    # The full graph of ResNet-18 at 16 x 160 x 160 peaks at 183 MiB of tensors
    # (captum's LayerGradCam on layer4 177, its Saliency 179).
    assert reference > 120, peaks
    # Measured: Grad-CAM 0.30 of the full graph (it records layer4 and the head, keeping
    # ReLU masks only), saliency 0.67 (ReLU masks only, channels-last). Either recording
    # the whole graph reads 1.0.
    assert peaks["gradcam"] < 0.35 * reference, peaks
    assert peaks["saliency"] < 0.75 * reference, peaks


def test_the_peak_counts_what_a_call_holds_at_once_and_reads_the_same_each_time():
    mib = 2**18  # float32 elements

    def two_at_once() -> torch.Tensor:
        a = torch.ones(mib)
        b = a * 2  # 2 MiB alive
        del a
        return b + 1  # 2 MiB alive: b and the result

    def one_at_a_time() -> None:
        for _ in range(3):
            torch.ones(mib).add_(1)

    assert peak_memory(two_at_once) == pytest.approx(2.0, abs=0.01)
    assert peak_memory(one_at_a_time) == pytest.approx(1.0, abs=0.01)
    model, x = torchvision.models.resnet18().eval(), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        readings = [peak_memory(lambda: model(x)) for _ in range(3)]
    assert readings[0] > 0.5 and readings.count(readings[0]) == 3, readings
    with pytest.raises(ValueError, match="CPU and CUDA"):
        peak_memory(lambda: None, "meta")


def test_guided_backprop_holds_no_more_than_saliency():
    # The guided ReLU keeps the same boolean mask as saliency's ReLU rule, and its
    # backward pass holds one activation-sized tensor at a time beside the incoming
    # gradient. Here the peak is the backward pass through the first ReLU, whose
    # gradient is 8 MiB: a clamped copy alive beside the product read 34.8 MiB
    # against saliency's 26.8.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    ).eval()
    x = torch.randn(4, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    peaks = {}
    for cls in (Saliency, GuidedBackprop):
        method = cls(model)
        method(x[:1], 1)  # the size measured, one image
        peaks[cls.__name__] = peak_memory(lambda method=method: method(x, 1))
    assert peaks["Saliency"] > 8, peaks  # the first ReLU's gradient alone is 8 MiB
    assert peaks["GuidedBackprop"] <= peaks["Saliency"] + 0.5, peaks
