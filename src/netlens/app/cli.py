"""The ``netlens`` command: ``tour``, ``explain``, ``layers``, ``audit``, ``dissect``, ``extract``.

``netlens tour`` is the main job: it trains a small ResNet on handwritten
digits that ship with scikit-learn, and its self-supervised twin, then writes
pictures of every netlens method and an ``index.html`` that shows them.
``netlens explain IMAGE --arch NAME`` draws an attribution map (any method of
:data:`netlens.attribution.METHODS`) of a torchvision classifier over an
image; ``netlens layers --arch NAME`` lists the layer names those methods
accept; ``netlens audit`` scores every method with every faithfulness metric
and sanity check (:mod:`netlens.app.audit`); ``netlens dissect`` finds the
units of a network that detect concepts (:mod:`netlens.app.dissect_report`);
``netlens extract`` writes the features of a folder of images to disk
(:mod:`netlens.app.extract_command`).

Exit status: 0 on success, 2 for a usage error, 1 when the work fails. A
failure is one line on stderr (``netlens: error: ...``); ``--debug`` shows the
traceback instead. File names are printed as :func:`~netlens.app.files.shown`
writes them, so any name prints.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import torch
from torch import Tensor, nn

from netlens import __version__
from netlens.app.arguments import integer_at_least
from netlens.app.audit import add_audit_parser
from netlens.app.dissect_report import add_dissect_parser
from netlens.app.extract_command import add_extract_parser
from netlens.app.files import (
    apply_state_dict,
    load_checkpoint,
    prepare_image,
    read_class_names,
    read_image,
    shown,
)
from netlens.attribution import METHODS
from netlens.errors import NetlensError
from netlens.hooks import ModuleCall, trace_calls
from netlens.layers import find_classifier, find_feature_layer
from netlens.models import load_torchvision_classifier
from netlens.models.torchvision_classifiers import _class_count

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from netlens.explanation import Explanation

#: The largest ``--input-size`` of ``netlens layers``: VGG runs in about 2 GB at this size.
MAX_INPUT_SIZE = 2048
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
    for add in (
        _add_tour,
        _add_explain,
        _add_layers,
        add_audit_parser,
        add_dissect_parser,
        add_extract_parser,
    ):
        add(commands, common)
    return parser


def _add_tour(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tour = commands.add_parser(
        "tour",
        parents=[common],
        help="train a digit classifier and its rotation twin, run every method, "
        "write figures and index.html",
        description="Train SmallResNet on scikit-learn's handwritten digits (no download) "
        "and a twin that only learns to tell how a digit was turned, then write filters, "
        "feature maps, an ablation, attribution maps, t-SNE maps and nearest "
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


def _add_explain(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    methods = ", ".join(f"{name} ({cls.title})" for name, cls in METHODS.items())
    explain = commands.add_parser(
        "explain",
        parents=[common],
        help="draw an attribution map of a torchvision classifier over an image",
        description="Run a torchvision classification network on an image, print its top-5 "
        "classes and write the chosen attribution map over the image as a picture. The "
        "image is prepared as the architecture's torchvision weights expect: its shorter "
        "side resized (256 px for most networks), then the centre square cut out (224 px), "
        "then normalised; --no-crop keeps the whole picture instead. The picture is written "
        "to --out, by default IMAGE-STEM_METHOD.png in the current folder.",
    )
    explain.add_argument("image", type=Path, help="image file (PNG, JPEG, ...)")
    explain.add_argument("--arch", required=True, help="torchvision architecture, e.g. resnet18")
    explain.add_argument(
        "--weights",
        default="DEFAULT",
        help="DEFAULT (torchvision's pretrained weights, downloaded once) or another weights "
        "name of the architecture, always read as such; otherwise the path of a state dict "
        "saved with torch.save(model.state_dict(), path), or of a training checkpoint that "
        "holds one under 'state_dict' or 'model' ('module.' prefixes are stripped, the "
        "number of classes is read off the head; write ./DEFAULT for a file of that name)",
    )
    explain.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help="class names, one per line in class order (default: ImageNet's for a "
        "1000-class head, else 'class 0', 'class 1', ...)",
    )
    explain.add_argument(
        "--method",
        default="gradcam",
        choices=list(METHODS),
        metavar="METHOD",
        help=f"one of {methods} (default: %(default)s)",
    )
    explain.add_argument("--target", type=int, help="class index to explain (default: top-1)")
    explain.add_argument(
        "--topk",
        type=integer_at_least(1),
        default=1,
        metavar="K",
        help="draw the maps of the K most probable classes side by side (default: %(default)s)",
    )
    explain.add_argument(
        "--no-crop",
        action="store_true",
        help="resize the shorter side to the crop size (224 px) and keep the whole picture",
    )
    explain.add_argument(
        "--layer", help="layer of a layer method such as CAM (default: found automatically)"
    )
    explain.add_argument(
        "--out",
        type=Path,
        help="file to write, exactly as named; its extension picks the format (.png, .pdf, "
        ".svg, .jpg, ...), PNG when it has none (default: IMAGE-STEM_METHOD.png)",
    )
    explain.set_defaults(run=_explain, parser=explain)


def _add_layers(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    layers = commands.add_parser(
        "layers",
        parents=[common],
        help="list the layer names of a torchvision architecture, with output shapes",
        description="Run a torchvision architecture (random weights, nothing downloaded) "
        "once on a dummy image and list every layer name that netlens accepts, with its "
        "module type and output shape. A module run more than once per pass is listed "
        "once per call, as name:k.",
    )
    layers.add_argument("--arch", required=True, help="torchvision architecture, e.g. resnet18")
    layers.add_argument(
        "--input-size",
        type=_input_size,
        default=224,
        help=f"side of the dummy image, at most {MAX_INPUT_SIZE} (default: %(default)s)",
    )
    layers.set_defaults(run=_layers)


def _input_size(text: str) -> int:
    value = integer_at_least(1)(text)
    if value > MAX_INPUT_SIZE:
        raise argparse.ArgumentTypeError(
            f"{value} is larger than {MAX_INPUT_SIZE}, the largest side netlens runs a "
            "network on to list its layers"
        )
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
        if args.command == "explain" and args.target is not None and args.topk != 1:
            args.parser.error("--target names one class; --topk draws the top K: give one")
        if args.command == "explain" and args.layer is not None:
            if not METHODS[args.method].needs_layer:
                args.parser.error(
                    f"--layer has no meaning for --method {args.method} (it reads the input)"
                )
    except SystemExit as exit:  # usage errors and --help end here
        return exit.code if isinstance(exit.code, int) else 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        _say("netlens: interrupted", sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        _say(f"netlens: error: {_describe(error)}", sys.stderr)
        return 1


def _say(line: str, stream: TextIO | None = None) -> None:
    """Print ``line``, escaping what the stream's encoding cannot write."""
    stream = sys.stdout if stream is None else stream
    encoding = getattr(stream, "encoding", None) or "utf-8"
    print(line.encode(encoding, "backslashreplace").decode(encoding), file=stream)


