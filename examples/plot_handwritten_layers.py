"""
Hand-written linear and convolutional layers
============================================

A fully connected layer and a 2D convolution written from their equations,
with plain :class:`torch.nn.Parameter` tensors and no ``nn.Linear`` /
``nn.Conv2d`` inside, are checked against PyTorch's own layers. A small CNN
is trained with the standard layers, its weights are copied into a twin built
from the hand-written ones, and both are compared: predictions, speed, and,
with :class:`netlens.FeatureExtractor` (which works on any ``nn.Module``, also
one you wrote yourself), every intermediate feature map.
"""

import math
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from netlens import FeatureExtractor
from netlens.datasets import Split, load_cifar10
from netlens.models import accuracy, train_classifier
from netlens.viz import save_figures

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI


class MyLinear(nn.Module):
    """``y_s = W x_s + b`` for every sample ``s`` of the batch, i.e. ``y = x W^T + b``."""

    def __init__(self, in_features, out_features):
        super().__init__()
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, x):
        return x @ self.weight.T + self.bias


class MyConv2d(nn.Module):
    """``y[s, d, i, j] = sum_{c, n, m} x[s, c, i*stride + n, j*stride + m] W[d, c, n, m] + b[d]``.

    The sums over the kernel offsets ``n, m`` are explicit loops; for each
    offset the input window that every output position sees at that offset is
    one strided slice, and the sum over input channels ``c`` is a contraction
    with ``W[:, :, n, m]``. With ``padding = k // 2`` the kernel is centred on
    each output pixel; the network below uses no padding, as ``nn.Conv2d``'s
    default.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.stride, self.padding, self.kernel_size = stride, padding, kernel_size
        bound = 1 / math.sqrt(in_channels * kernel_size**2)
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))

    def forward(self, x):
        p, s, k = self.padding, self.stride, self.kernel_size
        if p:
            padded = x.new_zeros(x.shape[0], x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p)
            padded[:, :, p:-p, p:-p] = x
            x = padded
        rows = (x.shape[2] - k) // s + 1
        cols = (x.shape[3] - k) // s + 1
        y = self.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, rows, cols)
        for n in range(k):
            for m in range(k):
                window = x[:, :, n : n + s * (rows - 1) + 1 : s, m : m + s * (cols - 1) + 1 : s]
                y = y + torch.einsum("schw,dc->sdhw", window, self.weight[:, :, n, m])
        return y


# %%
# Data. CIFAR-10 when torchvision can download it, otherwise the handwritten
# digits that ship with scikit-learn, upsampled to 32x32 with three equal
# colour channels so the same network fits both.
data = load_cifar10(n_train=10000, n_test=None)  # 10,000 training images: seconds per epoch
train, test, classes = data.train, data.test, data.classes
epochs = 2 if data.cifar else 8
if QUICK:
    epochs = 1
print(f"training images {tuple(train.images.shape)}, test images {tuple(test.images.shape)}")

# %%
# Both layers against PyTorch's, first with their own random initialisation
# (different numbers, so a large difference), then after copying PyTorch's
# parameters in with ``load_state_dict`` (the difference drops to float
# rounding, about 1e-7 or exactly 0).
linear, my_linear = nn.Linear(8, 16), MyLinear(8, 16)
x = torch.randn(32, 8)
with torch.no_grad():
    before = (linear(x) - my_linear(x)).abs().mean()
    my_linear.load_state_dict(linear.state_dict())
    after = (linear(x) - my_linear(x)).abs().mean()
print(f"Linear(8, 16) mean |difference|: before copying {before:.3g}, after {after:.3g}")

images = train.images[:16]
for k, s, p in ((5, 1, 0), (3, 2, 1), (5, 1, 2)):
    conv, my_conv = nn.Conv2d(3, 8, k, s, p), MyConv2d(3, 8, k, s, p)
    with torch.no_grad():
        before = (conv(images) - my_conv(images)).abs().mean()
        my_conv.load_state_dict(conv.state_dict())
        after = (conv(images) - my_conv(images)).abs().mean()
    print(
        f"Conv2d(3, 8, kernel {k}, stride {s}, padding {p}) on 16 images, mean |difference|: "
        f"before copying {before:.3g}, after {after:.3g}"
    )

# %%
# The network: two 5x5 convolutions (8 and 16 filters) with ReLU and 2x2 max
# pooling, then fully connected layers of 128, 64 and 10 units. The layer
# classes are arguments, so one definition gives the standard network and its
# hand-written twin with identical parameter names.


class Net(nn.Module):
    def __init__(self, conv=nn.Conv2d, linear=nn.Linear):
        super().__init__()
        self.conv1, self.relu1, self.pool1 = conv(3, 8, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = conv(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1, self.relu3 = linear(16 * 5 * 5, 128), nn.ReLU()
        self.fc2, self.relu4 = linear(128, 64), nn.ReLU()
        self.fc3 = linear(64, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.flatten(self.pool2(self.relu2(self.conv2(x))))
        return self.fc3(self.relu4(self.fc2(self.relu3(self.fc1(x)))))


default_net = Net()
count = sum(p.numel() for p in default_net.parameters() if p.requires_grad)
print(f"trainable parameters: {count:,}")
history = train_classifier(default_net, train, test, epochs=epochs, progress=False)
print(f"test accuracy of the trained network: {history.test_accuracy[-1]:.3f}")

own_net = Net(conv=MyConv2d, linear=MyLinear)
own_net.load_state_dict(default_net.state_dict())
own_net.eval()
sample = Split(test.images[:20], test.labels[:20])
print(
    f"accuracy on 20 test images: nn layers {accuracy(default_net, sample):.2f}, "
    f"hand-written layers {accuracy(own_net, sample):.2f}"
)
with torch.no_grad():
    for title, net in (("nn layers predict", default_net), ("own layers predict", own_net)):
        predicted = net(sample.images).argmax(1)
        print(f"{title:>18}: {' '.join(classes[int(i)] for i in predicted[:10])} ...")
print(f"{'true labels':>18}: {' '.join(classes[int(i)] for i in sample.labels[:10])} ...")

# %%
# :class:`netlens.FeatureExtractor` captures the same layers by name in both
# networks (for the twin these are the hand-written modules), so every
# intermediate result can be compared, not only the logits.
layers = ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3"]
default_features = FeatureExtractor(default_net, layers)(sample.images)
own_features = FeatureExtractor(own_net, layers)(sample.images)
differences = {}
for name in layers:
    largest = max(float(default_features[name].abs().max()), 1e-30)
    differences[name] = float((default_features[name] - own_features[name]).abs().max()) / largest
    shape = tuple(own_features[name].shape)
    print(
        f"{name:>5} {str(shape):>17}: max |difference| / max |value| {differences[name]:.1e}"
        f" (max |value| {largest:.3g})"
    )

# %%
# Inference time on the 20 images, averaged over repeated runs that alternate
# between the two networks (so both see the same load on the machine), on
# one CPU thread (small batches gain little from more, and the measurement
# then does not depend on how busy the other cores are). The hand-written
# convolution runs 25 small contractions per layer in Python where
# ``nn.Conv2d`` calls one optimised kernel.
nets = {"nn.Conv2d / nn.Linear": default_net, "hand-written": own_net}
runs = {name: [] for name in nets}
threads = torch.get_num_threads()
torch.set_num_threads(1)
with torch.no_grad():
    for net in nets.values():
        net(sample.images)  # warm-up
    for _ in range(30):
        for name, net in nets.items():
            start = time.perf_counter()
            net(sample.images)
            runs[name].append(time.perf_counter() - start)
torch.set_num_threads(threads)
times = {name: float(np.mean(seconds)) for name, seconds in runs.items()}
ratio = times["hand-written"] / times["nn.Conv2d / nn.Linear"]
for name, seconds in times.items():
    print(f"{name}: {1000 * seconds:.2f} ms per batch of 20")
print(f"ratio own / default: {ratio:.1f}")

# %%
# Left: the time of one forward pass over the 20 test images for each
# network. Right: the largest difference between the two networks' outputs at
# every layer, captured by :class:`netlens.FeatureExtractor` and divided by the
# largest activation of that layer: all sit at the level of float32 rounding
# (float32 resolves about 1e-7), so the twin computes the same function, only
# more slowly.
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
bars = left.bar(list(times), [1000 * t for t in times.values()], color=["tab:blue", "tab:orange"])
left.bar_label(bars, fmt="%.2f ms", padding=2)
left.set_ylabel("time per forward pass of 20 images (ms, 1 thread)")
left.set_title(f"Inference time (own / default = {ratio:.1f}x)")
left.margins(y=0.15)
floor = 1e-10
shown = [max(v, floor) for v in differences.values()]
bars = right.bar(layers, shown, color="tab:green")
right.bar_label(bars, labels=[f"{v:.1e}" if v else "0" for v in differences.values()], padding=2)
right.set_yscale("log")
right.set_ylim(floor, 1e-4)
right.set_xlabel("layer (captured with FeatureExtractor)")
right.set_ylabel("max |default - own| / max |default|")
right.set_title("Feature maps of the two networks agree")

save_figures()  # run as a script: the figures go to ./figures/
