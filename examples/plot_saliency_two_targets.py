"""
Saliency maps of one image for two different classes
====================================================

A saliency map (:class:`netlens.Saliency`) is the gradient of one class score
with respect to the input pixels, so the same image gives a different map
for every class one asks about: each map shows the pixels that would change
*that* score most. Here one image holds evidence for two classes, and the maps
for the two targets are compared with each other and with Grad-CAM
(:class:`netlens.GradCAM`). With ImageNet weights the image is a cat photo
asked about "Egyptian cat" and "bull mastiff"; in any case a controlled test
follows, where a digit network looks at two digits side by side, so one knows
where the evidence for each class is and can measure where the saliency goes.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch

from netlens import GradCAM, Saliency, viz
from netlens.datasets import DIGIT_CLASSES
from netlens.errors import WeightsUnavailableError
from netlens.models import load_torchvision_classifier, pretrained_or_digits, sample_photo

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI


def two_target_figure(images, targets_a, targets_b, names, model, *, mean=None, std=None):
    """Image, saliency for A and B, their difference, Grad-CAM for A and B, per image.

    Square images get one row each; wide ones (the digit strips) one column each.
    """
    saliency, gradcam = Saliency(model), GradCAM(model)
    maps = {
        "a": saliency(images, targets_a),
        "b": saliency(images, targets_b),
        "cam a": gradcam(images, targets_a),
        "cam b": gradcam(images, targets_b),
    }
    wide = images.shape[-1] / images.shape[-2]
    if wide > 1.5:
        fig, axes = plt.subplots(6, len(images), figsize=(2.3 * wide * len(images) + 1, 13))
        axes = np.atleast_2d(axes.T if len(images) > 1 else axes[:, None].T)
    else:
        fig, axes = plt.subplots(len(images), 6, figsize=(16, 3.2 * len(images) + 0.4))
        axes = np.atleast_2d(axes)
    fig.set_layout_engine("constrained")
    for i, image in enumerate(images):
        picture = viz.to_image(image, mean=mean, std=std)
        a, b = names[int(targets_a[i])], names[int(targets_b[i])]
        axes[i, 0].imshow(picture)
        axes[i, 0].set_title("image")
        for col, key, name in ((1, "a", a), (2, "b", b)):
            axes[i, col].imshow(viz.normalize(maps[key][i]).numpy(), cmap="inferno")
            axes[i, col].set_title(f"saliency for\n'{name}'")
        # Each map scaled to sum 1, so the difference shows where the two
        # targets put their share of the gradient, independent of its size.
        share_a = maps["a"][i] / maps["a"][i].sum()
        share_b = maps["b"][i] / maps["b"][i].sum()
        difference = (share_a - share_b).numpy()
        limit = np.abs(difference).max()
        shown = axes[i, 3].imshow(difference, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axes[i, 3].set_title(f"saliency '{a}'\nminus '{b}'")
        fig.colorbar(shown, ax=axes[i, 3], shrink=0.8, label="share")
        for col, key, name in ((4, "cam a", a), (5, "cam b", b)):
            viz.overlay(picture, maps[key][i], ax=axes[i, col], title=f"Grad-CAM for\n'{name}'")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


# %%
# ImageNet weights, when torchvision can download them: the saliency of a cat
# photo for its own class and for a dog class it does not contain.
try:
    resnet, categories = load_torchvision_classifier("resnet18")
except WeightsUnavailableError:
    print(
        "torchvision's ImageNet weights for ResNet-18 are not available offline; skipping the "
        "cat photo and going on with the digit test below"
    )
else:
    photo = sample_photo("chelsea", 224)[None]
    mean, std = torch.tensor(viz.IMAGENET_MEAN), torch.tensor(viz.IMAGENET_STD)
    x = (photo - mean[:, None, None]) / std[:, None, None]
    cat, dog = categories.index("Egyptian cat"), categories.index("bull mastiff")
    with torch.no_grad():
        probabilities = resnet(x).softmax(1)[0]
    print(f"p(Egyptian cat) = {probabilities[cat]:.3f}, p(bull mastiff) = {probabilities[dog]:.4f}")
    fig = two_target_figure(
        x, [cat], [dog], categories, resnet, mean=viz.IMAGENET_MEAN, std=viz.IMAGENET_STD
    )
    fig.suptitle("One photo, two target classes: saliency and Grad-CAM")

# %%
# The controlled test. A small ResNet (global average pooling before its
# classifier, so it accepts wider images) is trained on single handwritten
# digits, each 24x24 with a 4-pixel black margin. It is then shown two test
# digits of different classes side by side, a 32x64 strip: both classes score
# high, and one knows which half holds the evidence for each.
digits = pretrained_or_digits(None, size=32, margin=4, epochs=1 if QUICK else 3)
model, test = digits.model, digits.test

generator = torch.Generator().manual_seed(0)
left_index = torch.randperm(len(test), generator=generator)
right_index = torch.randperm(len(test), generator=generator)
keep = test.labels[left_index] != test.labels[right_index]
left_index, right_index = left_index[keep][:100], right_index[keep][:100]
strips = torch.cat([test.images[left_index], test.images[right_index]], dim=3)
left_class, right_class = test.labels[left_index], test.labels[right_index]
with torch.no_grad():
    top2 = model(strips).topk(2, dim=1).indices
both = [
    set(t.tolist()) == {int(a), int(b)}
    for t, a, b in zip(top2, left_class, right_class, strict=True)
]
print(
    f"{len(strips)} strips of shape {tuple(strips.shape[1:])}: the two highest scores are the "
    f"two digits shown in {np.mean(both):.0%} of them"
)

# %%
# Three strips, one per column. Rows 2 and 3: saliency for the left digit's
# class and for the right digit's class. Same input, different gradient: each
# map is strongest on the digit of its own class, because that is where a
# change of pixels changes that class score most. The maps are noisy, though,
# and some gradient falls everywhere, also on the black margins: the score
# would change if ink appeared there. Row 4 subtracts the two maps (each
# scaled to sum 1): red where the left class draws more of its saliency, blue
# where the right class does. Grad-CAM (last two rows) makes the same split
# more cleanly, at the coarse 8x16 resolution of ``layer4``.
fig = two_target_figure(strips[:3], left_class[:3], right_class[:3], DIGIT_CLASSES, model)
fig.suptitle("Two digits, two target classes: each map favours the digit of its class")

# %%
# Over all 100 strips, the share that lies on the half holding the target's
# digit (0.5 would mean no preference for either half): of the whole saliency
# mass, of the 5% most salient pixels, and of the Grad-CAM mass.
saliency, gradcam = Saliency(model), GradCAM(model)
shares = {}
for side, target in (("left", left_class), ("right", right_class)):
    on_side = slice(0, 32) if side == "left" else slice(32, 64)
    maps = saliency(strips, target).flatten(1)
    mass = maps.reshape(-1, 32, 64)[..., on_side].sum((1, 2)) / maps.sum(1)
    top = maps >= maps.quantile(0.95, dim=1, keepdim=True)
    peaks = top.reshape(-1, 32, 64)[..., on_side].sum((1, 2)) / top.sum(1)
    cams = gradcam(strips, target)
    cam_mass = cams[..., on_side].sum((1, 2)) / cams.sum((1, 2)).clamp_min(1e-12)
    for measure, values in (
        ("saliency mass", mass),
        ("top 5% salient pixels", peaks),
        ("Grad-CAM mass", cam_mass),
    ):
        shares[(measure, side)] = values.numpy()
for (measure, side), values in shares.items():
    print(
        f"{measure:>21}, target = {side:>5} digit: median share on its half "
        f"{np.median(values):.2f}, above 0.5 in {np.mean(values > 0.5):.0%} of strips"
    )

# %%
# The shares as box plots, one point per strip; the printed numbers above give
# the share of strips above 0.5 for each. The whole saliency mass only leans
# towards the target's half (the gradient is spread thinly over every pixel,
# the margins included); its strongest pixels sit more clearly on the
# target's digit; Grad-CAM, which weighs whole feature maps, separates the two
# digits most cleanly. Whichever side the target's digit is on, the map
# follows it: a saliency map is not a picture of what is in the image but of
# what matters to the one score one asks about.
order = sorted(
    shares,
    key=lambda key: ["saliency mass", "top 5% salient pixels", "Grad-CAM mass"].index(key[0]),
)
fig, ax = plt.subplots(figsize=(10, 4.8), layout="constrained")
ax.boxplot([shares[key] for key in order])
ax.set_xticks(range(1, len(order) + 1), [f"{m}\n{side} digit" for m, side in order])
for i, key in enumerate(order, start=1):
    jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(shares[key]))
    ax.plot(i + jitter, shares[key], ".", alpha=0.35, color="tab:blue")
ax.axhline(0.5, color="gray", linestyle="--", label="no preference (0.5)")
ax.set_ylim(0, 1)
ax.set_ylabel("share on the half holding the target digit")
ax.set_xlabel("measure, and which digit of the strip is the target")
ax.set_title(f"Where the attribution goes, over {len(strips)} two-digit strips")
ax.legend(loc="lower right")

viz.save_figures()  # run as a script: the figures go to ./figures/
