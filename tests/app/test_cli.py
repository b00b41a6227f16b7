"""The ``netlens`` command, run as a user runs it: exit codes, files written, error lines.

Most tests start ``python -m netlens`` in a subprocess. The many ways to get an
input wrong are checked through ``main()`` in-process, which returns the same
exit codes and prints the same lines, at a fraction of the start-up cost.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import netlens
from netlens.app import cli
from netlens.app.cli import main
from netlens.app.tour import FIGURES, INDEX
from netlens.attribution import METHODS, GradCAM
from netlens.errors import WeightsUnavailableError

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


def cli_command(*args: object) -> tuple[list[str | bytes], dict[str, str]]:
    """``python -m netlens ARGS`` and an environment with this checkout's netlens importable."""
    package_root = str(Path(netlens.__file__).resolve().parent.parent)
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", PYTHONWARNINGS="")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    arguments = [a if isinstance(a, bytes) else str(a) for a in args]
    return [sys.executable, "-m", "netlens", *arguments], env


def run_cli(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m netlens ARGS``; ``bytes`` arguments are passed as they are."""
    command, env = cli_command(*args)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_cli_measured(*args: object, cwd: Path) -> tuple[int, str, int]:
    """Run ``python -m netlens ARGS``: its exit status, stderr and peak resident memory (bytes)."""
    command, env = cli_command(*args)
    with open(cwd / "stderr.txt", "w+b") as err:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        watchdog = threading.Timer(600, process.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return process.returncode, err.read().decode(), usage.ru_maxrss * 1024


def call(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args])
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
    """The images and the numbers of a tour page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.numbers: dict[str, str] = {}
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found["src"] or "")
        if "data-key" in found:
            self._key = found["data-key"]

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
def test_tour_page_images_all_load_in_a_headless_browser(tour_run, tmp_path, images_loaded):
    out, _ = tour_run
    assert images_loaded(out / INDEX) == (str(len(FIGURES)),) * 2
    # The check can fail: the same page without its pictures loads none of them.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(out / INDEX, alone / INDEX)
    assert images_loaded(alone / INDEX) == ("0", str(len(FIGURES)))


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


def assert_explained(stdout: str, overlay: Path, method: str, printed: str | None = None) -> None:
    """``printed``: the overlay's name as the command prints it (default: its name)."""
    assert_png(overlay)
    ranked = re.findall(r"^ +(\d)\. .+? +([0-9.]+)$", stdout, flags=re.MULTILINE)
    assert [rank for rank, _ in ranked] == ["1", "2", "3", "4", "5"]
    probabilities = [float(p) for _, p in ranked]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
    last = stdout.strip().splitlines()[-1]
    title = re.escape(METHODS[method].title)
    layer = r"( at [\w.:]+)?" if METHODS[method].needs_layer else ""
    name = re.escape(overlay.name if printed is None else printed)
    assert re.match(rf"wrote {name}: {title}{layer} of ", last), last


@pytest.mark.parametrize("method", sorted(METHODS))
def test_explain_writes_an_overlay_and_prints_the_top5(
    capsys, monkeypatch, tmp_path, picture, resnet_weights, method
):
    monkeypatch.chdir(tmp_path)
    # At 64 px the methods that run a forward pass per channel or window stay quick;
    # the full 224 px pipeline runs in the tests below.
    preprocessing = cli._preprocessing
    monkeypatch.setattr(cli, "_preprocessing", lambda arch: (72, 64, *preprocessing(arch)[2:]))
    args = ["--arch", "resnet18", "--weights", resnet_weights, "--method", method]
    code, stdout, err = call(capsys, "explain", picture, *args)
    assert code == 0, err
    assert_explained(stdout, tmp_path / f"photo_{method}.png", method)


