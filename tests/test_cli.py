"""The ``netlens`` command, run as a user runs it: exit codes, files written, error lines.

Most tests start ``python -m netlens`` in a subprocess. The many ways to get an
input wrong are checked through ``main()`` in-process, which returns the same
exit codes and prints the same lines, at a fraction of the start-up cost.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import netlens
from netlens import cli
from netlens.cli import main
from netlens.data import WeightsUnavailableError
from netlens.tour import FIGURES, INDEX

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_FIGURES = [
    "training.png",
    "filters_conv1.png",
    "filters_layer3.png",
    "activations_layer1.png",
    "activations_pca.png",
    "ablation.png",
    "attributions.png",
    "tsne.png",
    "neighbours_supervised.png",
    "neighbours_rotation.png",
]
NUMBER_KEYS = {
    "test_accuracy",
    "rotation_accuracy",
    "knn_supervised",
    "knn_rotation",
    "knn_untrained",
    "neighbour_overlap",
    "flip_count",
    "flip_median",
}
CHROMIUM = Path("/usr/bin/chromium")


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m netlens ARGS`` with this checkout's netlens importable."""
    package_root = str(Path(netlens.__file__).resolve().parent.parent)
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONWARNINGS="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "netlens", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def call(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert lines[0].startswith("netlens: error: "), lines[0]
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert min(image.size) >= 100, f"{path.name} is only {image.size}"


