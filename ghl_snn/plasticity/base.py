"""The skeleton every learner shares: which rule each plastic layer gets."""
from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import nn

from ..rules.base import EligibilityRule, Normalization, check_normalization, check_tau
from ..rules.swta_oja import SWTAOja

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
            made = rule(name, module)
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
