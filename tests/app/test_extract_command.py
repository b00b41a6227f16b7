"""``netlens extract``: pictures to features on disk, in one process and under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import netlens
from netlens import FeatureExtractor, load_features
from netlens.app.cli import main
from netlens.app.extract_command import ImageFiles


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> Path:
    """Five pictures of two sizes in two class folders."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for i, (kind, size) in enumerate(
        [("cat", 80), ("dog", 70), ("cat", 64), ("dog", 90), ("cat", 72)]
    ):
        (root / kind).mkdir(exist_ok=True)
        pixels = (rng.random((size, size + 10, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / kind / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), path)
    return path


def _arguments(pictures: Path, weights: Path, out: Path) -> list[str]:
    return ["extract", "--arch", "resnet18", "--weights", str(weights), "--images", str(pictures),
            "--layers", "layer4", "avgpool", "--out", str(out), "--batch-size", "2",
            "--dtype", "float32"]  # fmt: skip


def test_extract_writes_the_features_and_labels_of_every_picture(
    capsys, pictures, weights, tmp_path
):
    assert main(_arguments(pictures, weights, tmp_path / "f")) == 0
    out = capsys.readouterr().out
    assert "layer4: (5, 512, 7, 7) float32" in out and "labels of 2 classes" in out
    feats = load_features(tmp_path / "f", verify=True)
    data = ImageFiles(pictures, resize=256, crop=224, mean=[0.485, 0.456, 0.406],
                      std=[0.229, 0.224, 0.225])  # fmt: skip
    assert feats.labels.tolist() == [0, 0, 0, 1, 1]  # sorted by path: cat/0, cat/2, ..., dog/3
    model = torchvision.models.resnet18(num_classes=2)
    model.load_state_dict(torch.load(weights))
    expected = FeatureExtractor(model.eval(), ["layer4", "avgpool"])(
        torch.stack([data[i][0] for i in range(5)])
    )
    for layer in ("layer4", "avgpool"):
        np.testing.assert_allclose(np.asarray(feats[layer]), expected[layer].numpy(), atol=1e-5)


def test_extract_of_a_folder_without_pictures_is_one_clear_line(capsys, tmp_path, weights):
    (tmp_path / "empty").mkdir()
    code = main(_arguments(tmp_path / "empty", weights, tmp_path / "f"))
    assert code == 1 and "holds no picture files" in capsys.readouterr().err


@pytest.mark.slow
def test_extract_under_torchrun_writes_what_one_process_writes(pictures, weights, tmp_path):
    package_root = str(Path(netlens.__file__).resolve().parent.parent)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", "29651", "-m", "netlens"]  # fmt: skip
    result = subprocess.run([*torchrun, *_arguments(pictures, weights, tmp_path / "two")],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs (OMP_NUM_THREADS=1)
    try:
        assert main(_arguments(pictures, weights, tmp_path / "one")) == 0
    finally:
        torch.set_num_threads(threads)
    one, two = load_features(tmp_path / "one"), load_features(tmp_path / "two", verify=True)
    for layer in ("layer4", "avgpool"):
        assert np.asarray(one[layer]).tobytes() == np.asarray(two[layer]).tobytes()
    assert one.labels.tolist() == two.labels.tolist()