def test_explain_as_a_process_prints_a_file_name_that_is_not_utf8_and_succeeds(
    tmp_path, picture, resnet_weights
):
    image = os.fsencode(tmp_path) + b"/caf\xe9.png"
    shutil.copy(picture, image)
    result = run_cli(
        "explain", image, "--arch", "resnet18", "--weights", resnet_weights, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "caf\\xe9.png" in result.stdout.splitlines()[0]
    overlay = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9_gradcam.png"))
    assert_explained(result.stdout, overlay, "gradcam", printed="caf\\xe9_gradcam.png")


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
    assert "Grad-CAM at layer3 of cock (class 7)" in stdout  # ImageNet's name of class 7


class DoubledGradCAM(GradCAM):
    """A method that only the registry knows about."""

    title = "Doubled Grad-CAM"

    def __call__(self, x, target=None, **kwargs):
        return 2 * super().__call__(x, target, **kwargs)


def test_a_registered_method_is_offered_and_run_with_no_change_to_the_command(
    capsys, monkeypatch, tmp_path, picture, resnet_weights
):
    monkeypatch.setitem(METHODS, "doubled", DoubledGradCAM)
    explain = cli.build_parser()._subparsers._group_actions[0].choices["explain"]
    # Without whitespace: argparse may wrap the help at the hyphen of "Grad-CAM".
    assert "doubled(DoubledGrad-CAM)" in "".join(explain.format_help().split())
    out = tmp_path / "doubled.png"
    args = ["--weights", resnet_weights, "--method", "doubled", "--layer", "layer3", "--out", out]
    code, stdout, err = call(capsys, "explain", picture, "--arch", "resnet18", *args)
    assert code == 0, err
    assert_png(out)
    assert "Doubled Grad-CAM at layer3 of" in stdout


# the files explain reads and writes ------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="reads the peak memory of a Linux process")
def test_explain_refuses_an_elongated_image_before_allocating_for_it(tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("RGB", (20000, 3)).save(strip)
    assert strip.stat().st_size < 1000
    # Resizing the short side to 256 would take over 5 GB. Starting the command (importing
    # torch) takes about 1 GB by itself, so that is measured too and the rest bounded.
    _, _, start = run_cli_measured("--version", cwd=tmp_path)
    code, err, peak = run_cli_measured("explain", strip, "--arch", "resnet18", cwd=tmp_path)
    assert code == 1, err
    assert_one_error_line(err, "strip.png is 20000x3 pixels", "less elongated")
    assert peak - start < 2**29, f"{(peak - start) / 2**20:.0f} MiB more than starting up"


def test_explain_refuses_a_decompression_bomb_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    bomb = tmp_path / "bomb.png"
    Image.new("RGB", (40, 30)).save(bomb)  # 1,200 pixels: Pillow itself only warns
    code, stdout, err = call(capsys, "explain", bomb, "--arch", "resnet18")
    assert code == 1 and stdout == ""
    assert_one_error_line(err, "bomb.png", "more than 1,000 pixels", "decompression bomb")


@pytest.mark.parametrize(
    ("name", "printed"),
    [(os.fsdecode(b"caf\xe9.png"), "caf\\xe9"), ("café.png", "caf\\xe9")],
    ids=["not-utf8", "not-ascii"],
)
def test_explain_prints_any_file_name_on_an_ascii_terminal(
    monkeypatch, tmp_path, picture, resnet_weights, name, printed
):
    monkeypatch.chdir(tmp_path)
    shutil.copy(picture, name)
    terminal = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", terminal)
    code = main(["explain", name, "--arch", "resnet18", "--weights", str(resnet_weights)])
    terminal.seek(0)
    lines = terminal.read().strip().splitlines()
    assert code == 0
    assert os.path.exists(name.replace(".png", "_gradcam.png"))
    assert lines[-1].startswith(f"wrote {printed}_gradcam.png: Grad-CAM at layer4 of "), lines[-1]


def test_explain_out_without_an_extension_writes_that_file_as_png(
    capsys, tmp_path, picture, resnet_weights
):
    out = tmp_path / "noext"
    code, stdout, err = call(
        capsys, "explain", picture, "--arch", "resnet18", "--weights", resnet_weights, "--out", out
    )
    assert code == 0, err
    assert_png(out)
    assert not (tmp_path / "noext.png").exists()
    assert stdout.strip().splitlines()[-1].startswith(f"wrote {out}: ")


@pytest.mark.parametrize("out", ["x.xyz", "folder"])
def test_explain_refuses_an_output_it_cannot_write_before_loading_the_model(
    capsys, monkeypatch, tmp_path, picture, out
):
    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli, "load_torchvision_classifier", never)
    monkeypatch.setattr(cli, "read_image", never)
    (tmp_path / "folder").mkdir()
    code, _, err = call(capsys, "explain", picture, "--arch", "resnet18", "--out", tmp_path / out)
    assert code == 1
    assert_one_error_line(err, f"cannot write {tmp_path / out}")
    if out == "x.xyz":
        assert ".xyz is not a picture format" in err and ".png" in err and ".pdf" in err


def test_weights_default_means_torchvision_even_beside_a_default_folder(
    capsys, monkeypatch, tmp_path, picture
):
    asked = []

    def offline(arch, weights="DEFAULT"):
        asked.append(weights)
        raise WeightsUnavailableError("no network here")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "DEFAULT").mkdir()
    monkeypatch.setattr(cli, "load_torchvision_classifier", offline)
    for weights in ([], ["--weights", "DEFAULT"]):
        code, _, err = call(capsys, "explain", picture, "--arch", "resnet18", *weights)
        assert code == 1
        assert_one_error_line(err, "no network here")
    assert asked == ["DEFAULT", "DEFAULT"]


