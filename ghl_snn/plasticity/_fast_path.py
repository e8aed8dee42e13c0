"""The plug-in's fast path: the same ``M ⊙ |E|`` with fewer weight-sized memory passes.

One object per plug-in ([`FastPath`][]) holds everything that makes a step cheaper without changing its value:

* **Eligibility buffers** kept across steps (a fresh 100 MB tensor costs more in page faults than the product that
  fills it), on CPU with padded rows where BLAS's product into power-of-two row strides thrashes the cache.
* **Low-rank factors**: a Linear layer whose rule has the form ``E = U^T x - F ⊙ W``
  ([`EligibilityRule.linear_factors`][ghl_snn.EligibilityRule.linear_factors]; SWTA-Oja) keeps ``U``, ``x`` and
  ``F`` while they are smaller than its weight, and ``E`` is formed one cache-sized row block at a time inside the
  step's first pass.
* **The in-place write**: for the modulators listed in ``IN_PLACE`` (by exact type: a subclass that changes the
  formula takes the generic path), ``.grad <- M ⊙ |E| / s`` is written over the back-propagated ``dL/dW`` with
  ``|E|`` taken in place and the ``"max"`` scale ``s`` deferred into the product, in row blocks of about
  ``BLOCK_BYTES`` on CPU.

The values equal the generic path's (to one float32 rounding of the deferred scale); where a reduction is not
finite the fast path writes nothing and the generic path runs, with its own checks and messages.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..modulators.ablations import SignOnly
from ..modulators.base import Modulator
from ..modulators.grad_sign import GradSign
from ..rules.base import EligibilityRule, Normalization

#: Row lengths (float32 values) whose multiples get padded rows in an eligibility buffer on CPU, and the padding;
#: rows of ``LONG_ROW`` values or more are padded only when they are a multiple of ``LONG_ALIGNED_ROW``.
ALIGNED_ROW, ROW_PADDING = 128, 16
LONG_ROW, LONG_ALIGNED_ROW = 8192, 1024

#: Bytes of ``E`` per row block of the step's passes on CPU (one core's L2 cache): a block's ``E``, ``dL/dW`` and
#: weight rows are used by one operation after another while they are in cache.
BLOCK_BYTES = 2 << 20


def padded_rows(columns: int) -> bool:
    """Whether a CPU eligibility buffer with rows of ``columns`` float32 values gets padded rows."""
    if columns % ALIGNED_ROW:
        return False
    return columns < LONG_ROW or columns % LONG_ALIGNED_ROW == 0


def eligibility_buffer(shape: torch.Size | tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
    """An uninitialised float32 tensor of ``shape`` for a layer's ``E``.

    On CPU a matrix whose rows are a multiple of ``ALIGNED_ROW`` values (512 bytes) apart is returned as a view
    of rows ``ROW_PADDING`` values longer: with power-of-two row strides every row of BLAS's output tile falls in
    the same cache sets, and a product with a small inner dimension (a batch of a few samples) runs 2-3.5
    times slower than into padded rows (9216-input layer, batch 8: 30 ms against 17 ms on one core).  Rows of
    ``LONG_ROW`` values or more gain only when they are a multiple of ``LONG_ALIGNED_ROW`` (4 KiB); otherwise
    padding makes the product up to 15 % slower (VGG's 25088-input layer), so they stay contiguous.
    """
    device = torch.device(device)
    if device.type != "cpu" or len(shape) != 2 or not padded_rows(shape[1]) or shape[0] < 2:
        return torch.empty(shape, dtype=torch.float32, device=device)
    rows, columns = shape
    return torch.empty(rows, columns + ROW_PADDING, dtype=torch.float32, device=device)[:, :columns]


def row_blocks(tensor: Tensor) -> list[slice]:
    """Slices of ``tensor``'s first dimension, about ``BLOCK_BYTES`` each on CPU; one slice of all rows elsewhere
    (a GPU gains nothing from blocking and would pay a kernel launch per block)."""
    if tensor.device.type != "cpu" or tensor.dim() < 2:
        return [slice(None)]
    row_bytes = max(1, tensor[0].numel() * tensor.element_size())
    rows = max(1, BLOCK_BYTES // row_bytes)
    if rows >= tensor.shape[0]:
        return [slice(None)]
    return [slice(first, first + rows) for first in range(0, tensor.shape[0], rows)]


@dataclass
class LowRankEligibility:
    """A Linear layer's ``E`` summed over the forwards since the last step, kept as its factors
    ``sum_f (U_f^T x_f - F_f W)`` while they are smaller than the weight."""

    competition: list[Tensor]
    inputs: list[Tensor]
    forgetting: Tensor

    def numel(self) -> int:
        return sum(u.numel() + x.numel() for u, x in zip(self.competition, self.inputs))

    def add(self, competition: Tensor, inputs: Tensor, forgetting: Tensor) -> None:
        self.competition.append(competition)
        self.inputs.append(inputs)
        self.forgetting.add_(forgetting)

    def writer(self, weight: Tensor, out: Tensor, forwards: int) -> Callable[[slice], Tensor]:
        """A function writing rows ``rows`` of the mean ``E`` over ``forwards`` forwards into ``out[rows]``:
        ``out[rows] = (sum_f U_f[:, rows]^T x_f - F[rows] W[rows]) / forwards`` (one product over all forwards'
        samples)."""
        competition_t = (self.competition[0] if len(self.competition) == 1 else torch.cat(self.competition)).t()
        inputs = self.inputs[0] if len(self.inputs) == 1 else torch.cat(self.inputs)
        forgetting = self.forgetting.neg()[:, None]
        if forwards > 1:
            forgetting.div_(forwards)

        def write(rows: slice) -> Tensor:
            block = torch.mul(weight[rows], forgetting[rows], out=out[rows])
            return block.addmm_(competition_t[rows], inputs, alpha=1.0 / forwards)

        return write


Accumulated = Tensor | LowRankEligibility
"""A plastic weight's ``E`` summed over the forwards since the last step: dense, or as its low-rank factors."""

InPlaceWrite = Callable[[Tensor, Tensor, float], Tensor]
"""``write(grad, magnitude, scale)``: ``grad <- M ⊙ magnitude / scale`` in place, elementwise (``grad`` holds
``dL/dW`` on entry, ``magnitude`` holds ``|E|``)."""


def _zero(like: Tensor, cache: dict[tuple[torch.dtype, torch.device], Tensor] = {}) -> Tensor:  # noqa: B006
    """A 0-d zero of ``like``'s dtype and device (the ``input`` of ``addcmul``), made once per dtype and device."""
    key = (like.dtype, like.device)
    if key not in cache:
        cache[key] = torch.zeros((), dtype=like.dtype, device=like.device)
    return cache[key]


def _grad_sign(grad: Tensor, magnitude: Tensor, scale: float) -> Tensor:
    """GradSign: ``grad <- sign(grad) ⊙ |E| / scale`` (two weight-sized passes; ``sign(0) = 0``)."""
    if scale == 1.0:
        return grad.sign_().mul_(magnitude)
    return torch.addcmul(_zero(grad), grad.sign_(), magnitude, value=1.0 / scale, out=grad)


def _sign_only(grad: Tensor, magnitude: Tensor, scale: float) -> Tensor:
    """SignOnly: ``grad <- sign(grad)`` (``|E| := 1``)."""
    return grad.sign_()


#: The modulators whose update the fast path writes in place, by exact type.
IN_PLACE: dict[type[Modulator], InPlaceWrite] = {GradSign: _grad_sign, SignOnly: _sign_only}


@dataclass
class Pending:
    """One plastic weight on the fast path between its reductions and its write."""

    magnitude: Tensor
    grad: Tensor
    reductions: tuple[Tensor, Tensor]
    normalize: Normalization


class FastPath:
    """The fast path of one plug-in (see the module docstring): its buffers and, for a modulator in ``IN_PLACE``,
    the in-place write."""

    def __init__(self, modulator: Modulator) -> None:
        self.write = IN_PLACE.get(type(modulator))
        self.reads_grad = modulator.needs_weight_grad
        self.buffers: dict[str, Tensor] = {}

    def buffer(self, name: str, weight: Tensor) -> Tensor:
        """The float32 buffer (shaped and placed like ``weight``) that plastic weight ``name``'s ``E`` is written
        into, allocated once and reused every step."""
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape != weight.shape or buffer.device != weight.device:
            buffer = self.buffers[name] = eligibility_buffer(weight.shape, weight.device)
        return buffer

    def applies(self, weight: Tensor, normalize: Normalization) -> bool:
        """Whether this step of ``weight`` can be written in place (its ``.grad`` a float32 ``dL/dW``)."""
        grad = weight.grad
        return (self.write is not None and normalize in ("max", None) and grad is not None
                and grad.dtype == torch.float32 and grad.shape == weight.shape and not grad.requires_grad)

    # ------------------------------------------------------------------ forward: low-rank factors
    def keep_factors(self, name: str, total: Accumulated | None, rule: EligibilityRule, weight: Tensor, x: Tensor,
                     y: Tensor, replicas: int) -> tuple[Accumulated | None, bool]:
        """``(total, True)`` with this forward's ``E`` of a Linear layer added to ``total`` as its factors, where
        that pays: on CPU, one process, a float32 weight, a rule with ``linear_factors``, an in-place modulator with
        the ``"max"`` (or no) normalisation, and only while all the forwards' factors stay smaller than the weight.
        Otherwise ``(total, False)``: the caller adds a dense ``E`` to ``total`` (factors that would outgrow the
        weight first become their dense sum in the layer's buffer)."""
        if total is None:
            if not (x.device.type == "cpu" and weight.dtype == torch.float32 and self.write is not None
                    and rule.normalize in ("max", None) and replicas == 1):
                return total, False
        elif not isinstance(total, LowRankEligibility):
            return total, False
        samples = x.numel() // x.shape[-1] if x.dim() else 0
        if samples == 0 or (total.numel() if total is not None else 0) + samples * sum(weight.shape) > weight.numel():
            return (None if total is None else self.dense(name, total, weight)), False
        inputs = x.detach().reshape(-1, x.shape[-1])
        factors = rule.linear_factors(inputs.float(), y.detach().reshape(-1, y.shape[-1]).float())
        if factors is None:
            return total, False
        inputs = inputs.to(torch.float32, copy=True)  # kept until step(): later in-place ops cannot reach it
        if total is None:
            return LowRankEligibility([factors[0]], [inputs], factors[1]), True
        total.add(factors[0], inputs, factors[1])
        return total, True

    def dense(self, name: str, total: Accumulated, weight: Tensor, forwards: int = 1, reuse: bool = True) -> Tensor:
        """``total`` as a dense sum (``forwards=1``) or mean: factors are formed in the layer's buffer
        (``reuse=False``: a fresh tensor)."""
        if not isinstance(total, LowRankEligibility):
            return total
        out = self.buffer(name, weight) if reuse else torch.empty(weight.shape, dtype=torch.float32,
                                                                  device=weight.device)
        return total.writer(weight.detach(), out, forwards)(slice(None))

    # ------------------------------------------------------------------ step: reductions, then the write
    def prepare(self, name: str, weight: Tensor, total: Accumulated, forwards: int, normalize: Normalization,
                mean: Callable[[], Tensor]) -> Pending:
        """The two read-only reductions of one weight, not yet fetched: ``sum dL/dW`` and ``max|E|`` (``sum |E|``
        without normalisation), after ``|E|`` is taken in place (``M ⊙ |E|`` reads nothing else of ``E``).  One
        pass over row blocks; factors are formed into each block first, so that it is still in cache for the
        rest of the pass.  ``mean()`` gives the mean ``E`` (over forwards and data-parallel replicas) otherwise."""
        write = None
        if isinstance(total, LowRankEligibility):
            magnitude = self.buffer(name, weight)
            write = total.writer(weight.detach(), magnitude, forwards)
        else:
            magnitude = mean()
        grad = weight.grad
        totals, sums = [], []
        for rows in row_blocks(magnitude):
            block = (magnitude[rows] if write is None else write(rows)).abs_()
            totals.append(block.amax() if normalize == "max" else block.sum())
            if self.reads_grad:
                sums.append(grad[rows].sum())
        if len(totals) == 1:
            scale = totals[0]
        else:
            scale = torch.stack(totals).amax() if normalize == "max" else torch.stack(totals).sum()
        grad_sum = (sums[0] if len(sums) == 1 else torch.stack(sums).sum()) if sums else grad.new_zeros(())
        return Pending(magnitude, grad, (grad_sum, scale), normalize)

    @staticmethod
    def fetch(pending: list[Pending]) -> list[tuple[float, float]]:
        """Every weight's pair of reductions as Python floats, in order, with one stack and one device
        synchronisation per device instead of one per layer."""
        by_device: dict[torch.device, list[int]] = {}
        for index, item in enumerate(pending):
            by_device.setdefault(item.reductions[0].device, []).append(index)
        values: list[tuple[float, float]] = [(0.0, 0.0)] * len(pending)
        for indices in by_device.values():
            flat = torch.stack([value for i in indices for value in pending[i].reductions]).tolist()
            for index, first, second in zip(indices, flat[0::2], flat[1::2]):
                values[index] = (first, second)
        return values

    def finish(self, item: Pending, values: tuple[float, float]) -> bool:
        """``.grad <- M ⊙ |E| / s`` written over ``dL/dW``; ``values``: the fetched reductions, both finite
        exactly when ``E`` and ``dL/dW`` are (and then so is the update, ``|E| / s <= 1``).  Returns False, with
        ``.grad`` untouched, when one is not (the generic path then runs, with its own checks and messages)."""
        if not all(math.isfinite(value) for value in values):
            return False
        scale = values[1] if item.normalize == "max" and values[1] > 0 else 1.0  # all-zero E: the update is zero
        for rows in row_blocks(item.grad):  # elementwise: block by block, each block in cache
            self.write(item.grad[rows], item.magnitude[rows], scale)  # type: ignore[misc]
        return True
