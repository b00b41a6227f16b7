"""
A tale of two networks: labels versus rotations
===============================================

Two copies of the same small residual network learn from the same images in
two ways. The first is told the class of every image (supervised learning).
The second never sees a class label: it only learns to tell by how much an
image was turned, 0, 90, 180 or 270 degrees (rotation prediction, a
self-supervised pretext task built with :func:`netlens.rotate_batch`). We then
look at both with the same tools -- learning curves, hardest and easiest
examples, filters, class activation maps (:class:`netlens.CAM`), t-SNE maps
and nearest neighbours of their penultimate features
(:class:`netlens.EmbeddingProbe`, :func:`netlens.compare`) -- and measure how
much of the class structure each feature space holds.
"""

import os

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from netlens import CAM, EmbeddingProbe, compare, rotate_batch, viz
from netlens.datasets import ROTATION_NAMES, Split, load_cifar10
from netlens.embedding import majority_vote
from netlens.models import SmallResNet, train_classifier

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI

# %%
# Data
# ----
# The comparison is meant for CIFAR-10. torchvision downloads it when the
# machine is online; otherwise the script falls back to scikit-learn's
# handwritten digits, which ship with scikit-learn, upsampled to 32x32 pixels.
# A fifth of the training images is held out as a validation set to pick the
# best epoch; the test split is used only for the pictures and the final
# numbers.

data = load_cifar10(n_train=2500, n_test=500, digit_channels=1)
full_train, test, classes = data.train, data.test, data.classes
keep, held = train_test_split(
    np.arange(len(full_train)), test_size=0.2, random_state=0, stratify=full_train.labels
)
train = Split(full_train.images[keep], full_train.labels[keep])
val = Split(full_train.images[held], full_train.labels[held])
channels = train.images.shape[1]
print(
    f"train {len(train)}, validation {len(val)}, test {len(test)} images of {channels} channel(s)"
)

# %%
# Two networks, two tasks
# -----------------------
# Both networks are :class:`netlens.data.SmallResNet`: a ResNet-18 cut down
# to one residual block per stage and 8 to 64 channels, ending in global
# average pooling and one linear layer. Only the last layer differs: ten class
# outputs for the supervised network, four rotation outputs for the other.
#
# The rotation task is pure data preparation: :func:`netlens.rotate_batch`
# turns every image by the four angles and labels each copy with its angle, so
# the rotation network sees four times as many images per epoch. It gets fewer
# epochs, three against five.

supervised = SmallResNet(num_classes=len(classes), in_channels=channels, width=8)
rotation = SmallResNet(num_classes=4, in_channels=channels, width=8)
print(f"trainable parameters per network: {sum(p.numel() for p in supervised.parameters()):,}")

rot_train, rot_val, rot_test = (Split(*rotate_batch(s.images)) for s in (train, val, test))
history_sup = train_classifier(supervised, train, val, epochs=1 if QUICK else 5, progress=False)
history_rot = train_classifier(
    rotation, rot_train, rot_val, epochs=1 if QUICK else 3, progress=False
)

# %%
# Learning curves
# ---------------
# The training loss is the mean cross-entropy over each epoch's mini-batches;
# the accuracies are measured after each epoch on the training images and on
# the held-out validation images. The star marks the epoch with the best
# validation accuracy (the least validation error). Note that the two tasks
# have different chance levels: 10 % for ten classes, 25 % for four angles.

fig, (ax_loss, ax_sup, ax_rot) = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
for name, history in (("supervised", history_sup), ("rotation", history_rot)):
    epochs = np.arange(1, len(history.loss) + 1)
    ax_loss.plot(epochs, history.loss, marker="o", label=name)
for ax, name, history in (
    (ax_sup, "supervised" if data.cifar else "supervised: digit class", history_sup),
    (ax_rot, "self-supervised: rotation angle", history_rot),
):
    epochs = np.arange(1, len(history.loss) + 1)
    ax.plot(epochs, history.train_accuracy, marker="o", label="training")
    ax.plot(epochs, history.test_accuracy, marker="o", label="validation")
    best = int(np.argmax(history.test_accuracy))
    ax.plot(epochs[best], history.test_accuracy[best], "k*", markersize=14, label="best epoch")
    ax.set_title(name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_xticks(epochs)
    ax.legend()
    print(
        f"{name}: best epoch {best + 1} with validation accuracy {history.test_accuracy[best]:.3f}"
    )
ax_loss.set_title("training loss")
ax_loss.set_xlabel("epoch")
ax_loss.set_ylabel("cross-entropy")
ax_loss.legend()


def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images)


