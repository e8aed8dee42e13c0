"""The neuromodulator interface (factor 3 of the three-factor rule; see [Architecture][architecture-three-factors]).

A modulator turns what a layer knows after the global pass into the tensor the plug-in writes into
``weight.grad``: by default ``M ⊙ |E|`` where ``M`` is a broadcast sign.  Sign convention everywhere: ``.grad``
holds what a descent step subtracts (``W <- W - eta * grad``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class StepContext:
    """What a learner tells its modulator when an update begins ([`Modulator.begin_step`][]), once per update and
    before any layer's ``update``.

    ``step`` counts the learner's updates from 1; ``layers`` are the plastic weights this update visits, in order;
    ``readout`` is the network's output over the update's window (the spiking learners' time-averaged read-out;
    ``None`` for the rate plug-in, where the modulator gets the output's error or a reward as a keyword).
    """

    learner: str = ""
    step: int = 0
    layers: tuple[str, ...] = ()
    readout: Tensor | None = None


@dataclass
class LayerSignals:
    """Everything a modulator may read about one plastic layer at update time.

    ``eligibility`` is the (normalised) ``E`` shaped like the weight; ``weight_grad`` the back-propagated
    ``dL/dW`` (``None`` when no backward pass ran); ``output_grad`` the batch of ``dL/dy`` for the layer's
    pre-activation when the modulator asked for it (``needs_output_grad``); ``inputs`` the layer input batch (the
    rate plug-in keeps it only for modulators with ``needs_inputs``).  The spiking learners also say whether the
    layer drives the read-out (``is_output``) and give ``post_slope``, the f-I slope of the neurons it drives at their
    observed input (the rate surrogate's ``dr/dI``; ``None`` where the learner has no surrogate).
    """

    name: str
    module: nn.Module
    eligibility: Tensor
    weight_grad: Tensor | None = None
    output_grad: Tensor | None = None
    inputs: Tensor | None = None
    is_output: bool = False
    post_slope: Tensor | None = None


class Modulator:
    """Base class: subclasses implement [`sign`][] (or override [`update`][] for ablations).

    ``needs_weight_grad`` tells the plug-in that ``loss.backward()`` must have filled ``weight.grad``;
    ``needs_output_grad`` asks it to capture ``dL/dy`` of each plastic layer with a tensor hook;
    ``needs_eligibility = False`` lets it skip the eligibility computation (``layer.eligibility`` is then zeros);
    ``needs_inputs`` asks for every plastic layer's input (``layer.inputs``, Conv2d included), which the per-synapse
    credit of per-neuron signals needs ([`ghl_snn.modulators.credit`][]).
    """

    needs_weight_grad: bool = True
    needs_output_grad: bool = False
    #: False for modulators that ignore E (the sign-only ablation): the plug-in then skips computing it
    needs_eligibility: bool = True
    #: True for modulators that combine a per-neuron signal with the layer input (presynaptic trace)
    needs_inputs: bool = False

    #: the context of the update in progress (set by [`begin_step`][])
    step_context: StepContext = StepContext()

    def begin_step(self, context: StepContext) -> None:
        """Called by the learner once at the start of every update, before the first layer's ``update``: a
        modulator with state that moves once per update (a running reward baseline) moves it here."""
        self.step_context = context

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        """The broadcast sign ``M`` (values in {-1, 0, 1}), broadcastable to the weight's shape."""
        raise NotImplementedError

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        """The tensor written into ``weight.grad``: ``M ⊙ |E|`` (GHL Eq. 5)."""
        return self.sign(layer, **context) * layer.eligibility.abs()

    def rate_loss(self, **context: Any) -> Callable[[Tensor], Tensor] | None:
        """A function of the read-out whose backward pass through the spiking learner's rate surrogate gives the
        ``dL/dy`` (``needs_output_grad``) this modulator needs, used instead of the caller's ``loss_fn`` (e.g. the
        chosen output's value for a reward rule, whose credit must not come from a supervised loss); ``None``
        (the default): the caller's ``loss_fn`` is used."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise KeyError(f"{type(self).__name__} holds no state, got keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def require_weight_grad(layer: LayerSignals, modulator: Modulator) -> Tensor:
    """Return ``layer.weight_grad`` or raise the error telling the user to call ``loss.backward()`` first."""
    if layer.weight_grad is None:
        raise RuntimeError(f"{type(modulator).__name__} needs dL/dW of layer {layer.name!r}, but its weight.grad "
                           "is None: call loss.backward() before rule.step()")
    return layer.weight_grad
