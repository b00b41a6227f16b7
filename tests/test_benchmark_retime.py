"""``benchmarks/retime.py``: configurations measured again replace the first run's, ratios anew."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def retime():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("retime", BENCHMARKS / "retime.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def _row(label: str, method: str, library: str, ms: float, mib: float = 10.0) -> dict:
    return {
        "section": "matrix",
        "label": label,
        "model": "resnet18",
        "batch": 1,
        "side": 224,
        "classes": 1,
        "method": method,
        "library": library,
        "status": "ok",
        "time_s": ms / 1000,
        "peak_mib": mib,
    }


def _result(rows: list[dict], date: str) -> dict:
    return {
        "device": "cpu",
        "quick": False,
        "machine": {"date": date, "versions": {"torch": "2.14.1"}},
        "options": {"side": 224},
        "rows": rows,
        "map_errors": [
            {"label": r["label"], "pair": "gradcam: netlens vs captum", "error": 1e-7}
            for r in rows
            if r["library"] == "captum"
        ],
    }


def test_a_configuration_measured_again_replaces_the_first_runs_and_its_ratios(retime):
    a, b = "resnet18, batch 1, 224 px", "resnet50, batch 1, 224 px"
    base = _result(
        [
            _row(a, "forward (no grad)", "baseline", 65.0),
            _row(a, "gradcam", "netlens", 68.0),
            _row(a, "gradcam", "captum", 78.0),
            _row(b, "forward (no grad)", "baseline", 60.0),
            _row(b, "gradcam", "netlens", 66.0),
            _row(b, "gradcam", "captum", 60.0),
        ],
        "first",
    )
    later = _result(
        [
            _row(a, "forward (no grad)", "baseline", 26.0),
            _row(a, "gradcam", "netlens", 26.0),
            _row(a, "gradcam", "captum", 32.5),
        ],
        "second",
    )
    kept = copy.deepcopy(base)
    result = retime.retime(base, later, "slow machine")
    assert base == kept  # the inputs are left as they were
    by = {(r["label"], r["library"], r["method"]): r for r in result["rows"]}
    assert [r["label"] for r in result["rows"]] == [a, a, a, b, b, b]  # the first run's order
    assert by[(a, "netlens", "gradcam")]["time_s"] == 0.026
    assert by[(a, "netlens", "gradcam")]["vs_fastest_peer"] == pytest.approx(0.8)
    assert by[(a, "netlens", "gradcam")]["vs_forward"] == pytest.approx(1.0)
    assert by[(b, "netlens", "gradcam")]["vs_fastest_peer"] == pytest.approx(1.1)
    assert result["retimed"] == [
        {"configurations": [f"matrix: {a}"], "date": "second", "why": "slow machine"}
    ]
    assert sorted(e["label"] for e in result["map_errors"]) == [a, b]
    from netlens_bench.markdown import header

    machine = {"cpu": "x", "logical_cpus": 2, "torch_threads": 2, "load_average_at_start": None}
    shown = dict(result, machine={**result["machine"], **machine}, cases=6, seconds=60.0)
    shown.update(skipped=[], timing_method="t", memory_method="m")
    lines = header(shown)
    assert f"- measured again in a later run (second): matrix: {a}, because slow machine" in lines


def test_results_of_other_versions_are_refused(retime):
    base = _result([_row("a", "gradcam", "netlens", 1.0)], "first")
    later = copy.deepcopy(base)
    later["machine"]["versions"] = {"torch": "2.13.0"}
    with pytest.raises(SystemExit, match="different library versions"):
        retime.retime(base, later, "why")


def test_a_slow_cell_says_in_how_many_paired_rounds_netlens_was_faster(retime):
    from netlens_bench.markdown import acceptance as table
    from netlens_bench.report import acceptance, add_ratios

    a = "resnet18, batch 1, 224 px"
    rows = [
        _row(a, "forward (no grad)", "baseline", 25.0),
        _row(a, "gradcam", "netlens", 31.0),
        _row(a, "gradcam", "captum", 30.0),
    ]
    # netlens faster in rounds 0 and 2; captum's one slow round does not move its median
    rows[1]["times_s"] = [0.029, 0.031, 0.028, 0.033, 0.032]
    rows[2]["times_s"] = [0.030, 0.030, 0.090, 0.030, 0.030]
    add_ratios(rows)
    cell = acceptance(rows, [], 224, interleaved=True)["cells"][0]
    assert cell["time_pass"] is False and cell["rounds_faster"] == [2, 5]
    assert "| 2 of 5 |" in "\n".join(table({"acceptance": {"cells": [cell], "checks": []}}))
    # times from separate processes are not paired
    assert acceptance(rows, [], 224)["cells"][0]["rounds_faster"] is None
    rows[2]["times_s"] = rows[2]["times_s"][:4]
    assert acceptance(rows, [], 224, interleaved=True)["cells"][0]["rounds_faster"] is None
