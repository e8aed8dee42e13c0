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
        update = update.to(weight.dtype)
        if weight.grad is None:
            weight.grad = update.expand_as(weight).clone()
        else:
            weight.grad.copy_(update)
        return True
