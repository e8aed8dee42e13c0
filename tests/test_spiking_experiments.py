"""Smoke tests of the equivalence experiment and the mnist_snn building blocks (tiny sizes, no data needed)."""
import json

import pytest
import snntorch
import torch

from ghl_snn.experiments import equivalence, mnist_snn
from ghl_snn.comparison.runner import shuffled_batches
from ghl_snn.comparison.spiking import SpikingTrainer
from ghl_snn.spiking import IF, NeuronAdapter, RateCoded, SpikingNetwork
from ghl_snn.spiking.architectures import neuron_mlp


def test_equivalence_experiment_writes_outputs_and_error_falls(tmp_path):
    summary = equivalence.main(["--steps", "5", "80", "--seeds", "1", "--networks", "linear", "--out",
                                str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "results.md", "equivalence.png", "config.json"}
    for layer in {row["layer"] for row in summary}:
        short, long = sorted((r for r in summary if r["layer"] == layer), key=lambda r: r["T"])
        assert long["E rel. error"] < short["E rel. error"]
    stored = json.loads((tmp_path / "results.json").read_text())
    assert len(stored["rows"]) == 2 * 2  # 2 layers x 2 values of T x 1 seed


@pytest.mark.parametrize("neuron,kind", [("if", IF), ("snntorch", NeuronAdapter), ("norse", NeuronAdapter)])
def test_mnist_snn_network_and_learners(neuron, kind):
    torch.manual_seed(0)
    net = neuron_mlp(784, 32, 10, neuron, init_scale=4.0)
    assert isinstance(net, SpikingNetwork) and isinstance(net[1], kind)
    torch.manual_seed(0)
    reference = torch.nn.Linear(784, 32, bias=False)  # same default init, same seed
    torch.testing.assert_close(net[0].weight, reference.weight * 4.0 / net[1].gain)
    learners = {m: mnist_snn.make_learner(m, neuron_mlp(784, 8, 10, neuron, 1.0,
                                                                     mnist_snn.needs_spiking_readout(m)), 1.0, 0)
                for m in mnist_snn.METHODS}
    assert learners["bptt"] is None
    assert list(learners["readout_sign"].layers) == ["2"] and list(learners["grad_sign"].layers) == ["0", "2"]
    assert not learners["readout_sgd"].network[0].weight.requires_grad  # hidden frozen in the controls
    assert type(learners["dfa"].modulator).__name__ == "FeedbackAlignment"
    if neuron == "snntorch":
        assert isinstance(net[1].module, snntorch.Leaky)


def test_mnist_snn_rstdp_rows_are_stdp_eligibility_times_one_scalar_reward():
    """``rstdp``: RewardSTDP eligibility on both layers (a spiking read-out after the read-out synapses) and
    ScalarReward; ``rstdp_readout``: the same rule on the read-out only, hidden frozen.  A non-spiking read-out
    fails with the timing rule's error naming the layer."""
    from ghl_snn import RewardSTDP, ScalarReward
    for method, layers in [("rstdp", ["0", "2"]), ("rstdp_readout", ["2"])]:
        assert mnist_snn.needs_spiking_readout(method)
        net = neuron_mlp(784, 8, 10, "if", 1.0, spiking_readout=True)
        assert len(net) == 4 and isinstance(net[3], IF)
        learner = mnist_snn.make_learner(method, net, 1.0, 0)
        assert list(learner.layers) == layers
        assert isinstance(learner.modulator, ScalarReward)
        assert all(isinstance(rule, RewardSTDP) for rule in learner.rules.values())
        assert net[0].weight.requires_grad == (method == "rstdp")
    assert not mnist_snn.needs_spiking_readout("agr")
    with pytest.raises(ValueError, match="layer '2' drives no spiking neuron"):
        mnist_snn.make_learner("rstdp", neuron_mlp(784, 8, 10, "if", 1.0), 1.0, 0)
    with pytest.raises(ValueError, match="unknown method"):
        mnist_snn.needs_spiking_readout("rstdp_typo")


def test_mnist_snn_rstdp_step_is_the_reward_times_the_stdp_trace():
    """One window of ``rstdp`` through SpikingTrainer: every plastic weight moves by exactly
    ``lr * (r_mean - b) * E / max|E|`` (SGD without momentum, baseline b = 0.1 at the first window), with ``E``
    the RewardSTDP trace the learner recorded and ``r`` the reward of the trainer's own choice."""
    torch.manual_seed(0)
    net = neuron_mlp(784, 16, 10, "if", 4.0, spiking_readout=True)
    learner = mnist_snn.make_learner("rstdp", net, 1.0, 0)
    model = RateCoded(net, 6)
    lr = 0.5
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr)
    trainer = SpikingTrainer(model=model, optimizer=optimizer, rule=learner, learner=learner, epsilon=0.0)
    x, y = torch.rand(16, 784), torch.randint(0, 10, (16,))
    # r_mean is k / 16, never the baseline 0.1: the step is not 0
    before = {name: net[int(name)].weight.detach().clone() for name in ("0", "2")}
    readout = trainer._forward(trainer._prepare(x, y)[0])
    action = readout.argmax(dim=1)  # epsilon = 0: greedy
    reward = float((action == y).double().mean())
    raw = {name: learner.timing.eligibility(name).detach().double().clone() for name in ("0", "2")}
    trainer._apply_update(torch.tensor(0.0))
    for name in ("0", "2"):
        e = raw[name]
        assert e.abs().max() > 0
        expected = before[name].double() + lr * (reward - 0.1) * e / e.abs().max()
        torch.testing.assert_close(net[int(name)].weight.detach().double(), expected, rtol=1e-5, atol=1e-7)


