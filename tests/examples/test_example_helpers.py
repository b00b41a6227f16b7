"""The helpers the gallery examples open and close with.

``pretrained_or_digits`` (torchvision's weights, or else a network trained on
the digits), ``load_cifar10`` (CIFAR-10, or else the digits in its shape) and
``save_figures`` (figures to files outside sphinx-gallery, nothing inside it).
No test downloads anything: the torchvision paths are faked by replacing the
loaders, and the fallbacks are what runs offline anyway.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import types
import urllib.error

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

import netlens.models.pretrained as pretrained_module  # noqa: E402
from netlens.datasets import DIGIT_CLASSES, ImageSplits, load_cifar10, load_digits  # noqa: E402
from netlens.errors import WeightsUnavailableError  # noqa: E402
from netlens.models import (  # noqa: E402
    SmallResNet,
    Subject,
    accuracy,
    pretrained_or_digits,
    sample_photo,
)
from netlens.viz import save_figures  # noqa: E402


def _no_weights(arch, weights="DEFAULT", **options):
    """load_torchvision_classifier as it behaves offline: random weights load, pretrained fail."""
    if weights is None:
        return torchvision.models.get_model(arch, weights=None).eval(), ["class"] * 1000
    raise WeightsUnavailableError("no connection") from urllib.error.URLError("offline")


def _three_classes(arch, weights="DEFAULT", **options):
    """A stand-in for torchvision's pretrained network: random weights, three classes."""
    model = torchvision.models.get_model(arch, weights=None, num_classes=3).eval()
    return model, ["ant", "bee", "cow"]


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(pretrained_module, "load_torchvision_classifier", _no_weights)


# -- pretrained_or_digits: the fallback ----------------------------------------


def test_without_weights_it_trains_on_the_digits_and_says_so(offline, capsys):
    torch.manual_seed(5)
    network = SmallResNet(width=4)
    expected_start = {k: v.clone() for k, v in network.state_dict().items()}
    subject = pretrained_or_digits("resnet18", digits=[3, 0, 7], size=8, network=network, epochs=1)
    printed = capsys.readouterr().out.strip().splitlines()
    _, test = load_digits(size=8)

    assert isinstance(subject, Subject) and subject.pretrained is False
    assert subject.model is network and not network.training
    assert subject.class_names == DIGIT_CLASSES
    assert subject.mean is None and subject.std is None
    assert torch.equal(subject.pictures, test.images[[3, 0, 7]])
    assert torch.equal(subject.inputs, subject.pictures)
    assert torch.equal(subject.test.images, test.images)
    assert len(subject.history.train_loss) == 1
    # one printed line: why, what, and the test accuracy measured here independently
    assert printed == [subject.summary]
    assert "resnet18 could not be loaded (URLError)" in subject.summary
    assert f"test accuracy {accuracy(network, test):.3f}" in subject.summary
    # the control is the network as it was before training, a separate copy
    start = subject.untrained()
    assert start is not network and not start.training
    for name, value in start.state_dict().items():
        assert torch.equal(value, expected_start[name]), name
    assert not torch.equal(start.conv1.weight, network.conv1.weight)


