"""A time-stepped feed-forward spiking network built from ordinary torch modules.

``SpikingNetwork(nn.Linear(784, 256), IF(), nn.Linear(256, 10))`` is an ``nn.Sequential`` whose ``forward`` is
**one time step**: synapses (``nn.Linear`` / ``nn.Conv2d``) turn input spikes into currents, neurons (built-in
IF/LIF, or snntorch / norse neurons wrapped automatically by [`as_neuron`][ghl_snn.as_neuron]) turn
currents into spikes, and stateless modules (``nn.Flatten``, pooling) pass through.  A final synapse without a
neuron after it is a non-spiking read-out; ``run`` returns the time average of the last module's output
(the mean read-out current, or the output spike rate when the network ends with a neuron).

With ``record=True`` (default) ``run`` keeps, per module, the running sum of its output (memory
``O(#neurons)``, independent of ``T``); ``rate_surrogate`` turns these observed means into a differentiable
rate network for the end-of-window global signal (see its docstring).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoders import ConstantCurrent, check_num_steps
from .compiled import CompiledStep
from .adapters import as_neuron, is_neuron_module
from .neurons import LIF, SpikingNeuron
from .synapses import EVENT_MIN_OUTPUTS, EventLinear, has_hooks

SYNAPSE_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv2d)


def recurrent_synapses(name: str, neuron: nn.Module) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` synapses inside neuron child ``name``: its recurrent weights and, for a cell that holds its
    input weights too (norse ``LIFRecurrentCell``), the feed-forward view named ``"<name>.input"`` (none for a
    feed-forward neuron)."""
    if not isinstance(neuron, SpikingNeuron):
        return {}
    return {f"{name}.{inner}": m for inner, m in neuron.named_modules() if inner and isinstance(m, nn.Linear)}


