"""Recurrent LIF layer: a population whose own spikes of the last step feed back through a plastic synapse.

Per step, with ``z`` the population's spikes and reset by subtraction (as [`LIF`][ghl_snn.LIF])::

    v_t = beta v_{t-1} + I_t + W_rec z_{t-1}        z_t = [v_t >= theta]        v_t <- v_t - theta z_t

``W_rec`` is an ordinary ``nn.Linear`` child (``.recurrent``), called once per step on ``z_{t-1}``: the learners'
hooks see it like any feed-forward synapse (input: the population's previous spikes, output: the recurrent current),
so it is plastic like the others, and [`SpikingNetwork`][ghl_snn.SpikingNetwork] lists it among its synapses as
``"<neuron>.recurrent"``.  snntorch's ``RLeaky`` (``mem = beta mem + I + recurrent(spk)``, a ``nn.Linear`` called the
same way) goes through [`NeuronAdapter`][ghl_snn.spiking.adapters.NeuronAdapter] with the same effect.

``adaptation > 0`` makes it the adaptive LIF (ALIF) of Bellec et al. (2018, 2020): a threshold
``theta_t = theta + adaptation a_t`` with ``a_t = rho a_{t-1} + z_{t-1}``.
The f-I curve used by the rate surrogate is that of the leaky neuron at the *total* mean current (feed-forward
plus ``W_rec`` times the observed rate), without the adaptation.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .neurons import FICurve, SpikingNeuron, check_positive, spike_fn


class RecurrentLIF(SpikingNeuron):
    """Recurrent (adaptive) LIF population of ``size`` neurons (see the module docstring).

    Args:
        size: number of neurons (the recurrent weight is ``(size, size)``).
        beta: membrane decay per step in ``(0, 1]``; threshold: ``theta > 0``; slope: the fast-sigmoid surrogate's
            slope (BPTT and e-prop's pseudo-derivative).
        adaptation: threshold increase per unit of the adaptation trace (``0``: plain LIF); rho: its decay.
        self_connections: keep the diagonal of ``W_rec`` (default: zeroed at construction, as in e-prop).
    """

    def __init__(self, size: int, beta: float = 0.9, threshold: float = 1.0, slope: float = 25.0,
                 adaptation: float = 0.0, rho: float = 0.95, self_connections: bool = False) -> None:
        super().__init__()
        if int(size) <= 0:
            raise ValueError(f"RecurrentLIF size must be a positive number of neurons, got {size!r}")
        beta = float(beta)
        if not 0 < beta <= 1:
            raise ValueError(f"RecurrentLIF decay beta must lie in (0, 1], got {beta!r}")
        if adaptation < 0 or not 0 <= rho < 1:
            raise ValueError(f"adaptation must be >= 0 and rho in [0, 1), got {adaptation!r} and {rho!r}")
        self.size, self.beta = int(size), beta
        self.threshold = check_positive("threshold", threshold)
        self.slope = check_positive("surrogate slope", slope)
        self.adaptation, self.rho = float(adaptation), float(rho)
        self.recurrent = nn.Linear(self.size, self.size, bias=False)
        nn.init.normal_(self.recurrent.weight, 0.0, 1.0 / self.size ** 0.5)
        if not self_connections:
            with torch.no_grad():
                self.recurrent.weight.fill_diagonal_(0.0)
        self.v: Tensor | None = None
        self.z: Tensor | None = None
        self.a: Tensor | None = None

    @property
    def fi_curve(self) -> FICurve:
        return FICurve(beta=self.beta, threshold=self.threshold)

    def reset(self) -> None:
        self.v = self.z = self.a = None

    def forward(self, current: Tensor) -> Tensor:
        if current.shape[-1] != self.size:
            raise ValueError(f"RecurrentLIF of {self.size} neurons got a current of shape {tuple(current.shape)}")
        if self.v is None:
            self.v = torch.zeros_like(current)
            self.z = torch.zeros_like(current)
            self.a = torch.zeros_like(current)
        recurrent = self.recurrent(self.z.to(self.recurrent.weight.dtype))
        v = self.beta * self.v + current + recurrent
        threshold = self.threshold + self.adaptation * self.a if self.adaptation else self.threshold
        z = spike_fn(v - threshold, self.slope)
        self.v = v - threshold * z
        if self.adaptation:
            self.a = self.rho * self.a + z
        self.z = z
        return z

    def extra_repr(self) -> str:
        adaptive = f", adaptation={self.adaptation:g}, rho={self.rho:g}" if self.adaptation else ""
        return f"size={self.size}, beta={self.beta:g}, threshold={self.threshold:g}{adaptive}"
