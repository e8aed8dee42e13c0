"""AlignmentMonitor: Hebbian update and cosines against float64 loop references, hooks for any learner."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, Ones
from ghl_snn.diagnostics import AlignmentMonitor, hebbian_update
from ghl_snn.diagnostics._observer import flat_cosine, row_cosine


def mlp(seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4, bias=bias), nn.Tanh(), nn.Linear(4, 3, bias=bias))


def loop_cosine(a, b):
    a, b = a.double().flatten().tolist(), b.double().flatten().tolist()
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def loop_hebbian_linear(x, y):
    """Σ_n h_b h_aᵀ by explicit loops in float64."""
    out = torch.zeros(y.shape[1], x.shape[1], dtype=torch.float64)
    for n in range(x.shape[0]):
        for k in range(y.shape[1]):
            for i in range(x.shape[1]):
                out[k, i] += float(y[n, k]) * float(x[n, i])
    return out


def test_cosine_of_update_with_itself_and_negation():
    a = torch.randn(4, 6)
    assert flat_cosine(a, a) == pytest.approx(1.0, abs=1e-12)
    assert flat_cosine(a, -a) == pytest.approx(-1.0, abs=1e-12)
    assert flat_cosine(a, 3.0 * a) == pytest.approx(1.0, abs=1e-12)
    b = torch.randn(4, 6)
    assert flat_cosine(a, b) == pytest.approx(loop_cosine(a, b), abs=1e-12)
    assert math.isnan(flat_cosine(a, torch.zeros(4, 6)))
    rows = row_cosine(a, b)
    for k in range(4):
        assert float(rows[k]) == pytest.approx(loop_cosine(a[k], b[k]), abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        flat_cosine(a, b.t())


def test_hebbian_update_linear_matches_loop():
    layer = nn.Linear(3, 2, bias=False)
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(hebbian_update(layer, x, y), loop_hebbian_linear(x, y))


def test_hebbian_update_conv_matches_loop():
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2, bias=False).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    y = conv(x).detach()
    expected = torch.zeros_like(conv.weight)
    xp = F.pad(x, (1, 1, 1, 1))
    for n in range(2):
        for k in range(3):
            for p in range(y.shape[2]):
                for q in range(y.shape[3]):
                    expected[k] += y[n, k, p, q] * xp[n, :, 2 * p:2 * p + 3, 2 * q:2 * q + 3]
    torch.testing.assert_close(hebbian_update(conv, x, y), expected)
    with pytest.raises(TypeError, match="Linear and nn.Conv2d"):
        hebbian_update(nn.ReLU(), x, y)


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect", groups=2, bias=False),
                                  nn.Conv2d(4, 4, 3, padding="same", groups=4, bias=False)],
                         ids=["grouped-reflect", "depthwise-same"])
def test_hebbian_update_of_grouped_convolutions_is_the_weight_gradient_for_h_b(conv):
    """sum_n h_b h_a^T of a grouped layer, in its own padding: the autograd weight gradient with dL/dy = h_b."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, 5, 6)
    y = conv(x)
    (expected,) = torch.autograd.grad((y * y.detach()).sum(), conv.weight)
    torch.testing.assert_close(hebbian_update(conv, x, y), expected, rtol=1e-5, atol=1e-5)


