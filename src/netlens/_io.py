"""Read the files a user points the ``netlens`` command at: images and state dicts.

Every failure raises an :class:`InputFileError` whose message is one line that
names the file and says what is wrong with it. State dicts are read with
``torch.load(..., weights_only=True)``: a file that would need arbitrary Python
objects (and so could run code while being unpickled) is refused, never run.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from netlens.errors import ImageFileError, InputFileError, StateDictError

if TYPE_CHECKING:
    from PIL.Image import Image

PathLike = str | os.PathLike[str]


def _existing_file(path: PathLike, what: str, error: type[InputFileError]) -> Path:
    path = Path(path)
    if not path.exists():
        raise error(f"no such {what}: {path}")
    if path.is_dir():
        raise error(f"{path} is a directory, not a {what}")
    if not os.access(path, os.R_OK):
        raise error(f"{path} cannot be read (permission denied)")
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
        The file is missing, a directory, not an image, or truncated.

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
        with PIL.Image.open(path) as opened:
            opened.load()  # decode now: a truncated file fails here, not later
            return opened.convert("RGB")
    except UnidentifiedImageError:
        raise ImageFileError(f"{path} is not an image file that Pillow can read") from None
    except PIL.Image.DecompressionBombError as error:
        raise ImageFileError(f"{path} is too large to decode safely ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        # Pillow reports damaged data with any of these, depending on the format.
        reason = _first_line(error) or type(error).__name__
        raise ImageFileError(f"{path} is damaged or truncated ({reason})") from None


def prepare_image(image: Image, *, resize: int = 256, crop: int = 224) -> Tensor:
    """An RGB PIL image as a ``(3, crop, crop)`` float tensor in [0, 1].

    The shorter side is resized to ``resize`` (bilinear, antialiased), then the
    centre ``crop x crop`` square is cut out, as torchvision's classification
    weights expect. Normalisation is left to the caller, so the result can also
    be shown.

    Examples
    --------
    >>> from PIL import Image
    >>> x = prepare_image(Image.new("RGB", (300, 200), "red"), resize=64, crop=56)
    >>> x.shape, round(float(x[0].min()), 3), float(x[1].max())
    (torch.Size([3, 56, 56]), 1.0, 0.0)
    """
    import torchvision.transforms.functional as TF  # noqa: N812

    tensor = TF.pil_to_tensor(image).float().div_(255.0)
    tensor = TF.resize(tensor, [resize], antialias=True)
    return TF.center_crop(tensor, [crop]).clamp_(0.0, 1.0)


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
    path = _existing_file(path, "weights file", StateDictError)
    if path.stat().st_size == 0:
        raise StateDictError(f"{path} is empty")
    try:
        with warnings.catch_warnings():
            # The safe unpickler warns about pickle protocols; the verdict below is what counts.
            warnings.simplefilter("ignore")
            loaded = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise StateDictError(_refusal(path, error)) from error
    except Exception as error:  # torch.load raises many types for files it cannot parse
        reason = _first_line(error) or type(error).__name__
        raise StateDictError(f"{path} is not a PyTorch weights file ({reason})") from error
    return _check_mapping(path, loaded)


def _refusal(path: Path, error: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if found:
        return (
            f"{path} is not a plain state dict: it asks to import {found.group(1)}, which "
            "tensors never need; refused without running anything in it"
        )
    return (
        f"{path} is not a PyTorch weights file (torch.load with weights_only=True cannot "
        "read it); save one with torch.save(model.state_dict(), path)"
    )


def _check_mapping(path: Path, loaded: object) -> dict[str, Tensor]:
    hint = "save one with torch.save(model.state_dict(), path)"
    if not isinstance(loaded, Mapping):
        raise StateDictError(
            f"{path} holds {_a(type(loaded).__name__)}, not a state dict (a mapping of "
            f"parameter names to tensors); {hint}"
        )
    if not loaded:
        raise StateDictError(f"{path} holds an empty mapping, not a state dict; {hint}")
    for key, value in loaded.items():
        if not isinstance(key, str):
            raise StateDictError(
                f"{path} has the key {key!r}; a state dict maps parameter names (strings) "
                f"to tensors; {hint}"
            )
        if isinstance(value, Mapping):
            raise StateDictError(
                f"{path} looks like a checkpoint, not a state dict: entry {key!r} is a "
                f"mapping; save that entry alone, e.g. torch.save(checkpoint[{key!r}], path)"
            )
        if not isinstance(value, Tensor):
            raise StateDictError(
                f"{path} is not a state dict: entry {key!r} holds {_a(type(value).__name__)}, "
                f"not a tensor; {hint}"
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