class SpikingNetwork(nn.Sequential):
    """Sequential spiking network; ``forward(x_t)`` is one time step (see the module docstring)."""

    def __init__(self, *modules: nn.Module) -> None:
        if not modules:
            raise ValueError("SpikingNetwork needs at least one module")
        wrapped = [m if isinstance(m, SYNAPSE_TYPES) or not is_neuron_module(m) else as_neuron(m) for m in modules]
        if not any(isinstance(m, SYNAPSE_TYPES) for m in wrapped):
            raise ValueError("SpikingNetwork needs at least one nn.Linear or nn.Conv2d synapse")
        super().__init__(*wrapped)
        self._sum_input: Tensor | None = None
        self._sum_outputs: dict[str, Tensor] = {}
        self.steps = 0
        #: ``True``: on a CPU, Linear synapses fed with binary spikes gather their current from the active inputs
        #: ([`ghl_snn.spiking.synapses`][]); off by default: ``benchmarks/spiking_memory.py`` measured no gain
        #: over the dense product for a 784-256-10 network at MNIST's input density on a 2-core CPU
        self.event_driven = False
        #: an int ``L``: windows without autograd run **layer-wise multi-step** over chunks of ``L`` steps (one
        #: synapse product for the ``L`` steps of a chunk, an elementwise scan for each neuron, memory bounded by
        #: ``L``, see [`run`][ghl_snn.spiking.network.SpikingNetwork.run]); ``None`` (default): step by step;
        #: ``benchmarks/spiking_memory.py`` measures both
        self.multi_step: int | None = None
        self._compiled: CompiledStep | None = None

    @property
    def mean_input(self) -> Tensor | None:
        """Time average of the encoded input over the recorded window (``None`` before [`run`][])."""
        return None if self._sum_input is None else self._sum_input / self.steps

    @property
    def mean_outputs(self) -> dict[str, Tensor]:
        """Time average of every child's output over the recorded window, keyed by child name."""
        return {name: value / self.steps for name, value in self._sum_outputs.items()}

    def neurons(self) -> dict[str, SpikingNeuron]:
        return {name: m for name, m in self.named_children() if isinstance(m, SpikingNeuron)}

    def synapses(self) -> dict[str, nn.Module]:
        """Every synapse in order: the top-level Linear / Conv2d children and, inside a recurrent neuron (built-in
        [`RecurrentLIF`][ghl_snn.RecurrentLIF], snntorch ``RLeaky``), its recurrent ``nn.Linear`` (named
        ``"<neuron>.recurrent"``, ``"<neuron>.module.recurrent"``)."""
        found: dict[str, nn.Module] = {}
        for name, module in self.named_children():
            if isinstance(module, SYNAPSE_TYPES):
                found[name] = module
            elif isinstance(module, SpikingNeuron):
                found.update(recurrent_synapses(name, module))
        return found

    def neuron_current(self, name: str) -> Tensor:
        """Mean total input current of the neuron that synapse ``name`` drives, over the recorded window: the
        feed-forward synapse's mean output plus, for a recurrent neuron, ``W_rec`` times its observed rate."""
        names = [n for n, _ in self.named_children()]
        neuron_name = name.split(".")[0] if "." in name else names[names.index(name) + 1]
        index = names.index(neuron_name)
        current = self._sum_outputs[names[index - 1]] / self.steps if index else self.mean_input
        for synapse_name, synapse in recurrent_synapses(neuron_name, self[index]).items():
            if synapse_name == f"{neuron_name}.input":  # the cell's own input weights: it receives spikes
                current = synapse(current.to(synapse.weight.dtype)).float()
            else:
                rate = self._sum_outputs[neuron_name] / self.steps
                current = current + synapse(rate.to(synapse.weight.dtype)).float()
        return current

    def neuron_after(self, name: str) -> SpikingNeuron | None:
        """The neuron directly following child ``name`` (``None`` if the next module is not a neuron); for a
        recurrent synapse the neuron it belongs to."""
        names = [n for n, _ in self.named_children()]
        if "." in name:
            return self[names.index(name.split(".")[0])]
        index = names.index(name)
        if index + 1 < len(names):
            module = self[index + 1]
            if isinstance(module, SpikingNeuron):
                return module
        return None

    def synapse_means(self, name: str) -> tuple[Tensor, Tensor]:
        """Time averages of synapse ``name``'s input and of its output without the bias (``W x_bar``) over the
        recorded window: the running-mean traces of the online learner, read from the sums [`run`][] keeps."""
        if self._sum_input is None or name not in self._sum_outputs:
            raise RuntimeError(f"no recorded window for {name!r}: call run(..., record=True) first")
        names = list(self._modules)
        index = names.index(name)
        x_sum = self._sum_input if index == 0 else self._sum_outputs[names[index - 1]]
        y_bar = self._sum_outputs[name] / self.steps
        synapse = self[index]
        if synapse.bias is not None:
            bias = synapse.bias.detach().float()
            y_bar.sub_(bias.view(-1, *([1] * (y_bar.dim() - 2))) if isinstance(synapse, nn.Conv2d) else bias)
        return x_sum / self.steps, y_bar

    def reset(self) -> None:
        """Reset every neuron's state and the recorded means (start of a presentation window)."""
        for neuron in self.neurons().values():
            neuron.reset()
        self._sum_input, self._sum_outputs, self.steps = None, {}, 0

    def run(self, x: Tensor, num_steps: int, encoder: Callable[[Tensor], Tensor] | None = None,
            record: bool = True, reset: bool = True) -> Tensor:
        """Present ``x`` for ``num_steps`` steps (``encoder(x)`` each step, default constant current) and return
        the time-averaged output of the last module.  Gradients flow through time only if autograd is enabled
        by the caller (surrogate BPTT); the recorded means are always detached.

        ``encoder.check(x)`` (when the encoder has one) runs once, before the first step; the steps read nothing
        back to the host.  Without autograd the steps after the first call no module (the synapses' product and
        the built-in neurons' in-place update directly, where no hook expects the call), the running sums and
        membrane potentials are updated in place (no per-step allocation), and a read-out synapse whose window sum
        is formed at the end is not computed per step at all.

        With ``multi_step = L`` (and no autograd, no forward hooks) the window runs layer by layer over chunks of
        ``L`` steps: the encoder's ``L`` inputs are stacked ``(L, N, ...)``, each synapse and stateless module
        computes the whole chunk as one batch of ``L * N``, each neuron scans the ``L`` steps; the spikes are those
        of the step-by-step loop (equal up to the rounding of the products' sums) and memory grows with ``L``, not
        with ``T``."""
        num_steps = check_num_steps(num_steps)
        self.check_input(x)
        encoder = encoder if encoder is not None else ConstantCurrent()
        check = getattr(encoder, "check", None)
        if callable(check):
            check(x)
        if reset:
            self.reset()
        children = list(self._modules.items())
        graph = torch.is_grad_enabled()
        # a synapse is a linear map: the sum of its outputs over the window is the map of its summed input, formed
        # once at the end instead of an addition per step (the bias counted once per step)
        summed_at_end = [record and not graph and _sum_commutes(module) for _, module in children]
        calls = [self._step_call(index, module, encoder, x, graph) for index, (_, module) in enumerate(children)]
        sums: list[Tensor | None] = [self._sum_input] + [self._sum_outputs.get(name) for name, _ in children]
        readout_from_sums = record and not graph and self.steps == 0
        live = len(calls)  # the children computed at each step: not a tail whose window sum is formed at the end
        while readout_from_sums and live > 1 and summed_at_end[live - 1] and not has_hooks(children[live - 1][1]):
            live -= 1
        steady = [_steady_call(module, call) for (_, module), call in zip(children[:live], calls)]
        total: Tensor | None = None
        # the compiled step calls no module, so it runs only where no hook expects to see the steps
        compiled = self._compiled if not graph and not any(has_hooks(m) for _, m in children) else None
        recorded = tuple(record and (index == 0 or not summed_at_end[index - 1]) for index in range(len(sums)))
        state: tuple[list[Tensor], list[Tensor]] | None = None  # potentials and recorded sums of the compiled step
        started = False  # after the first step, the neurons' states exist and the sums are allocated
        steady_sums: list[tuple[Callable[[Tensor], Tensor], Tensor | None]] = []  # (call, running sum or None)
        chunk = self.multi_step if not graph and not any(has_hooks(m) for _, m in children) else None
        if chunk is not None:
            h, total = self._run_chunks(x, num_steps, encoder, chunk, [m for _, m in children[:live]], sums,
                                        recorded, readout_from_sums)
        for _ in range(num_steps if chunk is None else 0):
            h = encoder(x)
            if state is not None:
                h, *state = compiled(h, state[0], state[1], recorded)
            elif not graph and started:  # the common step: in-place sums of detached outputs
                if recorded[0]:
                    sums[0].add_(h)
                for call, running_sum in steady_sums:
                    h = call(h)
                    if running_sum is not None:
                        running_sum.add_(h)
            else:
                if record:
                    sums[0] = _accumulate(sums[0], h)
                for index, call in enumerate(calls[:live], start=1):
                    h = call(h)
                    if record and not summed_at_end[index - 1]:
                        sums[index] = _accumulate(sums[index], h)
                started = True
                steady_sums = [(call, running_sum if kept else None)
                               for call, kept, running_sum in zip(steady, recorded[1:], sums[1:])]
                if compiled is not None:  # the eager first step created the states the compiled steps carry on
                    state = ([m.v for m in self.children() if isinstance(m, LIF)],
                             [value for value, kept in zip(sums, recorded) if kept])
            if readout_from_sums:
                continue
            if total is None:
                total = h if graph else h.clone()
            elif graph:
                total = total + h
            else:
                total.add_(h)
        if state is not None:  # copies: a CUDA graph's outputs are overwritten by its next replay
            for neuron, potential in zip([m for m in self.children() if isinstance(m, LIF)], state[0]):
                neuron.v = potential.clone()
            carried = iter(state[1])
            sums = [next(carried).clone() if kept else value for value, kept in zip(sums, recorded)]
        if record:
            for index, (_, module) in enumerate(children, start=1):
                if summed_at_end[index - 1]:
                    sums[index] = _summed_output(module, sums[index - 1], self.steps + num_steps)
            self._sum_input = sums[0]
            self._sum_outputs = {name: value for (name, _), value in zip(children, sums[1:])}
            self.steps += num_steps
        if readout_from_sums:
            if live < len(children):  # the dtype the skipped read-out would have given
                return (sums[-1] / num_steps).to(torch.promote_types(h.dtype, children[-1][1].weight.dtype))
            return (sums[-1] / num_steps).to(h.dtype)
        return total.div_(num_steps) if not graph else total / num_steps

    def _run_chunks(self, x: Tensor, num_steps: int, encoder: Callable[[Tensor], Tensor], chunk: int,
                    modules: list[nn.Module], sums: list[Tensor | None], recorded: tuple[bool, ...],
                    readout_from_sums: bool) -> tuple[Tensor, Tensor | None]:
        """The layer-wise multi-step window of [`run`][] (``multi_step``): adds each chunk's sums into ``sums``
        (in place) and returns the last chunk's output and, unless the read-out comes from the sums, the summed
        read-out."""
        if isinstance(chunk, bool) or int(chunk) != chunk or chunk < 1:
            raise ValueError(f"multi_step must be a chunk of >= 1 steps or None, got {chunk!r}")
        total: Tensor | None = None
        h = x
        for start in range(0, num_steps, int(chunk)):
            length = min(int(chunk), num_steps - start)
            h = torch.stack([encoder(x) for _ in range(length)])
            if recorded[0]:
                sums[0] = _add_chunk(sums[0], h)
            for index, module in enumerate(modules, start=1):
                if isinstance(module, SpikingNeuron):
                    h = _scan(module, h, in_place=start > 0)
                else:  # a synapse or a stateless module: the chunk's steps are one batch
                    h = module(h.flatten(0, 1)).unflatten(0, (length, -1))
                if recorded[index]:
                    sums[index] = _add_chunk(sums[index], h)
            if not readout_from_sums:
                total = h.sum(0) if total is None else total.add_(h.sum(0))
        return h[-1], total

    def _step_call(self, index: int, module: nn.Module, encoder: Callable[[Tensor], Tensor], x: Tensor,
                   graph: bool) -> Callable[[Tensor], Tensor]:
        """What computes child ``index`` at each step: the module itself or, for a plain Linear synapse without
        hooks fed with binary spikes (a binary encoder or a neuron before it) on a CPU without autograd, its
        event-driven current ([`EventLinear`][ghl_snn.spiking.synapses.EventLinear])."""
        binary_input = (getattr(encoder, "binary", False) if index == 0
                        else isinstance(self[index - 1], SpikingNeuron))
        if (self.event_driven and binary_input and not graph and type(module) is nn.Linear
                and module.out_features >= EVENT_MIN_OUTPUTS and x.device.type == "cpu" and not has_hooks(module)):
            return EventLinear(module)
        return module

    def compile_step(self, mode: str | None = None, enable: bool = True, **options: Any) -> None:
        """Run the time steps after the first as one compiled function
        ([`CompiledStep`][ghl_snn.spiking.compiled.CompiledStep], ``torch.compile(mode=mode)``;
        ``mode="reduce-overhead"`` replays each step as a CUDA graph on a GPU) when no autograd graph is recorded;
        ``enable=False`` returns to the eager steps.  Needs built-in LIF/IF neurons."""
        self._compiled = CompiledStep(self, mode, **options) if enable else None

    def check_input(self, x: Tensor) -> None:
        """Raise ``ValueError`` when ``x`` cannot feed the first module (if that module is a synapse)."""
        first = self[0]
        if isinstance(first, nn.Conv2d) and (x.dim() != 4 or x.shape[1] != first.in_channels):
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit the first Conv2d: expected "
                             f"(N, {first.in_channels}, H, W)")
        if isinstance(first, nn.Linear) and (x.dim() < 2 or x.shape[-1] != first.in_features):
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit the first Linear: expected "
                             f"(N, {first.in_features})")

    def rate_surrogate(self) -> tuple[Tensor, dict[str, Tensor]]:
        """Differentiable rate network evaluated at the observed window means (after [`run`][]).

        Values are the observed means -- mean input, mean currents ``W x_bar + b`` of every synapse, mean spike rates of
        every neuron -- and gradients are those of the rate network: a neuron contributes the slope of its f-I curve
        ([`SpikingNeuron.rate`][ghl_snn.spiking.neurons.SpikingNeuron.rate]) at its mean current (straight-through),
        synapses are applied to the observed mean input rates.  One backward pass through it gives
        ``dL/dW = delta^T x_bar`` and ``delta = dL/dy`` per synapse without backprop through time.  Returns
        ``(read-out, {synapse: y})``.
        """
        if self._sum_input is None or not self._sum_outputs:
            raise RuntimeError("rate_surrogate() needs a recorded window: call run(..., record=True) first")
        h = self.mean_input
        means = self.mean_outputs
        currents: dict[str, Tensor] = {}
        for name, module in self.named_children():
            observed = means[name]
            if isinstance(module, SYNAPSE_TYPES):
                h = module(h.to(module.weight.dtype))
                currents[name] = h
            else:
                inner = recurrent_synapses(name, module)
                if f"{name}.input" in inner:  # a cell with its own input weights receives spikes, not a current
                    h = currents[f"{name}.input"] = inner.pop(f"{name}.input")(h.to(module.input.weight.dtype))
                for synapse_name, recurrent in inner.items():
                    currents[synapse_name] = recurrent(observed.to(recurrent.weight.dtype))
                    h = h + currents[synapse_name]
                rate = module.rate(h) if isinstance(module, SpikingNeuron) else module(h)
                h = observed + (rate - rate.detach())
        return h, currents


