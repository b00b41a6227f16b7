"""Synthetic scenes, the scene network and dataset dissection: speed, evidence, memory.

Three parts, each printed as it finishes (``--json`` also writes them):

``scenes``
    Scenes painted per second at 64 px (one thread and the default threads).
``evidence``
    For each seed: train the scene network (wall and CPU time, validation
    accuracy; with one thread the CPU time is the wall time on an idle core), then
    dissect it and the same network before training on held-out scenes, at
    Bau et al.'s quantile (0.005) and at each concept's pixel share, for
    ``layer3`` and ``layer4``; the best unit's IoU for sky and building, and
    its ceiling ``min(a, m) / max(a, m)``. The summary gives, per case, the
    trained and untrained range over the seeds and whether the trained
    network's worst seed beats the control's best.
``memory``
    Peak resident memory of a fresh process that paints 10,000 scenes at 64 px
    and dissects torchvision's ResNet-18 ``layer4`` on them (``VmHWM``, with
    glibc's mmap threshold at 64 KiB so that freed memory is returned; the
    scenes themselves take about 0.95 GB of it).

Run::

    PYTHONPATH=src python benchmarks/bench_dissect.py --part all --json bench_dissect.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from netlens.datasets import scenes
from netlens.dissect import dissect
from netlens.models.scenes import scene_network, train_scene_classifier

CONCEPTS = ("sky", "building")
LAYERS = ("layer3", "layer4")


def part_scenes() -> dict[str, float]:
    out = {}
    threads = torch.get_num_threads()
    for label, count in (("1 thread", 1), (f"{threads} threads", threads)):
        torch.set_num_threads(count)
        scenes(252)  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        scenes(4032, seed=1)
        out[label] = 4032 / (time.perf_counter() - start)
        out[f"{label}, per CPU second"] = 4032 / (time.process_time() - cpu)
        print(
            f"scenes at 64 px, {label}: {out[label]:.0f} per second "
            f"({out[f'{label}, per CPU second']:.0f} per second of CPU time)",
            flush=True,
        )
    torch.set_num_threads(threads)
    return out


def part_evidence(seeds: list[int], held_out: int, threads: int) -> dict[str, object]:
    torch.set_num_threads(threads)
    data = scenes(held_out, seed=1)
    shares = data.fractions()
    runs = []
    for seed in seeds:
        cpu = time.process_time()
        trained = train_scene_classifier(seed=seed, progress=False)
        cpu = time.process_time() - cpu
        control = scene_network(seed=seed)
        run: dict[str, object] = {
            "seed": seed,
            "train_seconds": trained.seconds,
            "train_cpu_seconds": cpu,
            "val_accuracy": trained.val_accuracy,
        }
        print(
            f"seed {seed}: trained in {trained.seconds:.0f} s ({cpu:.0f} s of CPU time), "
            f"validation accuracy {trained.val_accuracy:.3f}",
            flush=True,
        )
        for layer in LAYERS:
            for quantile_name in ("0.005", "share"):
                for concept in CONCEPTS:
                    q = 0.005 if quantile_name == "0.005" else shares[concept]
                    for name, net in (("trained", trained.model), ("untrained", control)):
                        found = dissect(
                            net, layer, data.images, data.masks, quantile=q, progress=False
                        )
                        unit, iou = found.top(concept, 1)[0]
                        column = found.concepts.index(concept)
                        key = f"{layer} {concept} q={quantile_name} {name}"
                        run[key] = {
                            "unit": unit,
                            "iou": iou,
                            "ceiling": float(found.ceiling[unit, column]),
                            "q": q,
                        }
                        print(
                            f"  {key}: unit {unit} IoU {iou:.4f} "
                            f"(ceiling {float(found.ceiling[unit, column]):.4f})",
                            flush=True,
                        )
        runs.append(run)
    summary = {}
    for layer in LAYERS:
        for quantile_name in ("0.005", "share"):
            for concept in CONCEPTS:
                base = f"{layer} {concept} q={quantile_name}"
                ours = [r[f"{base} trained"]["iou"] for r in runs]
                theirs = [r[f"{base} untrained"]["iou"] for r in runs]
                summary[base] = {
                    "trained": [min(ours), max(ours)],
                    "untrained": [min(theirs), max(theirs)],
                    "holds": min(ours) > max(theirs),
                }
                print(
                    f"{base}: trained {min(ours):.4f}-{max(ours):.4f}, untrained "
                    f"{min(theirs):.4f}-{max(theirs):.4f}: "
                    f"{'holds' if min(ours) > max(theirs) else 'does not hold'}",
                    flush=True,
                )
    return {"shares": shares, "runs": runs, "summary": summary}


MEMORY = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch, torchvision
    from netlens.datasets import scenes
    from netlens.dissect import dissect

    def kib(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])

    torch.set_num_threads(int(sys.argv[1]))
    data = scenes(10_000, size=64, seed=0)
    after_data = kib("VmRSS")
    model = torchvision.models.resnet18().eval()
    start = time.perf_counter()
    found = dissect(model, "layer4", data.images, data.masks, batch_size=100, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": kib("VmHWM") / 1024,
                      "scenes_mib": after_data / 1024, "units": found.units}))
    """
)


def part_memory(threads: int) -> dict[str, float]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        # freed blocks over 64 KiB go back to the system, so the peak reads live memory
        # (glibc otherwise keeps up to 32 MiB blocks of the scenes' painting in its heap)
        "MALLOC_MMAP_THRESHOLD_": "65536",
    }
    done = subprocess.run(
        [sys.executable, "-c", MEMORY, str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"10,000 scenes, resnet18 layer4: peak {result['peak_mib']:.0f} MiB "
        f"(resident after painting the scenes {result['scenes_mib']:.0f} MiB), "
        f"dissection {result['seconds']:.0f} s",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["scenes", "evidence", "memory", "all"], default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--held-out", type=int, default=600)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
    }
    if args.part in ("scenes", "all"):
        results["scenes_per_second"] = part_scenes()
    if args.part in ("evidence", "all"):
        results["evidence"] = part_evidence(args.seeds, args.held_out, args.threads)
    if args.part in ("memory", "all"):
        results["memory"] = part_memory(args.threads)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
