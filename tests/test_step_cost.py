"""What the exact GHL step keeps and computes beyond backprop: a weight-sized forgetting sum, no idle inputs."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, NeuronSign, SignOnly, SWTAOja
from ghl_snn.rules.swta_oja import swta_oja_conv, swta_oja_linear


@pytest.mark.parametrize("stride,padding,dilation", [(1, 0, 1), (1, 1, 1), (2, 1, 1), (1, 2, 2), (3, 0, 2)])
def test_weight_sized_forgetting_sum_equals_the_activation_sum(stride, padding, dilation):
    """sum_{n,pos} u_k y_k == sum_i w_ki H_ki when y = conv(x, W): the fast path is the same E (float64)."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 15, 14, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64) * 0.3
    y = F.conv2d(x, weight, stride=stride, padding=padding, dilation=dilation)
    assert y.numel() > weight.numel()  # so that the weight-sized form is the one taken
    explicit = swta_oja_conv(x, y.clone(), weight, 0.6, stride, padding, dilation)
    fast = swta_oja_conv(x, y.clone(), weight, 0.6, stride, padding, dilation, y_is_wx=True)
    torch.testing.assert_close(fast, explicit, rtol=1e-10, atol=1e-12)
    x_lin = torch.rand(7, 6, dtype=torch.float64)
    w_lin = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(swta_oja_linear(x_lin, x_lin @ w_lin.t(), w_lin, 1.3, y_is_wx=True),
                               swta_oja_linear(x_lin, x_lin @ w_lin.t(), w_lin, 1.3), rtol=1e-10, atol=1e-12)


def test_fast_path_differs_when_y_is_not_wx():
    """The promise matters: with a y that is not W x the two paths disagree (so the test above can fail)."""
    torch.manual_seed(1)
    x, weight = torch.rand(5, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    y = torch.randn(5, 3, dtype=torch.float64)
    assert not torch.allclose(swta_oja_linear(x, y, weight, 1.0, y_is_wx=True), swta_oja_linear(x, y, weight, 1.0))


def test_fast_path_only_when_activations_outnumber_the_weight():
    """With fewer activations than weights (small batch, wide layer) the explicit sum over u * y is the cheaper
    pass and is used even under the y = W x promise: the result then follows the given y exactly."""
    torch.manual_seed(3)
    x, weight = torch.rand(2, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    y = torch.randn(2, 6, dtype=torch.float64)  # not W x: 12 activations < 48 weights
    torch.testing.assert_close(swta_oja_linear(x, y, weight, 1.0, y_is_wx=True), swta_oja_linear(x, y, weight, 1.0),
                               rtol=0, atol=0)
    x_conv, w_conv = torch.rand(1, 4, 3, 3, dtype=torch.float64), torch.randn(5, 4, 3, 3, dtype=torch.float64)
    y_conv = torch.randn(1, 5, 1, 1, dtype=torch.float64)  # 5 activations < 180 weights
    torch.testing.assert_close(swta_oja_conv(x_conv, y_conv.clone(), w_conv, 0.7, y_is_wx=True),
                               swta_oja_conv(x_conv, y_conv.clone(), w_conv, 0.7), rtol=0, atol=0)


def test_rule_class_in_float32_agrees_with_float64_explicit_sum():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
    x = torch.randn(4, 3, 8, 8)
    got = SWTAOja(tau=0.8, normalize=None)(conv, x, conv(x).detach())
    expected = swta_oja_conv(x.double(), F.conv2d(x.double(), conv.weight.double(), padding=1),
                               conv.weight.detach().double(), 0.8, 1, 1, 1)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-5)


def test_linear_input_is_kept_only_for_modulators_that_read_it():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.rand(3, 5)
    plain = GHL(model)
    model(x)
    assert all(c.x is None for captures in plain._captures.values() for c in captures)
    plain.remove()
    reads_input = GHL(model, modulator=NeuronSign())          # per-synapse credit: sign(sum_n delta_nk x_ni)
    ignores_input = GHL(model, modulator=SignOnly())
    model(x)
    assert all(c.x is not None for captures in reads_input._captures.values() for c in captures)
    assert all(c.x is None for captures in ignores_input._captures.values() for c in captures)
    reads_input.remove()
    ignores_input.remove()
    # and the presynaptic trace still acts: a silent input's synapses do not move under NeuronSign
    rule = GHL(model, layers=["0"], modulator=NeuronSign())
    x[:, 1] = 0.0
    model.zero_grad()
    F.cross_entropy(model(x), torch.tensor([0, 1, 0])).backward()
    rule.step()
    assert torch.equal(model[0].weight.grad[:, 1], torch.zeros(4))
    assert model[0].weight.grad[:, 0].abs().sum() > 0


def test_default_step_synchronises_once_for_all_layers(monkeypatch):
    """GradSign with "max": every layer's max|E| and finiteness sum come back to Python in one transfer (one
    device synchronisation per step, not one per layer); the generic path (here NeuronSign) still checks per layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 6),
                          nn.ReLU(), nn.Linear(6, 3))
    transfers = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: transfers.append(self.shape) or original(self))
    for modulator, expected in ((None, [(8,)]), (NeuronSign(), [])):
        rule = GHL(model, modulator=modulator)
        F.cross_entropy(model(torch.randn(5, 2, 6, 6)), torch.randint(0, 3, (5,))).backward()
        transfers.clear()
        rule.step()
        assert transfers == expected  # four layers, two values each, one transfer
        rule.remove()
        model.zero_grad(set_to_none=True)
