"""
A small CNN from scratch: training curves, feature maps and Grad-CAM
====================================================================

A LeNet-style network (two 5x5 convolutions with max-pooling, three fully
connected layers) is defined in plain PyTorch and trained on 32x32 colour
images. We follow its loss and accuracy epoch by epoch, look at the feature
maps of its convolution and pooling layers with
:class:`netlens.FeatureExtractor`, and ask with :class:`netlens.GradCAM` which
image regions speak for its predictions, right and wrong.
"""

import os

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from netlens import FeatureExtractor, GradCAM, viz
from netlens.datasets import Split, load_cifar10

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI

# %%
# Data
# ----
# The network is made for CIFAR-10 (32x32 RGB photos of ten object classes).
# torchvision downloads it when the machine is online; otherwise the script
# uses scikit-learn's handwritten digits, upsampled to 32x32 and repeated over
# three channels, so the same network applies unchanged. Pixel values lie in
# [0, 1]. Each row below shows the first ten images of one class.

data = load_cifar10(n_train=5000, n_test=1000)  # a subset: the full set trains too slowly here
train, test, classes = data.train, data.test, data.classes
print(f"training images {tuple(train.images.shape)}, test images {tuple(test.images.shape)}")

fig, axes = plt.subplots(len(classes), 10, figsize=(9, 9.6), layout="constrained")
fig.suptitle("ten training images per class", fontsize=12)
for row, label in zip(axes, range(len(classes)), strict=True):
    picked = torch.nonzero(train.labels == label).flatten()[:10]
    for ax, i in zip(row, picked.tolist(), strict=False):
        ax.imshow(viz.to_image(train.images[i]))
    for ax in row:
        ax.set_xticks([])
        ax.set_yticks([])
    row[0].set_ylabel(classes[label], rotation=0, ha="right", va="center", fontsize=11)

# %%
# The network
# -----------
# ``conv(8, 5x5) -> ReLU -> maxpool 2 -> conv(16, 5x5) -> ReLU -> maxpool 2 ->
# fc 128 -> ReLU -> fc 64 -> ReLU -> fc 10``. Without padding, a 5x5
# convolution trims 4 pixels from each side length, so the maps shrink
# 32 -> 28 -> 14 -> 10 -> 5 and the first fully connected layer reads
# 16 x 5 x 5 = 400 numbers. Every layer is its own named module, so netlens
# can address each one by name. The classic LeNet-5 widths (6 and 16 filters,
# 120 and 84 units) give a network of almost the same size.


