"""What a training-mode forward leaves for the plug-in's ``step()``: the plastic weights it knows, the per-sample
signals it keeps for a modulator, and the modulator's view of one weight ([`LayerSignals`][ghl_snn.LayerSignals])."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..modulators.base import LayerSignals


class Projection(nn.Module):
    """What a modulator sees as ``LayerSignals.module`` for one projection of an attention layer: a Linear-like
    stand-in whose ``weight`` is that projection's weight (not registered, so it owns no parameter)."""

    def __init__(self, weight: nn.Parameter | Tensor) -> None:
        super().__init__()
        self.__dict__["weight"] = weight


@dataclass
class Synapse:
    """One plastic weight: the selected layer that owns it, the parameter and its number of competition groups;
    ``signal_module`` is what the modulator receives (the layer itself, or a [`Projection`][])."""

    layer: str
    module: nn.Module
    weight: nn.Parameter
    groups: int = 1
    signal_module: nn.Module | None = None


@dataclass
class Capture:
    """The per-sample signals one forward keeps for a modulator that reads them: the layer input (``needs_inputs``)
    and ``dL/dy`` (``needs_output_grad``, filled when the backward pass reaches the output).  The eligibility itself
    is computed in the forward hook, so the layer output is never kept alive until ``step()``."""

    x: Tensor | None = None
    output_grad: Tensor | None = None
    #: attention projections: the (first row, row count) of the weight block that this call used
    rows: tuple[int, int] | None = None


def keep_output_grad(output: Tensor, capture: Capture, transform: Callable[[Tensor], Tensor] | None = None) -> None:
    """Store ``dL/dy`` of ``output`` (detached, ``transform``-ed) in ``capture`` when the backward pass reaches it."""
    def record(grad: Tensor) -> None:
        grad = grad.detach()
        capture.output_grad = grad if transform is None else transform(grad)
    output.register_hook(record)


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """A context with autocast off for ``device_type`` (a no-op context when it is not on: entering
    ``torch.autocast`` costs a few microseconds per plastic layer and forward)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def signals_of(name: str, module: nn.Module | None, eligibility: Tensor, weight_grad: Tensor | None,
               captures: list[Capture]) -> LayerSignals:
    """A modulator's view of one plastic weight (or row block): ``E``, ``dL/dW`` and the per-sample inputs and
    ``dL/dy`` of ``captures``, concatenated over samples."""
    output_grads = [c.output_grad for c in captures if c.output_grad is not None]
    inputs = [c.x for c in captures if c.x is not None]
    return LayerSignals(
        name=name, module=module, eligibility=eligibility, weight_grad=weight_grad,  # type: ignore[arg-type]
        output_grad=(output_grads[0] if len(output_grads) == 1 else torch.cat(output_grads)) if output_grads else None,
        inputs=(inputs[0] if len(inputs) == 1 else torch.cat(inputs)) if inputs else None)
