"""torchvision's classification networks by name, with their class names."""

from __future__ import annotations

import torch
from torch import nn

from netlens.errors import WeightsUnavailableError
from netlens.hooks import as_logits, eval_mode


def load_torchvision_classifier(
    arch: str, weights: str | None = "DEFAULT", *, num_classes: int | None = None
) -> tuple[nn.Module, list[str]]:
    """A torchvision classification network by name, in eval mode, and its class names.

    Parameters
    ----------
    arch
        A name from ``torchvision.models.list_models(module=torchvision.models)``,
        e.g. ``"resnet18"``.
    weights
        ``"DEFAULT"`` (or another name of the architecture's weights enum) for
        torchvision's pretrained weights, downloaded on first use; ``None``
        for random weights.
    num_classes
        With ``weights=None``: the size of the classification head (e.g. 365
        for a Places365 checkpoint); default the architecture's (1000).

    Returns
    -------
    model, categories
        The network, and the class names of its weights (``"class 0"``, ...
        for random weights).

    Raises
    ------
    ValueError
        Unknown architecture (the message lists close matches) or weights name.
    WeightsUnavailableError
        The pretrained weights could not be downloaded or read.

    Examples
    --------
    >>> model, categories = load_torchvision_classifier("resnet18", weights=None)
    >>> len(categories), model.training
    (1000, False)
    """
    import contextlib
    import difflib
    import io
    import sys

    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown torchvision classification architecture {arch!r}{hint}")
    if num_classes is not None:
        if weights is not None:
            raise ValueError("num_classes= is for weights=None: pretrained heads keep their size")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, not {num_classes!r}")
    if weights is None:
        options = {} if num_classes is None else {"num_classes": num_classes}
        model = torchvision.models.get_model(arch, weights=None, **options)
        categories = [f"class {i}" for i in range(_class_count(model))]
    else:
        enum = torchvision.models.get_model_weights(arch)
        try:
            chosen = enum[weights] if weights == "DEFAULT" else enum[weights.split(".")[-1]]
        except KeyError:
            names = ", ".join(enum.__members__)
            raise ValueError(f"{arch} has no weights {weights!r}; choose one of {names}") from None
        # torch.hub announces a download ("Downloading: ...") before it tries; offline that
        # line only precedes the error, so it is held back and shown once the file arrived.
        said, progress = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(progress):
                model = torchvision.models.get_model(arch, weights=chosen)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise WeightsUnavailableError(
                f"torchvision's {chosen} weights for {arch} could not be loaded ({error}); "
                "connect to the internet once, or use a state dict of your own"
            ) from error
        sys.stdout.write(said.getvalue())
        categories = list(chosen.meta["categories"])
    return model.eval(), categories


def _class_count(model: nn.Module) -> int:
    """Length of the logits of one forward pass, whichever layer produces them.

    Every torchvision classifier takes three-channel 224x224 images when
    built without weights.
    """
    with eval_mode(model), torch.no_grad():
        return as_logits(model(torch.zeros(1, 3, 224, 224))).shape[1]
