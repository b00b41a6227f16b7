"""
Switching off the units a class relies on
=========================================

In a network that ends in global average pooling and one linear layer, each
unit (channel) of the last feature map adds ``weight * mean activation`` to a
class score. The units with the largest classifier weights for the predicted
class are the ones it leans on most. This example ranks them with
:func:`netlens.rank_units`, switches off the top five with
:class:`netlens.UnitAblator`, compares the top-5 scores before and after, shows
the feature map of the unit with the largest weight, and searches with
:func:`netlens.fewest_units_to_flip` for the fewest units whose removal changes
the prediction.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from netlens import FeatureExtractor, UnitAblator, fewest_units_to_flip, rank_units, viz
from netlens.models import pretrained_or_digits

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI

# %%
# A trained network
# -----------------
# An ImageNet ResNet-18 from torchvision is the natural subject. Without
# internet its weights cannot be had, and the example trains a small ResNet on
# scikit-learn's handwritten digits instead (no download). Both end in
# ``layer4 -> avgpool -> fc``, so the same code runs on either.
subject = pretrained_or_digits(
    "resnet18",
    photos=("chelsea", "coffee", "rocket", "astronaut"),
    digits=range(12),
    size=32,
    epochs=1 if QUICK else 5,
    lr=1e-3,
    batch_size=32,
)
model, class_names = subject.model, subject.class_names
pictures, inputs = subject.pictures, subject.inputs
layer = "layer4"

# %%
# Switch off the five units with the largest weights
# --------------------------------------------------
# :func:`netlens.rank_units` orders the units of the layer feeding the
# classifier by their weight for a class; here the predicted class of the
# first image. :class:`netlens.UnitAblator` sets those channels to zero for
# one forward pass and leaves the model untouched afterwards.
x = inputs[:1]
with torch.no_grad():
    before = model(x)[0]
top1 = int(before.argmax())
units = rank_units(model, top1)[:5]
after = UnitAblator(model, layer, units)(x)[0]
print(f"predicted class: {class_names[top1]}")
print(f"five units with the largest weight for it: {units.tolist()}")


def top5(scores):
    order = scores.argsort(descending=True)[:5]
    return ", ".join(f"{class_names[int(i)]} ({float(scores[i]):.2f})" for i in order)


print(f"top 5 before: {top5(before)}")
print(f"top 5 after:  {top5(after)}")

# %%
# The bars show the raw class scores (logits). The predicted class loses the
# units that pushed hardest towards it, so its score drops while the other
# classes barely move. Whether it loses the first place depends on its lead:
# on the digits it is far ahead, and five of the 128 units are not enough.
fig = viz.ablation_comparison(before, after, class_names, k=5)
fig.suptitle(
    f"the 5 {layer} units with the largest weight for '{class_names[top1]}' "
    f"({', '.join(map(str, units.tolist()))}) switched off"
)

# %%
# The feature map of the unit with the largest weight
# ---------------------------------------------------
# :class:`netlens.FeatureExtractor` reads the layer's output, no need to cut
# the network apart. Left: the image; middle: the unit's activation at the
# layer's resolution; right: the activation upsampled over the image with
# :func:`netlens.viz.overlay`. On the digits, the unit with the largest weight
# for "2" fires on the flat stroke at the bottom, the part that sets a 2
# apart from a 3 or a 7.
unit = int(units[0])
features = FeatureExtractor(model, layer)(x)[layer]
print(f"{layer} feature map: {tuple(features.shape)}")
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), layout="constrained")
axes[0].imshow(viz.to_image(pictures[0]))
axes[0].set_title(f"image (predicted '{class_names[top1]}')")
axes[0].set_axis_off()
shown = axes[1].imshow(features[0, unit].numpy(), cmap="viridis")
axes[1].set_title(f"unit {unit} of {layer}")
axes[1].set_xlabel("column")
axes[1].set_ylabel("row")
fig.colorbar(shown, ax=axes[1], label="activation")
viz.overlay(pictures[0], features[0, unit], ax=axes[2], title=f"unit {unit} over the image")

# %%
# How few units does it take?
# ---------------------------
# :func:`netlens.fewest_units_to_flip` removes the top-ranked units one more
# at a time (many counts per batched forward pass) and stops at the first
# count that changes the top-1 class. Left: for the first image, the score of
# the predicted class and of the best other class as more and more of its
# top-ranked units are switched off. Right: the count that changes the
# prediction, for each of the images.
searches = [fewest_units_to_flip(model, inputs[i : i + 1], layer) for i in range(len(inputs))]
for i, search in enumerate(searches):
    print(
        f"image {i}: switching off {search.count} unit(s) turns "
        f"'{class_names[search.original_class]}' into '{class_names[search.new_class]}'"
    )

ranking = rank_units(model, top1)
steps = range((searches[0].count or 30) + 6)
curves = []
for k in steps:
    scores = UnitAblator(model, layer, ranking[:k])(x)[0] if k else before
    others = torch.cat([scores[:top1], scores[top1 + 1 :]])
    curves.append((float(scores[top1]), float(others.max())))
curves = np.array(curves)

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
left.plot(steps, curves[:, 0], marker="o", label=f"predicted class '{class_names[top1]}'")
left.plot(steps, curves[:, 1], marker="s", label="best other class")
if searches[0].count is not None:
    left.axvline(searches[0].count, color="gray", linestyle="--", label="prediction changes")
left.set_xlabel("top-ranked units switched off")
left.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
left.set_ylabel("score (logit)")
left.set_title("image 0")
left.legend()
counts = [search.count if search.count is not None else 0 for search in searches]
right.bar(range(len(searches)), counts, color="tab:blue")
right.set_xticks(
    range(len(searches)),
    [f"{i}\n'{class_names[s.original_class]}'" for i, s in enumerate(searches)],
)
right.set_xlabel("image and its predicted class")
right.set_ylabel("units switched off")
right.set_title(f"fewest top-ranked {layer} units that change the prediction")

viz.save_figures()  # run as a script: the figures go to ./figures/
