"""Snapshots of a model's state, and the check that code left it as found."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from netlens.errors import NetlensError

__all__ = ["ContractError", "Snapshot", "assert_unchanged", "snapshot"]

_HOOK_KINDS = {
    "_forward_hooks": "forward",
    "_forward_pre_hooks": "forward-pre",
    "_backward_hooks": "backward",
    "_backward_pre_hooks": "backward-pre",
}
# Hooks registered with torch.nn.modules.module.register_module_*_hook act on every module.
_GLOBAL_HOOKS = {
    "_global_forward_hooks": "global forward",
    "_global_forward_pre_hooks": "global forward-pre",
    "_global_backward_hooks": "global backward",
    "_global_backward_pre_hooks": "global backward-pre",
}


class ContractError(NetlensError, AssertionError):
    """A rule of the attribution contract does not hold.

    An ``AssertionError``, so test runners report it as a failed check; the
    message starts with ``rule '<name>':`` and :attr:`rule` is that name (a
    key of :data:`RULES`).

    Examples
    --------
    >>> error = ContractError("output shape", "got (2, 8) for a batch of 2")
    >>> print(error)
    rule 'output shape': got (2, 8) for a batch of 2
    >>> isinstance(error, AssertionError), error.rule
    (True, 'output shape')
    """

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"rule '{rule}': {detail}")
        self.rule = rule
        self.detail = detail

    def __reduce__(self) -> tuple[type[ContractError], tuple[str, str]]:
        return type(self), (self.rule, self.detail)


@dataclass(frozen=True)
class Snapshot:
    """A copy of everything about a model that code using it must leave unchanged.

    Made by :func:`snapshot`, compared by :func:`assert_unchanged`. Modules
    are named as in ``model.named_modules()``, the model itself ``""``.

    Attributes
    ----------
    values
        A copy of every parameter and buffer, by name.
    training
        Every module's ``training`` flag.
    requires_grad
        Every parameter's ``requires_grad``.
    grads
        A copy of every parameter's ``.grad`` (``None`` where it has none).
    hooks
        For each module, the ids of its hooks by kind (``"forward"``,
        ``"forward-pre"``, ``"backward"``, ``"backward-pre"``); the key
        ``"*"`` holds the global module hooks, which act on every module.
    grad_mode
        :func:`torch.is_grad_enabled` at the time.
    """

    values: dict[str, Tensor]
    training: dict[str, bool]
    requires_grad: dict[str, bool]
    grads: dict[str, Tensor | None]
    hooks: dict[str, dict[str, tuple[int, ...]]]
    grad_mode: bool

    @property
    def hook_count(self) -> int:
        """Number of hooks on the model's modules (as :func:`netlens.hooks.hook_count`)."""
        return sum(
            len(ids) for name, kinds in self.hooks.items() if name != "*" for ids in kinds.values()
        )


def snapshot(model: nn.Module) -> Snapshot:
    """Copy everything about ``model`` that code using it must leave unchanged.

    Parameter and buffer values, every submodule's ``training`` flag, every
    parameter's ``requires_grad`` and ``.grad``, the hooks on every module
    (forward, forward-pre, backward, backward-pre, and global module hooks)
    and the grad mode. Compare with :func:`assert_unchanged`.

    Parameters
    ----------
    model
        Any module.

    Returns
    -------
    Snapshot
        Copies: later changes to the model do not change it.

    Examples
    --------
    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    >>> before = snapshot(model)
    >>> before.training[""], before.hook_count, sorted(before.values)[:2]
    (True, 0, ['0.bias', '0.weight'])
    """
    return _state(model, copy=True)


def _state(model: nn.Module, *, copy: bool) -> Snapshot:
    """The model's state; with ``copy=False`` its live tensors, to compare without copying."""

    def keep(t: Tensor) -> Tensor:
        return t.detach().clone() if copy else t.detach()

    with torch.no_grad():
        values = {name: keep(t) for name, t in model.named_parameters()}
        values.update({name: keep(t) for name, t in model.named_buffers()})
        grads = {
            name: None if p.grad is None else keep(p.grad) for name, p in model.named_parameters()
        }
    hooks = {name: _hook_ids(module) for name, module in model.named_modules()}
    hooks["*"] = _global_hook_ids()
    return Snapshot(
        values=values,
        training={name: m.training for name, m in model.named_modules()},
        requires_grad={name: p.requires_grad for name, p in model.named_parameters()},
        grads=grads,
        hooks=hooks,
        grad_mode=torch.is_grad_enabled(),
    )


def assert_unchanged(model: nn.Module, before: Snapshot) -> None:
    """Raise :class:`ContractError` if ``model`` differs from the :func:`snapshot` ``before``.

    Every difference is listed, each under its rule: ``'no hooks left'``,
    ``'training flags'``, ``'parameters and buffers'``, ``'requires_grad
    flags'``, ``'parameter grads'``, ``'grad mode'``; :attr:`ContractError.rule`
    is the first.

    Parameters
    ----------
    model
        The module ``before`` was taken of.
    before
        What :func:`snapshot` returned before the code under test ran.

    Raises
    ------
    ContractError
        If anything differs.

    Examples
    --------
    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> before = snapshot(model)
    >>> handle = model[1].register_forward_hook(lambda module, args, output: None)
    >>> try:
    ...     assert_unchanged(model, before)
    ... except ContractError as error:
    ...     print(error)
    rule 'no hooks left': 1 hook left on the model (1: 1 forward)
    >>> handle.remove()
    >>> assert_unchanged(model, before)
    """
    _raise(_differences(model, before))


