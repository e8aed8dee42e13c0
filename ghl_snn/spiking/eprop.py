"""e-prop: online learning in recurrent LIF networks (Bellec et al. 2020, Nat. Commun. 11:3625).

For a [`SpikingNetwork`][ghl_snn.SpikingNetwork] ``Linear(in, n) -> RecurrentLIF(n) -> Linear(n, C)`` (input
weights ``W_in``, recurrent ``W_rec``, read-out ``W_out``, the read-out ``y_t = W_out z_t + b`` read at every step)
and a loss on the read-out of the last ``K`` steps, ``L = (1/K) sum_{t > T-K} l(y_t)``, e-prop keeps, per sample and
per *neuron*, the eligibility vectors -- the presynaptic traces filtered by the membrane (Eq. 14 with the LIF's
``dv_t / dv_{t-1} = beta``)::

    eps_in_t  = beta eps_in_{t-1}  + x_t            eps_rec_t = beta eps_rec_{t-1} + z_{t-1}

the postsynaptic pseudo-derivative ``psi_t = dz_t / dv_t`` (the neuron's fast-sigmoid surrogate at ``v_t - theta``)
and, from the output error ``err_t = dL / dy_t``, a learning signal per neuron broadcast through ``B`` (Eq. 4)::

    L_t = err_t B^T,     B = W_out (symmetric e-prop) or a fixed random matrix N(0, 1/C) (random e-prop)
    dL/dW_in  ~ sum_t (L_t ⊙ psi_t)^T eps_in_t          dL/dW_rec ~ sum_t (L_t ⊙ psi_t)^T eps_rec_t
    dL/dW_out = sum_t err_t^T z_t                        (exact)

The per-synapse eligibility trace ``e_t = psi_t eps_t`` (Eq. 13) meets the learning signal inside one matrix
product per step, so memory is ``O(N (in + n))``, flat in ``T``, and no step is stored.  With the symmetric feedback
the update is exactly the gradient of ``L`` on the graph in which a spike's influence on later membrane potentials
(the recurrent input ``W_rec z_{t-1}`` and the reset ``-theta z_{t-1}``) is cut -- the approximation e-prop makes;
``tests/test_eprop.py`` checks this against autograd in float64.

``modulator=`` replaces the learning signal by any third factor of the library: the window's e-prop eligibility
``E = mean_n sum_t psi_t ⊗ eps_t`` is then handed to the modulator like [`ThreeFactor`][ghl_snn.ThreeFactor]'s
(``M ⊙ |E|``, e.g. [`FeedbackSign`][ghl_snn.FeedbackSign] with the error of the mean read-out).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..guards import NonFinite, UpdateGuard
from ..modulators.base import LayerSignals, Modulator, StepContext
from ..rules.base import normalize_eligibility
from .network import SpikingNetwork
from .neurons import spike_fn
from .recurrent import RecurrentLIF

Feedback = Literal["symmetric", "random"]
"""e-prop's learning-signal path: ``"symmetric"`` (through the read-out weights) or ``"random"`` (a fixed
random matrix, no weight transport)."""
StepLoss = Callable[[Tensor], Tensor]


def pseudo_derivative(v: Tensor, threshold: float, slope: float) -> Tensor:
    """``dz/dv`` of the fast-sigmoid surrogate at the membrane ``v``: ``1 / (1 + slope |v - theta|)^2``."""
    return (1.0 + slope * (v - threshold).abs()).pow_(-2)


def recurrent_parts(network: SpikingNetwork) -> tuple[nn.Linear, RecurrentLIF, nn.Linear]:
    """``(W_in, neuron, W_out)`` of a ``Linear -> RecurrentLIF -> Linear`` network (``TypeError`` otherwise)."""
    children = list(network.children())
    if (len(children) != 3 or not isinstance(children[0], nn.Linear) or not isinstance(children[1], RecurrentLIF)
            or not isinstance(children[2], nn.Linear)):
        raise TypeError("e-prop needs SpikingNetwork(nn.Linear(in, n), RecurrentLIF(n), nn.Linear(n, C)), got "
                        f"{[type(c).__name__ for c in children]}")
    if children[1].adaptation:
        raise ValueError("e-prop here covers the plain recurrent LIF (adaptation=0)")
    return children[0], children[1], children[2]


class EProp:
    """Online e-prop learner for a recurrent LIF network (see the module docstring).

    Args:
        network: ``SpikingNetwork(nn.Linear(in, n), RecurrentLIF(n), nn.Linear(n, C))``.
        feedback: ``"symmetric"`` (``B = W_out``) or ``"random"`` (fixed ``B``, drawn from ``seed``).
        modulator: a third factor that replaces the learning signal (``feedback`` is then unused).
        loss_steps: ``K``, the number of final steps the loss is taken on (default: every step).
        train_recurrent: ``False`` freezes ``W_in`` and ``W_rec`` (the read-out-only control, a reservoir).
        strict, nonfinite: the guards shared by every learner ([`UpdateGuard`][ghl_snn.guards.UpdateGuard]): NaN / Inf
            in the input, a weight, the loss, a modulator signal or the update raises ``FloatingPointError`` naming
            the weight (``"skip"``: warns and writes nothing for it); frozen weights (``requires_grad=False``) are
            never written and reported once; an empty batch is refused.  ``run()`` drives all three layers at
            every step, so no weight can miss its forward and ``strict`` has nothing to raise about here.

    The checks cost one host read per window (the input in ``run()``, the weights and updates in ``step()``),
    none per time step.
    """

    def __init__(self, network: SpikingNetwork, feedback: Feedback = "symmetric", modulator: Modulator | None = None,
                 loss_steps: int | None = None, seed: int = 0, train_recurrent: bool = True, strict: bool = False,
                 nonfinite: NonFinite = "raise") -> None:
        if feedback not in ("symmetric", "random"):
            raise ValueError(f"e-prop feedback must be 'symmetric' or 'random', got {feedback!r}")
        if loss_steps is not None and int(loss_steps) < 1:
            raise ValueError(f"loss_steps must be >= 1, got {loss_steps!r}")
        self.guard = UpdateGuard("EProp.step()", strict, nonfinite)
        self.network = network
        self.input, self.neuron, self.output = recurrent_parts(network)
        self.feedback, self.modulator = feedback, modulator
        self.loss_steps = None if loss_steps is None else int(loss_steps)
        self.train_recurrent = train_recurrent
        classes, neurons = self.output.weight.shape
        generator = torch.Generator().manual_seed(int(seed))
        self.random_feedback = torch.randn(classes, neurons, generator=generator) / classes ** 0.5
        self.grads: dict[str, Tensor] = {}
        self.loss: float | None = None
        self._bad_input = False  # nonfinite="skip": this window's input held NaN / Inf, so step() writes nothing

    def feedback_matrix(self) -> Tensor:
        """``B`` (``(C, n)``): the read-out weights (symmetric) or the fixed random matrix."""
        weight = self.output.weight.detach()
        if self.feedback == "symmetric":
            return weight
        return self.random_feedback.to(weight.device, weight.dtype)

    @torch.no_grad()
    def run(self, inputs: Tensor, loss_fn: StepLoss) -> Tensor:
        """Present ``inputs`` (``(T, N, in)``, one slice per step), accumulate the e-prop gradients online and
        return the read-out averaged over the loss steps.  ``loss_fn(y_t) -> scalar`` is the per-step loss (mean
        over the batch), e.g. ``lambda y: F.cross_entropy(y, labels)``."""
        if inputs.dim() != 3 or inputs.shape[-1] != self.input.in_features:
            raise ValueError(f"e-prop needs inputs (T, N, {self.input.in_features}), got {tuple(inputs.shape)}")
        self.guard.batch(inputs)
        self._bad_input = not self.guard.finite(list(self.parameters()), "input (inputs hold NaN/Inf)", inputs)
        if self._bad_input:
            inputs = torch.nan_to_num(inputs, nan=0.0, posinf=0.0, neginf=0.0)
        steps = inputs.shape[0]
        loss_steps = steps if self.loss_steps is None else min(self.loss_steps, steps)
        dtype = self.input.weight.dtype
        neuron, threshold, beta = self.neuron, self.neuron.threshold, self.neuron.beta
        batch, size = inputs.shape[1], neuron.size
        v = inputs.new_zeros(batch, size, dtype=dtype)
        z = torch.zeros_like(v)
        eps_in = inputs.new_zeros(batch, self.input.in_features, dtype=dtype)
        eps_rec, eps_bias = torch.zeros_like(v), 0.0
        grads = {name: torch.zeros_like(p) for name, p in self.parameters().items()}
        feedback = self.feedback_matrix()
        hebbian = {"input": torch.zeros_like(self.input.weight), "recurrent": torch.zeros_like(neuron.recurrent.weight)}
        presynaptic = {"input": torch.zeros_like(eps_in), "recurrent": torch.zeros_like(v)}
        psi_sum, error_sum = torch.zeros_like(v), None
        readout_sum, loss_total = None, 0.0
        for t in range(steps):
            x = inputs[t].to(dtype)
            eps_in.mul_(beta).add_(x)
            eps_rec.mul_(beta).add_(z)
            eps_bias = beta * eps_bias + 1.0
            v = beta * v + self.input(x) + neuron.recurrent(z)
            spikes = (v >= threshold).to(dtype)
            psi = pseudo_derivative(v, threshold, neuron.slope)
            y = self.output(spikes)
            if self.modulator is not None:
                hebbian["input"].addmm_(psi.t(), eps_in, alpha=1.0 / batch)
                hebbian["recurrent"].addmm_(psi.t(), eps_rec, alpha=1.0 / batch)
                presynaptic["input"].add_(x, alpha=1.0 / steps)
                presynaptic["recurrent"].add_(z, alpha=1.0 / steps)
                psi_sum.add_(psi, alpha=1.0 / steps)
            if t >= steps - loss_steps:
                with torch.enable_grad():
                    leaf = y.detach().requires_grad_(True)
                    loss = loss_fn(leaf) / loss_steps
                    (error,) = torch.autograd.grad(loss, leaf)
                loss_total += float(loss)
                readout_sum = y if readout_sum is None else readout_sum + y
                error_sum = error if error_sum is None else error_sum + error
                grads["output.weight"].addmm_(error.t(), spikes)
                if "output.bias" in grads:
                    grads["output.bias"].add_(error.sum(0))
                if self.modulator is None and self.train_recurrent:
                    signal = (error @ feedback).mul_(psi)  # L_t ⊙ psi_t, (N, n)
                    grads["input.weight"].addmm_(signal.t(), eps_in)
                    grads["recurrent.weight"].addmm_(signal.t(), eps_rec)
                    if "input.bias" in grads:
                        grads["input.bias"].add_(signal.sum(0), alpha=eps_bias)
            v = v - threshold * spikes
            z = spikes
        self.grads, self.loss = grads, loss_total
        self._readout = readout_sum / loss_steps
        self._window = {"hebbian": hebbian, "presynaptic": presynaptic, "psi": psi_sum, "error": error_sum}
        return self._readout

    def eligibility(self, kind: str) -> Tensor:
        """The window's e-prop eligibility ``E = mean_n sum_t psi_t ⊗ eps_t`` of the ``"input"`` or ``"recurrent"``
        weights (kept only when a ``modulator`` replaces the learning signal), shaped like the weight."""
        if not getattr(self, "_window", None) or self.modulator is None:
            raise RuntimeError("the e-prop eligibility is kept per window only with a modulator, after run()")
        if kind not in ("input", "recurrent"):
            raise ValueError(f"kind must be 'input' or 'recurrent', got {kind!r}")
        return self._window["hebbian"][kind]

    def parameters(self) -> dict[str, nn.Parameter]:
        """The trained parameters by role (``input`` / ``recurrent`` / ``output``, ``.weight`` / ``.bias``), in the
        order of the network."""
        named: dict[str, nn.Parameter] = {}
        if self.train_recurrent:
            named["input.weight"] = self.input.weight
            if self.input.bias is not None:
                named["input.bias"] = self.input.bias
            named["recurrent.weight"] = self.neuron.recurrent.weight
        named["output.weight"] = self.output.weight
        if self.output.bias is not None:
            named["output.bias"] = self.output.bias
        return named

    @torch.no_grad()
    def step(self, **context: Any) -> None:
        """Write the accumulated update into ``.grad`` of every trained parameter (then ``optimizer.step()``).
        With a ``modulator``, ``context`` goes to it (``reward=``, ``action=``, ...; ``error`` defaults to
        ``dL / d(read-out)`` summed over the loss steps)."""
        if not self.grads:
            raise RuntimeError("EProp.step() called before run()")
        params = self.parameters()
        names = list(params)
        if (self._bad_input  # reported by run()
                or not self.guard.finite(names, "loss", torch.tensor(self.loss))
                or not self.guard.context(names, context)):
            for param in params.values():
                param.grad = None
        else:
            if self.modulator is not None:
                self._steps = getattr(self, "_steps", 0) + 1
                self.modulator.begin_step(StepContext("EProp", self._steps, ("input", "recurrent"), self._readout))
            updates: dict[str, Tensor] = {}
            for name, param in params.items():
                if self.guard.frozen(name, param):
                    continue
                grad = self.grads[name]
                if self.modulator is not None and name in ("input.weight", "recurrent.weight"):
                    grad = self._modulated(name, **context)
                if not self.guard.check(name, ("weight", (param,)),
                                        ("update (the learning signal or eligibility diverged)", (grad,))):
                    param.grad = None
                    continue
                updates[name] = grad
            for name, grad in updates.items():  # nothing is written before every check has passed
                self.guard.write_grad(name, params[name], grad)
        if not self.train_recurrent:  # the reservoir: an optimiser over all parameters leaves these unchanged
            for param in (self.input.weight, self.input.bias, self.neuron.recurrent.weight):
                if param is not None:
                    param.grad = None

    def _modulated(self, name: str, **context: Any) -> Tensor:
        kind = name.split(".")[0]
        module = self.input if kind == "input" else self.neuron.recurrent
        window = self._window
        eligibility = normalize_eligibility(window["hebbian"][kind], "max")
        signals = LayerSignals(name=kind, module=module, eligibility=eligibility, inputs=window["presynaptic"][kind],
                               is_output=False, post_slope=window["psi"])
        context.setdefault("error", window["error"])
        return self.modulator.update(signals, **context)

    def __repr__(self) -> str:
        signal = f"modulator={self.modulator!r}" if self.modulator is not None else f"feedback={self.feedback!r}"
        return f"EProp({signal}, loss_steps={self.loss_steps}, train_recurrent={self.train_recurrent})"
