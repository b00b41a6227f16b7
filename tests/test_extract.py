import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import assert_unchanged, get_model, snapshot
from netlens import FeatureExtractor
from netlens.hooks import LayerNotReachedError, RepeatedCallError
from netlens.layers import LayerNotFoundError, find_feature_layer


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_layer4_equals_the_chopped_network(name, images):
    model = get_model(name)
    chopped = nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        expected = chopped(images)
    assert torch.equal(FeatureExtractor(model, ["layer4"])(images)["layer4"], expected)


@pytest.mark.slow
def test_conv_before_inplace_relu_gives_pre_relu_values():
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None).eval()
    assert isinstance(vgg.features[29], nn.ReLU) and vgg.features[29].inplace
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = vgg.features[:29](x)
    got = FeatureExtractor(vgg, "features.28")(x)["features.28"]
    assert torch.equal(got, expected)
    assert (got < 0).any(), "a ReLU output would have no negative values"


def test_extraction_does_not_change_the_logits(model_name, images):
    model = get_model(model_name)
    layer = find_feature_layer(model, images)
    fx = FeatureExtractor(model, layer)
    before = snapshot(model)
    with torch.no_grad():
        plain = model(images)
        with fx:
            hooked = model(images)
    assert torch.equal(plain, hooked)
    assert fx.features[layer].shape[0] == images.shape[0]
    assert_unchanged(model, before)


def test_several_layers_at_once_equal_one_at_a_time(images):
    model = get_model("densenet121")
    names = ["features.transition1", "features.denseblock3", "classifier"]
    together = FeatureExtractor(model, names)(images)
    for name in names:
        assert torch.equal(together[name], FeatureExtractor(model, name)(images)[name])


def _count_calls(model: nn.Module) -> tuple[list[str], list]:
    ran: list[str] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, args, n=n: ran.append(n))
        for n, m in model.named_modules()
        if n
    ]
    return ran, handles


def test_stop_early_runs_nothing_after_the_last_requested_layer(images):
    model = get_model("resnet18")
    ran, handles = _count_calls(model)
    try:
        fx = FeatureExtractor(model, ["layer1", "layer2"], stop_early=True)
        logits = "not computed"
        with fx:
            logits = model(images)
        feats = fx.features
    finally:
        for h in handles:
            h.remove()
    assert logits == "not computed"
    assert set(feats) == {"layer1", "layer2"}
    assert not any(n.startswith(("layer3", "layer4", "avgpool", "fc")) for n in ran)
    assert "layer2.1.conv2" in ran
    full = FeatureExtractor(model, ["layer2"])(images)["layer2"]
    assert torch.equal(feats["layer2"], full)


def test_stop_early_call_form_returns_features(images):
    model = get_model("resnet50")
    before = snapshot(model)
    feats = FeatureExtractor(model, "layer2", stop_early=True)(images)
    assert feats["layer2"].shape == (2, 512, 8, 8)
    assert_unchanged(model, before)


def test_module_run_twice_in_one_pass_is_reported(images):
    model = get_model("resnet18")
    before = snapshot(model)
    with pytest.raises(RepeatedCallError, match="layer1.0.relu.*ran 2 times"):
        FeatureExtractor(model, "layer1.0.relu")(images)
    assert_unchanged(model, before)


def test_layer_not_reached_is_reported():
    model = get_model("googlenet")  # aux heads do not run in eval mode
    before = snapshot(model)
    with pytest.raises(LayerNotReachedError, match="aux1"):
        FeatureExtractor(model, ["inception5b", "aux1"])(torch.randn(1, 3, 64, 64))
    assert_unchanged(model, before)


def test_bad_input_is_refused_before_anything_is_attached(images):
    model = get_model("resnet18")
    before = snapshot(model)
    with pytest.raises(LayerNotFoundError, match="layer4"):
        FeatureExtractor(model, ["layer3", "layer5"])
    fx = FeatureExtractor(model, "layer4")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\).*unsqueeze"):
        fx(images[0])
    with pytest.raises(TypeError, match="floating-point"):
        fx(images.to(torch.uint8))
    assert_unchanged(model, before)