logits_sup, logits_rot = predict(supervised, test.images), predict(rotation, rot_test.images)
test_acc_sup = (logits_sup.argmax(1) == test.labels).float().mean()
test_acc_rot = (logits_rot.argmax(1) == rot_test.labels).float().mean()
print(
    f"test accuracy: supervised {test_acc_sup:.3f} (classes), rotation {test_acc_rot:.3f} (angles)"
)

# %%
# Hardest and easiest examples
# ----------------------------
# At the end of training, every test image gets its own cross-entropy loss.
# For the rotation network each test image counts four times, once per angle.
# The top row of each figure shows the examples with the largest loss, the
# bottom row those with the smallest. Each tile's title gives the digit, the
# angle and the loss, so the figure itself says which cases were hard. For
# rotation prediction, look for digits whose turned shape is still a
# plausible upright digit (a 1 or an 8 turned by 180 degrees looks much the
# same; a 6 and a 9 swap) among the hardest; which ones land there changes
# from one training run to the next. The supervised network's hardest cases
# are oddly written digits.


def loss_extremes(
    images: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    captions: list[str],
    names: list[str],
    title: str,
    count: int = 8,
) -> None:
    losses = F.cross_entropy(logits, labels, reduction="none")
    order = losses.argsort(descending=True)
    fig, axes = plt.subplots(2, count, figsize=(1.5 * count, 4.6), layout="constrained")
    fig.suptitle(title, fontsize=12)
    for row, which, picked in zip(
        axes, ("largest loss", "smallest loss"), (order[:count], order.flip(0)[:count]), strict=True
    ):
        row[0].set_ylabel(which, fontsize=11)
        for ax, i in zip(row, picked.tolist(), strict=True):
            ax.imshow(viz.to_image(images[i]))
            ax.set_title(
                f"{captions[i]}\npredicted {names[logits[i].argmax()]}\nloss {losses[i]:.2g}",
                fontsize=8,
            )
            ax.set_xticks([])
            ax.set_yticks([])


digit_of = test.labels.repeat_interleave(4)
loss_extremes(
    rot_test.images,
    rot_test.labels,
    logits_rot,
    [
        f"{classes[c]} turned {ROTATION_NAMES[r]}"
        for c, r in zip(digit_of, rot_test.labels, strict=True)
    ],
    ROTATION_NAMES,
    "rotation network: test images at four angles",
)
loss_extremes(
    test.images,
    test.labels,
    logits_sup,
    [f"true {classes[c]}" for c in test.labels],
    classes,
    "supervised network: test images",
)

# %%
# Filters
# -------
# :func:`netlens.viz.filter_grid` draws every filter of a convolution as one
# tile: the 3x3 filters of the first convolution (on the raw pixels) and of
# the first convolution inside the first residual block (averaged over its 8
# input channels). Each tile is scaled on its own, so weak filters are visible
# too. Several first-layer filters of both networks are edge detectors, a
# dark side next to a bright side, vertical, horizontal or diagonal: the
# strokes' borders are what both tasks need first. Filters of the residual
# block, averaged over their inputs, are harder to read; the averaging hides
# what each input channel contributes.

fig, axes = plt.subplots(2, 2, figsize=(8, 5.5), layout="constrained")
for row, (name, model) in zip(
    axes, (("supervised", supervised), ("rotation", rotation)), strict=True
):
    for ax, layer in zip(row, ("conv1", "layer1.conv1"), strict=True):
        viz.filter_grid(model.get_submodule(layer), scale="filter", ncols=4, ax=ax)
        ax.set_title(f"{name}: {layer}\n" + ax.get_title(), fontsize=10)

# %%
# Class activation maps of the supervised network
# -----------------------------------------------
# A global-average-pooled feature map followed by one linear layer makes a
# class score a plain average: weighting the 8x8 feature maps of ``layer4`` by
# the class's classifier weights and summing over channels gives a map whose
# mean is the logit (up to the bias). :class:`netlens.CAM` computes that map
# and checks the identity. Red marks where the evidence for the named class
# lies, blue where a position counts against it (a map without negative values
# is drawn from black to bright yellow instead). Each row shows one test image
# of a class, the map of its own class and the map of the runner-up class. On
# the digits the evidence for the true class sits on the part that sets it
# apart: the foot of the 2, the crossing of the 4, the stem of the 7. The
# runner-up's evidence lies elsewhere, often on empty background, where a
# stroke of that other digit would be.
#
# The last row is the counter-intuitive case: a misclassified test image (on
# the digits, a 2 read as a 1). The map for the wrong class looks as confident
# as a correct one: it covers the long upright stroke and the empty space left
# of it, which is what a 1 looks like, while the evidence for the true class
# shrinks to a small patch at the foot.

