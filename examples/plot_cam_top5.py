"""
Class activation maps of the top-5 classes
==========================================

A network that ends in global average pooling and one linear layer scores
class ``c`` as ``w_c . mean(A) + b_c``, where ``A`` is the last feature map.
Applying the linear layer at every position of ``A`` instead of to its mean
gives one score per position: the class activation map (CAM) of Zhou et al.
(2016). This example computes it by hand, checks it against
:class:`netlens.CAM`, and overlays the maps of the five best-scoring classes
on a picture that holds several objects.
"""

import os

import matplotlib.pyplot as plt
import torch

import netlens
from netlens import CAM, FeatureExtractor, viz
from netlens.models import pretrained_or_digits

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI

# %%
# A trained network and a picture with several objects
# ----------------------------------------------------
# With torchvision's ImageNet ResNet-18 the picture would be a photo of a
# scene. Offline, a small ResNet learns scikit-learn's handwritten digits
# instead, and the "scene" is a strip of three different test digits side by
# side. The network is fully convolutional up to the global average pooling,
# so it takes the 32x96 strip as it is and averages the evidence of all three
# digits.
subject = pretrained_or_digits(
    "resnet18", photos=("astronaut", "coffee"), size=32, epochs=1 if QUICK else 5
)
model, class_names = subject.model, subject.class_names
if subject.pretrained:
    scene, other_scene = subject.pictures
    scene_label, other_label = "astronaut", "coffee"
    scene_tiles = other_tiles = None
else:
    test = subject.test

    def mosaic(labels, columns):
        """The first test digit of each label, ``columns`` tiles per row."""
        tiles = [test.images[int((test.labels == label).nonzero()[0])] for label in labels]
        rows = [torch.cat(tiles[i : i + columns], dim=2) for i in range(0, len(tiles), columns)]
        return torch.cat(rows, dim=1)

    scene_tiles, other_tiles = [2, 7, 4], [0, 3, 6, 9]
    scene, other_scene = mosaic(scene_tiles, 3), mosaic(other_tiles, 2)
    scene_label, other_label = "digits 2, 7, 4", "digits 0, 3 / 6, 9"


def prepare(picture):
    """A (C, H, W) picture as the network's input batch of one."""
    return subject.prepare(picture)[None]


x = prepare(scene)
print(f"input: {tuple(x.shape)}")

# %%
# (a) The last feature map as one row per position
# ------------------------------------------------
# :class:`netlens.FeatureExtractor` captures the output of ``layer4``, shape
# ``(1, C, h, w)``. Reshaped to ``(h*w, C)``, each row is the feature vector
# of one position of the picture.
layer = "layer4"
features = FeatureExtractor(model, layer)(x)[layer]
_, channels, h, w = features.shape
rows = features[0].reshape(channels, h * w).T
print(f"{layer} output {tuple(features.shape)} -> per-position rows {tuple(rows.shape)}")

# %%
# (b) The classifier at every position
# ------------------------------------
# Feeding the rows to the network's own linear layer gives ``(h*w, classes)``
# scores. Their mean over positions is the network's output (the pooling and
# the linear layer commute), and without the bias they are exactly what
# :class:`netlens.CAM` returns at the layer's resolution (``size=None``).
with torch.no_grad():
    per_position = model.fc(rows)
    logits = model(x)[0]
print(f"per-position scores: {tuple(per_position.shape)}")
print(
    "mean over positions vs the network's logits, max |difference|: "
    f"{(per_position.mean(0) - logits).abs().max():.2e}"
)
by_hand = (per_position - model.fc.bias.detach()).T.reshape(len(class_names), h, w)
top = logits.argsort(descending=True)[:5]
cam = CAM(model, layer=layer)
netlens_maps = cam(x, target=top[None], size=None)[0]  # (1, K) targets: K maps of one image
print(
    "top-5 maps by hand vs netlens.CAM(size=None), max |difference|: "
    f"{(by_hand[top] - netlens_maps).abs().max():.2e}"
)

