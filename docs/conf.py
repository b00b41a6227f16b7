"""Sphinx configuration of the netlens documentation.

Build (runs every example of the gallery)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Add ``-D plot_gallery=0`` for a quick build that does not run the examples.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The source tree comes first, so the pages describe this checkout even when
# another copy of netlens is installed.
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("MPLBACKEND", "Agg")
# Idle OpenMP threads sleep instead of spinning: on a machine shared with other work a
# spinning thread waits for a core the others hold, and examples ran several times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import netlens  # noqa: E402
from netlens.attribution import METHODS  # noqa: E402


def _write_method_table() -> None:
    """The method table of the API page, from the registry the command line reads too."""
    rows = [
        f"   * - ``{name}``\n     - :class:`~{cls.__module__}.{cls.__name__}`\n"
        f"     - {'yes' if cls.needs_layer else 'no'}\n"
        f"     - {'yes' if cls.needs_gradients else 'no'}"
        for name, cls in sorted(METHODS.items())
    ]
    table = (
        ".. list-table::\n   :header-rows: 1\n\n"
        "   * - ``--method``\n     - class\n     - reads a layer\n     - gradients\n"
        + "\n".join(rows)
        + "\n"
    )
    out = HERE / "generated" / "methods_table.rst"
    out.parent.mkdir(exist_ok=True)
    if not out.exists() or out.read_text() != table:
        out.write_text(table)


def _write_agreement_table() -> None:
    """The agreement page's tables, from the rows the agreement test runs."""
    sys.path.insert(0, str(ROOT / "tests" / "attribution"))
    try:
        import agreement

        cases = agreement.all_cases()
    finally:
        sys.path.pop(0)
    peers = agreement.PEERS
    grid = [
        "   * - method\n" + "".join(f"     - {peer}\n" for peer in peers),
    ]
    for name, cls in sorted(METHODS.items()):
        cells = []
        for peer in peers:
            rows = [c for c in cases if c.method == name and c.peer == peer]
            differs = sorted({f for c in rows if c.verdict == "differs" for f in c.families})
            if not rows:
                cells.append("no such method")
            elif not differs:
                cells.append("equal")
            elif all(c.verdict == "differs" for c in rows):
                cells.append("differs")
            else:
                cells.append(f"equal; differs on {', '.join(differs)}")
        grid.append(
            f"   * - :class:`~{cls.__module__}.{cls.__name__}`\n"
            + "".join(f"     - {cell}\n" for cell in cells)
        )
    rows = [
        "   * - method\n     - peer\n     - verdict\n     - tolerance\n     - families\n"
        "     - what\n"
    ]
    for case in sorted(cases, key=lambda c: (c.method, c.peer, c.verdict != "equal", c.variant)):
        families = ", ".join(case.families)
        note = " ".join(case.note.split())
        rows.append(
            f"   * - ``{case.method}``\n     - {case.peer}\n     - {case.verdict}\n"
            f"     - {case.rtol:.0e}\n     - {families}\n     - {note}\n"
        )
    header = ".. list-table::\n   :header-rows: 1\n   :class: agreement\n\n"
    text = (
        ".. The agreement matrix, written by docs/conf.py from tests/attribution/peers_*.py.\n\n"
        + header
        + "".join(grid)
        + "\n.. _agreement-rows:\n\n"
        + header
        + "".join(rows)
    )
    out = HERE / "generated" / "agreement_table.rst"
    out.parent.mkdir(exist_ok=True)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


_write_method_table()
_write_agreement_table()

# -- project -----------------------------------------------------------------

project = "netlens"
author = "netlens developers"
copyright = "netlens developers"
release = netlens.__version__
version = ".".join(release.split(".")[:2])

# -- extensions --------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "generated/backreferences"]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "py:obj"

# autodoc / autosummary
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
add_module_names = False

# numpydoc: autosummary already lists members, and class pages show them
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# myst (used only to include CHANGELOG.md)
myst_heading_anchors = 2
suppress_warnings = ["myst.header"]

# -- sphinx-gallery ----------------------------------------------------------

sphinx_gallery_conf = {
    # Only what an example prints, not the repr of a cell's last expression.
    "capture_repr": (),
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Every script in examples/ runs, not only plot_*.py; _*.py are helpers.
    "filename_pattern": r"\.py$",
    "ignore_pattern": r"^_",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("netlens",),
    "reference_url": {"netlens": None},
    "backreferences_dir": "generated/backreferences",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "min_reported_time": 1,
}

# -- html --------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"netlens {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "github_url": "https://github.com/netlens/netlens",
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = True
html_context = {"default_mode": "light"}


def _skip_member(app, what, name, obj, skip, options):
    """Show netlens's ``__call__`` even where only its signature says anything.

    ``forward`` of an ``nn.Module`` is called through the module, and its
    inherited docstring is PyTorch's, so it is left out.
    """
    if name == "__call__":
        return not getattr(obj, "__module__", "").startswith("netlens")
    if name == "forward":
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