class PageParser(HTMLParser):
    """The images, the numbers and the image-load note of a tour page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.numbers: dict[str, str] = {}
        self.loaded: dict[str, str | None] | None = None
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found["src"] or "")
        if "data-key" in found:
            self._key = found["data-key"]
        if found.get("id") == "images-loaded":
            self.loaded = found

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.numbers[self._key] = data.strip()
            self._key = None


def parse_page(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def tour_run(tmp_path_factory):
    """A quick tour into a folder that already holds a stale figure and a foreign file."""
    out = tmp_path_factory.mktemp("tour")
    (out / "notes.txt").write_text("mine, not netlens'")
    (out / "tsne.png").write_bytes(b"stale picture from an earlier run")
    result = run_cli("tour", "--quick", "--out", out, "--seed", "1")
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("picture") / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((90, 120, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


# tour ------------------------------------------------------------------------


def test_tour_files_are_a_fixed_list():
    assert list(FIGURES) == EXPECTED_FIGURES and INDEX == "index.html"


@pytest.mark.slow
def test_tour_writes_every_figure_as_a_png(tour_run):
    out, _ = tour_run
    for name in EXPECTED_FIGURES:
        assert_png(out / name)


@pytest.mark.slow
def test_tour_index_shows_exactly_its_figures_and_the_numbers(tour_run):
    out, _ = tour_run
    page = parse_page((out / INDEX).read_text(encoding="utf-8"))
    assert page.images == EXPECTED_FIGURES
    assert all((out / src).is_file() for src in page.images)
    assert set(page.numbers) == NUMBER_KEYS
    for key in NUMBER_KEYS - {"flip_count", "flip_median"}:
        assert 0.0 <= float(page.numbers[key]) <= 1.0, (key, page.numbers[key])
    for key in ("flip_count", "flip_median"):
        assert page.numbers[key] == "none" or float(page.numbers[key]) >= 1


@pytest.mark.slow
def test_tour_replaces_its_own_files_and_keeps_everything_else(tour_run):
    out, _ = tour_run
    assert (out / "notes.txt").read_text() == "mine, not netlens'"
    assert_png(out / "tsne.png")
    assert sorted(p.name for p in out.iterdir()) == sorted([*EXPECTED_FIGURES, INDEX, "notes.txt"])


@pytest.mark.slow
def test_tour_prints_the_numbers_and_ends_with_the_index_path(tour_run):
    out, result = tour_run
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"index: {(out / INDEX).resolve()}"
    assert "test accuracy" in result.stdout and "kNN accuracy" in result.stdout


@pytest.mark.slow
def test_tour_page_images_all_load_in_a_headless_browser(tour_run, tmp_path):
    if not CHROMIUM.exists():
        if os.environ.get("NETLENS_REQUIRE_BROWSER"):
            pytest.fail(f"NETLENS_REQUIRE_BROWSER is set but there is no browser at {CHROMIUM}")
        pytest.skip(f"no headless browser at {CHROMIUM}")
    out, _ = tour_run

    def rendered(index: Path) -> dict[str, str | None]:
        result = subprocess.run(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=5000",
                "--dump-dom",
                index.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        note = parse_page(result.stdout).loaded
        assert note is not None, "the page's image check did not run"
        return note

    note = rendered(out / INDEX)
    assert (note["data-loaded"], note["data-total"]) == (str(len(FIGURES)),) * 2
    # The check can fail: the same page without its pictures loads none of them.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / INDEX, alone / INDEX)
    note = rendered(alone / INDEX)
    assert (note["data-loaded"], note["data-total"]) == ("0", str(len(FIGURES)))


def test_tour_into_a_file_fails_before_training(capsys, tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    code, _, err = call(capsys, "tour", "--out", blocker)
    assert code == 1
    assert_one_error_line(err, "taken", "not a folder")
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_tour_on_cuda_without_cuda_is_one_clear_line(capsys, tmp_path):
    code, _, err = call(capsys, "tour", "--device", "cuda", "--out", tmp_path / "t")
    assert code == 1
    assert_one_error_line(err, "CUDA is not available")
    assert not (tmp_path / "t").exists()


# explain ---------------------------------------------------------------------


def assert_explained(stdout: str, overlay: Path, method: str) -> None:
    assert_png(overlay)
    ranked = re.findall(r"^ +(\d)\. .+? +([0-9.]+)$", stdout, flags=re.MULTILINE)
    assert [rank for rank, _ in ranked] == ["1", "2", "3", "4", "5"]
    probabilities = [float(p) for _, p in ranked]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
    assert stdout.strip().splitlines()[-1].startswith(f"wrote {overlay.name}")


@pytest.mark.parametrize("method", ["cam", "gradcam", "saliency"])
def test_explain_writes_an_overlay_and_prints_the_top5(
    capsys, monkeypatch, tmp_path, picture, resnet_weights, method
):
    monkeypatch.chdir(tmp_path)
    args = ["--arch", "resnet18", "--weights", resnet_weights, "--method", method]
    code, stdout, err = call(capsys, "explain", picture, *args)
    assert code == 0, err
    assert_explained(stdout, tmp_path / f"photo_{method}.png", method)


def test_explain_as_a_process(tmp_path, picture, resnet_weights):
    result = run_cli(
        "explain", picture, "--arch", "resnet18", "--weights", resnet_weights, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert_explained(result.stdout, tmp_path / "photo_gradcam.png", "gradcam")


def test_explain_takes_a_layer_a_target_and_an_output_path(
    capsys, tmp_path, picture, resnet_weights
):
    out = tmp_path / "layer3.png"
    code, stdout, err = call(
        capsys,
        "explain",
        picture,
        "--arch",
        "resnet18",
        "--weights",
        resnet_weights,
        "--method",
        "gradcam",
        "--layer",
        "layer3",
        "--target",
        7,
        "--out",
        out,
    )
    assert code == 0, err
    assert_png(out)
    assert "Grad-CAM of class 7" in stdout


def write_bad_input(kind: str, folder: Path, picture: Path) -> list[object]:
    """Arguments (after ``explain``) that go wrong in the way ``kind`` says."""
    weights = folder / "weights.pt"
    if kind == "missing image":
        return [folder / "nothing.png", "--arch", "resnet18", "--weights", weights]
    if kind == "random bytes":
        path = folder / "noise.png"
        path.write_bytes(np.random.default_rng(3).bytes(900))
        return [path, "--arch", "resnet18", "--weights", weights]
    if kind == "truncated png":
        path = folder / "cut.png"
        data = picture.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return [path, "--arch", "resnet18", "--weights", weights]
    if kind == "wrong shapes":
        torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), weights)
    elif kind == "not a state dict":
        torch.save([torch.zeros(2)], weights)
    elif kind == "checkpoint":
        torch.save({"model": {"fc.weight": torch.zeros(2)}, "epoch": 9}, weights)
    elif kind == "missing weights":
        pass
    else:
        torch.save(torchvision.models.resnet18().state_dict(), weights)
    args: list[object] = [picture, "--arch", "resnet18", "--weights", weights]
    if kind == "unknown arch":
        args[2] = "resnet81"
    if kind == "unknown layer":
        args += ["--layer", "layer5"]
    if kind == "target out of range":
        args += ["--target", 1000]
    if kind == "missing output folder":
        args += ["--out", folder / "no" / "such" / "folder.png"]
    return args


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("missing image", ["no such image file", "nothing.png"]),
        ("random bytes", ["noise.png", "not an image file"]),
        ("truncated png", ["cut.png", "truncated"]),
        ("unknown arch", ["resnet81", "did you mean resnet18"]),
        ("unknown layer", ["layer5", "'layer4'"]),
        ("wrong shapes", ["does not fit ResNet", "fc.weight: (10, 512) given, (1000, 512)"]),
        ("not a state dict", ["holds a list, not a state dict"]),
        ("checkpoint", ["looks like a checkpoint", "checkpoint['model']"]),
        ("missing weights", ["no such weights file"]),
        ("target out of range", ["--target 1000", "1000 classes"]),
        ("missing output folder", ["does not exist"]),
    ],
)
def test_explain_bad_input_is_one_clear_line_and_exit_1(capsys, tmp_path, picture, kind, words):
    code, stdout, err = call(capsys, "explain", *write_bad_input(kind, tmp_path, picture))
    assert code == 1
    assert_one_error_line(err, *words)
    assert stdout == ""


def test_explain_error_line_and_exit_code_as_a_process(tmp_path, picture):
    result = run_cli("explain", tmp_path / "nothing.png", "--arch", "resnet18")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, "no such image file")


class MarkerPayload:
    """Unpickling this creates ``path``: the proof that a pickle ran code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_explain_refuses_a_pickle_that_would_run_code(tmp_path, picture):
    marker = tmp_path / "marker"
    payload = {"conv1.weight": MarkerPayload(marker)}
    weights = tmp_path / "hostile.pt"
    torch.save(payload, weights)
    result = run_cli("explain", picture, "--arch", "resnet18", "--weights", weights, cwd=tmp_path)
    assert result.returncode == 1
    assert_one_error_line(result.stderr, "hostile.pt", "refused")
    assert not marker.exists(), "netlens ran code from a weights file"
    assert list(tmp_path.iterdir()) == [weights], "nothing may be written"
    # The payload is live: an ordinary unpickler does create the marker.
    pickle.loads(pickle.dumps(payload))["conv1.weight"].close()
    assert marker.exists()


