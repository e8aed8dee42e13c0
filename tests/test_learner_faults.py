"""One fault table for every learner: NaN / Inf in the input, a weight, the loss or a modulator signal
(``error=``, ``reward=``), frozen weights, a selected layer without a forward, an empty batch.

Each learner joins the table through a small *kit* (how to build it on a tiny network and run one update); a new
learner joins with one kit class and one line in ``KITS``.  What must hold for every kit and every fault:

* ``nonfinite="raise"``: ``FloatingPointError`` naming the layer, and no weight moved;
* ``nonfinite="skip"``: a ``PlasticityWarning`` saying the update is skipped, and the affected weights unchanged
  after the optimiser step;
* a frozen weight is never written and reported once over two updates;
* a selected layer that ran no forward is named in a warning (``strict=True``: ``RuntimeError``), and the others
  still learn;
* an empty batch raises ``ValueError`` saying so.
"""
from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ghl_snn import GHL, IF, LIF, STDP, BernoulliEncoder, EProp, FeedbackSign, ForwardForwardMLP, GradSign, HebbFF, \
    NeuronSign, PlasticityWarning, RecurrentLIF, RewardSign, SpikingNetwork, ThreeFactor
from ghl_snn.learners.softhebb import SoftHebbLearner
from ghl_snn.rules.hebbff import random_wrong_labels

pytestmark = pytest.mark.faults
NAN, INF = float("nan"), float("inf")
LABELS = torch.tensor([0, 1, 2, 0])


