"""SWTA-Oja eligibility against an independent float64 loop reference (GHL Eq. 4)."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from ghl_snn import SWTAOja, swta_oja
from ghl_snn.rules.base import normalize_eligibility


def reference_linear(x, weight, tau):
    """Loop over samples, outputs and inputs: E_ik = mean_n u_k (x_i - y_k w_ik)."""
    n_samples, n_in = x.shape
    n_out = weight.shape[0]
    eligibility = torch.zeros(n_out, n_in, dtype=torch.float64)
    for n in range(n_samples):
        y = [sum(float(weight[k, i]) * float(x[n, i]) for i in range(n_in)) for k in range(n_out)]
        z = sum(math.exp(v / tau) for v in y)
        for k in range(n_out):
            u = math.exp(y[k] / tau) / z
            for i in range(n_in):
                eligibility[k, i] += u * (float(x[n, i]) - y[k] * float(weight[k, i]))
    return eligibility / n_samples


def reference_conv(x, weight, tau, stride, padding, dilation):
    """Loop over output positions: gather each input patch explicitly, apply Eq. 4 patch by patch."""
    n_samples, c_in, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    out_h = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    out_w = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    eligibility = torch.zeros_like(weight, dtype=torch.float64)
    for n, oh, ow in itertools.product(range(n_samples), range(out_h), range(out_w)):
        rows = [oh * stride + dilation * a for a in range(kh)]
        cols = [ow * stride + dilation * b for b in range(kw)]
        patch = padded[n][:, rows][:, :, cols]
        y = (weight * patch).sum(dim=(1, 2, 3))
        u = torch.softmax(y / tau, dim=0)
        for k in range(c_out):
            eligibility[k] += u[k] * (patch - y[k] * weight[k])
    return eligibility / n_samples


def test_linear_matches_loop_reference():
    torch.manual_seed(0)
    x = torch.rand(5, 4, dtype=torch.float64)
    weight = torch.randn(3, 4, dtype=torch.float64)
    got = swta_oja(x, x @ weight.t(), weight, tau=0.7)
    torch.testing.assert_close(got, reference_linear(x, weight, 0.7), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (1, 1, 1), (2, 1, 1), (1, 2, 2), (3, 0, 2)])
def test_conv_matches_loop_reference(stride, padding, dilation):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64) * 0.3
    y = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation)
    got = swta_oja(x, y, weight, tau=1.5, stride=stride, padding=padding, dilation=dilation)
    expected = reference_conv(x, weight, 1.5, stride, padding, dilation)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-11)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 4), n_in=st.integers(1, 5), n_out=st.integers(1, 4),
       tau=st.floats(0.1, 10.0), seed=st.integers(0, 10_000))
def test_linear_property(n, n_in, n_out, tau, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, dtype=torch.float64, generator=generator)
    weight = torch.randn(n_out, n_in, dtype=torch.float64, generator=generator)
    got = swta_oja(x, x @ weight.t(), weight, tau=tau)
    torch.testing.assert_close(got, reference_linear(x, weight, tau), rtol=1e-9, atol=1e-10)


def test_float32_inputs_agree_with_float64():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 6, 6)
    weight = torch.randn(5, 3, 3, 3) * 0.2
    y = F.conv2d(x, weight, padding=1)
    got = swta_oja(x, y, weight, tau=1.0, padding=1)
    expected = swta_oja(x.double(), y.double(), weight.double(), tau=1.0, padding=1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_max_normalisation():
    eligibility = torch.tensor([[0.5, -2.0], [1.0, 0.25]])
    normalised = normalize_eligibility(eligibility, "max")
    assert normalised.abs().max() == 1.0
    torch.testing.assert_close(normalised, eligibility / 2.0)
    assert torch.equal(normalize_eligibility(torch.zeros(2, 2), "max"), torch.zeros(2, 2))
    assert normalize_eligibility(eligibility, None) is eligibility


def test_class_uses_tau():
    torch.manual_seed(3)
    layer = torch.nn.Linear(4, 3, bias=False)
    x = torch.rand(6, 4)
    y = layer(x)
    hot, cold = SWTAOja(tau=0.1, normalize=None)(layer, x, y), SWTAOja(tau=10.0, normalize=None)(layer, x, y)
    assert not torch.allclose(hot, cold)
    torch.testing.assert_close(hot, swta_oja(x, y, layer.weight, tau=0.1))


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau_is_rejected(tau):
    with pytest.raises(ValueError, match="tau"):
        SWTAOja(tau=tau)
    with pytest.raises(ValueError, match="tau"):
        swta_oja(torch.rand(2, 3), torch.rand(2, 4), torch.rand(4, 3), tau=tau)


def test_wrong_shapes_are_named():
    with pytest.raises(ValueError, match="weight shape"):
        swta_oja(torch.rand(2, 3), torch.rand(2, 4), torch.rand(4, 5), tau=1.0)
    with pytest.raises(ValueError, match="normalize"):
        swta_oja(torch.rand(2, 3), torch.rand(2, 4), torch.rand(4, 3), normalize="l2")
