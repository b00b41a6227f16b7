"""Time EmbeddingProbe.knn against scikit-learn's brute-force search, and t-SNE.

A 50,000 x 512 random float32 bank answers 1,000 queries for k=10 with both
metrics. Peak resident memory above the starting point is read from
``/proc/self/status`` (``VmHWM``, reset before each measurement), since
tracemalloc does not see torch's allocator. Run::

    PYTHONPATH=src python benchmarks/bench_knn.py --json bench_knn.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _proc_memory import reset_peak, status_kib  # benchmarks/, beside this script
from sklearn.neighbors import NearestNeighbors

from netlens.embedding import EmbeddingProbe


def measure(fn: Callable[[], object], repeats: int) -> tuple[float, float | None]:
    """Median seconds over ``repeats`` runs, and peak RSS growth in MiB during them."""
    start_rss = status_kib("VmRSS")
    can_reset = reset_peak()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    peak = status_kib("VmHWM")
    grew = None if not can_reset or peak is None or start_rss is None else (peak - start_rss) / 1024
    return statistics.median(times), grew


def _probe(bank: torch.Tensor) -> EmbeddingProbe:
    probe = EmbeddingProbe(torch.nn.Identity())
    probe.features = bank
    return probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("bench_knn.json"))
    parser.add_argument("--bank", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tsne-sizes", type=int, nargs="*", default=[1_000, 5_000])
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(args.bank, args.dim, generator=generator)
    queries = torch.randn(args.queries, args.dim, generator=generator)
    probe = _probe(bank)
    full_matrix_mib = args.queries * args.bank * 4 / 2**20

    rows = []
    for metric in ("cosine", "euclidean"):
        ours, ours_mem = measure(
            lambda m=metric: probe.knn(queries, args.k, metric=m), args.repeats
        )
        one_block, one_block_mem = measure(
            lambda m=metric: probe.knn(queries, args.k, metric=m, batch_size=args.queries),
            args.repeats,
        )
        index = NearestNeighbors(n_neighbors=args.k, algorithm="brute", metric=metric)
        index.fit(bank.numpy())
        theirs, theirs_mem = measure(lambda i=index: i.kneighbors(queries.numpy()), args.repeats)
        ours_idx, _ = probe.knn(queries, args.k, metric=metric)
        _, their_idx = index.kneighbors(queries.numpy())
        agree = float((ours_idx.numpy() == their_idx).all(1).mean())
        rows.append(
            {
                "metric": metric,
                "netlens_s": ours,
                "netlens_peak_mib": ours_mem,
                "netlens_one_block_s": one_block,
                "netlens_one_block_peak_mib": one_block_mem,
                "sklearn_s": theirs,
                "sklearn_peak_mib": theirs_mem,
                "speedup": theirs / ours,
                "rows_identical": agree,
            }
        )

    tsne_rows = []
    for n in args.tsne_sizes:
        centres = torch.randn(10, 64, generator=generator) * 4
        points = centres[torch.arange(n) % 10] + torch.randn(n, 64, generator=generator)
        t0 = time.perf_counter()
        _probe(points).tsne()
        tsne_rows.append({"points": n, "dim": 64, "seconds": time.perf_counter() - t0})

    def mib(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}"

    print(
        f"kNN: bank {args.bank} x {args.dim} float32 ({args.bank * args.dim * 4 / 2**20:.0f} MiB), "
        f"{args.queries} queries, k={args.k}, median of {args.repeats}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}\n"
    )
    print(
        "| metric | netlens knn (s) | peak +MiB | one block, no chunking (s) | peak +MiB "
        "| sklearn brute (s) | peak +MiB | sklearn / netlens | same neighbours |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['metric']} | {r['netlens_s']:.3f} | {mib(r['netlens_peak_mib'])} "
            f"| {r['netlens_one_block_s']:.3f} | {mib(r['netlens_one_block_peak_mib'])} "
            f"| {r['sklearn_s']:.3f} | {mib(r['sklearn_peak_mib'])} | {r['speedup']:.1f}x "
            f"| {r['rows_identical']:.1%} |"
        )
    print(
        f"\nA full {args.queries} x {args.bank} float32 distance matrix is "
        f"{full_matrix_mib:.0f} MiB; netlens holds blocks of at most 64 MiB by default."
    )
    print("\n| t-SNE points (64-d) | seconds |")
    print("| ---: | ---: |")
    for r in tsne_rows:
        print(f"| {r['points']} | {r['seconds']:.1f} |")

    result = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "full_matrix_mib": full_matrix_mib,
        "knn": rows,
        "tsne": tsne_rows,
    }
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
