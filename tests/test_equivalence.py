"""Rate vs spiking equivalence (issue 4, item 6): each test is a real assertion against an independent reference."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GradSign
from ghl_snn.equivalence import (compare, cosine_similarity, if_spike_count, rate_eligibilities, rate_eligibility,
                                 rate_updates, relative_error, sign_agreement, spiking_eligibilities,
                                 spiking_updates, to_rate_network, update_equivalence)
from ghl_snn.spiking import IF, LIF, BernoulliEncoder, ConstantCurrent, SpikingNetwork


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def mlp(seed=0):
    torch.manual_seed(seed)
    net = SpikingNetwork(nn.Linear(20, 12, bias=False), IF(), nn.Linear(12, 4, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(2.0)  # hidden rates away from 0 so the hidden layer is exercised
    return net


def reference_swta_oja(x, y, w, tau):
    """Float64 per-synapse loop of GHL Eq. 4, batch mean: E_ik = mean_n u_nk (x_ni - y_nk w_ki)."""
    x, y, w = x.double(), y.double(), w.double()
    u = torch.softmax(y / tau, dim=1)
    out = torch.zeros_like(w)
    for k in range(w.shape[0]):
        for i in range(w.shape[1]):
            out[k, i] = sum(u[n, k] * (x[n, i] - y[n, k] * w[k, i]) for n in range(x.shape[0])) / x.shape[0]
    return out


def test_rate_eligibility_reference_is_eq4_by_loop():
    net = mlp()
    x = torch.rand(3, 20)
    rates = rate_eligibilities(net, x, tau=0.5)
    hidden = torch.clamp(x @ net[0].weight.detach().t(), 0, 1)
    torch.testing.assert_close(rates["0"].double(), reference_swta_oja(x, x @ net[0].weight.detach().t(),
                                                                      net[0].weight.detach(), 0.5))
    torch.testing.assert_close(rates["2"].double(), reference_swta_oja(hidden, hidden @ net[2].weight.detach().t(),
                                                                      net[2].weight.detach(), 0.5))


def test_spiking_eligibility_converges_to_rate_eligibility():
    """E/T -> rate E for Bernoulli input: mean relative error over 2 seeds decreases over T in {10, 100, 1000}
    (roughly like 1/sqrt(T)), is below 0.05 at T = 1000 and the cosine there exceeds 0.99 for both layers."""
    net = mlp()
    x = torch.rand(6, 20)
    reference = rate_eligibilities(net, x, tau=0.5)
    errors = {name: [] for name in reference}
    for steps in (10, 100, 1000):
        per_seed = {name: [] for name in reference}
        for seed in range(2):
            spiking = spiking_eligibilities(net, x, steps, tau=0.5, generator=torch.Generator().manual_seed(seed))
            for name in reference:
                per_seed[name].append(compare(spiking[name], reference[name]))
        for name in reference:
            errors[name].append(sum(c["relative_error"] for c in per_seed[name]) / 2)
            if steps == 1000:
                assert min(c["cosine"] for c in per_seed[name]) > 0.99, (name, per_seed[name])
    for name, errs in errors.items():
        assert errs[0] > errs[1] > errs[2], (name, errs)
        assert errs[2] < 0.05, (name, errs)


def test_spiking_conv_eligibility_converges():
    torch.manual_seed(1)
    net = SpikingNetwork(nn.Conv2d(2, 4, 3, padding=1, bias=False), IF(), nn.Flatten(),
                         nn.Linear(4 * 5 * 5, 3, bias=False))
    x = torch.rand(2, 2, 5, 5)
    reference = rate_eligibilities(net, x, tau=0.5)
    results = [spiking_eligibilities(net, x, steps, tau=0.5, generator=torch.Generator().manual_seed(0))["0"]
               for steps in (10, 200)]
    coarse, fine = (compare(r, reference["0"]) for r in results)
    assert fine["relative_error"] < coarse["relative_error"]
    assert fine["relative_error"] < 0.05 and fine["cosine"] > 0.99


def test_constant_current_trace_equals_rate_eligibility_for_one_layer():
    """Deterministic input: E_t is the same every step, so e_T / T equals the rate E up to rounding."""
    net = SpikingNetwork(nn.Linear(5, 3, bias=False))
    x = torch.rand(4, 5)
    spiking = spiking_eligibilities(net, x, 7, tau=2.0, encoder=ConstantCurrent())["0"]
    torch.testing.assert_close(spiking, rate_eligibilities(net, x, tau=2.0)["0"])


def test_grad_sign_spiking_update_equals_rate_ghl_update_in_the_limit():
    """M = GradSign of the rate surrogate: the online spiking update approaches the GHL plug-in update of the rate
    network (cosine > 0.99, sign agreement > 0.9 at T = 1000) and is closer at T = 1000 than at T = 10."""
    net = mlp()
    x, target = torch.rand(6, 20), torch.randint(0, 4, (6,))

    def loss_fn(out):
        return F.cross_entropy(out, target)

    reference = rate_updates(net, x, loss_fn, tau=0.5, modulator=GradSign())
    coarse = spiking_updates(net, x, 10, loss_fn, tau=0.5, generator=torch.Generator().manual_seed(0))
    fine = spiking_updates(net, x, 1000, loss_fn, tau=0.5, generator=torch.Generator().manual_seed(0))
    for name in reference:
        near, far = compare(fine[name], reference[name]), compare(coarse[name], reference[name])
        assert near["cosine"] > 0.99 and near["sign_agreement"] > 0.9, (name, near)
        assert near["relative_error"] < far["relative_error"], (name, near, far)


def test_grad_sign_update_is_exact_with_constant_current():
    """With deterministic input and IF neurons the observed means are the rate network's activations up to the
    1/T quantisation; for currents on the grid k/T they are exact and the updates coincide."""
    torch.manual_seed(3)
    net = SpikingNetwork(nn.Linear(4, 3, bias=False), IF(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.5, 0.25, 0.0, 0.25], [0.25, -0.5, 0.5, 0.0], [0.0, 0.25, 0.25, 0.5]]))
    x = torch.tensor([[1.0, 0.5, 0.5, 0.0], [0.0, 1.0, 0.5, 1.0]])
    target = torch.tensor([0, 1])

    def loss_fn(out):
        return F.cross_entropy(out, target)

    spiking = spiking_updates(net, x, 8, loss_fn, tau=1.0, encoder=ConstantCurrent())
    reference = rate_updates(net, x, loss_fn, tau=1.0)
    rate_hidden = to_rate_network(net)[:2](x)
    assert torch.all((rate_hidden * 8).round() == rate_hidden * 8)  # rates on the 1/T grid
    # the Oja trace of the hidden->output layer integrates the *spike* input, which differs step by step from the
    # rate; only the global signal is exact here, so compare signs where the rate update is non-zero
    for name in reference:
        mask = reference[name] != 0
        assert torch.equal(spiking[name].sign()[mask], reference[name].sign()[mask])


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_update_matches_the_empirical_rate_network_at_t_100(kind):
    """Against the rate network at the *empirical* input rates the spiking GradSign update has cosine >= 0.99 at
    T = 100 (Linear and Conv2d); against the true rates the Bernoulli noise of the input makes it lower."""
    from ghl_snn.experiments.equivalence import NETWORKS  # the recorded experiment's networks

    net, x, target = NETWORKS[kind](0)
    report = update_equivalence(net, x, 100, lambda out: F.cross_entropy(out, target), tau=1.0,
                                generator=torch.Generator().manual_seed(0))
    for name, row in report.items():
        assert row["empirical"]["cosine"] >= 0.99, (name, row)
        assert row["empirical"]["cosine"] >= row["true"]["cosine"] - 1e-3, (name, row)
    assert min(row["true"]["cosine"] for row in report.values()) < 0.99


def test_if_rate_is_clipped_relu_within_one_over_t():
    currents = torch.linspace(-0.5, 1.5, 81)
    for steps in (7, 50, 1000):
        neuron = IF()
        neuron.reset()
        count = torch.zeros_like(currents)
        for _ in range(steps):
            count += neuron(currents)
        rate = count / steps
        assert torch.all((rate - torch.clamp(currents, 0, 1)).abs() <= 1.0 / steps + 1e-6)
        # the closed form min(T, floor(T I)) away from exact grid points (float rounding decides those)
        off_grid = ((currents * steps) - (currents * steps).round()).abs() > 1e-3
        assert torch.equal(count[off_grid], if_spike_count(currents, steps)[off_grid])
        # the rate network of an IF net applies exactly this clipped ReLU
        rate_net = to_rate_network(SpikingNetwork(nn.Identity(), IF(), nn.Linear(81, 1)))
        torch.testing.assert_close(rate_net[:2](currents[None]), torch.clamp(currents, 0, 1)[None])


def test_lif_rate_is_only_an_approximation():
    """Documented: the leak lowers the rate below clamp(I) at small currents (no spikes at all for
    I < (1 - beta) theta)."""
    neuron = LIF(beta=0.8)
    current = torch.tensor([0.1, 0.5])
    count = sum(neuron(current) for _ in range(200))
    assert count[0] == 0 and count[1] / 200 < 0.5 - 0.05


def test_metrics_and_mapping_against_closed_forms():
    a, b = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([2.0, -2.0, 1.0])
    assert cosine_similarity(a, b) == pytest.approx(6 / (5 ** 0.5 * 3))
    assert relative_error(a, b) == pytest.approx(2 ** 0.5 / 3)
    assert sign_agreement(a, b) == pytest.approx(2 / 3)
    trace = torch.full((2, 2), 10.0)
    torch.testing.assert_close(rate_eligibility(trace, 10), torch.ones(2, 2))
    torch.testing.assert_close(rate_eligibility(trace, 3, decay=0.5), trace / 1.75)
    with pytest.raises(ValueError, match="shapes"):
        compare(a, b[:2])
    with pytest.raises(ValueError, match="T"):
        rate_eligibility(trace, 0)
    with pytest.raises(TypeError, match="SpikingNetwork"):
        to_rate_network(nn.Linear(2, 2))


def test_bernoulli_rate_net_matches_spiking_readout_in_the_limit():
    net = mlp(2)
    x = torch.rand(4, 20)
    spiking = net.run(x, 1000, BernoulliEncoder(generator=torch.Generator().manual_seed(0)))
    rate = to_rate_network(net)(x).detach()
    assert relative_error(spiking, rate) < 0.05


@settings(max_examples=40, deadline=None)
@given(current=st.floats(-1.0, 2.0, allow_nan=False), steps=st.integers(1, 150),
       threshold=st.floats(0.25, 2.0))
def test_if_count_property(current, steps, threshold):
    """For any constant current, T and threshold: the IF spike count is within one spike of the closed form
    clamp(floor(T I / theta), 0, T) (float rounding at grid points) and the rate within 1/T of clamp(I/theta)."""
    neuron = IF(threshold=threshold)
    drive = torch.tensor([current], dtype=torch.float64)
    count = sum(float(neuron(drive)) for _ in range(steps))
    assert abs(count - float(if_spike_count(drive, steps, threshold))) <= 1
    assert abs(count / steps - min(max(current / threshold, 0.0), 1.0)) <= 1.0 / steps + 1e-9
