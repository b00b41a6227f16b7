"""
Every attribution method side by side
=====================================

netlens registers each attribution method in
:data:`netlens.attribution.METHODS`, by the name the ``netlens explain
--method`` option takes. This example runs every one of them with its
defaults on the same images: four handwritten digits read by a small ResNet
trained here in seconds, and a photo at 160 x 160 pixels. Each method's run
time is printed beside it: the methods that perturb (Score-CAM, Ablation-CAM,
Occlusion) or integrate (Integrated Gradients, SmoothGrad) pay for many
forward passes what the single-backward methods (Grad-CAM, Saliency) do in
one.

Which of these maps to trust is a different question from how they look: see
:ref:`guide-agreement` for which library computes the same map, and the user
guide's page of each method for its pitfalls.
"""

import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torchvision

from netlens import viz
from netlens.attribution import METHODS
from netlens.datasets import load_digits
from netlens.models import SmallResNet, accuracy, sample_photo, train_classifier

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter run, for CI


def run_all(model, x, target):
    """Every registered method's maps of ``x`` for ``target``, and its run time."""
    maps, seconds = {}, {}
    for cls in METHODS.values():
        method = cls(model)
        start = time.perf_counter()
        try:
            maps[cls.title] = method(x, target)
        except Exception as error:  # e.g. CAM on a head that is not GAP + linear
            print(f"{cls.title:>22}: not applicable ({type(error).__name__})")
            continue
        seconds[cls.title] = time.perf_counter() - start
        print(f"{cls.title:>22}: {1000 * seconds[cls.title]:8.1f} ms")
    return maps, seconds


# %%
# Digits
# ------
# A small ResNet learns scikit-learn's 8x8 digits, upsampled to 32x32, in a
# few seconds; the maps explain its prediction for four test digits.
train, test = load_digits(size=32)
model = SmallResNet(num_classes=10, in_channels=1)
train_classifier(model, train, test, epochs=1 if QUICK else 2, progress=False)
model.eval()
print(f"test accuracy: {accuracy(model, test):.3f}")

x = torch.stack([test.images[int((test.labels == d).nonzero()[0])] for d in (0, 3, 5, 8)])
with torch.no_grad():
    predicted = model(x).argmax(1)
print("4 digits, 32 x 32, small ResNet:")
digit_maps, digit_seconds = run_all(model, x, predicted)
titles = [f"read as {int(p)}" for p in predicted]
fig = viz.attribution_grid(x, digit_maps, titles=titles)
fig.set_size_inches(1.3 * (len(digit_maps) + 1), 1.4 * len(x))

# %%
# A photo
# -------
# torchvision's ImageNet weights cannot be downloaded here, so the photo is
# explained by a ResNet-18 with random weights: the maps show how each method
# draws and what it costs at 160 x 160 pixels, not what a trained network
# sees. With weights (``torchvision.models.resnet18(weights="DEFAULT")``) the
# same loop explains the network's top class.
resnet = torchvision.models.resnet18().eval()
side = 64 if QUICK else 160
picture = sample_photo("astronaut", side)[None]
mean = torch.tensor(viz.IMAGENET_MEAN).view(1, 3, 1, 1)
std = torch.tensor(viz.IMAGENET_STD).view(1, 3, 1, 1)
photo = (picture - mean) / std
with torch.no_grad():
    top = int(resnet(photo).argmax())
print(f"1 photo, {side} x {side}, ResNet-18:")
photo_maps, photo_seconds = run_all(resnet, photo, top)
fig = viz.attribution_grid(photo, photo_maps, mean=viz.IMAGENET_MEAN, std=viz.IMAGENET_STD)
fig.set_size_inches(1.6 * (len(photo_maps) + 1), 2.0)

# %%
# Run times
# ---------
# One bar per method and image set, on a logarithmic axis: the cost of a
# method is a property of the method (how many passes it runs), not of the
# picture.
names = list(photo_seconds)
fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1))
positions = np.arange(len(names))
ax.barh(
    positions - 0.2,
    [1000 * digit_seconds.get(n, np.nan) for n in names],
    0.4,
    label="4 digits, 32 px, small ResNet",
)
ax.barh(
    positions + 0.2,
    [1000 * photo_seconds[n] for n in names],
    0.4,
    label=f"1 photo, {side} px, ResNet-18",
)
ax.set_yticks(positions, names)
ax.set_xscale("log")
ax.set_xlabel("milliseconds per call (this machine)")
ax.invert_yaxis()
ax.legend(loc="lower right", fontsize="small")
fig.tight_layout()
viz.save_figures()  # run as a script: the figures go to ./figures/
