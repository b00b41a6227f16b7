"""
Looking at the filters of two convolutional layers
==================================================

A convolution's filters are small arrays of weights, positive and negative,
of no fixed range: to look at them they have to be scaled into the [0, 1]
range of an image first. :func:`netlens.viz.filter_grid` does that and lays
the filters of a layer out as tiles. This example shows the first layer of a
network (where the filters act on pixels and can be read as pictures), a
deeper layer, and how training changed them.
"""

import os

import matplotlib.pyplot as plt
import torch
from torch import nn

from netlens import FeatureExtractor, viz
from netlens.models import SmallResNet, pretrained_or_digits

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI

# %%
# A trained network, and its starting point
# -----------------------------------------
# The first choice is torchvision's ImageNet ResNet-18 (the first layer: 64
# colour filters of 7x7 pixels). Offline its weights cannot be had, so the
# example trains a small ResNet on scikit-learn's handwritten digits, with a
# 7x7 first convolution like ResNet-18's; :meth:`~netlens.models.Subject.untrained`
# gives the random starting weights to compare with.


def small_resnet_7x7():
    """A SmallResNet for the digits whose first convolution is 7x7, as ResNet-18's."""
    network = SmallResNet(num_classes=10, in_channels=1)
    network.conv1 = nn.Conv2d(1, 16, kernel_size=7, padding=3, bias=False)
    return network


subject = pretrained_or_digits(
    "resnet18",
    photos=("astronaut",),
    size=32,
    network=small_resnet_7x7,  # built only if the digits are used
    epochs=1 if QUICK else 5,
)
model, initial = subject.model, subject.untrained()
shown, inputs = subject.pictures, subject.inputs
first, deeper = "conv1", "layer2.0.conv1" if subject.pretrained else "layer2.conv1"
layers = dict(model.named_modules())
weight = layers[first].weight.detach()
print(f"{first} weights: {tuple(weight.shape)}, from {weight.min():.3f} to {weight.max():.3f}")

# %%
# (a) Why the filters need scaling
# --------------------------------
# Left: the weights of the first layer. They lie in a narrow band around zero,
# half of them negative, while an image shows values from 0 (black) to 1
# (white): drawn as they are, the negative half would be black and the rest
# nearly so. Middle: :func:`netlens.viz.filter_grid` maps the smallest
# weight of the layer to black and the largest to white (``scale="layer"``),
# so mid-gray is zero and tiles compare. Right: ``scale="filter"`` stretches
# every filter to the full range, which brings out the pattern of weak ones.
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
axes[0].hist(weight.flatten().numpy(), bins=60, color="tab:blue")
axes[0].axvspan(0, 1, color="tab:green", alpha=0.15, label="displayable range [0, 1]")
axes[0].set_xlim(weight.min() - 0.05, 1.05)
axes[0].set_xlabel("weight")
axes[0].set_ylabel("count")
axes[0].set_title(f"{first}: raw weights")
axes[0].legend(loc="upper right")
viz.filter_grid(weight, scale="layer", ax=axes[1])
viz.filter_grid(weight, scale="filter", ax=axes[2])
axes[1].set_title(f"{first}, scaled per layer\n{axes[1].get_title()}")
axes[2].set_title(f"{first}, scaled per filter\n{axes[2].get_title()}")

# %%
# What training changed in the first layer
# ----------------------------------------
# The random starting filters, the trained ones, and their difference, each
# filter scaled on its own. (For the ImageNet network the "start" is a fresh
# random initialisation, not the one its training began from.) On the digits,
# the trained filters still look much like their random start: training moved
# them by a fraction of their size (printed below). The change itself is
# smooth: bright and dark bars, edges and blobs a few pixels wide. The random
# pixel-to-pixel noise stays because the digits, upsampled from 8x8 pixels,
# hold no fine detail for it to respond to, so removing it would not lower the
# loss. (The first layer of an ImageNet network, trained far longer on
# detailed photos, shows clean oriented edges and colour blobs instead.)
start = dict(initial.named_modules())[first].weight.detach()
change = weight - start
print(f"{first}: |trained - start| / |start| = {change.norm() / start.norm():.2f}")
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
for ax, values, title in [
    (axes[0], start, "random start"),
    (axes[1], weight, "trained"),
    (axes[2], change, "trained minus start"),
]:
    viz.filter_grid(values, scale="filter", ax=ax)
    ax.set_title(f"{first}: {title}\n{ax.get_title()}")

# %%
# What the first-layer filters respond to
# ---------------------------------------
# Filters are easier to read through their responses. Top row: eight
# first-layer filters (trained, each scaled on its own). Below: each filter's
# output on a test image, captured with :class:`netlens.FeatureExtractor`,
# yellow where it responds most. On the digits, some filters respond along
# one side of the strokes, mostly their left edges: edge detectors. Others
# respond to the dark background and fall quiet on the strokes. The response
# is hard to guess from the noisy filter tile: on smooth images only the
# filter's smooth, large-scale part matters.
responses = FeatureExtractor(model, first)(inputs)[first]
count = 8
fig, axes = plt.subplots(
    1 + len(shown), 1 + count, figsize=(1.5 * (1 + count), 1.6 * (1 + len(shown)))
)
fig.set_layout_engine("constrained")
for unit in range(count):
    viz.filter_grid(weight[unit : unit + 1], scale="filter", ax=axes[0, 1 + unit])
    axes[0, 1 + unit].set_title(f"filter {unit}")
    for row in range(len(shown)):
        axes[1 + row, 1 + unit].imshow(viz.normalize(responses[row, unit]).numpy())
axes[0, 0].text(0.5, 0.5, "filter", ha="center", va="center", fontsize=12)
for row in range(len(shown)):
    axes[1 + row, 0].imshow(viz.to_image(shown[row]))
    axes[1 + row, 0].set_title(f"image {row}")
for ax in axes.flat:
    ax.set_axis_off()
fig.suptitle(f"{first} filters and their responses")

# %%
# (b) A deeper layer
# ------------------
# A filter of a deeper layer acts on the previous layer's channels, not on
# pixels: each has one 3x3 slice per input channel. Left: each filter of
# ``layer2`` drawn as the mean of its slices. Right: all the slices of its
# first filter. These pictures show weights over feature maps, so unlike the
# first layer they cannot be read as image patterns; the units' responses
# (see the activation maps of other examples) say more about what they do.
deep = layers[deeper].weight.detach()
print(f"{deeper} weights: {tuple(deep.shape)}")
fig, axes = plt.subplots(1, 2, figsize=(11, 5), layout="constrained")
viz.filter_grid(deep, scale="filter", ax=axes[0])
axes[0].set_title(f"{deeper}\n{axes[0].get_title()}")
viz.filter_grid(deep[0][:, None], scale="layer", ax=axes[1])
axes[1].set_title(f"{deeper}, filter 0: one tile per input channel\n{axes[1].get_title()}")

viz.save_figures()  # run as a script: the figures go to ./figures/
