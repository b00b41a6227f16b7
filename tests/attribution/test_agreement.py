"""The agreement matrix (see ``agreement.py``): every method against every peer that has it."""

from __future__ import annotations

import warnings

import pytest
import torch
from agreement import TARGETS, Case, all_cases, family, images, relative_error

from netlens.attribution import METHODS
from netlens.testing import assert_unchanged, snapshot

CASES = all_cases()


def _params():
    for case in CASES:
        marks = [pytest.mark.slow] if case.slow else []
        for name in case.families:
            yield pytest.param(case, name, id=f"{case.id}-{name}", marks=marks)


@pytest.mark.parametrize(("case", "name"), list(_params()))
def test_method_against_peer(case: Case, name: str):
    pytest.importorskip(
        {"captum": "captum", "pytorch-grad-cam": "pytorch_grad_cam", "torchcam": "torchcam"}[
            case.peer
        ]
    )
    model = family(name)
    layer = case.layer(name) if METHODS[case.method].needs_layer else None
    x = images()
    targets = torch.tensor(TARGETS)
    before = snapshot(model)
    ours = case.ours(model, layer, x, targets)
    assert_unchanged(model, before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = case.theirs(model, layer, x, targets)
    model.eval()  # peers may leave it in another mode; the cache is shared
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert torch.isfinite(ours).all()
    error = relative_error(ours, theirs)
    if case.verdict == "equal":
        assert error <= case.rtol, f"relative error {error:.2e} > {case.rtol:.0e}"
    else:
        assert error > 100 * case.rtol, f"said to differ, but equal to {error:.2e}"


def test_every_registered_method_is_in_the_matrix_or_has_no_peer():
    covered = {case.method for case in CASES}
    for case in CASES:
        assert case.method in METHODS, case.method
    # Methods no peer library has: said so on the docs page.
    assert set(METHODS) - covered <= {"cam"} | NO_PEER, set(METHODS) - covered


#: Registered methods that no peer library computes.
NO_PEER: set[str] = set()