def test_weights_dot_slash_default_is_the_file_of_that_name(
    capsys, monkeypatch, tmp_path, picture, resnet_weights
):
    monkeypatch.chdir(tmp_path)
    shutil.copy(resnet_weights, tmp_path / "DEFAULT")
    args = ["--arch", "resnet18", "--weights", "./DEFAULT"]
    code, stdout, err = call(capsys, "explain", picture, *args)
    assert code == 0, err
    assert "resnet18 (DEFAULT)" in stdout


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
        state = torchvision.models.resnet18().state_dict()
        state["conv1.weight"] = torch.zeros(64, 1, 7, 7)  # a one-channel stem
        torch.save(state, weights)
    elif kind == "not a state dict":
        torch.save([torch.zeros(2)], weights)
    elif kind == "checkpoint":
        torch.save({"encoder": {"fc.weight": torch.zeros(2)}, "epoch": 9}, weights)
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
        ("wrong shapes", ["does not fit ResNet", "conv1.weight: (64, 1, 7, 7) given, (64, 3"]),
        ("not a state dict", ["holds a list, not a state dict"]),
        ("checkpoint", ["looks like a checkpoint", "checkpoint['encoder']"]),
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


def test_explain_refuses_a_pickle_that_would_run_code(capsys, monkeypatch, tmp_path, picture):
    marker = tmp_path / "marker"
    payload = {"conv1.weight": MarkerPayload(marker)}
    weights = tmp_path / "hostile.pt"
    torch.save(payload, weights)
    monkeypatch.chdir(tmp_path)
    code, _, err = call(capsys, "explain", picture, "--arch", "resnet18", "--weights", weights)
    assert code == 1
    assert_one_error_line(err, "hostile.pt", "refused")
    assert not marker.exists(), "netlens ran code from a weights file"
    assert list(tmp_path.iterdir()) == [weights], "nothing may be written"
    # The payload is live: an ordinary unpickler does create the marker.
    pickle.loads(pickle.dumps(payload))["conv1.weight"].close()
    assert marker.exists()


@pytest.mark.parametrize("save", ["pickle.dumps", "torch.save legacy"])
def test_explain_refuses_a_plain_or_legacy_pickle_that_would_run_code(
    capsys, tmp_path, picture, save
):
    marker = tmp_path / "marker"
    weights = tmp_path / "hostile.pkl"
    payload = {"conv1.weight": MarkerPayload(marker)}
    if save == "pickle.dumps":
        weights.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, weights, _use_new_zipfile_serialization=False, pickle_protocol=4)
    code, _, err = call(capsys, "explain", picture, "--arch", "resnet18", "--weights", weights)
    assert code == 1
    assert_one_error_line(err, "hostile.pkl", "asks to import io.open", "refused")
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
    from netlens.errors import ImageFileError

    with pytest.raises(ImageFileError):
        main(["explain", str(tmp_path / "x.png"), "--arch", "resnet18", "--debug"])


