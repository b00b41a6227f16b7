"""The hook core: the only place in netlens that registers hooks.

Everything that looks inside a model goes through :class:`HookSession`, a
context manager that attaches forward hooks to chosen modules and removes
every one of them on exit, also when the forward pass raises.

A session is a set of :class:`Tap` s, one per module (or one call of a
module). A tap can

* record the module's output (``"copy"``: a detached clone; ``"graph"``: a
  clone still attached to the autograd graph) or its input (``where="input"``),
* make the output a fresh leaf of the autograd graph (``"leaf"``): the forward
  pass up to this module runs without recording history, everything after it
  records history, so a gradient with respect to this output costs only the
  part of the network above it,
* keep the output itself as recorded, with the rest of the network running
  on a copy (``"output"``): a gradient with respect to it is a gradient with
  respect to the layer, and nothing below the layer changes,
* replace the output (``replace=``), which is how units are ablated,
* stop the forward pass once every tap marked ``stop`` has run.

Outputs are always cloned before anything downstream runs, so a later
in-place operation (torchvision's ``ReLU(inplace=True)``, ``out += identity``)
cannot change what was recorded.

What a session sees
-------------------
A session acts only on the forward passes its own thread runs, and only on
passes that start while none of its passes is running: another thread's
forward pass through the same model, a pass that a hook of the user's starts
in the middle of one (a method called from inside a forward hook), and the
recomputation of checkpointed parts during a backward pass go through its
hooks untouched. The root's exit hook always runs, so a pass that raises does
not leave the session believing it is still inside it.

A module called more than once inside one forward pass of the root model (the
shared ``relu`` of a torchvision ResNet block runs two or three times) has no
single output; a tap on it raises :class:`~netlens.errors.RepeatedCallError`
rather than silently keeping one of the calls. One call is addressed as
``"name:k"`` (``"pool:1"``: the second call of ``pool``).

:func:`input_gradients_only` serves methods that differentiate with respect to
inputs or activations, never parameters: common layers then stop saving
activations that only parameter gradients need.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

import torch
from torch import Tensor, nn

from netlens._input_gradients import LAYER_TYPES, GuidedReLUs, GuidedRuleError, Rule, rule_for
from netlens.errors import LayerNotReachedError, OutputError, RepeatedCallError

__all__ = [
    "ActiveSessions",
    "HookSession",
    "SessionBlock",
    "ModuleCall",
    "OutputFn",
    "StopForward",
    "Tap",
    "as_logits",
    "eval_mode",
    "graph_cut_message",
    "hook_count",
    "in_backward",
    "input_gradients_only",
    "inputs_seen",
    "run_forward",
    "split_call",
    "trace_calls",
    "watch",
]

Mode = Literal["copy", "graph", "leaf", "output"]
OutputFn = Callable[[object], Tensor]

_CALL = re.compile(r"^(?P<name>.+):(?P<call>\d+)$")


class StopForward(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside the forward pass once every wanted layer has run."""


def split_call(name: str) -> tuple[str, int | None]:
    """Split ``"pool:1"`` into ``("pool", 1)``; a plain name gives ``(name, None)``.

    Examples
    --------
    >>> split_call("features.pool:1"), split_call("layer4")
    (('features.pool', 1), ('layer4', None))
    """
    match = _CALL.match(name)
    if match is None:
        return name, None
    return match["name"], int(match["call"])


def in_backward() -> bool:
    """Whether the autograd engine is running a backward pass on this thread.

    A forward pass run then is the recomputation of a checkpointed part
    (:func:`torch.utils.checkpoint.checkpoint`), not one of the user's.
    """
    return torch._C._current_graph_task_id() != -1


