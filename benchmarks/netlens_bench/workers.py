"""What runs inside one fresh worker process: one case, or one throughput measurement."""

from __future__ import annotations

import gc
import random
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from netlens import FeatureExtractor
from netlens.errors import CAMNotApplicableError
from netlens_bench import cases, models
from netlens_bench.measure import keep_freed_memory, peak_of_call, prepare_worker, time_calls, timed
from netlens_bench.models import Config, PassCounter


def measure_case(
    method: str,
    library: str,
    config: Config,
    device: str,
    repeats: int,
    keep_heap: bool,
    threads: int,
    weights: str | None = None,
) -> dict[str, object]:
    """Peak memory and passes of the first full call, then ``repeats`` timed calls.

    The model and input are built, the case runs once on the first image
    (loads code paths and kernels; where netlens finds the method does not
    apply to the model, the case is "n/a"), the next two calls on the full
    batch give the peaks (with the default allocator settings) and the first
    of them the forward passes; they serve as the warm-up for the timed calls
    (:func:`~netlens_bench.measure.time_calls`).
    """
    prepare_worker(threads)
    case = cases.find(method, library)
    s = models.build(config, device, weights)
    try:
        case.build(s.head(1))()
    except CAMNotApplicableError as error:
        return {"status": "n/a", "note": str(error)}
    run = case.build(s)
    counter = PassCounter(s.model)
    try:
        result = peak_of_call(run, device, first_done=counter.remove)
    finally:
        counter.remove()
    result["passes"] = [counter.whole, counter.head]
    result["times_s"] = time_calls(run, device, repeats, keep_heap)
    result["status"] = "ok"
    return result


#: Seconds of rest before each timed call of :func:`time_interleaved`. A library
#: whose call ends in numpy's OpenBLAS (pytorch-grad-cam's Eigen-CAM takes an SVD)
#: leaves its threads spin-waiting for about a tenth of a second on the cores
#: torch's threads need next: without the rest, netlens' Input x Gradient measured
#: 80 ms right after pytorch-grad-cam's Eigen-CAM on ResNet-18 at batch 1, against
#: 44 ms after captum's Saliency.
SETTLE_S = 0.3
#: After the rest, one parallel operation wakes torch's own threads, which a loop
#: of calls would find awake.
_WAKE = 1 << 20


def _settle() -> None:
    """Let other threads go idle, then wake torch's thread pool."""
    time.sleep(SETTLE_S)
    torch.ones(_WAKE).add_(1).sum()


def time_interleaved(
    pairs: list[tuple[str, str]],
    config: Config,
    device: str,
    repeats: int,
    keep_heap: bool,
    threads: int,
    weights: str | None = None,
) -> dict[str, list[float]]:
    """``repeats`` rounds of one timed call of every ``(method, library)`` on one configuration.

    All the cases of a configuration in one process, on one model and input:
    each is built and run once on the first image and once on the full batch
    (warm-up), then, on the CPU, glibc keeps freed memory and each runs once
    more; then each round times one call of each case, in an order shuffled
    afresh every round (seeded by the round, so a run can be repeated), each
    after :func:`_settle`. A slowdown of the machine that lasts seconds then
    falls on every library of the configuration alike, instead of on the one
    whose calls it happens to meet; no case pays for the threads the case
    before it left spinning; and no case always follows the same one (a
    rotated order keeps every case's predecessor, and one case's Saliency on
    MobileNet-V3 read 1.8x its time in a process of its own, there only).
    Returns the times by ``"method/library"``.
    """
    prepare_worker(threads)
    s = models.build(config, device, weights)
    runs = {}
    for method, library in pairs:
        case = cases.find(method, library)
        case.build(s.head(1))()
        runs[f"{method}/{library}"] = case.build(s)
    for run in runs.values():
        run()
    if device == "cpu" and keep_heap and keep_freed_memory():
        for run in runs.values():
            run()
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in random.Random(round_).sample(names, len(names)):
            gc.collect()
            _settle()
            times[name].append(timed(runs[name], device))
    return times


def measure_throughput(
    library: str,
    images: int,
    batch: int,
    side: int,
    device: str,
    repeats: int,
    keep_heap: bool,
    threads: int,
    weights: str | None = None,
) -> dict[str, object]:
    """Passes over a DataLoader of random images: ``FeatureExtractor.extract`` or a bare loop.

    netlens: ``FeatureExtractor(resnet18, ["layer4", "avgpool"]).extract(loader)``
    (full feature maps, concatenated on the CPU); the baseline: the same
    forward passes over the same loader under ``torch.no_grad()``, outputs
    dropped. The first pass gives the peak, as for the cases.
    """
    prepare_worker(threads)
    model = models.load_model("resnet18", weights).eval().to(device)
    pixels = torch.randn(images, 3, side, side, generator=torch.Generator().manual_seed(1))
    loader = DataLoader(TensorDataset(pixels, torch.zeros(images, dtype=torch.long)), batch)

    def extract() -> object:
        extractor = FeatureExtractor(model, ["layer4", "avgpool"])
        return extractor.extract(loader, progress=False)

    def bare() -> object:
        with torch.no_grad():
            for x, _ in loader:
                model(x.to(device))

    run = extract if library == "netlens" else bare
    with torch.no_grad():
        model(pixels[:1].to(device))  # loads code paths and kernels
    gc.collect()
    result = peak_of_call(run, device)
    result["times_s"] = time_calls(run, device, repeats, keep_heap)
    result["images_per_s"] = images / statistics.median(result["times_s"])
    result["status"] = "ok"
    return result