def test_arch_none_never_asks_torchvision(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torchvision was asked")

    monkeypatch.setattr(pretrained_module, "load_torchvision_classifier", refuse)
    subject = pretrained_or_digits(
        None, digits=[0], size=8, network=SmallResNet(width=4), epochs=1, verbose=False
    )
    assert subject.pretrained is False
    assert subject.summary.startswith("trained a SmallResNet on the handwritten digits (1 epoch)")


def test_the_default_network_draws_its_weights_from_the_global_generator(offline):
    torch.manual_seed(4)
    subject = pretrained_or_digits(digits=[0], size=8, channels=3, epochs=1, verbose=False)
    torch.manual_seed(4)
    reference = SmallResNet(num_classes=10, in_channels=3)
    for name, value in subject.untrained().state_dict().items():
        assert torch.equal(value, reference.state_dict()[name]), name


def test_a_network_factory_is_called_only_for_the_digits(monkeypatch):
    built = []

    def factory():
        built.append(True)
        return SmallResNet(width=4)

    monkeypatch.setattr(pretrained_module, "load_torchvision_classifier", _no_weights)
    subject = pretrained_or_digits(size=8, network=factory, epochs=1, verbose=False)
    assert built == [True] and isinstance(subject.model, SmallResNet)
    assert subject.model.conv1.out_channels == 4

    monkeypatch.setattr(pretrained_module, "load_torchvision_classifier", _three_classes)
    pretrained_or_digits(photos=["camera"], photo_size=16, network=factory, verbose=False)
    assert built == [True]
    with pytest.raises(TypeError, match="nn.Module"):
        pretrained_or_digits(None, size=8, network=lambda: "not a network", verbose=False)


def test_a_margin_pads_smaller_digits_with_black(offline):
    subject = pretrained_or_digits(
        digits=[1, 2], size=12, margin=2, network=SmallResNet(width=4), epochs=1, verbose=False
    )
    _, inner = load_digits(size=8)
    assert subject.pictures.shape == (2, 1, 12, 12)
    assert torch.equal(subject.pictures[:, :, 2:10, 2:10], inner.images[[1, 2]])
    border = subject.pictures.clone()
    border[:, :, 2:10, 2:10] = 0
    assert float(border.abs().max()) == 0.0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"margin": 8, "size": 16}, "margin"),
        ({"channels": 2}, "channels"),
        ({"digits": [450]}, "test digits"),
        ({"digits": []}, "test digits"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_bad_digit_settings_raise(offline, options, match):
    with pytest.raises(ValueError, match=match):
        pretrained_or_digits(**{"size": 16, "verbose": False, **options})


def test_an_unknown_architecture_raises_instead_of_falling_back():
    with pytest.raises(ValueError, match="unknown torchvision classification architecture"):
        pretrained_or_digits("resnet_nineteen", verbose=False)


@pytest.mark.parametrize("photos", [(), "astronaut"])
def test_photos_must_name_at_least_one_photo(photos):
    with pytest.raises(ValueError, match="photos"):
        pretrained_or_digits(photos=photos, verbose=False)


# -- pretrained_or_digits: the pretrained path, faked ---------------------------


def test_with_weights_it_returns_the_pretrained_network_and_normalised_photos(monkeypatch, capsys):
    calls = []

    def fake(arch, weights="DEFAULT", **options):
        calls.append((arch, weights))
        return _three_classes(arch, weights)

    monkeypatch.setattr(pretrained_module, "load_torchvision_classifier", fake)
    torch.manual_seed(99)  # the "pretrained" weights: anything but the twin's seed
    subject = pretrained_or_digits("resnet18", photos=["astronaut", "camera"], photo_size=40)
    printed = capsys.readouterr().out.strip().splitlines()

    assert calls == [("resnet18", "DEFAULT")]
    assert subject.pretrained is True and subject.class_names == ["ant", "bee", "cow"]
    assert subject.train is None and subject.test is None and subject.history is None
    expected = torch.stack([sample_photo("astronaut", 40), sample_photo("camera", 40)])
    assert torch.equal(subject.pictures, expected)
    # the statistics torchvision's own preprocessing of these weights uses
    preset = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert subject.mean == pytest.approx(tuple(preset.mean))
    assert subject.std == pytest.approx(tuple(preset.std))
    normalise = torchvision.transforms.Normalize(preset.mean, preset.std)
    torch.testing.assert_close(subject.inputs, normalise(expected))
    torch.testing.assert_close(subject.prepare(expected[0]), normalise(expected[0]))
    assert printed == [subject.summary] and "pretrained resnet18 (3 classes)" in printed[0]
    # the random twin is built on demand, from the seed, not from the global generator
    torch.manual_seed(1)
    control = subject.untrained()
    torch.manual_seed(2)
    again = subject.untrained()
    assert calls[1:] == [("resnet18", None), ("resnet18", None)]
    assert control is not subject.model and control is not again and not control.training
    assert torch.equal(control.conv1.weight, again.conv1.weight)
    assert not torch.equal(control.conv1.weight, subject.model.conv1.weight)


# -- sample_photo ----------------------------------------------------------------


def test_a_square_photo_at_its_own_size_is_the_file_scaled_to_one():
    import skimage.data

    array = skimage.data.astronaut()
    assert array.shape[:2] == (512, 512)
    expected = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(sample_photo("astronaut", 512), expected, atol=1e-6, rtol=0)


def test_a_wide_photo_keeps_its_central_square_and_gray_becomes_three_channels():
    import skimage.data

    array = skimage.data.chelsea()  # 300 x 451
    left = (451 - 300) // 2
    expected = torch.from_numpy(array[:, left : left + 300]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(sample_photo("chelsea", 300), expected, atol=1e-6, rtol=0)
    gray = sample_photo("camera", 64)
    assert gray.shape == (3, 64, 64)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # the resize averages: a 64-pixel copy is close to 8x8 block means of the 512-pixel one
    blocks = F.avg_pool2d(sample_photo("camera", 512)[None], 8)[0]
    assert float((gray - blocks).abs().mean()) < 0.02


@pytest.mark.parametrize("name", ["download_all", "lfw_subset", "no such photo", 3])
def test_only_the_bundled_photos_are_served(name):
    with pytest.raises(ValueError, match="not a sample photo"):
        sample_photo(name)


# -- load_cifar10 -----------------------------------------------------------------


class _FakeCIFAR10:
    """torchvision.datasets.CIFAR10's interface: uint8 (N, 32, 32, 3) data, list targets."""

    made: list = []

    def __init__(self, root, train=True, download=False):
        type(self).made.append((root, train, download))
        generator = np.random.default_rng(0 if train else 1)
        n = 60 if train else 20
        self.data = generator.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        self.targets = [int(t) for t in generator.integers(0, 10, size=n)]
        self.classes = [f"class {i}" for i in range(10)]

    def __len__(self):
        return len(self.targets)


def test_cifar_is_read_as_channels_first_floats_and_cut_to_size(monkeypatch, tmp_path, capsys):
    _FakeCIFAR10.made = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _FakeCIFAR10)
    data = load_cifar10(50, 8, root=tmp_path / "c")
    reference_train, reference_test = _FakeCIFAR10(None, True), _FakeCIFAR10(None, False)

    assert isinstance(data, ImageSplits) and data.cifar is True
    assert _FakeCIFAR10.made[:2] == [
        (str(tmp_path / "c"), True, True),
        (str(tmp_path / "c"), False, True),
    ]
    assert data.train.images.shape == (50, 3, 32, 32) and data.test.images.shape == (8, 3, 32, 32)
    assert data.train.images.dtype == torch.float32
    # pixel (row 5, column 7) of image 3, channel 2
    assert float(data.train.images[3, 2, 5, 7]) == pytest.approx(
        reference_train.data[3, 5, 7, 2] / 255
    )
    assert data.train.labels.tolist() == reference_train.targets[:50]
    assert data.test.labels.tolist() == reference_test.targets[:8]
    assert data.classes == reference_train.classes
    assert capsys.readouterr().out.strip() == data.summary
    assert data.summary == "CIFAR-10: 50 of 60 training and 8 of 20 test images"
    everything = load_cifar10(None, None, root=tmp_path, download=False, verbose=False)
    assert len(everything.train) == 60 and len(everything.test) == 20
    assert _FakeCIFAR10.made[-1] == (str(tmp_path), False, False)


@pytest.mark.parametrize("channels", [3, 1])
def test_offline_cifar_becomes_the_digits_and_says_so(monkeypatch, channels, capsys):
    def unreachable(root, train=True, download=False):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", unreachable)
    data = load_cifar10(digit_channels=channels)
    train, test = load_digits(size=32, channels=channels)
    assert data.cifar is False and data.classes == DIGIT_CLASSES
    assert torch.equal(data.train.images, train.images) and torch.equal(
        data.test.labels, test.labels
    )
    printed = capsys.readouterr().out.strip()
    assert printed == data.summary
    assert printed.startswith(
        "CIFAR-10 could not be loaded (URLError); using the handwritten digits"
    )
    assert f"{channels} channel" in printed


def test_a_missing_copy_without_download_falls_back_through_torchvision_itself(tmp_path):
    # torchvision's own check of an empty folder, no network involved
    data = load_cifar10(root=tmp_path, download=False, verbose=False)
    assert data.cifar is False and "(RuntimeError)" in data.summary


def test_without_fallback_the_error_is_raised(tmp_path):
    with pytest.raises(RuntimeError):
        load_cifar10(root=tmp_path, download=False, fallback=False)


@pytest.mark.parametrize(
    "options", [{"n_train": 0}, {"n_test": True}, {"n_train": 2.5}, {"digit_channels": 2}]
)
def test_bad_cifar_arguments_raise(options, tmp_path):
    with pytest.raises(ValueError):
        load_cifar10(root=tmp_path, download=False, **options)


# -- save_figures -------------------------------------------------------------------


@pytest.fixture
def no_figures():
    plt.close("all")
    yield
    plt.close("all")


def test_every_open_figure_is_saved_in_order_and_the_paths_printed(no_figures, tmp_path, capsys):
    sizes = [(2.0, 1.0), (3.0, 2.0), (1.5, 1.5)]
    for width, height in sizes:
        plt.figure(figsize=(width, height), dpi=50)
    current = plt.figure(2)  # the current figure is not the last one
    folder = tmp_path / "out"
    paths = save_figures("demo", folder, dpi=40)
    printed = capsys.readouterr().out.strip().splitlines()

    assert paths == [folder / f"demo_0{k}.png" for k in (1, 2, 3)]
    for path, (width, height) in zip(paths, sizes, strict=True):
        with Image.open(path) as image:
            assert image.size == (round(width * 40), round(height * 40))
    assert printed == ["saved 3 figures:", *(f"  {p}" for p in paths)]
    assert plt.gcf() is current and plt.get_fignums() == [1, 2, 3]


def test_files_of_an_earlier_longer_run_are_removed_and_others_kept(no_figures, tmp_path):
    for name in ("demo_01.png", "demo_02.png", "demo_03.png", "demo_notes.png", "other_01.png"):
        (tmp_path / name).write_bytes(b"old")
    plt.figure()
    save_figures("demo", tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["demo_01.png", "demo_notes.png", "other_01.png"]
    assert (tmp_path / "demo_01.png").read_bytes()[:4] == b"\x89PNG"


def test_nothing_to_save_says_so(no_figures, tmp_path, capsys):
    assert save_figures("demo", tmp_path / "x") == []
    assert capsys.readouterr().out.strip() == "no open figures to save"
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["", "a/b", 3])
def test_a_name_must_be_a_plain_stem(no_figures, tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        save_figures(name, tmp_path)


def test_inside_sphinx_gallery_nothing_is_saved_or_printed(
    no_figures, tmp_path, capsys, monkeypatch
):
    class Tee(io.StringIO):  # how sphinx-gallery captures an example's output
        pass

    Tee.__module__ = "sphinx_gallery.gen_rst"
    tee = Tee()
    monkeypatch.setattr(sys, "stdout", tee)
    plt.figure()
    assert save_figures("demo", tmp_path) == []
    assert list(tmp_path.iterdir()) == [] and tee.getvalue() == ""


def test_sphinx_gallery_imported_but_not_running_an_example_still_saves(
    no_figures, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "sphinx_gallery", types.ModuleType("sphinx_gallery"))
    plt.figure()
    (path,) = save_figures("demo", tmp_path)
    assert path.is_file() and str(path.name) in capsys.readouterr().out


SCRIPT = '''
"""
Saving a figure
===============
"""
import matplotlib.pyplot as plt
from netlens.viz import save_figures

plt.plot([0, 1], [1, 0])
print("saved:", [path.as_posix() for path in save_figures()])
'''


def _run(args, cwd):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_run_as_a_script_it_names_the_files_after_the_script(tmp_path):
    script = tmp_path / "plot_demo.py"
    script.write_text(SCRIPT)
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    out = _run([sys.executable, str(script)], cwd=elsewhere)
    assert "saved: ['figures/plot_demo_01.png']" in out
    assert (elsewhere / "figures" / "plot_demo_01.png").is_file()


@pytest.mark.slow
def test_a_real_sphinx_gallery_build_saves_nothing_beside_the_example(tmp_path):
    pytest.importorskip("sphinx_gallery")
    source = tmp_path / "docs"
    (source / "examples").mkdir(parents=True)
    (source / "examples" / "GALLERY_HEADER.rst").write_text("Gallery\n=======\n")
    (source / "examples" / "plot_demo.py").write_text(SCRIPT)
    (source / "conf.py").write_text(
        textwrap.dedent(
            """
            extensions = ["sphinx_gallery.gen_gallery"]
            sphinx_gallery_conf = {"examples_dirs": "examples", "gallery_dirs": "auto"}
            """
        )
    )
    (source / "index.rst").write_text("Demo\n====\n\n.. toctree::\n\n   auto/index\n")
    _run(
        [sys.executable, "-m", "sphinx", "-q", "-b", "html", str(source), str(tmp_path / "html")],
        tmp_path,
    )
    page = (source / "auto" / "plot_demo.rst").read_text()
    assert "saved: []" in page
    assert (source / "auto" / "images" / "sphx_glr_plot_demo_001.png").is_file()
    made = [p for p in tmp_path.rglob("figures") if p.is_dir()]
    assert made == []
