"""Read the files a user points the ``netlens`` command at: images and state dicts.

Every failure raises an :class:`InputFileError` whose message is one line that
names the file (as :func:`shown` prints it) and says what is wrong with it.
Images are refused before they are decoded or resized when that would take
more memory than a photograph does (:data:`MAX_ASPECT_RATIO`,
:data:`MAX_RESIZED_PIXELS`, and Pillow's ``PIL.Image.MAX_IMAGE_PIXELS``). State
dicts are read with ``torch.load(..., weights_only=True)``: a file that would
need arbitrary Python objects (and so could run code while being unpickled) is
refused, never run.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import torch
from torch import Tensor, nn

from netlens.errors import ImageFileError, InputFileError, StateDictError

if TYPE_CHECKING:
    from PIL.Image import Image

PathLike = str | os.PathLike[str]

#: The longest side of an image may be at most this many times its shortest side.
MAX_ASPECT_RATIO = 100
#: The most pixels an image may have once its short side is resized.
MAX_RESIZED_PIXELS = 1 << 26

# Globals a state dict saved by torch.save needs; anything else is a reason to refuse.
_TENSOR_GLOBALS = ("collections.OrderedDict", "_codecs.encode")
_STRING_OPCODES = {"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "STRING"}
_STRING_OPCODES |= {"BINSTRING", "SHORT_BINSTRING"}


def shown(path: PathLike) -> str:
    r"""A file name as the command prints it: one line that any terminal can show.

    Bytes that are not text in the file system's encoding are written as
    ``\xNN``, and control characters as Python escapes, so that printing the
    name never fails and never breaks a line.

    Examples
    --------
    >>> shown("photos/café.png")
    'photos/café.png'
    >>> shown(os.fsdecode(b"caf\xe9.png")), shown("two\nlines.png")
    ('caf\\xe9.png', 'two\\nlines.png')
    """
    text = os.fsencode(path).decode(sys.getfilesystemencoding(), "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _existing_file(path: PathLike, what: str, error: type[InputFileError]) -> Path:
    path = Path(path)
    if not path.exists():
        raise error(f"no such {what}: {shown(path)}")
    if path.is_dir():
        raise error(f"{shown(path)} is a directory, not a {what}")
    if not os.access(path, os.R_OK):
        raise error(f"{shown(path)} cannot be read (permission denied)")
    return path


def read_image(path: PathLike) -> Image:
    """Decode an image file completely and return it as an RGB PIL image.

    Parameters
    ----------
    path
        Any format Pillow reads (PNG, JPEG, WebP, ...). Grayscale, palette and
        RGBA images are converted to RGB (alpha is dropped).

    Raises
    ------
    ImageFileError
        The file is missing, a directory, not an image, truncated, or has more
        pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a decompression bomb: a
        small file that decodes to gigabytes); the size is read from the
        header, before anything is decoded.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> path = Path(tempfile.mkdtemp()) / "gray.png"
    >>> Image.new("L", (40, 30), 128).save(path)
    >>> image = read_image(path)
    >>> image.mode, image.size
    ('RGB', (40, 30))
    """
    import PIL.Image
    from PIL import UnidentifiedImageError

    path = _existing_file(path, "image file", ImageFileError)
    try:
        with warnings.catch_warnings():
            # Pillow only warns below twice its limit; netlens refuses from the limit on.
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path) as opened:
                opened.load()  # decode now: a truncated file fails here, not later
                return opened.convert("RGB")
    except UnidentifiedImageError:
        raise ImageFileError(f"{shown(path)} is not an image file that Pillow can read") from None
    except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning):
        raise ImageFileError(
            f"{shown(path)} has more than {PIL.Image.MAX_IMAGE_PIXELS:,} pixels "
            "(PIL.Image.MAX_IMAGE_PIXELS); refused as a possible decompression bomb"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Pillow reports damaged data with any of these, depending on the format.
        reason = _first_line(error) or type(error).__name__
        raise ImageFileError(f"{shown(path)} is damaged or truncated ({reason})") from None


def prepare_image(
    image: Image, *, resize: int = 256, crop: int | None = 224, name: str = "the image"
) -> Tensor:
    """An RGB PIL image as a ``(3, crop, crop)`` float tensor in [0, 1].

    The shorter side is resized to ``resize`` (bilinear, antialiased), then the
    centre ``crop x crop`` square is cut out, as torchvision's classification
    weights expect (``crop=None`` keeps the whole resized picture); both steps
    work on the 8-bit picture, as torchvision's own ``weights.transforms()``
    do on a PIL image. Normalisation is left to the
    caller, so the result can also be shown.

    Raises
    ------
    ImageFileError
        Before any resizing, when one side is more than
        :data:`MAX_ASPECT_RATIO` times the other or the resized picture would
        have more than :data:`MAX_RESIZED_PIXELS` pixels (a 20000x3 strip
        resized to a short side of 256 would take gigabytes). ``name`` names
        the image in the message.

    Examples
    --------
    >>> from PIL import Image
    >>> x = prepare_image(Image.new("RGB", (300, 200), "red"), resize=64, crop=56)
    >>> x.shape, round(float(x[0].min()), 3), float(x[1].max())
    (torch.Size([3, 56, 56]), 1.0, 0.0)
    >>> prepare_image(Image.new("RGB", (20000, 3)), name="strip.png")
    Traceback (most recent call last):
    ...
    netlens.errors.ImageFileError: strip.png is 20000x3 pixels: one side is 6667 times the ...
    """
    import torchvision.transforms.functional as TF  # noqa: N812

    _check_resizable(image.size, resize, name)
    image = TF.resize(image, [resize])
    if crop is not None:
        image = TF.center_crop(image, [crop])
    return TF.pil_to_tensor(image).float().div_(255.0)


def read_class_names(path: PathLike) -> list[str]:
    r"""Class names from a text file, one per line, in class order.

    Blank lines at the end are ignored; a line ``name index`` whose indices
    count 0, 1, 2, ... (as Places365's ``categories_places365.txt``) gives
    ``name``.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "classes.txt"
    >>> _ = path.write_text("/a/airfield 0\n/a/alley 1\n")
    >>> read_class_names(path)
    ['/a/airfield', '/a/alley']
    """
    path = _existing_file(path, "class names file", InputFileError)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputFileError(f"{shown(path)} is not a UTF-8 text file of class names") from error
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    if not names:
        raise InputFileError(f"{shown(path)} holds no class names (one per line)")
    if any(not name for name in names):
        first = names.index("") + 1
        raise InputFileError(f"{shown(path)} has an empty line {first}: one name per line")
    split = [name.rsplit(None, 1) for name in names]
    if all(len(p) == 2 and p[1] == str(i) for i, p in enumerate(split)):
        names = [p[0] for p in split]
    return names


def _check_resizable(size: tuple[int, int], resize: int, name: str) -> None:
    width, height = size
    short, long = min(width, height), max(width, height)
    if short < 1:
        raise ImageFileError(f"{name} is {width}x{height} pixels: it has no picture to show")
    if long > MAX_ASPECT_RATIO * short:
        raise ImageFileError(
            f"{name} is {width}x{height} pixels: one side is {long / short:.0f} times the "
            f"other, more than {MAX_ASPECT_RATIO}; crop it to a less elongated picture"
        )
    resized = resize * int(resize * long / short)
    if resized > MAX_RESIZED_PIXELS:
        raise ImageFileError(
            f"{name} resized to a short side of {resize} would have {resized:,} pixels, more "
            f"than {MAX_RESIZED_PIXELS:,}; crop it to a less elongated picture"
        )


#: Entries of a training checkpoint that hold the model's state dict, most likely first.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights")
#: Name prefixes that wrappers add: DataParallel / DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class Checkpoint:
    """A state dict read from a file, and what was done to find it (for the user)."""

    state: dict[str, Tensor]
    notes: tuple[str, ...] = ()


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Read a state dict, or the state dict inside a training checkpoint, from ``path``.

    Accepted: ``torch.save(model.state_dict(), path)``; a checkpoint mapping
    whose ``"state_dict"`` / ``"model_state_dict"`` / ``"model"`` / ``"net"``
    / ``"network"`` / ``"weights"`` entry is one (other entries such as the
    epoch or the optimiser are ignored); names all prefixed by ``module.``
    (``DataParallel``, DDP) or ``_orig_mod.`` (``torch.compile``) have the
    prefix stripped. :attr:`Checkpoint.notes` says what was taken and
    stripped. Read as safely as :func:`load_state_dict`.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "checkpoint.pth"
    >>> state = {f"module.{k}": v for k, v in nn.Linear(3, 2).state_dict().items()}
    >>> torch.save({"epoch": 9, "state_dict": state}, path)
    >>> checkpoint = load_checkpoint(path)
    >>> sorted(checkpoint.state)
    ['bias', 'weight']
    >>> for note in checkpoint.notes:
    ...     print(note)
    took the 'state_dict' entry of a checkpoint
    stripped the prefix 'module.' from 2 names
    """
    loaded = _read(path)
    notes: list[str] = []
    if isinstance(loaded, Mapping) and not all(isinstance(v, Tensor) for v in loaded.values()):
        for key in STATE_DICT_KEYS:
            entry = loaded.get(key)
            if (
                isinstance(entry, Mapping)
                and entry
                and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in entry.items())
            ):
                notes.append(f"took the {key!r} entry of a checkpoint")
                loaded = entry
                break
    state = _check_mapping(Path(path), loaded)
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                notes.append(f"stripped the prefix {prefix!r} from {len(state)} names")
                stripped = bool(state)
    return Checkpoint(state, tuple(notes))


