"""Smoke tests of the equivalence experiment and the mnist_snn building blocks (tiny sizes, no data needed)."""
import json

import pytest
import snntorch
import torch

from ghl_snn.experiments import equivalence, mnist_snn
from ghl_snn.spiking import IF, NeuronAdapter, SpikingNetwork


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
    net = mnist_snn.build_network(32, neuron, init_scale=4.0)
    assert isinstance(net, SpikingNetwork) and isinstance(net[1], kind)
    torch.manual_seed(0)
    reference = torch.nn.Linear(784, 32, bias=False)  # same default init, same seed
    torch.testing.assert_close(net[0].weight, reference.weight * 4.0 / net[1].gain)
    per_sample = {m: mnist_snn.make_learner(m, mnist_snn.build_network(8, neuron, 1.0), 1.0, 0)
                  for m in mnist_snn.METHODS}
    assert per_sample["bptt"] is None
    assert per_sample["feedback_sign"].per_sample and not per_sample["grad_sign"].per_sample
    assert per_sample["ghl_bptt"].global_signal == "bptt"
    if neuron == "snntorch":
        assert isinstance(net[1].module, snntorch.Leaky)


def test_mnist_snn_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        mnist_snn.parse_args(["--steps", "0"])
    with pytest.raises(ValueError, match="unknown neuron"):
        mnist_snn.build_network(8, "hodgkin-huxley", 1.0)
