"""Where the command lives: ``netlens.app``, on top of a library that never imports it."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import netlens

ROOT = Path(__file__).resolve().parents[2]
MOVED = [
    ("netlens.cli", "netlens.app.cli", "main"),
    ("netlens.tour", "netlens.app.tour", "run_tour"),
    ("netlens._tour_page", "netlens.app.tour_page", "write_index"),
    ("netlens._io", "netlens.app.files", "load_state_dict"),
]

# Imports every module of the library (not walk_packages: it imports every package it lists).
LIBRARY_ONLY = """
import importlib, pkgutil, sys
def walk(package):
    for info in pkgutil.iter_modules(package.__path__, prefix=package.__name__ + "."):
        if info.name not in ("netlens.app", "netlens.__main__"):
            module = importlib.import_module(info.name)
            if info.ispkg:
                walk(module)
walk(importlib.import_module("netlens"))
print(sorted(m for m in sys.modules if m.startswith("netlens.app")))
"""


def test_the_console_script_is_the_app_cli():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"] == {"netlens": "netlens.app.cli:main"}


@pytest.mark.parametrize(("old", "new", "name"), MOVED, ids=[old for old, _, _ in MOVED])
def test_an_old_path_still_serves_its_names_with_a_warning(old, new, name):
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


def test_the_library_never_imports_the_app():
    package_root = str(Path(netlens.__file__).resolve().parent.parent)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", LIBRARY_ONLY],
        env={"PYTHONPATH": package_root, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