def load_state_dict(path: PathLike) -> dict[str, Tensor]:
    """Read a state dict saved with ``torch.save(model.state_dict(), path)``.

    The file is read with ``torch.load(path, weights_only=True,
    map_location="cpu")``, which rebuilds tensors and plain containers only:
    a pickle that names any other Python object (a class, a function such as
    ``os.system``) is refused before anything in it runs.

    Raises
    ------
    StateDictError
        The file is missing, empty, not a PyTorch file, needs arbitrary Python
        objects, or does not hold a mapping of parameter names to tensors.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "linear.pt"
    >>> torch.save(nn.Linear(3, 2).state_dict(), path)
    >>> {name: tuple(t.shape) for name, t in load_state_dict(path).items()}
    {'weight': (2, 3), 'bias': (2,)}
    """
    return _check_mapping(Path(path), _read(path))


def _read(path: PathLike) -> object:
    path = _existing_file(path, "weights file", StateDictError)
    if path.stat().st_size == 0:
        raise StateDictError(f"{shown(path)} is empty")
    try:
        with warnings.catch_warnings():
            # The safe unpickler warns about pickle protocols; the verdict below is what counts.
            warnings.simplefilter("ignore")
            loaded = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise StateDictError(_refusal(path, error)) from error
    except Exception as error:  # torch.load raises many types for files it cannot parse
        reason = _first_line(error) or type(error).__name__
        raise StateDictError(f"{shown(path)} is not a PyTorch weights file ({reason})") from error
    return loaded


