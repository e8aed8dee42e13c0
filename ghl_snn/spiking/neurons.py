"""Spiking neurons behind one interface: a minimal built-in IF/LIF (here) and adapters for snntorch and norse
([`ghl_snn.spiking.adapters`][]).

Every neuron is a [`SpikingNeuron`][]: a stateful ``nn.Module`` called once per time step with the input current
``I_t`` and returning the spikes ``s_t`` (same shape).  ``reset()`` clears the state before a new presentation; the
state is created lazily with the shape of the first input, so the same neuron works for any batch size.

For the equivalence layer and for the rate surrogate used by the online learner every neuron also exposes its
*f-I curve* ``rate(I)`` -- the spike rate (spikes per step) for a constant input current ``I`` -- and its slope
``rate_slope(I)`` ([`FICurve`][]), and its NIR node (``to_nir``):

* IF (no leak, reset by subtraction): ``clamp(I / theta, 0, 1)``, exact within ``1/T``;
* leaky neurons, ``v_t = beta v_{t-1} + drive``: the membrane relaxes towards ``A = rest + scale I / (1 - beta)``
  and, from the value ``v_r`` after a spike, reaches ``theta`` after
  ``n*(I) = ln((A - theta) / (A - v_r)) / ln(beta)`` steps (``A > theta``; silent otherwise), so the rate is
  ``min(1, 1 / n*)``.  Neurons that reset *to* a value (norse, ``LIF(reset="zero")``) fire every ``ceil(n*)``
  steps exactly: their rate is ``1 / ceil(n*)`` (the smooth ``1 / n*`` gives its slope).  With reset by
  subtraction the overshoot carries over; ``1 / n*`` is then within ``(1 - beta) / 2`` of the simulated rate.
  Parameters of the libraries as they define them: snntorch ``Leaky`` (``mem = beta mem + I - theta s_{t-1}``,
  hence ``v_r = -theta (1 - beta) / beta``), ``Synaptic`` (steady synaptic current ``I / (1 - alpha)``), norse
  ``LIFBoxCell`` (``beta = 1 - dt tau_mem_inv``, ``A = v_leak + I``, reset to ``v_reset``) and ``LIFCell``
  (steady synaptic current ``I / (dt tau_syn_inv)``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


def nir_array(value: Any, shape: Sequence[int]) -> np.ndarray:
    """``value`` (a scalar or a tensor broadcastable to ``shape``) as a float32 array of exactly ``shape`` (the
    parameters of a NIR node)."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().double().numpy()
    return np.broadcast_to(np.asarray(value, dtype=np.float64), tuple(shape)).astype(np.float32).copy()


def scalar(value: Any) -> float:
    """A neuron parameter (a float or a tensor of one repeated value) as a float."""
    return float(value.detach().reshape(-1)[0]) if isinstance(value, Tensor) else float(value)


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