class SmallCNN(nn.Module):
    def __init__(
        self, filters: tuple[int, int] = (8, 16), hidden: tuple[int, int] = (128, 64)
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, filters[0], kernel_size=5)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(filters[0], filters[1], kernel_size=5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(filters[1] * 5 * 5, hidden[0])
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(hidden[1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(x.flatten(1)))
        return self.fc3(self.relu4(self.fc2(x)))


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


model = SmallCNN()
print(model)
print(f"trainable parameters, 8/16 filters and 128/64 units: {trainable(model):,}")
lenet5 = SmallCNN(filters=(6, 16), hidden=(120, 84))
print(f"trainable parameters, 6/16 filters and 120/84 units: {trainable(lenet5):,}")

# %%
# Training
# --------
# Cross-entropy loss, Adam with learning rate 0.001, mini-batches of 16
# shuffled images, ten epochs. The model is in train mode while it learns and
# in eval mode while it is measured; after every epoch the loss and accuracy
# on all training and all test images are recorded. The held-out test split
# serves as the validation set: it is only watched, never used to choose
# anything.


def evaluate(model: nn.Module, split: Split) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(split.images)
    loss = F.cross_entropy(logits, split.labels).item()
    return loss, (logits.argmax(1) == split.labels).float().mean().item()


loader = DataLoader(
    train.dataset(), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
curves = {"training": ([], []), "test": ([], [])}
epochs = 2 if QUICK else 10
for epoch in range(epochs):
    model.train()
    for images, labels in loader:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, split in (("training", train), ("test", test)):
        loss_value, acc = evaluate(model, split)
        curves[name][0].append(loss_value)
        curves[name][1].append(acc)
    print(
        f"epoch {epoch + 1:2d}: training loss {curves['training'][0][-1]:.3f} "
        f"accuracy {curves['training'][1][-1]:.3f} | test loss {curves['test'][0][-1]:.3f} "
        f"accuracy {curves['test'][1][-1]:.3f}"
    )

# %%
# Learning curves
# ---------------
# Both curves rise together for the first epochs (with a few bumps: Adam on
# batches of 16 takes noisy steps). From about the fifth epoch the training
# accuracy pulls ahead and nears 100 %, while the test accuracy levels off a
# few points lower; on the right, the test loss stays well above a training
# loss that keeps shrinking. That gap is the beginning of overfitting: the
# network fits details of its training images that do not carry over to new
# ones. With over sixty thousand parameters for about 1,300 training images
# (on the digits), and no augmentation or regularisation, nothing holds it
# back.

fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for name, (losses, accuracies) in curves.items():
    ax_acc.plot(range(1, epochs + 1), accuracies, marker="o", label=name)
    ax_loss.plot(range(1, epochs + 1), losses, marker="o", label=name)
for ax, what in ((ax_acc, "accuracy"), (ax_loss, "cross-entropy loss")):
    ax.set_xlabel("epoch")
    ax.set_ylabel(what)
    ax.set_xticks(range(1, epochs + 1))
    ax.set_title(f"{what} per epoch")
    ax.legend()

# %%
# Feature maps of every convolution and pooling layer
# ---------------------------------------------------
# One :class:`netlens.FeatureExtractor` with hooks on ``conv1``, ``pool1``,
# ``conv2`` and ``pool2`` records all four outputs in a single forward pass.
# :func:`netlens.viz.activation_grid` shows the first five channels for three
# test images, each panel scaled to [0, 1] on its own (bright = strong). The
# convolution outputs are taken before their ReLU, so dark areas are negative
# responses that the ReLU will remove; each pooling map keeps the largest
# rectified value of every 2x2 block, at half the resolution. The first
# layer's channels still look like the digit: some trace its strokes, some its
# left or right edges, some the background. A channel that is negative all
# over an image leaves an empty (black) pooling map after the ReLU: it says
# nothing about that image. The second layer's 10x10 and 5x5 maps respond to
# parts of strokes at certain places and no longer look like the input.

layers = ["conv1", "pool1", "conv2", "pool2"]
x = test.images[[0, 1, 2]]
features = FeatureExtractor(model, layers)(x)
for name, value in features.items():
    print(f"{name}: {tuple(value.shape)}")

fig = plt.figure(figsize=(15, 9), layout="constrained")
for half, pair in zip(fig.subfigures(2, 1), (layers[:2], layers[2:]), strict=True):
    inputs, *grids = half.subfigures(1, 3, width_ratios=[1.1, 5, 5])
    for ax, image, label, n in zip(
        inputs.subplots(3, 1), x, test.labels[:3], range(3), strict=True
    ):
        ax.imshow(viz.to_image(image))
        ax.set_title(f"image {n}: {classes[label]}", fontsize=10)
        ax.set_axis_off()
    for grid, name in zip(grids, pair, strict=True):
        viz.activation_grid(features[name], channels=5, images=3, fig=grid)
        grid.suptitle(f"{name}  {tuple(features[name].shape[1:])}", fontsize=12)

# %%
# Grad-CAM on right and wrong predictions
# ---------------------------------------
# :class:`netlens.GradCAM` weights the 16 maps of the last convolution,
# ``conv2``, by the gradient of the predicted class score, keeps the positive
# part and resizes the 10x10 result to the 32x32 input;
# :func:`netlens.viz.overlay` lays it over the image (bright: the region that
# speaks most for the prediction). Ten correctly classified test images come
# first, then the misclassified ones.
#
# For correct predictions the map mostly lies on the strokes that set the
# class apart, such as the loop of a 6 or the crossing of a 4. For the
# mistakes it often sits on a single stroke or on background rather than on
# the digit as a whole: beside the left arm of the 4s read as 9, in an empty
# corner of the 8s read as 1. The maps say where the network looked, not
# whether it was right to look there.

model.eval()
with torch.no_grad():
    predicted = model(test.images).argmax(1)
right = torch.nonzero(predicted == test.labels).flatten()
wrong = torch.nonzero(predicted != test.labels).flatten()
print(f"misclassified test images: {len(wrong)} of {len(test)}")
if len(wrong) < 10:
    print(f"only {len(wrong)} test images are misclassified; all of them are shown")

gradcam = GradCAM(model, "conv2")
for title, picked in (
    ("correctly classified", right[:10]),
    ("misclassified", wrong[:10]),
):
    if len(picked) == 0:
        continue
    maps = gradcam(test.images[picked], size="input")
    fig, axes = plt.subplots(
        2, len(picked), figsize=(1.45 * len(picked), 3.5), layout="constrained", squeeze=False
    )
    fig.suptitle(f"Grad-CAM of conv2: {title} test images", fontsize=12)
    for col, (i, heat) in enumerate(zip(picked.tolist(), maps, strict=True)):
        axes[0, col].imshow(viz.to_image(test.images[i]))
        axes[0, col].set_title(
            f"true {classes[test.labels[i]]}\npredicted {classes[predicted[i]]}", fontsize=9
        )
        axes[0, col].set_axis_off()
        viz.overlay(test.images[i], heat, ax=axes[1, col])

viz.save_figures()  # run as a script: the figures go to ./figures/