@dataclass
class Tap:
    """What to do at one module (or one call of it) during a forward pass.

    Parameters
    ----------
    name
        The name results are stored under: the dotted module name, with
        ``":k"`` to act on the ``k``-th call only (``"pool:1"``).
    module
        The module to hook.
    mode
        ``"copy"``, ``"graph"``, ``"leaf"``, ``"output"`` or ``None`` (record
        nothing).
    where
        ``"output"`` or ``"input"`` (the first positional input).
    replace
        Optional function mapping the output to the tensor the rest of the
        network sees.
    stop
        Whether the forward pass may stop once this tap (and every other tap
        marked ``stop``) has run.
    call
        Which call of the module to act on (0 is the first); ``None`` (default)
        takes it from a ``":k"`` suffix of ``name``, else the module must run
        once per pass.
    """

    name: str
    module: nn.Module
    mode: Mode | None = "copy"
    where: Literal["output", "input"] = "output"
    replace: Callable[[Tensor], Tensor] | None = None
    stop: bool = False
    call: int | None = None
    calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.call is None:
            self.call = split_call(self.name)[1]

    @property
    def done(self) -> bool:
        """Whether the call this tap acts on has run in the latest pass."""
        return self.calls > (self.call or 0)


class HookSession:
    """Attach taps to a model for the duration of a ``with`` block.

    Parameters
    ----------
    root
        The model whose forward pass delimits "one pass": a tap that runs twice
        while ``root`` is running raises :class:`~netlens.errors.RepeatedCallError`
        (unless it names one call).
    taps
        What to hook.
    stop_early
        Raise :class:`StopForward` once every tap marked ``stop`` has run. The
        caller catches it (see :func:`run_forward`).

    Attributes
    ----------
    results
        ``{tap.name: Tensor}`` from the latest forward pass.
    passes
        How many forward passes of ``root`` the session has seen.
    last_failed
        Whether the latest of them raised.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> with HookSession(net, [Tap("1", net[1])]) as session:
    ...     logits = net(torch.randn(5, 3))
    >>> session.results["1"].shape, session.passes
    (torch.Size([5, 4]), 1)
    """

    def __init__(self, root: nn.Module, taps: Sequence[Tap], *, stop_early: bool = False):
        self.root = root
        self.taps = list(taps)
        self.stop_early = stop_early and any(t.stop for t in self.taps)
        self.results: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._depth = 0
        self._nested = 0
        self._thread: int | None = None
        self._grad_mode = torch.is_grad_enabled()
        self.passes = 0
        self.last_failed = False

    def __enter__(self) -> HookSession:
        self._grad_mode = torch.is_grad_enabled()
        self._thread = threading.get_ident()
        self._depth = self._nested = 0
        try:
            self._handles.append(self.root.register_forward_pre_hook(self._root_enter))
            self._handles.append(self.root.register_forward_hook(self._root_exit, always_call=True))
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
        self._depth = self._nested = 0

    def check_reached(self) -> None:
        """Raise :class:`~netlens.errors.LayerNotReachedError` if a tap did not act."""
        missing = [t for t in self.taps if not t.done]
        if missing:
            raise LayerNotReachedError(_not_reached_message(self.root, missing))

    # which passes are this session's ---------------------------------------

    def _own(self) -> bool:
        return threading.get_ident() == self._thread and not in_backward()

    def _acting(self) -> bool:
        return self._nested == 0 and self._own()

    # hooks -----------------------------------------------------------------

    def _root_enter(self, module: nn.Module, args: object) -> None:
        if not self._own():
            return
        if self._depth > 0:
            # A pass started from inside one of ours (a user's hook calling the
            # model, or a method): not ours to see.
            self._nested += 1
            return
        self.passes += 1
        self.results.clear()
        for tap in self.taps:
            tap.calls = 0
        self._depth = 1

    def _root_exit(self, module: nn.Module, args: object, output: object) -> None:
        if not self._own():
            return
        if self._nested:
            self._nested -= 1
        else:
            self._depth = 0
            # Runs also when the pass raised (always_call), with no output then.
            self.last_failed = output is None

    def _take(self, tap: Tap) -> bool:
        """Count a call of the tapped module; whether the tap acts on this one."""
        index = tap.calls
        tap.calls += 1
        if tap.call is not None:
            return index == tap.call
        if tap.calls > 1 and self._depth > 0:
            raise RepeatedCallError(
                f"module '{tap.name}' ran {tap.calls} times in one forward pass (it is "
                "reused inside forward(), like the shared ReLU of a ResNet block), so it "
                f"has no single output. Address one call as '{tap.name}:0', "
                f"'{tap.name}:1', ... (`netlens layers` lists them), or pick a module that "
                "runs once, e.g. its parent block."
            )
        return True

    def _maybe_stop(self) -> None:
        if self.stop_early and all(t.done for t in self.taps if t.stop):
            raise StopForward

    def _input_hook(self, tap: Tap) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            if not self._acting() or not self._take(tap):
                return
            value = args[0] if args else None
            if tap.mode is not None:
                self.results[tap.name] = _record(tap, value)
            self._maybe_stop()

        return hook

    def _output_hook(self, tap: Tap) -> Callable[..., Tensor | None]:
        def hook(module: nn.Module, args: object, output: object) -> Tensor | None:
            if not self._acting() or not self._take(tap):
                return None
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
            elif tap.mode == "output":
                self.results[tap.name] = out
                new = out.clone()
            elif tap.mode is not None:
                self.results[tap.name] = _record(tap, out)
            self._maybe_stop()
            return new

        return hook


