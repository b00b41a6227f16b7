"""The plan of a run (which case on which configuration) and its execution in fresh processes."""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from dataclasses import dataclass

from netlens_bench import cases, checks, models, workers
from netlens_bench.cases import BASELINES, MANY_PASSES, MATRIX, ONE_PASS, PER_CHANNEL
from netlens_bench.measure import WorkerError, in_fresh_process
from netlens_bench.models import Config

MATRIX_SECTION, MANY_SECTION = "matrix", "many targets"
PARTS = ["matrix", "many-targets", "throughput"]
MODELS = ["resnet18", "resnet50", "mobilenet_v3_large", "convnext_tiny"]
MANY_MODEL, MANY_IMAGES, MANY_CLASSES = "resnet50", 4, 5
THROUGHPUT_MODEL, THROUGHPUT_BATCH = "resnet18", 32
QUICK = "resnet18"  # --quick: the only model of the methods of many passes

#: timed calls per worker, by what runs: (full run, --quick)
REPEATS = {
    "one pass, batch 1": (21, 3),
    "one pass": (5, 3),
    MANY_PASSES: (3, 1),
    PER_CHANNEL: (3, 1),
    MANY_SECTION: (5, 2),
    "throughput": (3, 1),
}
THROUGHPUT_IMAGES = (256, 64)


@dataclass(frozen=True)
class Job:
    section: str
    method: str
    library: str
    kind: str
    settings: str
    config: Config
    repeats: int


def installed(library: str) -> bool:
    module = cases.IMPORTS.get(library)
    return module is None or importlib.util.find_spec(module) is not None


def _repeats(args: argparse.Namespace, what: str) -> int:
    if args.repeats is not None:
        return args.repeats
    return REPEATS[what][1 if args.quick else 0]


def plan(args: argparse.Namespace) -> list[Job]:
    """Every case to run, grouped by configuration: baselines first, netlens before its peers.

    ``--quick`` runs batch 1 only (the caller sets ``args.batches``), the
    methods of many passes and the per-channel ones on :data:`QUICK` only,
    and the per-channel ones at a quarter of the side.
    """
    libraries = [lib for lib in args.libraries if installed(lib)]
    groups: dict[tuple[str, Config], list[Job]] = {}

    def add(section: str, method: cases.Method, config: Config, repeats: int) -> None:
        group = groups.setdefault((section, config), [])
        if not group:  # the baselines, as often as the first method of the configuration
            for case in BASELINES:
                group.append(Job(section, case.method, case.library, ONE_PASS, "", config, repeats))
        for case in method.cases():
            if case.library in libraries:
                job = Job(
                    section,
                    method.name,
                    case.library,
                    method.kind,
                    method.settings,
                    config,
                    repeats,
                )
                group.append(job)

    methods = [method for method in MATRIX if method.name in args.methods]
    if "matrix" in args.parts:
        for model in args.models:
            for batch in args.batches:
                cell = Config(model, batch, args.side)
                for method in methods:
                    config = _matrix_config(args, method.kind, cell)
                    if config is None:
                        continue
                    what = method.kind
                    if method.kind == ONE_PASS:
                        what = "one pass, batch 1" if batch == 1 else "one pass"
                    add(MATRIX_SECTION, method, config, _repeats(args, what))
    wanted = [m for m in methods if m.name in cases.MANY_TARGETS]
    if "many-targets" in args.parts and MANY_MODEL in args.models and wanted:
        config = Config(MANY_MODEL, MANY_IMAGES, args.side, classes=MANY_CLASSES)
        for method in wanted:
            add(MANY_SECTION, method, config, _repeats(args, MANY_SECTION))
    return [job for group in groups.values() for job in group]


