"""The GHL plug-in: three-factor plasticity for the Linear / Conv2d layers of any ``nn.Module``.

After ``loss.backward()``, :meth:`GHL.step` overwrites each plastic weight's ``.grad`` with ``M ⊙ |E|``
(GHL paper Eq. 5-6, Algorithm 1): ``E`` the local eligibility computed from the ``(x, y)`` captured by forward
hooks (default SWTA-Oja, Eq. 4), ``M`` the broadcast sign of a :class:`~ghl_snn.modulators.Modulator`
(default :class:`~ghl_snn.modulators.GradSign`).  Any ``torch.optim`` optimiser then applies
``W <- W - eta * grad`` with its own learning rates, schedules, weight decay and parameter groups; parameters that
are not selected (classifier, BatchNorm, biases) keep their back-propagated gradients.

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
import torch.nn.functional as F
from torch import Tensor, nn

from .modulators.base import LayerSignals, Modulator
from .modulators.grad_sign import GradSign
from .rules.base import EligibilityRule, Normalization, check_normalization, check_supported_layer, \
    normalize_eligibility
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
    """One training-mode forward through a plastic layer, held by reference."""

    x: Tensor
    y: Tensor
    x_version: int
    y_version: int
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

    Forwards under ``torch.no_grad()`` or in ``eval()`` mode record nothing.
    """

    def __init__(self, model: nn.Module, tau: TauSpec = 1.0, layers: LayerSelector = None,
                 normalize: Normalization = "max", modulator: Modulator | None = None,
                 rule: EligibilityRule | None = None) -> None:
        check_normalization(normalize)
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
        captures = self._captures

        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if not (torch.is_grad_enabled() and module.training):
                return
            x = args[0]
            capture = _Capture(x=x.detach(), y=output.detach(), x_version=x._version, y_version=output._version)
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
        """Forget captured activations (e.g. after a training-mode forward that will not be followed by step())."""
        for captures in self._captures.values():
            captures.clear()

    def __enter__(self) -> GHL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ------------------------------------------------------------------ update
    def _presynaptic_activity(self, name: str, module: nn.Module, capture: _Capture) -> tuple[Tensor, Tensor]:
        """``(x, y)`` with ``y = W x`` without bias; recomputed when an in-place op changed the output."""
        x = capture.x
        if x._version != capture.x_version:
            raise RuntimeError(f"the input of plastic layer {name!r} was modified in place after the forward pass "
                               "(e.g. by an in-place activation); use inplace=False for that operation")
        if capture.y._version != capture.y_version:
            weight = module.weight.detach()
            if isinstance(module, nn.Conv2d):
                y = F.conv2d(x, weight.to(x.dtype), None, module.stride, module.padding, module.dilation)
            else:
                y = F.linear(x, weight.to(x.dtype))
            return x, y
        y = capture.y
        if module.bias is not None:
            bias = module.bias.detach().to(y.dtype)
            y = y - (bias.view(1, -1, 1, 1) if isinstance(module, nn.Conv2d) else bias)
        return x, y

    def eligibility(self, name: str) -> Tensor | None:
        """Batch-mean float32 ``E`` of one layer over its captured forwards, all-reduced under DDP, before
        normalisation; ``None`` if the layer saw no training-mode forward since the last step."""
        module, captures = self.layers[name], self._captures[name]
        if not captures:
            return None
        eligibility = self.rules[name](module, *self._presynaptic_activity(name, module, captures[0]))
        for capture in captures[1:]:
            eligibility += self.rules[name](module, *self._presynaptic_activity(name, module, capture))
        eligibility /= len(captures)
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
        if not any(self._captures.values()):
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
                signals = LayerSignals(
                    name=name, module=module, eligibility=eligibility, weight_grad=module.weight.grad,
                    output_grad=torch.cat(output_grads) if output_grads else None,
                    inputs=captures[0].x if len(captures) == 1 else None)
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