class ActiveSessions:
    """The session an object's ``with`` block holds, one per thread.

    :class:`~netlens.FeatureExtractor` and :class:`~netlens.UnitAblator` are
    context managers: entering one starts a :class:`HookSession`, leaving it
    ends that session. Each thread has its own, so one extractor can be used in
    ``with`` blocks on several threads at once; entering it twice on one
    thread is refused.
    """

    def __init__(self, owner: object, what: str) -> None:
        self.what = what
        self._sessions: dict[int, HookSession] = {}
        self._lock = threading.Lock()

    def enter(self, session: HookSession) -> HookSession:
        """Start ``session`` for this thread and return it."""
        thread = threading.get_ident()
        with self._lock:
            if thread in self._sessions:
                raise RuntimeError(
                    f"this {self.what} is already active in this thread (a nested `with` "
                    f"block); use a second {self.what} instead."
                )
            self._sessions[thread] = session
        try:
            session.__enter__()
        except BaseException:
            with self._lock:
                del self._sessions[thread]
            raise
        return session

    def exit(self, *exc_info: object) -> HookSession:
        """End this thread's session and return it."""
        with self._lock:
            session = self._sessions.pop(threading.get_ident())
        session.__exit__(*exc_info)
        return session


class SessionBlock:
    """Base of objects used as ``with obj: model(x)``, holding one session per thread.

    A subclass implements :meth:`_new_session` (and may react to the block's
    start and end in :meth:`_entered` / :meth:`_left`). On leaving the block
    after at least one pass, a tap that never acted is
    :class:`~netlens.errors.LayerNotReachedError`; a :class:`StopForward` that
    ended the user's forward pass is swallowed.
    """

    _active: ActiveSessions

    def _new_session(self) -> HookSession:
        raise NotImplementedError

    def _entered(self, session: HookSession) -> None:
        """Called with the session when the block starts."""

    def _left(self, session: HookSession) -> None:
        """Called with the session when the block ends."""

    def __enter__(self) -> Self:
        self._entered(self._active.enter(self._new_session()))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        session = self._active.exit(exc_type, exc, tb)
        self._left(session)
        # A pass that raised was reported by its own exception; the check is of a whole one.
        if exc_type is None and session.passes > 0 and not session.last_failed:
            session.check_reached()
        return exc_type is not None and issubclass(exc_type, StopForward)


