"""
Activation maps of a ResNet: extract, reduce, overlay
=====================================================

Intermediate activations of a trained ResNet are captured with
:class:`netlens.FeatureExtractor` without rewriting the network's
``forward``. They have tens or hundreds of channels, so to look at them they
are reduced to one map (mean or max over channels) or to three (the leading
principal components shown as RGB, :func:`netlens.channels.reduce_channels`), and
finally resampled to the image's size and laid over it
(:func:`netlens.viz.overlay`). Without internet access (no ImageNet weights)
the network is a small ResNet with the same layer names trained on
handwritten digits, and the notes below describe that case.
"""

import os

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from netlens import FeatureExtractor, viz
from netlens.layers import layer_names
from netlens.models import pretrained_or_digits

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI

# torchvision's ImageNet ResNet-18 and three photos; offline, a small ResNet
# trained on the digits (24 pixels with a 4-pixel black margin, which keeps the
# zero padding's border from showing up as an edge in every map) and three
# test digits.
subject = pretrained_or_digits(
    "resnet18",
    photos=("chelsea", "coffee", "astronaut"),
    digits=(0, 3, 8),
    size=32,
    margin=4,
    channels=3,
    epochs=1 if QUICK else 3,
)
model, categories, images = subject.model, subject.class_names, subject.pictures
model_input = subject.inputs

# %%
# The architecture, one line per top-level module with the shape of its
# output (read with one :class:`netlens.FeatureExtractor` pass) rather than
# the long nested print of every block. ``layer1`` ... ``layer4`` are the
# residual stages; each is made of blocks whose own sub-layers have dotted
# names such as ``layer3.0.conv1``.
top_level = [name for name, _ in model.named_children()]
shapes = FeatureExtractor(model, top_level)(model_input[:1])
print(f"{type(model).__name__}: {len(layer_names(model))} named layers, top level:")
for name, module in model.named_children():
    params = sum(p.numel() for p in module.parameters())
    shape = tuple(shapes[name].shape)
    print(f"  {name:<8} {type(module).__name__:<18} output {str(shape):<20} {params:>10,} params")

with torch.no_grad():
    predicted = model(model_input).argmax(1)
titles = [f"predicted '{categories[int(i)]}'" for i in predicted]
print("predictions:", ", ".join(categories[int(i)] for i in predicted))

# %%
# Activations of an early layer (``conv1``, the first convolution), of the
# first residual stage (``layer1``) and of a late stage (``layer3``), for the
# three images in one forward pass. The spatial size shrinks and the channel
# count grows with depth.
layers = ["conv1", "layer1", "layer3"]
features = FeatureExtractor(model, layers)(model_input)
for name in layers:
    print(f"{name}: {tuple(features[name].shape)}")

# %%
# Single channels, one row per image (:func:`netlens.viz.activation_grid`,
# each panel scaled to its own range). Top: the first eight channels of the
# first stage. Each is one detector applied everywhere, and they follow the
# strokes: some light up on the strokes themselves, some on one side of an
# edge only (the top or the bottom of a bar, a left or right flank), some on
# the background between strokes. Bottom: the eight most active channels of
# ``layer3``, where each unit sees a 4x4-pixel step of the image through a
# much larger receptive field. These maps no longer trace the outline: a
# channel fires on a few blobs, on one part of the figure (the base, a loop, a
# junction) or on the empty space around it, in the same place for digits
# that share that part.
strongest = features["layer3"].mean((0, 2, 3)).argsort(descending=True)[:8].tolist()
fig = plt.figure(figsize=(13, 9.2), layout="constrained")
early, late = fig.subfigures(2, 1)
viz.activation_grid(features["layer1"], channels=8, images=3, fig=early)
early.suptitle("layer1: first 8 channels")
viz.activation_grid(features["layer3"], channels=strongest, images=3, fig=late)
late.suptitle("layer3: the 8 channels with the largest mean activation")

# %%
# Many channels reduced to something one can show. Mean and max over the
# channels give one map each (brighter = stronger overall response); the
# principal components of the channel vectors give three maps shown as RGB,
# where pixels with the same colour have similar channel patterns. In the
# early layers the reductions are sharp copies of the strokes and their edges;
# in ``layer3`` (four times coarser) the response covers larger pieces of the
# shape, and the PCA colours separate parts of the figure (loops, bars, ends)
# rather than edges.
reduced = {
    (name, method): viz.reduce_channels(features[name], method)
    for name in layers
    for method in ("mean", "max", "pca")
}
fig, axes = plt.subplots(
    len(images), 1 + len(reduced), figsize=(1.45 * (1 + len(reduced)), 1.75 * len(images) + 0.6)
)
fig.set_layout_engine("constrained")
for row, image in enumerate(images):
    axes[row, 0].imshow(viz.to_image(image))
    axes[row, 0].set_title(titles[row], fontsize=9)
    for col, ((name, method), value) in enumerate(reduced.items(), start=1):
        ax = axes[row, col]
        if method == "pca":
            ax.imshow(value[row].numpy())
        else:
            ax.imshow(viz.normalize(value[row]).numpy(), cmap="viridis")
        if row == 0:
            ax.set_title(f"{name}\n{method}", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("Channels reduced by mean, max and PCA (top 3 components as RGB)")

# %%
# The maps resampled (bilinear) to the image's size and laid over it with
# :func:`netlens.viz.overlay`; the last column blends the PCA colours of
# ``layer3`` with the image. The strong responses sit on the figure, not on
# the empty background, which matches where a person would look: the strokes
# early on, the bulk of the shape later.
fig, axes = plt.subplots(len(images), 5, figsize=(11, 2.3 * len(images) + 0.5))
fig.set_layout_engine("constrained")
for row, image in enumerate(images):
    picture = viz.to_image(image)
    axes[row, 0].imshow(picture)
    axes[row, 0].set_title(titles[row])
    axes[row, 0].set_axis_off()
    for col, name in enumerate(layers, start=1):
        map_ = reduced[(name, "mean")][row]
        title = f"{name} mean ({map_.shape[0]}x{map_.shape[1]})" if row == 0 else None
        viz.overlay(picture, map_, ax=axes[row, col], alpha=0.5, title=title)
    pca = reduced[("layer3", "pca")][row].permute(2, 0, 1)[None]
    pca = F.interpolate(pca, size=picture.shape[:2], mode="bilinear", align_corners=False)
    axes[row, 4].imshow(0.5 * picture + 0.5 * pca[0].permute(1, 2, 0).numpy())
    axes[row, 4].set_axis_off()
    if row == 0:
        axes[row, 4].set_title("layer3 PCA blended")
fig.suptitle(
    "Activation maps resampled to the image and overlaid "
    "(bright = strong; a map with negative values: red > 0 > blue)"
)
if not subject.pretrained:
    # On the digits, ink is bright and background black: compare the ink under
    # the strongest responses of each layer with the ink of the whole image.
    for name in layers:
        ink = []
        for row, image in enumerate(images):
            heat = F.interpolate(
                reduced[(name, "mean")][row][None, None], size=image.shape[1:], mode="bilinear"
            )[0, 0]
            top = heat >= torch.quantile(heat.flatten(), 0.9)
            ink.append((float(image.mean(0)[top].mean()), float(image.mean())))
        print(
            f"{name}: mean ink under its strongest 10% of responses "
            + ", ".join(f"{a:.2f}" for a, _ in ink)
            + " vs whole images "
            + ", ".join(f"{b:.2f}" for _, b in ink)
        )

viz.save_figures()
