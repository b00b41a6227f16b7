"""Models as users write them: odd outputs, cut graphs, their own hooks, odd layers."""

from __future__ import annotations

import collections
import warnings

import pytest
import torch
import torchvision
from torch import nn

from conftest import (
    FreezesOnEval,
    SmallCNN,
    assert_unchanged,
    get_model,
    guided_relus,
    quick_methods,
    snapshot,
)
from netlens import FeatureExtractor, GradCAM, Saliency, UnitAblator, fewest_units_to_flip
from netlens.errors import GraphCutError, LayerNotReachedError, OutputError

captum_attr = pytest.importorskip("captum.attr")

Pair = collections.namedtuple("Pair", ["logits", "aux"])


class ModelOutput:
    """Like Hugging Face's ModelOutput: the logits are an attribute."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


class Wrapped(nn.Module):
    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        self.net = net
        self.kind = kind

    def forward(self, x: torch.Tensor) -> object:
        logits = self.net(x)
        if self.kind == "dict":
            return {"logits": logits, "features": logits.detach() * 0}
        if self.kind == "tuple":
            return logits, logits.detach()
        if self.kind == "namedtuple":
            return Pair(logits, logits.detach())
        if self.kind == "object":
            return ModelOutput(logits)
        if self.kind == "other-dict":
            return {"scores": logits}
        raise AssertionError(self.kind)


@pytest.mark.parametrize("kind", ["dict", "tuple", "namedtuple", "object"])
def test_models_returning_structures_are_explained_like_their_logits(kind):
    net = get_model("resnet18")
    wrapped = Wrapped(net, kind).eval()
    x = torch.randn(2, 3, 32, 32)
    for cls in quick_methods().values():
        explainer = cls(net)
        plain = explainer(x, [1, 2], size=None)
        ours = cls(wrapped, f"net.{explainer.layer_name}") if cls.needs_layer else cls(wrapped)
        assert torch.allclose(ours(x, [1, 2], size=None), plain, rtol=1e-5, atol=1e-7)
    assert torch.equal(
        UnitAblator(wrapped, "net.layer4", [1, 2], output=lambda o: _logits(o))(x),
        UnitAblator(net, "layer4", [1, 2])(x),
    )
    search = fewest_units_to_flip(wrapped, x[:1], "net.layer4", ranking=list(range(512)))
    plain = fewest_units_to_flip(net, x[:1], "layer4", ranking=list(range(512)))
    assert (search.count, search.new_class) == (plain.count, plain.new_class)
    assert torch.equal(search.logits_after, plain.logits_after)


def _logits(output: object) -> torch.Tensor:
    from netlens.hooks import as_logits

    return as_logits(output)


def test_an_ambiguous_output_is_refused_and_output_fn_resolves_it():
    net = get_model("resnet18")
    wrapped = Wrapped(net, "other-dict").eval()
    x = torch.randn(1, 3, 32, 32)
    before = snapshot(wrapped)
    with pytest.raises(OutputError, match="'scores'"):
        GradCAM(wrapped, "net.layer4")(x)
    assert_unchanged(wrapped, before)
    ours = GradCAM(wrapped, "net.layer4", output=lambda o: o["scores"])(x, 3, size=None)
    assert torch.allclose(ours, GradCAM(net)(x, 3, size=None), rtol=1e-5, atol=1e-7)


class Detached(nn.Module):
    """A head that detaches its input: the logits do not depend on the image."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).detach().mean((2, 3)))


