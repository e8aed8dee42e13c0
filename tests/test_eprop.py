"""e-prop against autograd on the graph it approximates (spikes' influence on later membranes cut), in float64, and
its eligibility traces against an explicit float64 sum over past steps."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ghl_snn import FeedbackSign, RecurrentLIF, SpikingNetwork
from ghl_snn.spiking.eprop import EProp
from ghl_snn.spiking.neurons import spike_fn

T, N, IN, HIDDEN, CLASSES = 24, 4, 5, 7, 3
BETA, THETA, SLOPE = 0.85, 0.5, 4.0


def network(seed: int = 0) -> SpikingNetwork:
    torch.manual_seed(seed)
    net = SpikingNetwork(nn.Linear(IN, HIDDEN), RecurrentLIF(HIDDEN, beta=BETA, threshold=THETA, slope=SLOPE),
                         nn.Linear(HIDDEN, CLASSES)).double()
    with torch.no_grad():
        net[0].weight.normal_(0.3, 0.4)
        net[1].recurrent.weight.normal_(0.0, 0.3)
    return net


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = (torch.rand(T, N, IN, generator=generator, dtype=torch.float64) < 0.4).double()
    return inputs, torch.randint(CLASSES, (N,), generator=generator)


def cut_graph_gradients(net: SpikingNetwork, inputs, labels, loss_steps: int, feedback: torch.Tensor | None = None):
    """Autograd through time with z_{t-1} detached where it enters v_t (recurrent input and reset); ``feedback``
    replaces W_out in the read-out's backward pass (random e-prop's B)."""
    w_in, b_in, w_rec, w_out, b_out = (net[0].weight, net[0].bias, net[1].recurrent.weight, net[2].weight,
                                       net[2].bias)
    v = torch.zeros(N, HIDDEN, dtype=torch.float64)
    z = torch.zeros_like(v)
    loss = 0.0
    for t in range(T):
        v = BETA * v + inputs[t] @ w_in.t() + b_in + z.detach() @ w_rec.t()
        spikes = spike_fn(v - THETA, SLOPE)
        y = spikes @ w_out.t() + b_out
        if feedback is not None:  # value of W_out, gradient through B
            y = spikes.detach() @ w_out.t() + b_out + spikes @ feedback.t() - (spikes @ feedback.t()).detach()
        if t >= T - loss_steps:
            loss = loss + F.cross_entropy(y, labels) / loss_steps
        v = v - THETA * spikes.detach()
        z = spikes
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


def full_bptt_recurrent_gradient(net, inputs, labels, loss_steps):
    v = torch.zeros(N, HIDDEN, dtype=torch.float64)
    z = torch.zeros_like(v)
    loss = 0.0
    for t in range(T):
        v = BETA * v + net[0](inputs[t]) + net[1].recurrent(z)
        z = spike_fn(v - THETA, SLOPE)
        if t >= T - loss_steps:
            loss = loss + F.cross_entropy(net[2](z), labels) / loss_steps
        v = v - THETA * z
    return torch.autograd.grad(loss, net[1].recurrent.weight)[0]


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
