import pytest
import torch
from torch import nn

from conftest import INPUT_SIZE, get_model
from netlens.layers import (
    LayerNotFoundError,
    find_classifier,
    find_feature_layer,
    find_last_conv,
    layer_names,
    resolve_layer,
)

FEATURE_LAYER = {
    "resnet18": "layer4",
    "resnet50": "layer4",
    "vgg11_bn": "features.27",
    "densenet121": "features",
    "mobilenet_v2": "features",
    "mobilenet_v3_small": "features",
    "efficientnet_b0": "features",
    "squeezenet1_1": "classifier.2",
    "convnext_tiny": "features",
    "regnet_y_400mf": "trunk_output",
    "googlenet": "inception5b",
    "shufflenet_v2_x0_5": "conv5",
}

CLASSIFIER = {
    "resnet18": "fc",
    "resnet50": "fc",
    "vgg11_bn": "classifier.6",
    "densenet121": "classifier",
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3_small": "classifier.3",
    "efficientnet_b0": "classifier.1",
    "convnext_tiny": "classifier.2",
    "regnet_y_400mf": "fc",
    "googlenet": "fc",
    "shufflenet_v2_x0_5": "fc",
}


def example() -> torch.Tensor:
    return torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)


def test_resolve_layer_by_name_and_by_module():
    model = get_model("resnet18")
    assert resolve_layer(model, "layer4.1.conv2") == ("layer4.1.conv2", model.layer4[1].conv2)
    assert resolve_layer(model, model.layer3) == ("layer3", model.layer3)


def test_a_module_registered_under_two_names_answers_to_both():
    from netlens import GradCAM

    model = get_model("resnet18")
    model.head = model.fc  # the same module, a second name (named_modules lists only "fc")
    assert "head" not in layer_names(model)
    assert resolve_layer(model, "head") == ("head", model.fc)
    assert resolve_layer(model, "layer4.1.relu:1") == ("layer4.1.relu:1", model.layer4[1].relu)
    x = torch.randn(2, 3, INPUT_SIZE, INPUT_SIZE)
    model.last = model.layer4
    assert torch.equal(GradCAM(model, "last")(x, 3), GradCAM(model, "layer4")(x, 3))


def test_unknown_layer_lists_close_matches():
    model = get_model("resnet18")
    with pytest.raises(LayerNotFoundError) as info:
        resolve_layer(model, "layer4.2.conv2")
    assert "'layer4.1.conv2'" in str(info.value)
    with pytest.raises(LayerNotFoundError, match="'layer4'"):
        resolve_layer(model, "layr4")


def test_foreign_module_and_wrong_type_are_refused():
    model = get_model("resnet18")
    with pytest.raises(LayerNotFoundError, match="not part of"):
        resolve_layer(model, nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="dotted name"):
        resolve_layer(model, 4)  # type: ignore[arg-type]
    with pytest.raises(LayerNotFoundError):
        resolve_layer(model, "")


def test_layer_names_are_the_named_modules():
    model = get_model("resnet18")
    assert layer_names(model) == [n for n, _ in model.named_modules() if n]


def test_find_feature_layer(model_name):
    model = get_model(model_name)
    assert find_feature_layer(model, example()) == FEATURE_LAYER[model_name]


def test_find_feature_layer_outputs_the_last_conv_resolution(model_name):
    model = get_model(model_name)
    from netlens import FeatureExtractor

    conv = find_last_conv(model, example())
    layer = find_feature_layer(model, example())
    feats = FeatureExtractor(model, [conv, layer])(example())
    assert feats[layer].dim() == 4
    assert feats[layer].shape[-2:] == feats[conv].shape[-2:]


def test_find_classifier(model_name):
    model = get_model(model_name)
    if model_name not in CLASSIFIER:
        with pytest.raises(LayerNotFoundError, match="GradCAM"):
            find_classifier(model, example())
        return
    name = find_classifier(model, example())
    assert name == CLASSIFIER[model_name]
    assert isinstance(resolve_layer(model, name)[1], nn.Linear)