def _steady_call(module: nn.Module, call: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """What computes ``module`` at each step after the first of a window without autograd: ``call`` itself for a
    module with hooks (or a replacement such as [`EventLinear`][ghl_snn.spiking.synapses.EventLinear]), else the
    computation without ``nn.Module.__call__``: ``F.linear`` on the weights of a plain Linear, the in-place
    [`LIF.advance_`][ghl_snn.spiking.neurons.LIF.advance_] of a built-in neuron, ``forward`` otherwise."""
    if call is not module or has_hooks(module):
        return call
    if type(module) is nn.Linear:
        return partial(F.linear, weight=module.weight, bias=module.bias)
    if isinstance(module, LIF) and type(module).forward is LIF.forward:
        return module.advance_
    return module.forward


def _scan(neuron: nn.Module, currents: Tensor, in_place: bool) -> Tensor:
    """The spikes of ``neuron`` for the steps ``currents (L, N, ...)`` one after the other (its state carried on);
    ``in_place``: a built-in LIF/IF updates its membrane in place (after the first chunk of a window)."""
    in_place = in_place and isinstance(neuron, LIF) and type(neuron).forward is LIF.forward
    spikes = [neuron.advance_(current) if in_place else neuron(current) for current in currents]
    return torch.stack(spikes)


def _add_chunk(running_sum: Tensor | None, values: Tensor) -> Tensor:
    """``running_sum + sum_t values[t]`` (float32, in place after the first chunk)."""
    total = values.detach().sum(0, dtype=torch.float32)
    return total if running_sum is None else running_sum.add_(total)


def _accumulate(running_sum: Tensor | None, value: Tensor) -> Tensor:
    """``running_sum + value`` in float32, in place (the first step copies ``value``); never tracks gradients."""
    value = value.detach()
    if running_sum is None:
        return value.to(torch.float32, copy=True)
    return running_sum.add_(value)


def _sum_commutes(module: nn.Module) -> bool:
    """Whether ``sum_t module(h_t)`` can be formed as ``module(sum_t h_t)`` (plus the bias per step)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.padding_mode == "zeros")


def _summed_output(synapse: nn.Module, input_sum: Tensor, steps: int) -> Tensor:
    """``sum_t (W h_t + b) = W (sum_t h_t) + T b`` of a Linear / zero-padded Conv2d synapse over ``T = steps``."""
    weight = synapse.weight.detach().float()
    if isinstance(synapse, nn.Linear):
        total = F.linear(input_sum, weight)
    else:
        total = F.conv2d(input_sum, weight, None, synapse.stride, synapse.padding, synapse.dilation, synapse.groups)
    if synapse.bias is not None:
        bias = synapse.bias.detach().float()
        total.add_(bias.view(-1, 1, 1) if isinstance(synapse, nn.Conv2d) else bias, alpha=steps)
    return total
