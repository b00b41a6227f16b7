"""Shared fixtures: a matrix of torchvision CNNs with random weights, and state snapshots."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from netlens.testing import assert_unchanged, snapshot  # noqa: F401 - tests import them from here

# Families that cover the ways torchvision CNNs are wired: residual blocks with a
# shared ReLU, dense concatenation with a functional ReLU, inverted residuals,
# squeeze-excitation, a convolutional classifier, channels-last blocks with
# LayerNorm, inception branches, plain VGG stacks with inplace ReLU.
MODEL_NAMES = [
    "resnet18",
    "resnet50",
    "vgg11_bn",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "squeezenet1_1",
    "convnext_tiny",
    "regnet_y_400mf",
    "googlenet",
    "shufflenet_v2_x0_5",
]

# Models whose logits are one linear map of the global average of a feature map.
GAP_LINEAR = [
    "resnet18",
    "resnet50",
    "densenet121",
    "mobilenet_v2",
    "efficientnet_b0",
    "regnet_y_400mf",
    "googlenet",
    "shufflenet_v2_x0_5",
]

INPUT_SIZE = 64


@functools.cache
def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs)
    return model.eval()


def get_model(name: str) -> nn.Module:
    """A cached torchvision model in eval mode (tests must leave it as they found it)."""
    model = _build(name)
    model.eval()
    return model


@pytest.fixture(params=MODEL_NAMES)
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE, generator=generator)


def devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    return found


@pytest.fixture
def figure_dir() -> str | None:
    """Folder to save test figures in, from NETLENS_TEST_FIGURES (unset: none saved)."""
    path = os.environ.get("NETLENS_TEST_FIGURES")
    if path:
        os.makedirs(path, exist_ok=True)
    return path


class SmallCNN(nn.Module):
    """conv-BN-ReLU-conv-ReLU, global average, linear: small, with every rule's layer type."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU()
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class FreezesOnEval(SmallCNN):
    """A ``train()`` override with a side effect: eval mode freezes the head."""

    def train(self, mode: bool = True) -> FreezesOnEval:
        super().train(mode)
        self.fc.requires_grad_(mode)
        return self


def guided_relus(model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Guided-backpropagation backward hooks on every ReLU (negative gradients blocked)."""

    def clamp(module, grad_input, grad_output):
        return (grad_input[0].clamp(min=0),)

    return [m.register_full_backward_hook(clamp) for m in model.modules() if isinstance(m, nn.ReLU)]


#: Cheaper settings for methods whose cost is a multiple of one gradient pass, used
#: where generic tests run every registered method (their defaults are tested in the
#: method's own test file).
QUICK_OPTIONS = {
    "IntegratedGradients": {"steps": 4},
    "SmoothGrad": {"samples": 3},
    # One batch of every channel: the part below the layer runs once per image.
    "AblationCAM": {"batch_size": 4096},
}


#: Default layers with fewer channels for Score-CAM, which runs the whole network on one
#: masked image per channel: ResNet-18's ``layer2`` (128 channels, 8 x 8 at 64 pixels)
#: instead of its ``layer4`` (512), a quarter of the passes. The default layer itself is
#: found by the base every layer method shares, tested with all of them.
QUICK_LAYERS = {"ScoreCAM": {torchvision.models.ResNet: "layer2"}}


def quick(cls):
    """``cls``, or a subclass of it whose constructor defaults to :data:`QUICK_OPTIONS`
    (and, on the models :data:`QUICK_LAYERS` names, to their layers)."""
    options = QUICK_OPTIONS.get(cls.__name__, {})
    layers = QUICK_LAYERS.get(cls.__name__, {})
    if not options and not layers:
        return cls

    def __init__(self, model, *args, **kwargs):
        if not args and kwargs.get("layer") is None:
            for kind, layer in layers.items():
                if isinstance(model, kind):
                    kwargs["layer"] = layer
        cls.__init__(self, model, *args, **{**options, **kwargs})

    return type(cls.__name__, (cls,), {"title": cls.title, "__init__": __init__})


def quick_methods() -> dict:
    """Every registered method by name, with :func:`quick` settings."""
    from netlens.attribution import METHODS

    return {name: quick(cls) for name, cls in METHODS.items()}


#: Models on which generic tests run Score-CAM, whose cost is one full forward pass
#: per channel of the layer (512 to 2048 on the default layers): the small ones.
PER_CHANNEL_MODELS = {"resnet18", "mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5"}


def skip_if_per_channel_on_a_large_model(method, name: str) -> None:
    """Skip a generic test of Score-CAM on a model outside :data:`PER_CHANNEL_MODELS`."""
    if getattr(method, "__name__", "") == "ScoreCAM" and name not in PER_CHANNEL_MODELS:
        pytest.skip("Score-CAM runs a forward pass per channel; tested on the small models")


# --- pages in a headless browser ----------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")


class _LoadNote(HTMLParser):
    """The ``#images-loaded`` element that netlens pages fill in once their images loaded."""

    def __init__(self) -> None:
        super().__init__()
        self.note: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id") == "images-loaded":
            self.note = found


@pytest.fixture
def images_loaded(tmp_path) -> Callable[[Path], tuple[str | None, str | None]]:
    """``(data-loaded, data-total)`` of a netlens page as headless Chromium renders it.

    Skips without a browser, unless ``NETLENS_REQUIRE_BROWSER`` is set (CI), which fails.
    """
    if not CHROMIUM.exists():
        if os.environ.get("NETLENS_REQUIRE_BROWSER"):
            pytest.fail(f"NETLENS_REQUIRE_BROWSER is set but there is no browser at {CHROMIUM}")
        pytest.skip(f"no headless browser at {CHROMIUM}")

    def rendered(index: Path) -> tuple[str | None, str | None]:
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
        parser = _LoadNote()
        parser.feed(result.stdout)
        assert parser.note is not None, "the page's image check did not run"
        return parser.note["data-loaded"], parser.note["data-total"]

    return rendered