def _refusal(path: Path, error: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    imported = found.group(1) if found else _foreign_import(path)
    if imported is not None:
        return (
            f"{shown(path)} is not a plain state dict: it asks to import {imported}, which "
            "tensors never need; refused without running anything in it"
        )
    return (
        f"{shown(path)} is not a PyTorch weights file (torch.load with weights_only=True "
        "cannot read it); save one with torch.save(model.state_dict(), path)"
    )


def _foreign_import(path: Path, pickles: int = 8) -> str | None:
    """The first global that the pickles at the start of ``path`` import and tensors never need.

    torch's safe unpickler stops at the first opcode it does not know, before
    it sees what a plain or legacy (non-zip) pickle imports. The opcodes are
    read here with :func:`pickletools.genops`, which only parses: nothing in
    the file is built or run. A legacy ``torch.save`` file is several pickles
    in a row, then raw tensor bytes; reading stops at the first thing that is
    not a pickle.
    """
    try:
        with open(path, "rb") as file:
            for _ in range(pickles):
                for imported in _imports(file):
                    if not (imported.startswith("torch.") or imported in _TENSOR_GLOBALS):
                        return imported
    except Exception:  # not (or no longer) a pickle: nothing more to read
        return None
    return None


def _imports(file: BinaryIO) -> Iterator[str]:
    """The ``module.name`` of every global the next pickle in ``file`` imports."""
    strings: list[str] = []  # the strings pushed so far, the latest last
    memo: dict[int, str | None] = {}
    last: str | None = None  # the string on top of the stack, if that is one
    for opcode, arg, _ in pickletools.genops(file):
        name, pushed = opcode.name, None
        if name in _STRING_OPCODES:
            pushed = arg.decode("latin-1") if isinstance(arg, bytes) else arg
        elif name == "MEMOIZE":
            memo[len(memo)] = last
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = last
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed = memo.get(arg)
        elif name in ("GLOBAL", "INST"):
            yield ".".join(arg.split(" ", 1))
        elif name == "STACK_GLOBAL" and len(strings) >= 2:
            yield f"{strings[-2]}.{strings[-1]}"
        if pushed is not None:
            strings.append(pushed)
        if name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            last = pushed


def _check_mapping(path: Path, loaded: object) -> dict[str, Tensor]:
    hint = "save one with torch.save(model.state_dict(), path)"
    if not isinstance(loaded, Mapping):
        raise StateDictError(
            f"{shown(path)} holds {_a(type(loaded).__name__)}, not a state dict (a mapping of "
            f"parameter names to tensors); {hint}"
        )
    if not loaded:
        raise StateDictError(f"{shown(path)} holds an empty mapping, not a state dict; {hint}")
    for key, value in loaded.items():
        if not isinstance(key, str):
            raise StateDictError(
                f"{shown(path)} has the key {key!r}; a state dict maps parameter names (strings) "
                f"to tensors; {hint}"
            )
        if isinstance(value, Mapping):
            raise StateDictError(
                f"{shown(path)} looks like a checkpoint, not a state dict: entry {key!r} is a "
                f"mapping and none of {', '.join(map(repr, STATE_DICT_KEYS))} holds the "
                f"model's tensors; save that entry alone, e.g. "
                f"torch.save(checkpoint[{key!r}], path)"
            )
        if not isinstance(value, Tensor):
            raise StateDictError(
                f"{shown(path)} is not a state dict: entry {key!r} holds "
                f"{_a(type(value).__name__)}, not a tensor; {hint}"
            )
    return dict(loaded)


def apply_state_dict(
    model: nn.Module, state: Mapping[str, Tensor], *, source: str = "the state dict"
) -> None:
    """Load ``state`` into ``model`` after checking that names and shapes fit.

    Parameters
    ----------
    model
        The network whose parameters and buffers are replaced.
    state
        Parameter names to tensors, e.g. from :func:`load_state_dict`.
    source
        How to name the state dict in an error (e.g. its file name).

    Raises
    ------
    StateDictError
        One line listing the tensors whose shapes differ and the names that
        are missing or unexpected (a few of each).

    Examples
    --------
    >>> model = nn.Linear(3, 2)
    >>> apply_state_dict(model, {"weight": torch.ones(2, 3), "bias": torch.zeros(2)})
    >>> float(model.weight.detach().sum())
    6.0
    >>> apply_state_dict(model, {"weight": torch.ones(5, 3), "bias": torch.zeros(5)})
    Traceback (most recent call last):
    ...
    netlens.errors.StateDictError: the state dict does not fit Linear: 2 tensors have other ...
    """
    expected = model.state_dict()
    # BatchNorm fills in a missing batch counter itself (older checkpoints lack it).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if mismatched:
        shapes = "; ".join(
            f"{k}: {tuple(state[k].shape)} given, {tuple(expected[k].shape)} expected"
            for k in mismatched[:3]
        )
        more = ", ..." if len(mismatched) > 3 else ""
        problems.append(f"{len(mismatched)} tensors have other shapes ({shapes}{more})")
    if missing:
        problems.append(f"{len(missing)} names are missing ({_few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} names are unexpected ({_few(unexpected)})")
        if all(k.startswith("module.") for k in unexpected) and missing:
            problems.append("the names start with 'module.' (saved from DataParallel): strip it")
    if problems:
        raise StateDictError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise StateDictError(
            f"{source} does not fit {type(model).__name__}: {_one_line(error)}"
        ) from error


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _few(names: list[str], count: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:count])
    return shown + (", ..." if len(names) > count else "")


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
