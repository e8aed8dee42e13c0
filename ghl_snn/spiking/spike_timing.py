"""How the spiking learner feeds timing rules: the spikes into a plastic synapse and the spikes of the neurons it
drives, at every step.

The synapse's forward hook holds its input spikes ``s_pre_t``; the forward hook of the post-synaptic neuron
(the next neuron module after the synapse, or, for a recurrent synapse inside a neuron module, that neuron)
receives ``s_post_t`` and calls the rule's [`step`][ghl_snn.rules.timing.TimingRule.step].  A synapse without a
spiking neuron after it (a non-spiking read-out) has no post-synaptic spikes: a timing rule cannot drive it.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..rules.timing import TimingRule, TimingState
from .adapters import is_neuron_module
from .neurons import SpikingNeuron


def spikes_of(output: Any) -> Tensor:
    """A neuron module's spikes: the output itself, or the first entry of an ``(spikes, state...)`` tuple
    (snntorch without ``init_hidden``, norse)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def post_neurons(model: nn.Module, layers: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The neuron module driven by each plastic synapse: its parent if that is a neuron (a recurrent synapse
    inside a recurrent neuron), else the first neuron module registered after it; ``ValueError`` for a synapse
    that drives none."""
    named = list(model.named_modules())
    is_neuron = {name: isinstance(m, SpikingNeuron) or is_neuron_module(m) for name, m in named}
    order = [name for name, _ in named]
    found: dict[str, nn.Module] = {}
    for layer in layers:
        parent = layer.rpartition(".")[0]
        if "." in layer and is_neuron.get(parent, False):
            found[layer] = dict(named)[parent]
            continue
        index = order.index(layer)
        following = [name for name in order[index + 1:] if is_neuron[name] and not name.startswith(layer + ".")]
        if not following:
            raise ValueError(f"layer {layer!r} drives no spiking neuron, so a timing rule has no post-synaptic "
                             "spikes for it: exclude it (layers=[...]) or use a rate rule")
        found[layer] = dict(named)[following[0]]
    return found


class SpikeTiming:
    """Per-layer [`TimingState`][ghl_snn.rules.timing.TimingState] of a timing rule, filled by forward hooks
    (``active()`` tells the hooks whether the learner records)."""

    def __init__(self, model: nn.Module, layers: dict[str, nn.Module], rules: dict[str, TimingRule],
                 active: Callable[[nn.Module], bool]) -> None:
        self.layers, self.rules, self.active = layers, rules, active
        self.states: dict[str, TimingState] = {name: rules[name].new_state() for name in layers}
        self._pre: dict[str, Tensor] = {}
        neurons = post_neurons(model, layers)
        self.handles: list[RemovableHandle] = []
        by_neuron: dict[int, list[str]] = {}
        for name, neuron in neurons.items():
            by_neuron.setdefault(id(neuron), []).append(name)
        for name, neuron in neurons.items():
            if by_neuron[id(neuron)][0] == name:
                self.handles.append(neuron.register_forward_hook(self._post_hook(by_neuron[id(neuron)])))

    def record_pre(self, name: str, spikes: Tensor) -> None:
        """The synapse's input spikes of this step (called by the learner's synapse hook)."""
        self._pre[name] = spikes.reshape(-1, spikes.shape[-1])

    def _post_hook(self, names: list[str]) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            for name in names:
                pre = self._pre.pop(name, None)
                if pre is None or not self.active(self.layers[name]):
                    continue
                post = spikes_of(output).detach()
                self.rules[name].step(self.states[name], pre, post.reshape(-1, post.shape[-1]),
                                      tuple(self.layers[name].weight.shape))
        return hook

    def eligibility(self, name: str) -> Tensor | None:
        return self.states[name].eligibility

    def reset(self) -> None:
        self.states = {name: self.rules[name].new_state() for name in self.layers}
        self._pre.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
