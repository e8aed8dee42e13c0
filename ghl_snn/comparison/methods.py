"""The method registry every experiment shares: a method's name -> its third factor (modulator), the layers that
learn, and the learner built from them.

Every modulator exported by ``ghl_snn.modulators`` is a method under its class name in snake case
([`GradSign`][ghl_snn.GradSign] -> ``grad_sign``, ``FeedbackAlignment`` -> ``feedback_alignment``): a new modulator
is one file plus one export there, and every experiment's ``--methods`` accepts it (``cifar`` and ``imagenet``
through the [`GHL`][ghl_snn.GHL] plug-in, ``mnist_snn``, ``events`` and ``events_cv`` through the spiking
[`ThreeFactor`][ghl_snn.ThreeFactor] learner).  ``NAMED`` adds the rows of the papers and of the recorded
experiments under their own names (a modulator with options, or with only the read-out learning: the control that
tells whether the hidden layers learn).  Rows without a plastic rule (``bp``, ``bptt``, ``softhebb``, ``chance``,
``hebbff``, ``ff``...) belong to the experiment that trains them and are passed in ``rows``.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .. import modulators
from ..modulators.ablations import UnitMagnitude
from ..modulators.attention_gated import AttentionGatedReward
from ..modulators.base import Modulator
from ..modulators.credit import PresynapticSign
from ..modulators.scalar_reward import ScalarReward
from ..plasticity import GHL
from ..rules.base import EligibilityRule
from ..rules.reward_stdp import RewardSTDP
from ..rules.softhebb import HPCA
from ..spiking import ThreeFactor


@dataclass(frozen=True)
class MethodSpec:
    """One named method: the registry name of its modulator with constructor ``options``, which layers learn
    (``"all"``, or ``"readout"``: the hidden synapses frozen at their initialisation), the eligibility rule
    when it is not SWTA-Oja (``"hpca"``: Hebbian PCA; ``"reward_stdp"``: the pair-STDP trace, whose read-out must
    spike) and the ablation wrapped around the modulator (``"UnitMagnitude"``: ``|E| := 1``; ``"PlainReadout"``:
    the plain gradient on the read-out)."""

    modulator: str
    options: Mapping[str, Any] = field(default_factory=dict)
    plastic: str = "all"
    rule: str | None = None
    wrap: str | None = None
    description: str = ""


NAMED: dict[str, MethodSpec] = {
    "ghl": MethodSpec("grad_sign", description="GHL: GradSign ⊙ |SWTA-Oja E| (GHL paper Eq. 6)"),
    "sign": MethodSpec("sign_only", description="the sign-only ablation, |E| := 1 (GHL paper Table 5)"),
    "hebb": MethodSpec("ones", description="local SWTA-Oja only, no global sign"),
    "swta": MethodSpec("ones", description="local SWTA-Oja only (GHL paper Table 3, SWTA-FH)"),
    "hpca": MethodSpec("ones", rule="hpca", description="local Hebbian PCA only (GHL paper Table 3, HPCA-FH)"),
    "dfa": MethodSpec("feedback_alignment", description="plain direct feedback alignment (no sign, no |E|)"),
    "rate_sgd": MethodSpec("plain_gradient", description="plain SGD on the rate surrogate's gradient"),
    "agr": MethodSpec("attention_gated_reward", description="Q-AGREL: reward-prediction error times the "
                      "attention tag"),
    "agr_learned": MethodSpec("attention_gated_reward", {"feedback": "learned"}),
    "agr_random": MethodSpec("attention_gated_reward", {"feedback": "random"}),
    "reward_sign_random": MethodSpec("reward_sign", {"feedback": "random"}),
    "rstdp": MethodSpec("scalar_reward", {"momentum": 0.05, "baseline": 0.1}, rule="reward_stdp",
                        description="reward-modulated STDP (Florian 2007; Izhikevich 2007)"),
    "grad_sign_unit": MethodSpec("grad_sign", wrap="UnitMagnitude", description="GradSign with |E| := 1"),
    "grad_sign_sgd_readout": MethodSpec("grad_sign", wrap="PlainReadout",
                                        description="GradSign on the hidden layer, the plain gradient on the read-out"),
    "feedback_sign_sgd_readout": MethodSpec("feedback_sign", wrap="PlainReadout", description="FeedbackSign on the "
                                            "hidden layer, the plain gradient on the read-out"),
    "readout_sign": MethodSpec("grad_sign", plastic="readout", description="read-out only, GradSign"),
    "readout_feedback_sign": MethodSpec("feedback_sign", plastic="readout",
                                        description="read-out only, FeedbackSign"),
    "readout_sgd": MethodSpec("plain_gradient", plastic="readout", description="read-out only, plain SGD"),
    "reward_readout": MethodSpec("reward_sign", plastic="readout", description="read-out only, RewardSign"),
    "agr_readout": MethodSpec("attention_gated_reward", plastic="readout", description="read-out only, Q-AGREL"),
    "rstdp_readout": MethodSpec("scalar_reward", {"momentum": 0.05, "baseline": 0.1}, plastic="readout",
                                rule="reward_stdp", description="read-out only, R-STDP"),
}


def snake_case(name: str) -> str:
    """``FeedbackAlignment`` -> ``feedback_alignment``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _concrete(cls: type) -> bool:
    """A modulator class that can be built without arguments and implements its signal (not an abstract base)."""
    if not (isinstance(cls, type) and issubclass(cls, Modulator)) or cls is Modulator:
        return False
    if issubclass(cls, PresynapticSign) and cls.neuron_signal is PresynapticSign.neuron_signal:
        return False
    if cls.sign is Modulator.sign and cls.update is Modulator.update:
        return False
    parameters = list(inspect.signature(cls).parameters.values())
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)


