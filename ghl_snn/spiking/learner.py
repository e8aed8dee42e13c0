"""ThreeFactor: online three-factor learning for a [`SpikingNetwork`][ghl_snn.SpikingNetwork].

During a window each plastic synapse keeps only two per-neuron traces, its input ``x_bar_t`` and its bias-free
current ``y_bar_t = W x_bar_t`` (``pre_trace``; recorded by [`ghl_snn.spiking.recorder`][]); the weight-sized
products are formed **once per window**, in [`ThreeFactor.step`][ghl_snn.spiking.learner.ThreeFactor.step]:

* the eligibility ``E = rule(x_bar_T, y_bar_T, W)`` of any [`EligibilityRule`][ghl_snn.EligibilityRule] (default
  SWTA-Oja, GHL Eq. 4: ``E_ik = mean_n u_nk (x_bar_ni - y_bar_nk w_ik)``, ``u = softmax(y_bar / tau)``; for Conv2d
  through the weight-gradient convolution);
* the per-synapse credit of a per-neuron modulator, ``sum_n delta_nk x_bar_ni`` (see
  [`ghl_snn.modulators.credit`][]).

``eligibility="step"`` instead accumulates a decaying eligibility trace ``E_t = lambda E_{t-1} + e_t`` at every step
(for a third factor that arrives later; see [`ghl_snn.spiking.recorder`][]); ``E_T / sum_k lambda^k`` is the
rate-comparable eligibility ([`ThreeFactor.eligibility`][ghl_snn.spiking.learner.ThreeFactor.eligibility]).  A timing
rule (the STDP family of [`ghl_snn.rules.timing`][]) keeps its own ``E``, which ``step`` reads like any other.  Either
way memory does not grow with ``T``.

At the end of the window [`ThreeFactor.step`][ghl_snn.spiking.learner.ThreeFactor.step] asks the modulator for
``M`` and writes ``M ⊙ |E|`` (``E`` max-normalised per layer by default) into ``weight.grad``; any ``torch.optim``
optimiser then applies ``W <- W - eta grad``.  Where the global signal comes from (``global_signal``):

* ``"rate"`` (default, online): one backward pass through
  [`SpikingNetwork.rate_surrogate`][ghl_snn.spiking.network.SpikingNetwork.rate_surrogate] at the observed window means
  (the neurons' real f-I curves), only when the modulator needs ``dL/dW`` (GradSign: exact GHL in the rate limit) or
  ``dL/dy`` (NeuronSign).  FeedbackSign needs only the output error ``e = dL/d(read-out)``, which the learner computes
  from ``loss_fn``; RewardSign needs the reward and the chosen action (keywords of ``step``).
* ``"bptt"`` (comparison): ``run`` keeps the autograd graph through time (surrogate spike gradients); the
  caller back-propagates the loss and GradSign reads the BPTT ``weight.grad``.  Memory grows with ``T``.

**A network as its author wrote it** (an snntorch or norse model driven by the user's own time loop): the hooks
record across that loop and ``step(readout=..., loss_fn=...)`` ends the window (the read-out is the user's
time-averaged output).  Without a [`SpikingNetwork`][] there is no rate surrogate and no f-I slope: use modulators
that need neither (FeedbackSign, FeedbackAlignment, the reward rules with ``feedback="learned"`` or ``"random"``)
or ``global_signal="bptt"`` after the user's ``loss.backward()`` (GradSign).

**Data parallelism** (``torch.distributed`` initialised, e.g. under ``torchrun``, each process running its shard of
the batch): [`ThreeFactor.step`][ghl_snn.spiking.learner.ThreeFactor.step] averages over the processes, as DDP
averages gradients, everything that is a batch mean -- the eligibility ``E`` before its normalisation, the rate
surrogate's ``dL/dW`` (and the gradients it writes into other parameters), a per-neuron modulator's credit
``sum_n delta_nk x_bar_ni`` -- so that every replica writes the identical update (with equal shards, that of one
process on the whole batch).  Every process must call ``step`` and ``eligibility`` in the same order.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..guards import DeferredChecks, NonFinite
from ..modulators.base import LayerSignals, Modulator
from ..modulators.feedback_sign import FeedbackSign
from ..modulators.grad_sign import GradSign
from ..ops.data_parallel import replica_count, replica_mean
from ..plasticity.base import Learner, RuleSpec
from ..selection import LayerSelector, PlasticityWarning, is_attention
from ..rules.base import Normalization, normalize_eligibility
from .encoders import check_num_steps
from .network import SpikingNetwork
from ._update_buffers import UpdateBuffers
from .spike_timing import SpikeTiming
from .recorder import WindowRecorder
from .traces import PreTrace, SynapseTrace, check_pre_trace, check_trace_decay

LossFn = Callable[[Tensor], Tensor]
GlobalSignal = Literal["rate", "bptt"]
"""Where ``dL/dW`` comes from: ``"rate"`` (one backward pass through the rate surrogate, online) or ``"bptt"``."""
EligibilityMode = Literal["window", "step"]
"""``"window"`` (E once per window from the traces) or ``"step"`` (a decaying eligibility trace, every step)."""


class ThreeFactor(Learner):
    """Online three-factor learner for spiking networks (see the module docstring).

    Args:
        network: a [`SpikingNetwork`][], or any spiking ``nn.Module`` as its author wrote it (an snntorch or norse
            model driven by its own time loop; then call ``step(readout=..., loss_fn=...)`` after the loop).
        modulator: the third factor (default [`GradSign`][ghl_snn.GradSign] on a [`SpikingNetwork`][];
            [`FeedbackSign`][ghl_snn.FeedbackSign] on any other model, where no rate surrogate gives ``dL/dW``).
        tau: SWTA softmax temperature (> 0) of the default rule (a float, a ``{layer: tau}`` mapping or a function,
            as in [`GHL`][ghl_snn.GHL]).
        layers: which synapses are plastic (as in [`GHL`][ghl_snn.GHL]; default every Linear and ConvNd).
        normalize: ``"max"`` (per-layer ``E / max|E|``, the GHL reference) or ``None``, for the default rule.
        trace_decay: ``lambda`` in ``(0, 1]`` of the eligibility trace (``eligibility="step"`` only).
        pre_trace: ``"mean"`` or an exponential decay ``alpha`` in ``[0, 1)``.
        global_signal: ``"rate"`` (online, no BPTT) or ``"bptt"`` (surrogate-gradient BPTT, for comparison).
        rule: any [`EligibilityRule`][ghl_snn.EligibilityRule] used for every plastic synapse instead of SWTA-Oja,
            or a ``(name, module) -> rule`` factory (``tau`` and ``normalize`` are then ignored; the rule's own
            ``normalize`` applies), e.g. a HebbFF rule.
        eligibility: ``"window"`` (default: ``E`` once per window from the end-of-window traces) or ``"step"``
            (``E_t = lambda E_{t-1} + rule(x_bar_t, y_bar_t, W)`` every step, for delayed modulation).
        strict, nonfinite: the guards shared by every learner ([`UpdateGuard`][ghl_snn.guards.UpdateGuard]): a
            selected layer without a forward warns (``strict``: raises); NaN / Inf in the input, a weight, the loss,
            a modulator signal or the update raises ``FloatingPointError`` naming the layer (``"skip"``: warns and
            writes nothing); frozen weights are never written; an empty batch is refused.

    Exact vs approximate: with GradSign (or NeuronSign, which then gives the same per-synapse sign) and
    ``pre_trace="mean"`` the update converges to the rate GHL update of
    [`ghl_snn.equivalence.to_rate_network`][ghl_snn.to_rate_network] at the observed input rates as ``T`` grows;
    FeedbackSign and RewardSign are approximations (see their modules).

    Examples:
        A spiking MLP learning online (no backprop through time) from the sign of its rate-surrogate gradient:

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor
        >>> net = SpikingNetwork(nn.Linear(8, 16, bias=False), IF(), nn.Linear(16, 3, bias=False))
        >>> learner = ThreeFactor(net)                                 # GradSign * |E_SWTA-Oja|
        >>> optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> readout = learner.run(x, num_steps=20, encoder=BernoulliEncoder())   # traces only, memory flat in T
        >>> learner.step(loss_fn=lambda out: F.cross_entropy(out, y))  # writes weight.grad once per window
        >>> optimizer.step()
        >>> readout.shape
        torch.Size([4, 3])

        On a model written with its own time loop (snntorch, norse), run the loop and pass the read-out; the default
        third factor there is FeedbackSign:

        >>> import snntorch
        >>> model = nn.Sequential(nn.Linear(8, 16, bias=False), snntorch.Leaky(beta=0.9, init_hidden=True),
        ...                       nn.Linear(16, 3, bias=False))
        >>> learner = ThreeFactor(model)
        >>> out = sum(model(x) for _ in range(10)) / 10                # your loop; hooks record the traces
        >>> learner.step(readout=out, loss_fn=lambda o: F.cross_entropy(o, y))
        >>> type(learner.modulator).__name__
        'FeedbackSign'
    """

    def __init__(self, network: SpikingNetwork, modulator: Modulator | None = None, tau: float = 1.0,
                 layers: LayerSelector = None, normalize: Normalization = "max", trace_decay: float = 1.0,
                 pre_trace: PreTrace = "mean", global_signal: GlobalSignal = "rate",
                 rule: RuleSpec = None, eligibility: EligibilityMode = "window", strict: bool = False,
                 nonfinite: NonFinite = "raise") -> None:
        if global_signal not in ("rate", "bptt"):
            raise ValueError(f"global_signal must be 'rate' or 'bptt', got {global_signal!r}")
        if eligibility not in ("window", "step"):
            raise ValueError(f"eligibility must be 'window' or 'step', got {eligibility!r}")
        self.attached = not isinstance(network, SpikingNetwork)
        if modulator is None:  # a model as written has no rate surrogate for dL/dW: feedback of the output error
            modulator = FeedbackSign() if self.attached and global_signal == "rate" else GradSign()
        super().__init__(network, layers, modulator, rule, tau, normalize, strict, nonfinite)
        self.modulator: Modulator = modulator
        self.network = network
        self.trace_decay = check_trace_decay(trace_decay)
        if self.trace_decay != 1.0 and eligibility == "window":
            raise ValueError("trace_decay < 1 needs eligibility='step' (a decaying eligibility trace is updated "
                             "every step)")
        self.pre_trace = check_pre_trace(pre_trace)
        self.global_signal = global_signal
        self.eligibility_mode = eligibility
        attention = [name for name, module in self.layers.items() if is_attention(module)]
        if attention:
            raise TypeError(f"ThreeFactor records synapses through forward hooks; attention layers ({attention}) "
                            "are plastic under GHL only: exclude them with layers=...")
        if self.attached:
            if global_signal == "rate" and (self.modulator.needs_weight_grad or self.modulator.needs_output_grad):
                raise ValueError(f"{type(self.modulator).__name__} needs the rate surrogate of a SpikingNetwork; on "
                                 f"{type(network).__name__} use a modulator without a backward pass, e.g. "
                                 f"ThreeFactor(net, FeedbackSign()) (the default there), or "
                                 "global_signal='bptt' after your own loss.backward()")
            biased = [name for name, module in self.layers.items()
                      if getattr(module, "bias", None) is not None and module.bias.requires_grad]
            if biased:
                warnings.warn(f"ThreeFactor updates the weights of {type(network).__name__}'s plastic layers only: the "
                              f"biases of {', '.join(biased)} get no update from it (build those layers with "
                              "bias=False, or train the biases with another optimiser)", PlasticityWarning,
                              stacklevel=2)
        else:
            not_children = set(self.layers) - set(network.synapses())
            if not_children:
                raise ValueError(f"plastic layers must be top-level synapses of the SpikingNetwork, got "
                                 f"{not_children}")
        self.rule = rule
        self.output_layer = list(self.layers)[-1] if self.attached else list(network.synapses())[-1]
        self.readout: Tensor | None = None
        self._update_buffers = UpdateBuffers()  # each layer's E, |E| and update in step()
        self._scales: dict[str, Tensor] = {}  # max|E| of each layer's last "max"-normalised E (see _signal_checks)
        timing = rule is not None and rule.timing
        if timing and self.trace_decay != 1.0:
            raise ValueError(f"{type(rule).__name__} keeps its own eligibility trace: leave trace_decay at 1")
        self.recorder = WindowRecorder(network, self.layers, self.rules, self.attached, self.pre_trace,
                                       self.eligibility_mode, self.trace_decay, bool(timing))

    # ------------------------------------------------------------------ the window
    @property
    def traces(self) -> dict[str, SynapseTrace]:
        """Each plastic layer's traces of the current window (see [`ghl_snn.spiking.recorder`][])."""
        return self.recorder.traces

    @property
    def timing(self) -> SpikeTiming | None:
        """The timing rule's per-layer state (``None`` for a rate rule)."""
        return self.recorder.timing

    def reset(self) -> None:
        """Clear every trace (start of a presentation window)."""
        self.recorder.reset()
        self.readout = None

    def run(self, x: Tensor, num_steps: int, encoder: Callable[[Tensor], Tensor] | None = None,
            reset: bool = True) -> Tensor:
        """Reset the network and traces (unless ``reset=False``), present ``x`` for ``num_steps`` steps and return
        the time-averaged read-out.  Runs without autograd for ``global_signal="rate"`` (memory flat in ``T``);
        with ``"bptt"`` the returned read-out carries the graph through time."""
        num_steps = check_num_steps(num_steps)
        if self.attached:
            raise TypeError("run() drives a SpikingNetwork; for your own model call it in your time loop (the "
                            "traces are recorded by hooks) and then step(readout=...)")
        self.guard.batch(x)
        if reset:
            self.reset()
        x = self.recorder.queue_input_checks(x, encoder)
        if self.global_signal == "bptt":  # the caller back-propagates through the window before step(): read now
            self.recorder.verify_input(self.guard)
        self.recorder.recording = True
        try:
            with torch.set_grad_enabled(self.global_signal == "bptt" and torch.is_grad_enabled()):
                readout = self.network.run(x, num_steps, encoder, record=True, reset=reset)
        finally:
            self.recorder.recording = False
        self.recorder.read_record(self.network)
        self.readout = readout
        return readout

    def eligibility(self, name: str, normalized: bool = False) -> Tensor:
        """Batch-mean eligibility of layer ``name``, shaped like its weight (rule-normalised if asked), averaged
        over data-parallel replicas before the normalisation (see the module docstring).

        ``eligibility="window"``: ``rule(x_bar_T, y_bar_T, W)``; ``"step"``: ``E_T / sum_k lambda^k``; a timing
        rule: its own ``E_T`` (the window's sum over spike pairs, or its decaying trace)."""
        if name not in self.traces:
            raise KeyError(f"{name!r} is not a plastic layer of this ThreeFactor; its layers (the names "
                           f"eligibility() takes): {list(self.traces)}")
        self.recorder.verify_input(self.guard)
        return self._eligibility(name, normalized)

    def _eligibility(self, name: str, normalized: bool, buffered: bool = False) -> Tensor:
        """[`eligibility`][] without reading the input checks; a freshly computed ``E`` is normalised in place.
        ``buffered``: the learner's own SWTA-Oja ``E`` of a Linear layer is written into a buffer the learner keeps
        from window to window (for step(): no weight-sized allocation)."""
        state = self.traces[name]
        if state.x_bar is None:
            raise RuntimeError(f"no traces for {name!r}: call run() first")
        rule = self.rules[name]
        if self.timing is not None:
            eligibility = self.timing.eligibility(name)
            if eligibility is None:
                raise RuntimeError(f"no post-synaptic spikes reached layer {name!r} in this window")
        elif self.eligibility_mode == "step":
            eligibility = state.eligibility / state.weight_sum
        else:
            out = None
            if buffered and self.rule is None and isinstance(self.layers[name], nn.Linear):
                weight = self.layers[name].weight
                out = self._update_buffers.eligibility(name, weight)
            with torch.no_grad():
                eligibility = rule(self.layers[name], state.x_bar, state.y_bar, out=out)
        eligibility = replica_mean(eligibility)
        fresh = self.rule is None  # the learner's own SWTA-Oja returns a new tensor: normalised in place
        if normalized and fresh and rule.normalize == "max":  # normalize_eligibility's "max", keeping the scale:
            low, high = torch.aminmax(eligibility)  # max|E| is non-finite exactly when E is (NaN propagates),
            scale = self._scales[name] = torch.maximum(high, -low)  # so step() checks E through it
            return eligibility.div_(torch.where(scale > 0, scale, torch.ones_like(scale)))
        self._scales.pop(name, None)
        return normalize_eligibility(eligibility, rule.normalize, inplace=fresh) if normalized else eligibility

    # ------------------------------------------------------------------ global signal and update
    def _rate_backward(self, loss_fn: LossFn, checks: DeferredChecks
                       ) -> tuple[dict[str, Tensor], dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
        """``dL/dW`` and ``dL/dy`` of the plastic layers through the rate surrogate, and the (parameter, gradient)
        pairs of the other parameters, to be written once the checks (the loss's queued in ``checks``) pass."""
        names = [name for name in self.layers if self.layers[name].weight.requires_grad]
        with torch.enable_grad():
            output, currents = self.network.rate_surrogate()
            loss = loss_fn(output)
            checks.finite(list(self.layers), "loss", loss)
            others = [p for p in self.network.parameters()
                      if p.requires_grad and all(p is not m.weight for m in self.layers.values())]
            wanted = [self.layers[n].weight for n in names] + [currents[n] for n in names] + others
            grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        replicas = replica_count()  # each replica's loss is that of its shard: average as DDP averages gradients
        other_grads = [(param, replica_mean(grad.detach(), replicas))
                       for param, grad in zip(others, grads[2 * len(names):]) if grad is not None]
        weight_grads = {n: replica_mean(g, replicas) for n, g in zip(names, grads[:len(names)]) if g is not None}
        output_grads = {n: g for n, g in zip(names, grads[len(names):2 * len(names)]) if g is not None}
        return weight_grads, output_grads, other_grads

    @torch.no_grad()
    def step(self, loss_fn: LossFn | None = None, readout: Tensor | None = None, **context: Any) -> None:
        """Write the modulator's update (``M ⊙ |E|``) into every plastic weight's ``.grad`` (end of the window).

        ``loss_fn(read-out) -> loss`` supplies the global signal (see the module docstring); ``readout`` is the
        time-averaged output of a model driven by the user's own loop (default: that of [`run`][]); other keyword
        arguments (``reward=...``, ``action=...``, ``error=...``) are passed to the modulator.
        """
        if readout is not None:
            self.readout = readout.detach()
        silent = [name for name, trace in self.traces.items() if trace.x_bar is None]
        if len(silent) == len(self.traces):
            raise RuntimeError("ThreeFactor.step() called before run(): no traces were accumulated")
        self.guard.silent(map(repr, silent))
        try:
            self._step(loss_fn, [name for name in self.layers if name not in silent], context)
        finally:
            if self.attached:  # the user's next time loop starts a new window
                self.reset()

    def _skip_all(self, names: list[str]) -> None:
        """``nonfinite="skip"`` of a signal every layer shares: no plastic weight gets an update this window."""
        for name in names:
            self.layers[name].weight.grad = None

    def _step(self, loss_fn: LossFn | None, names: list[str], context: dict[str, Any]) -> None:
        """[`step`][] for the layers ``names`` that recorded traces.

        Every layer's update is computed before any is written, and every check -- run()'s input checks, the loss,
        the modulator's signals, each layer's ``E``, traces, weight and update -- is read back in one transfer
        (one host read per window).  When one fails, the modulator's state is restored (from its
        ``state_dict``) and the layers that passed are updated anew from their checked signals, so that neither
        the modulator nor a weight ever takes in a non-finite number."""
        # run()'s input checks come first; they stay queued until a read does not raise
        checks, inputs = DeferredChecks(self.recorder.input_checks), len(self.recorder.input_checks)
        if self.recorder.bad_input:  # reported when the input checks were read
            return self._skip_all(names)
        if self.readout is None:
            raise RuntimeError("ThreeFactor.step() needs the read-out: pass step(readout=...) (the time-averaged "
                               "output of your model)")
        needs_grad = self.modulator.needs_weight_grad or self.modulator.needs_output_grad
        weight_grads: dict[str, Tensor] = {}
        output_grads: dict[str, Tensor] = {}
        other_grads: list[tuple[Tensor, Tensor]] = []
        if self.global_signal == "rate" and needs_grad:
            surrogate_loss = self.modulator.rate_loss(**context) or loss_fn
            if surrogate_loss is None:
                raise ValueError(f"{type(self.modulator).__name__} needs a loss: call step(loss_fn=...)")
            weight_grads, output_grads, other_grads = self._rate_backward(surrogate_loss, checks)
        elif self.global_signal == "bptt" and self.modulator.needs_weight_grad:
            # the mean over replicas is a no-op for a model wrapped in DDP (its backward averaged them already)
            replicas = replica_count()
            weight_grads = {n: replica_mean(m.weight.grad, replicas) for n, m in self.layers.items()
                            if m.weight.grad is not None}
        if loss_fn is not None and "error" not in context:
            with torch.enable_grad():
                leaf = self.readout.detach().float().requires_grad_(True)
                loss = loss_fn(leaf)
                checks.finite(names, "loss", loss)
                (context["error"],) = torch.autograd.grad(loss, leaf)
        for key, value in context.items():  # the modulator's keyword signals (numbers: checked here, no read)
            if isinstance(value, (float, int)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    self.guard.non_finite(names, f"modulator signal {key}=")
                    return self._skip_all(names)
            elif isinstance(value, Tensor):
                checks.finite(names, f"modulator signal {key}=", value)
        readout = self.readout.detach()
        snapshot = self.modulator.state_dict()
        self.begin_step(tuple(names), readout)
        layers: dict[str, LayerSignals] = {}
        updates: dict[str, Tensor] = {}
        failure: Exception | None = None
        try:
            for name in names:
                if self.guard.frozen(name, self.layers[name].weight):
                    continue
                signals = layers[name] = self._layer_signals(name, weight_grads, output_grads, readout)
                for cause, tensors in self._signal_checks(signals):
                    checks.finite(name, cause, *tensors)
                updates[name] = self._update_buffers.update(self.modulator, signals, **context)
                checks.finite(name, "update", updates[name])
        except Exception as error:  # a non-finite signal the modulator could not digest gets the guard's report
            failure = error
        try:
            skipped = self.guard.verify(checks)
        except Exception:
            self.modulator.load_state_dict(snapshot)
            raise
        self.recorder.input_checks = DeferredChecks()
        self.recorder.bad_input = any(index < inputs for index in checks.failed)
        if failure is not None and not skipped:
            self.modulator.load_state_dict(snapshot)
            raise failure
        if not skipped:
            for param, grad in other_grads:
                self.guard.write(param, grad)
            for name, update in updates.items():
                self._update_buffers.write(name, self.layers[name].weight, update)
            return None
        self.modulator.load_state_dict(snapshot)  # it took in what failed: back to its state before this step
        for name in skipped & set(names):
            self.layers[name].weight.grad = None
        if set(names) <= skipped:
            return None
        for param, grad in other_grads:  # the loss passed (a shared signal's failure skips every layer)
            self.guard.write(param, grad)
        for name in names:  # anew, on checked signals only (reads here: a failure happened)
            if name in skipped or self.guard.frozen(name, self.layers[name].weight):
                continue
            signals = layers.get(name) or self._layer_signals(name, weight_grads, output_grads, readout)
            if self.guard.check(name, *self._signal_checks(signals)):
                self.guard.write_grad(name, signals.module.weight, self.modulator.update(signals, **context))
            else:
                signals.module.weight.grad = None
        return None

    def _layer_signals(self, name: str, weight_grads: dict[str, Tensor], output_grads: dict[str, Tensor],
                       readout: Tensor) -> LayerSignals:
        """What the modulator reads about layer ``name`` (its normalised ``E`` computed here)."""
        module = self.layers[name]
        neuron = None if self.attached else self.network.neuron_after(name)
        slope = neuron.rate_slope(self.network.neuron_current(name)) if neuron is not None else None
        eligibility = (self._eligibility(name, normalized=True, buffered=True) if self.modulator.needs_eligibility
                       else torch.zeros_like(module.weight, dtype=torch.float32))
        return LayerSignals(name=name, module=module, eligibility=eligibility, weight_grad=weight_grads.get(name),
                            output_grad=output_grads.get(name), inputs=self.traces[name].x_bar,
                            is_output=name == self.output_layer, post_slope=slope)

    def _signal_checks(self, signals: LayerSignals) -> tuple[tuple[str, tuple[Tensor | None, ...]], ...]:
        """The (cause, tensors) checks of what the modulator reads about one layer.  The learner's own SWTA-Oja
        ``E = U^T x_bar - F ⊙ W`` is non-finite wherever the weight or an input trace is (``NaN * F`` and
        ``inf * F`` are not finite, even for ``F = 0``), so its check covers both; another rule's ``E`` is checked
        beside them."""
        own_rule = self.rule is None and self.modulator.needs_eligibility
        # a "max"-normalised E is finite exactly when its scale max|E| is: one number instead of a weight-sized sum
        eligibility = self._scales.get(signals.name, signals.eligibility) if own_rule else signals.eligibility
        return (("eligibility E (the layer's input, traces or weight hold NaN/Inf)",
                 (eligibility,) if own_rule else (eligibility, signals.inputs, signals.module.weight)),
                (f"modulator signal of {type(self.modulator).__name__} (dL/dW or dL/dy: the loss or the backward "
                 "pass diverged)", (signals.weight_grad, signals.output_grad)))

    def remove(self) -> None:
        """Detach the hooks; the network is left unchanged."""
        self.recorder.remove()

    def __repr__(self) -> str:
        layers = ", ".join(f"{n}: {type(m).__name__}{tuple(m.weight.shape)}" for n, m in self.layers.items())
        rule = f"rule={self.rule!r}" if self.rule is not None else f"taus={self.taus}"
        return (f"ThreeFactor(modulator={self.modulator!r}, {rule}, eligibility={self.eligibility_mode!r}, "
                f"pre_trace={self.pre_trace!r}, trace_decay={self.trace_decay:g}, "
                f"global_signal={self.global_signal!r}, layers=[{layers}])")
