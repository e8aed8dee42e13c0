"""The in-place step (GradSign / SignOnly write over dL/dW) gives the generic ``M ⊙ |E|`` (GHL Eq. 6): exactly, or,
with the "max" normalisation (applied as a product with the float32 reciprocal of ``max|E|``), to one rounding."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ghl_snn.plasticity._fast_path as fast_path
from ghl_snn import GHL, GradSign, SignOnly, SWTAOja, normalize_eligibility


class NegatedGradSign(GradSign):
    """A subclass that changes ``sign``: it must not take GradSign's in-place path."""

    def sign(self, layer, **context):
        return -super().sign(layer, **context)


def _net(dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).to(dtype)


def _step(modulator, normalize, dtype=torch.float32, forwards=2):
    model = _net(dtype)
    rule = GHL(model, modulator=modulator, rule=SWTAOja(tau=0.7, normalize=normalize))
    loss = 0
    for seed in range(forwards):
        torch.manual_seed(10 + seed)
        x = torch.randn(3, 2, 6, 6, dtype=dtype)
        loss = loss + F.cross_entropy(model(x), torch.tensor([0, 1, 2]))
    loss.backward()
    model[0].weight.grad[0, 0, 0, 0] = 0.0  # sign(0) = 0: this synapse must get no update
    grads = {name: model.get_submodule(name).weight.grad.clone() for name in ("0", "3")}
    raw = {name: rule.eligibility(name) for name in ("0", "3")}
    held = {name: model.get_submodule(name).weight.grad for name in ("0", "3")}
    rule.step()
    return model, grads, raw, held


#: one float32 rounding of the deferred max scale (x * (1/s) instead of x / s); every other mode is exact
ONE_ROUNDING = {"rtol": 2.4e-7, "atol": 0}
EXACT = {"rtol": 0, "atol": 0}


@pytest.mark.parametrize("block_bytes", [None, 40])  # on CPU the passes run over row blocks: force several
@pytest.mark.parametrize("normalize", ["max", "channel", "mean", "rms", "channel-mean", None])
def test_grad_sign_in_place_equals_sign_times_abs_e(normalize, block_bytes, monkeypatch):
    if block_bytes is not None:
        monkeypatch.setattr(fast_path, "BLOCK_BYTES", block_bytes)
    model, grads, raw, held = _step(GradSign(), normalize)
    for name in ("0", "3"):
        expected = grads[name].sign() * normalize_eligibility(raw[name], normalize).abs()
        got = model.get_submodule(name).weight.grad
        assert got is held[name]  # written into the back-propagated .grad, no new tensor
        torch.testing.assert_close(got, expected, **(ONE_ROUNDING if normalize == "max" else EXACT))
    assert model[0].weight.grad[0, 0, 0, 0] == 0


def test_sign_only_in_place_is_sign_of_the_gradient():
    model, grads, _, _ = _step(SignOnly(), "max")
    for name in ("0", "3"):
        torch.testing.assert_close(model.get_submodule(name).weight.grad, grads[name].sign(), rtol=0, atol=0)


def test_subclass_changing_sign_takes_the_generic_path():
    model, grads, raw, _ = _step(NegatedGradSign(), "max")
    for name in ("0", "3"):
        expected = -grads[name].sign() * normalize_eligibility(raw[name], "max").abs()
        torch.testing.assert_close(model.get_submodule(name).weight.grad, expected, rtol=0, atol=0)


def test_float64_weights_take_the_generic_path_with_the_same_values():
    """E is float32 and dL/dW float64: no in-place path, the product is cast to the weight's dtype."""
    model, grads, raw, _ = _step(GradSign(), "max", dtype=torch.float64, forwards=1)
    for name in ("0", "3"):
        expected = (grads[name].sign() * normalize_eligibility(raw[name], "max").abs()).double()
        got = model.get_submodule(name).weight.grad
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_gradient_is_caught_before_the_in_place_sign(value):
    """sign(NaN) = 0 in torch, so dL/dW is checked before it is overwritten."""
    model = _net(torch.float32)
    rule = GHL(model)
    F.cross_entropy(model(torch.randn(3, 2, 6, 6)), torch.tensor([0, 1, 2])).backward()
    model[3].weight.grad[1, 2] = value
    with pytest.raises(FloatingPointError, match="'3'"):
        rule.step()
