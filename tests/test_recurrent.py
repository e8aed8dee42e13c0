"""Recurrent LIF layers in the spiking form: the built-in RecurrentLIF and snntorch RLeaky, in a SpikingNetwork and
in a network written as its author writes it; their recurrent synapses are plastic like the feed-forward ones."""
from __future__ import annotations

import pytest
import snntorch
import torch
from torch import nn
from torch.nn import functional as F

from ghl_snn import BernoulliEncoder, FeedbackSign, GradSign, RecurrentLIF, SpikingNetwork, ThreeFactor


def test_recurrent_lif_follows_its_equations_in_float64() -> None:
    torch.manual_seed(0)
    neuron = RecurrentLIF(6, beta=0.8, threshold=0.7, adaptation=0.3, rho=0.9).double()
    currents = torch.rand(15, 3, 6, dtype=torch.float64)
    w = neuron.recurrent.weight.detach()
    assert torch.all(w.diagonal() == 0)
    v = torch.zeros(3, 6, dtype=torch.float64)
    z, a = torch.zeros_like(v), torch.zeros_like(v)
    for t in range(15):
        out = neuron(currents[t])
        v = 0.8 * v + currents[t] + z @ w.t()
        theta = 0.7 + 0.3 * a
        z = (v >= theta).double()
        v = v - theta * z
        a = 0.9 * a + z
        assert torch.equal(out, z)
    assert z.sum() > 0


@pytest.mark.parametrize("kind", ["builtin", "snntorch"])
def test_recurrent_synapse_is_recorded_with_the_previous_spikes(kind: str) -> None:
    torch.manual_seed(1)
    neuron = RecurrentLIF(6, threshold=0.5) if kind == "builtin" else snntorch.RLeaky(beta=0.9, linear_features=6,
                                                                                         threshold=0.5)
    net = SpikingNetwork(nn.Linear(4, 6), neuron, nn.Linear(6, 3))
    recurrent_name = "1.recurrent" if kind == "builtin" else "1.module.recurrent"
    assert list(net.synapses()) == ["0", recurrent_name, "2"]
    learner = ThreeFactor(net, modulator=FeedbackSign())
    assert list(learner.layers) == ["0", recurrent_name, "2"]
    spikes = []
    handle = net[1].register_forward_hook(lambda module, args, out: spikes.append(out.detach().clone()))
    labels = torch.tensor([0, 1, 2, 0, 1])
    learner.run(torch.rand(5, 4), 20, encoder=BernoulliEncoder())
    handle.remove()
    previous = torch.stack([torch.zeros_like(spikes[0])] + spikes[:-1]).mean(0)  # z_{t-1}, z_{-1} = 0
    assert spikes[-1].sum() > 0
    torch.testing.assert_close(learner.traces[recurrent_name].x_bar, previous)
    learner.step(loss_fn=lambda out: F.cross_entropy(out, labels))
    for name, module in learner.layers.items():
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, name


def test_rate_surrogate_includes_the_recurrent_current() -> None:
    torch.manual_seed(2)
    net = SpikingNetwork(nn.Linear(4, 6, bias=False), RecurrentLIF(6, threshold=0.5), nn.Linear(6, 3, bias=False))
    learner = ThreeFactor(net, modulator=GradSign())
    learner.run(torch.rand(5, 4), 30, encoder=BernoulliEncoder())
    _, currents = net.rate_surrogate()
    rates = net.mean_outputs["1"]
    torch.testing.assert_close(currents["1.recurrent"], rates @ net[1].recurrent.weight.t())
    torch.testing.assert_close(net.neuron_current("0"), net.mean_outputs["0"] + currents["1.recurrent"].detach())


def test_snntorch_rleaky_network_as_its_author_writes_it() -> None:
    """An nn.Module with its own time loop (snntorch's tutorial style): the hooks record the feed-forward and the
    recurrent synapses across the user's loop, and FeedbackSign updates all of them."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(4, 8)
            self.lif1 = snntorch.RLeaky(beta=0.9, linear_features=8, threshold=0.5)
            self.fc2 = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
            spk, mem = self.lif1.init_rleaky()
            total = 0.0
            for _ in range(steps):
                spk, mem = self.lif1(self.fc1(x), spk, mem)
                total = total + self.fc2(spk)
            return total / steps

    torch.manual_seed(3)
    model = Net()
    learner = ThreeFactor(model, modulator=FeedbackSign())
    assert list(learner.layers) == ["fc1", "lif1.recurrent", "fc2"]
    labels = torch.tensor([0, 1, 2, 1])
    readout = model(torch.rand(4, 4), 20)
    assert learner.traces["lif1.recurrent"].steps == 20
    learner.step(readout=readout, loss_fn=lambda out: F.cross_entropy(out, labels))
    for name in ("fc1", "lif1.recurrent", "fc2"):
        assert learner.layers[name].weight.grad.abs().sum() > 0, name


def test_recurrent_lif_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size"):
        RecurrentLIF(0)
    with pytest.raises(ValueError, match="beta"):
        RecurrentLIF(4, beta=1.5)
    with pytest.raises(ValueError, match="shape"):
        RecurrentLIF(4)(torch.zeros(2, 5))


def test_norse_recurrent_cell_through_the_adapter_matches_norse_and_is_plastic() -> None:
    """The adapter's two nn.Linear views share the cell's parameters and reproduce norse's own step exactly; in a
    SpikingNetwork both are plastic synapses."""
    import norse.torch as norse

    from ghl_snn import as_neuron

    torch.manual_seed(4)
    cell = norse.LIFRecurrentCell(5, 7)
    adapter = as_neuron(cell)
    assert adapter.input.weight is cell.input_weights and adapter.recurrent.weight is cell.recurrent_weights
    inputs = (torch.rand(30, 3, 5) < 0.5).float()
    state, own, wrapped = None, [], []
    for t in range(30):
        z, state = cell(inputs[t], state)
        own.append(z)
        wrapped.append(adapter(inputs[t]))
    assert torch.stack(own).sum() > 0
    assert torch.equal(torch.stack(own), torch.stack(wrapped))
    net = SpikingNetwork(norse.LIFRecurrentCell(5, 7), nn.Linear(7, 3))
    assert list(net.synapses()) == ["0.input", "0.recurrent", "1"]
    learner = ThreeFactor(net, modulator=FeedbackSign())
    learner.run(torch.rand(4, 5), 30, encoder=BernoulliEncoder())
    learner.step(loss_fn=lambda out: F.cross_entropy(out, torch.tensor([0, 1, 2, 0])))
    for name, module in learner.layers.items():
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0, name
    _, currents = net.rate_surrogate()
    torch.testing.assert_close(currents["0.input"], net.mean_input @ net[0].input.weight.t())
