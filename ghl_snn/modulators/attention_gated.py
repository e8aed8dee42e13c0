"""AttentionGatedReward: one reward-prediction error per sample, credited through the chosen output's tag (Q-AGREL).

A scalar alone assigns no credit, so the rule follows attention-gated reinforcement learning (AGREL, Roelfsema &
van Ooyen 2005; Q-AGREL, Pozzi, Bohté & Roelfsema 2020): the network *chooses* one output ``a_n`` (an action, with
exploration: [`choose_actions`][ghl_snn.modulators.actions.choose_actions] or
[`boltzmann_actions`][ghl_snn.modulators.actions.boltzmann_actions]), the environment returns a reward ``r_n``,
and learning combines three things:

* **one scalar per sample, broadcast to every synapse**: the reward-prediction error ``RPE_n = r_n - v_n``, where
  the prediction ``v_n`` is the chosen output's activity ``Q_n,a`` (``value="readout"``, default: the outputs learn
  to predict their reward) or a running mean of the reward (``value="baseline"``);
* **an attention tag** ``tag_nk`` that the chosen output sends back to every neuron ``k``: ``1`` on the chosen
  output unit, ``0`` on the others; on a hidden neuron it depends on the feedback pathway (``feedback``):

  - ``"forward"`` (Q-AGREL): through the transposed forward weights, ``tag = dQ_a/dy``, i.e. ``W_out[a, k]
    f'(I_nk)`` for the layer below the read-out and the chain rule further down.  The learner obtains it from one
    backward pass of ``Q_a`` through the rate surrogate
    ([`rate_loss`][ghl_snn.modulators.attention_gated.AttentionGatedReward.rate_loss]); no backward pass through
    time;
  - ``"learned"``: through feedback weights ``B`` that receive the read-out's own local update (Hebbian in the
    chosen output's tag and the hidden activity, ``B <- (1 - feedback_decay) B - feedback_lr dW_out^T``), so that
    they come to match the forward weights without weight transport (Q-AGREL, Sec. 3; Kolen & Pollack 1994);
    ``tag = B[k, a] f'(I_nk)``.  Only the layer directly below the read-out has read-out synapses to mirror;
    deeper layers keep their initial ``B`` (direct feedback);
  - ``"random"``: a fixed random ``B`` (feedback alignment, as in [`FeedbackSign`][ghl_snn.FeedbackSign]);

* **at the synapse** its own presynaptic trace ``x_ni``: per-neuron signal ``delta_nk = -RPE_n tag_nk / N`` and
  the update ``.grad = sum_n delta_nk x_ni`` (no sign and no ``|E|``): with ``feedback="forward"`` this is exactly
  the rate surrogate's gradient of ``mean_n (r_n - Q_n,a)^2 / 2`` (the chosen unit's squared RPE) for
  ``value="readout"``.

[`RewardSign`][ghl_snn.RewardSign] is the same credit with the sign rule, ``sign(sum_n delta_nk x_ni) ⊙ |E|``.

Usage (spiking learner)::

    out = learner.run(x, T, encoder)
    action = boltzmann_actions(out, temperature=0.05)
    learner.step(reward=(action == y).float(), action=action)
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

from ..ops.data_parallel import unwrapped_name
from .base import LayerSignals, StepContext
from .credit import output_shape
from .feedback_sign import FeedbackSign

Value = Literal["readout", "baseline"]
"""The reward's expectation: ``"readout"`` (the chosen output's value Q) or ``"baseline"`` (a running mean)."""
Feedback = Literal["forward", "learned", "random"]
"""How the chosen output's tag reaches hidden neurons: the transposed forward weights, learned feedback weights, or a
fixed random matrix."""
FEEDBACK = ("forward", "learned", "random")


def _actions(action: Tensor | None, reward: Tensor | float | None, name: str) -> tuple[Tensor, Tensor]:
    if reward is None or action is None:
        raise RuntimeError(f"{name} needs step(reward=r, action=a): one reward and the chosen output per sample")
    action = torch.as_tensor(action).long().reshape(-1)
    rewards = torch.as_tensor(reward, dtype=torch.float32, device=action.device).reshape(-1)
    if rewards.numel() == 1:
        rewards = rewards.expand(action.shape[0])
    if rewards.shape != action.shape:
        raise ValueError(f"{rewards.numel()} rewards for {action.numel()} actions")
    if not torch.isfinite(rewards).all():
        raise ValueError(f"{name} got a non-finite reward")
    return action, rewards


class AttentionGatedReward(FeedbackSign):
    """Reward-prediction error times the chosen output's attention tag times the presynaptic trace, no sign and
    no ``|E|`` (see the module docstring).

    Examples:
        One reward per sample for the output the network chose (Q-AGREL).

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor, AttentionGatedReward, choose_actions
        >>> net = SpikingNetwork(nn.Linear(8, 16, bias=False), IF(), nn.Linear(16, 3, bias=False))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> learner = ThreeFactor(net, AttentionGatedReward())
        >>> out = learner.run(x, num_steps=5, encoder=BernoulliEncoder())
        >>> action = choose_actions(out, epsilon=0.05)               # the network's choice, with exploration
        >>> learner.step(reward=(action == y).float(), action=action)
        >>> net[0].weight.grad.shape
        torch.Size([16, 8])
    """

    needs_eligibility = False

    def __init__(self, seed: int = 0, feedback: Feedback = "forward", value: Value = "readout",
                 momentum: float = 0.05, baseline: float = 0.0, feedback_lr: float = 1.0,
                 feedback_decay: float = 0.0, output_layers: Iterable[str] = ()) -> None:
        super().__init__(seed, output_layers)
        if value not in ("readout", "baseline"):
            raise ValueError(f"{type(self).__name__} value must be 'readout' or 'baseline', got {value!r}")
        if feedback not in FEEDBACK:
            raise ValueError(f"{type(self).__name__} feedback must be one of {FEEDBACK}, got {feedback!r}")
        momentum = float(momentum)
        if not 0 < momentum <= 1:
            raise ValueError(f"{type(self).__name__} momentum must lie in (0, 1], got {momentum!r}")
        if not float(feedback_lr) >= 0 or not 0 <= float(feedback_decay) < 1:
            raise ValueError(f"feedback_lr must be >= 0 and feedback_decay in [0, 1), got {feedback_lr!r} and "
                             f"{feedback_decay!r}")
        self.value = value
        self.feedback = feedback
        #: the tag through the forward weights needs dQ_a/dy of every layer from the learner's rate surrogate
        self.needs_output_grad = feedback == "forward"
        self.momentum = momentum
        self.baseline = float(baseline)
        self.feedback_lr = float(feedback_lr)
        self.feedback_decay = float(feedback_decay)
        self.last_rpe: Tensor | None = None
        self._pending: float | None = None
        self._below_output: str | None = None

    # ------------------------------------------------------------------ the broadcast scalar
    def commit(self) -> None:
        """Fold the pending mean reward into the running baseline (done when the next update starts)."""
        if self._pending is not None:
            self.baseline += self.momentum * (self._pending - self.baseline)
        self._pending = None

    def begin_step(self, context: StepContext) -> None:
        """A new update: the previous one's mean reward enters the running baseline."""
        self.commit()
        super().begin_step(context)

    def rpe(self, layer: LayerSignals, reward: Tensor | float | None = None, action: Tensor | None = None,
            value: Tensor | None = None, **context: Any) -> Tensor:
        """The per-sample reward-prediction error ``r_n - v_n`` (also kept as ``last_rpe``)."""
        action, rewards = _actions(action, reward, type(self).__name__)
        self._pending = float(rewards.mean())
        if value is not None:
            prediction = torch.as_tensor(value, dtype=torch.float32, device=action.device).reshape(-1)
        elif self.value == "readout":
            readout = self.step_context.readout
            if readout is None:
                raise RuntimeError(f"{type(self).__name__} needs the outputs' activity: pass step(value=v) (the "
                                   "predicted reward) or use the spiking learner, which passes its read-out")
            prediction = readout.detach().float().gather(1, action[:, None].to(readout.device)).squeeze(1)
        else:
            prediction = torch.full_like(rewards, self.baseline)
        self.last_rpe = rewards.to(prediction.device) - prediction
        return self.last_rpe

    # ------------------------------------------------------------------ the attention tag
    def rate_loss(self, action: Tensor | None = None, **context: Any) -> Callable[[Tensor], Tensor] | None:
        """With ``feedback="forward"``: the read-out function ``sum_n Q_n,a_n`` whose backward pass through the
        rate surrogate gives every layer's tag ``dQ_a/dy`` (the learner uses it in place of any ``loss_fn``: the
        credit must not come from a supervised loss); ``None`` for the other pathways."""
        if self.feedback != "forward":
            return None
        if action is None:
            raise RuntimeError(f"{type(self).__name__} needs step(reward=r, action=a)")
        chosen = torch.as_tensor(action).long().reshape(-1, 1)
        return lambda readout: readout.gather(1, chosen.to(readout.device)).sum()

    def tag(self, layer: LayerSignals, action: Tensor | None = None, **context: Any) -> Tensor:
        """Per-sample attention tag ``tag_nk`` shaped like the layer output (see the module docstring)."""
        if action is None:
            raise RuntimeError(f"{type(self).__name__} needs step(reward=r, action=a)")
        if layer.inputs is None:
            raise RuntimeError(f"{type(self).__name__} needs the input of layer {layer.name!r}")
        action = torch.as_tensor(action).long().reshape(-1)
        shape = output_shape(layer.module, layer.inputs)
        readout = self.step_context.readout
        outputs = int(readout.shape[1]) if readout is not None else int(context.get("num_outputs", 0))
        if outputs <= 0:
            raise RuntimeError(f"{type(self).__name__} cannot tell the number of outputs: pass "
                               "step(num_outputs=C)")
        chosen = torch.zeros(action.shape[0], outputs, device=layer.inputs.device)
        chosen.scatter_(1, action[:, None].to(chosen.device), 1.0)
        if self.is_output(layer):
            if (outputs,) != shape:
                raise ValueError(f"output layer {layer.name!r} has output shape {shape} but the read-out has "
                                 f"{outputs} columns")
            return chosen
        if self.feedback == "forward":
            if layer.output_grad is None:
                raise RuntimeError(f"{type(self).__name__}(feedback='forward') needs dQ_a/dy of layer "
                                   f"{layer.name!r} from the rate surrogate: use the spiking learner's step() without "
                                   "loss_fn, or feedback='learned' / 'random' on a model without one")
            return layer.output_grad.detach().float()
        self._below_output = layer.name
        return FeedbackSign.neuron_signal(self, layer, error=chosen)

    def neuron_signal(self, layer: LayerSignals, **context: Any) -> Tensor:
        """``delta_nk = -RPE_n tag_nk / N`` (descent convention)."""
        rpe = self.rpe(layer, **context)
        tag = self.tag(layer, **context)
        return tag * (-rpe / rpe.shape[0]).to(tag.device).view(-1, *([1] * (tag.dim() - 1)))

    def credit(self, layer: LayerSignals, **context: Any) -> Tensor:
        credit = super().credit(layer, **context)
        if self.feedback == "learned" and self.is_output(layer):
            self.learn_feedback(credit)
        return credit

    def learn_feedback(self, readout_update: Tensor) -> None:
        """``B <- (1 - feedback_decay) B - feedback_lr readout_update^T`` for the layer below the read-out: the
        feedback synapse from output ``a`` to hidden neuron ``k`` sees the same two activities as the forward
        synapse from ``k`` to ``a`` and takes the same local step."""
        if self._below_output is None:
            return
        name = unwrapped_name(self._below_output)
        matrix = self.matrices.get(name)
        if matrix is None or matrix.shape != readout_update.t().shape:
            return
        update = readout_update.t().to(matrix.device, matrix.dtype)
        matrix.mul_(1.0 - self.feedback_decay).sub_(update, alpha=self.feedback_lr)

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return self.credit(layer, **context)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Feedback matrices, the running baseline and what decides its next value: the mean reward of the
        current update, folded in when the next one begins (``pending``)."""
        return {**super().state_dict(), "baseline": self.baseline, "momentum": self.momentum,
                "pending": self._pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.baseline = float(state.pop("baseline", self.baseline))
        self.momentum = float(state.pop("momentum", self.momentum))
        pending = state.pop("pending", None)
        self._pending = None if pending is None else float(pending)
        super().load_state_dict(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, feedback={self.feedback!r}, value={self.value!r})"
