"""The audit: the page, the JSON and the figures it writes, in a headless browser, and errors."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from html.parser import HTMLParser

import pytest
import torch
import torchvision
from PIL import Image

from netlens.app.audit import (
    COLUMNS,
    FIGURES,
    INDEX,
    RANDOM,
    RESULTS,
    AuditSettings,
    _on_scalable_maps,
    add_audit_parser,
    audit_main,
    run_audit,
)
from netlens.attribution import METHODS
from netlens.metrics import average_drop

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = AuditSettings(images=4, steps=2, percentiles=(50,), randomization_images=2, shown_images=2)


def parse_args(*argv: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="netlens")
    commands = parser.add_subparsers(dest="command")
    add_audit_parser(commands, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(["audit", *map(str, argv)])
    args.debug = True
    return args


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: dict[tuple[str, str], str] = {}
        self._cell: tuple[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        if tag == "img":
            self.images.append(found["src"] or "")
        if tag == "td" and "data-metric" in found:
            self._cell = (found["data-method"], found["data-metric"])

    def handle_data(self, data):
        if self._cell is not None:
            self.cells[self._cell] = data.strip()
            self._cell = None


def parse_page(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def quick_audit(tmp_path_factory):
    """``netlens audit --quick`` on the digit classifier, into a folder with a file of its own."""
    out = tmp_path_factory.mktemp("audit")
    (out / "notes.txt").write_text("mine")
    code = audit_main(parse_args("--quick", "--out", out, "--seed", "1"))
    assert code == 0
    return out


@pytest.mark.slow
def test_quick_audit_writes_the_page_the_figures_and_the_results(quick_audit, capsys):
    out = quick_audit
    assert sorted(p.name for p in out.iterdir()) == sorted([*FIGURES, INDEX, RESULTS, "notes.txt"])
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(out / name) as image:
            assert min(image.size) >= 100
    page = parse_page((out / INDEX).read_text(encoding="utf-8"))
    assert page.images == list(FIGURES)
    results = json.loads((out / RESULTS).read_text(encoding="utf-8"))
    assert list(results["methods"]) == [*METHODS, RANDOM]
    for name, found in results["methods"].items():
        # Every method applies to the digit classifier (global average pooling + linear).
        assert not found["errors"], (name, found["errors"])
        assert set(found["metrics"]) == {
            "deletion",
            "insertion",
            "average_drop",
            "increase_in_confidence",
            "road",
        }
        assert len(found["randomization"]["blocks"]) == 7
        deletion = found["metrics"]["deletion"]
        low, high = deletion["interval"]
        assert low <= deletion["mean"] <= high and len(deletion["values"]) == 8
        cell = page.cells[(name, "deletion")]
        assert cell.startswith(f"{deletion['mean']:.3f} [{low:.3f}, {high:.3f}]")
        assert all(page.cells[(name, key)] != "n/a" for key, _, _ in COLUMNS)
    random_spearman = results["methods"][RANDOM]["randomization"]["spearman"]
    assert all(r["mean"] == 1.0 for r in random_spearman)


@pytest.mark.slow
def test_audit_page_images_all_load_in_a_headless_browser(quick_audit, tmp_path, images_loaded):
    assert images_loaded(quick_audit / INDEX) == (str(len(FIGURES)),) * 2
    # The check can fail: the same page without its pictures loads none of them.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(quick_audit / INDEX, alone / INDEX)
    assert images_loaded(alone / INDEX) == ("0", str(len(FIGURES)))


class NoPooling(torch.nn.Module):
    """A CNN whose head is not global average pooling + linear: CAM does not apply."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.head = torch.nn.Linear(4 * 16 * 16, 3)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)).flatten(1))


@pytest.mark.slow
def test_a_method_that_does_not_apply_is_listed_with_its_reason(tmp_path):
    torch.manual_seed(0)
    model = NoPooling().eval()
    x = torch.rand(4, 1, 16, 16)
    page = run_audit(
        model,
        x,
        methods=["cam", "saliency", RANDOM],
        out_dir=tmp_path,
        settings=TINY,
        progress=False,
        class_names=["a", "b", "c"],
    )
    results = json.loads((tmp_path / RESULTS).read_text(encoding="utf-8"))
    assert "maps" in results["methods"]["cam"]["errors"]
    assert results["methods"]["cam"]["metrics"] == {}
    assert results["methods"]["saliency"]["metrics"]["road"]["n"] == 4
    text = page.read_text(encoding="utf-8")
    assert "Not measured" in text and "CAM: maps:" in text
    assert parse_page(text).cells[("cam", "deletion")] == "n/a"


def test_constant_maps_have_no_drop_and_are_counted_not_invented():
    model = NoPooling().eval()
    x = torch.rand(3, 1, 16, 16)
    maps = torch.rand(3, 16, 16)
    maps[1] = 0.0

    def run(xs, ms, cs):
        return average_drop(model, xs, ms, cs)

    result = _on_scalable_maps("average_drop", run, x, maps, torch.tensor([0, 1, 2]), 0)
    assert result.undefined == 1 and math.isnan(result.values[1])
    expected = average_drop(model, x[[0, 2]], maps[[0, 2]], [0, 2]).values
    assert result.values[[0, 2]].tolist() == pytest.approx(expected.tolist())


@pytest.mark.slow
def test_audit_of_a_torchvision_model_on_a_folder_of_images(tmp_path, capsys):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(70, 90, 3) * 255).byte().numpy()).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing {i}\n" for i in range(1000)))
    torch.manual_seed(0)
    weights = tmp_path / "squeeze.pt"
    torch.save(torchvision.models.squeezenet1_1().state_dict(), weights)
    args = parse_args(
        "--arch", "squeezenet1_1", "--weights", weights, "--images", folder,
        "--methods", "gradcam,random", "--quick", "--out", tmp_path / "out", "--classes", names,
    )  # fmt: skip
    assert audit_main(args) == 0
    results = json.loads((tmp_path / "out" / RESULTS).read_text(encoding="utf-8"))
    assert list(results["methods"]) == ["gradcam", RANDOM]
    assert len(results["classes"]) == 3
    assert "squeezenet1_1" in results["description"]
    assert "index:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--images", "somewhere"], "go with --arch"),
        (["--weights", "w.pt"], "go with --arch"),
        (["--classes", "names.txt"], "go with --arch"),
        (["--arch", "resnet18"], "needs --images"),
    ],
)
def test_usage_errors_are_one_line_and_status_2(argv, words, capsys):
    assert audit_main(parse_args(*argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("netlens: error: ") and words in err[0]


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        audit_main(parse_args("--methods", "gradcam,nothing", "--out", tmp_path))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(Exception, match="not a folder"):
        audit_main(parse_args("--out", blocker))
    with pytest.raises(SystemExit):
        parse_args("--count", "1")
    with pytest.raises(ValueError, match="at least 2 images"):
        run_audit(NoPooling(), torch.rand(1, 1, 16, 16), out_dir=tmp_path / "x", progress=False)
