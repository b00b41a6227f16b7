"""``netlens dissect``: which units of a network detect which concepts, as a web page.

By default the command trains the scene network of
:func:`netlens.models.scenes.train_scene_classifier` (a minute or two on a
CPU), dissects its ``layer4`` and that of the same network before training
(the control) on held-out synthetic scenes, and writes ``index.html`` with the
units and their concepts. With ``--arch`` it dissects a torchvision
architecture instead (``--weights`` a state dict or weights name), on a
folder of images with concept masks laid out as

.. code-block:: text

    FOLDER/
      images/        one picture per sample: street.jpg, beach.png, ...
      masks/
        sky/         one mask per sample that shows the concept, named after
          street.png   the picture (any image format): nonzero pixels are the
          beach.png    concept; no file means the concept is absent there
        building/
          street.png

Every picture and mask is resized to ``--input-size`` (bilinear for the
pictures, nearest for the masks); the control is the same architecture with
random weights. The command writes the files named in :data:`FILES` and
nothing else.
"""

from __future__ import annotations

import argparse
import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from netlens.app.arguments import integer_at_least
from netlens.app.files import shown
from netlens.app.tour_page import html_figure, html_page
from netlens.dissect import Dissection, dissect

__all__ = ["FILES", "add_dissect_parser", "dissect_main", "load_folder"]

#: What the command writes into ``--out``.
FILES: tuple[str, ...] = ("index.html", "units.csv", "concepts.png", "samples.png")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_SHOWN_CONCEPTS = ("sky", "building")


@dataclass
class _Run:
    """What one run measured, ready for the page."""

    title: str
    settings: str
    quantiles: list[tuple[str, float, str | None]]  # label, quantile, concept it suits
    trained: dict[str, Dissection]  # by quantile label
    control: dict[str, Dissection]
    images: Tensor
    masks: dict[str, Tensor]
    display: Callable[[Tensor], Tensor]


