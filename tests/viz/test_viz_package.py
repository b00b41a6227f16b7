"""netlens.viz is a package of one module per kind of picture, seen from outside as one module."""

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import netlens.viz as viz

MODULES = sorted(
    name
    for _, name, _ in pkgutil.iter_modules(viz.__path__, prefix="netlens.viz.")
    if not name.rsplit(".", 1)[1].startswith("_")
)


def test_every_public_name_of_a_viz_module_is_served_by_netlens_viz():
    served = set(viz.__all__)
    for name in MODULES:
        module = importlib.import_module(name)
        for public in module.__all__:
            if inspect.isfunction(getattr(module, public)):
                assert public in served, f"{name}.{public} missing from netlens.viz"
                assert getattr(viz, public) is getattr(module, public)


@pytest.mark.parametrize("name", [*MODULES, "netlens.viz", "netlens.channels", "netlens.embedding"])
def test_public_modules_declare_all_and_it_resolves(name):
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    assert [n for n in module.__all__ if not hasattr(module, n)] == []


def test_embedding_plot_colours_stay_public():
    from netlens.viz.embedding import RIGHT_COLOUR, WRONG_COLOUR

    assert WRONG_COLOUR != RIGHT_COLOUR


def test_importing_netlens_and_its_feature_side_does_not_import_matplotlib():
    code = (
        "import sys, netlens, netlens.channels, netlens.embedding\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