# %%
# The two maps of the best class side by side, at the layer's resolution
# (one cell per position of the feature map): the same numbers.
fig, axes = plt.subplots(1, 2, figsize=(11, 1.6 + 4.5 * h / w), layout="constrained")
best = int(top[0])
for ax, values, title in [
    (axes[0], by_hand[best], "by hand: fc weights at every position"),
    (axes[1], netlens_maps[0], "netlens.CAM(size=None)"),
]:
    shown = ax.imshow(values.numpy(), cmap="viridis")
    ax.set_title(f"{title}\nclass '{class_names[best]}'")
    ax.set_xlabel("column of the feature map")
    ax.set_ylabel("row")
    fig.colorbar(shown, ax=ax, label="logit contribution", shrink=0.7)

# %%
# (c) Where the five best classes find their evidence
# ---------------------------------------------------
# One panel per class of the top 5, the CAM upsampled over the picture with
# :func:`netlens.viz.overlay` (red: a large contribution to the class score,
# blue: a negative one), titled with the class's logit and softmax probability. The printed lines
# say on which digit each map peaks.
#
# On the strip of 2, 7 and 4, the three digits are among the top five and
# the map of each peaks on its own digit: the class activation follows the
# object that carries the class. The other places go to classes that are
# not in the picture; their maps spread over strokes that resemble them (a
# "3" over the curves of the 2 and the 7, say). The global average pools the
# whole strip, so each digit supplies only about a third of the evidence and
# the probabilities stay low and close together; which digit comes first
# can change from one training run to the next.


def show_top5(picture, label, tiles=None):
    """Overlay the CAMs of the top-5 classes; ``tiles``: digit of each 32x32 tile, if any."""
    inputs = prepare(picture)
    # One call: the top-5 classes, their probabilities and their maps.
    explained = netlens.explain(model, inputs, cam, topk=5, class_names=class_names)
    top, probabilities, maps = explained.classes[0], explained.probs[0], explained.maps[0]
    with torch.no_grad():
        scores = model(inputs)[0]
    height, width = picture.shape[-2:]
    nrows, ncols = (3, 2) if width >= 2 * height else (2, 3)
    panel = 4.5 / ncols * 2
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel * ncols, (panel * height / width + 0.7) * nrows),
        layout="constrained",
    )
    axes = axes.flat
    axes[0].imshow(viz.to_image(picture))
    axes[0].set_title(f"input: {label}")
    axes[0].set_axis_off()
    for rank, (ax, c, heat) in enumerate(zip(axes[1:], top.tolist(), maps, strict=True), start=1):
        title = (
            f"#{rank} '{class_names[c]}'\nlogit {scores[c]:.2f}, p = {probabilities[rank - 1]:.2f}"
        )
        viz.overlay(picture, heat, ax=ax, title=title)
        where = ""
        if tiles is not None:
            row, col = divmod(int(heat.flatten().argmax()), width)
            tile = (row // 32) * (width // 32) + col // 32
            where = f"; CAM peak on the digit {tiles[tile]}"
        print(title.replace("\n", ": ") + where)
    if tiles is not None:
        named = set(top.tolist())
        print(
            f"digits of the picture in the top 5: {[d for d in tiles if d in named]}; "
            f"top-5 classes not in the picture: {[c for c in top.tolist() if c not in tiles]}"
        )
    return fig


show_top5(scene, scene_label, scene_tiles)

# %%
# (d) Another picture
# -------------------
# Four digits in a 2x2 square: the maps now have to find their digit in two
# dimensions. Here the method works only in part: a digit of the picture
# (the 0) drops out of the top five, and classes that are not in the picture
# ("1", "8") come in; the last printed line lists both. The maps of the
# intruders show where their evidence comes from: the seams and the centre,
# where the tiles meet, and strokes that resemble them. The network has only
# seen single, centred digits, so the seams and corners of a mosaic are new
# to it, and the average over four digits leaves each a quarter of the
# evidence. The map shows where a class score comes from, right or wrong,
# which is what makes such failures easy to read.
show_top5(other_scene, other_label, other_tiles)

viz.save_figures()  # run as a script: the figures go to ./figures/