cam_sup = CAM(supervised)
probs = logits_sup.softmax(1)
predicted = probs.argmax(1)
correct = predicted == test.labels
# one test image per class, a correctly classified one where there is one
rows = []
for c in (2, 4, 7):
    of_class = test.labels == c
    rows.append(
        int(torch.nonzero(of_class & correct if (of_class & correct).any() else of_class)[0])
    )
wrong = torch.nonzero(~correct).flatten()
if len(wrong):
    rows.append(int(wrong[0]))
else:
    print("no test image is misclassified; the last row shows the least confident one")
    rows.append(int(probs.max(1).values.argmin()))
x = test.images[rows]
runner_up = probs[rows].topk(2, dim=1).indices[:, 1]
maps_own = cam_sup(x, target=test.labels[rows])
maps_winner = cam_sup(x, target=predicted[rows])
maps_runner = cam_sup(x, target=runner_up)

fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), layout="constrained")
for r, i in enumerate(rows):
    true, pred = classes[test.labels[i]], classes[predicted[i]]
    axes[r, 0].imshow(viz.to_image(x[r]))
    axes[r, 0].set_axis_off()
    axes[r, 0].set_title(f"true {true}, predicted {pred}\np = {probs[i].max():.2f}")
    if true == pred:
        panels = ((maps_own, pred, "CAM for"), (maps_runner, classes[runner_up[r]], "runner-up"))
    else:
        panels = ((maps_winner, pred, "CAM for wrong"), (maps_own, true, "CAM for true"))
    for ax, (maps, name, what) in zip(axes[r, 1:], panels, strict=True):
        viz.overlay(x[r], maps[r], ax=ax, title=f"{what} class {name}")
print(f"misclassified test images (supervised): {len(wrong)} of {len(test)}")

# %%
# Class activation maps of the rotation network
# ---------------------------------------------
# The rotation network has the same head, so :class:`netlens.CAM` applies to
# its four angle classes. Two test digits are shown at each angle (top rows),
# with the map of the angle the network predicts (rows below). The map turns
# with the digit: for both digits much of the evidence sits near the upper left
# of the upright digit, where the top stroke begins, and on the empty space
# beside it, wherever the rotation has moved that corner. The network has learned where
# a digit starts, which is exactly what gives its orientation away.

