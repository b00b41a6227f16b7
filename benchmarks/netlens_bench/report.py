"""Ratios, the acceptance table, the machine description, markdown and json."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from netlens_bench.cases import FORWARD, FORWARD_BACKWARD
from netlens_bench.checks import BOUND
from netlens_bench.models import Config

PEERLESS = ("netlens", "baseline")

#: Peaks closer than this count as equal, and none is divided by a smaller one: below it the
#: reading shows how much of the heap a call happened to reuse rather than what it needs.
RESOLUTION_MIB = 1.0

#: (check, section, method, configuration, "time" or "peak", reference library, bound)
CHECKS = [
    ("GradCAM peak / captum", "matrix", "gradcam", ("resnet50", 16), "peak", "captum", 0.35),
    ("Saliency peak / captum", "matrix", "saliency", ("resnet50", 16), "peak", "captum", 0.6),
    ("GradCAM time / captum", "matrix", "gradcam", ("resnet18", 1), "time", "captum", 0.9),
    ("Saliency time / captum", "matrix", "saliency", ("resnet18", 1), "time", "captum", 1.0),
    ("GradCAM time / captum", "many targets", "gradcam", ("resnet50", 4), "time", "captum", 0.5),
    (
        "GradCAM time / bare forward of the images",
        "many targets",
        "gradcam",
        ("resnet50", 4),
        "time",
        "baseline",
        1.3,
    ),
]


def _same(a: dict, b: dict) -> bool:
    return (a["section"], a["label"]) == (b["section"], b["label"])


def add_ratios(rows: list[dict]) -> None:
    """To the fastest / leanest peer of the same method and configuration, and to the baselines."""
    done = [r for r in rows if r["status"] == "ok"]
    for row in done:
        peers = [
            r
            for r in done
            if _same(r, row) and r["method"] == row["method"] and r["library"] not in PEERLESS
        ]
        if peers:
            fastest = min(peers, key=lambda r: r["time_s"])
            leanest = min(peers, key=lambda r: r["peak_mib"])
            row["fastest_peer"], row["leanest_peer"] = fastest["library"], leanest["library"]
            row["vs_fastest_peer"] = row["time_s"] / fastest["time_s"]
            row["vs_leanest_peer"] = _ratio(row["peak_mib"], leanest["peak_mib"], RESOLUTION_MIB)
        for name, case in (("vs_forward", FORWARD), ("vs_forward_backward", FORWARD_BACKWARD)):
            base = [r for r in done if _same(r, row) and r["method"] == case.method]
            if base:
                row[name] = row["time_s"] / base[0]["time_s"]


def _ratio(value: float, reference: float, least: float = 0.0) -> float | None:
    return value / reference if reference > least else None


def rounds_faster(ours: dict, theirs: dict, interleaved: bool) -> list[int] | None:
    """In how many rounds netlens' call was the faster of the two, of how many.

    Interleaved timing runs one call of every case per round, so the i-th
    times of two cases were taken seconds apart, under the same machine
    load; the count says whether a ratio near 1 is a difference or a tie
    (about half the rounds each way). ``None`` where the times are not
    paired (separate processes) or the counts differ.
    """
    a, b = ours.get("times_s") or [], theirs.get("times_s") or []
    if not interleaved or not a or len(a) != len(b):
        return None
    return [sum(x < y for x, y in zip(a, b, strict=True)), len(a)]


def acceptance(
    rows: list[dict], errors: list[dict], side: int, interleaved: bool = False
) -> dict[str, list[dict]]:
    """Every matrix cell against its peers, the stated bounds, the map errors."""
    done = [r for r in rows if r["status"] == "ok"]
    cells = []
    for row in done:
        if row["section"] != "matrix" or row["library"] != "netlens" or "fastest_peer" not in row:
            continue
        peers = [r for r in done if _same(r, row) and r["method"] == row["method"]]
        leanest = min(r["peak_mib"] for r in peers if r["library"] not in PEERLESS)
        fastest = next(r for r in peers if r["library"] == row["fastest_peer"])
        cells.append(
            {
                "method": row["method"],
                "label": row["label"],
                "vs_fastest_peer": row["vs_fastest_peer"],
                "fastest_peer": row["fastest_peer"],
                "rounds_faster": rounds_faster(row, fastest, interleaved),
                "time_pass": row["vs_fastest_peer"] <= 1.0,
                "vs_leanest_peer": row["vs_leanest_peer"],
                "leanest_peer": row["leanest_peer"],
                "peak_mib": row["peak_mib"],
                "leanest_peak_mib": leanest,
                "peak_pass": row["peak_mib"] <= leanest + RESOLUTION_MIB,
            }
        )
    checks = []
    for check, section, method, (model, batch), what, library, bound in CHECKS:
        label = Config(model, batch, side, 5 if section == "many targets" else 1).label
        ours = _find(done, section, label, method, "netlens")
        reference = (
            _find(done, section, label, FORWARD.method, "baseline")
            if library == "baseline"
            else _find(done, section, label, method, library)
        )
        if ours is None or reference is None:
            continue
        key = "time_s" if what == "time" else "peak_mib"
        ratio = _ratio(ours[key], reference[key], RESOLUTION_MIB if what == "peak" else 0.0)
        passed = ours[key] <= bound * reference[key]
        checks.append(
            {"check": f"{check}, {label}", "measured": ratio, "bound": bound, "pass": passed}
        )
    compared = [e for e in errors if e["error"] is not None]
    if compared:
        worst = max(compared, key=lambda e: e["error"])
        failed = any(e["error"] is None for e in errors)
        checks.append(
            {
                "check": f"maps equal to the peer's: the largest of {len(compared)} max relative "
                f"errors ({worst['pair']}, {worst['label']})"
                + ("; a comparison failed" if failed else ""),
                "measured": worst["error"],
                "bound": BOUND,
                "pass": worst["error"] <= BOUND and not failed,
            }
        )
    return {"cells": cells, "checks": checks}


def _find(rows: list[dict], section: str, label: str, method: str, library: str) -> dict | None:
    for row in rows:
        if (row["section"], row["label"], row["method"], row["library"]) == (
            section,
            label,
            method,
            library,
        ):
            return row
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the machine was."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine(device: str, threads: int) -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for package in ("torchvision", "netlens", "captum", "grad-cam", "torchcam"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    info: dict[str, object] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads,
        "os": platform.platform(),
        "versions": versions,
        "load_average_at_start": load_average(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info
