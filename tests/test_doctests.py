"""Every module's docstring examples run, and every public name has one."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import matplotlib
import pytest

import netlens

matplotlib.use("Agg")

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(netlens.__path__, prefix="netlens.")
    if name != "netlens.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name, globs=vars(module).copy()):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


@pytest.mark.parametrize("name", sorted(n for n in netlens.__all__ if n != "viz"))
def test_public_names_have_an_example(name):
    doc = inspect.getdoc(getattr(netlens, name)) or ""
    assert "Examples" in doc and ">>>" in doc, f"netlens.{name} has no runnable example"


def test_viz_functions_have_an_example():
    public = [
        getattr(netlens.viz, n)
        for n in dir(netlens.viz)
        if not n.startswith("_")
        and inspect.isfunction(getattr(netlens.viz, n))
        and getattr(netlens.viz, n).__module__.startswith("netlens")
    ]
    assert public
    missing = [f.__name__ for f in public if ">>>" not in (inspect.getdoc(f) or "")]
    assert not missing, f"viz functions without an example: {missing}"
