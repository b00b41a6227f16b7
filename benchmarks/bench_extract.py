"""Throughput of ``netlens.extract_dataset`` next to a bare loop of the same forward passes.

Both read the same map-style dataset (seeded random images made per item)
through a ``DataLoader`` with the same batch size; the bare loop runs
``model(x)`` under ``torch.no_grad()`` and keeps nothing, ``extract_dataset``
captures ``layer4`` (not reduced), converts it to the storage dtype and writes
the shards. Each is timed in the same process, alternately, best of
``--repeats``; the ratio is extract / bare. ``--ranks 2`` also times the whole
extraction under ``torchrun --nproc-per-node 2`` (gloo, CPU), process start
included, against one process started the same way.

    MPLBACKEND=Agg PYTHONPATH=src python benchmarks/bench_extract.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

from netlens import extract_dataset


class Noise(Dataset):
    def __init__(self, n: int, side: int) -> None:
        self.n, self.side = n, side

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.randn(3, self.side, self.side, generator=torch.Generator().manual_seed(i))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def bare(model: torch.nn.Module, data: Dataset, batch_size: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for x in DataLoader(data, batch_size=batch_size):
            model(x)
    return time.perf_counter() - start


def extract(model: torch.nn.Module, data: Dataset, batch_size: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        extract_dataset(model, "layer4", data, folder, batch_size=batch_size, progress=False)
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--side", type=int, default=112)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2, help="0: skip the torchrun part")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one rank of the torchrun part
        import torch.distributed as dist

        if "RANK" in os.environ:
            dist.init_process_group("gloo")
        torch.set_num_threads(int(os.environ.get("THREADS", "1")))
        extract_dataset(_model(), "layer4", Noise(args.images, args.side), args.worker[0],
                        batch_size=int(args.worker[1]), progress=False)  # fmt: skip
        return 0

    model = _model()
    print(f"resnet18 layer4, {args.images} images of {args.side} px, torch threads "
          f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| batch | bare loop (s) | extract_dataset (s) | extract / bare |")
    print("| ---: | ---: | ---: | ---: |")
    for batch in args.batches:
        data = Noise(args.images, args.side)
        extract(model, Noise(2 * batch, args.side), batch)  # warm-up
        times = {"bare": [], "extract": []}
        for _ in range(args.repeats):
            times["bare"].append(bare(model, data, batch))
            times["extract"].append(extract(model, data, batch))
        b, e = min(times["bare"]), min(times["extract"])
        print(f"| {batch} | {b:.2f} | {e:.2f} | {e / b:.3f} |")
    if args.ranks:
        batch = max(args.batches)
        print(f"\ntorchrun, batch {batch}, {args.images} images, process start included:")
        for ranks in (1, args.ranks):
            with tempfile.TemporaryDirectory() as folder:
                command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                           str(ranks), "--master-port", "29641", __file__, "--images",
                           str(args.images), "--side", str(args.side), "--worker", folder,
                           str(batch)]  # fmt: skip
                env = dict(os.environ, THREADS=str(max(1, os.cpu_count() // ranks)))
                start = time.perf_counter()
                subprocess.run(command, check=True, env=env, cwd=Path(__file__).parent)
                print(f"- {ranks} rank(s), {env['THREADS']} thread(s) each: "
                      f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
