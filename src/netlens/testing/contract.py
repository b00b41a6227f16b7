"""check_attribution: netlens' attribution contract, run on any method."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from netlens._checks import model_device
from netlens.attribution.base import Attribution
from netlens.hooks import as_logits, eval_mode, watch
from netlens.testing.models import tiny_cnn
from netlens.testing.state import (
    ContractError,
    Snapshot,
    _differences,
    _Originals,
    _raise,
    snapshot,
)

__all__ = ["RULES", "ContractReport", "check_attribution"]

#: Every rule :func:`check_attribution` checks, by name, with what it asks.
RULES: dict[str, str] = {
    "output type": "the call returns a torch.Tensor",
    "output shape": '(N, H, W) for size="input", (N, h, w) for size=(h, w), (N, h, w) for None',
    "output dtype and device": "the maps have the input's dtype and device",
    "finite output": "finite input gives finite maps",
    "target None is top-1": "target=None equals each sample's top-1 class passed explicitly",
    "int target": "an int target equals the same int repeated for every sample",
    "list target equals tensor target": "a list of per-sample targets equals a 1-D tensor",
    "batched equals one at a time": "each sample's map equals the map of that sample alone",
    "caller's grad mode": "under torch.no_grad() or torch.inference_mode() the maps are the same",
    "no hooks left": "no forward, forward-pre, backward or backward-pre hook is left behind",
    "training flags": "every submodule's training flag is as it was",
    "parameters and buffers": "every parameter and buffer holds the same values",
    "requires_grad flags": "every parameter's requires_grad is as it was",
    "parameter grads": "every parameter's .grad is as it was",
    "grad mode": "torch.is_grad_enabled() is as it was",
    "errors propagate": "an exception raised in the model's forward pass reaches the caller",
    "input unchanged": "the input keeps its values, its requires_grad and a .grad of None",
    "bad input errors": "bad images or targets raise TypeError / ValueError / IndexError",
    "errors before work": "bad images and target forms are refused before the model runs",
    "many targets": "a target of shape (N, K) gives maps (N, K, H, W), one per column",
}


@dataclass(frozen=True)
class ContractReport:
    """What :func:`check_attribution` checked, returned when every rule held.

    Attributes
    ----------
    method
        The method's :attr:`~netlens.attribution.Attribution.title`.
    rules
        The names of the rules that were checked and held.
    skipped
        The names of the rules left out on request.
    input_shape
        The shape of the input batch the rules were checked on.

    Examples
    --------
    >>> report = ContractReport("Saliency", ("output type",), (), (3, 3, 32, 28))
    >>> print(report)
    Saliency keeps 1 rule of the attribution contract on input (3, 3, 32, 28)
    """

    method: str
    rules: tuple[str, ...]
    skipped: tuple[str, ...]
    input_shape: tuple[int, ...]

    def __str__(self) -> str:
        count = f"{len(self.rules)} rule{'s' if len(self.rules) != 1 else ''}"
        text = (
            f"{self.method} keeps {count} of the attribution contract on input {self.input_shape}"
        )
        if self.skipped:
            text += f" (skipped: {', '.join(self.skipped)})"
        return text


def check_attribution(
    cls: type[Attribution] | Callable[..., Attribution],
    model: nn.Module | None = None,
    *,
    inputs: Tensor | None = None,
    skip: Iterable[str] = (),
    **kwargs: Any,
) -> ContractReport:
    """Check that an attribution method keeps netlens' attribution contract.

    Builds ``method = cls(model, **kwargs)`` and checks every rule in
    :data:`RULES` on it:

    - the maps: a ``torch.Tensor`` of shape ``(N, H, W)`` for
      ``size="input"``, ``(N, h, w)`` for ``size=(h, w)`` and ``size=None``,
      with the input's dtype and device, finite;
    - the targets: ``None`` equals each sample's top-1 class passed
      explicitly, an ``int`` equals it repeated, a list equals a 1-D tensor,
      and a target of shape ``(N, K)`` gives ``(N, K, H, W)`` (rule ``'many
      targets'``);
    - the batch: each sample's map equals the map of that sample alone, and
      the caller's ``torch.no_grad()`` / ``torch.inference_mode()`` change
      nothing;
    - the model and the input are left as found after the constructor and
      after every call (hooks, ``training`` flags, parameters and buffers,
      ``requires_grad``, ``.grad``, grad mode), in eval and in train mode,
      also when the model's forward pass raises, which must reach the caller;
    - bad input is refused: a non-tensor, a 3-D tensor, an integer dtype, an
      out-of-range, float, or miscounted target raise ``TypeError``,
      ``ValueError`` or ``IndexError``, before the model runs where no
      forward pass is needed to know.

    Maps are compared with a tolerance relative to their scale. Every call
    runs with the random number generators seeded alike, so a seeded
    stochastic method compares with itself; the caller's generator state is
    left as it was. The model is restored afterwards, even when a rule broke.

    Parameters
    ----------
    cls
        An :class:`~netlens.attribution.Attribution` subclass, or any callable
        ``cls(model, **kwargs)`` that returns an instance of one.
    model
        The model to check on; default: :func:`tiny_cnn`.
    inputs
        The image batch ``(N, C, H, W)`` to check on, ``N >= 2``; default: 3
        seeded random images of 32 x 28 pixels with the model's first
        convolution's channels, on the model's device and dtype.
    skip
        Names of rules (keys of :data:`RULES`) not to check.
    **kwargs
        Passed to ``cls`` after the model (``layer=``, ``abs=``, ...).

    Returns
    -------
    ContractReport
        The rules checked.

    Raises
    ------
    ContractError
        At the first rule that does not hold; the message names it.

    Examples
    --------
    >>> from netlens.attribution import GradCAM, Saliency
    >>> report = check_attribution(GradCAM)
    >>> report.method, "no hooks left" in report.rules
    ('Grad-CAM', True)

    A method that leaves the model in train mode:

    >>> class Careless(Saliency):
    ...     def __call__(self, x, target=None, *, size="input"):
    ...         self.model.train()
    ...         return super().__call__(x, target, size=size)
    >>> try:
    ...     check_attribution(Careless)
    ... except ContractError as error:
    ...     print(error.rule)
    training flags
    """
    skipped = {skip} if isinstance(skip, str) else set(skip)
    unknown = skipped - set(RULES)
    if unknown:
        raise ValueError(f"unknown rules {sorted(unknown)}; the rules are {list(RULES)}")
    if model is None:
        model = tiny_cnn()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
    if isinstance(cls, type) and not issubclass(cls, Attribution):
        raise TypeError(f"{cls.__name__} is not a subclass of netlens.attribution.Attribution")
    x = _default_inputs(model) if inputs is None else inputs
    if not (isinstance(x, Tensor) and x.dim() == 4 and x.is_floating_point() and len(x) >= 2):
        raise ValueError("inputs must be a floating-point batch (N, C, H, W) with N >= 2")
    x = x.detach()

    found = snapshot(model)
    originals = _Originals(model)
    checker = _Checker(cls, model, x, kwargs, skipped)
    try:
        checker.run(found)
    finally:
        originals.restore(model, found)
    return ContractReport(
        method=checker.title,
        rules=tuple(r for r in RULES if r not in skipped),
        skipped=tuple(r for r in RULES if r in skipped),
        input_shape=tuple(x.shape),
    )


class _Planted(RuntimeError):
    """Raised on purpose inside the model's forward pass."""


class _Checker:
    """One run of the contract: the method, the model, the input, the rules to skip."""

    def __init__(
        self,
        cls: Callable[..., Attribution],
        model: nn.Module,
        x: Tensor,
        kwargs: dict[str, Any],
        skipped: set[str],
    ) -> None:
        self.cls = cls
        self.model = model
        self.x = x
        self.x_copy = x.clone()
        self.kwargs = kwargs
        self.skipped = skipped
        self.title = getattr(cls, "title", None) or getattr(cls, "__name__", repr(cls))
        self.n = len(x)
        self.size = (int(x.shape[-2]), int(x.shape[-1]))

    # -- helpers -----------------------------------------------------------

    def wants(self, rule: str) -> bool:
        return rule not in self.skipped

    def fail(self, rule: str, detail: str) -> None:
        if self.wants(rule):
            raise ContractError(rule, detail)

    def check_state(self, before: Snapshot | None, when: str) -> None:
        before = before or self.before
        problems = [(r, d) for r, d in _differences(self.model, before) if self.wants(r)]
        _raise(problems, when)

    def build(self, before: Snapshot | None = None) -> Attribution:
        method = self.cls(self.model, **self.kwargs)
        if not isinstance(method, Attribution):
            raise TypeError(
                f"{self.title}(model, ...) returned a {type(method).__name__}, not an Attribution"
            )
        self.check_state(before, "after the constructor")
        self.title = method.title or self.title
        return method

    def call(
        self,
        method: Attribution,
        x: Tensor,
        target: object = None,
        size: object = "input",
        *,
        before: Snapshot | None = None,
        when: str = "after a successful call",
    ) -> Tensor:
        with _seeded(x.device):
            maps = method(x, target, size=size)  # type: ignore[arg-type]
        self.check_state(before, when)
        if not isinstance(maps, Tensor):
            raise ContractError(
                "output type", f"the call returned a {type(maps).__name__}, not a torch.Tensor"
            )
        return maps

    def close(self, rule: str, got: Tensor, expected: Tensor, what: str) -> None:
        if not self.wants(rule):
            return
        if got.shape != expected.shape:
            self.fail(
                rule, f"{what}: shapes differ, {tuple(got.shape)} and {tuple(expected.shape)}"
            )
        ok, detail = _close(got, expected)
        if not ok:
            self.fail(rule, f"{what}: {detail}")

    # -- the rules -----------------------------------------------------------

    def run(self, found: Snapshot) -> None:
        # The state every call must leave; each call is checked against it, so
        # it holds for the next one.
        self.before = found
        self.probe()
        method = self.build()
        maps = self.check_output(method)
        self.check_targets(method, maps)
        self.check_batch(method, maps)
        self.check_grad_modes(method, maps)
        self.check_train_mode()
        self.check_forward_error()
        self.check_input(method)
        self.check_bad_input()
        if self.wants("many targets"):
            self.check_many_targets(method)

    def probe(self) -> None:
        """The number of classes, the top-1 classes, and the leaf modules in running order."""
        order: list[nn.Module] = []
        leaves = [m for m in self.model.modules() if next(m.children(), None) is None]
        record = lambda module, args, output: order.append(module)  # noqa: E731
        with watch(leaves, record), eval_mode(self.model), torch.no_grad():
            output = self.model(self.x)
        logits = as_logits(output, self.kwargs.get("output"))
        if logits.dim() != 2 or len(logits) != self.n:
            raise ValueError(
                f"the model's logits have shape {tuple(logits.shape)}; the contract needs "
                f"(N, num_classes) = ({self.n}, ...)"
            )
        self.leaves = order
        self.classes = int(logits.shape[1])
        self.top1 = logits.argmax(1)

    def check_output(self, method: Attribution) -> Tensor:
        maps = self.call(method, self.x)
        expected = (self.n, *self.size)
        self.check_maps(maps, expected, 'size="input"')
        for size in (None, (11, 7)):
            other = self.call(method, self.x, size=size)
            if size is None:
                if other.dim() != 3 or len(other) != self.n:
                    self.fail(
                        "output shape",
                        f"size=None gave shape {tuple(other.shape)}; expected ({self.n}, h, w)",
                    )
                self.check_maps(other, tuple(other.shape), "size=None")
            else:
                self.check_maps(other, (self.n, *size), f"size={size}")
        if self.wants("finite output") and bool(torch.isfinite(self.x).all()):
            if not bool(torch.isfinite(maps).all()):
                bad = int((~torch.isfinite(maps)).sum())
                self.fail(
                    "finite output",
                    f"{bad} of {maps.numel()} map values are NaN or infinite for finite input",
                )
        return maps

    def check_maps(self, maps: Tensor, shape: tuple[int, ...], how: str) -> None:
        if tuple(maps.shape) != shape:
            self.fail(
                "output shape", f"{how} gave maps of shape {tuple(maps.shape)}; expected {shape}"
            )
        if maps.dtype != self.x.dtype or maps.device != self.x.device:
            self.fail(
                "output dtype and device",
                f"{how} gave maps of dtype {maps.dtype} on {maps.device}; the input is "
                f"{self.x.dtype} on {self.x.device}",
            )

    def check_targets(self, method: Attribution, maps: Tensor) -> None:
        top1 = self.top1.tolist()
        if self.wants("target None is top-1") or self.wants("list target equals tensor target"):
            explicit = self.call(method, self.x, top1)
            self.close(
                "target None is top-1", maps, explicit, f"target=None and the top-1 classes {top1}"
            )
            as_tensor = self.call(method, self.x, torch.tensor(top1, device=self.x.device))
            self.close(
                "list target equals tensor target",
                explicit,
                as_tensor,
                f"target={top1} as a list and as a tensor",
            )
        if self.wants("int target"):
            c = self.classes - 1
            self.close(
                "int target",
                self.call(method, self.x, c),
                self.call(method, self.x, [c] * self.n),
                f"target={c} and target={[c] * self.n}",
            )

    def check_batch(self, method: Attribution, maps: Tensor) -> None:
        if not self.wants("batched equals one at a time"):
            return
        top1 = self.top1.tolist()
        for i in range(self.n):
            alone = self.call(method, self.x[i : i + 1], [top1[i]])
            self.close(
                "batched equals one at a time",
                maps[i : i + 1],
                alone,
                f"sample {i} in the batch and alone",
            )

    def check_grad_modes(self, method: Attribution, maps: Tensor) -> None:
        if not self.wants("caller's grad mode"):
            return
        for name, mode in (
            ("torch.no_grad()", torch.no_grad),
            ("torch.inference_mode()", torch.inference_mode),
        ):
            with mode():
                before = replace(self.before, grad_mode=torch.is_grad_enabled())
                got = self.call(
                    method, self.x, before=before, when=f"after a successful call under {name}"
                )
            self.close(
                "caller's grad mode", got.clone(), maps, f"the maps under {name} and without"
            )

    def check_train_mode(self) -> None:
        """Success in train mode, with a frozen parameter and existing ``.grad``s."""
        with _prepared(self.model, train=True):
            before = snapshot(self.model)
            method = self.build(before)
            when = "after a successful call (model in train mode)"
            self.call(method, self.x, before=before, when=when)

    def check_forward_error(self) -> None:
        if not self.leaves:
            return
        for train in (False, True):
            mode = "train" if train else "eval"
            with _prepared(self.model, train=train):
                before = snapshot(self.model)
                method = self.build(before)
                for leaf in (self.leaves[-1], self.leaves[0]):
                    if self.raise_in(method, leaf, f"(model in {mode} mode)", before):
                        break

    def raise_in(self, method: Attribution, leaf: nn.Module, mode: str, before: Snapshot) -> bool:
        """Call with ``leaf`` raising in the forward pass; whether the pass reached it."""
        fired = []

        def hook(module: nn.Module, args: object, output: object) -> None:
            fired.append(True)
            raise _Planted("raised on purpose by netlens.testing in the model's forward pass")

        returned = False
        error: BaseException | None = None
        try:
            with watch([leaf], hook), _seeded(self.x.device):
                method(self.x)
            returned = True
        except Exception as caught:  # noqa: BLE001 - any exception is judged below
            error = caught
        if fired and returned:
            self.fail(
                "errors propagate",
                f"the forward pass raised in {type(leaf).__name__} but the call returned {mode}",
            )
        if fired and error is not None and not _caused_by(error, _Planted):
            self.fail(
                "errors propagate",
                f"the forward pass raised in {type(leaf).__name__} but the call raised "
                f"{type(error).__name__}: {error} instead {mode}",
            )
        if error is not None and not fired:
            raise error
        self.check_state(before, f"after a call whose forward pass raised {mode}")
        return bool(fired)

    def check_input(self, method: Attribution) -> None:
        if self.wants("input unchanged"):
            x = self.x.clone().requires_grad_(True)
            self.call(method, x)
            if x.grad is not None:
                self.fail("input unchanged", "the input's .grad was set (it was None)")
            if not x.requires_grad:
                self.fail("input unchanged", "the input's requires_grad was switched off")
            if not torch.equal(x.detach(), self.x):
                self.fail("input unchanged", "the input's values changed")
        if not torch.equal(self.x, self.x_copy):
            self.fail("input unchanged", "the input's values changed")

    def check_bad_input(self) -> None:
        if not (self.wants("bad input errors") or self.wants("errors before work")):
            return
        method = self.build()
        x, n, c = self.x, self.n, self.classes
        cases: list[tuple[str, object, object, type[Exception], bool]] = [
            ("a nested list instead of a tensor", x.tolist(), None, TypeError, True),
            ("a 3-D tensor (C, H, W)", x[0], None, ValueError, True),
            (
                "an integer (uint8) tensor",
                x.clamp(0, 1).mul(255).to(torch.uint8),
                None,
                TypeError,
                True,
            ),
            (f"target={c} for a model with {c} classes", x, c, IndexError, False),
            (
                f"one target of {c} among per-sample targets, {c} classes",
                x,
                [0] * (n - 1) + [c],
                IndexError,
                False,
            ),
            ("a float target (1.0)", x, 1.0, TypeError, True),
            (f"{n + 1} per-sample targets for {n} samples", x, [0] * (n + 1), ValueError, True),
        ]
        for what, images, target, expected, before_work in cases:
            self.refused(method, what, images, target, expected, before_work)

    def refused(
        self,
        method: Attribution,
        what: str,
        images: object,
        target: object,
        expected: type[Exception],
        before_work: bool,
    ) -> None:
        forwards: list[bool] = []
        counted = lambda module, args: forwards.append(True)  # noqa: E731
        error: Exception | None = None
        try:
            with watch([self.model], counted, pre=True), _seeded(self.x.device):
                method(images, target)  # type: ignore[arg-type]
        except Exception as caught:  # noqa: BLE001 - judged below
            error = caught
        if error is None:
            self.fail(
                "bad input errors", f"{what} must raise {expected.__name__}; the call returned"
            )
        elif not isinstance(error, expected):
            self.fail(
                "bad input errors",
                f"{what} must raise {expected.__name__}, not {type(error).__name__}: {error}",
            )
        if before_work and forwards:
            self.fail(
                "errors before work",
                f"{what} was refused only after {len(forwards)} forward pass(es) of the model",
            )
        self.check_state(None, f"after refusing {what}")

    def check_many_targets(self, method: Attribution) -> None:
        targets = torch.stack([self.top1, (self.top1 + 1) % self.classes], 1).to(self.x.device)
        expected = (self.n, 2, *self.size)
        try:
            maps = self.call(method, self.x, targets)
        except ContractError:
            raise
        except Exception as error:  # noqa: BLE001 - reported as the rule's failure
            raise ContractError(
                "many targets",
                f"a target of shape (N, K) = {tuple(targets.shape)} must give maps of shape "
                f"(N, K, H, W) = {expected}, but the call raised {type(error).__name__}: {error} "
                "(the method does not support many targets; skip=['many targets'] checks the rest)",
            ) from error
        if tuple(maps.shape) != expected:
            self.fail(
                "many targets",
                f"a target of shape (N, K) = {tuple(targets.shape)} gave maps of shape "
                f"{tuple(maps.shape)}; expected (N, K, H, W) = {expected}",
            )
        if maps.dtype != self.x.dtype or maps.device != self.x.device:
            self.fail(
                "many targets",
                f"maps {maps.dtype} on {maps.device}; input {self.x.dtype} on {self.x.device}",
            )
        for k in range(targets.shape[1]):
            column = self.call(method, self.x, targets[:, k])
            self.close(
                "many targets", maps[:, k], column, f"column {k} of the (N, K) target and it alone"
            )


def _close(got: Tensor, expected: Tensor) -> tuple[bool, str]:
    """Equal up to the dtype's rounding, relative to the maps' scale."""
    got, expected = got.detach().double(), expected.detach().double()
    both = torch.isfinite(got) & torch.isfinite(expected)
    if not torch.equal(torch.isfinite(got), torch.isfinite(expected)) or not torch.equal(
        got[~both], expected[~both]
    ):
        return False, "they differ in which values are NaN or infinite"
    scale = float(expected[both].abs().max()) if bool(both.any()) else 0.0
    tolerance = 1e-4
    atol = tolerance * scale if scale > 0 else 1e-12
    if torch.allclose(got[both], expected[both], rtol=tolerance, atol=atol):
        return True, ""
    worst = float((got[both] - expected[both]).abs().max())
    relative = worst / scale if scale > 0 else math.inf
    return (
        False,
        f"they differ by up to {worst:.3g} ({relative:.2g} of the maps' scale {scale:.3g})",
    )


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _default_inputs(model: nn.Module) -> Tensor:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = conv.in_channels if conv is not None else 3
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, channels, 32, 28, generator=generator, dtype=dtype)
    return x.to(model_device(model))


@contextmanager
def _seeded(device: torch.device, seed: int = 0) -> Iterator[None]:
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextmanager
def _prepared(model: nn.Module, *, train: bool) -> Iterator[None]:
    """Eval mode; or train mode, the first parameter frozen and a ``.grad`` on every other.

    In train mode, a method that turns gradients on for the whole model,
    zeroes ``.grad`` or accumulates into it, or runs a forward pass in train
    mode shows.
    """
    params = list(model.parameters())
    state = [(p, p.requires_grad, p.grad) for p in params]
    flags = [(m, m.training) for m in model.modules()]
    model.train(train)
    if train:
        generator = torch.Generator().manual_seed(1)
        for i, p in enumerate(params):
            if i == 0:
                p.requires_grad_(False)
            elif p.requires_grad:
                p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
    try:
        yield
    finally:
        for p, flag, grad in state:
            p.requires_grad_(flag)
            p.grad = grad
        for module, flag in flags:
            module.training = flag
