"""Event-driven synaptic input: the current of a Linear synapse gathered from its active (binary) inputs.

For binary spikes ``s`` (``N x in``) the synaptic current is a sum of weight columns over the active inputs only::

    (W s_n)_k = sum_{i : s_ni = 1} W_ki

which [`event_current`][] forms as a gather-sum (``torch.nn.functional.embedding_bag`` over the rows of ``W^T``,
one bag per sample): ``O(active * out)`` work instead of the dense product's ``O(in * out)``, the way
neuromorphic hardware delivers spike events.  It equals the dense product up to float rounding (the order of the
additions differs).  Which one is faster depends on the spike density and the device:
``benchmarks/spiking_memory.py`` measures both; on a CPU the gather-sum wins below about
``EVENT_DENSITY`` active inputs into at least ``EVENT_MIN_OUTPUTS`` neurons, and on a GPU
finding the active inputs (``nonzero``) needs the device to report their number to the host every step, so
[`SpikingNetwork.run`][ghl_snn.spiking.network.SpikingNetwork.run] uses it only on a CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

#: spike density (fraction of active inputs) below which the gather-sum beats the dense product on a CPU
EVENT_DENSITY = 0.3
#: fewest output neurons for which gathering pays: for a narrow layer (a 10-unit read-out) the dense product is a
#: few microseconds and the gather's index bookkeeping costs more
EVENT_MIN_OUTPUTS = 64


def event_current(spikes: Tensor, weight_t: Tensor, bias: Tensor | None = None) -> Tensor:
    """``spikes @ weight_t + bias`` for binary ``spikes`` (``N x in``) as a gather-sum over the active inputs;
    ``weight_t`` is the transposed weight ``W^T`` (``in x out``, contiguous).  Falls back to the dense product when
    more than ``EVENT_DENSITY`` of the inputs are active."""
    if spikes.dim() != 2 or weight_t.dim() != 2 or spikes.shape[1] != weight_t.shape[0]:
        raise ValueError(f"event_current needs spikes (N, in) and W^T (in, out), got {tuple(spikes.shape)} and "
                         f"{tuple(weight_t.shape)}")
    rows, columns = spikes.nonzero(as_tuple=True)
    if columns.numel() > EVENT_DENSITY * spikes.numel():
        current = spikes.to(weight_t.dtype) @ weight_t
    else:
        counts = torch.bincount(rows, minlength=spikes.shape[0])
        current = F.embedding_bag(columns, weight_t, counts.cumsum(0).sub_(counts), mode="sum")
    return current if bias is None else current.add_(bias)


class EventLinear:
    """A Linear synapse's step function for binary input during one window (no autograd): holds ``W^T`` once so
    that every step is one gather-sum ([`event_current`][])."""

    def __init__(self, synapse: nn.Linear) -> None:
        self.weight_t = synapse.weight.detach().t().contiguous()
        self.bias = None if synapse.bias is None else synapse.bias.detach()

    def __call__(self, spikes: Tensor) -> Tensor:
        return event_current(spikes, self.weight_t, self.bias)


def has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs anything besides its ``forward`` (its own or global forward hooks)."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or getattr(torch_module, "_global_forward_hooks", None)
                or getattr(torch_module, "_global_forward_pre_hooks", None))
