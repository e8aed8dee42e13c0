"""What [`ThreeFactor`][ghl_snn.ThreeFactor] records during a presentation window: per plastic synapse
(``nn.Linear`` / ``nn.Conv2d``) two **neuron traces**, one value per sample and neuron (``O(N (in + out))`` work and
memory per step, no weight-sized product):

* the pre-synaptic trace ``x_bar_t`` of its input spikes and
* the matching post-synaptic current ``y_bar_t = W x_bar_t`` (without bias), obtained by filtering the current
  ``W s_t`` the forward pass computes anyway -- no extra matmul.

``pre_trace="mean"`` makes them running means, ``x_bar_t = x_bar_{t-1} + (s_t - x_bar_{t-1}) / t`` (they converge
to the input rates; used by the equivalence layer); a float ``alpha`` in ``[0, 1)`` is the exponential low-pass
``x_bar_t = alpha x_bar_{t-1} + (1 - alpha) s_t`` from zero (``alpha = 0``: raw spikes)
([`update_trace`][ghl_snn.spiking.traces.update_trace]).  Running means with ``eligibility="window"`` are read at the
end of the window from the sums the [`SpikingNetwork`][ghl_snn.SpikingNetwork] records anyway (``x_bar_T`` its mean
input, ``y_bar_T = W x_bar_T``), so the window costs no per-step work beyond those sums
([`SpikingNetwork.synapse_means`][ghl_snn.spiking.network.SpikingNetwork.synapse_means]).

``eligibility="step"`` instead evaluates the rule at every step on the current traces and accumulates a decaying
**eligibility trace** ``E_t = lambda E_{t-1} + e_t`` (``lambda = trace_decay``), so that a third factor arriving ``k``
steps after the activity still credits it with weight ``lambda^k`` (as in reward-modulated STDP with eligibility
traces); this costs one weight-sized product per step.

A **timing rule** (``rule.timing``, the STDP family of [`ghl_snn.rules.timing`][]) is fed the spikes into each plastic
synapse and the spikes of the neuron it drives at every step and keeps its own ``E`` (see
[`ghl_snn.spiking.spike_timing`][]).

On a model as its author wrote it (not a [`SpikingNetwork`][ghl_snn.SpikingNetwork]) the hooks record at every call
while the module is in training mode, across the user's own time loop.

The window also queues the checks of its input (finite, in the encoder's range) for the learner's one host read per
window.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..guards import DeferredChecks, UpdateGuard
from ..rules.base import EligibilityRule, bias_free
from .spike_timing import SpikeTiming
from .traces import PreTrace, SynapseTrace, update_trace


class WindowRecorder:
    """The per-synapse traces of one window (see the module docstring), kept by forward hooks on the plastic
    layers, or read from the [`SpikingNetwork`][ghl_snn.SpikingNetwork]'s record where that is enough.

    Args:
        network: the [`SpikingNetwork`][ghl_snn.SpikingNetwork] or the user's own spiking model.
        layers, rules: the learner's plastic layers and their eligibility rules.
        attached: ``network`` is a model as written (hooks record whenever a layer runs in training mode).
        pre_trace, eligibility_mode, trace_decay: as in [`ThreeFactor`][ghl_snn.ThreeFactor].
        timing: the layers' rules are timing rules (spikes of every step, ``E`` kept by the rule).
    """

    def __init__(self, network: nn.Module, layers: dict[str, nn.Module], rules: dict[str, EligibilityRule],
                 attached: bool, pre_trace: PreTrace, eligibility_mode: str, trace_decay: float,
                 timing: bool) -> None:
        self.layers, self.rules, self.attached = layers, rules, attached
        self.pre_trace, self.eligibility_mode, self.trace_decay = pre_trace, eligibility_mode, trace_decay
        self.traces: dict[str, SynapseTrace] = {name: SynapseTrace() for name in layers}
        self.recording = False  # set by ThreeFactor.run() around the network's time loop
        # run()'s input checks, read back by step() together with its own (one host read per window)
        self.input_checks = DeferredChecks()
        self.bad_input = False  # the input checks were read and failed under nonfinite="skip": step() writes nothing
        # running-mean traces with E once per window are the network's recorded means: no per-step hook needed
        # (a timing rule, and a synapse inside a module such as a recurrent layer, are seen through the hooks)
        self.from_record = (not attached and pre_trace == "mean" and eligibility_mode == "window" and not timing
                            and set(layers) <= {name for name, _ in network.named_children()})
        self._handles: list[RemovableHandle] = [] if self.from_record else [
            module.register_forward_hook(self._make_hook(name)) for name, module in layers.items()]
        self.timing: SpikeTiming | None = None
        if timing:  # spikes of every step, E kept by the rule (see spike_timing)
            self.timing = SpikeTiming(network, layers, rules,  # type: ignore[arg-type]
                                      lambda module: self.recording or (self.attached and module.training))

    def _make_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if not (self.recording or (self.attached and module.training)):
                return
            with torch.no_grad():
                spikes, current = args[0].detach().float(), bias_free(module, output.detach().float())
                state = self.traces[name]
                update_trace(state, spikes, current, self.pre_trace)
                if self.timing is not None:
                    self.timing.record_pre(name, spikes)
                elif self.eligibility_mode == "step":
                    step = self.rules[name](module, state.x_bar, state.y_bar)
                    state.eligibility = step if state.eligibility is None else \
                        state.eligibility.mul_(self.trace_decay).add_(step)
                    state.weight_sum = 1.0 + self.trace_decay * state.weight_sum
        return hook

    def read_record(self, network: Any) -> None:
        """After a [`SpikingNetwork`][ghl_snn.SpikingNetwork] window: its recorded means are the traces (when
        ``from_record``)."""
        if self.from_record:
            for name in self.layers:
                x_bar, y_bar = network.synapse_means(name)
                self.traces[name] = SynapseTrace(x_bar, y_bar, steps=network.steps)

    def reset(self) -> None:
        """Clear every trace (start of a presentation window)."""
        self.traces = {name: SynapseTrace() for name in self.layers}
        self.input_checks = DeferredChecks()
        self.bad_input = False
        if self.timing is not None:
            self.timing.reset()

    def queue_input_checks(self, x: Tensor, encoder: Callable[[Tensor], Tensor] | None) -> Tensor:
        """Queue the checks of ``x`` (finite; in the encoder's range) for the next host read, and return ``x`` with
        NaN / Inf replaced by 0 so that the window runs whatever ``x`` holds.  ``ThreeFactor.step`` reads them with
        its own checks and reports a failure before writing anything."""
        names = list(self.layers)
        self.input_checks.finite(names, "input (x holds NaN/Inf)", x)
        safe = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        defer = getattr(encoder, "defer_check", None)
        deferred = defer(safe) if callable(defer) else None
        if deferred is not None:
            self.input_checks.flag(names, *deferred)
        return safe

    def verify_input(self, guard: UpdateGuard) -> None:
        """Read the queued input checks now and report a failure through ``guard``: raised, they stay queued (read
        and raised again by the next step or eligibility); ``"skip"``: step() then writes nothing."""
        if guard.verify(self.input_checks):
            self.bad_input = True
        self.input_checks = DeferredChecks()

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.timing is not None:
            self.timing.remove()
