"""The hook core: the only place in netlens that registers hooks.

Everything that looks inside a model goes through :class:`HookSession`, a
context manager that attaches forward hooks to chosen modules and removes
every one of them on exit, also when the forward pass raises.

A session is a set of :class:`Tap` s, one per module. A tap can

* record the module's output (``"copy"``: a detached clone; ``"graph"``: a
  clone still attached to the autograd graph) or its input (``where="input"``),
* make the output a fresh leaf of the autograd graph (``"leaf"``): the forward
  pass up to this module runs without recording history, everything after it
  records history, so a gradient with respect to this output costs only the
  part of the network above it,
* replace the output (``replace=``), which is how units are ablated,
* stop the forward pass once every tap marked ``stop`` has run.

Outputs are always cloned before anything downstream runs, so a later
in-place operation (torchvision's ``ReLU(inplace=True)``, ``out += identity``)
cannot change what was recorded.

A module called more than once inside one forward pass of the root model (the
shared ``relu`` of a torchvision ResNet block runs two or three times) has no
single output; a tap on it raises :class:`RepeatedCallError` rather than
silently keeping one of the calls.

:func:`input_gradients_only` serves methods that differentiate with respect to
inputs or activations, never parameters: eval-mode BatchNorm layers then stop
saving their inputs for the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

Mode = Literal["copy", "graph", "leaf"]


class RepeatedCallError(RuntimeError):
    """A tapped module ran more than once in one forward pass."""


class LayerNotReachedError(RuntimeError):
    """A tapped module did not run during the forward pass."""


class StopForward(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside the forward pass once every wanted layer has run."""


@dataclass
class Tap:
    """What to do at one module during a forward pass.

    Parameters
    ----------
    name
        The name results are stored under (usually the dotted module name).
    module
        The module to hook.
    mode
        ``"copy"``, ``"graph"``, ``"leaf"`` or ``None`` (record nothing).
    where
        ``"output"`` or ``"input"`` (the first positional input).
    replace
        Optional function mapping the output to the tensor the rest of the
        network sees.
    stop
        Whether the forward pass may stop once this tap (and every other tap
        marked ``stop``) has run.
    """

    name: str
    module: nn.Module
    mode: Mode | None = "copy"
    where: Literal["output", "input"] = "output"
    replace: Callable[[Tensor], Tensor] | None = None
    stop: bool = False
    calls: int = field(default=0, init=False)