class Zero(nn.Module):
    """Logits that depend on the image with a gradient that is exactly zero."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)) * 0)


def test_a_cut_graph_is_an_error_that_says_where():
    model = Detached().eval()
    x = torch.randn(2, 3, 12, 12)
    before = snapshot(model)
    with pytest.raises(GraphCutError, match="after layer 'features'.*own forward code"):
        Saliency(model)(x)
    with pytest.raises(GraphCutError, match="does not exist"):
        GradCAM(model, "features.0")(x)
    assert_unchanged(model, before)


def test_a_quantized_head_is_named_as_the_cut():
    model = torch.ao.quantization.quantize_dynamic(get_model("resnet18"), {nn.Linear})
    with pytest.raises(GraphCutError, match="'fc"):
        Saliency(model)(torch.randn(1, 3, 32, 32))


def test_a_true_zero_gradient_is_a_zero_map():
    model = Zero().eval()
    x = torch.randn(2, 3, 12, 12)
    assert torch.count_nonzero(Saliency(model)(x)) == 0
    assert torch.count_nonzero(GradCAM(model, "features")(x)) == 0


def test_the_users_backward_hooks_act_as_with_autograd():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(3, 3, 12, 12)
    without = Saliency(model, abs=False, channel_reduce="sum")(x, [0, 1, 2])
    handles = guided_relus(model)
    try:
        ours = Saliency(model, abs=False, channel_reduce="sum")(x, [0, 1, 2])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = captum_attr.Saliency(model).attribute(x, target=[0, 1, 2], abs=False)
        grad_cam = GradCAM(model, "features.1")(x, [0, 1, 2], size=None)
        their_cam = captum_attr.LayerGradCam(model, model.features[1]).attribute(
            x, target=[0, 1, 2], relu_attributions=True
        )
    finally:
        for handle in handles:
            handle.remove()
    assert torch.allclose(ours, theirs.sum(1), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(ours, without)
    assert torch.allclose(grad_cam, their_cam.squeeze(1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: GradCAM(m, "features.3")(x),
        lambda m, x: Saliency(m)(x),
        lambda m, x: FeatureExtractor(m, "features")(x),
        lambda m, x: UnitAblator(m, "features.3", [1])(x),
    ],
    ids=["GradCAM", "Saliency", "FeatureExtractor", "UnitAblator"],
)
def test_a_train_override_is_not_run_and_every_flag_stays(call):
    model = FreezesOnEval().train()
    x = torch.randn(2, 3, 12, 12)
    before = snapshot(model)
    call(model, x)
    assert_unchanged(model, before)
    assert model.fc.weight.requires_grad


@pytest.fixture(scope="module")
def convnext():
    torch.manual_seed(0)
    return torchvision.models.convnext_tiny().eval()


LINEAR = "features.1.0.block.3"  # nn.Linear(96, 384) on (N, H, W, C)


def test_a_channels_last_layer_is_ablated_along_its_channels(convnext):
    x = torch.randn(1, 3, 64, 64)
    units = [0, 5, 383]

    def zero(module, args, output):
        output = output.clone()
        output[..., units] = 0
        return output

    handle = convnext.get_submodule(LINEAR).register_forward_hook(zero)
    try:
        with torch.no_grad():
            expected = convnext(x)
    finally:
        handle.remove()
    assert torch.allclose(UnitAblator(convnext, LINEAR, units)(x), expected, atol=1e-5)
    gelu = "features.1.0.block.4"
    assert UnitAblator(convnext, gelu, [383])(x).shape == (1, 1000)


def test_gradcam_on_a_channels_last_layer_reads_its_channel_axis(convnext):
    x = torch.randn(2, 3, 64, 64)
    captured = {}
    handle = convnext.get_submodule(LINEAR).register_forward_hook(
        lambda m, a, out: captured.__setitem__("a", out)
    )
    try:
        logits = convnext(x)
        activation = captured["a"]  # (N, H, W, C)
        (gradient,) = torch.autograd.grad(logits[:, [7, 9]].diagonal().sum(), activation)
    finally:
        handle.remove()
    weights = gradient.mean((1, 2), keepdim=True)
    expected = torch.relu((weights * activation).sum(-1)).detach()
    ours = GradCAM(convnext, LINEAR)(x, [7, 9], size=None)
    assert ours.shape == (2, 16, 16)
    assert torch.allclose(ours, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_extracting_a_channels_last_layer_reduces_over_height_and_width(convnext):
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.randn(3, 3, 64, 64)
    full = FeatureExtractor(convnext, LINEAR)(x)[LINEAR]
    pooled = FeatureExtractor(convnext, LINEAR).extract(
        DataLoader(TensorDataset(x), batch_size=2), reduce="mean", progress=False
    )[LINEAR]
    assert pooled.shape == (3, 384)
    assert torch.allclose(pooled, full.mean((1, 2)), atol=1e-6)


def test_an_auxiliary_head_in_eval_mode_is_not_reached():
    model = get_model("googlenet")
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(LayerNotReachedError, match="aux1.fc2"):
        UnitAblator(model, "aux1.fc2", [0])(x)
    with pytest.raises(LayerNotReachedError):
        fewest_units_to_flip(model, x, "aux1.fc2", ranking=[0, 1])


def test_a_traced_model_says_what_it_is():
    model = get_model("resnet18")
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
    for call in (
        lambda: UnitAblator(traced, "layer4", [0])(x),
        lambda: GradCAM(traced, "layer4")(x),
        lambda: fewest_units_to_flip(traced, x, "layer4", ranking=[0]),
    ):
        with pytest.raises(LayerNotReachedError, match="TorchScript"):
            call()


def test_a_compiled_models_layers_go_by_their_eager_names():
    model = get_model("resnet18")
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(1, 3, 32, 32)
    try:
        got = UnitAblator(compiled, "layer4", [0, 1])(x)
    except LayerNotReachedError as error:
        assert "_orig_mod" in str(error)
    else:
        assert torch.allclose(got, UnitAblator(model, "layer4", [0, 1])(x), atol=1e-6)


@pytest.mark.slow
def test_checkpointed_densenet_equals_captum():
    torch.manual_seed(0)
    model = torchvision.models.densenet121(memory_efficient=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.Saliency(model).attribute(x, target=3).abs().amax(1)
        ours = Saliency(model)(x, 3)
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-6 * float(theirs.max()))
        for name in ("features.denseblock3.denselayer2.conv1", "features.denseblock2"):
            layer = model.get_submodule(name)
            their_cam = captum_attr.LayerGradCam(model, layer).attribute(
                x, target=3, relu_attributions=True
            )
            our_cam = GradCAM(model, name)(x, 3, size=None)
            assert torch.allclose(our_cam, their_cam.squeeze(1), rtol=1e-4, atol=1e-7)


def test_gradcams_channels_last_copy_is_invisible_to_the_model():
    class Strict(SmallCNN):
        def forward(self, x):
            if not x.is_contiguous():
                raise ValueError("this model wants contiguous input")
            return super().forward(x)

    torch.manual_seed(0)
    model = Strict().eval()
    x = torch.randn(2, 3, 12, 12)
    plain = SmallCNN().eval()
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(GradCAM(model, "features.3")(x), GradCAM(plain, "features.3")(x))
