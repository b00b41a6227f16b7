"""Reading user files: images decode or fail with one clear line; state dicts never run code."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from netlens.app import files
from netlens.app.files import (
    apply_state_dict,
    load_state_dict,
    prepare_image,
    read_image,
    shown,
)
from netlens.errors import ImageFileError, StateDictError


class MarkerPayload:
    """Unpickling this creates ``path``: proof that a pickle ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def png_bytes(width=48, height=32, mode="RGB") -> bytes:
    rng = np.random.default_rng(0)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    buffer = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).convert(mode).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA"])
def test_read_image_gives_rgb_whatever_the_mode(tmp_path, mode):
    path = tmp_path / "picture.png"
    path.write_bytes(png_bytes(mode=mode))
    image = read_image(path)
    assert image.mode == "RGB" and image.size == (48, 32)


def test_prepare_image_resizes_the_short_side_and_crops_the_centre():
    image = Image.new("RGB", (400, 100), (255, 0, 0))
    x = prepare_image(image, resize=64, crop=56)
    assert x.shape == (3, 56, 56) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.allclose(x[0], torch.ones(56, 56), atol=1e-3)


@pytest.mark.parametrize(
    ("size", "words"),
    [
        ((20000, 3), "20000x3 pixels: one side is 6667 times the other, more than 100"),
        ((3, 20000), "3x20000 pixels: one side is 6667 times the other, more than 100"),
        ((101, 1), "101x1 pixels: one side is 101 times the other"),
    ],
)
def test_prepare_image_refuses_an_elongated_image_before_resizing(monkeypatch, size, words):
    import torchvision.transforms.functional as TF  # noqa: N812

    def never(*args, **kwargs):
        raise AssertionError("the image was resized")

    monkeypatch.setattr(TF, "resize", never)
    with pytest.raises(ImageFileError) as caught:
        prepare_image(Image.new("RGB", size), name="strip.png")
    assert str(caught.value).startswith(f"strip.png is {words}")


def test_prepare_image_keeps_elongated_pictures_within_the_bounds():
    x = prepare_image(Image.new("RGB", (100, 1), "white"), resize=8, crop=8)
    assert x.shape == (3, 8, 8) and float(x.min()) == 1.0


def test_prepare_image_refuses_a_resize_beyond_the_pixel_bound(monkeypatch):
    monkeypatch.setattr(files, "MAX_RESIZED_PIXELS", 1000)
    with pytest.raises(ImageFileError, match="would have 2,048 pixels, more than 1,000"):
        prepare_image(Image.new("RGB", (60, 30)), resize=32, crop=16, name="wide.png")


@pytest.mark.parametrize("pixels", [1200, 2500], ids=["over-the-limit", "over-twice-the-limit"])
def test_read_image_refuses_a_decompression_bomb_before_decoding(monkeypatch, tmp_path, pixels):
    path = tmp_path / "bomb.png"
    Image.new("L", (pixels // 10, 10)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageFileError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "bomb.png has more than 1,000 pixels" in message and "decompression bomb" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "printed"),
    [
        (os.fsdecode(b"caf\xe9.png"), r"caf\xe9.png"),
        ("café.png", "café.png"),
        ("two\nlines.png", r"two\nlines.png"),
        ("tab\there.png", r"tab\there.png"),
    ],
    ids=["not-utf8", "not-ascii", "newline", "tab"],
)
def test_shown_names_print_on_one_line_and_encode(name, printed):
    assert shown(name) == printed
    assert shown(Path("folder") / name) == f"folder/{printed}"
    shown(name).encode("utf-8")  # no lone surrogates left


def test_errors_name_a_file_that_is_not_utf8_printably(tmp_path):
    path = os.fsencode(tmp_path) + b"/caf\xe9.png"
    with pytest.raises(ImageFileError) as caught:
        read_image(os.fsdecode(path))
    assert r"caf\xe9.png" in str(caught.value)
    str(caught.value).encode("utf-8")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: None, "no such image file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(np.random.default_rng(1).bytes(600)), "not an image file"),
        (lambda p: p.write_bytes(png_bytes()[:700]), "truncated"),
        (lambda p: p.write_bytes(b""), "not an image file"),
    ],
    ids=["missing", "directory", "random-bytes", "truncated-png", "empty"],
)
def test_unreadable_images_raise_one_line_naming_the_file(tmp_path, make, words):
    path = tmp_path / "picture.png"
    make(path)
    with pytest.raises(ImageFileError) as caught:
        read_image(path)
    message = str(caught.value)
    assert words in message and "picture.png" in message and "\n" not in message


