"""[`GHL`][ghl_snn.GHL]: the rate-form plug-in as the GHL paper states it (Eq. 4-6, Algorithm 1) -- forward hooks
record ``E``, ``step()`` asks the modulator for ``M`` and writes ``M ⊙ |E|`` into ``.grad``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..guards import NonFinite, all_finite
from ..modulators.base import Modulator
from ..modulators.grad_sign import GradSign
from ..ops.data_parallel import replica_count, replica_mean
from ..rules.base import Normalization, bias_free, normalize_eligibility
from ..rules.stochastic import batch_subset, check_eligibility_fraction
from ..selection import LayerSelector, is_attention, plastic_weights
from .base import Learner, RuleSpec, TauSpec
from ._attention import attention_hooks, modulated_blocks
from ._capture import Capture, Projection, Synapse, autocast_off, keep_output_grad, signals_of
from ._fast_path import Accumulated, FastPath


def nonfinite_cause(eligibility: Tensor, modulator: Modulator) -> str:
    """What made a plastic weight's update non-finite (its ``E``, or the modulator's signal)."""
    if not bool(torch.isfinite(eligibility).all()):
        return "eligibility E (the layer's input, output or weight holds NaN/Inf)"
    return (f"modulator signal of {type(modulator).__name__} (dL/dW, dL/dy or the layer input holds NaN/Inf: the "
            "loss or the backward pass diverged)")


class GHL(Learner):
    """Global-guided Hebbian learning on any ``nn.Module`` (see [`ghl_snn.plasticity`][] for the update).

    Args:
        model: any ``nn.Module``; hooks are registered on the selected sub-layers.
        tau: SWTA softmax temperature (> 0): one float, a ``{layer name: tau}`` mapping (unlisted layers get 1.0)
            or a ``(name, module) -> tau`` function.  Ignored when ``rule`` is given.
        layers: which layers are plastic ([`ghl_snn.selection`][]; default every Linear, ConvNd and attention layer).
        normalize: how each layer's ``E`` is scaled: ``"max"`` (the reference), ``"mean"``, ``"rms"``, ``"channel"``,
            ``"channel-mean"`` or ``None`` ([`normalize_eligibility`][ghl_snn.rules.base.normalize_eligibility]).
        modulator: the third factor; default [`GradSign`][ghl_snn.GradSign] (exact GHL).
        rule: an [`EligibilityRule`][ghl_snn.EligibilityRule] for every layer instead of SWTA-Oja, or a
            ``(name, module) -> EligibilityRule`` factory (its own ``normalize`` applies).
        eligibility_fraction: ``f`` in ``(0, 1]``: ``E`` from a random ``ceil(f N)`` of the ``N`` samples.
        strict, nonfinite: the guards every learner shares ([`UpdateGuard`][ghl_snn.guards.UpdateGuard]).

    [`eligibility`][] and ``LayerSignals.name`` use the names of ``synapses``: a layer's name, and
    ``<layer>.<weight>`` for an attention layer's projections (``in_proj_weight`` or ``q_proj_weight`` /
    ``k_proj_weight`` / ``v_proj_weight``, ``out_proj.weight``; Swin: ``qkv.weight``, ``proj.weight``).

    Examples:
        GHL on the hidden layer of an MLP, backprop on the read-out, any optimiser:

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import GHL
        >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        >>> rule = GHL(model, tau=1.0, layers=["0"])
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        >>> x, y = torch.rand(32, 64), torch.randint(0, 10, (32,))
        >>> F.cross_entropy(model(x), y).backward()     # the global signal dL/dW (only its sign is used)
        >>> rule.step()                                 # weight.grad <- sign(dL/dW) * |E| on layer "0"
        >>> optimizer.step()
        >>> float(model[0].weight.grad.abs().max())     # |E| is max-normalised
        1.0
    """

    def __init__(self, model: nn.Module, tau: TauSpec = 1.0, layers: LayerSelector = None,
                 normalize: Normalization = "max", modulator: Modulator | None = None,
                 rule: RuleSpec = None,
                 eligibility_fraction: float = 1.0, strict: bool = False, nonfinite: NonFinite = "raise") -> None:
        super().__init__(model, layers, modulator, rule, tau, normalize, strict, nonfinite)
        self.modulator: Modulator = modulator if modulator is not None else GradSign()
        self.eligibility_fraction = check_eligibility_fraction(eligibility_fraction)
        self.synapses: dict[str, Synapse] = {}
        for name, module in self.layers.items():
            for path, (weight, groups) in plastic_weights(module).items():
                if is_attention(module):
                    key = f"{name}.{path}" if name else path
                    self.synapses[key] = Synapse(name, module, weight, groups, Projection(weight))
                else:
                    self.synapses[name] = Synapse(name, module, weight, groups, module)
        self.fast = FastPath(self.modulator)
        self._captures: dict[str, list[Capture]] = {name: [] for name in self.synapses}
        self._sums: dict[str, Accumulated | None] = {name: None for name in self.synapses}
        self._forwards: dict[str, int] = {name: 0 for name in self.layers}
        self._removed = False
        self._handles: list[Any] = []
        for name, module in self.layers.items():
            if is_attention(module):
                self._handles += attention_hooks(self, name, module)
            else:
                self._handles.append(module.register_forward_hook(self._make_hook(name)))

    def parameters(self) -> list[nn.Parameter]:
        """The plastic weights (biases are not included: they keep their back-propagated gradient)."""
        return [synapse.weight for synapse in self.synapses.values()]

    # ------------------------------------------------------------------ hooks: E in the forward (Eq. 4)
    def _make_hook(self, name: str) -> Callable[..., None]:
        linear, modulator = isinstance(self.layers[name], nn.Linear), self.modulator

        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if not (torch.is_grad_enabled() and module.training):
                return
            x = args[0]
            if x.numel() == 0:
                self.guard.batch(x, f"input of layer {name!r}")
            # E now, in float32, while x and y are fresh: later in-place ops on y cannot corrupt it
            with torch.no_grad(), autocast_off(x.device.type):
                total, eligibility, rule = self._sums[name], None, self.rules[name]  # read now: rules may be replaced
                if modulator.needs_eligibility:
                    x_e, y_e = x, output.detach()
                    if self.eligibility_fraction < 1.0:
                        x_e, y_e = batch_subset(x_e, y_e, self.eligibility_fraction)
                    y_e, kept = bias_free(module, y_e), False
                    if linear:
                        total, kept = self.fast.keep_factors(name, total, rule, module.weight, x_e, y_e,
                                                             replica_count())
                    if not kept:
                        buffer = total is None and linear and rule.accepts_out
                        eligibility = (rule(module, x_e, y_e, out=self.fast.buffer(name, module.weight)) if buffer
                                       else rule(module, x_e, y_e))
                elif total is None:  # the modulator ignores E (sign-only ablation): do not pay for it
                    eligibility = self.fast.buffer(name, module.weight).zero_()
                self._sums[name] = eligibility if total is None else (total if eligibility is None
                                                                      else total.add_(eligibility))
            self._forwards[name] += 1
            keep_grad = modulator.needs_output_grad and output.requires_grad
            if modulator.needs_inputs or keep_grad:  # per-sample signals only for modulators that read them
                capture = Capture(x=x.detach() if modulator.needs_inputs else None)
                if keep_grad:
                    keep_output_grad(output, capture)
                self._captures[name].append(capture)

        return hook

    def remove(self) -> None:
        """Detach every hook and drop captured activations and buffers; the model is left exactly as before."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._removed = True
        self.clear()
        self.fast.buffers.clear()

    def clear(self) -> None:
        """Forget what training-mode forwards recorded (e.g. after one that will not be followed by step())."""
        for name, captures in self._captures.items():
            captures.clear()
            self._sums[name] = None
        self._forwards = dict.fromkeys(self._forwards, 0)


    # ------------------------------------------------------------------ the update (Eq. 5-6)
    def eligibility(self, name: str) -> Tensor | dict[str, Tensor | None] | None:
        """Batch-mean float32 ``E`` over the training-mode forwards since the last step, averaged over
        data-parallel replicas, before normalisation; ``None`` if nothing was recorded.  ``name``: a plastic weight
        (a key of ``synapses``), or a layer name (a key of ``layers``), which for an attention layer returns
        ``{weight name: E}`` of its projections."""
        if name not in self.synapses:
            if name in self.layers:
                return {key: self.eligibility(key) for key, s in self.synapses.items() if s.layer == name}
            raise KeyError(f"{name!r} is neither a plastic layer nor a plastic weight of this GHL; layers: "
                           f"{list(self.layers)}; weights: {list(self.synapses)}")
        return self._mean_eligibility(name, reuse=False, replicas=replica_count())

    def _mean_eligibility(self, name: str, reuse: bool, replicas: int) -> Tensor | None:
        """The mean ``E`` of a plastic weight over its forwards, then over data-parallel replicas (before the
        normalisation, so every replica writes the identical update); ``reuse``: may return the accumulator."""
        total = self._sums[name]
        if total is None:
            return None
        forwards, weight = self._forwards[self.synapses[name].layer], self.synapses[name].weight
        mean = self.fast.dense(name, total, weight, forwards, reuse)
        if mean is total:
            mean = (total.div_(forwards) if reuse else total / forwards) if forwards > 1 else \
                (total if reuse else total.clone())
        return replica_mean(mean, replicas)

    def recorded(self) -> list[str]:
        """Plastic weights (names as in ``synapses``) that recorded an eligibility since the last step."""
        return [name for name, total in self._sums.items() if total is not None]

    @torch.no_grad()
    def step(self, **context: Any) -> None:
        """Write ``M ⊙ |E|`` into every plastic weight's ``.grad`` (GHL Eq. 6), then free the captures.

        Keyword arguments go to the modulator (e.g. a reward or the output error).  Raises ``RuntimeError`` when no
        training-mode forward was recorded (or after [`remove`][]) or when the modulator needs ``dL/dW`` and
        ``loss.backward()`` has not run; the guards ([`UpdateGuard`][ghl_snn.guards.UpdateGuard]) handle silent
        layers, non-finite updates and frozen weights (never written)."""
        if self._removed:
            raise RuntimeError("GHL.step() called after remove(): its hooks are detached, so it records nothing; "
                               "create a new GHL for the model")
        if all(total is None for total in self._sums.values()):
            raise RuntimeError("GHL.step() called before any training-mode forward pass with gradients enabled "
                               "(forwards under torch.no_grad() or model.eval() are not recorded)")
        try:
            self.begin_step(tuple(name for name, total in self._sums.items() if total is not None))
            self.guard.silent(f"{name!r}" + (" (its layer ran but never called this projection through F.linear)"
                                             if self._forwards[s.layer] else "")
                              for name, s in self.synapses.items() if self._sums[name] is None)
            replicas, plan = replica_count(), []
            for name, synapse in self.synapses.items():
                total = self._sums[name]
                if total is None or self.guard.frozen(name, synapse.weight):
                    continue
                normalize, pending = self.rules[synapse.layer].normalize, None
                if self.fast.applies(synapse.weight, normalize):
                    pending = self.fast.prepare(name, synapse.weight, total, self._forwards[synapse.layer], normalize,
                                                lambda name=name: self._mean_eligibility(name, True, replicas))
                plan.append((name, synapse, normalize, pending))
            fetched = iter(self.fast.fetch([pending for *_, pending in plan if pending is not None]))
            for name, synapse, normalize, pending in plan:
                if pending is not None and self.fast.finish(pending, next(fetched)):
                    continue
                eligibility = pending.magnitude if pending is not None else \
                    self._mean_eligibility(name, reuse=True, replicas=replicas)
                self._update(name, synapse, eligibility, normalize, context)
        finally:
            self.clear()

    def _update(self, name: str, synapse: Synapse, eligibility: Tensor, normalize: Normalization,
                context: dict[str, Any]) -> None:
        """The generic path of [`step`][]: ``.grad <- modulator.update(...)`` after normalising ``E`` in place
        (it is this step's accumulator), with a finiteness check of what the modulator reads and of the update."""
        weight = synapse.weight
        eligibility = normalize_eligibility(eligibility, normalize, inplace=True)
        captures = self._captures[name]
        signals = signals_of(name, synapse.signal_module, eligibility, weight.grad,
                             [c for c in captures if c.rows is None])
        # sign(NaN) is 0, so a NaN in what the modulator reads would vanish silently into a zero update
        read = (signals.weight_grad if self.modulator.needs_weight_grad else None, signals.output_grad, signals.inputs)
        if not all_finite(*read):
            self.guard.non_finite(name, nonfinite_cause(eligibility, self.modulator))
            weight.grad = None
            return
        if not self.guard.context(name, context):
            weight.grad = None
            return
        update = (modulated_blocks(self, name, signals, context) if captures and captures[0].rows is not None
                  else self.modulator.update(signals, **context))
        self.guard.write_grad(name, weight, update, lambda: nonfinite_cause(eligibility, self.modulator))

    def __repr__(self) -> str:
        lines = [f"  {name}: {type(s.module).__name__} {tuple(s.weight.shape)}"
                 + (f" groups={s.groups}" if s.groups > 1 else "") + f" {self.rules[s.layer]!r}"
                 for name, s in self.synapses.items()]
        return f"GHL(modulator={self.modulator!r},\n" + "\n".join(lines) + "\n)"
