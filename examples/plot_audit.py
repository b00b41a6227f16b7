"""
Which map can be trusted? Faithfulness and a sanity check on a digit classifier
===============================================================================

Attribution maps can look convincing and still say little about the model.
This example trains a small digit classifier, maps 64 held-out digits with
Grad-CAM, Saliency and Guided Backprop, and scores the maps with
:func:`netlens.metrics.deletion` and :func:`netlens.metrics.insertion`
(Petsiuk et al. 2018) next to :class:`netlens.metrics.RandomMap`, the chance
level. Then :func:`netlens.metrics.model_randomization` (Adebayo et al. 2018)
replaces the network's weights block by block, from the top, and measures how
much each method's maps change. ``netlens audit`` does all of this for every
method and metric; see :doc:`/guide/metrics`.
"""

import matplotlib.pyplot as plt
import numpy as np
import torch

from netlens.attribution import METHODS
from netlens.datasets import load_digits
from netlens.metrics import RandomMap, deletion, insertion, model_randomization
from netlens.models import SmallResNet, train_classifier

torch.manual_seed(0)
torch.set_num_threads(1)  # a small network: one thread wastes least

train, test = load_digits(32)
model = SmallResNet(10, 1, width=8)
train_classifier(model, train, test, epochs=2, progress=False)
x = test.images[:64]

# %%
# Deletion and insertion
# ----------------------
# The digits lie on a black background, so the substrate is the blurred digit
# (a zero would leave background pixels as they were).

methods = {
    "Grad-CAM": METHODS["gradcam"],
    "Saliency": METHODS["saliency"],
    "Guided Backprop": METHODS["guidedbackprop"],
    "Random": RandomMap,
}
scores = {}
for title, cls in methods.items():
    maps = cls(model)(x)
    scores[title] = {
        metric.__name__: metric(model, x, maps, steps=16, substrate="blur")
        for metric in (deletion, insertion)
    }

fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for ax, metric in zip(axes, ("deletion", "insertion"), strict=True):
    for title, found in scores.items():
        result = found[metric]
        low, high = result.interval
        style = {"color": "black", "linestyle": "--"} if title == "Random" else {}
        ax.plot(
            result.x,
            result.curves.mean(0),
            label=f"{title}: {result.mean:.2f} [{low:.2f}, {high:.2f}]",
            **style,
        )
    better = "lower" if metric == "deletion" else "higher"
    ax.set(title=f"{metric} ({better} area is better)", xlabel="fraction of pixels", ylim=(0, 1))
    ax.set_ylabel("class probability")
    ax.legend(fontsize=8)
plt.show()

# %%
# Model randomisation
# -------------------
# After each block is randomised, the Spearman rank correlation between each
# method's maps and its maps of the trained model. A map that explains the
# model drops; the random map, which ignores the model, stays at 1.

fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
for title, cls in methods.items():
    result = model_randomization(model, x[:16], cls)
    means = np.concatenate([[1.0], result.mean])
    style = {"color": "black", "linestyle": "--"} if title == "Random" else {}
    ax.plot(range(len(means)), means, marker="o", label=title, **style)
ax.set_xticks(range(len(means)), ["trained", *result.blocks], rotation=30)
ax.set(ylabel="rank correlation with the trained maps", xlabel="randomised down to")
ax.axhline(0, color="gray", linewidth=0.8)
ax.legend()
plt.show()
