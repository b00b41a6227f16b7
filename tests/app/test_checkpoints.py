"""`netlens explain` on course checkpoints: other class counts, wrapped state dicts, class names."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from netlens.app import cli
from netlens.app.cli import main
from netlens.app.files import load_checkpoint, read_class_names
from netlens.errors import InputFileError, StateDictError
from netlens.explanation import imagenet_classes

PLACES = 365


def call(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([os.fsdecode(a) if isinstance(a, os.PathLike) else str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("picture") / "scene.png"
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((80, 100, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> tuple[torch.nn.Module, dict[str, Path]]:
    """A 365-class resnet18 saved three ways, and a class-names file."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=PLACES).eval()
    folder = tmp_path_factory.mktemp("places")
    state = model.state_dict()
    files = {
        "plain": folder / "plain.pt",
        "checkpoint": folder / "resnet18_places365.pth.tar",
        "classes": folder / "categories.txt",
    }
    torch.save(state, files["plain"])
    wrapped = {f"module.{k}": v for k, v in state.items()}
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": wrapped}, files["checkpoint"])
    names = [f"/s/scene_{i:03d} {i}" for i in range(PLACES)]
    files["classes"].write_text("\n".join(names) + "\n")
    return model, files


@pytest.fixture
def small(monkeypatch):
    """Images prepared at 64 px, so that the tests stay quick (the pipeline is the same)."""
    preprocessing = cli._preprocessing
    monkeypatch.setattr(cli, "_preprocessing", lambda arch: (72, 64, *preprocessing(arch)[2:]))


def top5(stdout: str) -> list[tuple[str, float]]:
    rows = re.findall(r"^ +\d\. (.+?) +([0-9.]+)$", stdout, flags=re.MULTILINE)
    return [(name, float(p)) for name, p in rows]


def expected_top5(model: torch.nn.Module, picture: Path) -> list[int]:
    """The top-5 classes computed here, from the same preparation as the command's."""
    from netlens.app.files import prepare_image, read_image

    resize, crop, mean, std = cli._preprocessing("resnet18")
    x = prepare_image(read_image(picture), resize=resize, crop=crop)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        return model(x[None]).softmax(1)[0].topk(5).indices.tolist()


def test_a_365_class_state_dict_is_read_with_its_own_head(capsys, tmp_path, small, picture, places):
    model, files = places
    out = tmp_path / "plain.png"
    code, stdout, err = call(
        capsys, "explain", picture, "--arch", "resnet18", "--weights", files["plain"], "--out", out
    )
    assert code == 0, err
    assert f"{PLACES} classes, read off its classification head" in stdout
    ranked = top5(stdout)
    assert [name for name, _ in ranked] == [f"class {i}" for i in expected_top5(model, picture)]
    assert out.exists()


def test_a_wrapped_checkpoint_says_what_was_taken_and_names_the_classes(
    capsys, tmp_path, small, picture, places
):
    model, files = places
    out = tmp_path / "named.png"
    args = ["--arch", "resnet18", "--weights", files["checkpoint"], "--classes", files["classes"]]
    code, stdout, err = call(capsys, "explain", picture, *args, "--out", out)
    assert code == 0, err
    assert "took the 'state_dict' entry of a checkpoint" in stdout
    assert "stripped the prefix 'module.' from 122 names" in stdout
    names = [name for name, _ in top5(stdout)]
    assert names == [f"/s/scene_{i:03d}" for i in expected_top5(model, picture)]
    first = expected_top5(model, picture)[0]
    assert (
        stdout.strip()
        .splitlines()[-1]
        .endswith(f"Grad-CAM at layer4 of {names[0]} (class {first})")
    )


def drawn_figures(monkeypatch) -> list:
    """The figures the command draws, kept for a look at their artists."""
    figures = []
    draw = cli._draw

    def keep(picture, explained, arch):
        figures.append(draw(picture, explained, arch))
        return figures[-1]

    monkeypatch.setattr(cli, "_draw", keep)
    return figures


def test_topk_draws_one_panel_per_class_titled_by_name(
    capsys, monkeypatch, tmp_path, small, picture, places
):
    _, files = places
    out = tmp_path / "top5.png"
    figures = drawn_figures(monkeypatch)
    args = ["--weights", files["checkpoint"], "--classes", files["classes"], "--topk", "5"]
    code, stdout, err = call(capsys, "explain", picture, "--arch", "resnet18", *args, "--out", out)
    assert code == 0, err
    (figure,) = figures
    names = [name for name, _ in top5(stdout)]
    titles = [ax.get_title() for ax in figure.axes]
    assert len(figure.axes) == 6 and titles[0] == "image 0"
    assert [t.split("\n")[0] for t in titles[1:]] == names
    assert "Grad-CAM of resnet18 at layer4: top-5" in figure.get_suptitle()
    with Image.open(out) as image:
        assert image.size[0] > 2 * image.size[1]  # one row, not a strip


