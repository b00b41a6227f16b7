"""
Quick start: look inside a network trained on offline digits
============================================================

Train a small ResNet on scikit-learn's handwritten digits (no download), then
capture its feature maps with :class:`netlens.FeatureExtractor` and find the
fewest units of its last block whose removal changes a prediction.
"""

import os

import torch

from netlens import FeatureExtractor, UnitAblator, fewest_units_to_flip, rank_units
from netlens.datasets import load_digits
from netlens.models import SmallResNet, accuracy, train_classifier

torch.manual_seed(0)
QUICK = os.environ.get("NETLENS_QUICK", "0") != "0"  # a shorter training run, for CI
train, test = load_digits(size=32)
model = SmallResNet(num_classes=10, in_channels=1)
history = train_classifier(model, train, test, epochs=1 if QUICK else 5, progress=False)
print(f"test accuracy after {len(history.loss)} epochs: {accuracy(model, test):.3f}")

# %%
# Feature maps of two layers for four test digits, in one forward pass.
x = test.images[:4]
features = FeatureExtractor(model, ["layer1", "layer4"])(x)
for name, value in features.items():
    print(f"{name}: {tuple(value.shape)}")

# %%
# Switch off the five units with the largest classifier weight for the
# predicted class of the first digit, and find the fewest that flip it.
image = x[:1]
top = int(model(image).argmax())
units = rank_units(model, top)[:5]
before = model(image).softmax(1)[0, top]
after = UnitAblator(model, "layer4", units)(image).softmax(1)[0, top]
print(f"p(class {top}) with all units: {before:.3f}; top-5 units off: {after:.3f}")
search = fewest_units_to_flip(model, image, "layer4")
print(
    f"fewest layer4 units to change the prediction: {search.count} "
    f"({search.original_class} -> {search.new_class})"
)