class Kit:
    """How one learner is driven in the table.  ``faults``: the faults that apply to it; ``layers``: names of its
    plastic weights as the learner reports them (first one is where input / weight faults are injected)."""

    faults: tuple[str, ...] = ("nan_input", "inf_input", "nan_weight", "inf_weight", "frozen", "silent", "empty")
    layers: tuple[str, ...] = ("0", "2")
    #: third factors the frozen-weight case is run with
    frozen_modulators: tuple[str, ...] = ("grad",)

    def build(self, modulator: str = "grad", unused: bool = False, **guards: Any) -> None:
        raise NotImplementedError

    def weights(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def update(self, x: Tensor, loss_scale: float = 1.0, **signals: Any) -> None:
        """One forward and one update (and the optimiser step where the learner writes ``.grad``)."""
        raise NotImplementedError


class _Plain(nn.Module):
    """8 -> 6 -> 3 with an optional layer that the forward never calls."""

    def __init__(self, unused: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
        self.unused = nn.Linear(3, 3) if unused else None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _modulator(kind: str) -> Any:
    return {"grad": GradSign(), "neuron": NeuronSign(), "error": FeedbackSign(), "reward": RewardSign()}[kind]


class GHLKit(Kit):
    faults = Kit.faults + ("nan_loss", "nan_loss_neuron", "nan_error", "nan_reward")
    frozen_modulators = ("grad", "error")
    layers = ("net.0", "net.2")

    def build(self, modulator: str = "grad", unused: bool = False, **guards: Any) -> None:
        torch.manual_seed(0)
        self.model = _Plain(unused)
        layers = [*self.layers, "unused"] if unused else None
        self.learner = GHL(self.model, layers=layers, modulator=_modulator(modulator), **guards)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def weights(self) -> dict[str, Tensor]:
        named = dict(self.model.named_modules())
        return {name: named[name].weight for name in self.learner.synapses}

    def update(self, x: Tensor, loss_scale: float = 1.0, **signals: Any) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(x)
        (F.cross_entropy(out, LABELS[:len(x)]) * loss_scale).backward()
        context: dict[str, Any] = {}
        if "error" in signals:
            context["error"] = signals["error"]
        if "reward" in signals:
            context = {"reward": signals["reward"], "action": LABELS, "value": torch.zeros(4)}
        elif isinstance(self.learner.modulator, FeedbackSign) and not isinstance(self.learner.modulator, RewardSign):
            context.setdefault("error", torch.softmax(out.detach(), 1) - F.one_hot(LABELS, 3))
        if isinstance(self.learner.modulator, RewardSign) and "reward" not in context:
            context = {"reward": torch.ones(4), "action": LABELS, "value": torch.zeros(4)}
        self.learner.step(**context)
        self.optimizer.step()


class ThreeFactorKit(Kit):
    faults = Kit.faults + ("nan_loss", "nan_loss_neuron", "nan_loss_error", "nan_error", "nan_reward")
    frozen_modulators = ("grad", "error")

    def build(self, modulator: str = "grad", unused: bool = False, **guards: Any) -> None:
        torch.manual_seed(0)
        if unused:  # a model driven by the user's own loop, whose forward never reaches one selected layer
            self.model = _Plain(True)
            self.names = ("net.0", "net.2", "unused")
            self.learner = ThreeFactor(self.model, modulator=FeedbackSign(), layers=list(self.names), **guards)
        else:
            self.model = SpikingNetwork(nn.Linear(8, 6, bias=False), IF(), nn.Linear(6, 3, bias=False))
            self.names = self.layers
            self.learner = ThreeFactor(self.model, modulator=_modulator(modulator), **guards)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def weights(self) -> dict[str, Tensor]:
        named = dict(self.model.named_modules())
        return {name: named[name].weight for name in self.names}

    def update(self, x: Tensor, loss_scale: float = 1.0, **signals: Any) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        labels = LABELS[:len(x)]
        if self.learner.attached:
            self.model.train()
            readout = sum(self.model(x) for _ in range(3)) / 3
            self.learner.step(readout=readout, loss_fn=lambda out: F.cross_entropy(out, labels))
        else:
            self.learner.run(x, num_steps=5, encoder=BernoulliEncoder())
            context: dict[str, Any] = {}
            if "error" in signals:
                context["error"] = signals["error"]
            if isinstance(self.learner.modulator, RewardSign):
                context = {"reward": signals.get("reward", torch.ones(4)), "action": labels}
            self.learner.step(loss_fn=lambda out: F.cross_entropy(out, labels) * loss_scale, **context)
        self.optimizer.step()


class HebbFFKit(Kit):
    #: no loss, no modulator signal, no layer selection (it updates the layers it is given), and it writes in place
    #: without autograd (requires_grad=False is its usual setting), so "frozen" means "not given"
    faults = ("nan_input", "inf_input", "nan_weight", "inf_weight", "empty")

    def build(self, modulator: str = "grad", unused: bool = False, **guards: Any) -> None:
        torch.manual_seed(0)
        self.model = ForwardForwardMLP(in_features=8, hidden=(6, 5), num_classes=3)
        self.learner = HebbFF(self.model.layers, lr=0.1, theta=1.0, nonfinite=guards.get("nonfinite", "raise"))
        self.names = tuple(str(i) for i in range(len(self.model.layers)))

    def weights(self) -> dict[str, Tensor]:
        return {str(i): layer.weight for i, layer in enumerate(self.model.layers)}

    def update(self, x: Tensor, loss_scale: float = 1.0, **signals: Any) -> None:
        labels = LABELS[:len(x)]
        self.learner.train_step(self.model, x, labels, random_wrong_labels(labels, 3, torch.Generator().manual_seed(0)))


class SoftHebbKit(Kit):
    layers = ("net.0", "net.2")

    def build(self, modulator: str = "grad", unused: bool = False, **guards: Any) -> None:
        torch.manual_seed(0)
        self.model = _Plain(unused)
        taus = {name: 1.0 for name in self.layers} | ({"unused": 1.0} if unused else {})
        self.learner = SoftHebbLearner(self.model, taus, lr=0.1, **guards)

    def weights(self) -> dict[str, Tensor]:
        named = dict(self.model.named_modules())
        return {name: named[name].weight for name in self.learner.synapses}

    def update(self, x: Tensor, loss_scale: float = 1.0, **signals: Any) -> None:
        self.model.train()
        self.model(x)
        self.learner.step()


class _SpikingPlain(nn.Module):
    """8 -> 6 -> 3 with LIF neurons after both synapses (a timing rule needs post-synaptic spikes) and an optional
    synapse + neuron that the forward never calls."""

    def __init__(self, unused: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 6, bias=False), LIF(beta=0.9), nn.Linear(6, 3, bias=False), LIF(beta=0.9))
        self.unused = nn.Linear(3, 3, bias=False) if unused else None
        self.unused_neuron = LIF(beta=0.9) if unused else None
        for layer in (self.net[0], self.net[2]):
            nn.init.uniform_(layer.weight, 0.0, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TimingKit(ThreeFactorKit):
    """ThreeFactor with a timing rule (pair STDP) as its eligibility, on a network with a neuron after every
    synapse."""

    def build(self, modulator: str = "grad", unused: bool = False, **guards: Any) -> None:
        torch.manual_seed(0)
        if unused:
            self.model = _SpikingPlain(True)
            self.names = ("net.0", "net.2", "unused")
            self.learner = ThreeFactor(self.model, modulator=FeedbackSign(), rule=STDP(), layers=list(self.names),
                                       **guards)
        else:
            plain = _SpikingPlain(False)
            self.model = SpikingNetwork(*plain.net)
            self.names = self.layers
            self.learner = ThreeFactor(self.model, modulator=_modulator(modulator), rule=STDP(), **guards)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)


class EPropKit(Kit):
    """e-prop on ``Linear(8, 6) -> RecurrentLIF(6) -> Linear(6, 3)``: its own learning signal ("grad" in the table)
    or a modulator that replaces it (FeedbackSign, RewardSign).  Its run() drives all three layers at every step,
    so no selected layer can miss its forward ("silent" does not apply)."""

    faults = ("nan_input", "inf_input", "nan_weight", "inf_weight", "frozen", "empty", "nan_loss", "nan_loss_error",
              "nan_error", "nan_reward")
    frozen_modulators = ("grad", "error")

    def build(self, modulator: str = "grad", unused: bool = False, **guards: Any) -> None:
        torch.manual_seed(0)
        self.model = SpikingNetwork(nn.Linear(8, 6), RecurrentLIF(6), nn.Linear(6, 3))
        nn.init.uniform_(self.model[0].weight, 0.0, 0.5)
        third = {"grad": None, "error": FeedbackSign(), "reward": RewardSign()}[modulator]
        self.learner = EProp(self.model, modulator=third, **guards)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def weights(self) -> dict[str, Tensor]:
        params = self.learner.parameters()
        return {name: params[name] for name in ("input.weight", "recurrent.weight", "output.weight")}

    def update(self, x: Tensor, loss_scale: float = 1.0, **signals: Any) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        labels = LABELS[:len(x)]
        self.learner.run(x.unsqueeze(0).expand(6, *x.shape), lambda y: F.cross_entropy(y, labels) * loss_scale)
        context: dict[str, Any] = {"error": signals["error"]} if "error" in signals else {}
        if isinstance(self.learner.modulator, RewardSign):
            context = {"reward": signals.get("reward", torch.ones(4)), "action": labels}
        self.learner.step(**context)
        self.optimizer.step()


#: every learner of the library; a new learner joins the table with one line here
KITS = {"GHL": GHLKit, "ThreeFactor": ThreeFactorKit, "HebbFF": HebbFFKit, "SoftHebbLearner": SoftHebbKit,
        "ThreeFactor+STDP": TimingKit, "EProp": EPropKit}

#: (fault, modulator, what is poisoned) -> injected how
NONFINITE = {
    "nan_input": "grad", "inf_input": "grad", "nan_weight": "grad", "inf_weight": "grad", "nan_loss": "grad",
    "nan_loss_neuron": "neuron", "nan_loss_error": "error", "nan_error": "error", "nan_reward": "reward",
}


def _inputs() -> Tensor:
    return torch.rand(4, 8, generator=torch.Generator().manual_seed(1))


def _inject(kit: Kit, fault: str) -> tuple[Tensor, dict[str, Any], float]:
    """The input, signals and loss scale of one update with ``fault`` injected."""
    x, signals, scale = _inputs(), {}, 1.0
    if fault in ("nan_input", "inf_input"):
        x[1, 3] = NAN if fault == "nan_input" else INF
    elif fault in ("nan_weight", "inf_weight"):
        with torch.no_grad():
            next(iter(kit.weights().values()))[0, 0] = NAN if fault == "nan_weight" else INF
    elif fault.startswith("nan_loss"):
        scale = NAN
    elif fault == "nan_error":
        signals["error"] = torch.full((4, 3), NAN)
    elif fault == "nan_reward":
        signals["reward"] = torch.tensor([1.0, NAN, 0.0, 1.0])
    return x, signals, scale


def _snapshot(kit: Kit) -> dict[str, Tensor]:
    return {name: weight.detach().clone() for name, weight in kit.weights().items()}


def _unchanged(before: dict[str, Tensor], kit: Kit) -> bool:
    return all(torch.allclose(before[name], weight, rtol=0, atol=0, equal_nan=True)
               for name, weight in kit.weights().items())


CASES = [(learner, fault) for learner, kit in KITS.items() for fault in NONFINITE if fault in kit.faults]


@pytest.mark.parametrize("learner,fault", CASES)
def test_nonfinite_raises_naming_the_layer_and_writes_nothing(learner, fault):
    kit = KITS[learner]()
    kit.build(modulator=NONFINITE[fault])
    x, signals, scale = _inject(kit, fault)
    before = _snapshot(kit)
    first = next(iter(kit.weights()))
    with pytest.raises(FloatingPointError, match=rf"non-finite .*'{first}'"):
        kit.update(x, scale, **signals)
    assert _unchanged(before, kit)


@pytest.mark.parametrize("learner,fault", CASES)
def test_nonfinite_skip_warns_and_leaves_the_weights_unchanged(learner, fault):
    kit = KITS[learner]()
    kit.build(modulator=NONFINITE[fault], nonfinite="skip")
    x, signals, scale = _inject(kit, fault)
    before = _snapshot(kit)
    first = next(iter(kit.weights()))
    with pytest.warns(PlasticityWarning, match=rf"non-finite .*'{first}'.*skipped"):
        kit.update(x, scale, **signals)
    # the poisoned layer never moves; a global signal every layer shares (loss, error, reward) moves none
    assert torch.allclose(before[first], kit.weights()[first], rtol=0, atol=0, equal_nan=True)
    if fault in ("nan_loss", "nan_error", "nan_reward"):
        assert _unchanged(before, kit)


@pytest.mark.parametrize("learner,modulator", [(name, modulator) for name, kit in KITS.items() if "frozen" in kit.faults
                                               for modulator in kit.frozen_modulators])
def test_frozen_weight_is_never_written_and_reported_once(learner, modulator):
    kit = KITS[learner]()
    kit.build(modulator=modulator)
    first, *others = kit.weights()
    kit.weights()[first].requires_grad_(False)
    before = _snapshot(kit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kit.update(_inputs())
        kit.update(_inputs())
    frozen = [w for w in caught if issubclass(w.category, PlasticityWarning) and "frozen" in str(w.message)]
    assert len(frozen) == 1 and f"'{first}'" in str(frozen[0].message)
    assert torch.equal(before[first], kit.weights()[first])
    assert any(not torch.equal(before[name], kit.weights()[name]) for name in others), "the others still learn"


@pytest.mark.parametrize("learner", [name for name, kit in KITS.items() if "silent" in kit.faults])
def test_selected_layer_without_a_forward_is_named_and_strict_raises(learner):
    kit = KITS[learner]()
    kit.build(unused=True)
    before = _snapshot(kit)
    with pytest.warns(PlasticityWarning, match=r"recorded no training-mode forward.*'unused'"):
        kit.update(_inputs())
    assert torch.equal(before["unused"], kit.weights()["unused"])
    assert any(not torch.equal(before[name], kit.weights()[name]) for name in before if name != "unused")
    kit.build(unused=True, strict=True)
    with pytest.raises(RuntimeError, match="'unused'"):
        kit.update(_inputs())


@pytest.mark.parametrize("learner", [name for name, kit in KITS.items() if "empty" in kit.faults])
def test_empty_batch_is_refused(learner):
    kit = KITS[learner]()
    kit.build()
    with pytest.raises(ValueError, match="empty batch"):
        kit.update(torch.zeros(0, 8))