class _FastSigmoidSpike(torch.autograd.Function):
    """Heaviside step ``s = [v >= 0]`` with the fast-sigmoid surrogate ``ds/dv = 1 / (1 + slope |v|)^2``."""

    @staticmethod
    def forward(ctx: Any, v: Tensor, slope: float) -> Tensor:
        ctx.save_for_backward(v)
        ctx.slope = slope
        return (v >= 0).to(v.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (v,) = ctx.saved_tensors
        return grad / (1.0 + ctx.slope * v.abs()) ** 2, None


def spike_fn(v: Tensor, slope: float = 25.0) -> Tensor:
    """``[v >= 0]`` in the forward pass; fast-sigmoid surrogate gradient (for the BPTT comparison path)."""
    return _FastSigmoidSpike.apply(v, slope)


@dataclass(frozen=True)
class FICurve:
    """Closed-form spike rate of a neuron for a constant current (see the module docstring).

    ``beta``: membrane decay per step (``1``: no leak); ``threshold``; ``scale``: membrane drive per unit of input
    current per step; ``rest``: resting potential the drive is added to; ``reset_value``: membrane value right
    after a spike; ``integer_isi``: the neuron resets *to* ``reset_value`` (exact rate ``1 / ceil(n*)``) rather
    than by subtraction (smooth ``1 / n*``).
    """

    beta: float = 1.0
    threshold: float = 1.0
    scale: float = 1.0
    rest: float = 0.0
    reset_value: float = 0.0
    integer_isi: bool = False

    def smooth(self, current: Tensor) -> Tensor:
        """``min(1, 1 / n*(I))`` (``clamp(scale I / theta, 0, 1)`` without leak), differentiable in ``I``."""
        if self.beta >= 1.0:
            return torch.clamp((self.rest + self.scale * current - self.reset_value) / (self.threshold -
                               self.reset_value), 0.0, 1.0)
        asymptote = self.rest + self.scale * current / (1.0 - self.beta)
        fires = asymptote > self.threshold
        safe = torch.where(fires, asymptote, torch.full_like(asymptote, self.threshold + 1.0))
        ratio = (safe - self.threshold) / (safe - self.reset_value)
        rate = math.log(self.beta) / torch.log(torch.clamp(ratio, min=1e-30, max=1.0 - 1e-7))
        return torch.where(fires, torch.clamp(rate, 0.0, 1.0), torch.zeros_like(rate))

    def __call__(self, current: Tensor) -> Tensor:
        """The rate; for ``integer_isi`` neurons the exact ``1 / ceil(n*)`` with the smooth curve's gradient."""
        smooth = self.smooth(current)
        if not self.integer_isi:
            return smooth
        with torch.no_grad():
            steps = torch.ceil(1.0 / torch.clamp(smooth, min=1e-12) - 1e-6)
            exact = torch.where(smooth > 0, 1.0 / steps, torch.zeros_like(smooth))
        return smooth + (exact - smooth).detach()

    def slope(self, current: Tensor) -> Tensor:
        """``d rate / d I`` of the smooth curve, elementwise (no graph kept); without leak the closed form
        ``scale / (theta - v_r)`` where ``0 < rate < 1`` (strictly inside the clamp, as its autograd), else 0."""
        if self.beta >= 1.0:
            with torch.no_grad():
                span = self.threshold - self.reset_value
                level = (self.rest + self.scale * current.float() - self.reset_value) / span
                inside = (level > 0.0) & (level < 1.0)
                return (inside * (self.scale / span)).to(current.dtype)
        with torch.enable_grad():
            leaf = current.detach().float().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.smooth(leaf).sum(), leaf)
        return grad.to(current.dtype)


