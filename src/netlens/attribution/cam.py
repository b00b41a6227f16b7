"""Class activation maps (Zhou et al. 2016)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netlens._plan import in_plan_layout, size_plan
from netlens.attribution.base import LayerAttribution, Targets
from netlens.errors import CAMNotApplicableError
from netlens.hooks import HookSession, OutputFn, Tap, run_forward
from netlens.layers import LayerLike, resolve_layer

__all__ = ["CAM"]


class CAM(LayerAttribution):
    r"""Class activation map.

    For a network whose logits are one linear map of the global average of a
    feature map :math:`A \in \mathbb{R}^{K \times h \times w}`,
    :math:`y^c = \sum_k w^c_k \frac{1}{hw}\sum_{ij} A^k_{ij} + b^c`, the class
    activation map is

    .. math::

        M^c_{ij} = \sum_k w^c_k A^k_{ij}, \qquad
        \frac{1}{hw}\sum_{ij} M^c_{ij} + b^c = y^c

    (Zhou et al., *Learning Deep Features for Discriminative Localization*,
    CVPR 2016). Every call checks that identity against the logits the model
    produced (it costs nothing extra) and raises
    :class:`CAMNotApplicableError` instead of returning a wrong map when a
    nonlinearity or another layer sits between the feature map and the
    classifier. When the feature map reaches the pooling through a functional
    ReLU (DenseNet), the map is taken after that ReLU.

    Works as is for ResNet, DenseNet, MobileNetV2, EfficientNet, RegNet,
    ShuffleNetV2 and GoogLeNet; VGG, AlexNet, SqueezeNet, ConvNeXt and
    MobileNetV3 have other heads: use :class:`GradCAM` for them.

    Parameters
    ----------
    model
        The classifier.
    layer
        The feature map; default: the last convolutional feature map.
    fc
        The ``nn.Linear`` classifier; default: the linear layer producing the
        logits.

    Examples
    --------
    >>> import torch, torchvision
    >>> resnet = torchvision.models.resnet18().eval()
    >>> maps = CAM(resnet)(torch.randn(1, 3, 64, 64), target=3, size=None)
    >>> maps.shape
    torch.Size([1, 2, 2])
    """

    needs_gradients = False

    def __init__(
        self,
        model: nn.Module,
        layer: LayerLike | None = None,
        fc: LayerLike | None = None,
        *,
        output: OutputFn | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(model, layer, output=output, channels_last=channels_last)
        self._fc = _linear(model, fc) if fc is not None else None

    @property
    def fc_name(self) -> str | None:
        """Name of the classifier layer (``None`` until found)."""
        return self._fc[0] if self._fc else None

    def _resolve_fc(self, x: Tensor) -> tuple[str, nn.Linear]:
        if self._fc is None:
            name = self.defaults(x).classifier
            if name is None:
                raise CAMNotApplicableError(
                    f"CAM needs a linear classifier, but {type(self.model).__name__}'s "
                    "output is not the output of an nn.Linear layer; pass fc=... or use GradCAM."
                )
            self._fc = _linear(self.model, name)
        return self._fc  # type: ignore[return-value]

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        # A pass that finds the default layers sizes the plan too.
        self._resolve(x)
        self._resolve_fc(x)
        with size_plan(self.model, x) as plan:
            return in_plan_layout(self.model, x, plan, lambda x: self._maps(x, targets))

    def _maps(self, x: Tensor, targets: Targets) -> Tensor:
        name, module = self._resolve(x)
        fc_name, fc = self._resolve_fc(x)
        # The rest of the network sees the layer's output in the default layout.
        taps = [
            Tap(name, module, "copy", replace=Tensor.contiguous),
            Tap(fc_name, fc, "copy", where="input"),
        ]
        with torch.no_grad():
            logits, found = run_forward(
                self.model, x, HookSession(self.model, taps), output=self.output
            )
            assert logits is not None
            activation = self.as_nchw(name, found[name])
            if activation.shape[1] != fc.in_features:
                raise CAMNotApplicableError(
                    f"layer '{name}' has {activation.shape[1]} channels but the classifier "
                    f"'{fc_name}' takes {fc.in_features} inputs, so the logits are not a "
                    "linear map of this layer's average; use GradCAM for this model."
                )
            # The premise is checked at the precision the model computed in
            # (bfloat16 under autocast, say); the map itself in float32 at least.
            precision = torch.finfo(_lowest(activation.dtype, logits.dtype)).eps
            compute = torch.promote_types(activation.dtype, torch.float32)
            activation = activation.to(compute)
            mean = _host(activation.mean(dim=(2, 3)))  # (N, C)
            finite = _finite_samples(mean, _host(logits))
            activation, mean = _as_pooled(
                activation, mean, _host(found[fc_name]), finite, precision, name, fc_name
            )
            classes = targets.resolve(logits)
            weights = fc.weight.detach().to(compute)[classes]  # (N, K, C)
            maps = (weights @ activation.flatten(2)).unflatten(2, activation.shape[2:])
            _check_identity(mean, weights, fc, classes, logits, finite, precision, name)
        return maps


def _linear(model: nn.Module, fc: LayerLike) -> tuple[str, nn.Linear]:
    name, module = resolve_layer(model, fc)
    if not isinstance(module, nn.Linear):
        raise CAMNotApplicableError(
            f"fc must be an nn.Linear, but '{name}' is a {type(module).__name__}"
        )
    return name, module


def _lowest(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype with the fewest significant bits."""
    return max(dtypes, key=lambda d: torch.finfo(d).eps)


