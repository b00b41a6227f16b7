"""
Units for the sky and for buildings: dissecting a scene network
===============================================================

The Miniplaces assignment looks inside a ResNet trained on scene categories:
its filters, the units of its last block that fire on the sky and on the
buildings, what switching units off does, and class activation maps. Without
the Places365 weights this needs a scene network that can be trained offline,
and a way to tell a detector from a coincidence. Here a small ResNet learns
six classes of synthetic scenes (:func:`netlens.datasets.scenes`), whose
every pixel is labelled with its concept, and :func:`netlens.dissect.dissect`
scores every unit against every concept over hundreds of held-out scenes
(Network Dissection, Bau et al. 2017). The same dissection of the network
before training is the control: training makes building detectors, but no
better sky units than an untrained network already has.
"""

import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as photos

from netlens import CAM, FeatureExtractor, UnitAblator, fewest_units_to_flip, viz
from netlens.datasets import SCENE_CONCEPTS, scenes
from netlens.dissect import dissect, units_for_region
from netlens.models import accuracy
from netlens.models.scenes import scene_network, train_scene_classifier

torch.manual_seed(0)
# The network is small: one thread loses little, and threads that wait for busy
# cores lose a lot. The setting is restored at the end.
threads = torch.get_num_threads()
torch.set_num_threads(1)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI
start = time.perf_counter()

# %%
# Synthetic scenes with exact concept masks
# -----------------------------------------
# Each scene is painted back to front from simple shapes, so the generator
# knows which concept every pixel shows; a building in front of a mountain
# owns its pixels. Colours, time of day, textures and geometry vary, so a sky
# may be blue, grey, orange or black. Top row: one held-out scene per class;
# bottom row: its masks.
held_out = scenes(120 if QUICK else 300, seed=1)  # training uses other seeds
shares = held_out.fractions()
print("share of the pixels:", ", ".join(f"{c} {shares[c]:.3f}" for c in SCENE_CONCEPTS))

colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[: len(SCENE_CONCEPTS)]
examples = [int((held_out.labels == c).nonzero()[0]) for c in range(len(held_out.classes))]
fig, axes = plt.subplots(2, 6, figsize=(12, 4.6), layout="constrained")
segmentation = held_out.segmentation
for column, index in enumerate(examples):
    axes[0, column].imshow(viz.to_image(held_out.images[index]))
    axes[0, column].set_title(held_out.classes[int(held_out.labels[index])])
    axes[1, column].imshow(colours[segmentation[index].numpy()])
for ax in axes.flat:
    ax.set_axis_off()
handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i]) for i in range(len(SCENE_CONCEPTS))]
fig.legend(handles, SCENE_CONCEPTS, loc="lower center", ncol=11, fontsize=8)
fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))

# %%
# The scene network and its untrained twin
# ----------------------------------------
# :func:`netlens.models.scenes.train_scene_classifier` trains a
# :class:`~netlens.models.SmallResNet` (ResNet-18's layer names, 64 units in
# ``layer4``) on 3,000 scenes for three epochs. :func:`~netlens.models.scenes.
# scene_network` builds the same network with the same initial weights and
# no training: the control.
budget = {"images": 600, "epochs": 1} if QUICK else {}
trained = train_scene_classifier(progress=False, **budget)
model = trained.model
control = scene_network()
print(
    f"trained in {trained.seconds:.0f} s; accuracy on the held-out scenes "
    f"{accuracy(model, held_out.split()):.3f} (untrained: "
    f"{accuracy(control, held_out.split()):.3f}, chance 0.167)"
)

# %%
# 1. Filters of the first and of a later convolution
# --------------------------------------------------
# :func:`netlens.viz.filter_grid` scales the weights of a layer into the
# range of an image. The first convolution sees colour, so its 8 filters are
# drawn in colour; the 3x3 filters of ``layer3`` have 16 input channels and
# are drawn as their mean.
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
viz.filter_grid(model.conv1, ax=axes[0])
axes[0].set_title("conv1 (8 filters, RGB)")
viz.filter_grid(model.layer3.conv1, ax=axes[1])
axes[1].set_title("layer3.conv1 (32 filters, mean over inputs)")

# %%
# 2 (a, b). Dissection: which units detect the sky and the buildings?
# -------------------------------------------------------------------
# :func:`netlens.dissect.dissect` reads a layer with hooks (nothing is cut off
# the network). Each unit is thresholded at the top 0.5 % of its activations
# over the 300 held-out scenes, its maps are upsampled to 64x64 and compared
# with every mask; the IoU is summed over all scenes. The table lists the
# units of the last block, ``layer4``, with the highest IoU for any concept.
layer = "layer4"
found = dissect(model, layer, held_out.images, held_out.masks, progress=False)
found_control = dissect(control, layer, held_out.images, held_out.masks, progress=False)
print(found.table(8))

