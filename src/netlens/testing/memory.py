"""The peak memory a call's tensors hold, on the CPU as on CUDA."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

import torch

__all__ = ["peak_memory"]


def peak_memory(run: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """Run ``run()`` once: the peak of the bytes its new tensors held at one time, in MiB.

    On CUDA, ``torch.cuda.max_memory_allocated`` after a reset, less what was
    allocated before the call. On the CPU, every allocation and release of
    torch's CPU allocator during the call (oneDNN's buffers included, which
    PyTorch routes through it) as :mod:`torch.profiler` records them with
    ``profile_memory=True``, summed in the order they happened; the largest
    running total is the peak. Unlike the resident set of the process it
    depends neither on what glibc's heap kept from earlier calls nor on the
    process: repeated calls of the same computation read the same.

    Examples
    --------
    >>> import torch
    >>> from netlens.testing import peak_memory
    >>> round(peak_memory(lambda: torch.empty(2**18).add_(1) * 2), 1)  # two 1 MiB tensors
    2.0
    """
    gc.collect()
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if device.type != "cpu":
        raise ValueError(f"peak_memory reads CPU and CUDA memory, not {device.type!r}")
    from torch.profiler import ProfilerActivity, profile

    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # no start / stop lines on stderr
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    events = [e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cpu = torch._C._autograd.DeviceType.CPU
    total = peak = 0
    for event in events:
        if event.device_type() == cpu:
            total += event.nbytes()
            peak = max(peak, total)
    return peak / 2**20