def test_sgd_with_weight_decay_matches_hand_computed_cosines():
    model, gamma, lr = mlp(), 0.3, 0.1
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=gamma)
    monitor = AlignmentMonitor(model, optimizer)
    x, target = torch.randn(8, 5), torch.randn(8, 3)
    optimizer.zero_grad()
    F.mse_loss(model(x), target).backward()
    optimizer.step()

    # by hand, on an untouched copy, with explicit loops for H
    h_a = x
    hidden = reference[0](h_a)
    out = reference[2](torch.tanh(hidden))
    F.mse_loss(out, target).backward()
    rows = {r["layer"]: r for r in monitor.records}
    assert set(rows) == {"0", "2"} and all(r["step"] == 0 for r in rows.values())
    for name, layer, inputs, pre in (("0", reference[0], h_a, hidden - reference[0].bias),
                                     ("2", reference[2], torch.tanh(hidden), out - reference[2].bias)):
        hebb = loop_hebbian_linear(inputs.detach(), pre.detach()) / 8
        grad = layer.weight.grad
        update = -lr * (grad + gamma * layer.weight.detach())
        assert rows[name]["signal_alignment"] == pytest.approx(loop_cosine(-grad, hebb), abs=1e-5)
        assert rows[name]["update_alignment"] == pytest.approx(loop_cosine(update, hebb), abs=1e-4)
        assert rows[name]["decay_alignment"] == pytest.approx(loop_cosine(-layer.weight.detach(), hebb), abs=1e-5)
        assert rows[name]["decay_alignment"] <= 0  # Eq. 11-12: Tr[W H] = mean ||h_b||^2 >= 0
        assert rows[name]["hebbian_neuron_fraction"] == pytest.approx(
            sum(loop_cosine(-grad[k], hebb[k]) > 0 for k in range(grad.shape[0])) / grad.shape[0])
    # weight decay makes the full update differ from the learning signal
    assert rows["0"]["update_alignment"] != pytest.approx(rows["0"]["signal_alignment"], abs=1e-3)


