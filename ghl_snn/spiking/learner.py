"""ThreeFactor: online three-factor learning for a :class:`~ghl_snn.spiking.network.SpikingNetwork`.

During a presentation window of ``T`` steps every plastic synapse (``nn.Linear`` / ``nn.Conv2d``) keeps

* a **pre-synaptic trace** ``x_bar_t`` of its input spikes and the matching filtered current ``y_bar_t``
  (``= W x_bar_t`` without bias, obtained by filtering ``W s_t`` -- no extra matmul):
  ``pre_trace="mean"`` is the running mean ``x_bar_t = x_bar_{t-1} + (s_t - x_bar_{t-1}) / t`` (converges to the
  input rate; used by the equivalence layer), a float ``alpha`` in ``[0, 1)`` the exponential low-pass
  ``x_bar_t = alpha x_bar_{t-1} + (1 - alpha) s_t`` from zero (``alpha = 0``: raw spikes);
* an **eligibility trace** ``e_t = lambda e_{t-1} + E_t`` (``lambda = trace_decay``; ``1`` accumulates over the
  window) with the SWTA-Oja term of GHL Eq. 4 on the traces,
  ``E_t,ik = mean_n u_k (x_bar_i - y_bar_k w_ik)``, ``u = softmax(y_bar / tau)`` over output units / channels,
  computed by :func:`ghl_snn.rules.swta_oja.swta_oja_linear` / ``swta_oja_conv2d`` (for Conv2d the weight-gradient
  convolution: no unfold, no loops over neurons, synapses, batch or positions).

Memory is ``O(#weights + #neurons)`` and does not grow with ``T``.  ``e_T / sum_k lambda^k`` is the rate-comparable
eligibility (:meth:`ThreeFactor.eligibility`); it converges to the rate ``E`` of the equivalent rate network as
``T`` grows when ``pre_trace="mean"`` (error ~ ``1/sqrt(T)`` for Bernoulli input).

At the end of the window :meth:`ThreeFactor.step` receives the broadcast sign ``M`` of a modulator and writes
``M ⊙ |E|`` (``E`` max-normalised per layer by default) into ``weight.grad``; any ``torch.optim`` optimiser then
applies ``W <- W - eta grad``.  Where the global signal comes from (``global_signal``):

* ``"rate"`` (default, online): one backward pass through :meth:`SpikingNetwork.rate_surrogate` at the observed
  window means, only when the modulator needs ``dL/dW`` (GradSign: the rate network's gradient, exact GHL in the
  rate limit) or ``dL/dy`` (NeuronSign).  FeedbackSign and RewardSign need no backward pass at all: the learner
  only differentiates the loss w.r.t. the read-out to get the error ``e`` (FeedbackSign) and passes ``reward``.
* ``"bptt"`` (comparison): :meth:`run` keeps the autograd graph through time (surrogate spike gradients); the
  caller back-propagates the loss and GradSign reads the BPTT ``weight.grad``.  Memory grows with ``T``.

Usage::

    net = SpikingNetwork(nn.Linear(784, 256, bias=False), IF(), nn.Linear(256, 10, bias=False))
    learner = ThreeFactor(net, modulator=FeedbackSign(), tau=1.0)
    logits = learner.run(images, num_steps=20, encoder=BernoulliEncoder())
    learner.step(loss_fn=lambda out: F.cross_entropy(out, labels)); optimizer.step()
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..modulators.base import LayerSignals, Modulator
from ..modulators.grad_sign import GradSign
from ..selection import LayerSelector, select_layers
from ..rules.base import Normalization, check_normalization, check_tau, normalize_eligibility
from ..rules.swta_oja import swta_oja_conv2d, swta_oja_linear
from .encoders import check_num_steps
from .network import SpikingNetwork

PreTrace = Literal["mean"] | float
GlobalSignal = Literal["rate", "bptt"]
LossFn = Callable[[Tensor], Tensor]


@dataclass
class SynapseTrace:
    """Per-layer online state: pre-synaptic trace, filtered current, eligibility trace and its weight sum."""

    x_bar: Tensor | None = None
    y_bar: Tensor | None = None
    eligibility: Tensor | None = None
    weight_sum: float = 0.0
    steps: int = 0
    hebbian: Tensor | None = None
    forgetting: Tensor | None = None


def check_pre_trace(pre_trace: PreTrace) -> PreTrace:
    if pre_trace == "mean":
        return "mean"
    if isinstance(pre_trace, str) or not 0.0 <= float(pre_trace) < 1.0:
        raise ValueError(f"pre_trace must be 'mean' or a decay alpha in [0, 1), got {pre_trace!r}")
    return float(pre_trace)


def check_trace_decay(decay: float) -> float:
    decay = float(decay)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"trace_decay lambda must lie in (0, 1], got {decay!r}")
    return decay


def update_trace(state: SynapseTrace, module: nn.Module, spikes: Tensor, current: Tensor, tau: float,
                 pre_trace: PreTrace, decay: float, per_sample: bool = False) -> None:
    """One online step of a synapse's traces (see the module docstring); ``current`` is ``W s_t`` without bias.

    ``per_sample`` (Linear only) keeps one trace per sample instead of the batch mean: ``h_n <- lambda h_n +
    u_n x_bar_n^T`` (a batched outer product) and ``f_n <- lambda f_n + u_n * y_bar_n``, so that
    ``E_n = h_n - f_n[:, None] * W`` at the end of the window (memory ``O(N #weights)``, still flat in ``T``).
    """
    state.steps += 1
    if pre_trace == "mean":
        if state.x_bar is None:
            state.x_bar, state.y_bar = spikes.clone(), current.clone()
        else:
            rate = 1.0 / state.steps
            state.x_bar.add_(spikes - state.x_bar, alpha=rate)
            state.y_bar.add_(current - state.y_bar, alpha=rate)
    else:
        if state.x_bar is None:
            state.x_bar, state.y_bar = (1 - pre_trace) * spikes, (1 - pre_trace) * current
        else:
            state.x_bar.mul_(pre_trace).add_(spikes, alpha=1 - pre_trace)
            state.y_bar.mul_(pre_trace).add_(current, alpha=1 - pre_trace)
    weight = module.weight.detach().float()
    if per_sample:
        x_bar = state.x_bar.reshape(-1, state.x_bar.shape[-1])
        y_bar = state.y_bar.reshape(-1, state.y_bar.shape[-1])
        competition = torch.softmax(y_bar / tau, dim=1)
        if state.hebbian is None:
            state.hebbian = competition[:, :, None] * x_bar[:, None, :]
            state.forgetting = competition * y_bar
        else:
            state.hebbian.mul_(decay).baddbmm_(competition[:, :, None], x_bar[:, None, :])
            state.forgetting.mul_(decay).add_(competition * y_bar)
        state.eligibility = state.hebbian  # marks the trace as filled; combined with W in ThreeFactor.eligibility
        state.weight_sum = 1.0 + decay * state.weight_sum
        return
    if isinstance(module, nn.Conv2d):
        step = swta_oja_conv2d(state.x_bar, state.y_bar, weight, tau, module.stride, module.padding,
                               module.dilation)
    else:
        step = swta_oja_linear(state.x_bar.reshape(-1, state.x_bar.shape[-1]),
                               state.y_bar.reshape(-1, state.y_bar.shape[-1]), weight, tau)
    if state.eligibility is None:
        state.eligibility = step
    else:
        state.eligibility.mul_(decay).add_(step)
    state.weight_sum = 1.0 + decay * state.weight_sum


class ThreeFactor:
    """Online three-factor learner for spiking networks (see the module docstring).

    Args:
        network: a :class:`SpikingNetwork`.
        modulator: the broadcast sign (default :class:`~ghl_snn.modulators.GradSign`).
        tau: SWTA softmax temperature (> 0).
        layers: which synapses are plastic (as in :class:`~ghl_snn.GHL`; default every Linear / Conv2d).
        normalize: ``"max"`` (per-layer ``E / max|E|``, the GHL reference) or ``None``.
        trace_decay: ``lambda`` in ``(0, 1]`` of the eligibility trace.
        pre_trace: ``"mean"`` or an exponential decay ``alpha`` in ``[0, 1)``.
        global_signal: ``"rate"`` (online, no BPTT) or ``"bptt"`` (surrogate-gradient BPTT, for comparison).
        per_sample: keep one eligibility trace per sample (Linear synapses only) and write
            ``mean_n M_n ⊙ |E_n|``: needed by the per-neuron broadcast signs (NeuronSign, FeedbackSign,
            RewardSign), whose batch-summed sign carries almost no input-specific information.  Memory
            ``O(N #weights)``, still independent of ``T``.

    Exact vs approximate: with GradSign and ``pre_trace="mean"`` the update converges to the rate GHL update of
    :func:`ghl_snn.equivalence.to_rate_network` as ``T`` grows (exact GHL in the rate limit, for IF neurons);
    NeuronSign (per sample, presynaptic gate) equals per-sample GradSign of the rate surrogate for Linear layers;
    FeedbackSign and RewardSign are approximations (see their modules).
    """

    def __init__(self, network: SpikingNetwork, modulator: Modulator | None = None, tau: float = 1.0,
                 layers: LayerSelector = None, normalize: Normalization = "max", trace_decay: float = 1.0,
                 pre_trace: PreTrace = "mean", global_signal: GlobalSignal = "rate", per_sample: bool = False) -> None:
        if not isinstance(network, SpikingNetwork):
            raise TypeError(f"ThreeFactor needs a SpikingNetwork, got {type(network).__name__}")
        if global_signal not in ("rate", "bptt"):
            raise ValueError(f"global_signal must be 'rate' or 'bptt', got {global_signal!r}")
        self.network = network
        self.modulator = modulator if modulator is not None else GradSign()
        self.tau = check_tau(tau)
        self.normalize = check_normalization(normalize)
        self.trace_decay = check_trace_decay(trace_decay)
        self.pre_trace = check_pre_trace(pre_trace)
        self.global_signal = global_signal
        self.per_sample = bool(per_sample)
        self.layers = {name: module for name, module in select_layers(network, layers).items()}
        not_children = set(self.layers) - set(network.synapses())
        if not_children:
            raise ValueError(f"plastic layers must be top-level synapses of the SpikingNetwork, got {not_children}")
        if self.per_sample and any(isinstance(m, nn.Conv2d) for m in self.layers.values()):
            raise NotImplementedError("per_sample traces are implemented for nn.Linear synapses only; exclude the "
                                      "Conv2d layers with layers=... or use per_sample=False")
        self.output_layer = list(network.synapses())[-1]
        self.traces: dict[str, SynapseTrace] = {name: SynapseTrace() for name in self.layers}
        self.readout: Tensor | None = None
        self._recording = False
        self._handles = [module.register_forward_hook(self._make_hook(name)) for name, module in self.layers.items()]

    # ------------------------------------------------------------------ online traces
    def _make_hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if not self._recording:
                return
            with torch.no_grad():
                spikes, current = args[0].detach().float(), output.detach().float()
                if module.bias is not None:
                    bias = module.bias.detach().float()
                    current = current - (bias.view(1, -1, 1, 1) if isinstance(module, nn.Conv2d) else bias)
                update_trace(self.traces[name], module, spikes, current, self.tau, self.pre_trace,
                             self.trace_decay, self.per_sample)
        return hook

    def reset(self) -> None:
        """Clear every trace (start of a presentation window)."""
        self.traces = {name: SynapseTrace() for name in self.layers}
        self.readout = None

    def run(self, x: Tensor, num_steps: int, encoder: Callable[[Tensor], Tensor] | None = None,
            reset: bool = True) -> Tensor:
        """Reset the network and traces (unless ``reset=False``), present ``x`` for ``num_steps`` steps and return
        the time-averaged read-out.  Runs without autograd for ``global_signal="rate"`` (memory flat in ``T``);
        with ``"bptt"`` the returned read-out carries the graph through time."""
        num_steps = check_num_steps(num_steps)
        if reset:
            self.reset()
        self._recording = True
        try:
            with torch.set_grad_enabled(self.global_signal == "bptt" and torch.is_grad_enabled()):
                readout = self.network.run(x, num_steps, encoder, record=True, reset=reset)
        finally:
            self._recording = False
        self.readout = readout
        return readout

    def eligibility(self, name: str, normalized: bool = False) -> Tensor:
        """Rate-comparable eligibility ``e_T / sum_k lambda^k`` of layer ``name`` (max-normalised if asked).

        Batch mean shaped like the weight; with ``per_sample=True`` one per sample, ``(N, *weight.shape)``,
        normalised by the max of their batch mean (the same scale as the batch mode)."""
        state = self.traces[name]
        if state.eligibility is None:
            raise RuntimeError(f"no eligibility trace for {name!r}: call run() first")
        if self.per_sample:
            weight = self.layers[name].weight.detach().float()
            # one (N, out, in) allocation: h_n - f_n[:, None] * W, then in-place scaling
            eligibility = torch.addcmul(state.hebbian, state.forgetting[:, :, None], weight[None], value=-1.0)
            eligibility.div_(state.weight_sum)
            if normalized and self.normalize == "max":
                scale = eligibility.mean(0).abs().amax()
                eligibility.div_(torch.where(scale > 0, scale, torch.ones_like(scale)))
            return eligibility
        eligibility = state.eligibility / state.weight_sum
        return normalize_eligibility(eligibility, self.normalize) if normalized else eligibility

    # ------------------------------------------------------------------ global signal and update
    def _rate_backward(self, loss_fn: LossFn) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        names = list(self.layers)
        with torch.enable_grad():
            output, currents = self.network.rate_surrogate()
            loss = loss_fn(output)
            others = [p for p in self.network.parameters()
                      if p.requires_grad and all(p is not m.weight for m in self.layers.values())]
            wanted = [self.layers[n].weight for n in names] + [currents[n] for n in names] + others
            grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        for param, grad in zip(others, grads[2 * len(names):]):
            if grad is not None:
                param.grad = grad.detach().clone() if param.grad is None else param.grad.copy_(grad)
        weight_grads = {n: g for n, g in zip(names, grads[:len(names)]) if g is not None}
        output_grads = {n: g for n, g in zip(names, grads[len(names):2 * len(names)]) if g is not None}
        return weight_grads, output_grads

    @torch.no_grad()
    def step(self, loss_fn: LossFn | None = None, **context: Any) -> None:
        """Write ``M ⊙ |E|`` into every plastic weight's ``.grad`` (end of the window).

        ``loss_fn(read-out) -> loss`` supplies the global signal (see the module docstring); other keyword
        arguments (``reward=...``, ``error=...``) are passed to the modulator.
        """
        if self.readout is None or any(t.eligibility is None for t in self.traces.values()):
            raise RuntimeError("ThreeFactor.step() called before run(): no eligibility traces were accumulated")
        needs_grad = self.modulator.needs_weight_grad or self.modulator.needs_output_grad
        weight_grads: dict[str, Tensor] = {}
        output_grads: dict[str, Tensor] = {}
        if self.global_signal == "rate" and needs_grad:
            if loss_fn is None:
                raise ValueError(f"{type(self.modulator).__name__} needs a loss: call step(loss_fn=...)")
            weight_grads, output_grads = self._rate_backward(loss_fn)
        elif self.global_signal == "bptt" and self.modulator.needs_weight_grad:
            weight_grads = {n: m.weight.grad for n, m in self.layers.items() if m.weight.grad is not None}
        if loss_fn is not None and "error" not in context:
            with torch.enable_grad():
                leaf = self.readout.detach().float().requires_grad_(True)
                (context["error"],) = torch.autograd.grad(loss_fn(leaf), leaf)
        for name, module in self.layers.items():
            neuron = self.network.neuron_after(name)
            gate = None
            if neuron is not None:
                current = self.network.mean_outputs[name]
                gate = neuron.rate_gate(current)
            signals = LayerSignals(
                name=name, module=module, eligibility=self.eligibility(name, normalized=True),
                weight_grad=weight_grads.get(name), output_grad=output_grads.get(name),
                inputs=self.traces[name].x_bar,
                extra={"is_output": name == self.output_layer, "post_gate": gate, "per_sample": self.per_sample})
            update = self.modulator.update(signals, **context)
            if self.per_sample:
                update = update.mean(dim=0)
            update = update.to(module.weight.dtype)
            if module.weight.grad is None:
                module.weight.grad = update.expand_as(module.weight).clone()
            else:
                module.weight.grad.copy_(update)

    def remove(self) -> None:
        """Detach the hooks; the network is left unchanged."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "modulator": self.modulator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = check_tau(state.get("tau", self.tau))
        self.modulator.load_state_dict(state.get("modulator", {}))

    def __repr__(self) -> str:
        layers = ", ".join(f"{n}: {type(m).__name__}{tuple(m.weight.shape)}" for n, m in self.layers.items())
        return (f"ThreeFactor(modulator={self.modulator!r}, tau={self.tau:g}, pre_trace={self.pre_trace!r}, "
                f"trace_decay={self.trace_decay:g}, global_signal={self.global_signal!r}, layers=[{layers}])")