# usage errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["required: COMMAND"]),
        (["explain", "x.png"], ["--arch"]),
        (["explain", "x.png", "--arch", "resnet18", "--method", "lime"], ["invalid choice"]),
        *(
            (["explain", "x.png", "--arch", "a", "--method", name, "--layer", "l"], ["--layer"])
            for name, cls in METHODS.items()
            if not cls.needs_layer
        ),
        (["layers", "--arch", "resnet18", "--input-size", "0"], ["positive integer"]),
        (["layers", "--arch", "resnet18", "--input-size", "12000"], ["12000", "2048"]),
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


def test_layers_lists_names_types_and_output_shapes(capsys):
    code, stdout, err = call(capsys, "layers", "--arch", "resnet18")
    assert code == 0, err
    rows = table(stdout)
    assert rows["conv1"] == ("Conv2d", "(1, 64, 112, 112)")
    assert rows["layer4"] == ("Sequential", "(1, 512, 7, 7)")
    assert rows["layer4.1.conv2"] == ("Conv2d", "(1, 512, 7, 7)")
    assert rows["fc"] == ("Linear", "(1, 1000)")
    assert rows["layer1.0.relu:0"] == rows["layer1.0.relu:1"] == ("ReLU", "(1, 64, 56, 56)")
    assert "layer1.0.relu" not in rows, "a module run twice is addressed one call at a time"
    assert "one call at a time as name:k" in stdout
    assert "layer4 " in stdout.split("default --layer")[0].splitlines()[-1]


def test_layers_follows_the_input_size(capsys):
    code, out, err = call(capsys, "layers", "--arch", "resnet18", "--input-size", 64)
    assert code == 0, err
    assert table(out)["layer4"] == ("Sequential", "(1, 512, 2, 2)")


def test_layers_of_an_unknown_architecture_is_one_clear_line(capsys):
    code, _, err = call(capsys, "layers", "--arch", "resnet_18")
    assert code == 1
    assert_one_error_line(err, "resnet_18", "did you mean")


class LeNet(torch.nn.Module):
    """LeNet-5 with one pooling module that runs after both convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 6, 5)
        self.conv2 = torch.nn.Conv2d(6, 16, 5)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


def test_layers_lists_each_call_of_a_module_run_twice():
    lines = cli.describe_layers(LeNet(), torch.zeros(1, 1, 28, 28), name="LeNet")
    rows = table("\n".join(lines))
    assert list(rows) == ["conv1", "conv2", "pool:0", "pool:1", "fc"]
    assert rows["pool:0"] == ("MaxPool2d", "(1, 6, 12, 12)")
    assert rows["pool:1"] == ("MaxPool2d", "(1, 16, 4, 4)")
    assert "5 layers of LeNet for a (1, 1, 28, 28) input." in lines
    assert any("one call at a time as name:k" in line and "pool" in line for line in lines)


def test_layers_too_small_an_input_asks_for_a_larger_one(capsys):
    code, _, err = call(capsys, "layers", "--arch", "squeezenet1_1", "--input-size", 8)
    assert code == 1
    assert_one_error_line(err, "8x8", "try a larger --input-size", "224")


def test_layers_out_of_memory_asks_for_a_smaller_input(capsys, monkeypatch):
    def no_memory(model, x):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")

    monkeypatch.setattr(cli, "trace_calls", no_memory)
    code, _, err = call(capsys, "layers", "--arch", "resnet18", "--input-size", 2048)
    assert code == 1
    assert_one_error_line(err, "not enough memory", "try a smaller --input-size")
    assert "larger" not in err