# %%
# At this quantile a unit covers about 0.5 % of the pixels, so its IoU with a
# concept covering a share ``m`` cannot exceed about ``0.005 / m`` (the
# ``ceiling`` column, from the unit's actual share): 0.013 for the sky, 0.09
# for the buildings (their windows included). For a concept as large as the
# sky, 0.005 only asks whether a unit's very strongest responses fall inside
# it. To measure how well a unit *covers* a concept, dissect again with the
# quantile at the concept's own share, both networks; for the sky also in the
# block before, ``layer3``:
results = {}
for concept in ("sky", "building"):
    for layer_name in ("layer3", "layer4") if concept == "sky" else ("layer4",):
        for name, net in (("trained", model), ("untrained", control)):
            result = dissect(
                net,
                layer_name,
                held_out.images,
                held_out.masks,
                quantile=shares[concept],
                progress=False,
            )
            unit, iou = result.top(concept, 1)[0]
            results[concept, layer_name, name] = result
            print(
                f"{concept:8s} quantile {shares[concept]:.3f}, {layer_name}, {name:9s}: "
                f"best unit {unit:2d}  IoU {iou:.3f}"
            )
    for name, result in (("trained", found), ("untrained", found_control)):
        unit, iou = result.top(concept, 1)[0]
        ceiling = float(result.ceiling[unit, result.concepts.index(concept)])
        print(
            f"{concept:8s} quantile 0.005, layer4, {name:9s}: best unit {unit:2d}  IoU "
            f"{iou:.4f} (ceiling {ceiling:.4f})"
        )

# %%
# Training made units that cover the buildings several times better than
# any unit of the untrained network, at both quantiles. The sky is different:
# it is at the top of nearly every scene, often its brightest and smoothest
# part, and units of the untrained network follow it about as well as the
# trained network's best, in ``layer4`` and in ``layer3`` (where the trained
# network's best sky units are).
#
# ``benchmarks/bench_dissect.py`` repeats this for three training seeds on
# 600 held-out scenes. Buildings, ``layer4``: IoU 0.39-0.53 trained against
# 0.07-0.10 untrained at the buildings' share, 0.059-0.069 against
# 0.006-0.018 at 0.005, far beyond the seed-to-seed spread. Sky at its share:
# 0.46-0.60 against 0.43-0.53 in ``layer3``, 0.34-0.52 against 0.46-0.52 in
# ``layer4``; at 0.005 the untrained network does better. A sky "detector"
# here is no evidence of training: a six-way scene classifier has little use
# for one, since every class has a sky.
sky_layer = "layer3"

# %%
# Beyond the sky and the buildings: one dissection of each network at a
# quantile of 0.05, about the share of a mountain, a building, a tree or the
# water in these scenes (the bars' ceilings differ by concept: 0.13 for the
# sky, 0.25 for grass). In the documented run training made units for the
# mountains, water, roads, buildings, trees and grass that the untrained
# network lacks; for the sky, the sand and the clouds it did not.
objects = dissect(model, layer, held_out.images, held_out.masks, quantile=0.05, progress=False)
objects_control = dissect(
    control, layer, held_out.images, held_out.masks, quantile=0.05, progress=False
)
shown = [c for c in SCENE_CONCEPTS if shares[c] > 0.01]
fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
positions = np.arange(len(shown))
for offset, name, result in ((-0.2, "trained", objects), (0.2, "untrained", objects_control)):
    ax.bar(positions + offset, [result.top(c, 1)[0][1] for c in shown], width=0.4, label=name)
ax.set_xticks(positions, shown)
ax.set_ylabel("best unit's IoU")
ax.set_title(f"{layer}: the best unit for each concept, quantile 0.05")
ax.legend()

# %%
# The scenes where the best building unit and the best sky unit fire most
# (:meth:`Dissection.plot <netlens.dissect.Dissection.plot>`): yellow is the
# unit's region, cyan the concept's mask.
for concept, layer_name in (("building", "layer4"), ("sky", sky_layer)):
    result = results[concept, layer_name, "trained"]
    fig = result.plot(held_out.images, held_out.masks, concept=concept, count=2, examples=5)
    fig.suptitle(
        f"trained {layer_name}: the two best {concept} units (quantile {shares[concept]:.3f})"
    )

