"""The code of the user guide pages that are written as doctests runs."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

GUIDES = Path(__file__).resolve().parents[1] / "docs" / "guide"
EXECUTED = ["extending.rst"]


@pytest.mark.parametrize("page", EXECUTED)
def test_guide_page_examples_run(page):
    result = doctest.testfile(
        str(GUIDES / page),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
        report=True,
    )
    assert result.attempted > 5, "the page lost its examples"
    assert result.failed == 0, f"{result.failed} example(s) of {page} failed"