class HookSession:
    """Attach taps to a model for the duration of a ``with`` block.

    Parameters
    ----------
    root
        The model whose forward pass delimits "one pass": a tap that runs twice
        while ``root`` is running raises :class:`RepeatedCallError`.
    taps
        What to hook.
    stop_early
        Raise :class:`StopForward` once every tap marked ``stop`` has run. The
        caller catches it (see :func:`run_forward`).

    Attributes
    ----------
    results
        ``{tap.name: Tensor}`` from the latest forward pass.
    """

    def __init__(self, root: nn.Module, taps: Sequence[Tap], *, stop_early: bool = False):
        self.root = root
        self.taps = list(taps)
        self.stop_early = stop_early and any(t.stop for t in self.taps)
        self.results: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._depth = 0
        self._grad_mode = torch.is_grad_enabled()
        self.passes = 0

    def __enter__(self) -> HookSession:
        self._grad_mode = torch.is_grad_enabled()
        try:
            self._handles.append(self.root.register_forward_pre_hook(self._root_enter))
            self._handles.append(self.root.register_forward_hook(self._root_exit))
            for tap in self.taps:
                if tap.where == "input":
                    hook = tap.module.register_forward_pre_hook(self._input_hook(tap))
                else:
                    hook = tap.module.register_forward_hook(self._output_hook(tap))
                self._handles.append(hook)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
        # A "leaf" tap switches gradients on mid-pass; the caller's mode comes back here.
        torch.set_grad_enabled(self._grad_mode)

    def remove(self) -> None:
        """Remove every hook this session attached."""
        while self._handles:
            self._handles.pop().remove()
        self._depth = 0

    def reached(self) -> set[str]:
        """Names of the taps that ran in the latest forward pass."""
        return {t.name for t in self.taps if t.calls > 0}

    def check_reached(self) -> None:
        """Raise :class:`LayerNotReachedError` if a tap did not run."""
        missing = [t.name for t in self.taps if t.calls == 0]
        if missing:
            raise LayerNotReachedError(
                f"layer(s) {missing} did not run during the forward pass; a module that "
                "is defined but not called by forward() (an auxiliary head in eval mode, "
                "an unused branch) has no output. Pick a layer the forward pass uses."
            )

    # hooks -----------------------------------------------------------------

    def _root_enter(self, module: nn.Module, args: object) -> None:
        if self._depth == 0:
            self.passes += 1
            self.results.clear()
            for tap in self.taps:
                tap.calls = 0
        self._depth += 1

    def _root_exit(self, module: nn.Module, args: object, output: object) -> None:
        self._depth = max(self._depth - 1, 0)

    def _count(self, tap: Tap) -> None:
        tap.calls += 1
        if tap.calls > 1 and self._depth > 0:
            raise RepeatedCallError(
                f"module '{tap.name}' ran {tap.calls} times in one forward pass (it is "
                "reused inside forward(), like the shared ReLU of a ResNet block), so it "
                "has no single output. Pick a module that runs once, e.g. its parent "
                "block or the layer just before it."
            )

    def _maybe_stop(self) -> None:
        if self.stop_early and all(t.calls > 0 for t in self.taps if t.stop):
            raise StopForward

    def _input_hook(self, tap: Tap) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            self._count(tap)
            value = args[0] if args else None
            if tap.mode is not None:
                self.results[tap.name] = _record(tap, value)
            self._maybe_stop()

        return hook

    def _output_hook(self, tap: Tap) -> Callable[..., Tensor | None]:
        def hook(module: nn.Module, args: object, output: object) -> Tensor | None:
            self._count(tap)
            out = _as_tensor(tap, output)
            new = None
            if tap.replace is not None:
                new = tap.replace(out)
                out = new
            if tap.mode == "leaf":
                leaf = out.detach().requires_grad_(True)
                self.results[tap.name] = leaf
                torch.set_grad_enabled(True)
                # A clone, so an in-place op downstream acts on a non-leaf tensor.
                new = leaf.clone()
            elif tap.mode is not None:
                self.results[tap.name] = _record(tap, out)
            self._maybe_stop()
            return new

        return hook


def _as_tensor(tap: Tap, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"layer '{tap.name}' produces a {type(value).__name__}, not a tensor; pick a "
            "submodule whose output is a single tensor."
        )
    return value


def _record(tap: Tap, value: object) -> Tensor:
    value = _as_tensor(tap, value)
    if tap.mode == "copy":
        return value.detach().clone()
    return value.clone()


