import argparse
import html
import re

import pytest
import torch
import torchvision
from PIL import Image

from netlens.app.dissect_report import FILES, add_dissect_parser, dissect_main, load_folder
from netlens.errors import InputFileError


def parse(argv):
    parser = argparse.ArgumentParser()
    common = argparse.ArgumentParser(add_help=False)
    add_dissect_parser(parser.add_subparsers(dest="command"), common)
    return parser.parse_args(["dissect", *argv])


@pytest.mark.slow
def test_scene_report_is_written(tmp_path, capsys):
    out = tmp_path / "report"
    (tmp_path / "report").mkdir()
    (out / "notes.txt").write_text("mine")
    assert dissect_main(parse(["--out", str(out), "--quick"])) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*FILES, "notes.txt"])
    page = (out / "index.html").read_text(encoding="utf-8")
    for name in ("concepts.png", "samples.png", "units.csv"):
        assert name in page
    # every unit of layer4 (width 8: 64 units) has a row in units.csv
    rows = (out / "units.csv").read_text().splitlines()
    assert rows[0].startswith("unit,concept,iou") and len(rows) == 65
    printed = capsys.readouterr().out
    assert re.search(r"sky: quantile 0.005: unit \d+ IoU [\d.]+ \(untrained best [\d.]+\)", printed)
    assert "building" in printed and "index: " in printed
    assert torch.get_num_threads() >= 1


def write_folder(root, count=4, size=24):
    (root / "images").mkdir(parents=True)
    for concept in ("sky", "ground"):
        (root / "masks" / concept).mkdir(parents=True)
    (root / "masks" / "ground" / "notes.txt").write_text("not a mask: ignored")
    for i in range(count):
        top = 6 + 2 * i
        picture = Image.new("RGB", (size, size), (30, 120, 30))
        picture.paste((120, 160, 250), (0, 0, size, top))
        picture.save(root / "images" / f"scene{i}.png")
        sky = Image.new("L", (size, size), 0)
        sky.paste(255, (0, 0, size, top))
        sky.save(root / "masks" / "sky" / f"scene{i}.png")
        ground = Image.new("L", (size, size), 255)
        ground.paste(0, (0, 0, size, top))
        ground.save(root / "masks" / "ground" / f"scene{i}.png")


def test_folder_is_read_with_its_masks(tmp_path):
    write_folder(tmp_path)
    images, masks = load_folder(tmp_path, 48)
    assert images.shape == (4, 3, 48, 48) and sorted(masks) == ["ground", "sky"]
    # the sky mask covers the top rows, scaled by two; the two masks partition each image
    assert bool(masks["sky"][0, :12].all()) and not bool(masks["sky"][0, 12:].any())
    assert bool((masks["sky"] ^ masks["ground"]).all())
    assert float(images[0, 2, 0, 0]) == pytest.approx(250 / 255, abs=1e-6)


def test_folder_problems_are_named(tmp_path):
    with pytest.raises(InputFileError, match="images/ and masks/"):
        load_folder(tmp_path, 32)
    write_folder(tmp_path)
    Image.new("L", (8, 8)).save(tmp_path / "masks" / "sky" / "stray.png")
    with pytest.raises(InputFileError, match="names no picture"):
        load_folder(tmp_path, 32)


@pytest.mark.slow
def test_architecture_on_a_folder(tmp_path, capsys):
    data = tmp_path / "data"
    write_folder(data)
    weights = tmp_path / "weights.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    out = tmp_path / "out"
    args = parse(
        [
            "--out",
            str(out),
            "--arch",
            "resnet18",
            "--weights",
            str(weights),
            "--data",
            str(data),
            "--input-size",
            "64",
            "--quantile",
            "0.2",
        ]
    )
    assert dissect_main(args) == 0
    page = html.unescape((out / "index.html").read_text(encoding="utf-8"))
    assert "resnet18" in page and "weights.pt" in page and "layer4" in page
    assert len((out / "units.csv").read_text().splitlines()) == 513
    assert "sky: quantile 0.2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--data", "x"], "go with --arch"),
        (["--arch", "resnet18"], "needs --data"),
    ],
)
def test_options_that_do_not_go_together(tmp_path, argv, words):
    with pytest.raises(ValueError, match=words):
        dissect_main(parse(["--out", str(tmp_path / "o"), *argv]))


def test_quantile_option_is_checked():
    with pytest.raises(SystemExit):
        parse(["--quantile", "1.5"])
