"""
Convolution by hand, output sizes and receptive fields
======================================================

A small binary "image" goes through three 2x2 filters with bias -1 and a ReLU,
once with explicit loops over the patches and once with PyTorch's
``conv2d``; both agree, with stride 1 and with stride 2. The output-size rule
``floor((n + 2p - k) / s) + 1`` is then checked against
:func:`netlens.conv_output_size` and real convolutions, and the receptive
field of stacked convolutions is measured with :func:`netlens.receptive_field`
and compared with its closed form, to see how depth, stride, dilation and
pooling make it grow.
"""

import itertools

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from netlens import conv_output_size, receptive_field
from netlens.viz import save_figures

torch.manual_seed(0)

x = np.array(
    [
        [1, 0, 0, 1, 1, 0],
        [0, 1, 0, 0, 0, 1],
        [0, 0, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 0],
        [1, 0, 0, 0, 0, 1],
    ],
    dtype=np.float32,
)
filters = {
    "w1 (diagonal)": np.array([[1, 0], [0, 1]], dtype=np.float32),
    "w2 (vertical)": np.array([[1, 0], [1, 0]], dtype=np.float32),
    "w3 (horizontal)": np.array([[1, 1], [0, 0]], dtype=np.float32),
}
bias = -1.0


def conv_relu_by_hand(image, kernel, b, stride):
    """Slide the kernel over the image; each output is ReLU(sum(patch * kernel) + b)."""
    k = kernel.shape[0]
    rows = (image.shape[0] - k) // stride + 1
    cols = (image.shape[1] - k) // stride + 1
    out = np.zeros((rows, cols), dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            patch = image[i * stride : i * stride + k, j * stride : j * stride + k]
            out[i, j] = max(float((patch * kernel).sum()) + b, 0.0)
    return out


weight = torch.from_numpy(np.stack(list(filters.values())))[:, None]  # (3, 1, 2, 2)
biases = torch.full((3,), bias)
by_hand, by_torch = {}, {}
for stride in (1, 2):
    by_hand[stride] = [conv_relu_by_hand(x, w, bias, stride) for w in filters.values()]
    out = F.relu(F.conv2d(torch.from_numpy(x)[None, None], weight, biases, stride=stride))
    by_torch[stride] = out[0].numpy()
    for name, hand, torch_map in zip(filters, by_hand[stride], by_torch[stride], strict=True):
        print(f"stride {stride}, {name}:   loops | F.conv2d")
        for hand_row, torch_row in zip(hand.astype(int), torch_map.astype(int), strict=True):
            print(f"    {hand_row} | {torch_row}")
    same = all(np.array_equal(h, t) for h, t in zip(by_hand[stride], by_torch[stride], strict=True))
    print(f"stride {stride}: loops and F.conv2d agree on all three maps: {same}\n")

# %%
# The input and the three filters (top), the ReLU outputs with stride 1
# (middle) and with stride 2 (bottom), every number written in its cell.
# Because the pixels are 0 or 1, the weights are 0 or 1 and the bias is -1, a
# filter's pre-activation is "number of its two 1-weights that land on a 1,
# minus one": 1 when both do, 0 or -1 otherwise, so after the ReLU each filter
# is an AND detector for its pattern. One can read the output off the image:
# a 1 wherever a diagonal (w1), vertical (w2) or horizontal (w3) pair of ones
# starts. PyTorch's "convolution" is a cross-correlation (the kernel is not
# flipped), and so are the loops. Stride 2 keeps every second row and column
# of the stride-1 map: the same detectors on a coarser grid.


def draw_numbers(ax, values, title, cmap="Greys", vmax=1.0):
    ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax)
    for (r, c), v in np.ndenumerate(values):
        colour = "white" if v > 0.5 * vmax else "black"
        ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=12, color=colour)
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(title)


fig = plt.figure(figsize=(13, 10), layout="constrained")
grid = fig.add_gridspec(3, 4, height_ratios=(0.8, 1, 1))
draw_numbers(fig.add_subplot(grid[0, 0]), x, "input x (5x6)")
for col, (name, w) in enumerate(filters.items(), start=1):
    draw_numbers(fig.add_subplot(grid[0, col]), w, f"{name}, bias {bias:g}")
    for row, stride in enumerate((1, 2), start=1):
        ax = fig.add_subplot(grid[row, col])
        label = f"ReLU(conv {name.split()[0]}), stride {stride}"
        draw_numbers(ax, by_torch[stride][col - 1], label)
for row, stride in enumerate((1, 2), start=1):
    ax = fig.add_subplot(grid[row, 0])
    ax.axis("off")
    rows, cols = by_torch[stride].shape[1:]
    ax.text(
        0.5,
        0.5,
        f"stride {stride}, padding 0\noutput {rows} x {cols}\n"
        f"= floor((5 - 2) / {stride}) + 1 by\nfloor((6 - 2) / {stride}) + 1",
        ha="center",
        va="center",
        fontsize=13,
    )
fig.suptitle("2x2 convolution + ReLU, computed with loops and with F.conv2d (identical)")

# %%
# Stride 2 halves each side of the map, so the next layer has four times
# fewer positions to process: a learned downsampling that compresses the
# representation. Pooling does the same job without weights. Max pooling the
# stride-1 maps with a 2x2 window keeps a detection anywhere in each window,
# where stride 2 only looks at every second position: the vertical pair found
# by w2 at row 3 falls between the stride-2 positions and is lost, but
# survives pooling. (The 2x2 pool drops the stride-1 maps' last column.)
pooled = F.max_pool2d(torch.from_numpy(by_torch[1])[None], 2)[0].numpy()
for name, p, s2 in zip(filters, pooled, by_torch[2], strict=True):
    print(f"{name}: stride 2 {s2.astype(int).tolist()}, 2x2 max pool {p.astype(int).tolist()}")

