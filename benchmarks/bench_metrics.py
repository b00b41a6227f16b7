"""Time of deletion and insertion next to the bare forward passes they consist of.

Deletion and insertion over ``N`` images in ``T`` steps score ``N * (T + 1)``
images: the originals and every perturbed copy. This script times
:func:`netlens.metrics.deletion` and :func:`netlens.metrics.insertion` on
ResNet-18 (random weights, eval mode) and the same number of plain batched
forward passes under ``torch.no_grad()`` (the same batch size, one batch of
images made beforehand and run again), and prints the ratio: the cost of
ranking pixels, making the perturbed batches and reading the probabilities,
on top of the passes themselves. Each figure is the median of ``--repeats`` runs after one warm-up;
the plain passes are timed again next to each metric. The ratio of CPU time
(all threads of the process) is printed beside the wall-time ratio, and
"own": the metric's time over the time its own forward passes took inside
the call (measured by hooks on the model). On a machine shared with other
work, where plain and metric runs see different loads, "own" is the figure
that holds still: the overhead of everything but the passes.

Run::

    python benchmarks/bench_metrics.py            # 100 images x 50 steps, 64 and 112 px
    python benchmarks/bench_metrics.py --sizes 64 --images 20 --repeats 1
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torchvision

from netlens.metrics import deletion, insertion
from netlens.metrics._common import batch_size_for


def plain_passes(model: torch.nn.Module, x: torch.Tensor, count: int, batch: int) -> None:
    """``count`` images through ``model``, ``batch`` at a time: one batch made once, run again."""
    images = x[torch.arange(batch) % len(x)].contiguous()
    with torch.no_grad():
        for start in range(0, count, batch):
            model(images[: min(batch, count - start)])


def timed(run, repeats: int, *, warm_up: bool = True) -> tuple[float, float]:
    """Median wall time and median CPU time of the process (all threads) over ``repeats`` runs."""
    if warm_up:
        run()  # kernels, allocator
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


class ForwardClock:
    """Wall time spent inside ``model``'s forward passes, measured by a pre- and a post-hook."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = 0.0
        self._start = 0.0
        self._handles = [
            model.register_forward_pre_hook(self._enter),
            model.register_forward_hook(self._leave),
        ]

    def _enter(self, module, args) -> None:
        self._start = time.perf_counter()

    def _leave(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--no-warm-up", action="store_true", help="time the first runs too (half the time)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    print(f"resnet18, {args.images} images x {args.steps} steps, {torch.get_num_threads()} threads")
    heads = (
        "size",
        "batch",
        "passes",
        "metric",
        "plain s",
        "metric s",
        "ratio",
        "CPU ratio",
        "own",
    )
    widths = (5, 5, 7, 10, 8, 9, 6, 9, 6)
    print(" ".join(f"{h:>{w}}" for h, w in zip(heads, widths, strict=True)))
    for size in args.sizes:
        x = torch.rand(args.images, 3, size, size)
        maps = torch.rand(args.images, size, size)
        count = args.images * (args.steps + 1)
        batch = batch_size_for(None, x, count)
        for metric in (deletion, insertion):
            # Plain passes timed next to each metric, so that both see the same machine load.
            warm = not args.no_warm_up
            plain = timed(
                functools.partial(plain_passes, model, x, count, batch), args.repeats, warm_up=warm
            )
            run = functools.partial(metric, model, x, maps, steps=args.steps)
            if warm:
                run()
            clock = ForwardClock(model)
            seconds = timed(run, args.repeats, warm_up=False)
            inside = clock.seconds / args.repeats
            clock.remove()
            row = (
                size,
                batch,
                count,
                metric.__name__,
                f"{plain[0]:.2f}",
                f"{seconds[0]:.2f}",
                f"{seconds[0] / plain[0]:.3f}",
                f"{seconds[1] / plain[1]:.3f}",
                f"{seconds[0] / inside:.3f}",
            )
            print(" ".join(f"{v:>{w}}" for v, w in zip(row, widths, strict=True)), flush=True)


if __name__ == "__main__":
    main()
