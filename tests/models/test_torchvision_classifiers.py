import pytest
import torch
import torchvision
from torch import nn

from conftest import get_model
from netlens.models import load_torchvision_classifier


class _AuxiliaryHeadLast(nn.Module):
    """The logits come from ``fc``; an auxiliary head is registered after it."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 7)
        self.aux = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(x), 1))


@pytest.mark.parametrize("arch", ["resnet18", "squeezenet1_1", "mobilenet_v3_small"])
def test_random_weights_get_one_name_per_logit(arch, monkeypatch):
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights: get_model(name))
    model, categories = load_torchvision_classifier(arch, weights=None)
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, 64, 64))
    assert categories == [f"class {i}" for i in range(logits.shape[1])]
    assert not any(m.training for m in model.modules())


def test_class_count_is_read_from_the_logits_not_the_last_layer(monkeypatch):
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights: _AuxiliaryHeadLast())
    _, categories = load_torchvision_classifier("resnet18", weights=None)
    assert len(categories) == 7


def test_unknown_architecture_and_weights_are_explained():
    with pytest.raises(ValueError, match="did you mean resnet18"):
        load_torchvision_classifier("resnet81", weights=None)
    with pytest.raises(ValueError, match="has no weights 'NOPE'"):
        load_torchvision_classifier("resnet18", weights="NOPE")