def _describe(error: Exception) -> str:
    message = " ".join(str(error).split())
    if isinstance(error, KeyError) and error.args:
        message = str(error.args[0])
    if isinstance(error, (CommandError, *_CLEAR)) and message:
        return message
    return f"{type(error).__name__}: {message} (run with --debug for the traceback)"


# tour ------------------------------------------------------------------------


def _tour(args: argparse.Namespace) -> int:
    from netlens.app.tour import DEFAULT, QUICK, run_tour

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
    _say(
        f"digit classifier: test accuracy {numbers['test_accuracy']:.3f}; kNN accuracy of "
        f"its features {numbers['knn_supervised']:.3f}, of the rotation twin's "
        f"{numbers['knn_rotation']:.3f}, before training {numbers['knn_untrained']:.3f}"
    )
    _say(
        f"fewest units to switch off to change a prediction: {_or_none(numbers['flip_count'])} "
        f"(median {_or_none(numbers['flip_median'])}); {result.seconds:.0f} s"
    )
    _say(f"index: {shown(result.index.resolve())}")
    return 0


def _or_none(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


# explain ---------------------------------------------------------------------


def _explain(args: argparse.Namespace) -> int:
    from netlens.explanation import build_method, explain

    out, file_format = _output(args)
    image = read_image(args.image)  # before the architecture's imports: a bad file fails fast
    resize, crop, mean, std = _preprocessing(args.arch)
    if args.no_crop:
        picture = prepare_image(image, resize=crop, crop=None, name=shown(args.image))
    else:
        picture = prepare_image(image, resize=resize, crop=crop, name=shown(args.image))
    model, categories, source = _model(args)
    method = build_method(args.method, model, args.layer)

    x = ((picture - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]
    with torch.no_grad():
        probabilities = model(x).softmax(1)[0]
    classes = len(probabilities)
    if args.target is not None and not 0 <= args.target < classes:
        raise CommandError(
            f"--target {args.target} is out of range: {args.arch} has {classes} classes "
            f"(0 to {classes - 1})"
        )
    if args.topk > classes:
        raise CommandError(f"--topk {args.topk} is more than the {classes} classes of {args.arch}")
    explained = explain(
        model,
        x,
        method,
        topk=args.topk,
        target=None if args.target is None else [[args.target]],
        class_names=categories,
    )
    _draw(picture, explained, args.arch).savefig(out, dpi=100, format=file_format)

    _say(f"top-5 classes of {args.arch} ({source}) for {shown(args.image)}:")
    top = probabilities.topk(min(5, classes))
    width = max(len(_label(categories, int(i))) for i in top.indices)
    for rank, (p, i) in enumerate(zip(top.values, top.indices, strict=True), start=1):
        _say(f"  {rank}. {_label(categories, int(i)):<{width}}  {float(p):.4f}")
    drawn = [_label(categories, int(c)) for c in explained.classes[0]]
    if len(drawn) == 1:
        index = int(explained.classes[0, 0])
        what = drawn[0] + ("" if drawn[0] == f"class {index}" else f" (class {index})")
    else:
        what = f"the top-{len(drawn)} classes"
    where = f" at {explained.layer}" if explained.layer else ""
    _say(f"wrote {shown(out)}: {method.title}{where} of {what}")
    return 0


def _model(args: argparse.Namespace) -> tuple[nn.Module, list[str], str]:
    """The network of ``--arch`` / ``--weights``, its class names, and how to name its weights.

    A weights file may be a state dict or a training checkpoint (its state
    dict entry is taken, ``module.`` prefixes are stripped; each step is
    said); the number of classes is read off the file's classification head.
    """
    from netlens.explanation import imagenet_classes

    weights_file = _weights_file(args.weights, args.arch)
    if weights_file is None:
        model, categories = load_torchvision_classifier(args.arch, weights=args.weights)
        source = f"{args.weights} weights"
    else:
        checkpoint = load_checkpoint(weights_file)
        for note in checkpoint.notes:
            _say(f"{shown(weights_file)}: {note}")
        model, _ = load_torchvision_classifier(args.arch, weights=None)
        head = _head_size(model, checkpoint.state)
        if head is not None:
            model, _ = load_torchvision_classifier(args.arch, weights=None, num_classes=head)
            _say(f"{shown(weights_file)}: {head} classes, read off its classification head")
        apply_state_dict(model, checkpoint.state, source=shown(weights_file))
        classes = _class_count(model)
        categories = (
            imagenet_classes() if classes == 1000 else [f"class {i}" for i in range(classes)]
        )
        source = shown(weights_file)
    model.eval()
    if args.classes is not None:
        names = read_class_names(args.classes)
        if len(names) != len(categories):
            raise CommandError(
                f"{shown(args.classes)} names {len(names)} classes, but {args.arch} with "
                f"{source} has {len(categories)}"
            )
        categories = names
    return model, categories, source


def _head_size(model: nn.Module, state: dict[str, Tensor]) -> int | None:
    """The class count of ``state``'s head where it differs from ``model``'s, else ``None``.

    The head is every tensor that the model has with its class count as first
    dimension and that ``state`` has with another first dimension only; all
    of them must agree.
    """
    expected = model.state_dict()
    default = _class_count(model)
    sizes = {
        int(state[k].shape[0])
        for k, v in expected.items()
        if k in state
        and v.dim() >= 1
        and v.shape[0] == default
        and state[k].dim() == v.dim()
        and state[k].shape[0] != default
        and tuple(state[k].shape[1:]) == tuple(v.shape[1:])
    }
    return sizes.pop() if len(sizes) == 1 else None


def _output(args: argparse.Namespace) -> tuple[Path, str]:
    """The file ``explain`` writes and its format, checked before any work."""
    from matplotlib.backend_bases import FigureCanvasBase

    out = args.out if args.out is not None else Path(f"{args.image.stem}_{args.method}.png")
    if out.is_dir():
        raise CommandError(f"cannot write {shown(out)}: it is a folder; name a file in it")
    if not out.parent.is_dir():
        raise CommandError(
            f"cannot write {shown(out)}: the folder {shown(out.parent)} does not exist"
        )
    file_format = out.suffix[1:].lower() or "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if file_format not in formats:
        raise CommandError(
            f"cannot write {shown(out)}: .{file_format} is not a picture format matplotlib "
            f"writes; use one of {', '.join('.' + f for f in sorted(formats))}"
        )
    return out, file_format


def _draw(picture: Tensor, explained: Explanation, arch: str) -> Figure:
    """One map: the image under it, titled by method, layer, class and probability.

    Several classes: the image, then one panel per class (:meth:`Explanation.plot`).
    """
    from matplotlib.figure import Figure

    from netlens import viz

    where = f" at {explained.layer}" if explained.layer else ""
    if explained.topk == 1:
        figure = Figure(figsize=(6, 6.4), layout="constrained")
        label = explained.label(0)
        title = (
            f"{explained.method} of {arch}{where}\n{label} (p = {float(explained.probs[0, 0]):.3f})"
        )
        viz.overlay(picture, explained.maps[0, 0], ax=figure.subplots(), title=title)
        return figure
    columns = explained.topk + 1
    figure = Figure(figsize=(2.4 * columns, 3.0), layout="constrained")
    # The picture as cropped, not normalised, under the maps.
    replace(explained, images=picture[None], mean=None, std=None).plot(fig=figure)
    figure.suptitle(f"{explained.method} of {arch}{where}: top-{explained.topk} classes")
    return figure


def _label(categories: list[str], index: int) -> str:
    return categories[index] if index < len(categories) else f"class {index}"


def _weights_file(value: str, arch: str) -> Path | None:
    """``value`` as a path when it names a file rather than torchvision weights.

    A weights name of the architecture (``DEFAULT`` above all) always means
    torchvision's weights, whatever files the current folder holds.
    """
    if value in _weights_names(arch):
        return None
    path = Path(value)
    separators = {os.sep, os.altsep} - {None}
    if path.exists() or path.suffix.lower() in _WEIGHT_SUFFIXES or separators & set(value):
        return path
    return None


def _weights_names(arch: str) -> set[str]:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (KeyError, ValueError):  # an unknown architecture is reported when it is built
        return {"DEFAULT"}
    return {"DEFAULT", *enum.__members__, *(f"{enum.__name__}.{m}" for m in enum.__members__)}


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
        from netlens import viz

        return 256, 224, viz.IMAGENET_MEAN, viz.IMAGENET_STD


# layers ----------------------------------------------------------------------


def _layers(args: argparse.Namespace) -> int:
    model, _ = load_torchvision_classifier(args.arch, weights=None)
    size = args.input_size
    try:
        lines = describe_layers(model, torch.zeros(1, 3, size, size), name=args.arch)
    except Exception as error:
        raise CommandError(_cannot_run(args.arch, size, error)) from error
    for line in lines:
        _say(line)
    return 0


def _cannot_run(arch: str, size: int, error: Exception) -> str:
    reason = " ".join(str(error).split()) or type(error).__name__
    expected = _preprocessing(arch)[1]
    if isinstance(error, MemoryError) or "allocate" in reason.lower():
        hint = "; there is not enough memory: try a smaller --input-size"
    elif size < expected:
        hint = f"; try a larger --input-size (its weights expect {expected})"
    elif size != expected:
        hint = f"; try --input-size {expected}, the size its weights expect"
    else:
        hint = ""
    return f"{arch} cannot run on a {size}x{size} image ({reason}){hint}"


def describe_layers(model: nn.Module, x: Tensor, *, name: str | None = None) -> list[str]:
    """The lines ``netlens layers`` prints: one row per layer name, then a summary.

    Each module the forward pass of ``x`` runs once gets a row with its name,
    type and output shape. A module run several times (a ResNet block's
    ``relu``, one pooling layer used twice) gets a row per call, named
    ``"name:k"`` for its ``k``-th call from 0: that is how netlens methods
    address one call of it. The layer that layer methods (CAM, Grad-CAM, ...)
    read by default and the classifier are marked.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> relu = nn.ReLU()
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), relu, nn.Conv2d(2, 2, 3), relu)
    >>> print("\\n".join(describe_layers(net, torch.zeros(1, 1, 8, 8))))
    layer  type    output shape
    0      Conv2d  (1, 2, 6, 6)
    1:0    ReLU    (1, 2, 6, 6)
    1:1    ReLU    (1, 2, 4, 4)  <- default --layer
    2      Conv2d  (1, 2, 4, 4)
    <BLANKLINE>
    4 layers of Sequential for a (1, 1, 8, 8) input.
    Run more than once per pass, so addressed one call at a time as name:k (k from 0): 1
    """
    calls, _ = trace_calls(model, x)
    by_module: dict[str, list[ModuleCall]] = {}
    for call in calls:
        by_module.setdefault(call.name, []).append(call)
    names = [module for module, _ in model.named_modules() if module]
    marks = _defaults(model, x)

    rows = [("layer", "type", "output shape")]
    for module in names:
        for call in sorted(by_module.get(module, []), key=lambda c: c.call):
            shape = str(call.output_shape) if call.output_shape else "-"
            mark = f"  <- {marks[call.label]}" if call.label in marks else ""
            rows.append((call.label, type(call.module).__name__, shape + mark))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"{label:<{widths[0]}}  {kind:<{widths[1]}}  {shape}" for label, kind, shape in rows]
    repeated = [module for module in names if len(by_module.get(module, [])) > 1]
    unused = [module for module in names if module not in by_module]
    name = name or type(model).__name__
    lines += ["", f"{len(rows) - 1} layers of {name} for a {tuple(x.shape)} input."]
    if repeated:
        lines.append(
            "Run more than once per pass, so addressed one call at a time as name:k "
            f"(k from 0): {_listing(repeated)}"
        )
    if unused:
        lines.append(f"Not run for this input: {_listing(unused)}")
    return lines


def _defaults(model: nn.Module, x: Tensor) -> dict[str, str]:
    found: dict[str, str] = {}
    for find, what in (
        (find_feature_layer, "default --layer"),
        (find_classifier, "classifier"),
    ):
        try:
            found[find(model, x)] = what
        except NetlensError:
            pass
    return found


def _listing(names: list[str], shown_names: int = 6) -> str:
    text = ", ".join(names[:shown_names])
    more = len(names) > shown_names
    return text + (f", ... ({len(names)} in all)" if more else "")
