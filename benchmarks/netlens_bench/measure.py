"""Fresh worker processes, timing, peak memory and glibc's allocator settings.

Every case runs in a process of its own, forked from a server process that
has imported torch, torchvision, netlens and the peers and run nothing else
(``multiprocessing``'s ``forkserver``): each starts with the heap of a fresh
interpreter after its imports, without paying for the imports again.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import platform
import resource
import time
import traceback
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import torch
from _proc_memory import reset_peak, status_kib  # benchmarks/, beside the script

from netlens.testing import peak_memory

Run = Callable[[], object]

BENCHMARKS = Path(__file__).resolve().parent.parent
PRELOAD = ["torch", "torchvision", "netlens", "netlens.attribution", "captum.attr"]
PRELOAD += ["pytorch_grad_cam", "torchcam.methods", "netlens_bench.workers", "netlens_bench.checks"]


class WorkerError(RuntimeError):
    """A case raised, or its process died (the message says which)."""


_context: multiprocessing.context.BaseContext | None = None


def _server() -> multiprocessing.context.BaseContext:
    global _context
    if _context is None:
        # The server and its children find this package, and tqdm bars of the
        # peers (pytorch-grad-cam's Score-CAM) stay quiet.
        path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCHMARKS), path) if p)
        os.environ.setdefault("TQDM_DISABLE", "1")
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def in_fresh_process(function: Callable[..., object], *args: object) -> object:
    """``function(*args)`` in a new process; its return value, or :class:`WorkerError`."""
    context = _server()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, function, args))
    process.start()
    send.close()
    try:
        status, value = receive.recv()
    except EOFError:
        status, value = "died", None
    process.join()
    receive.close()
    if status == "died":
        raise WorkerError(f"the worker process died (exit code {process.exitcode})")
    if status == "error":
        raise WorkerError(str(value))
    return value


def _child(send: Connection, function: Callable[..., object], args: tuple) -> None:
    try:
        send.send(("ok", function(*args)))
    except BaseException as error:  # report everything, the parent decides
        text = "".join(traceback.format_exception_only(type(error), error)).strip()
        last = traceback.extract_tb(error.__traceback__)[-1]
        send.send(("error", f"{text} ({Path(last.filename).name}:{last.lineno})"))
    finally:
        send.close()


def prepare_worker(threads: int) -> None:
    """Threads, warnings, and the garbage collector of a fresh worker.

    Everything the server imported is frozen out of the collector
    (:func:`gc.freeze`): a full collection then scans only what the case
    made, instead of the peers' whole import graph (0.2 s per collection).
    """
    gc.freeze()
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")  # captum: "did not already require gradients", ...


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(run: Run, device: str) -> float:
    """Seconds of one call; on CUDA bracketed by ``torch.cuda.synchronize()``."""
    sync(device)
    start = time.perf_counter()
    run()
    sync(device)
    return time.perf_counter() - start


def peak_of_call(
    run: Run, device: str, first_done: Callable[[], None] | None = None
) -> dict[str, object]:
    """Run the first full call (twice on the CPU): its peak extra memory (MiB), and how it was read.

    On CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, less
    what was allocated before. On the CPU ``peak_mib`` is the peak of the
    bytes held by tensors the call allocates (:func:`netlens.testing.peak_memory`,
    on a second call), and ``rss_peak_mib`` what the first call needed
    resident beyond the resident set before it: ``VmHWM`` after a reset to
    it, allocator overhead included (where the reset is impossible, the
    growth of ``ru_maxrss``, which can under-read). The resident reading
    depends on what glibc's heap kept from earlier calls: identical calls of
    Integrated Gradients on a ResNet-18 read 319, 400 and 364 MiB.
    ``first_done`` is called after the first call (e.g. to stop counting passes).
    """
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        extra = peak_memory(run, "cuda")
        if first_done is not None:
            first_done()
        return {"peak_mib": extra, "memory": "max_memory_allocated"}
    before_rss = status_kib("VmRSS")
    before_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    exact = reset_peak() and before_rss is not None
    run()
    if exact:
        rss_kib = (status_kib("VmHWM") or 0) - (before_rss or 0)
    else:
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_max
    if first_done is not None:
        first_done()
    gc.collect()
    return {
        "peak_mib": peak_memory(run),
        "memory": "allocated",
        "rss_peak_mib": rss_kib / 1024,
        "rss_memory": "VmHWM" if exact else "ru_maxrss",
    }


def keep_freed_memory() -> bool:
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


def time_calls(run: Run, device: str, repeats: int, keep_heap: bool) -> list[float]:
    """After the peak call: one more call with the heap kept (CPU), then ``repeats`` timed calls."""
    if device == "cpu" and keep_heap and keep_freed_memory():
        run()  # grows the heap to what the call needs, once
    times = []
    for _ in range(repeats):
        gc.collect()
        times.append(timed(run, device))
    return times
