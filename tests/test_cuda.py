"""netlens on a CUDA device: every method, the contract, the extractor, memory, the commands.

Every test here is marked ``cuda`` and skips without a CUDA device.
``NETLENS_CUDA_TESTS_ON=cpu`` runs them on the CPU instead (the comparisons then
compare the CPU with itself), which checks the tests themselves on a machine
without a GPU; ``scripts/gpu-check`` runs them on the GPU.

Tolerances. On the GPU these tests switch TF32 off (cuDNN allows it for
convolutions by default on Ampere and later: a 10-bit mantissa, about 1e-3
relative). What is left differs from the CPU by the order of sums and by
backward kernels that add with atomics, in any order. In float32 that moves a
pre-activation near zero across its ReLU often enough to change a gradient map
by more than rounding, so the CUDA maps are compared with the CPU's in
float64, to 1e-6 of the map's largest value. In float32 a map on CUDA is
compared with a peer's on CUDA (the same kernels): ``test_methods.py`` checks
Grad-CAM and saliency against captum to 1e-5 on every model there, on CUDA too.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

import netlens
from conftest import INPUT_SIZE, quick_methods
from netlens import FeatureExtractor, GradCAM, Saliency
from netlens.testing import check_attribution, peak_memory, tiny_cnn

DEVICE = os.environ.get("NETLENS_CUDA_TESTS_ON", "cuda")
ON_GPU = DEVICE == "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA device"),
]

QUICK = quick_methods()
#: Methods whose CUDA maps equal the CPU's: SmoothGrad draws its noise from a
#: generator on the image's device, so its maps depend on the device's generator.
DETERMINISTIC = [name for name in QUICK if name != "smoothgrad"]


@pytest.fixture(autouse=True)
def _no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.detach().cpu(), reference.detach().cpu()
    scale = reference.abs().max().clamp_min(1e-30)
    return float((ours - reference).abs().max() / scale)


@pytest.fixture(scope="module")
def resnet18_f64() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().double().eval()


@pytest.fixture(scope="module")
def images_f64() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE, generator=generator).double()


#: Where the tests check themselves on the CPU, Score-CAM (a forward pass of the whole
#: network per channel, twice) runs at layer1's 64 channels instead of layer4's 512.
OPTIONS_ON_CPU = {"scorecam": {"layer": "layer1"}}


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_every_method_on_cuda_equals_the_cpu(name, resnet18_f64, images_f64):
    method = QUICK[name]
    options = {} if ON_GPU else OPTIONS_ON_CPU.get(name, {})
    on_device = copy.deepcopy(resnet18_f64).to(DEVICE)
    targets = [3, 977]
    ours = method(on_device, **options)(images_f64.to(DEVICE), targets, size=None)
    reference = method(resnet18_f64, **options)(images_f64, targets, size=None)
    assert ours.device.type == torch.device(DEVICE).type
    assert ours.dtype == torch.float64 and ours.shape == reference.shape
    assert _relative_error(ours, reference) <= 1e-6


@pytest.mark.parametrize("name", list(QUICK))
def test_every_method_keeps_the_contract_on_cuda(name):
    model = tiny_cnn().to(DEVICE)
    report = check_attribution(QUICK[name], model)
    assert "no hooks left" in report.rules
    assert next(model.parameters()).device.type == torch.device(DEVICE).type


def test_smoothgrad_on_cuda_repeats_itself_with_its_seed(resnet18_f64, images_f64):
    model = copy.deepcopy(resnet18_f64).float().to(DEVICE)
    x = images_f64.float().to(DEVICE)
    method = QUICK["smoothgrad"](model)
    first, second = method(x, [3, 977]), method(x, [3, 977])
    assert first.device.type == torch.device(DEVICE).type
    assert torch.equal(first, second)
    assert not torch.equal(first, Saliency(model)(x, [3, 977]))


def test_feature_extractor_on_cuda_equals_the_cpu(resnet18_f64, images_f64):
    layers = ["layer2", "layer4", "avgpool"]
    on_device = copy.deepcopy(resnet18_f64).to(DEVICE)
    with FeatureExtractor(on_device, layers) as extractor:
        ours = extractor(images_f64.to(DEVICE))
    with FeatureExtractor(resnet18_f64, layers) as extractor:
        reference = extractor(images_f64)
    for layer in layers:
        assert ours[layer].device.type == torch.device(DEVICE).type
        assert _relative_error(ours[layer], reference[layer]) <= 1e-9
    assert not on_device._forward_hooks and not on_device.layer4._forward_hooks


@pytest.mark.skipif(not ON_GPU, reason="reads torch.cuda.max_memory_allocated")
def test_gradcam_and_saliency_need_less_cuda_memory_than_the_full_graph(record_property):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().cuda().eval()
    x = torch.randn(32, 3, 224, 224, device="cuda")

    def full_graph():
        inputs = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(inputs)[:, 1].sum(), inputs)

    calls = {
        "full_graph": full_graph,
        "gradcam": lambda: GradCAM(model, "layer4")(x, 1, size=None),
        "saliency": lambda: Saliency(model)(x, 1),
    }
    peaks = {}
    for name, call in calls.items():
        call()  # warm-up: cuDNN picks its kernels and workspaces
        peaks[name] = peak_memory(call, "cuda")
        record_property(f"{name}_peak_mib", round(peaks[name], 1))
    # The CPU test (test_memory.py) measures 0.30 and 0.67 of the full graph;
    # the bounds here leave room for cuDNN's workspaces, counted in the peak.
    assert peaks["gradcam"] < 0.5 * peaks["full_graph"], peaks
    assert peaks["saliency"] < 0.8 * peaks["full_graph"], peaks


def _netlens(*args: object) -> subprocess.CompletedProcess[str]:
    """``python -m netlens ARGS`` with this checkout's netlens."""
    package_root = str(Path(netlens.__file__).resolve().parent.parent)
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "netlens", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_the_tour_runs_on_cuda(tmp_path):
    result = _netlens("tour", "--quick", "--device", DEVICE, "--out", tmp_path / "t")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t" / "index.html").is_file()
    assert (tmp_path / "t" / "attributions.png").stat().st_size > 0


@pytest.mark.slow
def test_the_audit_runs_on_cuda(tmp_path):
    result = _netlens("audit", "--quick", "--device", DEVICE, "--out", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a" / "results.json").is_file()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