def modulator_classes() -> dict[str, type[Modulator]]:
    """Every concrete modulator exported by ``ghl_snn.modulators``, by its snake-case name."""
    return {snake_case(name): getattr(modulators, name) for name in modulators.__all__
            if _concrete(getattr(modulators, name))}


def spec(name: str) -> MethodSpec:
    """The method ``name`` (a ``NAMED`` row or a modulator's registry name); ``ValueError`` naming the choices."""
    if name in NAMED:
        return NAMED[name]
    if name in modulator_classes():
        return MethodSpec(name)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(method_names())}")


#: modulators that learn from the reward of a chosen output (``step(action=..., reward=...)``)
REWARD_MODULATORS = (AttentionGatedReward, ScalarReward)


def needs_reward(name: str) -> bool:
    """Whether the method learns from a reward for a chosen action (``step(action=..., reward=...)``) instead of
    a supervised loss."""
    cls = modulator_classes()[spec(name).modulator]
    return issubclass(cls, REWARD_MODULATORS)


#: eligibility rules each learner family supports (``None``: SWTA-Oja)
RULES = {False: (None, "hpca"), True: (None, "reward_stdp")}
#: the eligibility rule of a ``MethodSpec.rule`` (built once, shared by every plastic layer)
ELIGIBILITY_RULES: dict[str, Callable[[], EligibilityRule]] = {"hpca": HPCA,
                                                              "reward_stdp": lambda: RewardSTDP(normalize="max")}


def method_names(rows: Sequence[str] = (), reward: bool = True, spiking: bool = False) -> list[str]:
    """The experiment's own ``rows`` followed by every registered method that its learner family supports
    (``spiking``: the [`ThreeFactor`][ghl_snn.ThreeFactor] learner, else the [`GHL`][ghl_snn.GHL] plug-in;
    ``reward=False``: without the methods that learn from a reward, for experiments with a supervised loss only)."""
    names = [*NAMED, *(n for n in modulator_classes() if n not in NAMED)]
    return list(dict.fromkeys([*rows, *(n for n in names if (reward or not needs_reward(n))
                                        and spec(n).rule in RULES[spiking]
                                        and (spiking or spec(n).plastic == "all"))]))


def build_modulator(name: str, seed: int = 0, magnitude: str = "eligibility") -> Modulator:
    """The method's modulator; a constructor with a ``seed`` (random feedback) gets ``seed``; ``magnitude="ones"``
    wraps it in [`UnitMagnitude`][ghl_snn.modulators.ablations.UnitMagnitude] (``|E| := 1``)."""
    method = spec(name)
    cls = modulator_classes()[method.modulator]
    options = dict(method.options)
    if "seed" in inspect.signature(cls).parameters:
        options.setdefault("seed", seed)
    modulator = cls(**options)
    if method.wrap is not None:
        modulator = getattr(modulators, method.wrap)(modulator)
    return UnitMagnitude(modulator) if magnitude == "ones" else modulator


def freeze_all_but(model: nn.Module, trained: Iterable[nn.Module]) -> None:
    """Freeze every parameter of ``model`` but those of ``trained`` (the read-out-only control)."""
    keep = {id(p) for module in trained for p in module.parameters()}
    for parameter in model.parameters():
        if id(parameter) not in keep:
            parameter.requires_grad_(False)


def build_learner(name: str, model: nn.Module, *, seed: int = 0, spiking: bool = False,
                  layers: Sequence[str] | None = None, readout: Sequence[str] = (), magnitude: str = "eligibility",
                  **options: Any) -> Any:
    """The learner of method ``name`` on ``model``: the [`GHL`][ghl_snn.GHL] plug-in (``spiking=False``) or the
    spiking [`ThreeFactor`][ghl_snn.ThreeFactor] learner, with the method's modulator on ``layers`` (``None``:
    the learner's default selection), or, for a read-out-only method, on ``readout`` alone with every other
    parameter frozen.  ``options`` go to the learner (``tau``, ``normalize``, ``global_signal``...)."""
    method = spec(name)
    if method.rule not in RULES[spiking]:
        raise ValueError(f"method {name!r} needs the {method.rule} rule, which the "
                         f"{'spiking' if spiking else 'plug-in'} learner does not run")
    modulator = build_modulator(name, seed, magnitude)
    if method.plastic == "readout":
        named = dict(model.named_modules())
        freeze_all_but(model, [named[layer] for layer in readout])
        layers = list(readout)
    if method.rule is not None:  # the rule replaces SWTA-Oja and its tau / normalize
        options = {k: v for k, v in options.items() if k not in ("tau", "normalize")}
        options["rule"] = ELIGIBILITY_RULES[method.rule]()
    learner = ThreeFactor if spiking else GHL
    return learner(model, modulator=modulator, layers=layers, **options)