def _host(values: Tensor) -> np.ndarray:
    """A small tensor as float64 on the host, for the checks.

    They work on a few (N, C) and (N, K) arrays, where numpy's cost per operation
    is a fraction of torch's (measured: 0.3 ms of torch operations per call before).
    """
    return values.detach().to("cpu", torch.float64).numpy()


def _finite_samples(mean: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Samples whose feature map and logits are finite: the others' maps stay NaN / inf.

    A NaN or infinite value of a feature map makes its spatial ``mean`` (N, C) NaN or
    infinite too, so the mean is checked, not every value of the map.
    """
    finite = np.isfinite(mean).all(1) & np.isfinite(logits).all(1)
    if not finite.any():
        raise ValueError(
            "every sample's feature map or logits are NaN or infinite, so whether the "
            "logits are a linear map of the layer cannot be checked; look at the input "
            "(a NaN pixel spreads through every convolution)."
        )
    return finite


def _as_pooled(
    activation: Tensor,
    mean: np.ndarray,
    pooled: np.ndarray,
    finite: np.ndarray,
    eps: float,
    name: str,
    fc_name: str,
) -> tuple[Tensor, np.ndarray]:
    """The feature map whose global average is the classifier's input, and that average.

    ``mean`` is the spatial mean of ``activation``, ``pooled`` the classifier's input.
    """
    pooled = pooled.reshape(len(pooled), -1)[finite]
    # Both sides come from the same feature map and differ by the rounding of
    # one average at the model's precision: measured at most eps / 2 of each
    # value in bfloat16 and float16 (ResNet, DenseNet, MobileNet, EfficientNet,
    # RegNet), so one eps is allowed; float32 summation order, 1e-5.
    rel = eps if eps > 1e-4 else 1e-5
    magnitude = np.abs(pooled)
    tolerance = rel * magnitude + 0.01 * rel * magnitude.max(1, keepdims=True)
    if (np.abs(mean[finite] - pooled) <= tolerance).all():
        return activation, mean
    after_relu = F.relu(activation)  # the map reaches the pooling through a functional ReLU
    mean = _host(after_relu.mean(dim=(2, 3)))
    if (np.abs(mean[finite] - pooled) <= tolerance).all():
        return after_relu, mean
    raise CAMNotApplicableError(
        f"the input of '{fc_name}' is not the global average of layer '{name}' (another "
        "layer or nonlinearity sits between them), so CAM is not defined here; use GradCAM."
    )


def _check_identity(
    pooled: np.ndarray,
    weights: Tensor,
    fc: nn.Linear,
    classes: Tensor,
    logits: Tensor,
    finite: np.ndarray,
    eps: float,
    name: str,
) -> None:
    """The spatial mean of each map plus the bias must be the logit it explains.

    ``pooled`` is the spatial mean (N, C) of the feature map the maps are made of.
    """
    terms = _host(weights)[finite] * pooled[finite, None]  # (N, K, C)
    bias = _host(fc.bias[classes])[finite] if fc.bias is not None else np.zeros(terms.shape[:2])
    predicted = terms.sum(2) + bias
    observed = _host(logits.gather(1, classes))[finite]
    # A dot product at precision eps is off by a few eps of the sum of its
    # terms' magnitudes (measured: at most 0.5 eps in bfloat16 / float16, 2 eps
    # in float32, over seven torchvision families); the logit is rounded once more.
    rel = 4 * eps if eps > 1e-4 else 16 * eps
    tolerance = rel * (np.abs(terms).sum(2) + np.abs(bias)) + eps * np.abs(observed)
    if not (np.abs(predicted - observed) <= tolerance).all():
        raise CAMNotApplicableError(
            f"the spatial mean of the CAM of layer '{name}' plus the bias does not "
            "reproduce the model's logits (something follows the classifier); use GradCAM."
        )
