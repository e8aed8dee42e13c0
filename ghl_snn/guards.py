"""The checks every learner makes before it writes an update (GHL, ThreeFactor, HebbFF, SoftHebbLearner,
EProp, ...).

One [`UpdateGuard`][] per learner enforces the same contract everywhere:

* **non-finite numbers** -- NaN / Inf in the input, a weight, the loss, a modulator signal (``error=``,
  ``reward=``, ``dL/dW``) or the update itself: ``nonfinite="raise"`` (default) raises ``FloatingPointError``
  naming the layer and the cause, before anything is written; ``nonfinite="skip"`` warns
  ([`PlasticityWarning`][ghl_snn.PlasticityWarning]) and leaves that weight without an update for this step;
* **frozen weights** (``requires_grad=False``) are never written; each is reported once per learner;
* **silent layers** -- a selected layer that recorded no forward before the update -- are named in a warning
  (``strict=True``: a ``RuntimeError``) and keep whatever gradient they had;
* **an empty batch** is refused with a ``ValueError`` saying so (a mean over zero samples is NaN).

Each check reads a value back from the device (on a GPU, a synchronisation that stalls the queue of kernels).  A
learner that computes every layer's update before writing any can queue all its checks in one
[`DeferredChecks`][ghl_snn.guards.DeferredChecks] and read them back together:
[`UpdateGuard.verify`][ghl_snn.guards.UpdateGuard.verify] makes one host read for the whole step.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .selection import PlasticityWarning

NonFinite = Literal["raise", "skip"]
"""What a learner does with a NaN / Inf update: ``"raise"`` (``FloatingPointError`` naming the layer) or
``"skip"`` (warn, write no update for that weight this step)."""


def check_nonfinite(nonfinite: str) -> NonFinite:
    """``nonfinite`` checked: ``"raise"`` or ``"skip"``."""
    if nonfinite not in ("raise", "skip"):
        raise ValueError(f"nonfinite must be 'raise' or 'skip', got {nonfinite!r}")
    return nonfinite  # type: ignore[return-value]


def all_finite(*tensors: Tensor | None) -> bool:
    """Whether every given floating-point tensor is free of NaN / Inf (``None`` and integer tensors count as
    finite), with one device synchronisation: a sum is non-finite exactly when an entry is or when the sum
    overflows, and only then are the entries checked one by one."""
    sums = [t.detach().float().sum() if t.dtype in (torch.float16, torch.bfloat16) else t.detach().sum()
            for t in tensors if t is not None and t.is_floating_point() and t.numel()]
    if not sums:
        return True
    if len({s.device for s in sums}) > 1:
        sums = [s.cpu() for s in sums]
    if math.isfinite(float(torch.stack(sums).sum())):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None and t.is_floating_point())


def _finite_sum(tensors: Sequence[Tensor | None]) -> Tensor | None:
    """The float32 sum of every floating-point tensor given, left on the device (``None`` if there is none): it is
    non-finite when an entry is, or when the sum overflows."""
    sums = [t.detach().float().sum() if t.dtype in (torch.float16, torch.bfloat16) else t.detach().sum()
            for t in tensors if t is not None and t.is_floating_point() and t.numel()]
    if not sums:
        return None
    return sums[0] if len(sums) == 1 else torch.stack([s.to(sums[0].device, torch.float32) for s in sums]).sum()


class DeferredChecks:
    """Checks queued on the device, to be read back together by
    [`UpdateGuard.verify`][ghl_snn.guards.UpdateGuard.verify] (one host read).

    ``finite(name, cause, *tensors)`` queues "these tensors are free of NaN / Inf" for layer ``name`` (a list of
    names: a signal those layers share); ``flag(name, bad, report)`` queues a 0-dim tensor ``bad`` computed on the
    device, nonzero when something is wrong, and the function that reports it (it should raise), for problems
    that are not a matter of finiteness (e.g. an input outside an encoder's range).  Queued in the order they
    would have been checked one by one: ``verify`` reports the first failure, and lists the positions of the
    failed checks in ``failed``."""

    def __init__(self, first: DeferredChecks | None = None) -> None:
        """``first``: checks queued earlier (e.g. a learner's input checks) that come first in this read."""
        self.entries: list[tuple[str | Sequence[str], str, Sequence[Tensor | None], Tensor,
                                 Callable[[], None] | None]] = [] if first is None else list(first.entries)
        self.failed: list[int] = []

    def finite(self, name: str | Sequence[str], cause: str, *tensors: Tensor | None) -> None:
        total = _finite_sum(tensors)
        if total is not None:
            self.entries.append((name, cause, tensors, total, None))

    def flag(self, name: str | Sequence[str], bad: Tensor, report: Callable[[], None]) -> None:
        self.entries.append((name, "", (), bad.detach().reshape(()).to(torch.float32), report))

    def __len__(self) -> int:
        return len(self.entries)


class UpdateGuard:
    """The guarded write of one learner (see the module docstring).

    Args:
        learner: the learner's name, as it starts every message (e.g. ``"ThreeFactor.step()"``).
        strict: raise instead of warning about a selected layer that recorded nothing.
        nonfinite: ``"raise"`` or ``"skip"`` (see the module docstring).
    """

    def __init__(self, learner: str, strict: bool = False, nonfinite: NonFinite = "raise") -> None:
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be True or False, got {strict!r}")
        self.learner = learner
        self.strict = strict
        self.nonfinite = check_nonfinite(nonfinite)
        self._reported_frozen: set[str] = set()

    # ------------------------------------------------------------------ batches and inputs
    def batch(self, x: Tensor, where: str = "input") -> None:
        """Refuse an empty batch (``ValueError``) -- a batch mean over zero samples would be NaN."""
        if x.dim() == 0 or x.numel() == 0:
            raise ValueError(f"{self.learner}: the {where} is an empty batch (shape {tuple(x.shape)}); a learner "
                             "needs at least one sample")

    def finite(self, name: str | Sequence[str], cause: str, *tensors: Tensor | None) -> bool:
        """True when every tensor is finite; otherwise report ``cause`` for layer ``name`` (raise, or warn and
        return False under ``nonfinite="skip"``)."""
        if all_finite(*tensors):
            return True
        self.non_finite(name, cause)
        return False

    def check(self, name: str | Sequence[str], *causes: tuple[str, Sequence[Tensor | None]]) -> bool:
        """``finite`` for several ``(cause, tensors)`` pairs with one synchronisation when all are finite; else the
        first cause whose tensors are not is reported."""
        if all_finite(*(tensor for _, tensors in causes for tensor in tensors)):
            return True
        for cause, tensors in causes:
            if not all_finite(*tensors):
                self.non_finite(name, cause)
                return False
        return True

    def verify(self, checks: DeferredChecks) -> set[str]:
        """Read every check queued in ``checks`` back in one transfer and report each that failed, in order: under
        ``nonfinite="raise"`` the first raises ``FloatingPointError`` (a flag: its own report); under ``"skip"``
        each warns.  Returns the names of the layers that must not be written (empty when everything passed);
        only a failure costs further reads (to tell an overflowing sum from a non-finite entry)."""
        if not checks.entries:
            return set()
        device = checks.entries[0][3].device
        values = torch.stack([entry[3].to(device, torch.float32) for entry in checks.entries]).tolist()
        if all(math.isfinite(value) for value in values) and not any(
                value for value, entry in zip(values, checks.entries) if entry[4] is not None):
            return set()
        skipped: set[str] = set()
        for index, (value, (name, cause, tensors, _, report)) in enumerate(zip(values, checks.entries)):
            names = {name} if isinstance(name, str) else set(name)
            if names <= skipped:  # already skipped by an earlier failure (e.g. of a signal they share)
                continue
            if report is not None:
                if value:  # not finite, or nonzero: the flag is set
                    checks.failed.append(index)
                    report()
                continue
            if math.isfinite(value) or all(bool(torch.isfinite(t).all()) for t in tensors
                                           if t is not None and t.is_floating_point()):
                continue
            checks.failed.append(index)
            self.non_finite(name, cause)
            skipped.update(names)
        return skipped

    def non_finite(self, name: str | Sequence[str], cause: str) -> None:
        """Raise ``FloatingPointError`` (``nonfinite="raise"``) or warn that the update of layer ``name`` (or of
        every layer in a list: a signal they share) is skipped."""
        names = [name] if isinstance(name, str) else list(name)
        which = f"plastic weight{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}"
        if self.nonfinite == "raise":
            raise FloatingPointError(f"{self.learner}: non-finite {cause} for {which}; nothing was written. Pass "
                                     "nonfinite='skip' to skip such updates with a warning instead")
        warnings.warn(f"{self.learner}: non-finite {cause} for {which}; its update is skipped (the optimiser "
                      "leaves it unchanged this step)", PlasticityWarning, stacklevel=4)

    # ------------------------------------------------------------------ layers
    def frozen(self, name: str, weight: Tensor) -> bool:
        """True (and reported once per learner) when ``weight`` has ``requires_grad=False``: it is not written."""
        if weight.requires_grad:
            return False
        if name not in self._reported_frozen:
            self._reported_frozen.add(name)
            warnings.warn(f"{self.learner}: plastic weight {name!r} is frozen (requires_grad=False); it is left "
                          "unchanged (reported once)", PlasticityWarning, stacklevel=4)
        return True

    def silent(self, names: Iterable[str], detail: str = "") -> None:
        """Warn (``strict``: raise ``RuntimeError``) naming the selected layers that recorded nothing."""
        names = list(names)
        if not names:
            return
        message = (f"{self.learner}: {len(names)} selected plastic weight(s) recorded no training-mode forward "
                   f"since the last step and keep the gradient they had: {', '.join(names)}{detail}. Exclude "
                   "unused layers with layers=...")
        if self.strict:
            raise RuntimeError(message)
        warnings.warn(message, PlasticityWarning, stacklevel=4)

    def context(self, name: str | Sequence[str], context: Mapping[str, Any]) -> bool:
        """Check the floating-point tensors and numbers a modulator receives as keywords (``error=``,
        ``reward=``, ``value=``, ...)."""
        for key, value in context.items():
            if isinstance(value, (float, int)) and not isinstance(value, bool):
                value = torch.tensor(float(value))
            if isinstance(value, Tensor) and not self.finite(name, f"modulator signal {key}=", value):
                return False
        return True

    # ------------------------------------------------------------------ the write
    def write_grad(self, name: str, weight: nn.Parameter | Tensor, update: Tensor,
                   cause: str | Callable[[], str] = "update") -> bool:
        """``weight.grad <- update`` when ``update`` is finite; otherwise report ``cause`` (a function: called only
        then) -- raise, or warn and set ``weight.grad = None`` so the optimiser leaves the weight unchanged.
        Returns whether it was written."""
        if not all_finite(update):
            self.non_finite(name, cause() if callable(cause) else cause)
            weight.grad = None
            return False
        self.write(weight, update)
        return True

    @staticmethod
    def write(weight: nn.Parameter | Tensor, update: Tensor) -> None:
        """``weight.grad <- update`` (copied, in ``weight``'s dtype), without a check: for updates already
        verified ([`verify`][ghl_snn.guards.UpdateGuard.verify])."""
        update = update.to(weight.dtype)
        if weight.grad is None:
            weight.grad = update.expand_as(weight).clone()
        else:
            weight.grad.copy_(update)
