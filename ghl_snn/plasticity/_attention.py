"""Attention layers as plastic synapses: their projections are recorded where the layer calls them.

``nn.MultiheadAttention`` and torchvision's Swin window attention call their query / key / value and output
projections functionally (``F.linear`` inside their forward), so the forward hooks of the projection sub-modules
never run.  During each training-mode forward of a selected attention layer a ``TorchFunctionMode`` reports every
``F.linear`` call whose weight is (a block of rows of) one of the layer's projection weights; the plug-in adds that
call's eligibility to those rows and keeps the call's input and ``dL/dy``, samples first, for per-neuron modulators,
which then see every row block as a Linear layer of its own.
"""
from __future__ import annotations

import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..modulators.base import LayerSignals
from ..rules.stochastic import batch_subset
from ._capture import Capture, Projection, autocast_off, keep_output_grad, signals_of

if TYPE_CHECKING:
    from ._ghl import GHL


def _without_torch_function_check(func: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of a ``torch.nn.functional`` function whose own ``has_torch_function`` test is off.

    ``F.multi_head_attention_forward`` hands itself to an active torch function mode as one call; running this copy
    inside the mode lets the mode see the ``F.linear`` calls of the projections instead.
    """
    namespace = dict(func.__globals__)
    namespace["has_torch_function"] = lambda *_: False
    clone = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    clone.__kwdefaults__ = func.__kwdefaults__
    return clone


_MHA_FORWARD = F.multi_head_attention_forward
_MHA_FORWARD_OPEN = _without_torch_function_check(F.multi_head_attention_forward)


class ProjectionRecorder(TorchFunctionMode):
    """Active during one training-mode forward of an attention layer: reports every ``F.linear`` call whose weight
    is (a block of rows of) one of the layer's plastic projection weights, with ``samples_first``, which turns that
    call's input or output into ``(samples, tokens, features)``."""

    def __init__(self, record: Callable[..., None], targets: dict[str, nn.Parameter],
                 samples_first: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.record = record
        self.targets = targets
        self.samples_first = samples_first

    def _match(self, weight: object) -> tuple[str, int] | None:
        if not isinstance(weight, Tensor):
            return None
        for name, param in self.targets.items():
            if weight is param:
                return name, 0
            if (weight._base is param and weight.dim() == 2 and weight.stride() == param.stride()
                    and weight.shape[1] == param.shape[1]):
                return name, (weight.storage_offset() - param.storage_offset()) // param.stride(0)
        return None

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func is _MHA_FORWARD:
            with self:
                return _MHA_FORWARD_OPEN(*args, **kwargs)
        out = func(*args, **kwargs)
        if func is F.linear:
            x = args[0] if args else kwargs["input"]
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            hit = self._match(weight)
            if hit is not None:
                self.record(hit[0], hit[1], x, weight, out, bias, self.samples_first)
        return out


def samples_first(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[Tensor], Tensor]:
    """For one forward of an attention layer: a function that turns what a projection's ``F.linear`` call sees
    (input or output) into ``(samples, tokens, features)``, so that a per-sample signal meets the tokens of its own
    sample.  ``nn.MultiheadAttention`` projects ``(T, N, E)`` sequences (whatever ``batch_first`` says: it
    transposes first) and feeds its output projection ``(T * N, E)`` rows, token-major; Swin's window attention
    projects ``(N * windows, tokens, C)``, sample-major."""
    if isinstance(module, nn.MultiheadAttention):
        query = args[0] if args else kwargs["query"]
        samples = (query.shape[0] if module.batch_first else query.shape[1]) if query.dim() == 3 else 1
        return lambda tensor: tensor.reshape(-1, samples, tensor.shape[-1]).transpose(0, 1)
    samples = (args[0] if args else kwargs["x"]).shape[0]
    return lambda tensor: tensor.reshape(samples, -1, tensor.shape[-1])


def attention_hooks(plugin: GHL, name: str, module: nn.Module) -> list[Any]:
    """Pre- and post-forward hooks that record the projections of one attention layer: a
    [`ProjectionRecorder`][] is active during the layer's training-mode forwards only."""
    targets = {key: synapse.weight for key, synapse in plugin.synapses.items() if synapse.layer == name}
    active: list[ProjectionRecorder] = []

    def record(key: str, first_row: int, x: Tensor, weight: Tensor, output: Tensor, bias: Tensor | None,
               to_samples: Callable[[Tensor], Tensor]) -> None:
        record_projection(plugin, key, first_row, x, weight, output, bias, to_samples)

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if torch.is_grad_enabled() and module.training:
            recorder = ProjectionRecorder(record, targets, samples_first(module, args, kwargs))
            recorder.__enter__()
            active.append(recorder)
            plugin._forwards[name] += 1

    def post_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if active:
            active.pop().__exit__(None, None, None)

    return [module.register_forward_pre_hook(pre_hook, with_kwargs=True),
            module.register_forward_hook(post_hook, always_call=True)]


def record_projection(plugin: GHL, name: str, first_row: int, x: Tensor, weight: Tensor, output: Tensor,
                      bias: Tensor | None, to_samples: Callable[[Tensor], Tensor]) -> None:
    """Add the eligibility of one ``F.linear`` call of an attention layer to rows ``first_row:`` of plastic weight
    ``name``, and keep that call's input and ``dL/dy`` (samples first) for modulators that read them."""
    synapse, modulator = plugin.synapses[name], plugin.modulator
    rows = weight.shape[0]
    per_group = synapse.weight.shape[0] // synapse.groups
    groups = rows // per_group if rows % per_group == 0 else 1
    keep_grad = modulator.needs_output_grad and output.requires_grad
    if modulator.needs_inputs or keep_grad:
        capture = Capture(x=to_samples(x.detach()) if modulator.needs_inputs else None, rows=(first_row, rows))
        if keep_grad:
            keep_output_grad(output, capture, to_samples)
        plugin._captures[name].append(capture)
    with torch.no_grad(), autocast_off(x.device.type):
        total = plugin._sums[name]
        if total is None:
            total = plugin._sums[name] = plugin.fast.buffer(name, synapse.weight).zero_()
        if not modulator.needs_eligibility:
            return
        x_e, y_e = x.detach().float(), output.detach().float()
        if bias is not None:
            y_e = y_e - bias.detach().float()
        if plugin.eligibility_fraction < 1.0:  # a random subset of the samples, each with all its tokens
            x_e, y_e = batch_subset(to_samples(x_e), to_samples(y_e), plugin.eligibility_fraction)
        eligibility = plugin.rules[synapse.layer].projection(
            x_e.reshape(-1, x_e.shape[-1]), y_e.reshape(-1, y_e.shape[-1]), weight.detach().float(), groups)
        total[first_row:first_row + rows].add_(eligibility)


def modulated_blocks(plugin: GHL, name: str, signals: LayerSignals, context: dict[str, Any]) -> Tensor:
    """The modulator's update of an attention projection whose per-sample signals were captured, block by block:
    every row block that an ``F.linear`` call used (the query, key and value rows of a packed weight called with
    different inputs; all rows when one call used them all) is a Linear layer of its own for the modulator, named
    ``<weight>[first:last]`` unless it is the whole weight, with its own input and ``dL/dy``; rows no call used get
    no update."""
    weight, grad = plugin.synapses[name].weight.detach(), signals.weight_grad
    blocks: dict[tuple[int, int], list[Capture]] = {}
    for capture in plugin._captures[name]:
        blocks.setdefault(capture.rows, []).append(capture)  # type: ignore[arg-type]
    update = torch.zeros_like(signals.eligibility)
    for (first, count), captures in blocks.items():
        rows = slice(first, first + count)
        block_name = name if count == weight.shape[0] else f"{name}[{first}:{first + count}]"
        block = signals_of(block_name, Projection(weight[rows]), signals.eligibility[rows],
                           None if grad is None else grad[rows], captures)
        update[rows] = plugin.modulator.update(block, **context)
    return update