def _not_reached_message(root: nn.Module, missing: Sequence[Tap]) -> str:
    names = [t.name for t in missing]
    ran = {t.name: t.calls for t in missing if t.call is not None and t.calls}
    detail = "".join(
        f" '{name}' ran {count} time(s), so call :{split_call(name)[1]} does not exist."
        for name, count in ran.items()
    )
    if isinstance(root, torch.jit.ScriptModule):
        hint = (
            f"{type(root).__name__} is a TorchScript module (torch.jit.trace / "
            "torch.jit.script): its compiled graph runs no Python hooks, so netlens cannot "
            "see or change its layers. Explain the eager nn.Module it was made from."
        )
    elif hasattr(root, "_orig_mod") and type(root).__name__ == "OptimizedModule":
        hint = (
            "the model is compiled with torch.compile, and its compiled graph did not run "
            "the hooks. Explain the eager module instead: model._orig_mod."
        )
    else:
        hint = (
            "A module that is defined but not called by forward() (an auxiliary head in "
            "eval mode, an unused branch) has no output. Pick a layer the forward pass uses."
        )
    return f"layer(s) {names} did not run during the forward pass.{detail} {hint}"


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


def as_logits(output: object, fn: OutputFn | None = None) -> Tensor:
    """The logits in a model's output.

    A model may return a tensor, a tuple or list (logits first, like
    torchvision's GoogLeNet in training mode), a mapping with ``"logits"``,
    or an object with a ``logits`` tensor attribute (Hugging Face's
    ``ModelOutput``); ``fn``, when given, turns any other output into logits.

    Raises
    ------
    OutputError
        When the output holds no logits netlens can find unambiguously.

    Examples
    --------
    >>> import torch
    >>> as_logits({"logits": torch.ones(1, 3), "aux": torch.zeros(1, 3)}).tolist()
    [[1.0, 1.0, 1.0]]
    >>> as_logits((torch.zeros(2, 4), torch.ones(2, 4))).shape
    torch.Size([2, 4])
    >>> as_logits({"out": torch.ones(1, 3)}, fn=lambda o: o["out"]).shape
    torch.Size([1, 3])
    """
    if fn is not None:
        value = fn(output)
        if not isinstance(value, Tensor):
            raise OutputError(f"output= returned a {type(value).__name__}, not a tensor of logits")
        return value
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        if "logits" in output and isinstance(output["logits"], Tensor):
            return output["logits"]
        keys = ", ".join(repr(k) for k in list(output)[:8])
        raise OutputError(
            f"the model returns a mapping with keys {keys} and no tensor 'logits'; pass "
            "output=lambda out: out[...] to say which entry holds the logits."
        )
    if isinstance(output, (tuple, list)):
        if output and isinstance(output[0], Tensor):
            return output[0]
        raise OutputError(
            f"the model returns a {type(output).__name__} whose first element is not a "
            "tensor; pass output=lambda out: ... to say where the logits are."
        )
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise OutputError(
        f"the model returns a {type(output).__name__}, not logits; pass "
        "output=lambda out: ... to say where the logits are."
    )


def run_forward(
    model: nn.Module, x: Tensor, session: HookSession, *, output: OutputFn | None = None
) -> tuple[Tensor | None, dict[str, Tensor]]:
    """Run ``model(x)`` inside ``session``.

    Returns the model's logits (:func:`as_logits`; ``None`` when the pass
    stopped early) and the recorded tensors. Raises
    :class:`~netlens.errors.LayerNotReachedError` when a tap did not run.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> logits, found = run_forward(net, torch.randn(5, 3), HookSession(net, [Tap("0", net[0])]))
    >>> logits.shape, found["0"].shape
    (torch.Size([5, 2]), torch.Size([5, 4]))
    """
    with session:
        try:
            result: Tensor | None = as_logits(model(x), output)
        except StopForward:
            result = None
    session.check_reached()
    return result, dict(session.results)