def test_no_hook_left_after_an_exception_in_the_block(images):
    model = get_model("resnet18")
    before = snapshot(model)
    with pytest.raises(ZeroDivisionError):
        with FeatureExtractor(model, ["layer3"]):
            model(images)
            raise ZeroDivisionError
    assert_unchanged(model, before)


def test_reentering_an_active_extractor_is_refused(images):
    model = get_model("resnet18")
    fx = FeatureExtractor(model, "layer3")
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="already active"):
        with fx, fx:
            model(images)
    assert_unchanged(model, before)


def test_calling_an_extractor_inside_its_own_block_sees_that_pass(images):
    model = get_model("resnet18")
    fx = FeatureExtractor(model, "layer3")
    expected = fx(images)["layer3"]
    with fx:
        called = fx(images[:1])["layer3"]
    assert torch.allclose(called, expected[:1], atol=1e-5)
    assert torch.equal(fx.features["layer3"], called)


def test_two_extractors_on_one_model_both_work(images):
    model = get_model("resnet18")
    a, b = FeatureExtractor(model, "layer2"), FeatureExtractor(model, ["layer2", "layer4"])
    with a, b, torch.no_grad():
        model(images)
    assert torch.equal(a.features["layer2"], b.features["layer2"])
    assert b.features["layer4"].shape == (2, 512, 2, 2)


def test_train_mode_model_keeps_its_mode_and_batchnorm_statistics(images):
    model = get_model("resnet18")
    model.train()
    try:
        before = snapshot(model)
        FeatureExtractor(model, "layer4")(images)
        assert_unchanged(model, before)
    finally:
        model.eval()


def test_detach_false_keeps_the_graph(images):
    model = get_model("resnet18")
    x = images.clone().requires_grad_(True)
    feats = FeatureExtractor(model, "layer2", detach=False)(x)
    feats["layer2"].sum().backward()
    expected = torch.autograd.functional.vjp(
        lambda t: nn.Sequential(*list(model.children())[:6])(t),
        images,
        torch.ones(2, 128, 8, 8),
    )[1]
    assert torch.allclose(x.grad, expected, atol=1e-5)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("reduce", [None, "mean", "max"])
def test_extract_over_a_loader_equals_one_big_batch(reduce):
    model = get_model("resnet18")
    x = torch.randn(7, 3, 32, 32)
    loader = DataLoader(TensorDataset(x, torch.zeros(7)), batch_size=3)
    got = FeatureExtractor(model, ["layer3", "fc"]).extract(loader, reduce=reduce, progress=False)
    whole = FeatureExtractor(model, ["layer3", "fc"])(x)
    expected = whole["layer3"]
    if reduce == "mean":
        expected = expected.mean((2, 3))
    elif reduce == "max":
        expected = expected.amax((2, 3))
    assert torch.allclose(got["layer3"], expected, atol=1e-5)
    assert torch.allclose(got["fc"], whole["fc"], atol=1e-5)


def test_extract_shows_a_progress_bar(capsys):
    model = get_model("resnet18")
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32)), batch_size=2)
    FeatureExtractor(model, "layer1").extract(loader, reduce="mean")
    err = capsys.readouterr().err
    assert "extracting" in err and "2/2" in err


def test_extract_interrupted_by_the_loader_leaves_nothing_attached():
    model = get_model("resnet18")
    before = snapshot(model)

    def batches():
        yield torch.randn(2, 3, 32, 32)
        raise OSError("disk went away")

    fx = FeatureExtractor(model, "layer2")
    with pytest.raises(OSError, match="disk"):
        fx.extract(batches(), progress=False)
    assert_unchanged(model, before)
    assert fx(torch.randn(1, 3, 32, 32))["layer2"].shape[0] == 1
