"""Spiking neurons, adapters (snntorch and norse), encoders, traces and the online ThreeFactor learner."""
import math

import pytest
import snntorch
import torch
import torch.nn.functional as F
from norse.torch import LIFBoxCell, LIFCell
from torch import nn

from ghl_snn import PlasticityWarning, swta_oja
from ghl_snn.modulators import GradSign, Ones
from ghl_snn.modulators.feedback_sign import FeedbackSign
from ghl_snn.modulators.neuron_sign import NeuronSign
from ghl_snn.spiking import (IF, LIF, BernoulliEncoder, ConstantCurrent, FrameSequence, NeuronAdapter, NorseNeuron,
                             SnnTorchNeuron, SpikingNetwork, ThreeFactor, as_neuron, rate_encode)
from ghl_snn.spiking.adapters import neuron_model, neuron_models


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


# ---------------------------------------------------------------- neurons
def test_builtin_lif_matches_float64_loop():
    torch.manual_seed(0)
    currents = torch.rand(30, 5) * 1.5 - 0.2
    neuron = LIF(beta=0.8, threshold=0.7)
    spikes = torch.stack([neuron(c) for c in currents])
    v = [0.0] * 5
    for t in range(30):
        for j in range(5):
            v[j] = 0.8 * v[j] + float(currents[t, j])
            s = 1.0 if v[j] >= 0.7 else 0.0
            assert spikes[t, j].item() == s, (t, j)
            v[j] -= 0.7 * s


def test_reset_restarts_dynamics():
    neuron = IF()
    x = torch.full((3,), 0.4)
    first = torch.stack([neuron(x) for _ in range(10)])
    neuron.reset()
    again = torch.stack([neuron(x) for _ in range(10)])
    assert torch.equal(first, again)


def test_surrogate_gradient_flows_for_bptt():
    neuron = LIF(beta=0.9)
    current = torch.full((4,), 0.6, requires_grad=True)
    total = sum(neuron(current) for _ in range(5))
    total.sum().backward()
    assert current.grad is not None and torch.all(current.grad > 0)


def library_neurons():
    return {
        "snntorch.Leaky": lambda: snntorch.Leaky(beta=0.9),
        "snntorch.Synaptic": lambda: snntorch.Synaptic(alpha=0.5, beta=0.9),
        "norse.LIFCell": lambda: LIFCell(),
        "norse.LIFBoxCell": lambda: LIFBoxCell(),
    }


