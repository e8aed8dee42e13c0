"""e-prop: online learning in recurrent (adaptive) LIF networks (Bellec et al. 2020, Nat. Commun. 11:3625).

For a [`SpikingNetwork`][ghl_snn.SpikingNetwork] ``Linear(in, n) -> RecurrentLIF(n) -> Linear(n, C)`` (input
weights ``W_in`` with bias ``b_in``, recurrent ``W_rec``, read-out ``W_out``) every synapse of a hidden neuron ``j``
sees one presynaptic value per step, ``x~_t = [x_t, 1, z_{t-1}]`` (input, bias, the population's previous spikes).
The neuron (``RecurrentLIF``; ``A_t`` its threshold, ``theta`` plus ``adaptation`` times the adaptation ``a_t``)::

    u_t = beta v_{t-1} + W x~_t        z_t = [u_t >= A_t]        v_t = u_t - A_t z_t        a_{t+1} = rho a_t + z_t

e-prop keeps, per sample, the eligibility vectors of Bellec et al.'s Eqs. 13-14: for the plain LIF one per neuron
and presynaptic input, the presynaptic trace filtered by the membrane,

    eps_t = beta eps_{t-1} + x~_t,          e_t = psi_t eps_t                      (e_t^{ji} = psi_t^j eps_t^i)

with the pseudo-derivative ``psi_t = dz_t / du_t`` (the neuron's fast-sigmoid surrogate at ``u_t - A_t``); for the
adaptive LIF (ALIF, ``adaptation = beta_a > 0``) a second, per-synapse vector tracks the threshold (their Eq. 25)::

    eps^a_{t+1} = psi_t eps_t + (rho - psi_t beta_a) eps^a_t,      e_t = psi_t (eps_t - beta_a eps^a_t).

The read-out is ``y_t = W_out z_t + b`` or, with ``readout_decay = kappa > 0``, the leaky read-out
``y_t = kappa y_{t-1} + W_out z_t + b`` (their Eq. 2); the loss is ``L = (1/K) sum_{t > T-K} l(y_t)`` on the last
``K`` steps.  From the output error ``err_t = dL / dy_t`` a learning signal per neuron is broadcast through ``B``
(Eq. 4) and meets the eligibility trace, filtered by the read-out's leak (``e-bar_t = kappa e-bar_{t-1} + e_t``)::

    L_t = err_t B,   B = W_out (symmetric e-prop) or a fixed random matrix N(0, 1/C) (random e-prop)
    dL/dW^{ji} ~ sum_t L_t^j e-bar_t^{ji}          dL/dW_out = sum_t err_t^T z-bar_t  (exact)

Memory is flat in ``T``: for the plain LIF with ``kappa = 0`` the traces are neuron-sized (``O(N (in + n))``) and
``L_t psi_t`` meets ``eps_t`` in one matrix product per chunk of ``chunk`` loss steps; ALIF or ``kappa > 0`` keep
per-synapse traces (``O(N n (in + n))``; with ``kappa > 0`` only once ``T`` exceeds one chunk).  With the symmetric
feedback the update is exactly the gradient of ``L`` on the graph in which a spike's influence on later membrane
potentials (the recurrent input ``W_rec z_{t-1}`` and the reset ``-A_t z_t``) is cut -- the approximation e-prop
makes; the spike still raises its own neuron's threshold.  ``tests/test_eprop.py`` checks this against autograd in
float64.

``rate_cost = c > 0`` adds the firing-rate regulariser of Bellec et al.'s Methods,
``L_reg = (c / 2) sum_j (f_j - f_target)^2`` with ``f_j = (1 / (N T)) sum_{b,t} z_t^{bj}`` the window's rate of
neuron ``j`` (spikes per step), whose e-prop gradient meets the unfiltered eligibility with a per-neuron signal::

    dL_reg/dW^{ji} ~ c (f_j - f_target) (1 / (N T)) sum_{b,t} e_t^{ji}

(exact on the cut graph, like the task term).

``modulator=`` replaces the learning signal by any third factor of the library: the window's e-prop eligibility
``E = mean_n sum_t e_t`` is then handed to the modulator like [`ThreeFactor`][ghl_snn.ThreeFactor]'s
(``M ⊙ |E|``, e.g. [`FeedbackSign`][ghl_snn.FeedbackSign] with the error of the mean read-out).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import grad_and_value, vmap

from ..guards import NonFinite, UpdateGuard
from ..modulators.base import LayerSignals, Modulator, StepContext
from ..rules.base import normalize_eligibility
from .network import SpikingNetwork
from .recurrent import RecurrentLIF

Feedback = Literal["symmetric", "random"]
"""e-prop's learning-signal path: ``"symmetric"`` (through the read-out weights) or ``"random"`` (a fixed
random matrix, no weight transport)."""
StepLoss = Callable[[Tensor], Tensor]


def pseudo_derivative(v: Tensor, threshold: float | Tensor, slope: float) -> Tensor:
    """``dz/dv`` of the fast-sigmoid surrogate at the membrane ``v``: ``1 / (1 + slope |v - theta|)^2``."""
    return (1.0 + slope * (v - threshold).abs()).pow_(-2)


def recurrent_parts(network: SpikingNetwork) -> tuple[nn.Linear, RecurrentLIF, nn.Linear]:
    """``(W_in, neuron, W_out)`` of a ``Linear -> RecurrentLIF -> Linear`` network (``TypeError`` otherwise)."""
    children = list(network.children())
    if (len(children) != 3 or not isinstance(children[0], nn.Linear) or not isinstance(children[1], RecurrentLIF)
            or not isinstance(children[2], nn.Linear)):
        raise TypeError("e-prop needs SpikingNetwork(nn.Linear(in, n), RecurrentLIF(n), nn.Linear(n, C)), got "
                        f"{[type(c).__name__ for c in children]}")
    return children[0], children[1], children[2]


class EProp:
    """Online e-prop learner for a recurrent (adaptive) LIF network (see the module docstring).

    Args:
        network: ``SpikingNetwork(nn.Linear(in, n), RecurrentLIF(n), nn.Linear(n, C))``; the neuron may be adaptive
            (``RecurrentLIF(n, adaptation=beta_a, rho=rho)``).
        feedback: ``"symmetric"`` (``B = W_out``) or ``"random"`` (fixed ``B``, drawn from ``seed``).
        modulator: a third factor that replaces the learning signal (``feedback`` is then unused).
        loss_steps: ``K``, the number of final steps the loss is taken on (default: every step).
        readout_decay: ``kappa`` in ``[0, 1)``, the leak of the read-out ``y_t = kappa y_{t-1} + W_out z_t + b``
            (``0``: the read-out of the current step).  Evaluate the network with the same filter (as
            ``ghl_snn.experiments.recurrent.readout_steps`` does).
        rate_cost, rate_target: ``c`` and ``f_target`` (spikes per step, default 0.02) of the firing-rate
            regulariser (``c = 0``: none); it joins the learning signal, so it needs ``modulator=None``.
        train_recurrent: ``False`` freezes ``W_in`` and ``W_rec`` (the read-out-only control, a reservoir).
        chunk: loss steps whose learning signals are formed together (one matrix product per chunk instead of one
            per step; memory ``O(chunk N (in + n))``, still flat in ``T``).  Per-synapse traces (ALIF,
            ``kappa > 0``) meet the learning signal step by step.
        strict, nonfinite: the guards shared by every learner ([`UpdateGuard`][ghl_snn.guards.UpdateGuard]): NaN / Inf
            in the input, a weight, the loss, a modulator signal or the update raises ``FloatingPointError`` naming
            the weight (``"skip"``: warns and writes nothing for it); frozen weights (``requires_grad=False``) are
            never written and reported once; an empty batch is refused.  ``run()`` drives all three layers at
            every step, so no weight can miss its forward and ``strict`` has nothing to raise about here.

    The checks cost one host read per window (the input in ``run()``, the weights and updates in ``step()``),
    none per time step.  The per-step loss is differentiated for a whole chunk at once with ``torch.func``
    (``vmap`` of ``grad``); a loss that ``vmap`` cannot batch falls back to one autograd call per step.
    """

    def __init__(self, network: SpikingNetwork, feedback: Feedback = "symmetric", modulator: Modulator | None = None,
                 loss_steps: int | None = None, seed: int = 0, train_recurrent: bool = True,
                 readout_decay: float = 0.0, chunk: int = 32, strict: bool = False,
                 nonfinite: NonFinite = "raise", rate_cost: float = 0.0, rate_target: float = 0.02) -> None:
        if feedback not in ("symmetric", "random"):
            raise ValueError(f"e-prop feedback must be 'symmetric' or 'random', got {feedback!r}")
        if loss_steps is not None and int(loss_steps) < 1:
            raise ValueError(f"loss_steps must be >= 1, got {loss_steps!r}")
        if not 0.0 <= float(readout_decay) < 1.0:
            raise ValueError(f"readout_decay (kappa) must lie in [0, 1), got {readout_decay!r}")
        if not float(rate_cost) >= 0.0 or not 0.0 <= float(rate_target) <= 1.0:
            raise ValueError(f"rate_cost must be >= 0 and rate_target in [0, 1], got {rate_cost!r}, {rate_target!r}")
        if rate_cost and modulator is not None:
            raise ValueError("the firing-rate regulariser joins e-prop's learning signal; it needs modulator=None")
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1 step, got {chunk!r}")
        self.guard = UpdateGuard("EProp.step()", strict, nonfinite)
        self.network = network
        self.input, self.neuron, self.output = recurrent_parts(network)
        self.feedback, self.modulator = feedback, modulator
        self.loss_steps = None if loss_steps is None else int(loss_steps)
        self.readout_decay, self.chunk = float(readout_decay), int(chunk)
        self.train_recurrent = train_recurrent
        self.rate_cost, self.rate_target = float(rate_cost), float(rate_target)
        classes, neurons = self.output.weight.shape
        generator = torch.Generator().manual_seed(int(seed))
        self.random_feedback = torch.randn(classes, neurons, generator=generator) / classes ** 0.5
        self.grads: dict[str, Tensor] = {}
        self.loss: float | None = None
        self._bad_input = False  # nonfinite="skip": this window's input held NaN / Inf, so step() writes nothing
        self._vectorised_loss = True  # False once the step loss turned out not to be vmap-able

    @property
    def per_synapse(self) -> bool:
        """Whether the eligibility traces are per synapse (ALIF or a leaky read-out) rather than per neuron."""
        return bool(self.neuron.adaptation) or self.readout_decay > 0

    def feedback_matrix(self) -> Tensor:
        """``B`` (``(C, n)``): the read-out weights (symmetric) or the fixed random matrix."""
        weight = self.output.weight.detach()
        if self.feedback == "symmetric":
            return weight
        return self.random_feedback.to(weight.device, weight.dtype)

    def _errors(self, loss_fn: StepLoss, readouts: Tensor, loss_steps: int) -> tuple[Tensor, Tensor]:
        """``(dL/dy_t, l(y_t) / K)`` for a stack of read-outs ``(c, N, C)``."""
        if self._vectorised_loss:
            try:
                errors, losses = vmap(grad_and_value(loss_fn))(readouts)
                return errors / loss_steps, losses.detach() / loss_steps
            except RuntimeError:
                self._vectorised_loss = False
        errors, losses = [], []
        with torch.enable_grad():
            for readout in readouts:
                leaf = readout.detach().requires_grad_(True)
                loss = loss_fn(leaf)
                errors.append(torch.autograd.grad(loss, leaf)[0])
                losses.append(loss.detach())
        return torch.stack(errors) / loss_steps, torch.stack(losses) / loss_steps

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
        steps, batch = inputs.shape[0], inputs.shape[1]
        loss_steps = steps if self.loss_steps is None else min(self.loss_steps, steps)
        first_loss = steps - loss_steps
        neuron, w_in, b_in = self.neuron, self.input.weight, self.input.bias
        beta, theta, slope, adapt, rho = neuron.beta, neuron.threshold, neuron.slope, neuron.adaptation, neuron.rho
        kappa, size, n_in = self.readout_decay, neuron.size, self.input.in_features
        dtype, device = w_in.dtype, w_in.device
        zeros = partial(torch.zeros, dtype=dtype, device=device)
        # every hidden synapse at once: presynaptic x~_t = [x_t, 1, z_{t-1}] against W = [W_in, b_in, W_rec]
        parts = [w_in.detach()] + ([b_in.detach()[:, None]] if b_in is not None else [])
        weight_t = torch.cat(parts + [neuron.recurrent.weight.detach()], 1).t().contiguous()
        width = weight_t.shape[0]
        recurrent = slice(width - size, width)
        pre = zeros(batch, width)
        if b_in is not None:
            pre[:, n_in] = 1.0
        eps, v = torch.zeros_like(pre), zeros(batch, size)
        z, adaptation, zbar = torch.zeros_like(v), torch.zeros_like(v), torch.zeros_like(v)
        learn = self.modulator is None and self.train_recurrent
        modulated = self.modulator is not None
        regularised = learn and self.rate_cost > 0
        if regularised:  # sum_{b,t} e_t and the spike count per neuron
            rate_hebbian, spike_count = zeros(size, width), zeros(size)
        # three ways to meet the learning signal: "factorised" (plain LIF, kappa = 0: psi_t eps_t per loss step),
        # "filtered" (plain LIF, kappa > 0: the kappa-filtered traces advanced once per chunk of steps),
        # "stepwise" (ALIF: the per-synapse eps^a advanced at every step)
        stepwise = bool(adapt) and (learn or modulated)
        filtered = learn and kappa > 0 and not stepwise
        if stepwise:
            eps_a = zeros(batch, size, width)
            ebar = zeros(batch, size, width) if kappa and learn else None
        if filtered:
            ebar = None  # e-bar at the end of the previous chunk; zero (not allocated) before the first chunk ends
        grad_hidden = zeros(size, width)
        grad_out = torch.zeros_like(self.output.weight)
        grad_out_bias = None if self.output.bias is None else torch.zeros_like(self.output.bias)
        feedback = self.feedback_matrix()
        if modulated:
            hebbian = torch.zeros_like(grad_hidden)
            pre_mean, psi_mean = torch.zeros_like(pre), torch.zeros_like(v)
        chunk = 1 if stepwise else min(self.chunk, steps if filtered else loss_steps)
        buffer_z = zeros(chunk, batch, size)
        buffer_psi = zeros(chunk, batch, size) if learn and not stepwise else None
        buffer_trace = zeros(chunk, batch, size, width) if learn and stepwise else (
            zeros(chunk, batch, width) if learn else None)
        rows: list[int] = []  # the buffered steps' times
        totals: dict[str, Any] = {"readout": 0.0, "error": 0.0, "loss": zeros(())}
        w_out = self.output.weight.detach()
        b_out = None if self.output.bias is None else self.output.bias.detach()

        def flush() -> None:
            nonlocal ebar
            count = len(rows)
            hits = [i for i, t in enumerate(rows) if t >= first_loss]
            if hits:
                index = torch.tensor(hits, device=device)
                zs = buffer_z[:count].index_select(0, index)
                readouts = zs @ w_out.t()
                # the bias enters the leaky read-out as 1 + kappa + ... + kappa^t
                bias_gain = (1.0 - kappa ** (torch.tensor(rows, dtype=dtype, device=device)[index] + 1)) / (1.0 - kappa)
                if b_out is not None:
                    readouts += bias_gain[:, None, None] * b_out
                errors, losses = self._errors(loss_fn, readouts, loss_steps)
                totals["readout"] = totals["readout"] + readouts.sum(0)
                totals["error"] = totals["error"] + errors.sum(0)
                totals["loss"] += losses.sum()
                grad_out.addmm_(errors.reshape(-1, errors.shape[-1]).t(), zs.reshape(-1, size))
                if grad_out_bias is not None:
                    grad_out_bias.add_(errors.sum(1).t() @ bias_gain)
            if not learn:
                pass
            elif stepwise:
                if hits:  # L_t e-bar_t, summed over the batch
                    grad_hidden.add_(torch.einsum("cbj,cbji->ji", errors @ feedback, buffer_trace[:count]))
            elif not filtered:
                if hits:
                    signal = (errors @ feedback).mul_(buffer_psi[:count])  # L_t ⊙ psi_t, (c, N, n)
                    grad_hidden.addmm_(signal.reshape(-1, size).t(), buffer_trace[:count].reshape(-1, width))
            else:
                psi, traces = buffer_psi[:count], buffer_trace[:count]
                lag = torch.arange(count, device=device, dtype=dtype)
                if hits:
                    signal = zeros(count, batch, size)
                    signal[index] = errors @ feedback  # L_t, zero off the loss steps
                    # carried over: sum_t kappa^(t - t0 + 1) L_t ⊙ e-bar_{t0 - 1}
                    if ebar is not None:
                        carried = torch.einsum("t,tbj->bj", kappa ** (lag + 1), signal)
                        grad_hidden.add_(torch.einsum("bj,bji->ji", carried, ebar))
                    # within the chunk: sum_s psi_s eps_s ⊗ (sum_{t >= s} kappa^(t - s) L_t)
                    delay = lag[None, :] - lag[:, None]
                    filt = torch.where(delay >= 0, kappa ** delay.clamp(min=0), torch.zeros((), dtype=dtype))
                    backward = torch.einsum("st,tbj->sbj", filt, signal).mul_(psi)
                    grad_hidden.addmm_(backward.reshape(-1, size).t(), traces.reshape(-1, width))
                if rows[-1] < steps - 1:  # e-bar_{t1} = kappa^c e-bar_{t0 - 1} + sum_s kappa^(t1 - s) psi_s eps_s
                    weighted = psi * (kappa ** (count - 1 - lag))[:, None, None]
                    if ebar is None:
                        ebar = torch.bmm(weighted.permute(1, 2, 0), traces.transpose(0, 1))
                    else:
                        ebar.mul_(kappa ** count).baddbmm_(weighted.permute(1, 2, 0), traces.transpose(0, 1))
            rows.clear()

        for t in range(steps):
            pre[:, :n_in] = inputs[t]
            pre[:, recurrent] = z
            eps.mul_(beta).add_(pre)
            u = torch.addmm(v.mul_(beta), pre, weight_t)
            threshold = adaptation.mul(adapt).add_(theta) if adapt else theta
            z = (u >= threshold).to(dtype)
            loss_step = t >= first_loss
            psi = pseudo_derivative(u, threshold, slope) if (loss_step or stepwise or filtered or modulated
                                                             or regularised) else None
            if stepwise:
                trace = torch.sub(eps[:, None, :], eps_a, alpha=adapt).mul_(psi[:, :, None])  # e_t
                # eps^a_{t+1} = psi_t eps_t + (rho - psi_t beta_a) eps^a_t
                eps_a.mul_((rho - adapt * psi)[:, :, None]).addcmul_(psi[:, :, None], eps[:, None, :])
                if modulated:
                    hebbian.add_(trace.sum(0), alpha=1.0 / batch)
                if regularised:
                    rate_hebbian.add_(trace.sum(0))
                if ebar is not None:
                    trace = ebar.mul_(kappa).add_(trace)
            elif modulated:
                hebbian.addmm_(psi.t(), eps, alpha=1.0 / batch)
            elif regularised:
                rate_hebbian.addmm_(psi.t(), eps)
            if regularised:
                spike_count.add_(z.sum(0))
            if modulated:
                pre_mean.add_(pre, alpha=1.0 / steps)
                psi_mean.add_(psi, alpha=1.0 / steps)
            if kappa:
                zbar.mul_(kappa).add_(z)
            if loss_step or filtered:
                filled = len(rows)
                buffer_z[filled] = zbar if kappa else z
                if learn:
                    buffer_trace[filled] = trace if stepwise else eps
                    if buffer_psi is not None:
                        buffer_psi[filled] = psi
                rows.append(t)
                if len(rows) == chunk or t == steps - 1:
                    flush()
            v = u.sub_(threshold * z) if adapt else u.sub_(z, alpha=theta)
            if adapt:
                adaptation.mul_(rho).add_(z)
        if regularised:  # c (f_j - f_target) / (N T) sum_{b,t} e_t^{ji}
            deviation = spike_count / (batch * steps) - self.rate_target
            grad_hidden.addcmul_(deviation[:, None], rate_hebbian, value=self.rate_cost / (batch * steps))
            totals["loss"] += 0.5 * self.rate_cost * deviation.square().sum()
        grads = {"output.weight": grad_out}
        if grad_out_bias is not None:
            grads["output.bias"] = grad_out_bias
        if self.train_recurrent:
            grads["input.weight"] = grad_hidden[:, :n_in].contiguous()
            if b_in is not None:
                grads["input.bias"] = grad_hidden[:, n_in].contiguous()
            grads["recurrent.weight"] = grad_hidden[:, recurrent].contiguous()
        self.grads = {name: grads[name] for name in self.parameters()}
        self.loss = float(totals["loss"])
        self._readout = totals["readout"] / loss_steps
        if modulated:
            self._window = {"hebbian": {"input": hebbian[:, :n_in], "recurrent": hebbian[:, recurrent]},
                            "presynaptic": {"input": pre_mean[:, :n_in], "recurrent": pre_mean[:, recurrent]},
                            "psi": psi_mean, "error": totals["error"]}
        else:
            self._window = {"error": totals["error"]}
        return self._readout

    def eligibility(self, kind: str) -> Tensor:
        """The window's e-prop eligibility ``E = mean_n sum_t e_t`` of the ``"input"`` or ``"recurrent"`` weights
        (kept only when a ``modulator`` replaces the learning signal), shaped like the weight."""
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
        leak = f", readout_decay={self.readout_decay:g}" if self.readout_decay else ""
        leak += f", rate_cost={self.rate_cost:g}, rate_target={self.rate_target:g}" if self.rate_cost else ""
        return f"EProp({signal}, loss_steps={self.loss_steps}{leak}, train_recurrent={self.train_recurrent})"
