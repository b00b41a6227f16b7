import pytest
import torch

from netlens.datasets import SCENE_CLASSES, scenes
from netlens.models import SmallResNet, accuracy
from netlens.models.scenes import (
    TRAIN_SEED,
    VALIDATION_SEED,
    SceneClassifier,
    scene_network,
    train_scene_classifier,
)


def test_scene_network_is_seeded_and_leaves_the_global_random_state_alone():
    state = torch.random.get_rng_state()
    a, b, c = scene_network(seed=3), scene_network(seed=3), scene_network(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert isinstance(a, SmallResNet) and not a.training
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert a.fc.out_features == len(SCENE_CLASSES) and a.layer4.conv2.out_channels == 64
    assert scene_network(width=4).layer4.conv2.out_channels == 32


@pytest.mark.slow
def test_tiny_training_reports_what_it_did():
    trained = train_scene_classifier(
        images=48, val_images=24, epochs=2, size=32, seed=1, progress=False
    )
    assert isinstance(trained, SceneClassifier)
    assert trained.classes == list(SCENE_CLASSES) and trained.size == 32 and trained.seed == 1
    assert len(trained.history.val_accuracy) == 2 and trained.seconds > 0
    assert not trained.model.training
    # the validation accuracy is that of the returned model on the validation scenes
    val = scenes(24, size=32, seed=VALIDATION_SEED + 1).split()
    assert trained.val_accuracy == accuracy(trained.model, val)
    # training moved the weights away from the untrained twin's
    control = scene_network(seed=1)
    assert not torch.equal(trained.model.conv1.weight, control.conv1.weight)


def test_training_scenes_are_not_the_held_out_ones():
    assert TRAIN_SEED > 0 and VALIDATION_SEED > TRAIN_SEED
    held_out = scenes(6, size=32, seed=0).images
    assert not torch.equal(scenes(6, size=32, seed=TRAIN_SEED).images, held_out)


@pytest.mark.slow
def test_a_short_training_learns_the_scenes():
    trained = train_scene_classifier(images=240, val_images=120, epochs=2, size=32, progress=False)
    assert trained.val_accuracy > 0.4  # chance is 1/6


@pytest.mark.parametrize("kwargs", [{"images": 0}, {"epochs": 0}, {"width": 0}, {"size": 8}])
def test_bad_budgets(kwargs):
    with pytest.raises(ValueError):
        train_scene_classifier(progress=False, **kwargs)