def test_mnist_snn_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        mnist_snn.parse_args(["--steps", "0"])
    with pytest.raises(ValueError, match="unknown neuron"):
        neuron_mlp(784, 8, 10, "hodgkin-huxley", 1.0)


@pytest.mark.parametrize("method", ["feedback_sign", "reward_sign", "agr", "bptt", "rstdp", "rstdp_readout"])
def test_mnist_snn_trains_through_the_runner_and_resumes(tmp_path, method):
    """SpikingTrainer plugs the spiking window into the runner's loop: it trains (the weights change), writes the
    runner's outputs and a resumed run continues from the checkpoint (no data needed: random images)."""
    from ghl_snn.comparison.runner import fit

    def trainer_for():
        torch.manual_seed(0)
        net = neuron_mlp(784, 16, 10, "if", 4.0, mnist_snn.needs_spiking_readout(method))
        learner = mnist_snn.make_learner(method, net, 1.0, 0)
        model = RateCoded(net, 4)
        optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        return SpikingTrainer(model=model, optimizer=optimizer, rule=learner, learner=learner), net

    x, y = torch.rand(64, 784), torch.randint(0, 10, (64,))

    def train(epoch):
        return shuffled_batches(x, y, 16, 0, epoch)

    def test():
        return iter([(x[:32], y[:32])])

    trainer, net = trainer_for()
    before = net[2].weight.detach().clone()
    results = fit(trainer, train, test, 1, tmp_path, {"method": method}, steps_per_epoch=4)
    assert not torch.equal(before, net[2].weight)
    assert {"checkpoint.pt", "metrics.csv", "results.json"} <= {p.name for p in tmp_path.iterdir()}
    assert results["epochs"] == 1
    resumed, _ = trainer_for()
    results = fit(resumed, train, test, 2, tmp_path, {"method": method}, resume=True, steps_per_epoch=4)
    assert results["epochs"] == 2 and len(resumed.history) == 2


def test_mnist_snn_targets_table_measures_each_gap():
    tests = {m: [(acc - 1) / 100, (acc + 1) / 100] for m, acc in  # final test accuracies of two seeds
             [("grad_sign", 90.0), ("readout_sign", 87.0), ("feedback_sign", 88.0), ("dfa", 90.0),
              ("rate_sgd", 90.5), ("bptt", 93.0), ("reward_sign", 80.0), ("reward_readout", 79.0),
              ("agr", 85.0), ("agr_readout", 81.5)]}
    rows = {r["target"]: r for r in mnist_snn.targets(tests)}
    gap = rows["grad_sign - readout_sign"]
    assert gap["measured (points)"] == 3.0 and gap["met"] == "yes"
    assert rows["feedback_sign - dfa"]["met"] == "no" and rows["grad_sign - rate_sgd"]["met"] == "yes"
    assert rows["grad_sign - bptt"]["measured (points)"] == -3.0 and rows["grad_sign - bptt"]["met"] == "no"
    assert rows["best reward rule (agr) test acc"]["met"] == "no"
    assert rows["agr - agr_readout"]["measured (points)"] == 3.5 and rows["agr - agr_readout"]["met"] == "yes"
    assert rows["agr test std"]["measured (points)"] == round(2 ** 0.5, 2)  # sd of 84 and 86


def test_spiking_trainer_rejects_an_unknown_policy():
    net = neuron_mlp(784, 8, 10, "if", 1.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="policy must be 'epsilon' or 'softmax'"):
        SpikingTrainer(model=RateCoded(net, 2), optimizer=optimizer, policy="greedy")