def add_dissect_parser(commands: argparse._SubParsersAction, common: argparse.ArgumentParser):
    """Add ``netlens dissect`` to the subcommands of the ``netlens`` parser.

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_dissect_parser(parser.add_subparsers(dest="command"), argparse.ArgumentParser(
    ...     add_help=False))
    >>> args = parser.parse_args(["dissect", "--out", "report"])
    >>> args.command, args.out.name, args.quantile, args.arch
    ('dissect', 'report', 0.005, None)
    """
    parser = commands.add_parser(
        "dissect",
        parents=[common],
        help="find the units of a network that detect concepts (sky, building, ...); "
        "write index.html",
        description="Network dissection: score every unit of a layer against concept masks "
        "over a dataset (IoU of its top-quantile region with each concept), for a network "
        "and for the same network untrained (the control), and write the units and their "
        "concepts as index.html. By default a small ResNet is trained on synthetic scenes "
        "(a minute or two) and dissected on held-out scenes; with --arch, a torchvision "
        "network is dissected on a folder of images and masks (FOLDER/images/NAME.png, "
        "FOLDER/masks/CONCEPT/NAME.png).",
    )
    parser.add_argument(
        "--out",
        default=Path("netlens-dissect"),
        type=Path,
        help="folder to write (default: %(default)s)",
    )
    parser.add_argument(
        "--quantile",
        default=0.005,
        type=_quantile,
        help="share of each unit's activations above its threshold (default: %(default)s, "
        "as Bau et al.); each concept is also dissected at its own pixel share",
    )
    parser.add_argument("--layer", help="layer to dissect (default: layer4, or the last block)")
    parser.add_argument("--seed", default=0, type=int, help="seed of weights and scenes")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    parser.add_argument(
        "--images",
        default=600,
        type=integer_at_least(1),
        help="held-out scenes to dissect on (default: %(default)s)",
    )
    parser.add_argument("--arch", help="torchvision architecture to dissect instead, e.g. resnet18")
    parser.add_argument(
        "--weights", help="with --arch: a state dict file, or a torchvision weights name"
    )
    parser.add_argument("--data", type=Path, help="with --arch: the folder of images and masks")
    parser.add_argument(
        "--input-size",
        default=224,
        type=integer_at_least(1),
        help="with --arch: side images are resized to (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(run=dissect_main, parser=parser)


def _quantile(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {value}")
    return value


def dissect_main(args: argparse.Namespace) -> int:
    """Run ``netlens dissect`` with parsed ``args``; write the report and return 0.

    Raises
    ------
    ValueError
        For options that do not go together (``--data`` without ``--arch``).
    netlens.errors.InputFileError
        For a data folder, picture or mask that cannot be read.
    """
    if args.arch is None and (args.weights is not None or args.data is not None):
        raise ValueError("--weights and --data go with --arch; without it the scene network runs")
    if args.arch is not None and args.data is None:
        raise ValueError("--arch needs --data, the folder of images/ and masks/")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{shown(out)} exists and is not a folder; choose another")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA is not available on this machine; use --device cpu")
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # Small networks lose little on one thread; threads that wait for busy cores lose a lot.
        torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        run = _scenes_run(args, device) if args.arch is None else _folder_run(args, device)
    finally:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    seconds = time.perf_counter() - start
    _write(out, run, seconds)
    for concept in _shown(run.masks):
        parts = []
        for label, _, suits in run.quantiles:
            if suits not in (None, concept):
                continue
            trained = _best(run.trained[label], concept)
            control = _best(run.control[label], concept)
            parts.append(
                f"{label}: unit {trained[0]} IoU {trained[1]:.3f} (untrained best {control[1]:.3f})"
            )
        print(f"{concept}: " + "; ".join(parts))
    print(f"index: {shown((out / 'index.html').resolve())} ({seconds:.0f} s)")
    return 0


# -- the two kinds of run -----------------------------------------------------------


def _scenes_run(args: argparse.Namespace, device: torch.device) -> _Run:
    from netlens.datasets import scenes
    from netlens.models.scenes import scene_network, train_scene_classifier

    quick = bool(getattr(args, "quick", False))
    size = 32 if quick else 64
    budget = {"images": 240, "val_images": 60, "epochs": 1} if quick else {}
    trained = train_scene_classifier(
        size=size, seed=args.seed, device=device, progress=True, **budget
    )
    control = scene_network(seed=args.seed).to(device)
    data = scenes(min(args.images, 60) if quick else args.images, size=size, seed=args.seed)
    layer = args.layer or "layer4"
    run = _dissect_both(trained.model, control, layer, data.images, data.masks, args.quantile)
    settings = (
        f"SmallResNet (width 8) trained for {len(trained.history.val_accuracy)} epoch(s) on "
        f"synthetic {size}x{size} scenes in {trained.seconds:.0f} s, validation accuracy "
        f"{trained.val_accuracy:.3f}; {layer} dissected on {len(data)} held-out scenes "
        f"(seed {args.seed}); control: the same network before training."
    )
    return _Run(
        title="netlens dissect: the scene network",
        settings=settings,
        images=data.images,
        masks=data.masks,
        display=lambda x: x,
        **run,
    )


def _folder_run(args: argparse.Namespace, device: torch.device) -> _Run:
    from netlens.app.files import apply_state_dict, load_state_dict
    from netlens.layers import find_feature_layer
    from netlens.models import load_torchvision_classifier
    from netlens.viz import IMAGENET_MEAN, IMAGENET_STD

    images, masks = load_folder(args.data, args.input_size)
    weights_path = Path(args.weights) if args.weights is not None else None
    if weights_path is not None and weights_path.exists():
        model, _ = load_torchvision_classifier(args.arch, weights=None)
        apply_state_dict(model, load_state_dict(weights_path), source=shown(weights_path))
        source = shown(weights_path)
    else:
        model, _ = load_torchvision_classifier(args.arch, weights=args.weights or "DEFAULT")
        source = f"{args.weights or 'DEFAULT'} weights"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        control, _ = load_torchvision_classifier(args.arch, weights=None)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (images - mean) / std
    model, control = model.eval().to(device), control.eval().to(device)
    layer = args.layer or find_feature_layer(model, x[:1].to(device))
    run = _dissect_both(model, control, layer, x, masks, args.quantile)
    settings = (
        f"{args.arch} ({source}); {layer} dissected on {len(images)} images of "
        f"{shown(args.data)} at {args.input_size}x{args.input_size}; control: {args.arch} "
        f"with random weights (seed {args.seed})."
    )
    return _Run(
        title=f"netlens dissect: {args.arch}",
        settings=settings,
        images=images,
        masks=masks,
        display=lambda x: x,
        **run,
    )


def _dissect_both(
    model: nn.Module,
    control: nn.Module,
    layer: str,
    images: Tensor,
    masks: dict[str, Tensor],
    quantile: float,
) -> dict[str, object]:
    """Both networks at ``quantile`` and at each concept's own pixel share."""
    trained: dict[str, Dissection] = {}
    untrained: dict[str, Dissection] = {}
    label = f"quantile {quantile:g}"
    trained[label] = dissect(model, layer, images, masks, quantile=quantile)
    untrained[label] = dissect(control, layer, images, masks, quantile=quantile)
    shares = {c: float(m.float().mean()) for c, m in masks.items()}
    quantiles: list[tuple[str, float, str | None]] = [(label, quantile, None)]
    for concept in _shown(masks):
        share = shares[concept]
        if not 0.0 < share < 1.0 or abs(share - quantile) < 1e-9:
            continue
        key = f"quantile {share:.3f} ({concept}'s share)"
        trained[key] = dissect(model, layer, images, masks, quantile=share)
        untrained[key] = dissect(control, layer, images, masks, quantile=share)
        quantiles.append((key, share, concept))
    return {"quantiles": quantiles, "trained": trained, "control": untrained}


def _shown(masks: dict[str, Tensor]) -> list[str]:
    """The concepts the page looks at closely: sky and building, else the two largest."""
    present = {c: float(m.float().mean()) for c, m in masks.items()}
    present = {c: share for c, share in present.items() if share > 0}
    if not present:
        raise ValueError("no mask of the data covers any pixel; there is no concept to find")
    chosen = [c for c in _SHOWN_CONCEPTS if c in present]
    return chosen or sorted(present, key=present.get, reverse=True)[:2]


def _best(found: Dissection, concept: str) -> tuple[int, float]:
    if float(found.concept_fraction[found.concepts.index(concept)]) == 0.0:
        return -1, 0.0
    return found.top(concept, 1)[0]


def load_folder(folder: str | Path, size: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Read ``folder/images/*`` and ``folder/masks/CONCEPT/*`` (layout in the module docstring).

    Returns ``(N, 3, size, size)`` pictures in [0, 1], in file-name order,
    and ``{concept: (N, size, size) bool}``.

    Raises
    ------
    netlens.errors.InputFileError
        When a folder is missing or empty, a file is not an image, or a mask
        names no picture.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "images").mkdir(); (root / "masks" / "sky").mkdir(parents=True)
    >>> Image.new("RGB", (40, 30), "blue").save(root / "images" / "a.png")
    >>> Image.new("L", (40, 30), 255).save(root / "masks" / "sky" / "a.png")
    >>> images, masks = load_folder(root, 16)
    >>> images.shape, masks["sky"].shape, bool(masks["sky"].all())
    (torch.Size([1, 3, 16, 16]), torch.Size([1, 16, 16]), True)
    """
    import torch.nn.functional as F

    from netlens.app.files import read_image
    from netlens.errors import InputFileError

    root = Path(folder)
    pictures_dir, masks_dir = root / "images", root / "masks"
    for needed in (pictures_dir, masks_dir):
        if not needed.is_dir():
            raise InputFileError(
                f"{shown(needed)} is not a folder; the data folder needs images/ and masks/"
            )
    files = sorted(p for p in pictures_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise InputFileError(f"{shown(pictures_dir)} holds no picture")
    stems = {p.stem: i for i, p in enumerate(files)}
    concepts = sorted(p for p in masks_dir.iterdir() if p.is_dir())
    if not concepts:
        raise InputFileError(f"{shown(masks_dir)} holds no concept folder (masks/CONCEPT/)")

    def load(path: Path, mode: str) -> Tensor:
        picture = read_image(path)
        array = np.asarray(picture.convert(mode), dtype=np.float32)
        tensor = torch.from_numpy(array.copy())
        tensor = tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor[None]
        how = {"mode": "bilinear", "align_corners": False} if mode == "RGB" else {"mode": "nearest"}
        return F.interpolate(tensor[None], size=(size, size), **how)[0]

    images = torch.stack([load(p, "RGB") / 255.0 for p in files]).clamp(0, 1)
    masks: dict[str, Tensor] = {}
    for concept_dir in concepts:
        mask = torch.zeros(len(files), size, size, dtype=torch.bool)
        for path in sorted(concept_dir.iterdir()):
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            if path.stem not in stems:
                raise InputFileError(
                    f"{shown(path)} names no picture: images/ has no {path.stem}.*"
                )
            mask[stems[path.stem]] = load(path, "L")[0] > 0
        masks[concept_dir.name] = mask
    return images, masks


# -- the page -------------------------------------------------------------------------

_STYLE = """
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
td.n { font-variant-numeric: tabular-nums; text-align: right; }
"""


def _write(out: Path, run: _Run, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    first = run.quantiles[0][0]
    trained = run.trained[first]
    concepts = list(run.masks)
    shown_concepts = _shown(run.masks)

    own = {suits: label for label, _, suits in run.quantiles if suits is not None}
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    axes = figure.subplots(1, 2 if own else 1, squeeze=False, width_ratios=[3, 1] if own else None)
    panels = [(axes[0, 0], concepts, lambda c: first, first)]
    if own:
        panels.append((axes[0, 1], list(own), lambda c: own[c], "each at its own share"))
    for ax, names, label_of, title in panels:
        positions = np.arange(len(names))
        best = [_best(run.trained[label_of(c)], c)[1] for c in names]
        base = [_best(run.control[label_of(c)], c)[1] for c in names]
        ax.bar(positions - 0.2, best, width=0.4, label="trained")
        ax.bar(positions + 0.2, base, width=0.4, label="untrained")
        ax.set_xticks(positions, names, rotation=60, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("best unit's IoU")
    axes[0, 0].legend(fontsize=8)
    figure.savefig(out / "concepts.png", dpi=100)

    figure = Figure(figsize=(10, 2.3 * len(shown_concepts)), layout="constrained")
    rows = figure.subfigures(len(shown_concepts), 1, squeeze=False)[:, 0]
    for sub, concept in zip(rows, shown_concepts, strict=True):
        label = own.get(concept, first)
        run.trained[label].plot(
            run.display(run.images), run.masks, concept=concept, count=1, examples=5, fig=sub
        )
        sub.suptitle(f"best {concept} unit, {label}", fontsize=9)
    figure.savefig(out / "samples.png", dpi=100)

    lines = ["unit,concept,iou,ceiling,threshold,fraction"]
    for row in trained.rows():
        lines.append(
            f"{row['unit']},{row['concept']},{row['iou']:.6f},{row['ceiling']:.6f},"
            f"{row['threshold']:.6g},{row['fraction']:.6f}"
        )
    (out / "units.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    summary = []
    for concept in concepts:
        cells = [html.escape(concept)]
        for label in (first, own.get(concept)):
            if label is None:
                cells += ["", "-", "", "", ""]
                continue
            unit, iou = _best(run.trained[label], concept)
            _, base = _best(run.control[label], concept)
            c = run.trained[label].concepts.index(concept)
            ceiling = float(run.trained[label].ceiling[unit, c]) if unit >= 0 else 0.0
            quantile = run.trained[label].quantile
            cells += [f"{quantile:.3g}", f"{unit}" if unit >= 0 else "-"]
            cells += [f"{iou:.3f}", f"{ceiling:.3f}", f"{base:.3f}"]
        summary.append(cells)
    head = ["concept"] + ["quantile", "unit", "IoU", "ceiling", "untrained best"] * 2
    table = "\n".join(
        "<tr>"
        + "".join(f'<td class="n">{c}</td>' if i else f"<td>{c}</td>" for i, c in enumerate(cells))
        + "</tr>"
        for cells in summary
    )
    units = "\n".join(
        f'<tr><td class="n">{r["unit"]}</td><td>{html.escape(r["concept"])}</td>'
        f'<td class="n">{r["iou"]:.3f}</td><td class="n">{r["ceiling"]:.3f}</td></tr>'
        for r in trained.rows(20)
    )
    body = f"""<h1>{html.escape(run.title)}</h1>
<p>{html.escape(run.settings)} Made in {seconds:.0f} s.</p>
<p>Each unit is cut at the level only the top share of its activations over the data
exceeds; its region is compared with each concept's mask by intersection over union,
summed over all images (Bau et al., Network Dissection, CVPR 2017). A unit covering a
share <i>a</i> of the pixels cannot reach an IoU above min(<i>a</i>, <i>m</i>) /
max(<i>a</i>, <i>m</i>) with a concept covering <i>m</i>: the ceiling column.</p>
<h2>Best unit per concept, trained and untrained</h2>
<p>Left: every concept at quantile {run.trained[first].quantile:g}; right: the
concepts looked at closely, each dissected again at its own pixel share.</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>
{table}
</table>
{html_figure("concepts.png", _CONCEPTS_CAPTION)}
{html_figure("samples.png", _SAMPLES_CAPTION)}
<h2>The 20 units with the highest IoU ({html.escape(first)})</h2>
<table><tr><th>unit</th><th>concept</th><th>IoU</th><th>ceiling</th></tr>
{units}
</table>
<p>All units: <a href="units.csv">units.csv</a>.</p>"""
    page = html_page(run.title, body, style=_STYLE)
    (out / "index.html").write_text(page, encoding="utf-8")


_CONCEPTS_CAPTION = "The best unit's IoU for every concept, trained network and control."
_SAMPLES_CAPTION = (
    "The images where the best unit for each concept fires most; yellow: the unit's "
    "region, cyan: the concept."
)
