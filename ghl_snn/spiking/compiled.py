"""A spiking network's time step as one compiled function (``torch.compile``; CUDA graphs on a GPU).

Eagerly, every time step of [`SpikingNetwork.run`][ghl_snn.spiking.network.SpikingNetwork.run] launches each
module's kernels one by one from Python; on a GPU with small layers that launch overhead, not the arithmetic, sets
the step time.  [`CompiledStep`][] writes the step of a network made of ``nn.Linear`` / ``nn.Conv2d`` synapses,
built-in [`LIF`][ghl_snn.spiking.neurons.LIF] / [`IF`][ghl_snn.spiking.neurons.IF] neurons and stateless modules
(``nn.Flatten``, pooling) as one pure function of the step's input, the membrane potentials and the running sums::

    (h_t, v_{t-1}, sums_{t-1})  ->  (output_t, v_t, sums_t)

and compiles it once per network: the neurons' elementwise updates fuse into few kernels, and with
``mode="reduce-overhead"`` on CUDA the whole step is replayed as a CUDA graph (one launch per step).  The
encoder stays outside (its random stream is that of the eager run), so the compiled window computes the same
spikes as the eager one.  Enable it with ``network.compile_step()``; ``benchmarks/gpu_check.py`` measures the
time per step of both.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .neurons import LIF

#: modules with no state that the compiled step calls as they are
STATELESS: tuple[type[nn.Module], ...] = (nn.Flatten, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.Dropout)


def compilable(network: nn.Module) -> bool:
    """Whether every child of ``network`` is a synapse, a built-in LIF/IF neuron or a stateless module."""
    return all(isinstance(m, (nn.Linear, nn.Conv2d, LIF, *STATELESS)) for m in network.children())


class CompiledStep:
    """The per-step function of ``network`` (see the module docstring), compiled with ``torch.compile(mode=...)``.

    ``recorded[i]`` says whether the output of child ``i`` (``-1``: the input) is summed every step;
    [`SpikingNetwork.run`][ghl_snn.spiking.network.SpikingNetwork.run] calls ``__call__`` once per step."""

    def __init__(self, network: nn.Module, mode: str | None = None, **options: Any) -> None:
        if not compilable(network):
            kinds = sorted({type(m).__name__ for m in network.children()
                            if not isinstance(m, (nn.Linear, nn.Conv2d, LIF, *STATELESS))})
            raise TypeError(f"compiled steps support Linear/Conv2d synapses, built-in LIF/IF neurons and "
                            f"stateless modules, not {kinds}")
        self.modules = list(network.children())
        self.mode = mode
        self.function = torch.compile(self.step, mode=mode, dynamic=False, **options)

    def step(self, h: Tensor, potentials: list[Tensor], sums: list[Tensor],
             recorded: tuple[bool, ...]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """One time step; ``potentials``: one membrane tensor per neuron (zeros before the first step),
        ``sums``: the running sum of the input and of every child with ``recorded`` set, in order."""
        new_potentials: list[Tensor] = []
        new_sums: list[Tensor] = []
        if recorded[0]:
            new_sums.append(sums[0] + h)
        for index, module in enumerate(self.modules, start=1):
            if isinstance(module, LIF):
                v = potentials[len(new_potentials)]
                v = v + h if module.beta == 1.0 else module.beta * v + h
                h = (v >= module.threshold).to(v.dtype)
                new_potentials.append(v - module.threshold * h if module.reset_mode == "subtract" else v * (1.0 - h))
            elif isinstance(module, nn.Linear):
                h = F.linear(h, module.weight, module.bias)
            else:
                h = module(h)
            if recorded[index]:
                new_sums.append(sums[len(new_sums)] + h)
        return h, new_potentials, new_sums

    def __call__(self, h: Tensor, potentials: list[Tensor], sums: list[Tensor],
                 recorded: tuple[bool, ...]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        return self.function(h, potentials, sums, recorded)
