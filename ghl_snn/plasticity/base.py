"""The skeleton every learner shares ([`GHL`][ghl_snn.GHL], [`ThreeFactor`][ghl_snn.ThreeFactor],
[`HebbFF`][ghl_snn.HebbFF], [`SoftHebbLearner`][ghl_snn.learners.softhebb.SoftHebbLearner]); each adds only how it
captures activity and forms its update.

* **layer selection** ([`ghl_snn.selection`][]): ``layers=`` picks the plastic layers of the model;
* **a rule per layer** ([`rule_factory`][]): one [`EligibilityRule`][ghl_snn.EligibilityRule], a
  ``(name, module) -> rule`` factory, or SWTA-Oja (GHL Eq. 4) from ``tau`` and ``normalize``;
* **the guarded write** ([`UpdateGuard`][ghl_snn.guards.UpdateGuard]): NaN / Inf raise or skip, frozen weights are
  never written, a selected layer that recorded nothing is named in a warning (``strict``: an error);
* **a typed per-update context** for the modulator ([`StepContext`][ghl_snn.modulators.base.StepContext], delivered by
  [`begin_step`][ghl_snn.plasticity.base.Learner.begin_step] once per update);
* **one state layout**: ``{"rules": {layer: {"tau": ...}}, "modulator": {...}, "steps": n}``, plus what a learner
  adds of its own.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from ..guards import NonFinite, UpdateGuard
from ..modulators.base import Modulator, StepContext
from ..rules.base import EligibilityRule, Normalization, check_normalization, check_tau
from ..rules.swta_oja import SWTAOja
from ..selection import PLASTIC_LAYER_TYPES, LayerSelector, plastic_reason, select_layers

TauSpec = float | Mapping[str, float] | Callable[[str, nn.Module], float]
"""A softmax temperature: one float, a ``{layer name: tau}`` mapping (unlisted layers get 1.0) or a
``(name, module) -> tau`` function."""
RuleSpec = EligibilityRule | Callable[[str, nn.Module], EligibilityRule] | None
"""An eligibility rule: one [`EligibilityRule`][ghl_snn.EligibilityRule] for every layer, a
``(name, module) -> EligibilityRule`` factory, or ``None`` (SWTA-Oja with the learner's ``tau`` and ``normalize``)."""


def rule_factory(rule: RuleSpec, tau: TauSpec, normalize: Normalization,
                 layers: Mapping[str, nn.Module]) -> dict[str, EligibilityRule]:
    """One rule per plastic layer: ``rule`` itself, ``rule(name, module)``, or SWTA-Oja (GHL Eq. 4) with the
    layer's ``tau`` and ``normalize`` (both checked here, for every learner)."""
    check_normalization(normalize)
    if isinstance(tau, Mapping):
        unknown = set(tau) - set(layers)
        if unknown:
            raise KeyError(f"tau given for layers that are not plastic: {sorted(unknown)}; plastic layers: "
                           f"{list(layers)}")
    elif not callable(tau):
        check_tau(tau)
    if rule is not None and not isinstance(rule, EligibilityRule) and not callable(rule):
        raise TypeError(f"rule must be an EligibilityRule (e.g. SWTAOja()) or a (name, module) -> EligibilityRule "
                        f"factory, got {type(rule).__name__}")
    rules = {}
    for name, module in layers.items():
        if isinstance(rule, EligibilityRule):
            rules[name] = rule
        elif rule is not None:
            try:
                made = rule(name, module)
            except TypeError as error:
                raise TypeError(f"rule must be an EligibilityRule or a (name, module) -> EligibilityRule factory; "
                                f"calling it failed: {error}") from error
            if not isinstance(made, EligibilityRule):
                raise TypeError(f"the rule factory returned {type(made).__name__} for layer {name!r}, not an "
                                "EligibilityRule")
            rules[name] = made
        elif isinstance(tau, Mapping):
            rules[name] = SWTAOja(check_tau(tau.get(name, 1.0), f"tau[{name!r}]"), normalize)
        elif callable(tau):
            rules[name] = SWTAOja(check_tau(tau(name, module), f"tau({name!r}, ...)"), normalize)
        else:
            rules[name] = SWTAOja(check_tau(tau), normalize)
    return rules


class Learner:
    """The skeleton of a learner (see the module docstring).

    Args:
        model: the ``nn.Module`` whose layers learn.
        layers: which layers are plastic ([`ghl_snn.selection`][]).
        modulator: the third factor ``M`` (``None``: the learner's default).
        rule, tau, normalize: the rule of every layer ([`rule_factory`][]).
        strict, nonfinite: the guards ([`UpdateGuard`][ghl_snn.guards.UpdateGuard]).
        types, check: the layer kinds a filter selector picks, and why a layer cannot be plastic (default: an
            unsupported kind or a frozen weight).
    """

    def __init__(self, model: nn.Module, layers: LayerSelector = None, modulator: Modulator | None = None,
                 rule: RuleSpec = None, tau: TauSpec = 1.0, normalize: Normalization = "max", strict: bool = False,
                 nonfinite: NonFinite = "raise", types: tuple[type, ...] = PLASTIC_LAYER_TYPES,
                 check: Callable[[nn.Module], str | None] = plastic_reason) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}: model must be an nn.Module, got {type(model).__name__}")
        if modulator is not None and not isinstance(modulator, Modulator):
            raise TypeError(f"modulator must be a ghl_snn Modulator (e.g. GradSign()), got {type(modulator).__name__}")
        self.guard = UpdateGuard(f"{type(self).__name__}.step()", strict, nonfinite)
        self.model = model
        self.modulator = modulator
        self.layers: dict[str, nn.Module] = select_layers(model, layers, types=types, check=check)
        self.rules: dict[str, EligibilityRule] = rule_factory(rule, tau, normalize, self.layers)
        self.steps = 0

    strict = property(lambda self: self.guard.strict, doc="Raise instead of warning about a silent layer.")
    nonfinite = property(lambda self: self.guard.nonfinite, doc="``\"raise\"`` or ``\"skip\"`` a non-finite update.")

    @property
    def taus(self) -> dict[str, float]:
        """Per-layer softmax temperatures (layers whose rule has a ``tau``)."""
        return {name: rule.tau for name, rule in self.rules.items() if hasattr(rule, "tau")}

    def begin_step(self, layers: tuple[str, ...] = (), readout: Tensor | None = None) -> StepContext:
        """Start an update: count it and tell the modulator
        ([`Modulator.begin_step`][ghl_snn.modulators.base.Modulator.begin_step])
        which update this is, which plastic weights it visits and the read-out of its window."""
        self.steps += 1
        context = StepContext(type(self).__name__, self.steps, tuple(layers), readout)
        if self.modulator is not None:
            self.modulator.begin_step(context)
        return context

    def write(self, name: str, weight: nn.Parameter, update: Tensor, cause: str | Callable[[], str] = "update") -> bool:
        """The guarded write: ``weight.grad <- update`` unless the weight is frozen or the update is not finite."""
        if self.guard.frozen(name, weight):
            return False
        return self.guard.write_grad(name, weight, update, cause)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """``{"rules": {layer: {"tau": ...}}, "modulator": ..., "steps": n}``: everything that decides the next
        update besides the model's own parameters."""
        return {"rules": {name: {"tau": tau} for name, tau in self.taus.items()},
                "modulator": self.modulator.state_dict() if self.modulator is not None else {}, "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state.get("rules", {})) - set(self.rules)
        if unknown:
            raise KeyError(f"state_dict has rules for layers this {type(self).__name__} does not hold: "
                           f"{sorted(unknown)}; its layers: {list(self.rules)}")
        for name, rule_state in state.get("rules", {}).items():
            if "tau" in rule_state:
                self.rules[name].tau = check_tau(rule_state["tau"], f"tau[{name!r}]")  # type: ignore[attr-defined]
        if self.modulator is not None:
            self.modulator.load_state_dict(state.get("modulator", {}))
        self.steps = int(state.get("steps", self.steps))

    def remove(self) -> None:
        """Detach whatever the learner attached to the model (hooks); the model is left as it was."""

    def __enter__(self) -> Learner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