def _matrix_config(args: argparse.Namespace, kind: str, cell: Config) -> Config | None:
    """:func:`cases.config_for`, and with ``--quick`` the smaller selection it makes."""
    if not args.quick or kind == ONE_PASS:
        return cases.config_for(kind, cell)
    if cell.model != QUICK:
        return None
    if kind == PER_CHANNEL:
        return Config(cell.model, 1, max(cell.side // 4, 32))
    return cases.config_for(kind, cell)


def save_weights(args: argparse.Namespace, jobs: list[Job], folder: str) -> str:
    """Every model's random weights, drawn once here, loaded by the workers."""
    names = {job.config.model for job in jobs}
    if "throughput" in args.parts and THROUGHPUT_MODEL in args.models:
        names.add(THROUGHPUT_MODEL)
    for name in sorted(names):
        models.save_weights(name, folder)
    return folder


def execute(args: argparse.Namespace, jobs: list[Job]) -> list[dict[str, object]]:
    """Each job in ``args.processes`` fresh processes, one at a time, rounds in rotated order.

    With ``args.interleave`` each job's process measures the peak and the
    passes only, and the times come from one more process per configuration
    and round that alternates the calls of all its jobs
    (:func:`workers.time_interleaved`).
    """
    measured: dict[Job, list[dict[str, object]]] = {job: [] for job in jobs}
    final: dict[Job, dict[str, object]] = {}  # n/a or failed: not run again
    not_applicable: dict[tuple[str, str, Config], str] = {}
    interleave = args.interleave
    start, done, total = time.perf_counter(), 0, len(jobs) * args.processes
    for round_ in range(args.processes):
        shift = round_ % len(jobs) if jobs else 0
        for job in jobs[shift:] + jobs[:shift]:
            done += 1
            where = (job.section, job.method, job.config)
            if job in final:
                continue
            if where in not_applicable:
                final[job] = {"status": "n/a", "note": not_applicable[where]}
                continue
            try:
                result = in_fresh_process(
                    workers.measure_case,
                    job.method,
                    job.library,
                    job.config,
                    args.device,
                    0 if interleave else job.repeats,
                    not args.default_malloc and not interleave,
                    args.threads,
                    args.weights,
                )
            except WorkerError as error:
                result = {"status": "error", "note": str(error)}
            if result["status"] == "ok":
                measured[job].append(result)
            else:
                final[job] = result
                if result["status"] == "n/a" and job.library == "netlens":
                    not_applicable[where] = "netlens: " + str(result["note"])
            _progress(done, total, start, job, result)
        if interleave:
            _time_interleaved(args, jobs, measured, final, round_)
    return [_row(job, measured[job], final.get(job)) for job in jobs]


def _time_interleaved(
    args: argparse.Namespace,
    jobs: list[Job],
    measured: dict[Job, list[dict[str, object]]],
    final: dict[Job, dict[str, object]],
    round_: int,
) -> None:
    """The times of this round's runs: per configuration, one process alternating its jobs."""
    groups: dict[tuple[str, Config], list[Job]] = {}
    for job in jobs:
        if job not in final and len(measured[job]) > round_:
            groups.setdefault((job.section, job.config), []).append(job)
    for (_, config), group in groups.items():
        pairs = [(job.method, job.library) for job in group]
        try:
            times = in_fresh_process(
                workers.time_interleaved,
                pairs,
                config,
                args.device,
                max(job.repeats for job in group),
                not args.default_malloc,
                args.threads,
                args.weights,
            )
        except WorkerError as error:
            print(f"interleaved timing on {config.label} failed: {error}", file=sys.stderr)
            for job in group:
                final[job] = {"status": "error", "note": f"interleaved timing: {error}"}
            continue
        assert isinstance(times, dict)
        medians = []
        for job in group:
            these = times[f"{job.method}/{job.library}"]
            measured[job][round_]["times_s"] = these
            medians.append(f"{job.library}: {job.method} {1e3 * statistics.median(these):.1f} ms")
        print(
            f"interleaved, {config.label}: " + ", ".join(medians),
            file=sys.stderr,
            flush=True,
        )


def _progress(done: int, total: int, start: float, job: Job, result: dict[str, object]) -> None:
    if result["status"] == "ok" and not result["times_s"]:
        what = f"peak {result['peak_mib']:.0f} MiB"
    elif result["status"] == "ok":
        what = f"{1e3 * statistics.median(result['times_s']):.1f} ms, {result['peak_mib']:.0f} MiB"
    else:
        what = f"{result['status']}: {str(result.get('note', ''))[:120]}"
    elapsed = time.perf_counter() - start
    line = f"[{done}/{total} {elapsed:6.0f} s] {job.config.label} | {job.library}: {job.method}"
    print(f"{line} | {what}", file=sys.stderr, flush=True)


def _row(job: Job, runs: list[dict[str, object]], final: dict[str, object] | None) -> dict:
    row: dict[str, object] = {
        "section": job.section,
        "method": job.method,
        "library": job.library,
        "kind": job.kind,
        "settings": job.settings,
        **job.config.as_dict(),
        "label": job.config.label,
    }
    if final is not None and not runs:
        return {**row, "status": final["status"], "note": final.get("note", "")}
    times = [t for run in runs for t in run["times_s"]]
    peaks = [run["peak_mib"] for run in runs]
    if final is not None:  # measured, then failed in a later process
        row["note"] = f"{final['status']} in a later process: {final.get('note', '')}"
    return {
        **row,
        "status": "ok",
        "time_s": statistics.median(times) if times else None,
        "times_s": times,
        "peak_mib": statistics.median(peaks),
        "peaks_mib": peaks,
        "memory": runs[0]["memory"],
        **(
            {
                "rss_peak_mib": statistics.median(run["rss_peak_mib"] for run in runs),
                "rss_memory": runs[0]["rss_memory"],
            }
            if "rss_peak_mib" in runs[0]
            else {}
        ),
        "passes": runs[0]["passes"],
        "timed_calls": len(times),
    }


def check_maps(args: argparse.Namespace, jobs: list[Job]) -> list[dict[str, object]]:
    """The map comparisons on every one-pass configuration of the plan, each in a fresh process."""
    measured = [job for job in jobs if job.library != "baseline" and job.kind == ONE_PASS]
    libraries = [lib for lib in args.libraries if installed(lib)]
    rows = []
    for config in dict.fromkeys(job.config for job in measured):
        methods = sorted({job.method for job in measured if job.config == config})
        try:
            errors = in_fresh_process(
                checks.map_errors,
                config,
                args.device,
                methods,
                libraries,
                args.threads,
                args.weights,
            )
        except WorkerError as error:
            print(f"map check on {config.label} failed: {error}", file=sys.stderr)
            rows.append({"label": config.label, "pair": "all", "error": None, "note": str(error)})
            continue
        for pair, error in errors.items():  # type: ignore[union-attr]
            rows.append({"label": config.label, **config.as_dict(), "pair": pair, "error": error})
    return rows


def throughput(args: argparse.Namespace) -> list[dict[str, object]]:
    """``FeatureExtractor.extract`` and the bare loop over the same DataLoader."""
    if "throughput" not in args.parts or THROUGHPUT_MODEL not in args.models:
        return []
    if "netlens" not in args.libraries:
        return []
    images = THROUGHPUT_IMAGES[1 if args.quick else 0]
    repeats = _repeats(args, "throughput")
    rows = []
    for library in ("baseline", "netlens"):
        runs = []
        for _ in range(args.processes):
            try:
                measured = in_fresh_process(
                    workers.measure_throughput,
                    library,
                    images,
                    THROUGHPUT_BATCH,
                    args.side,
                    args.device,
                    repeats,
                    not args.default_malloc,
                    args.threads,
                    args.weights,
                )
                runs.append(measured)
            except WorkerError as error:
                print(f"throughput, {library}: {error}", file=sys.stderr)
        if not runs:
            continue
        times = [t for run in runs for t in run["times_s"]]
        seconds = statistics.median(times)
        rows.append(
            {
                "library": library,
                "model": THROUGHPUT_MODEL,
                "images": images,
                "batch": THROUGHPUT_BATCH,
                "side": args.side,
                "time_s": seconds,
                "times_s": times,
                "images_per_s": images / seconds,
                "peak_mib": statistics.median(run["peak_mib"] for run in runs),
            }
        )
        print(f"throughput, {library}: {images / seconds:.1f} images/s", file=sys.stderr)
    return rows


def timing_method(args: argparse.Namespace) -> str:
    if args.repeats is not None:
        calls = f"{args.repeats} timed call{'s' if args.repeats > 1 else ''}"
    else:
        n = {what: pair[1 if args.quick else 0] for what, pair in REPEATS.items()}
        calls = (
            f"timed calls: {n['one pass, batch 1']} at batch 1, {n['one pass']} at larger "
            f"batches, {n[MANY_PASSES]} for methods of many passes or a pass per channel, "
            f"{n[MANY_SECTION]} for many targets, {n['throughput']} passes over the loader"
        )
    processes = f"{args.processes} fresh process{'es' if args.processes > 1 else ''}"
    rotated = ", rounds in rotated order" if args.processes > 1 else ""
    if args.interleave:
        synced = (
            "; every call bracketed by torch.cuda.synchronize()" if args.device == "cuda" else ""
        )
        return (
            f"interleaved: per configuration, one process forked from a server that has only "
            f"imported the libraries builds every case on one model and input, runs each once "
            f"on the first image and once on the full batch, then glibc keeps freed memory and "
            f"each runs once more; then rounds of one timed call of every case, in an order "
            f"shuffled afresh each round, each call after a rest of {workers.SETTLE_S} s (threads "
            f"another library left spinning go idle) and one small parallel torch operation "
            f"(torch's threads awake, as in a loop of calls) ({calls}; {processes} per "
            f"configuration); median of all timed calls{synced}"
        )
    heap = (
        "default malloc settings"
        if args.default_malloc or args.device != "cpu"
        else "then glibc keeps freed memory (mmap and trim thresholds at 2 GiB) and one more call "
        "grows the heap"
    )
    sync = "; every call bracketed by torch.cuda.synchronize()" if args.device == "cuda" else ""
    return (
        f"each case in {processes} forked from a server that has only imported the libraries, "
        f"one at a time{rotated}; in each: one call on the first image, two on the full batch "
        f"(the peaks and the warm-up), {heap}; {calls}; median of all timed calls{sync}"
    )


def memory_method(args: argparse.Namespace, rows: list[dict[str, object]]) -> str:
    if args.device == "cuda":
        return (
            "torch.cuda.max_memory_allocated after reset_peak_memory_stats, less what was "
            f"allocated before the first full call; median of {args.processes} processes"
        )
    how = {row.get("rss_memory") for row in rows if row.get("rss_memory")}
    if how <= {"VmHWM"}:
        resident = "VmHWM after a reset"
    else:
        resident = "the growth of ru_maxrss, which may under-read"
    method = (
        "peak of the bytes held by the CPU tensors a full call allocates (torch's allocation "
        "events under torch.profiler, on the second full call); the first full call's extra "
        f"resident memory ({resident}) is in the JSON as rss_peak_mib"
    )
    return f"{method}, default malloc settings; median of {args.processes} processes"