class _Holds:
    """Who holds a model in eval mode, so that concurrent calls restore it once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[int, tuple[int, list[tuple[nn.Module, bool]]]] = {}


_HOLDS = _Holds()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every submodule in eval mode inside the block, each ``training`` flag restored after.

    The flags are set directly: a ``train()`` / ``eval()`` override of the
    user's (one that freezes parameters, say) does not run, so nothing else
    changes. Calls from several threads on one model restore the flags once,
    when the last of them ends.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.BatchNorm1d(3)).train()
    >>> with eval_mode(net):
    ...     net[0].training
    False
    >>> net[0].training
    True
    """
    key = id(model)
    with _HOLDS.lock:
        count, flags = _HOLDS.held.get(key, (0, []))
        if count == 0:
            # Only the modules in training mode: the flags of the others stay as they are.
            flags = [(m, True) for m in _in_training(model)]
            for module, _ in flags:
                module.training = False
        _HOLDS.held[key] = (count + 1, flags)
    try:
        yield model
    finally:
        with _HOLDS.lock:
            count, flags = _HOLDS.held[key]
            if count == 1:
                del _HOLDS.held[key]
                for module, flag in flags:
                    module.training = flag
            else:
                _HOLDS.held[key] = (count - 1, flags)


def _in_training(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` in training mode, as ``model.modules()`` finds them.

    A walk of the registered children without the names ``modules()`` builds:
    a fifth of its time on a ResNet-50, paid on every call of every method. A
    module shared by several parents is listed once per parent (harmless for
    flags); its children are walked once.
    """
    found = []
    stack = [model]
    walked: set[int] = set()
    while stack:
        module = stack.pop()
        if module.training:
            found.append(module)
        children = module._modules
        if len(children) and id(module) not in walked:
            walked.add(id(module))
            stack.extend(child for child in children.values() if child is not None)
    return found


@contextmanager
def input_gradients_only(
    model: nn.Module,
    backward_layout: torch.memory_format | None = None,
    *,
    guided: bool = False,
    min_elements: int = 0,
    rules: bool = True,
) -> Iterator[nn.Module]:
    r"""Inside this block, layers keep only what gradients to their inputs need.

    For methods that differentiate with respect to inputs or activations and
    never parameters. Eval-mode BatchNorm layers, convolutions and ReLUs run
    without recording, and their outputs are reattached to their inputs with
    the exact input gradient (rules in :mod:`netlens._input_gradients`): no
    BatchNorm or convolution input is kept, and a ReLU keeps a boolean mask.
    Parameters of these layers receive no gradient. On a ResNet-50 this cuts
    what autograd holds for the backward pass by about four fifths.

    With ``min_elements``, calls whose input has fewer elements are left to
    autograd: a rule costs some Python per call, worth it for the memory of
    large activations only (the methods pass
    :data:`netlens._input_gradients.WORTH_A_RULE`, 2\ :sup:`20`).

    With ``rules=False`` no layer gets a rule: with ``guided=True`` that is
    the guided ReLU rule alone, without the per-call hooks of the other layers
    (what the methods run where no layer's input reaches ``min_elements``).

    With ``backward_layout`` (``torch.channels_last``), the backward pass
    through 2-d convolutions runs in that layout whatever the forward pass's,
    and input gradients come out in it.

    Left to autograd, so that the result is exactly autograd's: calls whose
    input needs no gradient, BatchNorm layers in training mode or without
    running statistics, convolutions with non-zero padding modes, modules
    carrying backward hooks (and every module while a global module backward
    hook is registered), and calls inside a checkpointed part
    (:func:`torch.utils.checkpoint.checkpoint`). Only the calling thread's
    forward passes are affected. The hooks are removed and the grad mode
    restored on exit, also when the forward pass raises.

    With ``guided=True`` every ReLU computed in the block with gradients
    gets the backward rule of guided backpropagation instead of its own,
    :math:`\partial L / \partial x = [x > 0] \max(\partial L / \partial y, 0)`:
    ``nn.ReLU`` modules (and subclasses) and functional calls
    (``torch.nn.functional.relu``, ``torch.relu``, ``Tensor.relu``, in place or
    not) alike, each keeping a boolean mask (or, where its input is below
    ``min_elements`` or ``rules=False``, its output, which the autograd-run
    layer after it keeps anyway); other activations (``ReLU6``,
    ``GELU``, ``SiLU``) keep their gradient. The rule is the ReLU's own
    backward, so backward hooks on a ReLU module see the guided gradient as
    its input gradient. Where the rule cannot be the one the backward pass
    runs, :class:`~netlens.errors.GuidedRuleError` names the ReLU
    instead of leaving it its ordinary gradient: inside
    :func:`torch.utils.checkpoint.checkpoint`, inside a custom autograd
    Function, in a TorchScript or ``torch.compile`` module, or an ``nn.ReLU``
    whose ``forward`` computes something other than a ReLU call.
    """
    grad_mode = torch.is_grad_enabled()
    owner = threading.get_ident()
    pending: list[Rule | None] = []

    def before(module: nn.Module, args: tuple[object, ...]) -> None:
        if threading.get_ident() != owner or in_backward():
            return
        rule = rule_for(module, args[0] if args else None, min_elements)
        pending.append(rule)
        if rule is not None:
            torch.set_grad_enabled(False)

    def after(module: nn.Module, args: tuple[object, ...], output: object) -> Tensor | None:
        if threading.get_ident() != owner or in_backward():
            return None
        rule = pending.pop()
        if rule is None:
            return None
        torch.set_grad_enabled(True)
        x = args[0]
        assert isinstance(x, Tensor) and isinstance(output, Tensor)
        return rule(module, x, output, backward_layout)

    # Where the layers after a ReLU are left to autograd, they keep its output anyway:
    # the guided rule then keeps that output too, not a mask on top.
    mode = _guided_mode(model, min_elements if rules else sys.maxsize) if guided else None
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name, module in model.named_modules():
            if mode is not None and isinstance(module, nn.ReLU):
                handles.extend(_check_guided(mode, name or type(module).__name__, module, owner))
                continue  # the guided rule, not the mask rule
            if rules and type(module) in LAYER_TYPES:
                # Other pre-hooks (which may change the input) run first, with
                # gradients on; other forward hooks (an ablation of this layer's
                # output) run after the output has its history back.
                handles.append(module.register_forward_pre_hook(before))
                handles.append(module.register_forward_hook(after, prepend=True))
        if mode is None:
            yield model
        else:
            with mode:
                yield model
    finally:
        for handle in handles:
            handle.remove()
        torch.set_grad_enabled(grad_mode)


def _guided_mode(model: nn.Module, mask_from: int) -> GuidedReLUs:
    for name, module in model.named_modules():
        compiled = type(module).__name__ == "OptimizedModule"
        if isinstance(module, torch.jit.ScriptModule) or compiled:
            kind = "compiled with torch.compile" if compiled else "a TorchScript module"
            raise GuidedRuleError(
                f"module '{name or type(module).__name__}' is {kind}: its ReLUs do not run "
                "through Python, so guided backpropagation cannot give them its backward "
                "rule. Explain the eager nn.Module it was made from."
            )
    return GuidedReLUs(mask_from)


def _check_guided(
    mode: GuidedReLUs, name: str, module: nn.Module, owner: int
) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that name a ReLU module's call and check that the guided rule reached it."""
    calls: list[int | None] = []

    def before(module: nn.Module, args: tuple[object, ...]) -> None:
        if threading.get_ident() != owner or in_backward():
            return
        x = args[0] if args else None
        needs = torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad
        calls.append(mode.applied if needs else None)
        mode.where.append(name)

    def after(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if threading.get_ident() != owner or in_backward() or not calls:
            return
        mode.where.pop()
        applied = calls.pop()
        if applied is not None and output is not None and mode.applied == applied:
            raise GuidedRuleError(
                f"ReLU '{name}' ({type(module).__name__}) ran without computing a ReLU "
                "through torch.nn.functional.relu, torch.relu or Tensor.relu, so the guided "
                "rule did not reach it; its forward must compute the ReLU with one of them."
            )

    return [
        module.register_forward_pre_hook(before),
        module.register_forward_hook(after, always_call=True),
    ]


@contextmanager
def inputs_seen(
    model: nn.Module,
    select: Callable[[nn.Module], bool],
    seen: Callable[[nn.Module, Tensor], None],
) -> Iterator[None]:
    """Inside this block, ``seen(module, x)`` for each call of a selected module on this thread.

    ``x`` is the call's first positional input, when it is a tensor. The hooks
    are removed on exit, also when the block raises.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> sizes = []
    >>> with inputs_seen(net, lambda m: isinstance(m, nn.Linear),
    ...                  lambda m, x: sizes.append(x.shape[-1])):
    ...     _ = net(torch.randn(1, 3))
    >>> sizes
    [3, 4]
    """
    owner = threading.get_ident()

    def hook(module: nn.Module, args: tuple[object, ...]) -> None:
        if threading.get_ident() == owner and args and isinstance(args[0], Tensor):
            seen(module, args[0])

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if select(m)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def watch(
    modules: Iterable[nn.Module], fn: Callable[..., object], *, pre: bool = False
) -> Iterator[None]:
    """Plain forward hooks (``pre=True``: forward pre-hooks) on ``modules`` inside the block.

    For probes that look at every pass, whoever runs it: diagnostics and the
    contract kit (:mod:`netlens.testing`). The hooks are removed on exit,
    also when the block raises.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> ran = []
    >>> with watch(net.children(), lambda module, args, output: ran.append(type(module).__name__)):
    ...     _ = net(torch.zeros(1, 2))
    >>> ran
    ['Linear', 'ReLU']
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for module in modules:
            register = module.register_forward_pre_hook if pre else module.register_forward_hook
            handles.append(register(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


def graph_cut_message(model: nn.Module, x: Tensor, what: str) -> str:
    """Say where ``model``'s graph stops depending on ``x`` (one diagnostic forward pass).

    Used when a gradient a method needs does not exist: the first module whose
    input depends on ``x`` but whose output does not is where the graph is
    cut (a quantized layer, an operation without a gradient); when no module
    cuts it, the cut is in a ``forward`` method's own code (a ``.detach()``,
    ``torch.no_grad()``), after the last module whose output still depends on
    ``x``. The pass runs with the parameters detached, so that only the
    dependence on ``x`` counts.
    """
    cut: list[str] = []
    last: list[str] = []
    names = {id(m): n for n, m in model.named_modules() if n}
    owner = threading.get_ident()

    def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        if threading.get_ident() != owner or id(module) not in names:
            return
        inputs = [a for a in args if isinstance(a, Tensor)]
        outputs = [output] if isinstance(output, Tensor) else []
        if any(_depends(t) for t in outputs):
            last.append(names[id(module)])
        elif not cut and any(_depends(t) for t in inputs) and outputs:
            cut.append(f"{names[id(module)]}' ({type(module).__name__})")

    detached = {name: t.detach() for name, t in model.named_parameters()}
    try:
        with watch(model.modules(), hook), torch.enable_grad(), eval_mode(model):
            torch.func.functional_call(model, detached, (x.detach().requires_grad_(True),))
    except Exception:  # noqa: BLE001 - a diagnosis must not hide the real error
        pass
    if cut:
        where = f"at layer '{cut[0]}, whose output does not depend on its input"
    elif last:
        where = (
            f"after layer '{last[-1]}', inside the model's own forward code (a "
            ".detach(), torch.no_grad() or a non-differentiable operation)"
        )
    else:
        where = f"before the first layer, inside {type(model).__name__}.forward"
    return (
        f"{what} does not exist: the autograd graph is cut {where}. netlens does not "
        "return a zero map for a gradient that is not there."
    )


def _depends(tensor: Tensor) -> bool:
    """Whether ``tensor`` carries gradient history (a node without a gradient does not count)."""
    node = tensor.grad_fn
    return tensor.requires_grad and not (node is not None and "NotImplemented" in node.name())


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
    owner = threading.get_ident()

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
            if threading.get_ident() != owner or in_backward():
                return
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