def test_explain_refuses_a_plain_pickle_that_would_run_code(capsys, tmp_path, picture):
    marker = tmp_path / "marker"
    weights = tmp_path / "hostile.pkl"
    weights.write_bytes(pickle.dumps({"conv1.weight": MarkerPayload(marker)}))
    code, _, err = call(capsys, "explain", picture, "--arch", "resnet18", "--weights", weights)
    assert code == 1
    assert_one_error_line(err, "hostile.pkl", "not a PyTorch weights file")
    assert not marker.exists(), "netlens ran code from a weights file"


def test_explain_without_downloadable_weights_is_one_clear_line(capsys, monkeypatch, picture):
    def offline(arch, weights="DEFAULT"):
        raise WeightsUnavailableError(
            f"torchvision's weights for {arch} could not be loaded (no network); "
            "connect to the internet once, or use a state dict of your own"
        )

    monkeypatch.setattr(cli, "load_torchvision_classifier", offline)
    code, _, err = call(capsys, "explain", picture, "--arch", "resnet18")
    assert code == 1
    assert_one_error_line(err, "could not be loaded", "state dict of your own")


def test_debug_shows_the_traceback_instead(capsys, tmp_path):
    from netlens._io import ImageFileError

    with pytest.raises(ImageFileError):
        main(["explain", str(tmp_path / "x.png"), "--arch", "resnet18", "--debug"])


# usage errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["required: COMMAND"]),
        (["explain", "x.png"], ["--arch"]),
        (["explain", "x.png", "--arch", "resnet18", "--method", "lime"], ["invalid choice"]),
        (["explain", "x.png", "--arch", "a", "--method", "saliency", "--layer", "l"], ["--layer"]),
        (["layers", "--arch", "resnet18", "--input-size", "0"], ["positive integer"]),
        (["tour", "--device", "tpu"], ["invalid choice"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, args, words):
    code, _, err = call(capsys, *args)
    assert code == 2
    assert_one_error_line(err, *words)


def test_usage_error_exit_code_as_a_process():
    result = run_cli("explain", "x.png", "--arch", "resnet18", "--method", "lime")
    assert result.returncode == 2
    assert_one_error_line(result.stderr, "invalid choice")


def test_help_exits_0(capsys):
    code, out, _ = call(capsys, "--help")
    assert code == 0 and "tour" in out and "explain" in out and "layers" in out


# layers ----------------------------------------------------------------------


def table(stdout: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[2].startswith("("):
            rows[parts[0]] = (parts[1], parts[2].split("  <-")[0])
    return rows


def test_layers_lists_names_types_and_output_shapes():
    result = run_cli("layers", "--arch", "resnet18")
    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert rows["conv1"] == ("Conv2d", "(1, 64, 112, 112)")
    assert rows["layer4"] == ("Sequential", "(1, 512, 7, 7)")
    assert rows["layer4.1.conv2"] == ("Conv2d", "(1, 512, 7, 7)")
    assert rows["fc"] == ("Linear", "(1, 1000)")
    assert "layer1.0.relu" not in rows, "a module run twice cannot be used by name"
    assert "more than once" in result.stdout and "layer1.0.relu" in result.stdout
    assert "layer4 " in result.stdout.split("default of CAM")[0].splitlines()[-1]


def test_layers_follows_the_input_size(capsys):
    code, out, err = call(capsys, "layers", "--arch", "resnet18", "--input-size", 64)
    assert code == 0, err
    assert table(out)["layer4"] == ("Sequential", "(1, 512, 2, 2)")


def test_layers_of_an_unknown_architecture_is_one_clear_line(capsys):
    code, _, err = call(capsys, "layers", "--arch", "resnet_18")
    assert code == 1
    assert_one_error_line(err, "resnet_18", "did you mean")
