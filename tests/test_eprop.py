"""e-prop against autograd on the graph it approximates (spikes' influence on later membranes cut), in float64, for the
plain and the adaptive LIF with and without the leaky read-out, and its eligibility traces against explicit float64
loops over past steps and synapses."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ghl_snn import FeedbackSign, RecurrentLIF, SpikingNetwork
from ghl_snn.spiking.eprop import EProp
from ghl_snn.spiking.neurons import spike_fn

T, N, IN, HIDDEN, CLASSES = 24, 4, 5, 7, 3
BETA, THETA, SLOPE, RHO = 0.85, 0.5, 4.0, 0.9


def network(seed: int = 0, adaptation: float = 0.0) -> SpikingNetwork:
    torch.manual_seed(seed)
    neuron = RecurrentLIF(HIDDEN, beta=BETA, threshold=THETA, slope=SLOPE, adaptation=adaptation, rho=RHO)
    net = SpikingNetwork(nn.Linear(IN, HIDDEN), neuron, nn.Linear(HIDDEN, CLASSES)).double()
    with torch.no_grad():
        net[0].weight.normal_(0.3, 0.4)
        net[1].recurrent.weight.normal_(0.0, 0.3)
    return net


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = (torch.rand(T, N, IN, generator=generator, dtype=torch.float64) < 0.4).double()
    return inputs, torch.randint(CLASSES, (N,), generator=generator)


def cut_graph_gradients(net: SpikingNetwork, inputs, labels, loss_steps: int, feedback: torch.Tensor | None = None,
                        kappa: float = 0.0, adaptation_path: bool = True, rate_cost: float = 0.0,
                        rate_target: float = 0.0):
    """Autograd through time with z_{t-1} detached where it enters v_t (recurrent input and reset; the spike still
    raises its own neuron's adaptive threshold); ``feedback`` replaces W_out in the read-out's backward pass (random
    e-prop's B); ``kappa``: the leaky read-out y_t = kappa y_{t-1} + W_out z_t + b; ``adaptation_path=False`` also
    cuts the spike's effect on its own threshold (what plain-LIF traces would compute for an ALIF); ``rate_cost``:
    plus the firing-rate regulariser (c / 2) sum_j (f_j - f_target)^2 of the rates over batch and steps."""
    w_in, b_in, w_rec, w_out, b_out = (net[0].weight, net[0].bias, net[1].recurrent.weight, net[2].weight,
                                       net[2].bias)
    adapt = net[1].adaptation
    v = torch.zeros(N, HIDDEN, dtype=torch.float64)
    z, a, y = torch.zeros_like(v), torch.zeros_like(v), 0.0
    loss, count = 0.0, 0.0
    for t in range(T):
        v = BETA * v + inputs[t] @ w_in.t() + b_in + z.detach() @ w_rec.t()
        threshold = THETA + adapt * a
        spikes = spike_fn(v - threshold, SLOPE)
        drive = spikes @ w_out.t() + b_out
        if feedback is not None:  # value of W_out, gradient through B
            drive = spikes.detach() @ w_out.t() + b_out + spikes @ feedback.t() - (spikes @ feedback.t()).detach()
        y = kappa * y + drive
        if t >= T - loss_steps:
            loss = loss + F.cross_entropy(y, labels) / loss_steps
        v = v - (threshold * spikes).detach()
        a = RHO * a + (spikes if adaptation_path else spikes.detach())
        z = spikes
        count = count + spikes.sum(0)
    loss = loss + 0.5 * rate_cost * (count / (N * T) - rate_target).square().sum()
    return dict(zip(["input.weight", "input.bias", "recurrent.weight", "output.weight", "output.bias"],
                    torch.autograd.grad(loss, [w_in, b_in, w_rec, w_out, b_out], allow_unused=True)))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("loss_steps", [T, 6])
def test_symmetric_eprop_equals_the_cut_graph_gradient(loss_steps: int) -> None:
    net = network()
    inputs, labels = data()
    learner = EProp(net, feedback="symmetric", loss_steps=loss_steps)
    learner.run(inputs, lambda y: F.cross_entropy(y, labels))
    reference = cut_graph_gradients(net, inputs, labels, loss_steps)
    for name, grad in reference.items():
        assert grad.abs().max() > 1e-4, name  # the network is active: a non-trivial comparison
        assert relative_error(learner.grads[name], grad) <= 1e-8, name
    # and e-prop is an approximation: the full BPTT gradient (nothing cut) differs
    full = full_bptt_recurrent_gradient(net, inputs, labels, loss_steps)
    assert relative_error(learner.grads["recurrent.weight"], full) > 1e-3


def full_bptt_recurrent_gradient(net, inputs, labels, loss_steps, kappa: float = 0.0):
    net.reset()
    loss, y = 0.0, 0.0
    for t in range(T):
        y = kappa * y + net(inputs[t])  # RecurrentLIF's own step: every path kept
        if t >= T - loss_steps:
            loss = loss + F.cross_entropy(y, labels) / loss_steps
    return torch.autograd.grad(loss, net[1].recurrent.weight)[0]


@pytest.mark.parametrize(("adaptation", "kappa", "loss_steps", "chunk"),
                         [(0.4, 0.0, T, 32), (0.4, 0.0, 6, 32), (0.0, 0.8, T, 32), (0.4, 0.8, 7, 32),
                          (0.0, 0.0, T, 5), (0.0, 0.8, T, 5), (0.0, 0.8, 7, 5)])
def test_alif_and_leaky_readout_eprop_equal_the_cut_graph_gradient(adaptation, kappa, loss_steps, chunk) -> None:
    """ALIF (Bellec et al. 2020, Eq. 25: the per-synapse threshold-adaptation eligibility) and the leaky read-out
    (eligibility traces filtered by kappa), and chunked learning signals: all equal the cut-graph gradient."""
    net = network(4, adaptation=adaptation)
    inputs, labels = data(4)
    learner = EProp(net, feedback="symmetric", loss_steps=loss_steps, readout_decay=kappa, chunk=chunk)
    learner.run(inputs, lambda y: F.cross_entropy(y, labels))
    reference = cut_graph_gradients(net, inputs, labels, loss_steps, kappa=kappa)
    for name, grad in reference.items():
        assert grad.abs().max() > 1e-4, name
        assert relative_error(learner.grads[name], grad) <= 1e-8, name
    if adaptation:  # the threshold-adaptation eligibility eps^a matters: without it the update is measurably off
        no_adaptation_path = cut_graph_gradients(net, inputs, labels, loss_steps, kappa=kappa, adaptation_path=False)
        assert relative_error(learner.grads["input.weight"], no_adaptation_path["input.weight"]) > 1e-3
    full = full_bptt_recurrent_gradient(net, inputs, labels, loss_steps, kappa)
    assert relative_error(learner.grads["recurrent.weight"], full) > 1e-3


@pytest.mark.parametrize(("adaptation", "kappa", "loss_steps"), [(0.0, 0.0, T), (0.0, 0.8, 1), (0.4, 0.8, 7)])
def test_firing_rate_regulariser_joins_the_cut_graph_gradient(adaptation, kappa, loss_steps) -> None:
    """Bellec et al. 2020 (Methods, firing-rate regularisation): c (f_j - f_target) / (N T) sum_{b,t} e_t^{ji} added
    to the hidden update equals autograd's gradient of the regulariser on the cut graph."""
    net = network(7, adaptation=adaptation)
    inputs, labels = data(7)
    cost, target = 3.0, 0.05
    learner = EProp(net, loss_steps=loss_steps, readout_decay=kappa, rate_cost=cost, rate_target=target)
    learner.run(inputs, lambda y: F.cross_entropy(y, labels))
    reference = cut_graph_gradients(net, inputs, labels, loss_steps, kappa=kappa, rate_cost=cost, rate_target=target)
    without = cut_graph_gradients(net, inputs, labels, loss_steps, kappa=kappa)
    for name, grad in reference.items():
        assert relative_error(learner.grads[name], grad) <= 1e-8, name
    assert relative_error(reference["input.weight"], without["input.weight"]) > 1e-2  # the regulariser matters
    torch.testing.assert_close(learner.grads["output.weight"], without["output.weight"], rtol=1e-12, atol=0)
    net.reset()
    with torch.no_grad():
        rates = torch.stack([net[1](net[0](x)) for x in inputs]).mean((0, 1))
    task = EProp(network(7, adaptation=adaptation), loss_steps=loss_steps, readout_decay=kappa)
    task.run(inputs, lambda y: F.cross_entropy(y, labels))
    assert learner.loss == pytest.approx(task.loss + 0.5 * cost * float((rates - target).square().sum()), rel=1e-10)
    with pytest.raises(ValueError, match="modulator"):
        EProp(net, modulator=FeedbackSign(), rate_cost=1.0)
    with pytest.raises(ValueError, match="rate_cost"):
        EProp(net, rate_cost=-1.0)


def test_random_alif_eprop_and_a_loss_that_vmap_cannot_batch() -> None:
    net = network(5, adaptation=0.3)
    inputs, labels = data(5)
    learner = EProp(net, feedback="random", seed=2, readout_decay=0.5)
    learner.run(inputs, lambda y: F.cross_entropy(y, labels))
    reference = cut_graph_gradients(net, inputs, labels, T, feedback=learner.random_feedback.double(), kappa=0.5)
    for name in ("input.weight", "recurrent.weight", "output.weight"):
        assert relative_error(learner.grads[name], reference[name]) <= 1e-8, name

    def host_read_loss(y):  # .item() cannot run under vmap: the per-step autograd fallback gives the same update
        return F.cross_entropy(y, labels) * (1.0 + 0.0 * y.sum().item())

    plain = EProp(network(6), loss_steps=9)
    fallback = EProp(network(6), loss_steps=9)
    plain.run(inputs, lambda y: F.cross_entropy(y, labels))
    fallback.run(inputs, host_read_loss)
    assert not fallback._vectorised_loss
    for name, grad in plain.grads.items():
        assert relative_error(fallback.grads[name], grad) <= 1e-12, name
    assert fallback.loss == pytest.approx(plain.loss, rel=1e-12)


def test_random_eprop_uses_its_fixed_feedback_matrix() -> None:
    net = network(1)
    inputs, labels = data(1)
    learner = EProp(net, feedback="random", seed=3)
    learner.run(inputs, lambda y: F.cross_entropy(y, labels))
    reference = cut_graph_gradients(net, inputs, labels, T, feedback=learner.random_feedback.double())
    for name in ("input.weight", "recurrent.weight", "output.weight"):
        assert relative_error(learner.grads[name], reference[name]) <= 1e-8, name
    symmetric = cut_graph_gradients(net, inputs, labels, T)
    assert relative_error(learner.grads["input.weight"], symmetric["input.weight"]) > 0.1


def test_eligibility_traces_match_an_explicit_sum_over_past_steps() -> None:
    """E_ji = mean_n sum_t psi_t^j sum_{s <= t} beta^{t-s} pre_s^i, with pre = x_s (input) or z_{s-1} (recurrent),
    summed explicitly per synapse (no recursion)."""
    net = network(2)
    inputs, labels = data(2)
    learner = EProp(net, modulator=FeedbackSign())
    learner.run(inputs, lambda y: F.cross_entropy(y, labels))
    v = torch.zeros(N, HIDDEN, dtype=torch.float64)
    spikes, psis = [torch.zeros(N, HIDDEN, dtype=torch.float64)], []
    with torch.no_grad():
        for t in range(T):
            v = BETA * v + net[0](inputs[t]) + net[1].recurrent(spikes[-1])
            psis.append(1.0 / (1.0 + SLOPE * (v - THETA).abs()) ** 2)
            spikes.append((v >= THETA).double())
            v = v - THETA * spikes[-1]
    for kind, pre in (("input", [inputs[t] for t in range(T)]), ("recurrent", spikes[:-1])):
        expected = torch.zeros_like(learner.eligibility(kind))
        for n in range(N):
            for j in range(HIDDEN):
                for i in range(expected.shape[1]):
                    expected[j, i] += sum(float(psis[t][n, j]) * sum(BETA ** (t - s) * float(pre[s][n, i])
                                                                    for s in range(t + 1)) for t in range(T)) / N
        assert relative_error(learner.eligibility(kind), expected) <= 1e-10, kind


def test_alif_eligibility_traces_match_a_float64_loop_over_synapses() -> None:
    """Bellec et al. (2020), Eq. 25, one synapse at a time with Python floats: eps_t = beta eps_{t-1} + pre_t,
    e_t = psi_t (eps_t - beta_a epsa_t), epsa_{t+1} = psi_t eps_t + (rho - psi_t beta_a) epsa_t; the window's
    eligibility is mean_n sum_t e_t (pre = x_t for the input weights, z_{t-1} for the recurrent ones)."""
    adapt = 0.4
    net = network(7, adaptation=adapt)
    inputs, labels = data(7)
    learner = EProp(net, modulator=FeedbackSign())
    learner.run(inputs, lambda y: F.cross_entropy(y, labels))
    v = torch.zeros(N, HIDDEN, dtype=torch.float64)
    a = torch.zeros_like(v)
    spikes, psis = [torch.zeros_like(v)], []
    with torch.no_grad():
        for t in range(T):
            v = BETA * v + net[0](inputs[t]) + net[1].recurrent(spikes[-1])
            threshold = THETA + adapt * a
            psis.append((1.0 / (1.0 + SLOPE * (v - threshold).abs()) ** 2).tolist())
            spikes.append((v >= threshold).double())
            v = v - threshold * spikes[-1]
            a = RHO * a + spikes[-1]
    assert 0.05 < torch.stack(spikes).mean() < 0.6  # the neurons spike, and the threshold adapts
    presynaptic = (("input", [inputs[t].tolist() for t in range(T)]),
                   ("recurrent", [s.tolist() for s in spikes[:-1]]))
    for kind, pre in presynaptic:
        expected = torch.zeros_like(learner.eligibility(kind))
        for n in range(N):
            for j in range(HIDDEN):
                for i in range(expected.shape[1]):
                    eps = epsa = total = 0.0
                    for t in range(T):
                        eps = BETA * eps + pre[t][n][i]
                        psi = psis[t][n][j]
                        total += psi * (eps - adapt * epsa)
                        epsa = psi * eps + (RHO - psi * adapt) * epsa
                    expected[j, i] += total / N
        assert relative_error(learner.eligibility(kind), expected) <= 1e-10, kind


def test_modulator_replaces_the_learning_signal_and_the_reservoir_freezes() -> None:
    net = network(3)
    inputs, labels = data(3)
    learner = EProp(net, modulator=FeedbackSign())
    learner.run(inputs, lambda y: F.cross_entropy(y, labels))
    learner.step()
    eligibility = learner.eligibility("recurrent")
    grad = net[1].recurrent.weight.grad
    moved = grad != 0
    assert moved.float().mean() > 0.5
    torch.testing.assert_close(grad.abs()[moved], (eligibility / eligibility.abs().max()).abs()[moved])
    reservoir = EProp(net, train_recurrent=False)
    reservoir.run(inputs, lambda y: F.cross_entropy(y, labels))
    reservoir.step()
    assert net[0].weight.grad is None and net[1].recurrent.weight.grad is None and net[2].weight.grad is not None


def test_eprop_rejects_other_networks_and_shapes() -> None:
    with pytest.raises(TypeError, match="e-prop needs"):
        EProp(SpikingNetwork(nn.Linear(3, 4), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="inputs"):
        EProp(network()).run(torch.zeros(5, 2, IN + 1, dtype=torch.float64), lambda y: y.sum())
    with pytest.raises(ValueError, match="feedback"):
        EProp(network(), feedback="transposed")
    with pytest.raises(ValueError, match="readout_decay"):
        EProp(network(), readout_decay=1.0)
    with pytest.raises(ValueError, match="chunk"):
        EProp(network(), chunk=0)