@pytest.mark.parametrize("kind", list(library_neurons()))
def test_adapter_reproduces_the_library_recursion(kind):
    """The adapter leaves the neuron unchanged: same spikes as driving the library module by hand."""
    make = library_neurons()[kind]
    torch.manual_seed(1)
    scale = 1.0 if kind.startswith("snntorch") else 30.0
    currents = torch.rand(25, 3, 4) * scale
    adapter = as_neuron(make())
    assert isinstance(adapter, NeuronAdapter) and adapter.kind == kind
    ours = torch.stack([adapter(c) for c in currents])
    module = make()
    manual, state = [], None
    for c in currents:
        if kind == "snntorch.Leaky":
            state = torch.zeros_like(c) if state is None else state
            spk, state = module(c, state)
        elif kind == "snntorch.Synaptic":
            syn, mem = (torch.zeros_like(c), torch.zeros_like(c)) if state is None else state
            spk, syn, mem = module(c, syn, mem)
            state = (syn, mem)
        else:
            spk, state = module(c, state)
        manual.append(spk)
    assert torch.equal(ours, torch.stack(manual))
    assert ours.sum() > 0 and set(ours.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", list(library_neurons()))
def test_adapter_rate_surrogate_orders_like_the_neuron(kind):
    """More current -> more spikes, and the rate function orders the same way."""
    adapter = as_neuron(library_neurons()[kind]())
    low, high = 0.3 / adapter.gain, 0.8 / adapter.gain
    currents = torch.tensor([low, high])
    counts = sum(adapter(currents) for _ in range(200))
    assert 0 < counts[0] < counts[1] <= 200
    rates = adapter.rate(currents)
    assert 0 < rates[0] < rates[1] <= 1


FI_NEURONS = {
    "IF": (lambda: IF(), 0.0),
    "LIF(0.9)": (lambda: LIF(beta=0.9), 0.05),
    "LIF(0.95, reset=zero)": (lambda: LIF(beta=0.95, reset="zero"), 0.0),
    "snntorch.Leaky(0.9)": (lambda: snntorch.Leaky(beta=0.9), 0.05),
    "snntorch.Synaptic": (lambda: snntorch.Synaptic(alpha=0.5, beta=0.95), 0.025),
    "norse.LIFBoxCell": (lambda: LIFBoxCell(), 0.0),
    "norse.LIFCell": (lambda: LIFCell(), 0.002),  # the synaptic current builds up over the first steps
}


@pytest.mark.parametrize("kind", list(FI_NEURONS))
def test_fi_curve_matches_simulated_rates(kind):
    """The closed-form f-I curve against the simulated rate for constant currents (T = 1000): exact within 1/T for
    IF and reset-to-value neurons, within (1 - beta) / 2 for leaky reset-by-subtraction ones (the discrete overshoot);
    silent below the rheobase.  The old clipped-ReLU model of leaky neurons is off by more."""
    make, tolerance = FI_NEURONS[kind]
    neuron = as_neuron(make())
    steps = 1000
    currents = (torch.linspace(0.013, 1.9, 60) / neuron.gain).double().float()
    neuron.reset()
    rate = sum(neuron(currents) for _ in range(steps)) / steps
    predicted = neuron.rate(currents)
    # grid points where the next spike lands exactly on the threshold are decided by float rounding: skip them
    smooth = neuron.fi_curve.smooth(currents)
    isi = 1.0 / smooth.clamp(min=1e-9)
    off_grid = (isi - isi.round()).abs() > 1e-3
    error = (rate - predicted).abs()[off_grid]
    assert error.max() <= tolerance + 2.0 / steps, (kind, error.max())
    if tolerance >= 0.02:  # leaky neurons
        old = torch.clamp(currents * neuron.gain / neuron.threshold, 0, 1)
        assert (rate - old).abs().max() > 1.5 * error.max()
    # the slope is the derivative of the smooth curve (finite differences)
    h = 1e-3 / neuron.gain
    numeric = (neuron.fi_curve.smooth(currents.double() + h) - neuron.fi_curve.smooth(currents.double() - h)) / (2 * h)
    inside = (smooth > 0.02) & (smooth < 0.98)
    torch.testing.assert_close(neuron.rate_slope(currents)[inside].double(), numeric[inside], rtol=2e-2, atol=1e-3)


def test_adapter_rejects_unknown_and_hidden_state_modules():
    with pytest.raises(TypeError, match="no neuron adapter"):
        NeuronAdapter(nn.ReLU())
    with pytest.raises(ValueError, match="init_hidden"):
        NeuronAdapter(snntorch.Leaky(beta=0.9, init_hidden=True))


def test_neuron_models_by_name_are_the_builtin_neurons_and_each_library_adapter():
    """The neuron models that an experiment's ``--neuron`` names: every adapted library under its name, found through
    the adapter classes (no list to keep in step), each a fresh layer of the right type."""
    models = neuron_models()
    assert set(models) == {"if", "lif", *(adapter.library for adapter in NeuronAdapter.adapters)}
    assert type(neuron_model("if")) is IF and neuron_model("lif").beta == 0.95
    leaky = neuron_model("snntorch")
    assert isinstance(leaky, SnnTorchNeuron) and isinstance(leaky.module, snntorch.Leaky)
    assert float(leaky.module.beta) == pytest.approx(0.95)
    box = neuron_model("norse")
    assert isinstance(box, NorseNeuron) and isinstance(box.module, LIFBoxCell)
    assert neuron_model("if") is not neuron_model("if")
    with pytest.raises(ValueError, match="unknown neuron model 'izhikevich'; choose from if, lif, snntorch, norse"):
        neuron_model("izhikevich")


@pytest.mark.parametrize("bad", [dict(beta=0.0), dict(beta=1.5), dict(threshold=0.0), dict(threshold=-1.0)])
def test_bad_neuron_parameters(bad):
    with pytest.raises(ValueError):
        LIF(**bad)


# ---------------------------------------------------------------- encoders
def test_bernoulli_encoder_mean_and_reproducibility():
    x = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    train = rate_encode(x, 4000, generator=torch.Generator().manual_seed(0))
    assert train.shape == (4000, 5)
    mean = train.mean(0)
    bound = 4 * torch.sqrt(x * (1 - x) / 4000) + 1e-9  # 4 standard errors
    assert torch.all((mean - x).abs() <= bound)
    assert mean[0] == 0 and mean[-1] == 1
    again = rate_encode(x, 4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(train, again)
    half = BernoulliEncoder(gain=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.stack([half(torch.ones(200)) for _ in range(20)]).mean().item() == pytest.approx(0.5, abs=0.05)


def test_encoder_errors_and_constant_current():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BernoulliEncoder()(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="gain"):
        ConstantCurrent(gain=0)
    with pytest.raises(ValueError, match="T"):
        rate_encode(torch.rand(3), 0)
    x = torch.randn(3)
    torch.testing.assert_close(ConstantCurrent(2.0)(x), 2 * x)


# ---------------------------------------------------------------- traces
def loop_eq4(x_bar, weight, tau):
    """GHL Eq. 4 by float64 loops on traces: y_bar = W x_bar, u = softmax(y_bar / tau),
    E_ki = mean_n u_nk (x_bar_ni - y_bar_nk w_ki)."""
    y_bar = x_bar @ weight.t()
    u = torch.softmax(y_bar / tau, dim=1)
    out = torch.zeros_like(weight)
    for n in range(x_bar.shape[0]):
        for k in range(weight.shape[0]):
            for i in range(weight.shape[1]):
                out[k, i] += u[n, k] * (x_bar[n, i] - y_bar[n, k] * weight[k, i])
    return out / x_bar.shape[0]


def reference_trace(inputs, weight, tau, alpha, decay):
    """Float64 loops: x_bar low-pass (or running mean for alpha=None), y_bar = W x_bar, per-synapse Eq. 4,
    e_t = decay e_{t-1} + E_t."""
    weight = weight.double()
    x_bar = torch.zeros_like(inputs[0], dtype=torch.float64)
    trace = torch.zeros_like(weight)
    for t, s in enumerate(inputs.double(), start=1):
        x_bar = x_bar + (s - x_bar) / t if alpha is None else alpha * x_bar + (1 - alpha) * s
        trace = decay * trace + loop_eq4(x_bar, weight, tau)
    return trace


def reference_window_eligibility(inputs, weight, tau, alpha):
    """Float64 loops: the traces x_bar (running mean or low-pass), y_bar = W x_bar, then Eq. 4 once at the end."""
    weight = weight.double()
    x_bar = torch.zeros_like(inputs[0], dtype=torch.float64)
    for t, s in enumerate(inputs.double(), start=1):
        x_bar = x_bar + (s - x_bar) / t if alpha is None else alpha * x_bar + (1 - alpha) * s
    return loop_eq4(x_bar, weight, tau)


def drive(learner, net, inputs):
    """Present the given spike trains ``inputs`` (T, N, ...) to ``learner`` for one window."""
    frames = inputs.transpose(0, 1)
    learner.run(frames[:, 0], len(inputs), FrameSequence(frames))


@pytest.mark.parametrize("pre_trace,decay", [("mean", 1.0), (0.0, 0.7), (0.6, 0.9)])
def test_step_eligibility_trace_matches_float64_loop(pre_trace, decay):
    """eligibility='step': E_T = sum_t lambda^(T-t) e_t with e_t Eq. 4 on the traces of step t (closed form)."""
    torch.manual_seed(2)
    net = SpikingNetwork(nn.Linear(5, 4))  # bias is excluded from y = W x
    inputs = rate_encode(torch.rand(3, 5), 6, generator=torch.Generator().manual_seed(3))
    learner = ThreeFactor(net, modulator=Ones(), tau=0.7, pre_trace=pre_trace, trace_decay=decay, normalize=None,
                          eligibility="step")
    drive(learner, net, inputs)
    alpha = None if pre_trace == "mean" else pre_trace
    weight = net[0].weight.detach()
    expected = sum(decay ** (6 - t) * reference_window_eligibility(inputs[:t], weight, 0.7, alpha)
                   for t in range(1, 7))
    torch.testing.assert_close(learner.traces["0"].eligibility.double(), expected, rtol=1e-5, atol=1e-6)
    assert learner.traces["0"].weight_sum == pytest.approx(sum(decay ** k for k in range(6)))


@pytest.mark.parametrize("pre_trace", ["mean", 0.5])
def test_window_eligibility_from_end_of_window_traces_matches_float64_loop(pre_trace):
    torch.manual_seed(2)
    net = SpikingNetwork(nn.Linear(5, 4))
    inputs = rate_encode(torch.rand(3, 5), 9, generator=torch.Generator().manual_seed(3))
    learner = ThreeFactor(net, modulator=Ones(), tau=0.7, pre_trace=pre_trace, normalize=None)
    drive(learner, net, inputs)
    assert learner.traces["0"].eligibility is None  # no weight-sized state during the window
    expected = reference_window_eligibility(inputs, net[0].weight.detach(), 0.7, None if pre_trace == "mean"
                                            else pre_trace)
    torch.testing.assert_close(learner.eligibility("0").double(), expected, rtol=1e-5, atol=1e-6)


def test_delayed_modulation_decays_the_eligibility_by_lambda_to_the_k():
    """Activity at step 1 only (raw-spike traces), then k silent steps: E = lambda^k e_1 (closed form)."""
    torch.manual_seed(3)
    net = SpikingNetwork(nn.Linear(5, 4, bias=False))
    spikes = (torch.rand(2, 5) > 0.4).float()
    for k in (0, 3, 7):
        learner = ThreeFactor(net, modulator=Ones(), pre_trace=0.0, trace_decay=0.8, normalize=None,
                              eligibility="step")
        drive(learner, net, torch.cat([spikes[None], torch.zeros(k, 2, 5)]))
        first = reference_window_eligibility(spikes[None], net[0].weight.detach(), 1.0, 0.0)
        torch.testing.assert_close(learner.traces["0"].eligibility.double(), 0.8 ** k * first, rtol=1e-5,
                                   atol=1e-7)
        learner.remove()


def test_conv_window_eligibility_matches_loop_over_positions():
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2, bias=False)
    net = SpikingNetwork(conv)
    x = torch.rand(2, 2, 5, 5)
    learner = ThreeFactor(net, modulator=Ones(), tau=0.5, normalize=None)
    learner.run(x, 3, BernoulliEncoder(generator=torch.Generator().manual_seed(5)))
    x_bar = rate_encode(x, 3, generator=torch.Generator().manual_seed(5)).double().mean(0)
    w = conv.weight.detach().double()
    padded = F.pad(x_bar, (1, 1, 1, 1))
    y = F.conv2d(x_bar, w, stride=2, padding=1)
    u = torch.softmax(y / 0.5, dim=1)
    expected = torch.zeros_like(w)
    for n in range(2):
        for p in range(y.shape[2]):
            for q in range(y.shape[3]):
                patch = padded[n, :, 2 * p:2 * p + 3, 2 * q:2 * q + 3]
                for k in range(3):
                    expected[k] += u[n, k, p, q] * (patch - y[n, k, p, q] * w[k]) / 2
    torch.testing.assert_close(learner.eligibility("0").double(), expected, rtol=1e-5, atol=1e-6)


def test_trace_memory_does_not_grow_with_t_and_is_neuron_sized():
    torch.manual_seed(5)
    net = SpikingNetwork(nn.Linear(6, 5), IF(), nn.Linear(5, 2))
    learner = ThreeFactor(net, modulator=FeedbackSign())
    sizes = []
    for steps in (3, 60):
        learner.run(torch.rand(4, 6), steps, BernoulliEncoder())
        tensors = [t for trace in learner.traces.values() for t in (trace.x_bar, trace.y_bar)]
        assert all(trace.eligibility is None for trace in learner.traces.values())
        tensors += [net.mean_input] + list(net.mean_outputs.values())
        sizes.append(sum(t.numel() for t in tensors))
    assert sizes[0] == sizes[1] == 4 * (6 + 5 + 5 + 2) + 4 * (6 + 5 + 5 + 2)
    # online mode builds no autograd graph through time
    assert not learner.readout.requires_grad


# ---------------------------------------------------------------- learner
def make_net(neuron):
    torch.manual_seed(6)
    return SpikingNetwork(nn.Linear(8, 6, bias=False), neuron, nn.Linear(6, 3, bias=False))


def test_step_writes_sign_times_abs_eligibility():
    net = make_net(IF())
    x, target = torch.rand(5, 8), torch.randint(0, 3, (5,))
    learner = ThreeFactor(net, modulator=GradSign(), tau=0.5)
    learner.run(x, 20, BernoulliEncoder(generator=torch.Generator().manual_seed(0)))
    learner.step(loss_fn=lambda out: F.cross_entropy(out, target))
    # independent reference: autograd through the rate surrogate, E max-normalised by hand
    with torch.enable_grad():
        out, _ = net.rate_surrogate()
        grads = torch.autograd.grad(F.cross_entropy(out, target), [net[0].weight, net[2].weight])
    for name, grad in zip(("0", "2"), grads):
        eligibility = learner.eligibility(name)
        expected = grad.sign() * (eligibility / eligibility.abs().max()).abs()
        torch.testing.assert_close(net[int(name)].weight.grad, expected)


@pytest.mark.parametrize("neuron", [IF(), LIF(0.9), snntorch.Leaky(beta=0.9), snntorch.Synaptic(alpha=0.5, beta=0.9),
                                    LIFCell(), LIFBoxCell()], ids=lambda n: type(n).__name__)
def test_online_feedback_sign_update_is_a_descent_direction_with_every_neuron(neuron):
    """Full online pipeline with each neuron library: the read-out update of FeedbackSign is
    sign(sum_n e_nk x_bar_ni) |E_ik| = sign(dL/dw_ik) |E_ik| exactly (dL/dw from autograd at the observed rates)."""
    torch.manual_seed(8)
    adapter = as_neuron(neuron)
    net = SpikingNetwork(nn.Linear(8, 16, bias=False), adapter, nn.Linear(16, 3, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(2.0 / adapter.gain)
    x, target = torch.rand(3, 8) * (torch.rand(1, 8) > 0.3), torch.tensor([1, 0, 2])
    learner = ThreeFactor(net, modulator=FeedbackSign(seed=1), tau=1.0)
    learner.run(x, 12, BernoulliEncoder(generator=torch.Generator().manual_seed(0)))
    hidden_rates = net.mean_outputs["1"]
    assert hidden_rates.sum() > 0
    learner.step(loss_fn=lambda o: F.cross_entropy(o, target))
    with torch.enable_grad():
        weight = net[2].weight.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(hidden_rates @ weight.t(), target), [weight])
    eligibility = learner.eligibility("2", normalized=True)
    torch.testing.assert_close(net[2].weight.grad, grad.sign() * eligibility.abs())
    assert (net[2].weight.grad * grad).sum() > 0
    # the hidden layer got a per-synapse sign too, zero where its input was silent in every sample
    hidden_grad = net[0].weight.grad
    assert torch.all(hidden_grad[:, x.sum(0) == 0] == 0)
    assert hidden_grad.abs().sum() > 0


def test_rule_argument_plugs_any_eligibility_rule():
    """rule=: the learner evaluates the given EligibilityRule on the end-of-window traces (here a scaled Oja rule
    written in the test), and its own normalisation applies."""
    from ghl_snn.rules import EligibilityRule

    class Hebb(EligibilityRule):
        normalize = None

        def linear(self, x, y, weight):
            return 2.0 * y.t() @ x / x.shape[0]

    torch.manual_seed(9)
    net = SpikingNetwork(nn.Linear(6, 4, bias=False), IF(), nn.Linear(4, 3, bias=False))
    learner = ThreeFactor(net, modulator=Ones(), rule=Hebb())
    learner.run(torch.rand(5, 6), 7, BernoulliEncoder(generator=torch.Generator().manual_seed(1)))
    for name in ("0", "2"):
        x_bar, y_bar = learner.traces[name].x_bar.double(), learner.traces[name].y_bar.double()
        torch.testing.assert_close(learner.eligibility(name, normalized=True).double(), 2.0 * y_bar.t() @ x_bar / 5)
    learner.step()
    torch.testing.assert_close(net[0].weight.grad, -learner.eligibility("0"))
    with pytest.raises(TypeError, match="EligibilityRule"):
        ThreeFactor(net, rule=lambda x: x)


def test_grad_sign_learns_real_mnist_quickly(shared_data):
    from ghl_snn.datasets.mnist import load_mnist, mnist_vectors
    images, labels = load_mnist(shared_data, train=False)  # the smaller file: fast to load
    x, y = mnist_vectors(images[:1100]), labels[:1100]
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(784, 64, bias=False), IF(), nn.Linear(64, 10, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
    learner = ThreeFactor(net, modulator=GradSign())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    encoder = BernoulliEncoder(generator=torch.Generator().manual_seed(0))
    for start in range(0, 800, 25):
        xb, yb = x[start:start + 25], y[start:start + 25]
        optimizer.zero_grad()
        learner.run(xb, 5, encoder)
        learner.step(loss_fn=lambda o, yb=yb: F.cross_entropy(o, yb))
        optimizer.step()
    with torch.no_grad():
        accuracy = (net.run(x[800:], 5, encoder, record=False).argmax(1) == y[800:]).float().mean()
    assert accuracy > 0.5, accuracy


def test_bptt_path_uses_surrogate_gradient_sign():
    net = make_net(IF())
    x, target = torch.rand(4, 8), torch.randint(0, 3, (4,))
    learner = ThreeFactor(net, modulator=GradSign(), global_signal="bptt")
    out = learner.run(x, 6, BernoulliEncoder(generator=torch.Generator().manual_seed(0)))
    assert out.requires_grad
    F.cross_entropy(out, target).backward()
    bptt = {name: net[int(name)].weight.grad.clone() for name in ("0", "2")}
    learner.step()
    for name, grad in bptt.items():
        written = net[int(name)].weight.grad
        mask = written != 0
        assert torch.equal(written.sign()[mask], grad.sign()[mask])
        assert torch.equal(written.abs(), learner.eligibility(name, normalized=True).abs() * (grad != 0))


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_neuron_sign_in_spiking_learner_is_the_rate_surrogate_grad_sign(kind):
    """sign(sum_n delta_nk x_bar_ni) with delta = dL/dy of the rate surrogate and the mean traces x_bar equals the
    sign of the rate surrogate's dL/dW: NeuronSign writes GradSign's update (Linear and Conv2d)."""
    torch.manual_seed(10)
    if kind == "linear":
        net = make_net(IF())
        x, target = torch.rand(4, 8), torch.randint(0, 3, (4,))
    else:
        net = SpikingNetwork(nn.Conv2d(2, 4, 3, padding=1, bias=False), IF(), nn.Flatten(),
                             nn.Linear(4 * 5 * 5, 3, bias=False))
        with torch.no_grad():
            net[0].weight.mul_(3.0)
        x, target = torch.rand(4, 2, 5, 5), torch.randint(0, 3, (4,))
    writes = []
    for modulator in (GradSign(), NeuronSign()):
        learner = ThreeFactor(net, modulator=modulator)
        learner.run(x, 10, BernoulliEncoder(generator=torch.Generator().manual_seed(0)))
        learner.step(loss_fn=lambda o: F.cross_entropy(o, target))
        writes.append({n: m.weight.grad.clone() for n, m in learner.layers.items()})
        with torch.enable_grad():
            out, _ = net.rate_surrogate()
            grads = torch.autograd.grad(F.cross_entropy(out, target), [m.weight for m in learner.layers.values()])
        learner.remove()
    for (name, write), grad in zip(writes[1].items(), grads):
        mask = grad.abs() > 1e-6
        assert mask.any()
        torch.testing.assert_close(write[mask], writes[0][name][mask])


def test_learner_errors():
    net = make_net(IF())
    with pytest.raises(ValueError, match="tau"):
        ThreeFactor(net, tau=0.0)
    with pytest.raises(ValueError, match="pre_trace"):
        ThreeFactor(net, pre_trace=1.0)
    with pytest.raises(ValueError, match="trace_decay"):
        ThreeFactor(net, trace_decay=0.0, eligibility="step")
    with pytest.raises(ValueError, match="eligibility='step'"):
        ThreeFactor(net, trace_decay=0.5)
    with pytest.raises(ValueError, match="eligibility must"):
        ThreeFactor(net, eligibility="sometimes")
    with pytest.raises(ValueError, match="global_signal"):
        ThreeFactor(net, global_signal="magic")
    with pytest.raises(TypeError, match="nn.Module"):
        ThreeFactor("not a network")
    with pytest.raises(ValueError, match="rate surrogate"):
        ThreeFactor(nn.Linear(3, 3), modulator=GradSign())
    learner = ThreeFactor(net, modulator=GradSign())
    with pytest.raises(RuntimeError, match="before run"):
        learner.step(loss_fn=lambda o: o.sum())
    with pytest.raises(ValueError, match="time steps T"):
        learner.run(torch.rand(2, 8), 0)
    with pytest.raises(ValueError, match="does not fit the first Linear"):
        learner.run(torch.rand(2, 7), 5)
    learner.run(torch.rand(2, 8), 3)
    with pytest.raises(ValueError, match="needs a loss"):
        learner.step()
    with pytest.raises(ValueError, match="at least one"):
        SpikingNetwork(nn.Flatten())
    with pytest.raises(ValueError, match="Conv2d"):
        SpikingNetwork(nn.Conv2d(2, 2, 3)).run(torch.rand(1, 3, 4, 4), 2)


def test_remove_detaches_hooks():
    net = make_net(IF())
    learner = ThreeFactor(net)
    learner.remove()
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    assert math.isclose(net.run(torch.rand(2, 8), 2).shape[1], 3)


# ---------------------------------------------------------------- networks as their authors wrote them
class SnntorchLoop(nn.Module):
    """snntorch tutorial style: the forward loops over time with explicit membrane state."""

    def __init__(self):
        super().__init__()
        self.fc1, self.lif1 = nn.Linear(8, 6, bias=False), snntorch.Leaky(beta=0.9)
        self.fc2 = nn.Linear(6, 3, bias=False)

    def forward(self, spikes):  # (T, N, 8)
        mem = self.lif1.init_leaky()
        out = 0
        for x in spikes:
            spk, mem = self.lif1(self.fc1(x), mem)
            out = out + self.fc2(spk)
        return out / len(spikes)


def attached_models():
    import norse.torch as norse
    torch.manual_seed(12)
    loop = SnntorchLoop()
    sequential = nn.Sequential(nn.Linear(8, 6, bias=False), snntorch.Leaky(beta=0.9, init_hidden=True),
                               nn.Linear(6, 3, bias=False))
    stateful = norse.SequentialState(nn.Linear(8, 6, bias=False), norse.LIFBoxCell(), nn.Linear(6, 3, bias=False))
    for model in (loop, sequential, stateful):
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear) and m.in_features == 8:
                    m.weight.mul_(3.0 if model is not stateful else 30.0)
    return {"snntorch loop": loop, "snntorch init_hidden": sequential, "norse SequentialState": stateful}


def drive_model(kind, model, spikes):
    if kind == "snntorch loop":
        return model(spikes)
    if kind == "snntorch init_hidden":
        from snntorch import utils as snn_utils
        snn_utils.reset(model)
        return sum(model(x) for x in spikes) / len(spikes)
    state, out = None, 0
    for x in spikes:
        y, state = model(x, state)
        out = out + y
    return out / len(spikes)


def test_a_model_as_written_learns_with_the_default_modulator():
    """ThreeFactor(model) on an snntorch-tutorial model needs no backward pass: the default there is FeedbackSign, and
    the update equals that of an explicit FeedbackSign(); GradSign still names the one-line fix."""
    spikes = rate_encode(torch.rand(4, 8), 12, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 2, 1, 1])
    grads = []
    for modulator in (None, FeedbackSign()):
        model = attached_models()["snntorch loop"]
        learner = ThreeFactor(model, modulator=modulator)
        assert isinstance(learner.modulator, FeedbackSign)
        learner.step(readout=drive_model("snntorch loop", model, spikes),
                     loss_fn=lambda out: F.cross_entropy(out, target))
        grads.append([m.weight.grad.clone() for m in learner.layers.values()])
        learner.remove()
    for default, explicit in zip(*grads):
        assert default.abs().sum() > 0
        torch.testing.assert_close(default, explicit)
    assert isinstance(ThreeFactor(make_net(IF())).modulator, GradSign)  # a SpikingNetwork keeps GradSign
    with pytest.raises(ValueError, match=r"ThreeFactor\(net, FeedbackSign\(\)\)"):
        ThreeFactor(attached_models()["snntorch loop"], GradSign())
    learner = ThreeFactor(attached_models()["snntorch loop"])
    drive_model("snntorch loop", learner.network, spikes)
    with pytest.raises(RuntimeError, match=r"step\(loss_fn="):   # the error names the keyword that fixes it
        learner.step(readout=torch.rand(4, 3))


def test_biases_of_a_model_as_written_are_reported_not_silently_left():
    model = nn.Sequential(nn.Linear(8, 6), snntorch.Leaky(beta=0.9, init_hidden=True), nn.Linear(6, 3, bias=False))
    with pytest.warns(PlasticityWarning, match=r"biases of 0 get no update"):
        ThreeFactor(model)


@pytest.mark.parametrize("kind", ["snntorch loop", "snntorch init_hidden", "norse SequentialState"])
def test_three_factor_attaches_to_networks_as_written(kind):
    """Hooks on the synapses record the traces across the user's own time loop; step(readout=...) writes
    sign(sum_n delta x_bar) |E| with E = SWTA-Oja of the recorded traces (checked against the time-averaged spikes
    recorded independently and the float64 formulas) and clears the traces for the next window."""
    model = attached_models()[kind]
    learner = ThreeFactor(model, modulator=FeedbackSign(seed=2), tau=1.0)
    spikes = rate_encode(torch.rand(4, 8), 12, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 2, 1, 1])
    seen = {}

    def spy(module, args, output):
        seen.setdefault(module, []).append(args[0].detach().double())

    synapses = list(learner.layers.values())
    handles = [m.register_forward_hook(spy) for m in synapses]
    readout = drive_model(kind, model, spikes)
    for handle in handles:
        handle.remove()
    first, last = synapses
    x_bar = {m: torch.stack(seen[m]).mean(0) for m in synapses}
    assert x_bar[last].sum() > 0  # the hidden layer spiked
    for name, module in learner.layers.items():
        torch.testing.assert_close(learner.traces[name].x_bar.double(), x_bar[module])
    learner.step(readout=readout, loss_fn=lambda out: F.cross_entropy(out, target))
    error = (torch.softmax(readout.detach().double(), 1) - F.one_hot(target, 3).double()) / 4
    w = last.weight.detach().double()
    eligibility = swta_oja(x_bar[last], x_bar[last] @ w.t(), w, tau=1.0, normalize="max")
    expected = (error.t() @ x_bar[last]).sign() * eligibility.abs()
    torch.testing.assert_close(last.weight.grad.double(), expected, rtol=1e-4, atol=1e-6)
    assert first.weight.grad.abs().sum() > 0
    assert all(trace.x_bar is None for trace in learner.traces.values())  # next window starts clean
    model.eval()
    drive_model(kind, model, spikes)
    assert all(trace.x_bar is None for trace in learner.traces.values())  # eval forwards are not recorded
    with pytest.raises(TypeError, match="time loop"):
        learner.run(torch.rand(4, 8), 3)
    learner.remove()
