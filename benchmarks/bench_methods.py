"""Time and peak memory of netlens' methods next to captum, pytorch-grad-cam and torchcam.

For each model (torchvision ResNets with random weights, eval mode) and batch
size, every case below runs on the same input with the same per-sample
targets, and is reported as a ratio to two bare baselines measured in the same
run: a forward pass under ``torch.no_grad()``, and a forward pass with the full
autograd graph plus the backward pass to the input.

* netlens: ``CAM`` and ``GradCAM`` on ``layer4`` (``size=None``: the layer's
  resolution, as captum returns it), ``Saliency``, ``FeatureExtractor`` on
  ``layer4`` (plain, ``stop_early``) and on ``layer2`` (``stop_early``).
* captum: ``LayerGradCam(..., relu_attributions=True)`` on ``layer4`` and
  ``Saliency(abs=True)`` reduced by a maximum over colour channels.
* pytorch-grad-cam: ``GradCAM`` on ``layer4[-1]`` (the same tensor).
* torchcam: ``CAM`` and ``GradCAM`` on ``layer4`` (``normalized=False``).
* The Grad-CAM floor: no-grad forward up to ``layer3``, ``layer4`` and the head
  with gradients but frozen parameters, backward to ``layer4``'s input.

Each case includes building the explainer (hooks are attached inside the call
and gone after it, as the peers' ``with`` blocks do); peers that are not
installed are skipped.

Workers
    Every case runs in ``--processes`` fresh Python processes (3), one at a
    time, each round in an order rotated by one, so that a slow phase of a
    shared machine spreads over all cases. In a worker the model and input are
    built, the case runs once on a batch of one (loads code paths and
    kernels), once on the full batch (the peak-memory call, and the warm-up),
    then, on the CPU, tells glibc to keep freed memory (``mallopt``: mmap and
    trim thresholds at 2 GiB), runs once more, and times ``--repeats`` calls
    (3) on the full batch. A case never inherits the heap another case left
    behind. With glibc's default settings, large blocks are mapped and handed
    back to the system on every call, and the page faults take half the time
    of a bare forward pass on a ResNet-50 (more for methods that free as they
    go, less for those that hold everything until the end, and more or less
    depending on what else is on the heap); keeping freed memory makes the
    times compare computation. ``--default-malloc`` times with the defaults;
    ``--shared-process`` times all cases in one process, in rotated rounds
    after a warm-up round (the peaks still come from workers).

Time
    The median of all timed calls of a case. On CUDA every call is bracketed
    by ``torch.cuda.synchronize()``.

Peak memory (CPU)
    Read around the worker's first full call: the resident set size before it
    (``VmRSS``), the high-water mark reset to it (writing ``5`` to
    ``/proc/self/clear_refs``), ``VmHWM`` after it. Peak extra memory is the
    difference: what the call needed resident at its peak, allocator overhead
    included, with the model and input already counted out; the median over
    the workers. Where the reset is not possible the growth of ``ru_maxrss``
    is used instead (it can under-read) and the table says so.

Peak memory (CUDA)
    ``torch.cuda.max_memory_allocated()`` after
    ``torch.cuda.reset_peak_memory_stats()``, minus ``memory_allocated()``
    before the call.

The same run checks that netlens' maps equal captum's (and torchcam's) on the
benchmark input, and times t-SNE (``EmbeddingProbe.tsne``) on 1,000 and 5,000
points once each. Run from the repository root::

    MPLBACKEND=Agg PYTHONPATH=src python benchmarks/bench_methods.py

A quick run: ``--models resnet18 --batches 1 --processes 1 --tsne-sizes``.
Results go to ``benchmarks/results/<device>.json`` and ``<device>.md``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
import torchvision
from _proc_memory import reset_peak, status_kib  # benchmarks/, beside this script
from torch import Tensor, nn

from netlens import CAM, EmbeddingProbe, FeatureExtractor, GradCAM, Saliency

Run = Callable[[], object]
Builder = Callable[[nn.Module, Tensor, list[int]], Run]

RESULTS = Path(__file__).resolve().parent / "results"


# --- the cases ----------------------------------------------------------------


def _forward(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    def run() -> object:
        with torch.no_grad():
            return model(x)

    return run


def _score(logits: Tensor, targets: list[int]) -> Tensor:
    index = torch.tensor(targets, device=logits.device).unsqueeze(1)
    return logits.gather(1, index).sum()


def _forward_to_layer2(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    def run() -> object:
        with torch.no_grad():
            h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
            return model.layer2(model.layer1(h))

    return run


def _forward_backward(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    def run() -> object:
        inputs = x.detach().requires_grad_(True)
        return torch.autograd.grad(_score(model(inputs), targets), inputs)

    return run


class _Frozen:
    """Parameters that do not require grad inside the block, restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p in self.params:
            p.requires_grad_(True)


