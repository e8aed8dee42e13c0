"""Eligibility normalisations (max, mean, rms, channel, channel-mean) against float64 loop references."""
import itertools
import math

import pytest
import torch
from torch import nn

import ghl_snn
from ghl_snn.modulators import GradSign
from ghl_snn.rules import swta_oja
from ghl_snn.rules.base import SUPPORTED_NORMALIZATIONS, check_normalization, normalize_eligibility


def loop_reference(eligibility: torch.Tensor, mode: str | None) -> torch.Tensor:
    """Element-by-element float64 reference of every normalisation mode."""
    e = eligibility.double()
    shape = tuple(e.shape)
    entries = list(itertools.product(*(range(n) for n in shape)))
    out = torch.zeros(shape, dtype=torch.float64)
    if mode is None:
        return e.clone()
    if mode in ("channel", "channel-mean"):
        for k in range(shape[0]):
            row = [abs(float(e[idx])) for idx in entries if idx[0] == k]
            scale = max(row) if mode == "channel" else sum(row) / len(row)
            for idx in entries:
                if idx[0] == k:
                    out[idx] = float(e[idx]) / scale if scale > 0 else float(e[idx])
        return out
    values = [float(e[idx]) for idx in entries]
    if mode == "max":
        scale = max(abs(v) for v in values)
    elif mode == "mean":
        scale = sum(abs(v) for v in values) / len(values)
    else:  # rms
        scale = math.sqrt(sum(v * v for v in values) / len(values))
    for idx in entries:
        out[idx] = float(e[idx]) / scale if scale > 0 else float(e[idx])
    return out


@pytest.mark.parametrize("mode", SUPPORTED_NORMALIZATIONS)
@pytest.mark.parametrize("shape", [(4, 3, 2, 2), (5, 7), (6,)])
def test_normalize_matches_loop_reference(mode, shape):
    generator = torch.Generator().manual_seed(len(shape))
    eligibility = torch.randn(shape, generator=generator, dtype=torch.float64) * torch.rand(
        shape[0], *([1] * (len(shape) - 1)), generator=generator, dtype=torch.float64) * 3
    got = normalize_eligibility(eligibility, mode)
    torch.testing.assert_close(got, loop_reference(eligibility, mode), rtol=1e-12, atol=1e-12)
    if mode in ("mean", "channel-mean") and len(shape) > 1:
        rows = got.abs().reshape(shape[0], -1).mean(1) if mode == "channel-mean" else got.abs().mean()
        torch.testing.assert_close(rows, torch.ones_like(rows))


@pytest.mark.parametrize("mode", ["max", "mean", "rms", "channel", "channel-mean"])
def test_zero_scale_stays_zero(mode):
    eligibility = torch.zeros(3, 2, 2, 2)
    eligibility[1] = torch.randn(2, 2, 2)  # channels 0 and 2 are all-zero
    got = normalize_eligibility(eligibility, mode)
    assert torch.isfinite(got).all()
    assert torch.equal(got[0], torch.zeros(2, 2, 2)) and torch.equal(got[2], torch.zeros(2, 2, 2))
    assert torch.equal(normalize_eligibility(torch.zeros(4, 3), mode), torch.zeros(4, 3))


def test_unknown_normalisation_is_one_clear_error():
    with pytest.raises(ValueError, match="normalize must be one of"):
        check_normalization("l2")
    with pytest.raises(ValueError, match="normalize must be one of"):
        ghl_snn.GHL(nn.Linear(3, 2), normalize="median")


@pytest.mark.parametrize("mode", ["mean", "channel", "rms"])
def test_ghl_plugin_applies_the_chosen_normalisation(mode):
    """GHL(normalize=mode) writes sign(dL/dW) ⊙ |normalize(E)| into .grad (E recomputed by the rule itself)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    rule = ghl_snn.GHL(model, tau=1.0, layers=["0"], normalize=mode, modulator=GradSign())
    x = torch.randn(5, 3, 6, 6)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1, 1]))
    loss.backward()
    weight_grad = conv.weight.grad.clone()
    with torch.no_grad():  # the functional kernel: no hook records this forward
        raw = swta_oja(x, nn.functional.conv2d(x, conv.weight, padding=1), conv.weight, tau=1.0, padding=1)
    rule.step()
    expected = torch.sign(weight_grad).double() * loop_reference(raw, mode).abs()
    torch.testing.assert_close(conv.weight.grad.double(), expected, rtol=1e-4, atol=1e-6)
    if mode == "mean":  # the mean step equals sign-only's wherever dL/dW != 0
        assert float(conv.weight.grad.abs().mean()) == pytest.approx(
            float((weight_grad != 0).float().mul(loop_reference(raw, mode).abs()).mean()), rel=1e-4)
