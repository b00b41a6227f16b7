"""Saving a script's figures as files: :func:`save_figures`.

A gallery example ends with ``save_figures()``. Run as a script it writes
every open pyplot figure to ``./figures/NAME_01.png``, ``NAME_02.png``, ...
and prints the paths; run by sphinx-gallery, which collects the figures
itself, it does nothing.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["save_figures"]


def _under_sphinx_gallery() -> bool:
    """Whether this code runs as an example of a sphinx-gallery build.

    While it executes an example, sphinx-gallery captures its output through
    a stream of its own in place of ``sys.stdout``. Having imported
    ``sphinx_gallery`` is not enough: a test session or a notebook may have.
    """
    return type(sys.stdout).__module__.startswith("sphinx_gallery")


def save_figures(
    name: str | None = None, folder: str | Path = "figures", *, dpi: float | None = None
) -> list[Path]:
    """Save every open pyplot figure as ``folder/NAME_kk.png`` and print the paths.

    Figures are numbered from 01 in the order they were opened (the order of
    ``plt.get_fignums()``, the order sphinx-gallery shows them in); files
    ``NAME_kk.png`` left in ``folder`` by an earlier run that drew more
    figures are removed, so the folder holds this run's figures only. The
    figures stay open. Inside a sphinx-gallery build (the process has
    imported ``sphinx_gallery``) nothing is saved or printed.

    Parameters
    ----------
    name
        The stem of the file names; default the running script's name
        (``plot_filters`` for ``python examples/plot_filters.py``), or
        ``"figure"`` where there is no script (an interactive session).
    folder
        Where the files go, created if need be; relative to the working directory.
    dpi
        Resolution; default matplotlib's ``savefig.dpi``.

    Returns
    -------
    list of pathlib.Path
        The files written, empty under sphinx-gallery or without open figures.

    Examples
    --------
    >>> import tempfile
    >>> import matplotlib.pyplot as plt
    >>> plt.close("all")  # every open figure is saved
    >>> fig, ax = plt.subplots()
    >>> folder = tempfile.mkdtemp()
    >>> paths = save_figures("demo", folder)  # doctest: +ELLIPSIS
    saved 1 figure:
      .../demo_01.png
    >>> [path.name for path in paths]
    ['demo_01.png']
    >>> plt.close(fig)
    """
    if _under_sphinx_gallery():
        return []
    import matplotlib.pyplot as plt

    stem = name if name is not None else _script_name()
    if not isinstance(stem, str) or not stem or "/" in stem or "\\" in stem:
        raise ValueError(f"name must be a non-empty file stem without a folder, not {name!r}")
    numbers = plt.get_fignums()
    if not numbers:
        print("no open figures to save")
        return []
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    ours = re.compile(re.escape(stem) + r"_\d{2,}\.png")
    for old in target.iterdir():
        if ours.fullmatch(old.name) and old.is_file():
            old.unlink()
    current = plt.gcf()
    width = max(2, len(str(len(numbers))))
    paths = []
    for k, number in enumerate(numbers, start=1):
        path = target / f"{stem}_{k:0{width}d}.png"
        plt.figure(number).savefig(path, **({} if dpi is None else {"dpi": dpi}))
        paths.append(path)
    plt.figure(current.number)
    print(f"saved {len(paths)} figure{'s' if len(paths) != 1 else ''}:")
    for path in paths:
        print(f"  {path}")
    return paths


def _script_name() -> str:
    """The stem of the script Python runs, or ``"figure"`` in an interactive session."""
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if file:
        return Path(file).stem
    return "figure"