class _Originals:
    """The model's own objects (``.grad`` tensors), to put back exactly as they were."""

    def __init__(self, model: nn.Module) -> None:
        self.grads = {name: p.grad for name, p in model.named_parameters()}

    def restore(self, model: nn.Module, found: Snapshot) -> None:
        """Put ``model`` back as in ``found``, whatever the method under test did to it."""
        torch.set_grad_enabled(found.grad_mode)
        for name, module in model.named_modules():
            module.training = found.training.get(name, module.training)
            _remove_new_hooks(module, found.hooks.get(name, {}), _HOOK_KINDS)
        _remove_new_hooks(_torch_modules(), found.hooks["*"], _GLOBAL_HOOKS)
        with torch.no_grad():
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                value = found.values.get(name)
                if value is not None and not torch.equal(tensor, value):
                    tensor.copy_(value)
        for name, p in model.named_parameters():
            p.requires_grad_(found.requires_grad.get(name, p.requires_grad))
            p.grad = self.grads.get(name)


def _hook_ids(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {kind: tuple(getattr(module, attr, None) or ()) for attr, kind in _HOOK_KINDS.items()}


def _global_hook_ids() -> dict[str, tuple[int, ...]]:
    registry = _torch_modules()
    return {
        kind: tuple(getattr(registry, attr, None) or ()) for attr, kind in _GLOBAL_HOOKS.items()
    }


def _torch_modules() -> object:
    """The module of torch that holds the global module hooks."""
    return torch.nn.modules.module


def _remove_new_hooks(
    owner: object, found: dict[str, tuple[int, ...]], kinds: dict[str, str]
) -> None:
    """Remove the hooks on ``owner`` (a module, or torch's global registry) not in ``found``."""
    extras = (
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks_with_kwargs",
        "_global_forward_hooks_always_called",
    )
    for attr, kind in kinds.items():
        hooks = getattr(owner, attr, None)
        for key in [k for k in hooks or () if k not in found.get(kind, ())]:
            del hooks[key]  # type: ignore[index]
            for extra in extras:
                getattr(owner, extra, {}).pop(key, None)


def _differences(model: nn.Module, before: Snapshot) -> list[tuple[str, str]]:
    """``(rule, detail)`` for each way ``model`` differs from ``before``."""
    after = _state(model, copy=False)
    problems: list[tuple[str, str]] = []

    added: list[tuple[str, int, str]] = []
    removed = 0
    for name in dict.fromkeys([*before.hooks, *after.hooks]):
        kinds0, kinds1 = before.hooks.get(name, {}), after.hooks.get(name, {})
        for kind in dict.fromkeys([*kinds0, *kinds1]):
            ids0, ids1 = set(kinds0.get(kind, ())), set(kinds1.get(kind, ()))
            if ids1 - ids0:
                added.append((_module_label(name), len(ids1 - ids0), kind))
            removed += len(ids0 - ids1)
    if added:
        total = sum(count for _, count, _ in added)
        where = ", ".join(f"{label}: {count} {kind}" for label, count, kind in added)
        plural = "s" if total != 1 else ""
        problems.append(("no hooks left", f"{total} hook{plural} left on the model ({where})"))
    if removed:
        problems.append(("no hooks left", f"{removed} of the model's own hooks were removed"))

    flipped = [
        f"{_module_label(name)} {flag} -> {after.training.get(name)}"
        for name, flag in before.training.items()
        if after.training.get(name) != flag
    ]
    if flipped:
        problems.append(("training flags", f"training flags changed: {_listing(flipped)}"))

    changed = [
        name
        for name, value in before.values.items()
        if name not in after.values
        or after.values[name].shape != value.shape
        or not torch.equal(after.values[name], value)
    ]
    if changed:
        problems.append(("parameters and buffers", f"values changed: {_listing(changed)}"))

    switched = [
        f"{name} {flag} -> {after.requires_grad.get(name)}"
        for name, flag in before.requires_grad.items()
        if after.requires_grad.get(name) != flag
    ]
    if switched:
        problems.append(("requires_grad flags", f"requires_grad changed: {_listing(switched)}"))

    grads = []
    for name, g0 in before.grads.items():
        g1 = after.grads.get(name)
        if g0 is None and g1 is not None:
            grads.append(f"{name} (was None, now set)")
        elif g0 is not None and g1 is None:
            grads.append(f"{name} (was set, now None)")
        elif (
            g0 is not None and g1 is not None and (g0.shape != g1.shape or not torch.equal(g0, g1))
        ):
            grads.append(f"{name} (values changed)")
    if grads:
        problems.append(("parameter grads", f".grad changed: {_listing(grads)}"))

    if after.grad_mode != before.grad_mode:
        problems.append(
            ("grad mode", f"torch.is_grad_enabled() was {before.grad_mode}, now {after.grad_mode}")
        )
    return problems


def _raise(problems: list[tuple[str, str]], when: str = "") -> None:
    if not problems:
        return
    suffix = f" {when}" if when else ""
    rule, detail = problems[0]
    others = "; ".join(f"rule '{r}': {d}" for r, d in problems[1:])
    raise ContractError(rule, detail + suffix + (f"; also {others}" if others else ""))


def _module_label(name: str) -> str:
    return {"": "the model", "*": "every module (global)"}.get(name, name)


def _listing(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
