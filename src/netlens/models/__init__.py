"""Small networks and their training: SmallResNet, train_classifier, torchvision by name.

:class:`SmallResNet` is a ResNet-18 cut down in depth and width, with
torchvision's layer names, that learns the digits of :mod:`netlens.datasets`
in seconds on a CPU. :func:`train_classifier` returns a :class:`History` of
learning curves; :func:`load_torchvision_classifier` builds any torchvision
classification network by name, with its class names.

Examples
--------
>>> from netlens.datasets import load_digits
>>> from netlens.models import SmallResNet, accuracy, train_classifier
>>> train, val = load_digits(size=16)
>>> model = SmallResNet(width=8)
>>> history = train_classifier(model, train, val, epochs=1, progress=False)
>>> history.val_accuracy[-1] == accuracy(model, val)
True
"""

from netlens.models.pretrained import Subject, pretrained_or_digits, sample_photo
from netlens.models.resnet import SmallResNet
from netlens.models.scenes import SceneClassifier, scene_network, train_scene_classifier
from netlens.models.torchvision_classifiers import load_torchvision_classifier
from netlens.models.training import History, accuracy, per_sample_loss, train_classifier

__all__ = [
    "History",
    "SceneClassifier",
    "SmallResNet",
    "Subject",
    "accuracy",
    "load_torchvision_classifier",
    "per_sample_loss",
    "pretrained_or_digits",
    "sample_photo",
    "scene_network",
    "train_classifier",
    "train_scene_classifier",
]