def test_one_map_is_titled_by_method_layer_and_class(
    capsys, monkeypatch, tmp_path, small, picture, places
):
    _, files = places
    figures = drawn_figures(monkeypatch)
    args = ["--weights", files["checkpoint"], "--classes", files["classes"], "--target", 42]
    out = tmp_path / "t.png"
    code, _, err = call(capsys, "explain", picture, "--arch", "resnet18", *args, "--out", out)
    assert code == 0, err
    title = figures[0].axes[0].get_title()
    assert title.startswith("Grad-CAM of resnet18 at layer4\n/s/scene_042 (p = ")


def test_no_crop_keeps_the_whole_picture(capsys, monkeypatch, tmp_path, small, picture, places):
    from netlens import explanation

    _, files = places
    shapes = []
    original = explanation.explain

    def spy(model, x, *args, **kwargs):
        shapes.append(tuple(x.shape))
        return original(model, x, *args, **kwargs)

    monkeypatch.setattr(explanation, "explain", spy)
    for extra in ([], ["--no-crop"]):
        out = tmp_path / f"crop{len(extra)}.png"
        args = ["--arch", "resnet18", "--weights", files["plain"], "--out", out, *extra]
        code, _, err = call(capsys, "explain", picture, *args)
        assert code == 0, err
    # 100 x 80 px: cropped to 64 x 64, or resized to a short side of 64 and kept (80 x 64).
    assert shapes == [(1, 3, 64, 64), (1, 3, 64, 80)]


def test_help_says_how_the_image_is_prepared_and_where_the_file_goes(capsys):
    code, stdout, _ = call(capsys, "explain", "--help")
    assert code == 0
    text = " ".join(stdout.split())
    for words in (
        "centre square cut out (224 px)",
        "--no-crop",
        "IMAGE-STEM_METHOD.png",
        "--classes",
    ):
        assert words in text, words


def test_a_1000_class_file_gets_imagenet_names(capsys, tmp_path, small, picture):
    torch.manual_seed(1)
    weights = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    code, stdout, err = call(
        capsys,
        "explain",
        picture,
        "--arch",
        "resnet18",
        "--weights",
        weights,
        "--out",
        tmp_path / "i.png",
    )
    assert code == 0, err
    names = set(imagenet_classes())
    assert len(names) > 990 and all(name in names for name, _ in top5(stdout))


@pytest.mark.parametrize(
    ("lines", "words"),
    [(["a", "b"], "names 2 classes, but resnet18"), (["a", "", "b"], "empty line 2")],
    ids=["too-few", "blank"],
)
def test_wrong_class_files_are_one_clear_line(
    capsys, tmp_path, small, picture, places, lines, words
):
    _, files = places
    names = tmp_path / "names.txt"
    names.write_text("\n".join(lines))
    code, stdout, err = call(
        capsys, "explain", picture, "--arch", "resnet18", "--weights", files["plain"],
        "--classes", names, "--out", tmp_path / "x.png",
    )  # fmt: skip
    assert code == 1
    assert (
        err.startswith("netlens: error: ") and words in err and len(err.strip().splitlines()) == 1
    )


def test_target_and_topk_together_are_a_usage_error(capsys, picture):
    code, _, err = call(
        capsys, "explain", picture, "--arch", "resnet18", "--target", 3, "--topk", 2
    )
    assert code == 2 and "--target" in err


def test_checkpoint_reading_rules(tmp_path):
    linear = torch.nn.Linear(3, 2).state_dict()
    path = tmp_path / "c.pt"
    compiled = {f"module._orig_mod.{k}": v for k, v in linear.items()}
    torch.save({"model_state_dict": compiled, "optimizer": {"state": {}}}, path)
    read = load_checkpoint(path)
    assert sorted(read.state) == ["bias", "weight"]
    assert read.notes == (
        "took the 'model_state_dict' entry of a checkpoint",
        "stripped the prefix 'module.' from 2 names",
        "stripped the prefix '_orig_mod.' from 2 names",
    )
    assert torch.equal(read.state["weight"], linear["weight"])
    # A plain state dict is taken as it is, with nothing to say.
    torch.save(linear, path)
    assert load_checkpoint(path).notes == ()
    # A checkpoint without a known entry is refused with the entry to save.
    torch.save({"encoder": linear, "epoch": 1}, path)
    with pytest.raises(StateDictError, match=r"checkpoint\['encoder'\]"):
        load_checkpoint(path)


def test_class_names_files(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("cat\ndog\n\n")
    assert read_class_names(path) == ["cat", "dog"]
    path.write_text("tabby cat\nbig dog\n")  # spaces are part of a name unless they index
    assert read_class_names(path) == ["tabby cat", "big dog"]
    path.write_text("")
    with pytest.raises(InputFileError, match="no class names"):
        read_class_names(path)
