"""Spiking neurons behind one interface: a minimal built-in IF/LIF and adapters for snntorch and norse.

Every neuron is a [`SpikingNeuron`][]: a stateful ``nn.Module`` called once per time step with the input current
``I_t`` and returning the spikes ``s_t`` (same shape).  ``reset()`` clears the state before a new presentation; the
state is created lazily with the shape of the first input, so the same neuron works for any batch size.

For the equivalence layer and for the rate surrogate used by the online learner every neuron also exposes its
*f-I curve* ``rate(I)`` -- the spike rate (spikes per step) for a constant input current ``I`` -- and its slope
``rate_slope(I)`` ([`FICurve`][]):

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

from typing import Any

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


def _check_positive(name: str, value: float) -> float:
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
        self.threshold = _check_positive("threshold", threshold)
        self.slope = _check_positive("surrogate slope", slope)
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


def _scalar(value: Any) -> float:
    return float(value.detach().reshape(-1)[0]) if isinstance(value, Tensor) else float(value)


class NeuronAdapter(SpikingNeuron):
    """Wrap an unchanged ``snntorch.Leaky``, ``snntorch.RLeaky``, ``snntorch.Synaptic``, ``norse.torch.LIFCell``,
    ``LIFBoxCell`` or ``LIFRecurrentCell``.

    The libraries keep state differently -- snntorch returns ``(spk, mem)`` / ``(spk, syn, mem)`` and takes the
    state tensors back as arguments, norse returns ``(z, state)`` with a state tuple -- the adapter holds that state
    between steps and exposes the [`SpikingNeuron`][] interface.  ``gain`` (the rate surrogate's current scale):

    * snntorch ``Leaky``: 1 (reset by subtraction, ``mem = beta mem + I``); ``RLeaky`` likewise, plus its
      recurrent ``nn.Linear`` on the previous spikes (a plastic synapse ``"<neuron>.module.recurrent"``);
    * snntorch ``Synaptic``: ``1 / (1 - alpha)`` (steady synaptic current ``I / (1 - alpha)``);
    * norse ``LIFBoxCell``: ``dt * tau_mem_inv`` (``v += dt tau_mem_inv (v_leak - v + I)``);
    * norse ``LIFCell``: ``tau_mem_inv / tau_syn_inv`` (steady current ``I / (dt tau_syn_inv)``); ``LIFRecurrentCell``
      likewise, its input and recurrent weights called through two ``nn.Linear`` views sharing its parameters
      (``.input``, ``.recurrent``: plastic synapses ``"<neuron>.input"``, ``"<neuron>.recurrent"``); its input is
      the presynaptic spikes, not a current.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.kind = self._kind(module)
        self.state: Any = None
        if self.kind in ("snntorch.Leaky", "snntorch.Synaptic", "snntorch.RLeaky"):
            if getattr(module, "init_hidden", False):
                raise ValueError(f"{self.kind} with init_hidden=True keeps hidden state itself; construct it with "
                                 "init_hidden=False (the default) to use it through NeuronAdapter")
            self.threshold = _scalar(module.threshold)
            self.gain = 1.0 / (1.0 - _scalar(module.alpha)) if self.kind == "snntorch.Synaptic" else 1.0
            beta = _scalar(module.beta)
            self._fi = FICurve(beta=beta, threshold=self.threshold, scale=self.gain,
                               reset_value=-self.threshold * (1.0 - beta) / beta if beta < 1 else 0.0)
        else:
            params = module.p
            self.threshold = _scalar(params.v_th)
            dt = float(getattr(module, "dt", 1e-3))
            if self.kind == "norse.LIFBoxCell":
                self.gain = dt * _scalar(params.tau_mem_inv)
                scale = 1.0
            else:
                self.gain = _scalar(params.tau_mem_inv) / _scalar(params.tau_syn_inv)
                scale = 1.0 / (dt * _scalar(params.tau_syn_inv))
            beta = 1.0 - dt * _scalar(params.tau_mem_inv)
            if not 0 < beta <= 1:
                raise ValueError(f"{self.kind}: dt * tau_mem_inv = {1 - beta:g} must lie in [0, 1) for a stable "
                                 "membrane")
            # v <- beta v + (1 - beta)(v_leak + scale I): drive (1 - beta) scale I per unit current
            self._fi = FICurve(beta=beta, threshold=self.threshold, scale=(1.0 - beta) * scale,
                               rest=_scalar(params.v_leak), reset_value=_scalar(params.v_reset), integer_isi=True)
            if self.kind == "norse.LIFRecurrentCell":  # its weights, called through nn.Linear views (hooks see them)
                hidden, inputs = module.input_weights.shape
                self.input, self.recurrent = nn.Linear(inputs, hidden, bias=False), nn.Linear(hidden, hidden, bias=False)
                self.input.weight, self.recurrent.weight = module.input_weights, module.recurrent_weights
        _check_positive("threshold", self.threshold)

    @staticmethod
    def _kind(module: nn.Module) -> str:
        try:
            import snntorch
            if isinstance(module, snntorch.Synaptic):
                return "snntorch.Synaptic"
            if isinstance(module, snntorch.RLeaky):
                return "snntorch.RLeaky"
            if isinstance(module, snntorch.Leaky):
                return "snntorch.Leaky"
        except ImportError:  # pragma: no cover - optional dependency
            pass
        try:
            from norse.torch import LIFBoxCell, LIFCell, LIFRecurrentCell
            if isinstance(module, LIFRecurrentCell):
                return "norse.LIFRecurrentCell"
            if isinstance(module, LIFBoxCell):
                return "norse.LIFBoxCell"
            if isinstance(module, LIFCell):
                return "norse.LIFCell"
        except ImportError:  # pragma: no cover - optional dependency
            pass
        raise TypeError(f"no neuron adapter for {type(module).__name__}: supported are snntorch.Leaky, RLeaky, "
                        "snntorch.Synaptic, norse.torch.LIFCell, LIFBoxCell, LIFRecurrentCell and ghl_snn IF/LIF")

    @property
    def fi_curve(self) -> FICurve:
        return self._fi

    def reset(self) -> None:
        self.state = None

    def forward(self, current: Tensor) -> Tensor:
        if self.kind == "snntorch.Leaky":
            mem = torch.zeros_like(current) if self.state is None else self.state
            spikes, mem = self.module(current, mem)
            self.state = mem
        elif self.kind == "snntorch.RLeaky":  # its recurrent nn.Linear is called on the previous spikes
            spike, mem = (None, None) if self.state is None else self.state
            if spike is None:
                spike, mem = torch.zeros_like(current), torch.zeros_like(current)
            spikes, mem = self.module(current, spike, mem)
            self.state = (spikes, mem)
        elif self.kind == "snntorch.Synaptic":
            syn, mem = (torch.zeros_like(current),) * 2 if self.state is None else self.state
            spikes, syn, mem = self.module(current, syn, mem)
            self.state = (syn, mem)
        elif self.kind == "norse.LIFRecurrentCell":  # norse's lif_step with the currents of the two views
            from norse.torch.functional.lif import LIFFeedForwardState, lif_feed_forward_step
            if self.state is None:
                size = (*current.shape[:-1], self.recurrent.in_features)
                self.state = (current.new_zeros(size), LIFFeedForwardState(
                    v=torch.full(size, _scalar(self.module.p.v_leak), dtype=current.dtype, device=current.device),
                    i=current.new_zeros(size)))
            previous, state = self.state
            drive = self.input(current) + self.recurrent(previous)
            spikes, state = lif_feed_forward_step(drive, state, self.module.p, self.module.dt)
            self.state = (spikes, state)
        else:
            spikes, self.state = self.module(current, self.state)
        return spikes

    def extra_repr(self) -> str:
        return f"kind={self.kind}, threshold={self.threshold:g}, gain={self.gain:g}"


def as_neuron(module: nn.Module) -> SpikingNeuron:
    """Return ``module`` if it is already a [`SpikingNeuron`][], else wrap it in a [`NeuronAdapter`][]."""
    if isinstance(module, SpikingNeuron):
        return module
    return NeuronAdapter(module)


def is_neuron_module(module: nn.Module) -> bool:
    """True for a [`SpikingNeuron`][] or a module [`NeuronAdapter`][] can wrap."""
    if isinstance(module, SpikingNeuron):
        return True
    try:
        NeuronAdapter._kind(module)
    except TypeError:
        return False
    return True