# %%
# The output-size rule. Along one dimension the kernel's first tap can sit at
# positions 0, s, 2s, ... of the padded input of length n + 2p, as long as the
# kernel still fits: (n + 2p - k) / s steps plus the starting position. Every
# combination below is checked against :func:`netlens.conv_output_size` and
# against the shape of a real ``F.conv2d`` output.
checked = mismatches = 0
for n, k, s, p in itertools.product(range(4, 20), (1, 2, 3, 5, 7), (1, 2, 3), (0, 1, 2, 3)):
    if n + 2 * p < k:
        continue
    formula = (n + 2 * p - k) // s + 1
    real = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p)
    checked += 1
    mismatches += not (formula == conv_output_size(n, k, s, p) == real.shape[-1])
print(f"output-size rule checked on {checked} (n, k, s, p) combinations; mismatches: {mismatches}")

# %%
# Receptive fields of two small stacks, measured on the gradient of the
# centre unit of the last layer with :func:`netlens.receptive_field`, against
# the closed form r = 1 + sum_l (k_l - 1) * prod_{i<l} s_i.


def closed_form(kernels, strides, dilations=None):
    dilations = dilations or [1] * len(kernels)
    r, jump = 1, 1
    for k, s, d in zip(kernels, strides, dilations, strict=True):
        r += (k - 1) * d * jump
        jump *= s
    return r


three_3x3 = nn.Sequential(*[nn.Conv2d(1, 1, 3, stride=1) for _ in range(3)])
two_4x4_s2 = nn.Sequential(*[nn.Conv2d(1, 1, 4, stride=2) for _ in range(2)])
for title, net, kernels, strides in (
    ("3 convs 3x3, stride 1", three_3x3, [3, 3, 3], [1, 1, 1]),
    ("2 convs 4x4, stride 2", two_4x4_s2, [4, 4], [2, 2]),
):
    field = receptive_field(net, str(len(net) - 1), 32)
    print(
        f"{title}: measured {field.size[0]}x{field.size[1]}, "
        f"closed form {closed_form(kernels, strides)}"
    )

# %%
# How the field grows with depth, all with 3x3 convolutions: with stride 1 it
# grows by 2 pixels per layer (linearly); with stride 2 (or a 2x2 max pool
# after each convolution) every layer's step is twice the previous one, so the
# field grows exponentially while the feature map shrinks. Dilation 1, 2, 4, ...
# gives the same exponential growth at full resolution; a larger kernel (5x5)
# only steepens the linear growth. So at a fixed depth the field is enlarged
# by striding, pooling, dilation or larger kernels. Markers are measured with
# :func:`netlens.receptive_field`, lines are the closed form.


def stack(depth, kind):
    layers = []
    for level in range(depth):
        if kind == "3x3, stride 1":
            layers.append(nn.Conv2d(1, 1, 3, padding=1))
        elif kind == "5x5, stride 1":
            layers.append(nn.Conv2d(1, 1, 5, padding=2))
        elif kind == "3x3, stride 2":
            layers.append(nn.Conv2d(1, 1, 3, stride=2, padding=1))
        elif kind == "3x3 + 2x2 max pool":
            layers += [nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2)]
        else:
            layers.append(nn.Conv2d(1, 1, 3, padding=2**level, dilation=2**level))
    return nn.Sequential(*layers)


def closed_form_of(depth, kind):
    if kind == "3x3 + 2x2 max pool":
        return closed_form([3, 2] * depth, [1, 2] * depth)
    if kind.startswith("3x3, dilation"):
        return closed_form([3] * depth, [1] * depth, [2**level for level in range(depth)])
    k, s = (5, 1) if kind.startswith("5x5") else (3, int(kind[-1]))
    return closed_form([k] * depth, [s] * depth)


kinds = ["3x3, stride 1", "5x5, stride 1", "3x3, stride 2", "3x3 + 2x2 max pool"]
kinds.append("3x3, dilation 1, 2, 4, ...")
depths = range(1, 7)
fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
for kind, marker in zip(kinds, "osD^v", strict=True):
    measured = []
    for depth in depths:
        net = stack(depth, kind)
        field = receptive_field(net, str(len(net) - 1), 320)
        assert not field.clipped
        measured.append(field.size[0])
    expected = [closed_form_of(depth, kind) for depth in depths]
    assert measured == expected, (kind, measured, expected)
    style = "--" if kind.startswith("3x3, dilation") else "-"
    for ax in axes:
        line = ax.plot(depths, expected, style, label=kind)[0]
        ax.plot(depths, measured, marker, color=line.get_color(), markersize=7)
    print(f"{kind:>27}: receptive field by depth {measured}")
axes[1].set_yscale("log", base=2)
axes[1].yaxis.set_major_formatter(plt.ScalarFormatter())
for ax, scale in zip(axes, ("linear", "log"), strict=True):
    ax.set_xlabel("number of layers (depth)")
    ax.set_ylabel(f"receptive field side (pixels, {scale} scale)")
    ax.grid(True, which="major", alpha=0.3)
axes[0].set_title("Receptive field vs depth")
axes[1].set_title("same, log scale (stride 2 and dilation coincide)")
axes[0].legend(title="each layer (lines: formula, markers: measured)")

save_figures()  # run as a script: the figures go to ./figures/