cam_rot = CAM(rotation)
shown = [int(torch.nonzero(test.labels == c)[0]) for c in (2, 7)]
x_rot = torch.cat([rot_test.images[4 * i : 4 * i + 4] for i in shown])
y_rot = torch.cat([rot_test.labels[4 * i : 4 * i + 4] for i in shown])
pred_rot = predict(rotation, x_rot).argmax(1)
maps_rot = cam_rot(x_rot, target=pred_rot)
fig, axes = plt.subplots(4, 4, figsize=(8.5, 9.5), layout="constrained")
for k, (image, heat, true, pred) in enumerate(zip(x_rot, maps_rot, y_rot, pred_rot, strict=True)):
    top, col = 2 * (k // 4), k % 4
    axes[top, col].imshow(viz.to_image(image))
    axes[top, col].set_title(
        f"digit {classes[test.labels[shown[k // 4]]]} turned {ROTATION_NAMES[true]}"
    )
    axes[top, col].set_axis_off()
    viz.overlay(image, heat, ax=axes[top + 1, col], title=f"CAM for {ROTATION_NAMES[pred]}")

# %%
# Two feature spaces in two dimensions
# ------------------------------------
# :class:`netlens.EmbeddingProbe` runs the upright test images through each
# network and keeps the input of the last linear layer (64 numbers per
# image); t-SNE then maps each point cloud to two dimensions, keeping
# neighbours together. Colours are the classes, which the rotation network
# never saw. The supervised map falls apart into one tight island per class,
# as it was trained to. The rotation map is one mixed cloud, in which a few
# classes at most gather in loose groups. Features that tell the angle of a
# digit need not tell which digit it is.

probe_test_sup = EmbeddingProbe(supervised).fit(test.images, test.labels, progress=False)
probe_test_rot = EmbeddingProbe(rotation).fit(test.images, test.labels, progress=False)
viz.compare_tsne(
    probe_test_sup.tsne(),
    probe_test_rot.tsne(),
    test.labels,
    ("supervised network", "rotation network"),
    class_names=classes,
)
same = compare(probe_test_sup, probe_test_rot, k=10)
print(
    f"test images sharing neighbours: on average {same.overlap:.0%} of the 10 nearest "
    "neighbours are the same in both feature spaces"
)

# %%
# Nearest neighbours in the training set
# --------------------------------------
# For five test images of different classes, :meth:`netlens.EmbeddingProbe.knn`
# finds the ten training images with the most similar features (cosine
# distance); :func:`netlens.viz.neighbour_grid` frames a neighbour green when it
# has the query's class, red when not; the counts are printed below the
# figures. The supervised network retrieves the query's class almost every
# time; the rotation network's neighbours share strokes and shape with the
# query but often belong to other classes.

probe_sup = EmbeddingProbe(supervised).fit(train.images, train.labels, progress=False)
probe_rot = EmbeddingProbe(rotation).fit(train.images, train.labels, progress=False)
queries = [int(torch.nonzero(test.labels == c)[0]) for c in (0, 3, 4, 6, 9)]
for name, probe in (("supervised", probe_sup), ("rotation", probe_rot)):
    indices, _ = probe.knn(test.images[queries], k=10)
    fig = viz.neighbour_grid(
        test.images[queries],
        train.images,
        indices,
        query_labels=test.labels[queries],
        bank_labels=train.labels,
        class_names=classes,
    )
    fig.suptitle(f"{name} network: 10 nearest training images", fontsize=12)
    hits = (train.labels[indices] == test.labels[queries, None]).sum(1).tolist()
    print(f"{name}: neighbours of the query's class, per query (of 10): {hits}")

# %%
# How much class information each feature space holds
# ---------------------------------------------------
# Two read-outs that train nothing inside the networks: a 10-nearest-neighbour
# vote among the training images (each test image takes the majority class of
# its neighbours) and a linear probe (a logistic regression fitted on the
# training features). Two baselines put the numbers in context: the same
# network with random weights, and the raw pixels.
#
# The rotation features are far above chance, so predicting angles taught the
# network something about the digits, and a linear read-out recovers most of
# the class. The surprise is the ranking: on the digits they hold *less* class
# information than random weights or the raw pixels. The digits are an easy
# data set (a nearest-neighbour vote on pixels is already right 98 % of the
# time), and a network's last layer specialises in the task it was trained on:
# to tell the angle it needs the direction of the strokes, not the digit they
# form, and some digits are each other turned (6 and 9). This is why Gidaris et
# al. take features from middle layers, and why the method is meant for natural
# images, where pixels are a weak feature.

random_net = SmallResNet(num_classes=len(classes), in_channels=channels, width=8).eval()
spaces = {
    "supervised": probe_sup,
    "rotation": probe_rot,
    "random weights": EmbeddingProbe(random_net).fit(train.images, train.labels, progress=False),
}
results = {}
for name, probe in spaces.items():
    indices, _ = probe.knn(test.images, k=10)
    knn = (majority_vote(train.labels[indices]) == test.labels).float().mean().item()
    test_features = probe.transform(test.images)
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    linear.fit(probe.features.numpy(), train.labels.numpy())
    results[name] = (knn, linear.score(test_features.numpy(), test.labels.numpy()))

pixels_train, pixels_test = train.images.flatten(1).numpy(), test.images.flatten(1).numpy()
linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
linear.fit(pixels_train, train.labels.numpy())
norm_train = F.normalize(train.images.flatten(1), dim=1)
norm_test = F.normalize(test.images.flatten(1), dim=1)
pixel_neighbours = (norm_test @ norm_train.T).topk(10, dim=1).indices
results["raw pixels"] = (
    (majority_vote(train.labels[pixel_neighbours]) == test.labels).float().mean().item(),
    linear.score(pixels_test, test.labels.numpy()),
)

print(f"{'features':<16}{'10-NN test acc.':>17}{'linear probe test acc.':>24}")
for name, (knn, lin) in results.items():
    print(f"{name:<16}{knn:>17.3f}{lin:>24.3f}")
print(
    "leave-one-out 10-NN accuracy on the test images: "
    f"supervised {same.knn_accuracy_a:.3f}, rotation {same.knn_accuracy_b:.3f}"
)

fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
names = list(results)
positions = np.arange(len(names))
for offset, (column, label) in enumerate(((0, "10-NN vote"), (1, "linear probe"))):
    bars = ax.bar(
        positions + (offset - 0.5) * 0.38,
        [results[n][column] for n in names],
        width=0.38,
        label=label,
    )
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
ax.axhline(1 / len(classes), color="gray", linestyle=":", label="chance")
ax.set_xticks(positions, names)
ax.set_ylabel("test accuracy (classes)")
ax.set_ylim(0, 1.25)
ax.set_title("class information in each feature space")
ax.legend(loc="upper center", ncols=3, fontsize=8)

viz.save_figures()  # run as a script: the figures go to ./figures/
