"""Time, peak memory and forward passes of each netlens method next to the peers that have it.

For every method of :data:`netlens.attribution.METHODS` that captum,
pytorch-grad-cam or torchcam also computes, each library's implementation
runs on the same torchvision ResNet (random weights, eval mode), the same
input and the same per-sample targets, with the same method parameters
(steps, samples, window, layer ``layer4``). Every case runs in a fresh Python
process: the explainer is built inside the timed call (hooks attached and
removed as in the peers' ``with`` blocks), one call on a batch of one loads
code paths, the first call on the full batch gives the peak extra resident
memory (``VmHWM`` after a reset, as in ``bench_methods.py``) and the number of
forward passes (calls of the network's first convolution: whole passes; of its
classifier: passes of the part above the layer), then glibc keeps freed
memory and ``--repeats`` calls are timed (median).

Sizes. Single-backward methods run at 224 x 224 on ResNet-18 batch 1 and
ResNet-50 batch 16. Methods that run many passes per image run with reduced
parameters, stated in the table (Integrated Gradients with 16 steps,
SmoothGrad with 8 samples, Occlusion with a 32-pixel window and stride,
Score-CAM and Ablation-CAM at 112 x 112 on ResNet-18 only: with every channel
of ResNet-50's ``layer4`` a batch of 16 is 32,768 full forward passes for the
peers). Run from the repository root::

    MPLBACKEND=Agg PYTHONPATH=src python benchmarks/bench_family.py

``--quick`` (batch 1 configurations only, 1 timed call) takes a few minutes.
Results go to ``benchmarks/results/family-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bench_methods as base  # benchmarks/, beside this script
import torch
from torch import Tensor, nn

from netlens.attribution import METHODS

Run = Callable[[], object]
Builder = Callable[[nn.Module, Tensor, list[int]], Run]

RESULTS = Path(__file__).resolve().parent / "results"
IG_STEPS, SMOOTH_SAMPLES, WINDOW = 16, 8, 32

#: (model, batch, side) configurations, by how many passes a method runs.
ONE_PASS = [("resnet18", 1, 224), ("resnet50", 16, 224)]
MANY_PASSES = [("resnet18", 1, 224), ("resnet50", 4, 112)]
PER_CHANNEL = [("resnet18", 1, 112)]


def _netlens(name: str, **kwargs: object) -> Builder:
    def build(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
        cls = METHODS[name]

        def run() -> object:
            method = cls(model, "layer4", **kwargs) if cls.needs_layer else cls(model, **kwargs)
            return method(x, targets, size=None)

        return run

    return build


def _grad_cam(cls_name: str, **kwargs: object) -> Builder:
    def build(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = getattr(pytorch_grad_cam, cls_name)

        def run() -> object:
            with cls(model=model, target_layers=[model.layer4[-1]], **kwargs) as cam:
                maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
            model.zero_grad(set_to_none=True)
            return maps

        return run

    return build


def _torchcam(cls_name: str, **kwargs: object) -> Builder:
    def build(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
        import torchcam.methods

        cls = getattr(torchcam.methods, cls_name)

        def run() -> object:
            with cls(model, "layer4", **kwargs) as extractor:
                scores = model(x)
                return extractor(class_idx=targets, scores=scores, normalized=False)[0]

        return run

    return build


def _captum(make: Callable[[nn.Module], object], **attribute: object) -> Builder:
    def build(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
        def run() -> object:
            return make(model).attribute(x, target=targets, **attribute)  # type: ignore[attr-defined]

        return run

    return build


def _captum_class(name: str, *args: object) -> Callable[[nn.Module], object]:
    def make(model: nn.Module) -> object:
        import captum.attr

        return getattr(captum.attr, name)(
            model, *[model.layer4 if a == "layer4" else a for a in args]
        )

    return make


def _captum_smoothgrad(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from captum.attr import NoiseTunnel
    from captum.attr import Saliency as CaptumSaliency

    stdev = float(0.15 * (x.max() - x.min()))
    return lambda: NoiseTunnel(CaptumSaliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=SMOOTH_SAMPLES, stdevs=stdev, target=targets, abs=False
    )


def _captum_occlusion(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from captum.attr import Occlusion

    window = (3, WINDOW, WINDOW)
    return lambda: Occlusion(model).attribute(
        x, sliding_window_shapes=window, strides=window, target=targets, perturbations_per_eval=64
    )


def _grad_cam_guided(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from pytorch_grad_cam import GuidedBackpropReLUModel

    def run() -> object:
        guided = GuidedBackpropReLUModel(model=model, device=x.device)
        return [guided(x[i : i + 1], target_category=t) for i, t in enumerate(targets)]

    return run


@dataclass(frozen=True)
class Entry:
    method: str
    library: str
    build: Builder
    configs: list[tuple[str, int, int]]
    settings: str = ""


def _entries() -> list[Entry]:
    ig = {"steps": IG_STEPS, "method": "gausslegendre"}
    captum_ig = {"n_steps": IG_STEPS, "method": "gausslegendre"}
    rows = [
        ("gradcampp", "pytorch-grad-cam", _grad_cam("GradCAMPlusPlus"), ONE_PASS, ""),
        ("gradcampp", "torchcam", _torchcam("GradCAMpp"), ONE_PASS, ""),
        ("xgradcam", "pytorch-grad-cam", _grad_cam("XGradCAM"), ONE_PASS, ""),
        ("xgradcam", "torchcam", _torchcam("XGradCAM"), ONE_PASS, ""),
        ("hirescam", "pytorch-grad-cam", _grad_cam("HiResCAM"), ONE_PASS, ""),
        ("layercam", "pytorch-grad-cam", _grad_cam("LayerCAM"), ONE_PASS, ""),
        ("layercam", "torchcam", _torchcam("LayerCAM"), ONE_PASS, ""),
        ("eigencam", "pytorch-grad-cam", _grad_cam("EigenCAM"), ONE_PASS, ""),
        ("scorecam", "pytorch-grad-cam", _grad_cam("ScoreCAM"), PER_CHANNEL, ""),
        ("scorecam", "torchcam", _torchcam("ScoreCAM", batch_size=64), PER_CHANNEL, ""),
        ("ablationcam", "pytorch-grad-cam", _grad_cam("AblationCAM"), PER_CHANNEL, ""),
        ("inputxgradient", "captum", _captum(_captum_class("InputXGradient")), ONE_PASS, ""),
        ("guidedbackprop", "captum", _captum(_captum_class("GuidedBackprop")), ONE_PASS, ""),
        ("guidedbackprop", "pytorch-grad-cam", _grad_cam_guided, ONE_PASS, ""),
        (
            "guidedgradcam",
            "captum",
            _captum(_captum_class("GuidedGradCam", "layer4")),
            ONE_PASS,
            "",
        ),
        (
            "integratedgradients",
            "captum",
            _captum(_captum_class("IntegratedGradients"), **captum_ig, internal_batch_size=64),
            MANY_PASSES,
            f"{IG_STEPS} steps, Gauss-Legendre",
        ),
        ("smoothgrad", "captum", _captum_smoothgrad, MANY_PASSES, f"{SMOOTH_SAMPLES} samples"),
        ("occlusion", "captum", _captum_occlusion, MANY_PASSES, f"window = stride = {WINDOW}"),
    ]
    ours = {
        "integratedgradients": _netlens(
            "integratedgradients", **ig, abs=False, channel_reduce="sum"
        ),
        "smoothgrad": None,  # built below: it wraps Saliency
        "occlusion": _netlens("occlusion", window=WINDOW, stride=WINDOW),
    }
    entries: list[Entry] = []
    seen: set[str] = set()
    for method, library, build, configs, settings in rows:
        if method not in METHODS:
            continue
        if method not in seen:
            seen.add(method)
            mine = ours.get(method) or _netlens(method)
            if method == "smoothgrad":
                mine = _netlens_smoothgrad
            entries.append(Entry(method, "netlens", mine, configs, settings))
        entries.append(Entry(method, library, build, configs, settings))
    return entries


def _netlens_smoothgrad(model: nn.Module, x: Tensor, targets: list[int]) -> Run:
    from netlens.attribution import Saliency

    smoothgrad = METHODS["smoothgrad"]

    def run() -> object:
        method = smoothgrad(
            Saliency(model, abs=False, channel_reduce="sum"), samples=SMOOTH_SAMPLES, noise=0.15
        )
        return method(x, targets)

    return run


class _PassCounter:
    """Counts calls of the first convolution (whole passes) and of the classifier."""

    def __init__(self, model: nn.Module) -> None:
        self.whole = self.head = 0
        self.handles = [
            model.conv1.register_forward_pre_hook(self._whole),
            model.fc.register_forward_pre_hook(self._head),
        ]

    def _whole(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.whole += args[0].shape[0]

    def _head(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.head += args[0].shape[0]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(entry: Entry, config: tuple[str, int, int], repeats: int) -> dict[str, object]:
    """In this (fresh) process: passes and peak of the first full call, then timed calls."""
    model_name, batch, side = config
    model, x, targets = base._setup(model_name, batch, side, "cpu")
    entry.build(model, x[:1], targets[:1])()
    run = entry.build(model, x, targets)
    counter = _PassCounter(model)
    try:
        result = base._peak_of_call(run, "cpu")
    finally:
        counter.remove()
    result["images_through_network"] = counter.whole
    result["images_through_head"] = counter.head
    if base._keep_freed_memory():
        run()
    times = []
    for _ in range(repeats):
        gc.collect()
        times.append(base._timed(run, "cpu"))
    result["times"] = times
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch-1 configurations, 1 call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", nargs="*", help="only these METHODS names")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--entry", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=int, help=argparse.SUPPRESS)
    return parser


def markdown(result: dict[str, object]) -> str:
    info = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    lines = [
        "# netlens method family benchmark (cpu)",
        "",
        f"- date: {info['date']}",
        f"- CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs, torch threads: "
        f"{info['torch_threads']}",
        f"- load average at start / end: {info['load_average_at_start']} / "
        f"{info.get('load_average_at_end')}",
        f"- {versions}",
        "- random weights, eval mode, layer4 for layer methods, one target class per image;",
        "  each case in a fresh process: peak extra RSS and passes of the first full call,",
        f"  then the median of {result['repeats']} timed calls (glibc keeping freed memory)",
        "- passes: images through the whole network / through its classifier (fc)",
        "",
        "| method | model, batch, side | settings | library | time (ms) | / fastest peer "
        "| peak (MiB) | passes (whole / fc) |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | {row['config']} | {row['settings']} | {row['library']} "
            f"| {row['ms']:.1f} | {base._fmt(row.get('ratio'))} | {row['peak_mib']:.0f} "
            f"| {row['images_through_network']} / {row['images_through_head']} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = _parser().parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    entries = _entries()
    if args.entry is not None:
        entry = entries[args.entry]
        print(json.dumps(measure(entry, entry.configs[args.config], args.repeats)))
        return
    if args.methods:
        unknown = set(args.methods) - {e.method for e in entries}
        if unknown:
            raise SystemExit(f"no benchmark for {sorted(unknown)}")
    repeats = 1 if args.quick else args.repeats
    rows: list[dict[str, object]] = []
    for index, entry in enumerate(entries):
        if args.methods and entry.method not in args.methods:
            continue
        for c, config in enumerate(entry.configs):
            if args.quick and config[1] != 1:
                continue
            command = [sys.executable, __file__, "--entry", str(index), "--config", str(c)]
            command += ["--repeats", str(repeats), "--threads", str(args.threads)]
            done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
            if done.returncode != 0:
                print(f"failed: {entry.library} {entry.method} {config}", file=sys.stderr)
                continue
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            ms = 1000 * statistics.median(measured["times"])
            row = {
                "method": entry.method,
                "library": entry.library,
                "config": f"{config[0]}, {config[1]}, {config[2]}",
                "settings": entry.settings,
                "ms": ms,
                **{k: v for k, v in measured.items() if k != "method"},
            }
            rows.append(row)
            print(
                f"{entry.method:>20} {row['config']:>18} {entry.library:>17} {ms:9.1f} ms "
                f"{measured['peak_mib']:7.0f} MiB",
                file=sys.stderr,
            )
    for row in rows:
        peers = [
            r["ms"]
            for r in rows
            if r["method"] == row["method"]
            and r["config"] == row["config"]
            and r["library"] != "netlens"
        ]
        row["ratio"] = row["ms"] / min(peers) if peers else None
    result = {"machine": base.machine("cpu", args.threads), "repeats": repeats, "rows": rows}
    result["machine"]["load_average_at_end"] = base._load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    print(text)
    (args.out / "family-cpu.json").write_text(json.dumps(result, indent=2))
    (args.out / "family-cpu.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