class SpikingNeuron(nn.Module):
    """Interface of a time-stepped neuron (see the module docstring).

    Attributes:
        threshold: firing threshold ``theta`` of the membrane.
        gain: per-step membrane drive per unit of input current (1 for snntorch/built-in neurons).
    """

    threshold: float = 1.0
    gain: float = 1.0

    @property
    def fi_curve(self) -> FICurve:
        """The neuron's f-I curve (default: the IF curve ``clamp(gain I / theta, 0, 1)``)."""
        return FICurve(threshold=self.threshold, scale=self.gain)

    def reset(self) -> None:
        """Forget the membrane state (call before every new presentation window)."""
        raise NotImplementedError

    def forward(self, current: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def rate(self, current: Tensor) -> Tensor:
        """Rate-network activation: the f-I curve [`fi_curve`][] at current ``I`` (see the module docstring)."""
        return self.fi_curve(current)

    def rate_slope(self, current: Tensor) -> Tensor:
        """Slope ``f'(I)`` of the f-I curve (the post-synaptic factor of feedback-alignment signals)."""
        return self.fi_curve.slope(current)

    def to_nir(self, shape: Sequence[int], dt: float) -> tuple[Any, bool]:
        """This neuron as a NIR node for a layer of ``shape`` with time step ``dt``, and whether NIR's reset
        represents the neuron's exactly ([`ghl_snn.export.nir`][]).  A neuron without a NIR mapping raises
        ``NotImplementedError``."""
        raise NotImplementedError(f"no NIR mapping for neuron {type(self).__name__}")


class LIF(SpikingNeuron):
    """Minimal leaky integrate-and-fire neuron with reset by subtraction.

    Per step: ``v_t = beta * v_{t-1} + I_t``;  ``s_t = [v_t >= theta]``;  ``v_t <- v_t - theta * s_t``.
    ``beta = 1`` is the non-leaky [`IF`][] neuron, whose spike count for a constant current ``I`` over ``T``
    steps starting from ``v = 0`` is ``min(T, floor(T I / theta))`` (``0`` for ``I <= 0``): its rate equals
    ``clamp(I / theta, 0, 1)`` within ``1/T``.  The spike has a fast-sigmoid surrogate gradient (``slope``) so the
    same neuron can be trained by BPTT for comparison.  ``reset="zero"`` resets to ``v = 0`` instead
    (``v_t <- v_t (1 - s_t)``), the reset of NIR's LIF/IF nodes and norse's default, so that exported graphs
    reproduce the network exactly.
    """

    def __init__(self, beta: float = 0.9, threshold: float = 1.0, slope: float = 25.0,
                 reset: str = "subtract") -> None:
        super().__init__()
        beta = float(beta)
        if not 0 < beta <= 1:
            raise ValueError(f"LIF decay beta must lie in (0, 1], got {beta!r}")
        if reset not in ("subtract", "zero"):
            raise ValueError(f"LIF reset must be 'subtract' or 'zero', got {reset!r}")
        self.beta = beta
        self.threshold = check_positive("threshold", threshold)
        self.slope = check_positive("surrogate slope", slope)
        self.reset_mode = reset
        self.v: Tensor | None = None

    @property
    def fi_curve(self) -> FICurve:
        return FICurve(beta=self.beta, threshold=self.threshold, integer_isi=self.reset_mode == "zero")

    def reset(self) -> None:
        self.v = None

    def forward(self, current: Tensor) -> Tensor:
        if self.v is None:
            v = current
        else:
            v = self.v + current if self.beta == 1.0 else self.beta * self.v + current
        if torch.is_grad_enabled():
            spikes = spike_fn(v - self.threshold, self.slope)
        else:  # no surrogate to record: [v >= theta] equals [v - theta >= 0] exactly, in fewer kernels
            spikes = torch.ge(v, self.threshold).to(v.dtype)
        if self.reset_mode == "subtract":
            self.v = torch.sub(v, spikes, alpha=self.threshold)
        else:
            self.v = v * (1.0 - spikes)
        return spikes

    def to_nir(self, shape: Sequence[int], dt: float) -> tuple[Any, bool]:
        """NIR ``IF`` (``beta = 1``) or ``LIF`` with ``tau = dt / (1 - beta)``, reset to 0 (exact for
        ``reset="zero"``; reset by subtraction is approximated)."""
        import nir

        exact = self.reset_mode == "zero"
        if self.beta == 1.0:
            return nir.IF(r=nir_array(1.0 / dt, shape), v_threshold=nir_array(self.threshold, shape),
                          v_reset=nir_array(0.0, shape)), exact
        tau = dt / (1.0 - self.beta)
        return nir.LIF(tau=nir_array(tau, shape), r=nir_array(tau / dt, shape), v_leak=nir_array(0.0, shape),
                       v_threshold=nir_array(self.threshold, shape), v_reset=nir_array(0.0, shape)), exact

    def advance_(self, current: Tensor) -> Tensor:
        """``forward`` without autograd, the membrane updated in place (no allocation for it): for a time loop
        that owns the state, such as [`SpikingNetwork.run`][ghl_snn.spiking.network.SpikingNetwork.run] after its
        first step, where nobody holds the previous step's ``v``.  Same numbers as ``forward``."""
        v = self.v
        if v is None or torch.is_grad_enabled() or v.requires_grad:
            return self(current)
        if self.beta != 1.0:
            v.mul_(self.beta)
        fired = torch.ge(v.add_(current), self.threshold)
        spikes = fired.to(v.dtype)
        if self.reset_mode == "subtract":
            v.sub_(spikes, alpha=self.threshold)
        else:
            v.masked_fill_(fired, 0.0)
        return spikes

    def extra_repr(self) -> str:
        reset = "" if self.reset_mode == "subtract" else f", reset={self.reset_mode}"
        return f"beta={self.beta:g}, threshold={self.threshold:g}{reset}"


class IF(LIF):
    """Integrate-and-fire neuron ([`LIF`][] with ``beta = 1``), reset by subtraction."""

    def __init__(self, threshold: float = 1.0, slope: float = 25.0, reset: str = "subtract") -> None:
        super().__init__(beta=1.0, threshold=threshold, slope=slope, reset=reset)

    def extra_repr(self) -> str:
        reset = "" if self.reset_mode == "subtract" else f", reset={self.reset_mode}"
        return f"threshold={self.threshold:g}{reset}"
