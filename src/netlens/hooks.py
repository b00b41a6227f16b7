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
inputs or activations, never parameters: common layers then stop saving
activations that only parameter gradients need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from netlens._input_gradients import LAYER_TYPES, Rule, rule_for
from netlens.errors import LayerNotReachedError, RepeatedCallError

Mode = Literal["copy", "graph", "leaf"]


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


@contextmanager
def input_gradients_only(
    model: nn.Module, backward_layout: torch.memory_format | None = None
) -> Iterator[nn.Module]:
    """Inside this block, layers keep only what gradients to their inputs need.

    For methods that differentiate with respect to inputs or activations and
    never parameters. Eval-mode BatchNorm layers, convolutions and ReLUs run
    without recording, and their outputs are reattached to their inputs with
    the exact input gradient (rules in :mod:`netlens._input_gradients`): no
    BatchNorm or convolution input is kept, and a ReLU keeps a boolean mask.
    Parameters of these layers receive no gradient. On a ResNet-50 this cuts
    what autograd holds for the backward pass by about four fifths.

    With ``backward_layout`` (``torch.channels_last``), the backward pass
    through 2-d convolutions runs in that layout whatever the forward pass's,
    and input gradients come out in it.

    Calls whose input needs no gradient, BatchNorm layers in training mode or
    without running statistics, and convolutions with non-zero padding modes
    are left to autograd. The hooks are removed and the grad mode restored on
    exit, also when the forward pass raises.
    """
    grad_mode = torch.is_grad_enabled()
    pending: list[Rule | None] = []

    def before(module: nn.Module, args: tuple[object, ...]) -> None:
        rule = rule_for(module, args[0] if args else None)
        pending.append(rule)
        if rule is not None:
            torch.set_grad_enabled(False)

    def after(module: nn.Module, args: tuple[object, ...], output: object) -> Tensor | None:
        rule = pending.pop()
        if rule is None:
            return None
        torch.set_grad_enabled(True)
        x = args[0]
        assert isinstance(x, Tensor) and isinstance(output, Tensor)
        return rule(module, x, output, backward_layout)

    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for module in model.modules():
            if type(module) in LAYER_TYPES:
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
    """One module's call during a traced forward pass (in the order calls end).

    ``call`` counts the calls of the same module in the pass (0 for the first);
    ``calls`` is how many the module had in all. A module called more than
    once is addressed one call at a time as ``f"{name}:{call}"`` (:attr:`label`).
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    call: int = 0
    calls: int = 1

    @property
    def label(self) -> str:
        """``name`` for a module called once, ``"name:call"`` for one called several times."""
        return self.name if self.calls == 1 else f"{self.name}:{self.call}"


def trace_calls(model: nn.Module, x: Tensor) -> tuple[list[ModuleCall], object]:
    """Run ``model(x)`` once in eval mode without gradients and list every module call.

    Calls are listed in the order they finish, so a container follows its
    children. Returns the list and the model's output.
    """
    calls: list[ModuleCall] = []
    handles = []

    def shape(value: object) -> tuple[int, ...] | None:
        return tuple(value.shape) if isinstance(value, Tensor) else None

    seen: dict[str, int] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
            call = seen.get(name, 0)
            seen[name] = call + 1
            calls.append(
                ModuleCall(name, module, shape(args[0]) if args else None, shape(output), call)
            )

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
    for record in calls:
        record.calls = seen[record.name]
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