def test_state_dict_round_trips(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    state = load_state_dict(tmp_path / "weights.pt")
    assert list(state) == list(model.state_dict())
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    apply_state_dict(fresh, state)
    assert torch.equal(fresh[0].weight, model[0].weight)


SAVES = {
    "torch.save": lambda payload, path: torch.save(payload, path),
    "torch.save legacy": lambda payload, path: torch.save(
        payload, path, _use_new_zipfile_serialization=False
    ),
    "torch.save legacy protocol 4": lambda payload, path: torch.save(
        payload, path, _use_new_zipfile_serialization=False, pickle_protocol=4
    ),
    "pickle protocol 0": lambda payload, path: path.write_bytes(pickle.dumps(payload, 0)),
    "pickle protocol 2": lambda payload, path: path.write_bytes(pickle.dumps(payload, 2)),
    "pickle.dumps": lambda payload, path: path.write_bytes(pickle.dumps(payload)),
    "pickle protocol 5": lambda payload, path: path.write_bytes(pickle.dumps(payload, 5)),
}


@pytest.mark.parametrize("save", list(SAVES))
def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, save):
    marker = tmp_path / "marker"
    payload = {"weight": MarkerPayload(marker)}
    path = tmp_path / "hostile.pt"
    SAVES[save](payload, path)
    with pytest.raises(StateDictError) as caught:
        load_state_dict(path)
    message = str(caught.value)
    assert message == (
        f"{path} is not a plain state dict: it asks to import io.open, which tensors never "
        "need; refused without running anything in it"
    )
    assert not marker.exists(), "loading the file ran code from it"
    # The payload is live: an ordinary unpickler does create the marker.
    live = pickle.loads(pickle.dumps(payload))
    live["weight"].close()
    assert marker.exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (torch.zeros(3), "holds a Tensor, not a state dict"),
        ([torch.zeros(3)], "holds a list"),
        ({}, "empty mapping"),
        ({1: torch.zeros(3)}, "has the key 1"),
        ({"encoder": {"w": torch.zeros(2)}, "epoch": 3}, "looks like a checkpoint"),
        ({"w": torch.zeros(2), "epoch": 3}, "entry 'epoch' holds an int"),
    ],
    ids=["tensor", "list", "empty", "int-key", "checkpoint", "non-tensor-value"],
)
def test_files_that_are_not_state_dicts_are_named_as_such(tmp_path, content, words):
    path = tmp_path / "weights.pt"
    torch.save(content, path)
    with pytest.raises(StateDictError, match=words):
        load_state_dict(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such weights file"),
        (b"", "is empty"),
        (b"PK\x03\x04 not really a zip archive", "not a PyTorch weights file"),
        (np.random.default_rng(2).bytes(300), "not a PyTorch weights file"),
        (pickle.dumps({"w": [1.0, 2.0]}), "not a PyTorch weights file"),
    ],
    ids=["missing", "empty", "broken-zip", "random-bytes", "harmless-pickle"],
)
def test_unreadable_weight_files_raise_one_line(tmp_path, content, words):
    path = tmp_path / "weights.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(StateDictError) as caught:
        load_state_dict(path)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_apply_state_dict_names_shape_mismatches_missing_and_unexpected_keys():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    state = {"0.weight": torch.zeros(3, 5), "0.bias": torch.zeros(3), "2.weight": torch.zeros(1)}
    with pytest.raises(StateDictError) as caught:
        apply_state_dict(model, state, source="w.pt")
    message = str(caught.value)
    assert message.startswith("w.pt does not fit Sequential")
    assert "0.weight: (3, 5) given, (3, 4) expected" in message
    assert "'1.weight'" in message and "'2.weight'" in message and "\n" not in message
    assert torch.count_nonzero(model[0].bias) > 0, "a failed load must not change the model"


def test_apply_state_dict_spots_a_data_parallel_prefix():
    model = nn.Linear(2, 2)
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(StateDictError, match="start with 'module.'"):
        apply_state_dict(model, state)