def _forward_backward_frozen(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    plain = _forward_backward(model, x, targets)

    def run() -> object:
        with _Frozen(model):
            return plain()

    return run


def _gradcam_floor(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    def run() -> object:
        with _Frozen(model):
            with torch.no_grad():
                h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
                h = model.layer3(model.layer2(model.layer1(h)))
            h.requires_grad_(True)
            logits = model.fc(torch.flatten(model.avgpool(model.layer4(h)), 1))
            return torch.autograd.grad(_score(logits, targets), h)

    return run


def _netlens_cam(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    return lambda: CAM(model, "layer4", "fc")(x, targets, size=None)


def _netlens_gradcam(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    return lambda: GradCAM(model, "layer4")(x, targets, size=None)


def _netlens_saliency(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    return lambda: Saliency(model)(x, targets)


def _extractor(layer: str, stop_early: bool) -> Builder:
    def build(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
        return lambda: FeatureExtractor(model, layer, stop_early=stop_early)(x)

    return build


def _captum_gradcam(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from captum.attr import LayerGradCam

    def run() -> object:
        return LayerGradCam(model, model.layer4).attribute(
            x, target=targets, relu_attributions=True
        )

    return run


def _captum_saliency(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from captum.attr import Saliency as CaptumSaliency

    return lambda: CaptumSaliency(model).attribute(x, target=targets, abs=True).amax(1)


def _pytorch_grad_cam(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def run() -> object:
        with PGCGradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        model.zero_grad(set_to_none=True)  # it leaves parameter gradients behind
        return maps

    return run


def _torchcam_cam(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from torchcam.methods import CAM as TorchcamCAM

    def run() -> object:
        with torch.no_grad(), TorchcamCAM(model, "layer4", fc_layer="fc") as extractor:
            scores = model(x)
            return extractor(class_idx=targets, scores=scores, normalized=False)[0]

    return run


def _torchcam_gradcam(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from torchcam.methods import GradCAM as TorchcamGradCAM

    def run() -> object:
        with TorchcamGradCAM(model, "layer4") as extractor:
            scores = model(x)
            return extractor(class_idx=targets, scores=scores, normalized=False)[0]

    return run


@dataclass(frozen=True)
class Case:
    name: str
    library: str
    build: Builder
    needs: str | None = None  # an importable module


CASES = [
    Case("forward (no grad)", "baseline", _forward),
    Case("forward + backward to input", "baseline", _forward_backward),
    Case("forward to layer2 only (no grad)", "baseline", _forward_to_layer2),
    Case("forward + backward to input, frozen params", "baseline", _forward_backward_frozen),
    Case("Grad-CAM floor: backward to layer4 only", "baseline", _gradcam_floor),
    Case("CAM", "netlens", _netlens_cam),
    Case("GradCAM", "netlens", _netlens_gradcam),
    Case("Saliency", "netlens", _netlens_saliency),
    Case("FeatureExtractor layer4", "netlens", _extractor("layer4", False)),
    Case("FeatureExtractor layer4 stop_early", "netlens", _extractor("layer4", True)),
    Case("FeatureExtractor layer2 stop_early", "netlens", _extractor("layer2", True)),
    Case("LayerGradCam", "captum", _captum_gradcam, "captum"),
    Case("Saliency", "captum", _captum_saliency, "captum"),
    Case("GradCAM", "pytorch-grad-cam", _pytorch_grad_cam, "pytorch_grad_cam"),
    Case("CAM", "torchcam", _torchcam_cam, "torchcam"),
    Case("GradCAM", "torchcam", _torchcam_gradcam, "torchcam"),
]
FORWARD, FORWARD_BACKWARD = CASES[0], CASES[1]


def _key(case: Case) -> str:
    return f"{case.library}: {case.name}"


def _installed(module: str | None) -> bool:
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _available(case: Case) -> bool:
    return _installed(case.needs)


def _setup(model_name: str, batch: int, size: int, device: str) -> tuple[nn.Module, Tensor, list]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None).eval().to(device)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    targets = [(37 * i + 1) % 1000 for i in range(batch)]
    return model, x, targets


# --- measuring ----------------------------------------------------------------


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_cases(
    cases: list[Case], model: nn.Module, x: Tensor, targets: list[int], repeats: int, device: str
) -> dict[str, list[float]]:
    """Seconds per call of every case in this one process: a warm-up round, then rotated rounds."""
    runs = [case.build(model, x, targets) for case in cases]
    times: list[list[float]] = [[] for _ in cases]
    for round_ in range(repeats + 1):
        shift = round_ % len(cases)
        for i in list(range(shift, len(cases))) + list(range(shift)):
            seconds = _timed(runs[i], device)
            if round_ > 0:
                times[i].append(seconds)
            gc.collect()
    return {_key(case): t for case, t in zip(cases, times, strict=True)}


def _timed(run: Run, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def _peak_of_call(run: Run, device: str) -> dict[str, object]:
    """Run once; the extra memory at the peak of the call, allocator overhead included."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - before
        return {"peak_mib": extra / 2**20, "method": "max_memory_allocated"}
    before_rss = status_kib("VmRSS")
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exact = reset_peak() and before_rss is not None
    run()
    if exact:
        peak_kib = (status_kib("VmHWM") or 0) - (before_rss or 0)
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_max
    return {"peak_mib": peak_kib / 1024, "method": "VmHWM" if exact else "ru_maxrss"}


def _keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory and serve every size from its heap.

    By default glibc serves large blocks with ``mmap`` and gives the top of its
    heap back to the system once enough of it is free, so a process that
    frees its activations as it goes (a forward pass without gradients) maps
    and faults in fresh pages for most of them on every call: on a ResNet-50
    at batch 16 that is about 1.3 GB of page faults and half of the time of a
    bare forward pass, and how much of it a case pays depends on what else
    the heap holds. With both thresholds at their maximum no case pays any,
    and the times compare computation. Returns ``False`` where this is not
    glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    trim, mmap = -1, -3  # M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    return bool(libc.mallopt(trim, 2**31 - 1)) and bool(libc.mallopt(mmap, 2**31 - 1))


def measure_case(
    case: Case,
    model_name: str,
    batch: int,
    size: int,
    device: str,
    repeats: int,
    keep_heap: bool = True,
) -> dict[str, object]:
    """Peak memory of the first full call and times of ``repeats`` more, in this process.

    Meant for a fresh process: the model and input are built, the case runs
    once on a batch of one (loads code paths and kernels), the next call on the
    full batch gives the peak (with the default allocator settings) and serves
    as the warm-up for the timed calls. With ``keep_heap`` (on the CPU) the
    timed calls run after :func:`_keep_freed_memory` and one more call.
    """
    model, x, targets = _setup(model_name, batch, size, device)
    case.build(model, x[:1], targets[:1])()
    run = case.build(model, x, targets)
    result = _peak_of_call(run, device)
    if device == "cpu" and keep_heap and _keep_freed_memory():
        run()  # grows the heap to what the call needs, once
    times = []
    for _ in range(repeats):
        gc.collect()
        times.append(_timed(run, device))
    result["times"] = times
    return result


def measure_in_workers(
    cases: list[Case], device: str, model_name: str, batch: int, args: argparse.Namespace
) -> dict[str, list[dict[str, object]]]:
    """Each case in ``args.processes`` fresh processes, one at a time, in rotated order."""
    env = dict(os.environ)
    if args.live_memory:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    repeats = 0 if args.shared_process else args.repeats
    runs: dict[str, list[dict[str, object]]] = {}
    for round_ in range(args.processes):
        shift = round_ % len(cases)
        for case in cases[shift:] + cases[:shift]:
            command = [sys.executable, __file__, "--case", str(CASES.index(case))]
            command += ["--models", model_name, "--batches", str(batch), "--size", str(args.size)]
            command += ["--threads", str(args.threads), "--devices", device]
            command += ["--repeats", str(repeats)]
            command += ["--default-malloc"] if args.default_malloc else []
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"worker for {_key(case)} failed")
            runs.setdefault(_key(case), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def _relative_error(ours: Tensor, reference: Tensor) -> float:
    ours, reference = ours.detach().float().cpu(), reference.detach().float().cpu()
    scale = reference.abs().max().clamp_min(1e-12)
    return float((ours - reference.reshape(ours.shape)).abs().max() / scale)


def map_errors(model: nn.Module, x: Tensor, targets: list[int]) -> dict[str, float]:
    """Max relative error of netlens' maps against the peers' on the benchmark input."""
    errors = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradcam = GradCAM(model, "layer4")(x, targets, size=None)
        if _installed("captum"):
            errors["GradCAM vs captum LayerGradCam"] = _relative_error(
                gradcam, _captum_gradcam(model, x, targets)()
            )
            errors["Saliency vs captum Saliency"] = _relative_error(
                Saliency(model)(x, targets), _captum_saliency(model, x, targets)()
            )
        if _installed("torchcam"):
            errors["CAM vs torchcam CAM"] = _relative_error(
                CAM(model, "layer4", "fc")(x, targets, size=None),
                _torchcam_cam(model, x, targets)(),
            )
            errors["GradCAM vs torchcam GradCAM"] = _relative_error(
                gradcam, _torchcam_gradcam(model, x, targets)()
            )
    return errors


def time_tsne(sizes: list[int], dim: int = 512) -> list[dict[str, float]]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for n in sizes:
        centres = torch.randn(10, dim, generator=generator) * 4
        points = centres[torch.arange(n) % 10] + torch.randn(n, dim, generator=generator)
        probe = EmbeddingProbe(nn.Identity())
        probe.features = points  # as if fitted on n images
        start = time.perf_counter()
        probe.tsne()
        rows.append({"points": n, "dim": dim, "seconds": time.perf_counter() - start})
    return rows


# --- reporting ----------------------------------------------------------------

# (description, case, reference case, "time" or "peak", bound)
TARGETS = [
    ("GradCAM time / captum", "netlens: GradCAM", "captum: LayerGradCam", "time", 0.95),
    ("GradCAM peak / captum", "netlens: GradCAM", "captum: LayerGradCam", "peak", 0.35),
    ("Saliency time / captum", "netlens: Saliency", "captum: Saliency", "time", 1.0),
    ("Saliency peak / captum", "netlens: Saliency", "captum: Saliency", "peak", 0.6),
    ("CAM time / forward", "netlens: CAM", _key(FORWARD), "time", 1.05),
    (
        "FeatureExtractor layer4 / forward",
        "netlens: FeatureExtractor layer4",
        _key(FORWARD),
        "time",
        1.03,
    ),
    (
        "FeatureExtractor layer2 stop_early / forward",
        "netlens: FeatureExtractor layer2 stop_early",
        _key(FORWARD),
        "time",
        0.6,
    ),
    (
        "FeatureExtractor layer2 stop_early / bare forward to layer2",
        "netlens: FeatureExtractor layer2 stop_early",
        "baseline: forward to layer2 only (no grad)",
        "time",
        1.03,
    ),
]
TARGET_CONFIG = ("resnet50", 16)


def acceptance(config: dict[str, object]) -> list[dict[str, object]]:
    rows = []
    times, peaks = config["time_s"], config.get("peak_mib", {})
    for description, case, reference, what, bound in TARGETS:
        table = times if what == "time" else peaks
        if case in table and reference in table and table[reference]:
            ratio = table[case] / table[reference]
            rows.append(
                {"check": description, "ratio": ratio, "bound": bound, "pass": ratio <= bound}
            )
    for name, error in config["map_errors"].items():
        if "captum" in name:
            rows.append(
                {
                    "check": f"{name}: max relative error",
                    "ratio": error,
                    "bound": 1e-5,
                    "pass": error <= 1e-5,
                }
            )
    return rows


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the machine was."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine(device: str, threads: int) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("torchvision", "captum", "grad-cam", "torchcam", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info: dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads,
        "os": platform.platform(),
        "versions": versions,
        "load_average_at_start": _load_average(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, object]) -> str:
    info = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    lines = [
        f"# netlens benchmark ({result['device']})",
        "",
        f"- date: {info['date']}",
        f"- CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs, "
        f"torch threads: {info['torch_threads']}"
        + (f"; GPU: {info['gpu']}" if "gpu" in info else ""),
        f"- load average at start / end: {info['load_average_at_start']} / "
        f"{info.get('load_average_at_end')}",
        f"- {versions}",
        f"- input {result['size']}x{result['size']}, random weights, eval mode",
        f"- time: {result['timing_method']}",
        "- time ratios are to the bare forward pass (no grad) and to forward + backward to "
        "the input measured in the same run; peak = extra memory at the peak of one call "
        f"({result['memory_method']})",
        "",
    ]
    for config in result["configs"]:
        times, peaks = config["time_s"], config.get("peak_mib", {})
        fwd, fwd_bwd = times[_key(FORWARD)], times[_key(FORWARD_BACKWARD)]
        peak_ref = peaks.get(_key(FORWARD_BACKWARD))
        lines += [
            f"## {config['model']}, batch {config['batch']}",
            "",
            "| library | case | time (ms) | / forward | / fwd+bwd | peak (MiB) | peak / fwd+bwd |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key, seconds in times.items():
            library, name = key.split(": ", 1)
            peak = peaks.get(key)
            lines.append(
                f"| {library} | {name} | {seconds * 1e3:.1f} | {seconds / fwd:.2f} "
                f"| {seconds / fwd_bwd:.2f} | {_fmt(peak, 0)} "
                f"| {_fmt(peak / peak_ref if peak is not None and peak_ref else None)} |"
            )
        lines.append("")
        if config["map_errors"]:
            lines += ["| maps compared | max relative error |", "| --- | ---: |"]
            lines += [f"| {k} | {v:.1e} |" for k, v in config["map_errors"].items()]
            lines.append("")
        if config.get("acceptance"):
            lines += [
                f"Acceptance ({config['model']}, batch {config['batch']}):",
                "",
                "| check | measured | bound | result |",
                "| --- | ---: | ---: | --- |",
            ]
            for row in config["acceptance"]:
                measured = f"{row['ratio']:.1e}" if row["bound"] < 0.01 else f"{row['ratio']:.2f}"
                bound = f"{row['bound']:.0e}" if row["bound"] < 0.01 else f"{row['bound']:.2f}"
                verdict = "**pass**" if row["pass"] else "**FAIL**"
                lines.append(f"| {row['check']} | {measured} | <= {bound} | {verdict} |")
            lines.append("")
    if result["tsne"]:
        lines += ["## t-SNE (EmbeddingProbe.tsne, one run each)", ""]
        lines += ["| points | dimensions | seconds |", "| ---: | ---: | ---: |"]
        lines += [f"| {r['points']} | {r['dim']} | {r['seconds']:.1f} |" for r in result["tsne"]]
        lines.append("")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--processes", type=int, default=3, help="fresh processes per case (default 3)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed calls per process, after the warm-up call (default 3); with "
        "--shared-process: rounds over all cases",
    )
    parser.add_argument(
        "--shared-process",
        action="store_true",
        help="time every case in this one process, in rotated rounds, instead of in its own "
        "processes (the heap then carries over from case to case)",
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="time with glibc's default malloc settings (page faults included) instead of "
        "keeping freed memory in the heap",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, and cuda when available"
    )
    parser.add_argument(
        "--live-memory",
        action="store_true",
        help="fix glibc's mmap threshold at 64 KiB in the workers, so that freed blocks go "
        "back to the system and the peak reads live memory rather than heap retention",
    )
    parser.add_argument("--tsne-sizes", type=int, nargs="*", default=[1_000, 5_000])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    return parser


def _memory_method(device: str, args: argparse.Namespace, methods: set[str]) -> str:
    if device == "cuda":
        return f"torch.cuda.max_memory_allocated, median of {args.processes} processes"
    if methods == {"VmHWM"}:
        method = "peak RSS of the first full call in a fresh process, VmHWM after a reset"
    else:
        method = "growth of ru_maxrss in a fresh process per case (may under-read)"
    malloc = "glibc mmap threshold fixed at 64 KiB" if args.live_memory else "default malloc"
    return f"{method}, median of {args.processes} processes, {malloc}"


def _timing_method(args: argparse.Namespace) -> str:
    if args.shared_process:
        return (
            f"all cases in one process: a warm-up round, then {args.repeats} rounds in "
            "rotated order; median of the rounds"
        )
    malloc = (
        "default malloc settings"
        if args.default_malloc
        else "glibc keeping freed memory (mmap and trim thresholds at 2 GiB; no page faults)"
    )
    return (
        f"each case in {args.processes} fresh process{'es' if args.processes != 1 else ''}, "
        f"one at a time, in rotated order; {malloc}; "
        f"in each, a warm-up call, then {args.repeats} timed calls; median of all "
        f"{args.processes * args.repeats} calls"
    )


def measure_config(
    cases: list[Case], device: str, model_name: str, batch: int, args: argparse.Namespace
) -> tuple[dict[str, object], set[str]]:
    """Map errors, times and peaks of every case for one model and batch size."""
    print(f"[{device}] {model_name}, batch {batch} ...", file=sys.stderr, flush=True)
    model, x, targets = _setup(model_name, batch, args.size, device)
    config: dict[str, object] = {"model": model_name, "batch": batch}
    config["map_errors"] = map_errors(model, x, targets)
    if args.shared_process:
        times = time_cases(cases, model, x, targets, args.repeats, device)
    del model, x
    gc.collect()
    runs = measure_in_workers(cases, device, model_name, batch, args)
    if not args.shared_process:
        times = {key: [t for run in results for t in run["times"]] for key, results in runs.items()}
    config["time_s"] = {key: statistics.median(t) for key, t in times.items()}
    config["time_runs_s"] = times
    config["peak_mib"] = {
        key: statistics.median(run["peak_mib"] for run in results) for key, results in runs.items()
    }
    config["peak_runs_mib"] = {
        key: [run["peak_mib"] for run in results] for key, results in runs.items()
    }
    methods = {str(run["method"]) for results in runs.values() for run in results}
    if (model_name, batch) == TARGET_CONFIG:
        config["acceptance"] = acceptance(config)
    return config, methods


def main() -> None:
    args = _parser().parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module=r"captum\..*")  # "did not already require gradients"
    if args.case is not None:
        case = CASES[args.case]
        device = (args.devices or ["cpu"])[0]
        model_name, batch = args.models[0], args.batches[0]
        keep_heap = not args.default_malloc
        result = measure_case(case, model_name, batch, args.size, device, args.repeats, keep_heap)
        print(json.dumps(result))
        return
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA device: measuring on the CPU only", file=sys.stderr)
        devices = [d for d in devices if d != "cuda"]
    cases = [case for case in CASES if _available(case)]
    skipped = [_key(case) for case in CASES if case not in cases]
    if skipped:
        print(f"not installed, skipped: {skipped}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    tsne: list[dict[str, float]] | None = None
    for device in devices:
        result: dict[str, object] = {
            "device": device,
            "machine": machine(device, args.threads),
            "size": args.size,
            "timing_method": _timing_method(args),
            "skipped": skipped,
            "memory_method": "not measured",
            "configs": [],
        }
        for model_name in args.models:
            for batch in args.batches:
                config, methods = measure_config(cases, device, model_name, batch, args)
                result["configs"].append(config)
                result["memory_method"] = _memory_method(device, args, methods)
                gc.collect()
        result["machine"]["load_average_at_end"] = _load_average()
        if tsne is None:  # on the CPU, once, after the methods
            tsne = time_tsne(args.tsne_sizes)
        result["tsne"] = tsne
        text = markdown(result)
        print(text)
        (args.out / f"{device}.json").write_text(json.dumps(result, indent=2))
        (args.out / f"{device}.md").write_text(text + "\n")
        print(f"wrote {args.out / device}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
