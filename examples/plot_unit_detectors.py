"""
Which units detect the sky? Unit activation maps on a photo
===========================================================

The units (channels) of a CNN's last convolutional block each respond to some
pattern, and their activation maps show where in the image it is. This example
reads the last block's feature maps with :class:`netlens.FeatureExtractor`
(no need to cut the classifier off the network), draws several units over a
photo with :func:`netlens.viz.activation_grid` and :func:`netlens.viz.overlay`,
and asks which units fire on the sky and on the buildings of the photo with
:func:`netlens.units_for_region` and :func:`netlens.viz.region_units`. The
same search on an untrained network of the same shape is the control: a unit
only counts as a detector if training made it one.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as photos

from netlens import FeatureExtractor, rotate_batch, units_for_region, viz
from netlens.datasets import Split
from netlens.errors import WeightsUnavailableError
from netlens.models import SmallResNet, accuracy, load_torchvision_classifier, train_classifier

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI


def as_tensor(photo, size=None):
    """A uint8 photo (H, W) or (H, W, 3) as a (3, H, W) float tensor, optionally resized."""
    picture = torch.from_numpy(np.asarray(photo)).float() / 255
    picture = picture[..., None].expand(-1, -1, 3) if picture.dim() == 2 else picture
    picture = picture.permute(2, 0, 1)
    if size is not None:
        picture = F.interpolate(picture[None], size=size, mode="area")[0]
    return picture


# %%
# The photo and the two regions
# -----------------------------
# scikit-image's ``camera`` photo has a bright, cloudless sky above the
# horizon and a row of buildings (domes and a tower) on the right. The sky is
# picked by a rule (bright pixels above the horizon, at row 190 of 512), the
# buildings by two rectangles drawn around them.
resolution = 128
picture = as_tensor(photos.camera(), size=(resolution, resolution))
rows = torch.arange(resolution)[:, None] * 512 / resolution
cols = torch.arange(resolution)[None, :] * 512 / resolution
building = ((rows >= 165) & (rows < 240) & (cols >= 335)) | (
    (rows >= 115) & (rows < 240) & (cols >= 405) & (cols < 435)
)
sky = (rows < 190) & (picture[0] > 0.65) & ~building
print(
    f"sky covers {sky.float().mean():.1%} of the photo, the buildings {building.float().mean():.1%}"
)

fig, axes = plt.subplots(1, 3, figsize=(10, 3.8), layout="constrained")
for ax, (name, mask) in zip(
    axes, [("photo", None), ("sky", sky), ("buildings", building)], strict=True
):
    ax.imshow(viz.to_image(picture))
    if mask is not None:
        ax.contour(mask.float().numpy(), levels=[0.5], colors="yellow", linewidths=2)
    ax.set_title(name if mask is None else f"region: {name}")
    ax.set_axis_off()

# %%
# A trained network and an untrained twin
# ---------------------------------------
# The natural subject is a network trained on scenes, such as torchvision's
# ImageNet ResNet-18. Offline its weights cannot be had, so the example trains
# a small ResNet without labels on other bundled photos: it learns to tell
# which way is up, the rotation pretext task (:func:`netlens.rotate_batch`
# turns every crop by 0, 90, 180 and 270 degrees; sky at the top is one cue).
# The ``camera`` photo is kept out of training.
try:
    model, _ = load_torchvision_classifier("resnet18")
    control, _ = load_torchvision_classifier("resnet18", weights=None)
    mean = torch.tensor(viz.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(viz.IMAGENET_STD).view(3, 1, 1)
    picture = as_tensor(photos.camera(), size=(224, 224))
    sky = F.interpolate(sky[None, None].float(), size=(224, 224))[0, 0] > 0.5
    building = F.interpolate(building[None, None].float(), size=(224, 224))[0, 0] > 0.5
    x = ((picture - mean) / std)[None]
except WeightsUnavailableError:
    print(
        "torchvision's ImageNet weights are not available offline; training a small "
        "ResNet to predict rotations of crops of other scikit-image photos instead"
    )
    generator = torch.Generator().manual_seed(0)
    crops = []
    for photo in [
        photos.astronaut(),
        photos.coffee(),
        photos.chelsea(),
        photos.rocket(),
        photos.stereo_motorcycle()[0],
    ]:
        for short_side in (64, 96, 128):
            height, width = photo.shape[:2]
            scale = short_side / min(height, width)
            image = as_tensor(photo, size=(round(height * scale), round(width * scale)))
            for _ in range(40 if QUICK else 130):
                top = int(torch.randint(image.shape[1] - 31, (1,), generator=generator))
                left = int(torch.randint(image.shape[2] - 31, (1,), generator=generator))
                crop = image[:, top : top + 32, left : left + 32]
                if torch.rand(1, generator=generator) < 0.5:
                    crop = crop.flip(-1)  # a mirror image keeps "up" where it was
                if torch.rand(1, generator=generator) < 0.3:
                    crop = crop.mean(0, keepdim=True).expand(3, -1, -1)  # gray photos too
                crops.append(crop)
    crops = torch.stack(crops)
    print(f"{len(crops)} training crops of 32x32 pixels")
    model = SmallResNet(num_classes=4, in_channels=3)
    unused_labels = torch.zeros(len(crops), dtype=torch.long)
    train_classifier(
        model,
        Split(crops, unused_labels),
        epochs=1,
        transform=rotate_batch,
        progress=False,
    )

    # held-out check: crops of the camera photo itself, turned four ways
    held_out = as_tensor(photos.camera(), size=(96, 96)).unfold(1, 32, 16).unfold(2, 32, 16)
    held_out = held_out.permute(1, 2, 0, 3, 4).reshape(-1, 3, 32, 32)
    print(
        f"rotation accuracy on crops of the held-out photo: "
        f"{accuracy(model, Split(*rotate_batch(held_out))):.2f} (chance 0.25)"
    )
    torch.manual_seed(1)
    control = SmallResNet(num_classes=4, in_channels=3).eval()
    x = picture[None]
layer = "layer4"

# %%
# Activation maps of single units
# -------------------------------
# :class:`netlens.FeatureExtractor` captures the output of ``layer4``, the
# last block, during one forward pass. Each panel is one unit's map at the
# layer's resolution (top row), then upsampled over the photo with
# :func:`netlens.viz.overlay` (next figure). Shown are the units with the
# strongest single response on this photo.
#
# In the offline run the trained network's strongest units all trace one
# line: the upper outline of the man and the skyline, where the bright sky
# sits above something dark, a cue for which way is up. The untrained
# network's strongest units (bottom row of the second figure) follow
# brightness instead: the sky and the grass.
features = FeatureExtractor(model, layer)(x)[layer]
print(f"{layer} feature maps: {tuple(features.shape)}")
strongest = features[0].flatten(1).amax(1).argsort(descending=True)[:8].tolist()
fig = viz.activation_grid(features, channels=strongest, images=1)
fig.suptitle(f"{layer}: the 8 units with the strongest peak, at layer resolution")
control_features = FeatureExtractor(control, layer)(x)[layer]
control_strongest = control_features[0].flatten(1).amax(1).argsort(descending=True)[:4].tolist()
fig, axes = plt.subplots(2, 4, figsize=(10, 5.6), layout="constrained")
for row, name, maps, units in [
    (0, "trained", features, strongest[:4]),
    (1, "untrained", control_features, control_strongest),
]:
    for ax, unit in zip(axes[row], units, strict=True):
        viz.overlay(picture, maps[0, unit], ax=ax, title=f"{name}: unit {unit}")
fig.suptitle(f"strongest {layer} units over the photo (bright: strong, clear: weak)")

# %%
# Units that fire on the sky and on the buildings
# -----------------------------------------------
# :func:`netlens.units_for_region` upsamples every unit's map to the photo,
# keeps each unit's strongest pixels (as many as the region has) and scores
# their overlap with the region by intersection over union (IoU). Each panel
# of :func:`netlens.viz.region_units` keeps the photo bright where the unit
# fires; the yellow line is the region.
regions = {"sky": sky, "buildings": building}
found = {}
for name, network in [("trained", model), ("untrained", control)]:
    maps = FeatureExtractor(network, layer)(x)[layer]
    for region, mask in regions.items():
        found[name, region] = units_for_region(maps, mask, top=5)
        result = found[name, region]
        scores = ", ".join(
            f"{u} ({v:.2f})" for u, v in zip(result.units.tolist(), result.iou, strict=True)
        )
        print(f"{name:9s} network, {region:9s}: best units (IoU) {scores}")

for region, mask in regions.items():
    fig = viz.region_units(picture, found["trained", region], mask=mask, count=4)
    fig.suptitle(f"trained network: the {layer} units that best cover the {region}")

# %%
# The control
# -----------
# The same search on the untrained network. Where its best units match a
# region as well as the trained network's do, the region is found by
# something a random network computes too, and the match says nothing about
# what training taught the units.
#
# In the offline run that is what happens: the sky is the brightest part of
# the photo, and both networks have units that cover it well (IoU 0.6 to 0.8),
# the untrained one at least as well as the trained one; no unit of either
# network covers the buildings (IoU below 0.3). A small network trained for
# seconds on five photos has no sky or building detectors. Networks trained on
# millions of scene photos do have units that single out sky, buildings and
# many other concepts (Zhou et al., *Object Detectors Emerge in Deep Scene
# CNNs*, ICLR 2015).
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained", sharey=True)
for ax, region in zip(axes, regions, strict=True):
    for offset, name in [(-0.2, "trained"), (0.2, "untrained")]:
        ious = found[name, region].iou.numpy()
        ax.bar(np.arange(len(ious)) + offset, ious, width=0.4, label=f"{name} network")
    ax.set_xticks(range(5), [f"#{i + 1}" for i in range(5)])
    ax.set_xlabel("rank of the unit")
    ax.set_title(f"best {layer} units for the {region}")
axes[0].set_ylabel("IoU with the region")
axes[0].set_ylim(0, 1)
axes[1].legend()

viz.save_figures()  # run as a script: the figures go to ./figures/
