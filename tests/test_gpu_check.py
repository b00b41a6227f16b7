"""``scripts/gpu-check``: the GPU check runs where there is no GPU too, and says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check"


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    import netlens

    package_root = str(Path(netlens.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHON=sys.executable)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def test_gpu_check_without_a_folder_prints_its_usage():
    result = _run()
    assert result.returncode == 2
    assert "usage: scripts/gpu-check OUTDIR" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script measures")
def test_gpu_check_on_the_cpu_skips_the_cuda_parts_and_checks_the_tests(tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    pytest.importorskip("torchcam")
    result = _run(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "summary.txt").read_text()
    assert "no CUDA device here" in summary
    assert not (tmp_path / "tests.log").exists()  # the CUDA run does not start
    on_cpu = (tmp_path / "tests-on-cpu.log").read_text().splitlines()[-1]
    assert " passed" in on_cpu and "failed" not in on_cpu
    assert not (tmp_path / "bench.log").exists()  # the benchmark does not start
    assert not (tmp_path / "cuda.md").exists()
    assert "CUDA available: False" in (tmp_path / "device.txt").read_text()