def run_forward(
    model: nn.Module, x: Tensor, session: HookSession
) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Run ``model(x)`` inside ``session``.

    Returns the model's output (``None`` when the pass stopped early) and the
    recorded tensors. Raises :class:`LayerNotReachedError` when a tap did not run.
    """
    with session:
        try:
            output = model(x)
        except StopForward:
            output = None
    session.check_reached()
    return output, dict(session.results)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each ``training`` flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class _ScaleGradient(torch.autograd.Function):
    """Give ``y``, computed from ``x`` without autograd, the gradient ``dy * scale`` to ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, scale: Tensor) -> Tensor:
        ctx.save_for_backward(scale)
        # Marked as changed in place so that ``y`` itself (not a view of it) comes
        # back with history: a later in-place ReLU on it stays legal.
        ctx.mark_dirty(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (scale,) = ctx.saved_tensors
        return (grad * scale).to(grad.dtype), None, None


def _uses_running_stats(module: nn.Module) -> bool:
    return (
        not module.training
        and getattr(module, "running_mean", None) is not None
        and getattr(module, "running_var", None) is not None
    )


def _batchnorm_scale(module: nn.Module, output: Tensor) -> Tensor:
    """``weight / sqrt(running_var + eps)`` shaped to broadcast over ``output``'s channels."""
    variance: Tensor = module.running_var  # type: ignore[assignment]
    # At least float32, so low-precision models lose nothing in the product.
    dtype = torch.promote_types(torch.promote_types(variance.dtype, output.dtype), torch.float32)
    scale = torch.rsqrt(variance.to(dtype) + module.eps)  # type: ignore[operator]
    if module.weight is not None:
        scale = scale * module.weight.detach().to(dtype)
    return scale.reshape(1, -1, *([1] * (output.dim() - 2)))


@contextmanager
def input_gradients_only(model: nn.Module) -> Iterator[nn.Module]:
    r"""Inside this block, eval-mode BatchNorm layers do not save their inputs for backward.

    With running statistics a BatchNorm layer is the per-channel affine map
    :math:`y = s x + b`, :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}`, so the
    gradient with respect to its input, :math:`s \, \partial L / \partial y`, needs
    only :math:`s`. Autograd still keeps every input (a full activation map per
    layer) because the gradients of :math:`\gamma` and :math:`\beta` need it.
    Inside this block such a layer runs without recording and its output is
    reattached to its input through :math:`s` alone: input and activation
    gradients are unchanged, BatchNorm parameters receive none. About half of
    what a ResNet saves for backward is BatchNorm inputs.

    Layers in training mode, layers without running statistics, and calls whose
    input needs no gradient are left alone. The hooks are removed and the grad
    mode restored on exit, also when the forward pass raises.
    """
    grad_mode = torch.is_grad_enabled()
    reattach: list[bool] = []

    def before(module: nn.Module, args: tuple[object, ...]) -> None:
        x = args[0] if args else None
        wanted = (
            torch.is_grad_enabled()
            and isinstance(x, Tensor)
            and x.requires_grad
            and _uses_running_stats(module)
        )
        reattach.append(wanted)
        if wanted:
            torch.set_grad_enabled(False)

    def after(module: nn.Module, args: tuple[object, ...], output: object) -> Tensor | None:
        if not reattach.pop():
            return None
        torch.set_grad_enabled(True)
        if not isinstance(output, Tensor):
            raise TypeError(f"a BatchNorm layer returned a {type(output).__name__}")
        x = args[0]
        assert isinstance(x, Tensor)
        return _ScaleGradient.apply(x, output, _batchnorm_scale(module, output))

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for module in model.modules():
            if isinstance(module, _BATCHNORMS):
                # Other pre-hooks (which may change the input) run first, with
                # gradients on; other forward hooks (an ablation of this layer's
                # output) run after the output has its history back.
                handles.append(module.register_forward_pre_hook(before))
                handles.append(module.register_forward_hook(after, prepend=True))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        torch.set_grad_enabled(grad_mode)


@dataclass
class ModuleCall:
    """One module's call during a traced forward pass (in the order calls end)."""

    name: str
    module: nn.Module
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None


def trace_calls(model: nn.Module, x: Tensor) -> tuple[list[ModuleCall], object]:
    """Run ``model(x)`` once in eval mode without gradients and list every module call.

    Calls are listed in the order they finish, so a container follows its
    children. Returns the list and the model's output.
    """
    calls: list[ModuleCall] = []
    handles = []

    def shape(value: object) -> tuple[int, ...] | None:
        return tuple(value.shape) if isinstance(value, Tensor) else None

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
            calls.append(ModuleCall(name, module, shape(args[0]) if args else None, shape(output)))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        with eval_mode(model), torch.no_grad():
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, output


def hook_count(model: nn.Module) -> int:
    """Number of forward / backward hooks attached to ``model`` and its submodules."""
    total = 0
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            total += len(getattr(module, attr, {}))
    return total
