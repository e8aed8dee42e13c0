"""Ablations and controls of GHL: local-only (two-factor Hebbian), sign-only (GHL paper Table 5) and the plain
gradient (the learner reduces to SGD on the back-propagated / rate-surrogate gradient)."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import LayerSignals, Modulator, require_weight_grad


class Ones(Modulator):
    """Pure local two-factor learning: ``M = -sign(E)``, hence ``.grad = -E`` and ``W <- W + eta * E``.

    No global signal at all (the paper's "Hebbian only" row); needs no backward pass.

    Examples:
        The two-factor Hebbian ablation: no global signal, ``grad = -E`` (max-normalised).

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import GHL, Ones
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> rule = GHL(model, layers=["0"], modulator=Ones())
        >>> _ = model(x)                                        # no loss, no backward pass
        >>> E = rule.eligibility("0")                           # E of the forwards since the last step
        >>> rule.step()
        >>> torch.allclose(model[0].weight.grad, -E / E.abs().max())
        True
    """

    needs_weight_grad = False

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return -layer.eligibility.sign()

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return -layer.eligibility


class SignOnly(Modulator):
    """Sign-only ablation (GHL paper Table 5): ``|E| := 1``, so ``.grad = sign(dL/dW)`` (signSGD without momentum).

    Examples:
        GHL Table 5's ablation: the gradient's sign with |E| := 1.

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import GHL, SignOnly
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> rule = GHL(model, layers=["0"], modulator=SignOnly())
        >>> F.cross_entropy(model(x), y).backward()
        >>> rule.step()
        >>> sorted(set(model[0].weight.grad.abs().flatten().tolist()) - {0.0})
        [1.0]
    """

    needs_eligibility = False

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return require_weight_grad(layer, self).sign()

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return self.sign(layer, **context)


class PlainGradient(Modulator):
    """Control: ``.grad = dL/dW`` unchanged (no sign, no ``|E|``), so the optimiser performs plain SGD.

    In the spiking learner with ``global_signal="rate"`` this is rate-surrogate SGD (the gradient of the rate
    network at the observed window means, no BPTT); with ``"bptt"`` it is surrogate-gradient BPTT.

    Examples:
        The control GHL approximates: the back-propagated gradient itself.

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import GHL, PlainGradient
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> rule = GHL(model, layers=["0"], modulator=PlainGradient())
        >>> F.cross_entropy(model(x), y).backward()
        >>> expected = model[0].weight.grad.clone()
        >>> rule.step()
        >>> torch.equal(model[0].weight.grad, expected)
        True
    """

    needs_eligibility = False

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return require_weight_grad(layer, self).sign()

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return require_weight_grad(layer, self)


class UnitMagnitude(Modulator):
    """Ablation of the magnitude: ``.grad = M`` of any modulator with ``|E| := 1`` (e.g. the per-synapse credit
    sign of FeedbackSign alone), to measure what the eligibility's magnitude contributes.

    Examples:
        Any modulator's sign with |E| := 1 (here FeedbackSign's).

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor, UnitMagnitude, FeedbackSign
        >>> net = SpikingNetwork(nn.Linear(8, 16, bias=False), IF(), nn.Linear(16, 3, bias=False))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> learner = ThreeFactor(net, UnitMagnitude(FeedbackSign()))
        >>> _ = learner.run(x, num_steps=5, encoder=BernoulliEncoder())
        >>> learner.step(loss_fn=lambda out: F.cross_entropy(out, y))
        >>> set(net[0].weight.grad.abs().flatten().tolist()) <= {0.0, 1.0}
        True
    """

    needs_eligibility = False

    def __init__(self, base: Modulator) -> None:
        self.base = base
        self.needs_weight_grad = base.needs_weight_grad
        self.needs_output_grad = base.needs_output_grad
        self.needs_inputs = base.needs_inputs

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return self.base.sign(layer, **context)

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return self.base.sign(layer, **context).float().expand_as(layer.module.weight)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)

    def __repr__(self) -> str:
        return f"UnitMagnitude({self.base!r})"


class PlainReadout(Modulator):
    """Hybrid: the base modulator's update on the hidden layers, the plain gradient ``dL/dW`` on the read-out.

    Locates the cost of a sign rule: ``.grad = M ⊙ |E|`` (the base's) for every plastic layer but the output one,
    ``.grad = dL/dW`` (as [`PlainGradient`][ghl_snn.PlainGradient]) for the output layer, which the spiking learner
    flags with ``layer.is_output`` (its last synapse) or which is named in ``output_layers``.

    Examples:
        GradSign on the hidden layer, plain SGD on the read-out.

        >>> import torch, torch.nn.functional as F
        >>> from torch import nn
        >>> from ghl_snn import IF, BernoulliEncoder, SpikingNetwork, ThreeFactor, PlainReadout, GradSign
        >>> net = SpikingNetwork(nn.Linear(8, 16, bias=False), IF(), nn.Linear(16, 3, bias=False))
        >>> x, y = torch.rand(4, 8), torch.tensor([0, 1, 2, 0])
        >>> learner = ThreeFactor(net, PlainReadout(GradSign()))
        >>> _ = learner.run(x, num_steps=5, encoder=BernoulliEncoder())
        >>> learner.step(loss_fn=lambda out: F.cross_entropy(out, y))
        >>> len(set(net[2].weight.grad.abs().flatten().tolist())) > 2   # a gradient, not a sign times |E| <= 1
        True
    """

    def __init__(self, base: Modulator, output_layers: tuple[str, ...] = ()) -> None:
        self.base = base
        self.output_layers = tuple(output_layers)
        self.needs_weight_grad = True
        self.needs_output_grad = base.needs_output_grad
        self.needs_eligibility = base.needs_eligibility
        self.needs_inputs = base.needs_inputs

    def is_output(self, layer: LayerSignals) -> bool:
        return layer.name in self.output_layers or layer.is_output

    def sign(self, layer: LayerSignals, **context: Any) -> Tensor:
        return require_weight_grad(layer, self).sign() if self.is_output(layer) else self.base.sign(layer, **context)

    def update(self, layer: LayerSignals, **context: Any) -> Tensor:
        return require_weight_grad(layer, self) if self.is_output(layer) else self.base.update(layer, **context)

    def rate_loss(self, **context: Any):
        return self.base.rate_loss(**context)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base.load_state_dict(state)

    def __repr__(self) -> str:
        return f"PlainReadout({self.base!r})"
