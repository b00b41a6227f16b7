"""The tour: every netlens method on a network trained in a minute, as one web page.

:func:`run_tour` trains :class:`~netlens.models.SmallResNet` on scikit-learn's
handwritten digits (no download) and a self-supervised twin of the same
architecture that only learns to tell which way a digit was turned
(:func:`~netlens.datasets.rotate_batch`, Gidaris et al. 2018). It then looks
inside both with every netlens method and writes the pictures, plus an
``index.html`` that shows them with the measured numbers. This is what
``netlens tour`` runs.

The tour writes the files named in :data:`FIGURES` and :data:`INDEX` and
nothing else, so running it again into the same folder replaces its own
files and leaves anything else there alone.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from tqdm.auto import tqdm

from netlens import viz
from netlens.ablate import AblationSearch, fewest_units_to_flip
from netlens.app.files import shown
from netlens.app.tour_page import Number, write_index
from netlens.attribution import METHODS
from netlens.datasets import DIGIT_CLASSES, Split, load_digits, rotate_batch
from netlens.embedding import EmbeddingProbe, compare
from netlens.extract import FeatureExtractor
from netlens.models import History, SmallResNet, accuracy, train_classifier

#: The pictures the tour writes, in the order the page shows them.
FIGURES: tuple[str, ...] = (
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
)
#: The page that shows them.
INDEX = "index.html"

#: The attribution methods ``attributions.png`` shows, by their name in ``METHODS``.
TOUR_METHODS: tuple[str, ...] = ("cam", "gradcam", "saliency")

IMAGE_SIZE = 32
ABLATED_LAYER = "layer4"
NEIGHBOURS = 10
SHOWN_NEIGHBOURS = 5


@dataclass(frozen=True)
class Budget:
    """How much work the tour does.

    Attributes
    ----------
    epochs
        Training epochs of the digit classifier.
    rotation_epochs
        Training epochs of the rotation twin (each sees every image four times).
    train_images, test_images
        Use only the first this many images of each split (``None``: all
        1,347 / 450).
    width
        Channels of the first stage of both networks.
    tsne_iterations
        Optimisation steps of each t-SNE map (at least 250).
    ablation_images
        Test digits searched for the fewest units that flip their prediction.
    """

    epochs: int = 3
    rotation_epochs: int = 1
    train_images: int | None = None
    test_images: int | None = None
    width: int = 16
    tsne_iterations: int = 1000
    ablation_images: int = 20


#: The budget of ``netlens tour``: under two minutes on two CPU cores.
DEFAULT = Budget()

#: A budget of seconds, for trying the tour out and for tests; the networks learn little.
QUICK = Budget(
    epochs=1,
    rotation_epochs=1,
    train_images=160,
    test_images=80,
    width=8,
    tsne_iterations=250,
    ablation_images=3,
)


@dataclass
class TourResult:
    """What :func:`run_tour` wrote and measured.

    Attributes
    ----------
    index
        The page, ``out_dir / INDEX``.
    figures
        The pictures, in the order of :data:`FIGURES`.
    numbers
        The measured numbers shown on the page, by key (``"test_accuracy"``,
        ``"knn_supervised"``, ``"knn_rotation"``, ``"knn_untrained"``,
        ``"rotation_accuracy"``, ``"neighbour_overlap"``, ``"flip_count"``,
        ``"flip_median"``); ``None`` where a search found nothing.
    seconds
        Wall time of the whole tour.
    """

    index: Path
    figures: list[Path]
    numbers: dict[str, float | int | None] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Nets:
    classifier: nn.Module
    twin: nn.Module
    untrained: nn.Module
    classifier_history: History
    twin_history: History


@dataclass
class _Measured:
    numbers: dict[str, float | int | None]
    probes: dict[str, EmbeddingProbe]
    tsne: dict[str, np.ndarray]
    searches: list[AblationSearch]
    example: int  # the test digit whose ablation is shown
    k: int  # neighbours of the kNN numbers
    units: int  # channels of ABLATED_LAYER

    @property
    def search(self) -> AblationSearch:
        return self.searches[self.example]


def run_tour(
    out_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    budget: Budget = DEFAULT,
    progress: bool = True,
) -> TourResult:
    """Train the digit networks, run every netlens method, write figures and a page.

    Parameters
    ----------
    out_dir
        Folder for the files of :data:`FIGURES` and :data:`INDEX`; made if
        missing. Other files in it are left alone.
    device
        Where the networks train and run (``"cpu"``, ``"cuda"``, ...).
    seed
        Seeds the data split, the initial weights and the training order.
    budget
        How much to train and measure; :data:`QUICK` runs in seconds.
    progress
        Print what is being done and show progress bars.

    Returns
    -------
    TourResult
        Paths of the page and the figures, and the measured numbers.

    Examples
    --------
    >>> import tempfile
    >>> result = run_tour(tempfile.mkdtemp(), budget=QUICK, progress=False)  # doctest: +SKIP
    >>> result.index.name, len(result.figures)  # doctest: +SKIP
    ('index.html', 10)
    """
    start = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(
            f"{shown(out)} exists and is not a folder; choose another output folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    say: Callable[[str], None] = tqdm.write if progress else (lambda _: None)

    train, test = load_digits(IMAGE_SIZE, seed=seed)
    train, test = train.first(budget.train_images), test.first(budget.test_images)
    nets = _train(train, test, budget, device, seed, progress, say)
    say("measuring: accuracies, nearest neighbours, t-SNE, unit ablation")
    measured = _measure(nets, test, budget, device, seed, progress)
    figures = _write_figures(out, _draw(nets, measured, test, device), progress)
    seconds = time.perf_counter() - start
    settings = (
        f"SmallResNet (width {budget.width}) on {len(train)} training and {len(test)} test "
        f"digits of {IMAGE_SIZE}x{IMAGE_SIZE} pixels; {budget.epochs} epoch(s) for the "
        f"classifier, {budget.rotation_epochs} for the rotation twin; seed {seed}, "
        f"device {device.type}; made in {seconds:.0f} s."
    )
    index = _write_page(out, measured, settings)
    return TourResult(index, figures, measured.numbers, seconds)


def _measure(
    nets: _Nets, test: Split, budget: Budget, device: torch.device, seed: int, progress: bool
) -> _Measured:
    """Every number of the page, and the embeddings and searches the figures show."""
    rotated = Split(*rotate_batch(test.images, test.labels))
    probes = {
        name: EmbeddingProbe(net).fit(test.images, test.labels, progress=progress)
        for name, net in (
            ("supervised", nets.classifier),
            ("rotation", nets.twin),
            ("untrained", nets.untrained),
        )
    }
    k = min(NEIGHBOURS, len(test) - 1)
    both = compare(probes["supervised"], probes["rotation"], k=k)
    searches = [
        fewest_units_to_flip(nets.classifier, test.images[i : i + 1].to(device), ABLATED_LAYER)
        for i in range(min(budget.ablation_images, len(test)))
    ]
    example = _ablation_example(searches, test.labels)
    counts = [s.count for s in searches if s.count is not None]
    numbers: dict[str, float | int | None] = {
        "test_accuracy": nets.classifier_history.val_accuracy[-1],
        "rotation_accuracy": accuracy(nets.twin, rotated),
        "knn_supervised": both.knn_accuracy_a,
        "knn_rotation": both.knn_accuracy_b,
        "knn_untrained": probes["untrained"].knn_accuracy(k),
        "neighbour_overlap": both.overlap,
        "flip_count": searches[example].count,
        "flip_median": statistics.median(counts) if counts else None,
    }
    tsne = {
        name: probes[name].tsne(seed=seed, max_iter=max(250, budget.tsne_iterations))
        for name in ("supervised", "rotation")
    }
    units = nets.classifier.fc.in_features
    return _Measured(numbers, probes, tsne, searches, example, both.k, units)


def _draw(
    nets: _Nets, measured: _Measured, test: Split, device: torch.device
) -> dict[str, Callable[[], Figure]]:
    """How to draw each picture of :data:`FIGURES`, in that order."""
    shown = _one_per_class(test.labels, 6)
    x = test.images[shown].to(device)
    probes, k = measured.probes, measured.k
    figures: dict[str, Callable[[], Figure]] = {
        "training.png": lambda: _training(nets.classifier_history, nets.twin_history),
        "filters_conv1.png": lambda: _filters(nets.classifier.conv1),
        "filters_layer3.png": lambda: _filters(nets.classifier.layer3.conv1),
        "activations_layer1.png": lambda: _activations(nets.classifier, x),
        "activations_pca.png": lambda: _activations_pca(nets.classifier, x),
        "ablation.png": lambda: _ablation(
            measured.search, test.images[measured.example], measured.units
        ),
        "attributions.png": lambda: _attributions(nets.classifier, x, test.labels[shown]),
        "tsne.png": lambda: _tsne(measured.tsne, test.labels, measured.numbers),
        "neighbours_supervised.png": lambda: _neighbours(probes["supervised"], test, shown, k),
        "neighbours_rotation.png": lambda: _neighbours(probes["rotation"], test, shown, k),
    }
    assert tuple(figures) == FIGURES
    return figures


def _write_figures(
    out: Path, figures: dict[str, Callable[[], Figure]], progress: bool
) -> list[Path]:
    paths = []
    for name, draw in tqdm(figures.items(), desc="figures", unit="figure", disable=not progress):
        draw().savefig(out / name, dpi=100)
        paths.append(out / name)
    return paths


def _write_page(out: Path, measured: _Measured, settings: str) -> Path:
    searched = len(measured.searches)
    flipped = sum(s.count is not None for s in measured.searches)
    rows = _number_rows(
        measured.numbers, measured.k, searched, flipped, measured.units, measured.search
    )
    captions = _captions(measured.search, measured.units, measured.k)
    return write_index(out / INDEX, rows, {name: captions[name] for name in FIGURES}, settings)


def _train(
    train: Split,
    test: Split,
    budget: Budget,
    device: torch.device,
    seed: int,
    progress: bool,
    say: Callable[[str], None],
) -> _Nets:
    torch.manual_seed(seed)
    classifier = SmallResNet(len(DIGIT_CLASSES), 1, budget.width).to(device)
    untrained = copy.deepcopy(classifier).eval()
    torch.manual_seed(seed + 1)
    twin = SmallResNet(4, 1, budget.width).to(device)
    say(f"training the digit classifier on {len(train)} digits")
    classifier_history = train_classifier(
        classifier, train, test, epochs=budget.epochs, seed=seed, progress=progress
    )
    say("training the rotation twin on the same digits, each turned 4 ways, without labels")
    twin_history = train_classifier(
        twin,
        train,
        None,
        epochs=budget.rotation_epochs,
        seed=seed,
        progress=progress,
        transform=rotate_batch,
    )
    return _Nets(classifier, twin, untrained, classifier_history, twin_history)


def _ablation_example(searches: list[AblationSearch], labels: Tensor) -> int:
    """A correctly classified digit whose prediction flips, else the first digit."""
    for i, search in enumerate(searches):
        if search.count is not None and search.original_class == int(labels[i]):
            return i
    return 0


def _one_per_class(labels: Tensor, count: int) -> list[int]:
    picked: list[int] = []
    seen: set[int] = set()
    for i, label in enumerate(labels.tolist()):
        if label not in seen:
            seen.add(label)
            picked.append(i)
        if len(picked) == count:
            break
    return sorted(picked)


def _training(classifier: History, twin: History) -> Figure:
    figure = Figure(figsize=(9, 3.4), layout="constrained")
    loss_ax, accuracy_ax = figure.subplots(1, 2)
    for history, label in ((classifier, "digit classifier"), (twin, "rotation twin")):
        epochs = range(1, len(history.train_loss) + 1)
        loss_ax.plot(epochs, history.train_loss, marker="o", label=label)
    epochs = range(1, len(classifier.val_accuracy) + 1)
    accuracy_ax.plot(epochs, classifier.val_accuracy, marker="o", label="digit classifier")
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    accuracy_ax.set(title="test accuracy", xlabel="epoch", ylim=(0, 1.02))
    loss_ax.legend()
    longest = max(len(classifier.train_loss), len(twin.train_loss))
    for ax in (loss_ax, accuracy_ax):
        ax.set_xticks(range(1, longest + 1))
    return figure


def _filters(conv: nn.Conv2d) -> Figure:
    figure = Figure(figsize=(4.2, 4.4), layout="constrained")
    viz.filter_grid(conv, ax=figure.subplots())
    return figure


def _activations(model: nn.Module, x: Tensor) -> Figure:
    features = FeatureExtractor(model, "layer1")(x)["layer1"]
    channels, images = 8, min(4, len(x))
    figure = Figure(figsize=(1.6 * channels, 1.6 * images + 0.3), layout="constrained")
    return viz.activation_grid(features, channels=channels, images=images, fig=figure)


def _activations_pca(model: nn.Module, x: Tensor) -> Figure:
    x = x[:4]
    features = FeatureExtractor(model, ["layer1", "layer2", "layer4"])(x)
    pca = {name: viz.reduce_channels(features[name], "pca") for name in ("layer1", "layer2")}
    strongest = viz.reduce_channels(features["layer4"], "max")
    columns = ["digit", "layer1: PCA to RGB", "layer2: PCA to RGB", "layer4: max over units"]
    figure = Figure(figsize=(2.1 * len(columns), 2.1 * len(x) + 0.3), layout="constrained")
    axes = figure.subplots(len(x), len(columns), squeeze=False)
    for row, image in enumerate(x):
        axes[row, 0].imshow(image[0].cpu(), cmap="gray")
        axes[row, 1].imshow(pca["layer1"][row].cpu(), interpolation="nearest")
        axes[row, 2].imshow(pca["layer2"][row].cpu(), interpolation="nearest")
        viz.overlay(image, strongest[row], ax=axes[row, 3])
        for ax in axes[row]:
            ax.set_axis_off()
    for ax, title in zip(axes[0], columns, strict=True):
        ax.set_title(title, fontsize=9)
    return figure


def _ablation(search: AblationSearch, image: Tensor, units: int) -> Figure:
    figure = Figure(figsize=(12, 3.6), layout="constrained")
    left, right = figure.subfigures(1, 2, width_ratios=[1, 3.4])
    ax = left.subplots()
    ax.imshow(image[0].cpu(), cmap="gray")
    ax.set_axis_off()
    ax.set_title(f"digit, predicted {DIGIT_CLASSES[search.original_class]}")
    before, after = search.logits_before.softmax(0), search.logits_after.softmax(0)
    viz.ablation_comparison(before, after, DIGIT_CLASSES, k=5, fig=right)
    for panel in right.axes:
        panel.set_xlabel("probability")
    if search.count is None:
        headline = f"no number of the {units} {ABLATED_LAYER} units changes this prediction"
    else:
        headline = (
            f"{search.count} of {units} {ABLATED_LAYER} units off: "
            f"{DIGIT_CLASSES[search.original_class]} becomes {DIGIT_CLASSES[search.new_class]}"
        )
    figure.suptitle(headline)
    return figure


def _attributions(model: nn.Module, x: Tensor, labels: Tensor) -> Figure:
    predicted = _predict(model, x)
    maps = {METHODS[name].title: METHODS[name](model)(x).cpu() for name in TOUR_METHODS}
    titles = [f"{int(p)} (true {int(t)})" for p, t in zip(predicted, labels, strict=True)]
    figure = Figure(figsize=(2.4 * (1 + len(maps)), 2.4 * len(x) + 0.3), layout="constrained")
    return viz.attribution_grid(x.cpu(), maps, titles=titles, fig=figure)


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model.eval()(x).argmax(1).cpu()


def _tsne(
    maps: dict[str, np.ndarray], labels: Tensor, numbers: dict[str, float | int | None]
) -> Figure:
    titles = (
        f"digit classifier (kNN accuracy {numbers['knn_supervised']:.2f})",
        f"rotation twin, no labels (kNN accuracy {numbers['knn_rotation']:.2f})",
    )
    figure = Figure(figsize=(11, 4.8), layout="constrained")
    return viz.compare_tsne(
        maps["supervised"], maps["rotation"], labels, titles, class_names=DIGIT_CLASSES, fig=figure
    )


def _neighbours(probe: EmbeddingProbe, test: Split, shown: list[int], k: int) -> Figure:
    indices, distances = probe.knn(probe.features, k=k, exclude_self=True)
    count = min(SHOWN_NEIGHBOURS, k)
    rows = torch.tensor(shown)
    figure = Figure(figsize=(1.3 * (count + 1), 1.45 * len(shown) + 0.3), layout="constrained")
    return viz.neighbour_grid(
        test.images[rows],
        test.images,
        indices[rows, :count],
        query_labels=test.labels[rows],
        bank_labels=test.labels,
        class_names=DIGIT_CLASSES,
        distances=distances[rows, :count],
        fig=figure,
    )


def _number_rows(
    numbers: dict[str, float | int | None],
    k: int,
    searched: int,
    flipped: int,
    units: int,
    search: AblationSearch,
) -> list[Number]:
    flip = numbers["flip_count"]
    change = (
        f" ({DIGIT_CLASSES[search.original_class]} becomes {DIGIT_CLASSES[search.new_class]})"
        if flip is not None
        else ""
    )
    return [
        Number("test_accuracy", "digit classifier: test accuracy", numbers["test_accuracy"]),
        Number(
            "rotation_accuracy",
            "rotation twin: tells how a test digit was turned (chance 0.25)",
            numbers["rotation_accuracy"],
        ),
        Number(
            "knn_supervised",
            f"kNN accuracy ({k} neighbours, leave-one-out) in the digit classifier's features",
            numbers["knn_supervised"],
        ),
        Number(
            "knn_rotation",
            "kNN accuracy in the rotation twin's features (it never saw a digit label)",
            numbers["knn_rotation"],
        ),
        Number(
            "knn_untrained",
            "kNN accuracy in the features of the classifier before training",
            numbers["knn_untrained"],
        ),
        Number(
            "neighbour_overlap",
            f"share of the {k} nearest neighbours both trained networks agree on",
            numbers["neighbour_overlap"],
        ),
        Number(
            "flip_count",
            f"fewest of {units} {ABLATED_LAYER} units to switch off to change the example's "
            f"prediction{change}",
            flip,
        ),
        Number(
            "flip_median",
            f"the same, median over the first {searched} test digits ({flipped} could be "
            "changed at all)",
            numbers["flip_median"],
        ),
    ]


def _captions(search: AblationSearch, units: int, k: int) -> dict[str, str]:
    if search.count is None:
        ablation = (
            f"No number of the top-ranked {ABLATED_LAYER} units changes this digit's "
            "prediction (class probabilities with and without them)."
        )
    else:
        ablation = (
            f"Switching off the {search.count} {ABLATED_LAYER} units (of {units}) with the "
            f"largest classifier weight for {DIGIT_CLASSES[search.original_class]} turns the "
            f"prediction into {DIGIT_CLASSES[search.new_class]}: class probabilities before "
            "and after."
        )
    return {
        "training.png": "Training: cross-entropy per epoch of both networks, and the "
        "digit classifier's test accuracy.",
        "filters_conv1.png": "The first layer's 3x3 filters, on one gray scale for the "
        "whole layer.",
        "filters_layer3.png": "Filters of layer3.conv1, each shown as the mean over its "
        "input channels.",
        "activations_layer1.png": "Feature maps of layer1: eight channels for four test "
        "digits, each panel scaled on its own.",
        "activations_pca.png": "Every pixel's channel vector of layer1 and layer2 projected "
        "on three principal components (as RGB), and layer4's strongest unit laid over the "
        "digit.",
        "ablation.png": ablation,
        "attributions.png": f"Where the classifier looks for its prediction: {_methods()}.",
        "tsne.png": "t-SNE maps of the test digits in the penultimate features of both "
        "networks, coloured by the true digit.",
        "neighbours_supervised.png": f"Nearest neighbours (cosine, of {k}) among the test "
        "digits in the digit classifier's features; red frames mark another digit.",
        "neighbours_rotation.png": "The same queries in the rotation twin's features.",
    }


def _methods() -> str:
    """The methods of :data:`TOUR_METHODS` in words, by where they read the network."""
    at_layer = [METHODS[n].title for n in TOUR_METHODS if METHODS[n].needs_layer]
    at_input = [METHODS[n].title for n in TOUR_METHODS if not METHODS[n].needs_layer]
    groups = []
    if at_layer:
        groups.append(f"{', '.join(at_layer)} (at the last feature map)")
    if at_input:
        groups.append(f"{', '.join(at_input)} (at the input)")
    return " and ".join(groups)
