"""Time and peak memory of netlens' methods next to captum, pytorch-grad-cam and torchcam.

The matrix: the torchvision models resnet18, resnet50, mobilenet_v3_large and
convnext_tiny (random weights, eval mode) at batch 1 and 16 of random 224 x
224 images, times every netlens method that a peer library also computes
(CAM, GradCAM, Saliency, and the family: gradcampp, xgradcam, hirescam,
layercam, eigencam, scorecam, ablationcam, inputxgradient, guidedbackprop,
guidedgradcam, integratedgradients, smoothgrad, occlusion), each in netlens
and in every installed peer that has it, on the same layer (``layer4``,
``features.16``, ``features.7``), input and per-image targets, with the same
parameters; plus two baselines per configuration, measured in the same run:
a forward pass under ``torch.no_grad()``, and a forward pass with the full
autograd graph plus the backward pass to the input. A method that does not
apply to a model (CAM needs global-average pooling and one linear layer, so
netlens' CAM refuses MobileNetV3 and ConvNeXt) is reported "n/a" for every
library.

Reduced sizes. Methods that run many passes per image run with reduced
parameters (Integrated Gradients 16 steps, SmoothGrad 8 samples, Occlusion
with a 32-pixel window and stride): on the cell at batch 1, and on 4 images
of half the side for the batch-16 cells. Score-CAM and Ablation-CAM (a
forward pass per channel of the layer: 512 on ResNet-18, 2,048 on ResNet-50)
run on ResNet-18, batch 1, at half the side only. Every row counts the images
that went through the first convolution (whole passes) and through the last
linear layer.

Many targets. ResNet-50, 4 images x their top-5 classes = 20 maps of CAM,
GradCAM and Saliency: netlens with a (4, 5) target tensor in one call; captum
and pytorch-grad-cam with every image repeated 5 times (a batch of 20) and
the 20 classes; torchcam with one forward pass and its extractor once per
class column (``retain_graph`` in between); baselines on the 4 images.

FeatureExtractor throughput. ``FeatureExtractor(resnet18, ["layer4",
"avgpool"]).extract`` over a DataLoader of 256 random images in batches of
32, against a bare loop of the same forward passes: images per second.

Workers
    Every case runs in ``--processes`` fresh processes (1), one at a time,
    rounds in an order rotated by one. The processes are forked from a server
    process that has imported torch, torchvision, netlens and the peers and
    run nothing else (``multiprocessing``'s forkserver), so a case never
    inherits the heap another case left behind and does not pay for the
    imports. In a worker the model and input are built, the case runs once on
    the first image (loads code paths and kernels), twice on the full batch
    (the peak-memory calls, and the warm-up), then, on the CPU, tells glibc to
    keep freed memory (``mallopt``: mmap and trim thresholds at 2 GiB), runs
    once more, and times ``--repeats`` calls: by default 21 at batch 1, 5 at
    batch 16, 3 for the methods of many passes, 5 for many targets. With
    glibc's default settings, large blocks are mapped and handed back to the
    system on every call, and the page faults take half the time of a bare
    forward pass on a ResNet-50 (more for methods that free as they go, less
    for those that hold everything until the end, and more or less depending
    on what else is on the heap); keeping freed memory makes the times compare
    computation. ``--default-malloc`` times with the defaults.

Interleaved timing
    With ``--interleave`` the fresh process of each case measures its peak
    and passes only, and the times come from one more process per
    configuration: it builds every case of the configuration on one model
    and input, warms each up, and then times rounds of one call of each, in
    an order shuffled afresh every round. A slowdown of the machine lasting seconds
    then falls on all the libraries of a configuration alike; one fresh
    process per case, timed one after another, lets it fall on whichever
    case it meets.

Time
    The median of all timed calls of a case. On CUDA every call is bracketed
    by ``torch.cuda.synchronize()``. Each explainer is built inside the call
    (hooks attached and removed, as in the peers' ``with`` blocks).

Peak memory (CPU)
    The peak of the bytes held by the CPU tensors the worker's second full
    call allocates: torch's allocation and release events recorded by
    ``torch.profiler`` (``profile_memory=True``), summed in order, the
    largest running total (oneDNN's buffers go through the same allocator);
    the CPU counterpart of CUDA's ``max_memory_allocated``; the median over
    the workers. The first full call's extra resident memory (``VmHWM`` after
    a reset to ``VmRSS``, writing ``5`` to ``/proc/self/clear_refs``) is kept
    in the JSON as ``rss_peak_mib``: it depends on how much of the call fits
    in what glibc's heap kept from the calls before, so it moves by a fifth
    between identical calls and is not compared.

Peak memory (CUDA)
    ``torch.cuda.max_memory_allocated()`` after
    ``torch.cuda.reset_peak_memory_stats()``, minus ``memory_allocated()``
    before the call.

Every row gives the time and peak, their ratios to the fastest and the
leanest peer for the same method and configuration, and the time's ratios to
the two baselines. The same run checks that netlens' maps equal captum's and
torchcam's where the definitions agree (GradCAM, Saliency, CAM), and the
markdown starts with an acceptance table. A speed claim holds for the sizes
measured. Run from the repository root::

    MPLBACKEND=Agg PYTHONPATH=src python benchmarks/bench_methods.py
    MPLBACKEND=Agg PYTHONPATH=src python benchmarks/bench_methods.py --quick
    MPLBACKEND=Agg PYTHONPATH=src python benchmarks/bench_methods.py --device cuda

The full run takes about 30 minutes on two idle CPU cores. ``--quick`` runs
batch 1 only: every method on the four models (those of many passes on
ResNet-18 only, Score-CAM and Ablation-CAM on ResNet-18 at a quarter of the
side), the many-targets case, and the throughput over 64 images, with fewer
timed calls, in about 4 minutes.
Results go to ``benchmarks/results/<device>.json`` and ``<device>.md``
(``<device>-quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from netlens_bench import runner  # benchmarks/, beside this script
from netlens_bench.cases import LIBRARIES, MATRIX
from netlens_bench.markdown import markdown
from netlens_bench.report import acceptance, add_ratios, load_average, machine

RESULTS = Path(__file__).resolve().parent / "results"
QUICK = (
    "--quick: batch 1 only (whatever --batches says): every method of one backward pass (or "
    "none) on the four models; the methods of many passes on resnet18 only, Score-CAM and "
    "Ablation-CAM on resnet18 at a quarter of the side; the many-targets case; the throughput "
    "over 64 images; 3 timed calls (1 for the methods of many passes, 2 for many targets). "
    "About 4 minutes on 2 idle CPU cores. Results to <device>-quick.json and .md."
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a positive integer, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=QUICK, allow_abbrev=False
    )
    methods = [method.name for method in MATRIX]
    parser.add_argument("--quick", action="store_true", help="a short run: see below")
    parser.add_argument(
        "--models",
        nargs="+",
        default=runner.MODELS,
        choices=runner.MODELS,
        metavar="NAME",
        help=f"torchvision models (default: {', '.join(runner.MODELS)})",
    )
    parser.add_argument("--batches", type=_positive, nargs="+", default=[1, 16])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=methods,
        choices=methods,
        metavar="NAME",
        help=f"netlens.attribution.METHODS names (default: all of {', '.join(methods)})",
    )
    parser.add_argument(
        "--libraries",
        nargs="+",
        default=LIBRARIES,
        choices=LIBRARIES,
        metavar="NAME",
        help=f"netlens and the peers to run, where installed (default: {', '.join(LIBRARIES)})",
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        default=runner.PARTS,
        choices=runner.PARTS,
        help="the matrix, the many-targets case (when resnet50 is among the models), the "
        "FeatureExtractor throughput (when resnet18 is) (default: all)",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--repeats",
        type=_positive,
        help="timed calls per process, for every case (default: by case)",
    )
    parser.add_argument(
        "--processes", type=_positive, default=1, help="fresh processes per case (default 1)"
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="time every case of a configuration in one process, in alternating rounds "
        "(peaks still from a fresh process per case)",
    )
    parser.add_argument("--side", type=_positive, default=224, help="image side in pixels (224)")
    parser.add_argument("--threads", type=_positive, default=torch.get_num_threads())
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="time with glibc's default malloc settings (page faults included)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the results")
    parser.add_argument("--list", action="store_true", help="print the cases and exit")
    return parser


def main() -> int:
    args = _parser().parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing measured (use --device cpu)", file=sys.stderr)
        return 0
    if args.quick:
        args.batches = [1]
    missing = [lib for lib in args.libraries if not runner.installed(lib)]
    if missing:
        print(f"not installed, skipped: {', '.join(missing)}", file=sys.stderr)
    jobs = runner.plan(args)
    if args.list:
        for job in jobs:
            print(f"{job.section} | {job.config.label} | {job.library}: {job.method}")
        print(f"{len(jobs)} cases", file=sys.stderr)
        return 0
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    info = machine(args.device, args.threads)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    with tempfile.TemporaryDirectory(prefix="netlens-bench-") as folder:
        args.weights = runner.save_weights(args, jobs, folder)
        rows = runner.execute(args, jobs)
        errors = runner.check_maps(args, jobs)
        throughput = runner.throughput(args)
    add_ratios(rows)
    info["load_average_at_end"] = load_average()
    result: dict[str, object] = {
        "device": args.device,
        "quick": args.quick,
        "machine": info,
        "options": options,
        "timing_method": runner.timing_method(args),
        "memory_method": runner.memory_method(args, rows),
        "cases": len(jobs),
        "skipped": missing,
        "rows": rows,
        "map_errors": errors,
        "throughput": throughput,
        "acceptance": acceptance(rows, errors, args.side, args.interleave),
        "seconds": time.perf_counter() - start,
    }
    text = markdown(result)
    print(text)
    name = args.device + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(text + "\n")
    print(f"wrote {args.out / name}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
