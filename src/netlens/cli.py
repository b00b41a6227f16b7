"""The ``netlens`` command: ``tour``, ``explain`` and ``layers``.

``netlens tour`` is the main job: it trains a small ResNet on handwritten
digits that ship with scikit-learn, and its self-supervised twin, then writes
pictures of every netlens method and an ``index.html`` that shows them.
``netlens explain IMAGE --arch NAME`` draws CAM, Grad-CAM or a saliency map
of a torchvision classifier over an image; ``netlens layers --arch NAME``
lists the layer names those methods accept.

Exit status: 0 on success, 2 for a usage error, 1 when the work fails. A
failure is one line on stderr (``netlens: error: ...``); ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

from netlens import __version__, viz
from netlens._io import apply_state_dict, load_state_dict, prepare_image, read_image
from netlens.attribution import CAM, GradCAM, Saliency
from netlens.attribution.base import Attribution
from netlens.data import load_torchvision_classifier
from netlens.layers import LayerNotFoundError, find_classifier, find_feature_layer, trace
from netlens.tour import DEFAULT, QUICK, run_tour

#: ``--method`` choices: the name shown, and how to make the method for a model and layer.
METHODS: dict[str, tuple[str, Callable[[nn.Module, str | None], Attribution]]] = {
    "cam": ("CAM", lambda model, layer: CAM(model, layer)),
    "gradcam": ("Grad-CAM", lambda model, layer: GradCAM(model, layer)),
    "saliency": ("saliency", lambda model, _: Saliency(model)),
}
_WEIGHT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".tar"}
# Exceptions whose message says it all; any other type is named in the error line.
_CLEAR = (ValueError, LookupError, OSError, RuntimeError, TypeError)


class CommandError(Exception):
    """A failure the command reports as one line (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"netlens: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``netlens`` command.

    Examples
    --------
    >>> args = build_parser().parse_args(["layers", "--arch", "resnet18"])
    >>> args.command, args.arch, args.input_size
    ('layers', 'resnet18', 224)
    """
    parser = _Parser(
        prog="netlens",
        description="Look inside PyTorch CNNs: a guided tour on offline digits, "
        "attribution maps for torchvision classifiers, and their layer names.",
    )
    parser.add_argument("--version", action="version", version=f"netlens {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    tour = commands.add_parser(
        "tour",
        parents=[common],
        help="train a digit classifier and its rotation twin, run every method, "
        "write figures and index.html",
        description="Train SmallResNet on scikit-learn's handwritten digits (no download) "
        "and a twin that only learns to tell how a digit was turned, then write filters, "
        "feature maps, an ablation, CAM, Grad-CAM, saliency, t-SNE maps and nearest "
        "neighbours as PNG files, and an index.html that shows them with the measured "
        "numbers. Files of other names in the folder are left alone.",
    )
    tour.add_argument(
        "--out", default="netlens-tour", type=Path, help="folder to write (default: %(default)s)"
    )
    tour.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="default: cpu")
    tour.add_argument("--seed", default=0, type=int, help="seed of data split, weights, order")
    tour.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    tour.set_defaults(run=_tour)

    explain = commands.add_parser(
        "explain",
        parents=[common],
        help="draw CAM, Grad-CAM or saliency of a torchvision classifier over an image",
        description="Run a torchvision classification network on an image, print its top-5 "
        "classes and write the chosen attribution map over the image as a PNG.",
    )
    explain.add_argument("image", type=Path, help="image file (PNG, JPEG, ...)")
    explain.add_argument("--arch", required=True, help="torchvision architecture, e.g. resnet18")
    explain.add_argument(
        "--weights",
        default="DEFAULT",
        help="DEFAULT (torchvision's pretrained weights, downloaded once), another weights "
        "name of the architecture, or the path of a state dict saved with "
        "torch.save(model.state_dict(), path)",
    )
    explain.add_argument("--method", default="gradcam", choices=list(METHODS))
    explain.add_argument("--target", type=int, help="class index to explain (default: top-1)")
    explain.add_argument("--layer", help="layer of CAM / Grad-CAM (default: found automatically)")
    explain.add_argument("--out", type=Path, help="PNG to write (default: IMAGE-STEM_METHOD.png)")
    explain.set_defaults(run=_explain, parser=explain)

    layers = commands.add_parser(
        "layers",
        parents=[common],
        help="list the layer names of a torchvision architecture, with output shapes",
        description="Run a torchvision architecture (random weights, nothing downloaded) "
        "once on a dummy image and list every layer name that netlens accepts, with its "
        "module type and output shape.",
    )
    layers.add_argument("--arch", required=True, help="torchvision architecture, e.g. resnet18")
    layers.add_argument(
        "--input-size", type=_positive, default=224, help="side of the dummy image (224)"
    )
    layers.set_defaults(run=_layers)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``netlens`` command and return its exit status.

    Parameters
    ----------
    argv
        The arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 1 when the work failed (one line on stderr), 2 for a
        usage error.

    Examples
    --------
    >>> main(["layers", "--arch", "resnet18", "--input-size", "64"])  # doctest: +ELLIPSIS
    layer ...
    layer4 ... Sequential ... (1, 512, 2, 2)
    ...
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "method", None) == "saliency" and args.layer is not None:
            args.parser.error("--layer has no meaning for --method saliency (it reads the input)")
    except SystemExit as exit:  # usage errors and --help end here
        return exit.code if isinstance(exit.code, int) else 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("netlens: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"netlens: error: {_describe(error)}", file=sys.stderr)
        return 1


def _describe(error: Exception) -> str:
    message = " ".join(str(error).split())
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    if isinstance(error, (CommandError, *_CLEAR)) and message:
        return message
    return f"{type(error).__name__}: {message} (run with --debug for the traceback)"


def _tour(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError("CUDA is not available on this machine; use --device cpu")
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # The tour's networks are small, so one thread loses little; OpenMP threads that
        # wait for cores busy with other programs slow training down several times over.
        torch.set_num_threads(1)
    try:
        result = run_tour(
            args.out, device=device, seed=args.seed, budget=QUICK if args.quick else DEFAULT
        )
    finally:
        torch.set_num_threads(threads)
    numbers = result.numbers
    print(
        f"digit classifier: test accuracy {numbers['test_accuracy']:.3f}; kNN accuracy of "
        f"its features {numbers['knn_supervised']:.3f}, of the rotation twin's "
        f"{numbers['knn_rotation']:.3f}, before training {numbers['knn_untrained']:.3f}"
    )
    print(
        f"fewest units to switch off to change a prediction: {_or_none(numbers['flip_count'])} "
        f"(median {_or_none(numbers['flip_median'])}); {result.seconds:.0f} s"
    )
    print(f"index: {result.index.resolve()}")
    return 0


def _or_none(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def _explain(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else Path(f"{args.image.stem}_{args.method}.png")
    if not out.parent.is_dir():
        raise CommandError(f"cannot write {out}: the folder {out.parent} does not exist")
    image = read_image(args.image)
    weights_file = _weights_file(args.weights)
    state = load_state_dict(weights_file) if weights_file is not None else None
    model, categories = load_torchvision_classifier(
        args.arch, weights=None if weights_file is not None else args.weights
    )
    if state is not None:
        apply_state_dict(model, state, source=str(weights_file))
    name, make_method = METHODS[args.method]
    method = make_method(model, args.layer)

    resize, crop, mean, std = _preprocessing(args.arch)
    picture = prepare_image(image, resize=resize, crop=crop)
    x = ((picture - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]
    with torch.no_grad():
        probabilities = model(x).softmax(1)[0]
    classes = len(probabilities)
    target = int(probabilities.argmax()) if args.target is None else args.target
    if not 0 <= target < classes:
        raise CommandError(
            f"--target {target} is out of range: {args.arch} has {classes} classes "
            f"(0 to {classes - 1})"
        )
    heatmap = method(x, target)[0]

    figure = Figure(figsize=(6, 6.3), layout="constrained")
    label = _label(categories, target)
    viz.overlay(
        picture,
        heatmap,
        ax=figure.subplots(),
        title=f"{name} of {args.arch}: {label} (p = {float(probabilities[target]):.3f})",
    )
    figure.savefig(out, dpi=100)

    source = weights_file if weights_file is not None else f"{args.weights} weights"
    print(f"top-5 classes of {args.arch} ({source}) for {args.image}:")
    top = probabilities.topk(min(5, classes))
    width = max(len(_label(categories, int(i))) for i in top.indices)
    for rank, (p, i) in enumerate(zip(top.values, top.indices, strict=True), start=1):
        print(f"  {rank}. {_label(categories, int(i)):<{width}}  {float(p):.4f}")
    index = "" if label == f"class {target}" else f" (class {target})"
    print(f"wrote {out}: {name} of {label}{index}")
    return 0


def _label(categories: list[str], index: int) -> str:
    return categories[index] if index < len(categories) else f"class {index}"


def _weights_file(value: str) -> Path | None:
    """``value`` as a path when it names a file rather than torchvision weights."""
    path = Path(value)
    if path.exists() or path.suffix in _WEIGHT_SUFFIXES or len(path.parts) > 1:
        return path
    return None


def _preprocessing(arch: str) -> tuple[int, int, Sequence[float], Sequence[float]]:
    """Resize, crop, mean and std of the architecture's torchvision weights (no download)."""
    import torchvision

    try:
        transforms = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
        return (
            int(transforms.resize_size[0]),
            int(transforms.crop_size[0]),
            list(transforms.mean),
            list(transforms.std),
        )
    except (AttributeError, IndexError, KeyError, ValueError):
        return 256, 224, viz.IMAGENET_MEAN, viz.IMAGENET_STD


def _layers(args: argparse.Namespace) -> int:
    model, _ = load_torchvision_classifier(args.arch, weights=None)
    size = args.input_size
    x = torch.zeros(1, 3, size, size)
    try:
        calls = trace(model, x)
    except RuntimeError as error:
        raise CommandError(
            f"{args.arch} cannot run on a {size}x{size} image ({' '.join(str(error).split())}); "
            "try a larger --input-size"
        ) from error
    runs = Counter(call.name for call in calls)
    shapes = {call.name: call.output_shape for call in calls}
    names = [name for name, _ in model.named_modules() if name]
    modules = dict(model.named_modules())
    usable = [name for name in names if runs[name] == 1]
    defaults = _defaults(model, x)

    rows = [("layer", "type", "output shape")]
    for name in usable:
        shape = shapes[name]
        mark = f"  <- {defaults[name]}" if name in defaults else ""
        rows.append((name, type(modules[name]).__name__, (str(shape) if shape else "-") + mark))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, kind, shape in rows:
        print(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {shape}")
    repeated = [name for name in names if runs[name] > 1]
    unused = [name for name in names if runs[name] == 0]
    print(f"\n{len(usable)} layers of {args.arch} for a (1, 3, {size}, {size}) input.")
    if repeated:
        print(f"Run more than once per forward pass, so not usable by name: {_listing(repeated)}")
    if unused:
        print(f"Not run for this input: {_listing(unused)}")
    return 0


def _defaults(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    found: dict[str, str] = {}
    try:
        found[find_feature_layer(model, x)] = "default of CAM / Grad-CAM"
    except LayerNotFoundError:
        pass
    try:
        found[find_classifier(model, x)] = "classifier"
    except LayerNotFoundError:
        pass
    return found


def _listing(names: list[str], shown: int = 6) -> str:
    text = ", ".join(names[:shown])
    return text + (f", ... ({len(names)} in all)" if len(names) > shown else "")