# %%
# Their maps on a photo
# ---------------------
# scikit-image's ``camera`` photo has a bright sky over a row of domed
# buildings on the right. The network is fully convolutional, so it takes the
# photo at 128x128 as it is. The sky and the buildings are marked by hand
# (as in :ref:`sphx_glr_auto_examples_plot_unit_detectors.py`), and
# :func:`netlens.dissect.units_for_region` gives the IoU of each unit's
# strongest pixels with them on this one photo.
picture = torch.from_numpy(photos.camera()).float()[None, None] / 255
picture = F.interpolate(picture, size=(128, 128), mode="area")[0].expand(3, -1, -1)
rows_, cols_ = torch.arange(128)[:, None] * 4, torch.arange(128)[None, :] * 4
buildings = ((rows_ >= 165) & (rows_ < 240) & (cols_ >= 335)) | (
    (rows_ >= 115) & (rows_ < 240) & (cols_ >= 405) & (cols_ < 435)
)
sky = (rows_ < 190) & (picture[0] > 0.65) & ~buildings
maps = FeatureExtractor(model, [sky_layer, "layer4"])(picture[None])
fig, axes = plt.subplots(1, 3, figsize=(10, 3.7), layout="constrained")
axes[0].imshow(viz.to_image(picture))
axes[0].contour(sky.float().numpy(), levels=[0.5], colors="cyan")
axes[0].contour(buildings.float().numpy(), levels=[0.5], colors="yellow")
axes[0].set_title("sky (cyan), buildings (yellow)")
axes[0].set_axis_off()
for ax, concept, layer_name, mask in (
    (axes[1], "sky", sky_layer, sky),
    (axes[2], "building", "layer4", buildings),
):
    unit = results[concept, layer_name, "trained"].top(concept, 1)[0][0]
    on_photo = units_for_region(maps[layer_name], mask, top=maps[layer_name].shape[1])
    iou = float(on_photo.iou[(on_photo.units == unit).nonzero()[0]])
    viz.overlay(
        picture,
        maps[layer_name][0, unit],
        ax=ax,
        title=f"{layer_name} {concept} unit {unit}: IoU {iou:.2f}",
    )

# %%
# A network trained on 64-pixel synthetic scenes meets a 128-pixel grayscale
# photograph: colour is gone and the textures are new. In the documented run
# the sky unit still covers the sky, and the building unit fires on the
# camera and the tripod, sharp dark-on-light edges, rather than on the domes.
# One photo is one image; the dissection above is the evidence over a
# dataset.
#
# 2 (c, d). Switching units off
# -----------------------------
# :class:`netlens.UnitAblator` sets the five best building units (by IoU) to
# zero during the forward pass, and, for comparison, five units picked at
# random. Accuracy on held-out city scenes, whose buildings the network needs:
city = held_out.labels == held_out.classes.index("city")
cities = held_out[city.nonzero()[:, 0]]
building_units = [u for u, _ in results["building", "layer4", "trained"].top("building", 5)]
random_units = torch.randperm(model.fc.in_features, generator=torch.Generator().manual_seed(0))[
    :5
].tolist()
with torch.no_grad():
    before = (model(cities.images).argmax(1) == cities.labels).float().mean()
    after = [
        (UnitAblator(model, layer, units)(cities.images).argmax(1) == cities.labels).float().mean()
        for units in (building_units, random_units)
    ]
print(f"city scenes right: {before:.3f} intact")
print(f"  building units {building_units} off: {after[0]:.3f}")
print(f"  random units {random_units} off: {after[1]:.3f}")

# %%
# In the documented run, switching off the five building units drops the
# accuracy on city scenes from 0.98 to 0.82; five random units change
# nothing. The units dissection calls building detectors are ones the
# classifier relies on for its cities.
#
# How few units does it take to change one city scene's class?
# :func:`netlens.fewest_units_to_flip` switches off the units with the
# largest classifier weight for the predicted class, one more at a time.
search = fewest_units_to_flip(model, cities.images[:1], layer)
print(f"fewest units to change the first city scene's class: {search.count}")

# %%
# 3. Class activation maps of the top-5 classes
# ---------------------------------------------
# The network ends in global average pooling and one linear layer, so
# :class:`netlens.CAM` applies: the classifier's weights at every position of
# ``layer4``. One held-out coast scene and its five best classes:
coast = held_out[int((held_out.labels == held_out.classes.index("coast")).nonzero()[0])]
with torch.no_grad():
    probabilities = model(coast.images).softmax(1)[0]
top5 = probabilities.argsort(descending=True)[:5]
cams = CAM(model, layer)(coast.images, target=top5[None])[0]
fig, axes = plt.subplots(1, 5, figsize=(12, 2.9), layout="constrained")
for ax, cls, cam in zip(axes, top5, cams, strict=True):
    viz.overlay(
        coast.images[0],
        cam,
        ax=ax,
        title=f"{held_out.classes[int(cls)]} ({float(probabilities[cls]):.2f})",
    )
print(f"made in {time.perf_counter() - start:.0f} s")

torch.set_num_threads(threads)
viz.save_figures()  # run as a script: the figures go to ./figures/