def test_pure_hebbian_learner_has_alignment_one_and_anti_hebbian_minus_one():
    """A rule writing .grad = -H (Hebbian) gives +1 on both cosines without weight decay; .grad = +H gives -1."""
    for sign in (1.0, -1.0):
        model = mlp(bias=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        monitor = AlignmentMonitor(model, optimizer, layers=["0"])
        x = torch.randn(16, 5)
        model(x)
        hebb = hebbian_update(model[0], x, x @ model[0].weight.detach().t()) / 16
        model[0].weight.grad = -sign * hebb
        optimizer.step()
        (row,) = monitor.records
        assert row["signal_alignment"] == pytest.approx(sign, abs=1e-6)
        assert row["update_alignment"] == pytest.approx(sign, abs=1e-5)
        assert row["hebbian_neuron_fraction"] == (1.0 if sign > 0 else 0.0)


def test_ghl_local_only_signal_is_the_swta_oja_eligibility():
    """With GHL(modulator=Ones()), .grad = -E: the monitor must compare exactly E with H."""
    from ghl_snn import swta_oja

    model = mlp(bias=False)
    rule = GHL(model, layers=["0"], modulator=Ones(), normalize=None, tau=0.7)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = AlignmentMonitor(model, optimizer, layers=["0"])
    x = torch.rand(12, 5)
    w0 = model[0].weight.detach().clone()
    model(x).sum().backward()
    rule.step()
    optimizer.step()
    eligibility = swta_oja(x, x @ w0.t(), w0, tau=0.7)
    hebb = loop_hebbian_linear(x, x @ w0.t()) / 12
    (row,) = monitor.records
    assert row["signal_alignment"] == pytest.approx(loop_cosine(eligibility, hebb), abs=1e-5)
    assert row["update_alignment"] == pytest.approx(loop_cosine(eligibility, hebb), abs=1e-4)


def test_adam_full_update_read_from_weight_snapshots():
    model = mlp()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    monitor = AlignmentMonitor(model, optimizer, layers=["2"])
    x, target = torch.randn(8, 5), torch.randn(8, 3)
    for _ in range(3):
        optimizer.zero_grad()
        inputs = torch.tanh(model[0](x)).detach()
        before = model[2].weight.detach().clone()
        hebb = hebbian_update(model[2], inputs, inputs @ before.t()) / 8
        F.mse_loss(model(x), target).backward()
        optimizer.step()
        expected = loop_cosine(model[2].weight.detach() - before, hebb)
        assert monitor.records[-1]["update_alignment"] == pytest.approx(expected, abs=1e-4)
    assert [r["step"] for r in monitor.records] == [0, 1, 2]


def test_every_k_steps_and_manual_observe_without_optimizer():
    model = mlp()
    monitor = AlignmentMonitor(model, layers=["0"], every=3, require_grad=False)
    seen = []
    for step in range(7):
        with torch.no_grad():
            model(torch.randn(4, 5))
        if monitor.recording:
            seen.append(step)
        with monitor.observe():
            with torch.no_grad():
                model[0].weight.mul_(0.9)  # a pure decay step: ΔW is parallel to -W
    assert [r["step"] for r in monitor.records] == seen == [0, 3, 6]
    for row in monitor.records:
        assert math.isnan(row["signal_alignment"])  # no .grad: signal undefined
        assert row["update_alignment"] == pytest.approx(row["decay_alignment"], abs=1e-6)
    assert monitor.step == 7


def test_eval_and_no_grad_forwards_are_not_recorded_and_errors():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = AlignmentMonitor(model, optimizer)
    model.eval()
    model(torch.randn(3, 5)).sum().backward()
    optimizer.step()
    assert all(math.isnan(r["signal_alignment"]) for r in monitor.records)
    assert all(r["samples"] == 0 for r in monitor.records)
    with pytest.raises(ValueError, match="every"):
        AlignmentMonitor(model, every=0)
    with pytest.raises(TypeError, match="optimizer"):
        AlignmentMonitor(model, optimizer=object())
    with pytest.raises(RuntimeError, match="without a preceding"):
        monitor.post_step()
    with pytest.raises(KeyError, match="unknown layer"):
        monitor.series("nope")
    monitor.remove()
    count = len(monitor.records)
    model.train()
    model(torch.randn(3, 5)).sum().backward()
    optimizer.step()
    assert len(monitor.records) == count  # hooks are gone


def test_summary_csv_and_plot(tmp_path):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
    monitor = AlignmentMonitor(model, optimizer)
    for _ in range(4):
        optimizer.zero_grad()
        F.mse_loss(model(torch.randn(8, 5)), torch.randn(8, 3)).backward()
        optimizer.step()
    values = [r["signal_alignment"] for r in monitor.records if r["layer"] == "2"][-2:]
    stats = monitor.summary(last=2)["2"]
    assert stats["signal_alignment_mean"] == pytest.approx(sum(values) / 2)
    assert stats["signal_alignment_std"] == pytest.approx(abs(values[0] - values[1]) / 2)
    csv_path, png_path = monitor.write(tmp_path)
    lines = csv_path.read_text().strip().splitlines()
    assert lines[0].startswith("step,layer,signal_alignment") and len(lines) == 1 + 8
    assert png_path.stat().st_size > 1000


def test_several_forwards_per_update_are_accumulated():
    """E.g. time steps of a spiking network: H is the mean over all (sample, time step) rows of h_b h_aᵀ."""
    model = mlp(bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = AlignmentMonitor(model, optimizer, layers=["0"])
    chunks = [torch.randn(3, 5), torch.randn(4, 5)]
    w0 = model[0].weight.detach().clone()
    for chunk in chunks:
        model(chunk).sum().backward()
    hebb = monitor.hebbian("0")
    x = torch.cat(chunks)
    torch.testing.assert_close(hebb.double(), loop_hebbian_linear(x, x @ w0.t()) / 7, rtol=1e-5, atol=1e-6)
    optimizer.step()
    assert monitor.records[0]["samples"] == 7
    assert monitor.hebbian("0") is None  # cleared after the update


def test_conv_layer_through_the_monitor_matches_hand_computation():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.2)
    monitor = AlignmentMonitor(model, optimizer, layers=["0"])
    x, target = torch.randn(3, 2, 4, 4), torch.tensor([0, 1, 1])
    F.cross_entropy(model(x), target).backward()
    optimizer.step()
    conv = reference[0]
    pre = (conv(x) - conv.bias.view(1, -1, 1, 1)).detach()
    F.cross_entropy(reference(x), target).backward()
    hebb = torch.zeros_like(conv.weight, dtype=torch.float64)
    xp = F.pad(x, (1, 1, 1, 1)).double()
    for n in range(3):
        for k in range(3):
            for p in range(4):
                for q in range(4):
                    hebb[k] += float(pre[n, k, p, q]) * xp[n, :, p:p + 3, q:q + 3]
    (row,) = monitor.records
    assert row["signal_alignment"] == pytest.approx(loop_cosine(-conv.weight.grad, hebb), abs=1e-5)
    update = -0.1 * (conv.weight.grad + 0.2 * conv.weight.detach())
    assert row["update_alignment"] == pytest.approx(loop_cosine(update, hebb), abs=1e-4)
