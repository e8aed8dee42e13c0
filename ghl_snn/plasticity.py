"""The GHL plug-in: three-factor plasticity for the Linear / Conv2d layers of any ``nn.Module``.

After ``loss.backward()``, :meth:`GHL.step` overwrites each plastic weight's ``.grad`` with ``M ⊙ |E|``
(GHL paper Eq. 5-6, Algorithm 1): ``E`` the local eligibility computed from the ``(x, y)`` captured by forward
hooks (default SWTA-Oja, Eq. 4), ``M`` the broadcast sign of a :class:`~ghl_snn.modulators.Modulator`
(default :class:`~ghl_snn.modulators.GradSign`).  Any ``torch.optim`` optimiser then applies
``W <- W - eta * grad`` with its own learning rates, schedules, weight decay and parameter groups; parameters that
are not selected (classifier, BatchNorm, biases) keep their back-propagated gradients.

The eligibility is computed inside each plastic layer's forward hook (float32, autocast off) and accumulated until
``step()``, so the layer output is not retained and in-place operations after the layer cannot corrupt ``E``.

Usage::

    rule = GHL(model, tau=1.0)
    loss.backward(); rule.step(); optimizer.step()

Mixed precision (``torch.amp``): ``E`` is always accumulated in float32.  With a ``GradScaler`` call
``scaler.scale(loss).backward(); scaler.unscale_(optimizer); rule.step(); scaler.step(optimizer);
scaler.update()`` -- unscale *before* ``rule.step()``, otherwise ``scaler.step`` would divide the Hebbian update
by the loss scale.  Distributed data parallel: when ``torch.distributed`` is initialised with more than one
process, ``E`` is all-reduced (averaged) *before* normalisation, so every replica applies the identical update.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .modulators.base import LayerSignals, Modulator
from .modulators.grad_sign import GradSign
from .rules.base import EligibilityRule, Normalization, check_normalization, check_supported_layer, \
    normalize_eligibility
from .rules.stochastic import batch_subset, check_eligibility_fraction
from .rules.swta_oja import SWTAOja

LayerSelector = None | type | tuple[type, ...] | str | Iterable[str] | Callable[[str, nn.Module], bool]
TauSpec = float | Mapping[str, float] | Callable[[str, nn.Module], float]

DEFAULT_LAYER_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv2d)


def select_layers(model: nn.Module, layers: LayerSelector = None) -> dict[str, nn.Module]:
    """Qualified name -> module for the layers chosen by type(s), name(s) or a ``(name, module) -> bool`` predicate.

    ``None`` selects every ``nn.Linear`` and ``nn.Conv2d``.  Raises ``KeyError`` for an unknown name,
    ``ValueError`` when nothing is selected and ``TypeError`` for a selected layer that cannot be plastic.
    """
    named = dict(model.named_modules())
    if layers is None:
        layers = DEFAULT_LAYER_TYPES
    if isinstance(layers, type) or (isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers)):
        types = layers if isinstance(layers, tuple) else (layers,)
        chosen = {name: module for name, module in named.items() if isinstance(module, types)
                  and not isinstance(module, nn.modules.conv._ConvTransposeNd)}
    elif callable(layers):
        chosen = {name: module for name, module in named.items() if name and layers(name, module)}
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        missing = [name for name in names if name not in named]
        if missing:
            raise KeyError(f"no module named {missing} in the model; available layers: "
                           f"{[n for n, m in named.items() if isinstance(m, DEFAULT_LAYER_TYPES)]}")
        chosen = {name: named[name] for name in names}
    if not chosen:
        raise ValueError(f"layer selection {layers!r} matched no module of {type(model).__name__}")
    for name, module in chosen.items():
        check_supported_layer(module, name)
    return chosen


@dataclass
class _Capture:
    """What one training-mode forward through a plastic layer leaves for :meth:`GHL.step`.

    The eligibility itself is computed inside the forward hook and summed into :attr:`GHL._eligibility_sums`, so
    the layer's output ``y`` is not kept alive until ``step()``; only a Linear layer's input (for modulators with
    ``needs_inputs``, e.g. a pre-synaptic gate) and, on request, ``dL/dy`` are held.
    """

    x: Tensor | None = None
    output_grad: Tensor | None = None


class GHL:
    """Global-guided Hebbian learning plug-in (see the module docstring for the update and usage).

    Args:
        model: any ``nn.Module``; hooks are registered on the selected sub-layers.
        tau: SWTA softmax temperature (> 0): one float, a ``{layer name: tau}`` mapping (unlisted layers get 1.0)
            or a ``(name, module) -> tau`` function.  Ignored when ``rule`` is given.
        layers: which layers are plastic -- a type or tuple of types, a qualified name or list of names, or a
            ``(name, module) -> bool`` predicate; default every ``nn.Linear`` and ``nn.Conv2d``.
        normalize: ``"max"`` (divide each layer's ``E`` by ``max|E|``, the reference behaviour) or ``None``.
        modulator: the third factor; default :class:`GradSign` (exact GHL).
        rule: an :class:`EligibilityRule` used for every layer instead of SWTA-Oja (its own ``normalize``
            attribute applies).
        eligibility_fraction: in ``(0, 1]``; below 1, each forward estimates ``E`` from a random
            ``ceil(fraction * N)`` of its ``N`` samples (unbiased for the batch-mean ``E``, see
            :mod:`ghl_snn.rules.stochastic`), cutting the extra weight-gradient convolution by that fraction;
            normalisation then applies as before.  1 (default) is the exact rule.

    Forwards under ``torch.no_grad()`` or in ``eval()`` mode record nothing.
    """

    def __init__(self, model: nn.Module, tau: TauSpec = 1.0, layers: LayerSelector = None,
                 normalize: Normalization = "max", modulator: Modulator | None = None,
                 rule: EligibilityRule | None = None, eligibility_fraction: float = 1.0) -> None:
        check_normalization(normalize)
        self.eligibility_fraction = check_eligibility_fraction(eligibility_fraction)
        self.model = model
        self.modulator = modulator if modulator is not None else GradSign()
        self.layers = select_layers(model, layers)
        if isinstance(tau, Mapping) and set(tau) - set(self.layers):
            raise KeyError(f"tau given for layers that are not plastic: {sorted(set(tau) - set(self.layers))}; "
                           f"plastic layers: {list(self.layers)}")
        self.rules: dict[str, EligibilityRule] = {
            name: rule if rule is not None else SWTAOja(self._tau_for(tau, name, module), normalize)
            for name, module in self.layers.items()}
        self._captures: dict[str, list[_Capture]] = {name: [] for name in self.layers}
        self._eligibility_sums: dict[str, Tensor | None] = {name: None for name in self.layers}
        self._handles = [module.register_forward_hook(self._make_hook(name)) for name, module in self.layers.items()]

    @staticmethod
    def _tau_for(tau: TauSpec, name: str, module: nn.Module) -> float:
        if isinstance(tau, Mapping):
            return float(tau.get(name, 1.0))
        if callable(tau):
            return float(tau(name, module))
        return float(tau)

    @property
    def taus(self) -> dict[str, float]:
        """Per-layer softmax temperatures (layers whose rule has a ``tau``)."""
        return {name: rule.tau for name, rule in self.rules.items() if hasattr(rule, "tau")}

    def parameters(self) -> list[nn.Parameter]:
        """The plastic weights (biases are not included: they keep their back-propagated gradient)."""
        return [module.weight for module in self.layers.values()]

    # ------------------------------------------------------------------ hooks
    def _make_hook(self, name: str) -> Callable[..., None]:
        captures, sums, rules = self._captures, self._eligibility_sums, self.rules

        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if not (torch.is_grad_enabled() and module.training):
                return
            x = args[0]
            # E is computed now, in float32 (autocast off), while x and y are fresh: y need not outlive the
            # forward and later in-place ops on it (ReLU(inplace=True)) cannot corrupt it.
            with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
                if self.modulator.needs_eligibility:
                    x_e, y_e = batch_subset(x, output.detach(), self.eligibility_fraction)
                    eligibility = rules[name](module, x_e, self._bias_free(module, y_e))
                else:  # the modulator ignores E (sign-only ablation): do not pay for it
                    eligibility = torch.zeros_like(module.weight, dtype=torch.float32)
                sums[name] = eligibility if sums[name] is None else sums[name].add_(eligibility)
            keep_input = self.modulator.needs_inputs and isinstance(module, nn.Linear)
            capture = _Capture(x=x.detach() if keep_input else None)
            if self.modulator.needs_output_grad and output.requires_grad:
                def keep_output_grad(grad: Tensor, capture: _Capture = capture) -> None:
                    capture.output_grad = grad.detach()
                output.register_hook(keep_output_grad)
            captures[name].append(capture)

        return hook

    def remove(self) -> None:
        """Detach every hook and drop captured activations; the model is left exactly as before."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def clear(self) -> None:
        """Forget what training-mode forwards recorded (e.g. after one that will not be followed by step())."""
        for name, captures in self._captures.items():
            captures.clear()
            self._eligibility_sums[name] = None

    def __enter__(self) -> GHL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ------------------------------------------------------------------ update
    @staticmethod
    def _bias_free(module: nn.Module, output: Tensor) -> Tensor:
        """``y = W x`` without the bias (the Oja term uses the synaptic pre-activation)."""
        if module.bias is None:
            return output
        bias = module.bias.detach().to(output.dtype)
        return output - (bias.view(1, -1, 1, 1) if isinstance(module, nn.Conv2d) else bias)

    def eligibility(self, name: str) -> Tensor | None:
        """Batch-mean float32 ``E`` of one layer over its training-mode forwards since the last step, all-reduced
        (averaged) under DDP, before normalisation; ``None`` if the layer saw no such forward."""
        total = self._eligibility_sums[name]
        if total is None:
            return None
        eligibility = total / len(self._captures[name])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(eligibility, op=dist.ReduceOp.SUM)
            eligibility /= dist.get_world_size()
        return eligibility

    @torch.no_grad()
    def step(self, **context: Any) -> None:
        """Write ``M ⊙ |E|`` into every plastic weight's ``.grad`` (GHL Eq. 6), then free the captures.

        Keyword arguments are passed to the modulator (e.g. a reward or the output error).  Raises
        ``RuntimeError`` when no training-mode forward was recorded, or when the modulator needs ``dL/dW`` and
        ``loss.backward()`` has not run.
        """
        if all(total is None for total in self._eligibility_sums.values()):
            raise RuntimeError("GHL.step() called before any training-mode forward pass with gradients enabled "
                               "(forwards under torch.no_grad() or model.eval() are not recorded)")
        try:
            for name, module in self.layers.items():
                eligibility = self.eligibility(name)
                if eligibility is None:
                    continue
                eligibility = normalize_eligibility(eligibility, self.rules[name].normalize)
                captures = self._captures[name]
                output_grads = [c.output_grad for c in captures if c.output_grad is not None]
                inputs = [c.x for c in captures if c.x is not None]
                signals = LayerSignals(
                    name=name, module=module, eligibility=eligibility, weight_grad=module.weight.grad,
                    output_grad=torch.cat(output_grads) if output_grads else None,
                    inputs=(inputs[0] if len(inputs) == 1 else torch.cat(inputs)) if inputs else None)
                update = self.modulator.update(signals, **context).to(module.weight.dtype)
                if module.weight.grad is None:
                    module.weight.grad = update.expand_as(module.weight).clone()
                else:
                    module.weight.grad.copy_(update)
        finally:
            self.clear()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Per-layer temperatures and the modulator's state (e.g. a reward baseline or feedback matrices)."""
        return {"taus": self.taus, "modulator": self.modulator.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state.get("taus", {})) - set(self.rules)
        if unknown:
            raise KeyError(f"state_dict has temperatures for layers this GHL does not hold: {sorted(unknown)}")
        for name, tau in state.get("taus", {}).items():
            self.rules[name].tau = float(tau)
        self.modulator.load_state_dict(state.get("modulator", {}))

    def __repr__(self) -> str:
        lines = [f"  {name}: {type(module).__name__} {tuple(module.weight.shape)} {self.rules[name]!r}"
                 for name, module in self.layers.items()]
        return f"GHL(modulator={self.modulator!r},\n" + "\n".join(lines) + "\n)"
