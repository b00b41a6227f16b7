"""The agreement matrix (see ``agreement.py``): every method against every peer that has it."""

from __future__ import annotations

import warnings

import pytest
import torch
from agreement import TARGETS, Case, all_cases, family, images, relative_error

from netlens._plan import channels_last_possible, forced_layout
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
    # In the input's layout, as the peers run it: where netlens runs channels-last, the
    # arithmetic is the peer's on a channels-last input (test below), whose float32
    # rounding differs from the same peer's in the default layout.
    with forced_layout(channels_last=False):
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


#: The input-gradient methods whose whole pass runs channels-last where the size plan says so.
CHANNELS_LAST = [
    pytest.param(case, name, id=f"{case.id}-{name}")
    for case in CASES
    if case.method in ("saliency", "inputxgradient", "integratedgradients", "guidedbackprop")
    and case.peer == "captum"
    and case.verdict == "equal"
    and case.variant == ""
    for name in ("resnet18", "densenet121", "mobilenet_v3_small")
    if name in case.families
]


@pytest.mark.parametrize(("case", "name"), CHANNELS_LAST)
def test_the_channels_last_path_equals_the_peer_on_a_channels_last_input(case: Case, name: str):
    # On a random DenseNet-121, float32 Integrated Gradients in the two layouts differ by
    # 3.5e-4 of the map's largest value, captum's as netlens': each is as far from the float64
    # map (3.9e-4) as the other. The same arithmetic in the same layout agrees.
    pytest.importorskip("captum")
    model = family(name)
    x = images()
    if not channels_last_possible(model, x):
        pytest.skip("no oneDNN on this CPU")
    targets = torch.tensor(TARGETS)
    with forced_layout(channels_last=True):
        ours = case.ours(model, None, x, targets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = case.theirs(model, None, x.contiguous(memory_format=torch.channels_last), targets)
    assert ours.shape == theirs.shape
    error = relative_error(ours, theirs)
    assert error <= case.rtol, f"relative error {error:.2e} > {case.rtol:.0e}"


def test_every_registered_method_is_in_the_matrix_or_has_no_peer():
    covered = {case.method for case in CASES}
    for case in CASES:
        assert case.method in METHODS, case.method
    # Methods no peer library has: said so on the docs page.
    assert set(METHODS) - covered <= {"cam"} | NO_PEER, set(METHODS) - covered


#: Registered methods that no peer library computes.
NO_PEER: set[str] = set()
