"""The cost of a spiking window: no host reads inside it, and the shortcuts of the window (in-place sums, synapse
sums formed once, traces read from the record, the neurons' no-autograd step, event-driven input) and the
benchmark's execution choices equal the step-by-step reference."""
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ghl_snn import PlasticityWarning
from ghl_snn.modulators import AttentionGatedReward, FeedbackSign, GradSign, NeuronSign
from ghl_snn.spiking import IF, LIF, BernoulliEncoder, FICurve, FrameSequence, SpikingNetwork, ThreeFactor, rate_encode
from ghl_snn.spiking.synapses import event_current

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import spiking_memory  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default, torch.ops.aten.item.default}


class HostReads(TorchDispatchMode):
    """Counts every read of a tensor value back into Python: ``item`` / ``float`` / ``bool`` (one
    ``_local_scalar_dense`` each, a device synchronisation on a GPU) and ``tolist`` / ``numpy``."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.count = 0
        for method in ("tolist", "numpy"):
            original = getattr(torch.Tensor, method)
            monkeypatch.setattr(torch.Tensor, method, self._counted(original))

    def _counted(self, original):
        def counted(tensor, *args, **kwargs):
            self.count += 1
            return original(tensor, *args, **kwargs)
        return counted

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def feedback_window():
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(20, 16, bias=False), IF(), nn.Linear(16, 4, bias=False))
    return net, ThreeFactor(net, modulator=FeedbackSign())


@pytest.mark.parametrize("modulator", [FeedbackSign, GradSign, NeuronSign], ids=lambda m: m.__name__)
def test_a_window_reads_the_host_at_most_once(monkeypatch, modulator):
    """run() + step() of a 100-step ThreeFactor window make at most one host read in all (step() reads run()'s input
    checks -- finite, and the Bernoulli range -- with the loss's, E's and the update's, in one transfer), and as
    many at T = 10 as at T = 100: nothing is read per time step."""
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(20, 16, bias=False), IF(), nn.Linear(16, 4, bias=False))
    learner = ThreeFactor(net, modulator=modulator())
    x, labels = torch.rand(8, 20), torch.randint(0, 4, (8,))
    encoder = BernoulliEncoder()
    learner.run(x, 2, encoder)  # first use: lazy state and feedback matrices are created outside the count
    learner.step(loss_fn=lambda out: F.cross_entropy(out, labels))
    counts = []
    for steps in (10, 100):
        before = net[0].weight.grad.clone()
        with HostReads(monkeypatch) as reads:
            learner.run(torch.rand(8, 20), steps, encoder)  # a new batch: its checks are not cached
            learner.step(loss_fn=lambda out: F.cross_entropy(out, labels))
        assert not torch.equal(net[0].weight.grad, before)  # the window did write its update
        counts.append(reads.count)
    assert counts[0] == counts[1] <= 1


def test_checks_read_with_the_update_still_report_bad_input_and_write_nothing():
    """The checks run() defers to step() still stop the window: an input outside the Bernoulli range raises the
    encoder's ValueError, NaN raises FloatingPointError (``"skip"``: a warning), before any weight.grad is
    written."""
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(6, 5, bias=False), IF(), nn.Linear(5, 3, bias=False))
    labels = torch.tensor([0, 1])
    for x, error, match in ((torch.tensor([[0.2, 1.5, 0.1, 0.3, 0.0, 0.9]] * 2), ValueError,
                             r"gain \* x in \[0, 1\], got values in \[0, 1.5\]"),
                            (torch.tensor([[0.2, float("nan"), 0.1, 0.3, 0.0, 0.9]] * 2), FloatingPointError,
                             "non-finite input")):
        learner = ThreeFactor(net, modulator=FeedbackSign())
        net.zero_grad(set_to_none=True)
        learner.run(x, 5, BernoulliEncoder())
        for _ in range(2):  # a raised check stays queued: stepping the same window again raises again
            with pytest.raises(error, match=match):
                learner.step(loss_fn=lambda out: F.cross_entropy(out, labels))
        assert net[0].weight.grad is None and net[2].weight.grad is None
    learner = ThreeFactor(net, modulator=FeedbackSign(), nonfinite="skip")
    learner.run(x, 5, BernoulliEncoder())
    with pytest.warns(PlasticityWarning, match="non-finite input.*skipped"):
        learner.step(loss_fn=lambda out: F.cross_entropy(out, labels))
    assert net[0].weight.grad is None and net[2].weight.grad is None


def test_a_skipped_layer_leaves_the_modulator_state_as_if_it_had_not_seen_it():
    """The update of every layer is computed before the one read of the checks; when a layer fails (``"skip"``),
    the modulator's state is restored and the layers that passed are updated anew: a learned feedback pathway
    (AttentionGatedReward) does not learn from the skipped read-out layer, the hidden layer is still written."""
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(6, 5, bias=False), IF(), nn.Linear(5, 3, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
    modulator = AttentionGatedReward(feedback="learned", feedback_lr=0.5)
    learner = ThreeFactor(net, modulator=modulator, nonfinite="skip")
    x, action = torch.rand(4, 6), torch.tensor([0, 1, 2, 0])
    learner.run(x, 20, BernoulliEncoder(generator=torch.Generator().manual_seed(0)))
    learner.step(reward=torch.ones(4), action=action, value=torch.zeros(4))  # creates the feedback matrix
    matrices = {name: m.clone() for name, m in modulator.matrices.items()}
    assert matrices
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")
    net.zero_grad(set_to_none=True)
    learner.run(x, 20, BernoulliEncoder(generator=torch.Generator().manual_seed(1)))
    with pytest.warns(PlasticityWarning, match="non-finite .*'2'.*skipped"):
        learner.step(reward=torch.tensor([1.0, 0.0, 1.0, 1.0]), action=action, value=torch.zeros(4))
    assert net[2].weight.grad is None
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
    for name, matrix in modulator.matrices.items():
        assert torch.equal(matrix, matrices[name]), name


def test_bernoulli_input_is_checked_once_per_window_and_again_when_it_changes():
    encoder = BernoulliEncoder(gain=2.0)
    net = SpikingNetwork(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"gain \* x in \[0, 1\], got values in \[0.2, 1.4\]"):
        net.run(torch.tensor([[0.1, 0.7, 0.3]]), 5, encoder)
    x = torch.tensor([[0.1, 0.2, 0.3]])
    net.run(x, 5, encoder)
    x[0, 1] = 0.9  # changed in place after the check: the next call checks again
    with pytest.raises(ValueError, match="gain"):
        encoder(x)
    with pytest.raises(ValueError, match="nan"):
        BernoulliEncoder()(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(ValueError, match="gain"):
        rate_encode(torch.tensor([[1.5]]), 3)


@pytest.mark.parametrize("beta,reset", [(1.0, "subtract"), (0.8, "subtract"), (0.9, "zero")])
def test_neuron_step_without_autograd_equals_the_surrogate_step(beta, reset):
    torch.manual_seed(1)
    currents = torch.rand(40, 6, 5) * 1.6 - 0.3
    with_graph, without = LIF(beta, threshold=0.7, reset=reset), LIF(beta, threshold=0.7, reset=reset)
    in_place = LIF(beta, threshold=0.7, reset=reset)  # advance_: the membrane updated in place (run's loop)
    for step, current in enumerate(currents):
        with torch.enable_grad():
            expected = with_graph(current.clone().requires_grad_(True))
        with torch.no_grad():
            got = without(current)
            state = in_place.v
            advanced = in_place.advance_(current)
        assert torch.equal(got, expected.detach()) and torch.equal(advanced, got)
        assert torch.equal(without.v, with_graph.v.detach()) and torch.equal(in_place.v, without.v)
        assert step == 0 or in_place.v is state  # no new membrane tensor after the first step


def step_by_step(net, inputs):
    """Float64 reference: every module's output at every step, summed over the window."""
    net.reset()
    sums = {}
    with torch.no_grad():
        for s in inputs:
            h = s
            for name, module in net.named_children():
                h = module(h)
                sums[name] = sums.get(name, 0) + h.double()
    return sums


@pytest.mark.parametrize("build", [
    lambda: SpikingNetwork(nn.Linear(12, 9), IF(threshold=0.5), nn.Linear(9, 3)),
    lambda: SpikingNetwork(nn.Conv2d(2, 3, 3, padding=1), LIF(0.9, 0.5), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)),
], ids=["linear", "conv"])
def test_recorded_means_and_traces_equal_the_step_by_step_sums(build):
    """run() sums the synapses' outputs as W (sum x) + T b at the end of the window; the learner's running-mean
    traces are read from those sums: both equal the step-by-step sums (and continue across reset=False)."""
    torch.manual_seed(2)
    net = build()
    shape = (5, 12) if isinstance(net[0], nn.Linear) else (5, 2, 4, 4)
    inputs = rate_encode(torch.rand(shape), 30, generator=torch.Generator().manual_seed(4))
    more = rate_encode(torch.rand(shape), 10, generator=torch.Generator().manual_seed(5))
    expected, both = step_by_step(net, inputs), step_by_step(net, torch.cat([inputs, more]))
    names, last = list(expected), list(expected)[-1]
    learner = ThreeFactor(net, modulator=FeedbackSign())
    frames = inputs.transpose(0, 1)
    readout = learner.run(frames[:, 0], 30, FrameSequence(frames))
    torch.testing.assert_close(readout.double(), expected[last] / 30, rtol=1e-5, atol=1e-6)
    for name, value in expected.items():
        torch.testing.assert_close(net.mean_outputs[name].double(), value / 30, rtol=1e-5, atol=1e-6)
    for name in learner.layers:
        index = names.index(name)
        x_bar = inputs.double().mean(0) if index == 0 else expected[names[index - 1]] / 30
        bias = net[index].bias.double()
        y_bar = expected[name] / 30 - (bias.view(-1, 1, 1) if isinstance(net[index], nn.Conv2d) else bias)
        torch.testing.assert_close(learner.traces[name].x_bar.double(), x_bar, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(learner.traces[name].y_bar.double(), y_bar, rtol=1e-5, atol=1e-6)
    # a second window continued with reset=False: traces average over both windows, the read-out is its own
    readout = learner.run(more[0], 10, FrameSequence(more.transpose(0, 1)), reset=False)
    torch.testing.assert_close(readout.double(), (both[last] - expected[last]) / 10, rtol=1e-5, atol=1e-6)
    for name in learner.layers:
        index = names.index(name)
        x_bar = torch.cat([inputs, more]).double().mean(0) if index == 0 else both[names[index - 1]] / 40
        torch.testing.assert_close(learner.traces[name].x_bar.double(), x_bar, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.mean_outputs[name].double(), both[name] / 40, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- execution choices (benchmarks/spiking_memory.py)
def exact_weights(*shape):
    """Weights on a 1/16 grid: sums of a few of them are exact in float32, so every execution order agrees bit
    for bit and a spike can not flip on rounding."""
    return torch.randint(-8, 12, shape).float() / 16


def spike_frames(steps, batch, inputs, seed):
    return rate_encode(torch.rand(batch, inputs) * 0.4, steps, generator=torch.Generator().manual_seed(seed))


def test_event_driven_current_equals_the_dense_product():
    torch.manual_seed(3)
    weight, bias = torch.randn(7, 40), torch.randn(7)
    for density in (0.0, 0.1, 0.9):  # 0.9: above EVENT_DENSITY, the dense fallback
        spikes = (torch.rand(5, 40) < density).float()
        spikes[2] = 0.0  # a sample without any active input
        got = event_current(spikes, weight.t().contiguous(), bias)
        torch.testing.assert_close(got, F.linear(spikes, weight, bias), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="spikes"):
        event_current(torch.ones(3, 4), torch.ones(5, 2))


def test_network_uses_event_driven_input_only_where_it_is_exact_and_safe():
    torch.manual_seed(4)
    net = SpikingNetwork(nn.Linear(30, 64), IF(threshold=0.5), nn.Linear(64, 4))
    net[0].weight.data, net[2].weight.data = exact_weights(64, 30), exact_weights(4, 64)
    net[0].bias.data, net[2].bias.data = exact_weights(64), exact_weights(4)
    frames = spike_frames(25, 6, 30, seed=1)
    outputs = {}
    for event_driven in (True, False):
        net.event_driven = event_driven
        with torch.no_grad():
            outputs[event_driven] = net.run(frames[0], 25, FrameSequence(frames.transpose(0, 1)))
    assert torch.equal(outputs[True], outputs[False])
    x = torch.rand(6, 30)
    net.event_driven = True
    with torch.no_grad():
        calls = [net._step_call(i, m, BernoulliEncoder(), x, False) for i, m in enumerate(net)]
    assert [type(c).__name__ for c in calls] == ["EventLinear", "IF", "Linear"]  # 4 outputs: dense is cheaper
    assert type(net._step_call(0, net[0], None, x, False)).__name__ == "Linear"  # constant current: not binary
    assert net._step_call(2, net[2], None, x, True) is net[2]  # autograd (BPTT) keeps the module
    handle = net[0].register_forward_hook(lambda *args: None)
    assert net._step_call(0, net[0], BernoulliEncoder(), x, False) is net[0]  # a hooked module is called as such
    handle.remove()


@pytest.mark.parametrize("beta", [None, 0.95])
def test_plain_loop_reference_equals_the_network(beta):
    """The benchmark's plain inference loop computes the same network as SpikingNetwork (IF, or snntorch Leaky)."""
    import snntorch
    torch.manual_seed(5)
    neuron = IF() if beta is None else snntorch.Leaky(beta=beta)
    net = SpikingNetwork(nn.Linear(30, 12, bias=False), neuron, nn.Linear(12, 4, bias=False))
    net[0].weight.data, net[2].weight.data = exact_weights(12, 30), exact_weights(4, 12)
    frames = spike_frames(40, 6, 30, seed=2)
    with torch.no_grad():
        expected = net.run(frames[0], 40, FrameSequence(frames.transpose(0, 1)))
    steps = iter(frames)
    got = spiking_memory.plain_inference((net[0].weight.data, net[2].weight.data), lambda: next(steps), 40, beta=beta)
    assert expected.abs().sum() > 0
    assert torch.equal(got, expected)
    steps = iter(frames)  # the stricter reference: the read-out applied once to the summed hidden spikes
    once = spiking_memory.plain_inference((net[0].weight.data, net[2].weight.data), lambda: next(steps), 40,
                                          beta=beta, readout_once=True)
    assert torch.equal(once, expected)


@pytest.mark.parametrize("chunk", [1, 7, 40, 64])
def test_multi_step_window_equals_the_step_by_step_loop(chunk):
    torch.manual_seed(6)
    weights = (exact_weights(12, 30), exact_weights(4, 12))
    frames = spike_frames(40, 6, 30, seed=3)
    steps = iter(frames)
    expected = spiking_memory.plain_inference(weights, lambda: next(steps), 40)
    position = [0]

    def encode_chunk(length):
        position[0] += length
        return frames[position[0] - length:position[0]]

    got = spiking_memory.multi_step_inference(weights, encode_chunk, 40, chunk)
    assert position[0] == 40 and expected.abs().sum() > 0
    assert torch.equal(got, expected)


@pytest.mark.parametrize("chunk", [1, 7, 40, 64])
def test_network_multi_step_window_equals_the_step_by_step_window(chunk):
    """SpikingNetwork.multi_step = L: one product per synapse for each chunk of L steps and a scan per neuron (built-in
    IF / LIF and an snntorch neuron) give the spikes, sums, membranes and read-out of the step-by-step window
    (weights on an exact grid), continued across windows with reset=False; the learner's traces too."""
    import snntorch
    nets = []
    for _ in range(2):
        torch.manual_seed(7)
        net = SpikingNetwork(nn.Linear(30, 12), IF(threshold=0.5), nn.Linear(12, 8), LIF(0.75, 0.5),
                             nn.Linear(8, 6), snntorch.Leaky(beta=0.5), nn.Linear(6, 4))
        for module in net:
            if isinstance(module, nn.Linear):
                module.weight.data = exact_weights(*module.weight.shape)
                module.bias.data = exact_weights(*module.bias.shape)
        nets.append(net)
    nets[1].multi_step = chunk
    frames, more = spike_frames(40, 5, 30, seed=8), spike_frames(9, 5, 30, seed=9)
    learners = [ThreeFactor(net, modulator=FeedbackSign()) for net in nets]
    readouts = []
    for learner in learners:
        first = learner.run(frames[0], 40, FrameSequence(frames.transpose(0, 1)))
        readouts.append((first, learner.run(more[0], 9, FrameSequence(more.transpose(0, 1)), reset=False)))
    assert readouts[0][0].abs().sum() > 0
    assert torch.equal(readouts[0][0], readouts[1][0]) and torch.equal(readouts[0][1], readouts[1][1])
    for name, value in nets[0].mean_outputs.items():
        assert torch.equal(value, nets[1].mean_outputs[name]), name
    assert torch.equal(nets[0][3].v, nets[1][3].v)
    for name in learners[0].layers:
        assert torch.equal(learners[0].traces[name].x_bar, learners[1].traces[name].x_bar)
    with torch.no_grad():  # without recording: the read-out is summed per chunk
        plain = [net.run(frames[0], 40, FrameSequence(frames.transpose(0, 1)), record=False) for net in nets]
    assert torch.equal(plain[0], plain[1])
    nets[1].multi_step = 0
    with pytest.raises(ValueError, match="multi_step"), torch.no_grad():
        nets[1].run(frames[0], 40, FrameSequence(frames.transpose(0, 1)))


def test_compiled_step_equals_the_eager_window():
    """network.compile_step(): the steps after the first run as one torch.compile'd function; same spikes, sums,
    membrane potentials and read-out as the eager window (weights on an exact grid)."""
    torch.manual_seed(7)
    nets = []
    for _ in range(2):
        net = SpikingNetwork(nn.Linear(30, 12), IF(threshold=0.5), nn.Linear(12, 8), LIF(0.75, 0.5),
                             nn.Linear(8, 4))
        for i in (0, 2, 4):
            net[i].weight.data = exact_weights(*net[i].weight.shape)
            net[i].bias.data = exact_weights(*net[i].bias.shape)
        nets.append(net)
    nets[1].load_state_dict(nets[0].state_dict())
    try:
        nets[1].compile_step()
    except Exception as error:  # pragma: no cover - a torch build without a compiler
        pytest.skip(f"torch.compile unavailable: {error}")
    frames = spike_frames(12, 5, 30, seed=8)
    readouts = []
    for net in nets:
        with torch.no_grad():
            readouts.append(net.run(frames[0], 12, FrameSequence(frames.transpose(0, 1))))
    assert readouts[0].abs().sum() > 0
    assert torch.equal(readouts[0], readouts[1])
    for name, value in nets[0].mean_outputs.items():
        assert torch.equal(value, nets[1].mean_outputs[name]), name
    assert torch.equal(nets[0][3].v, nets[1][3].v)
    # a learner whose traces need every step (hooks) makes the run eager: its hooks still see all 12 steps
    learner = ThreeFactor(nets[1], modulator=FeedbackSign(), pre_trace=0.5)
    learner.run(frames[0], 12, FrameSequence(frames.transpose(0, 1)))
    assert all(trace.steps == 12 for trace in learner.traces.values())
    with pytest.raises(TypeError, match="SnnTorchNeuron"):
        import snntorch
        SpikingNetwork(nn.Linear(3, 2), snntorch.Leaky(beta=0.9)).compile_step()


@pytest.mark.parametrize("curve", [FICurve(threshold=0.7, scale=1.5),
                                   FICurve(threshold=1.0, reset_value=-0.5, rest=0.1),
                                   FICurve(beta=0.9, threshold=0.8)])
def test_fi_slope_equals_autograd_of_the_smooth_curve(curve):
    """The closed-form slope without leak (and the autograd one with leak) equal autograd of the smooth f-I curve,
    the clamp's end points included."""
    current = torch.cat([torch.linspace(-1.0, 2.0, 301), torch.tensor([0.0, 0.7 / 1.5, -0.1, 0.9])])
    leaf = current.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(curve.smooth(leaf).sum(), leaf)
    assert expected.abs().sum() > 0 and (expected == 0).any()
    torch.testing.assert_close(curve.slope(current), expected, rtol=1e-6, atol=0.0)


def _two_learners(modulator_factory, seed=0):
    """Two identical FeedbackSign-style learners on identical networks; the second writes through the plain path
    (``modulator.update`` and a copied ``.grad``)."""
    from ghl_snn.guards import UpdateGuard
    learners = []
    for reference in (False, True):
        torch.manual_seed(seed)
        net = SpikingNetwork(nn.Linear(20, 12, bias=False), IF(), nn.Linear(12, 4, bias=False))
        with torch.no_grad():
            net[0].weight.mul_(4.0)
        learner = ThreeFactor(net, modulator=modulator_factory())
        if reference:
            learner._update_buffers.update = lambda m, s, **c: m.update(s, **c)
            learner._update_buffers.write = lambda name, w, u: UpdateGuard.write(w, u)
        learners.append(learner)
    return learners


@pytest.mark.parametrize("modulator", [FeedbackSign, NeuronSign])
def test_update_computed_into_reused_buffers_equals_the_modulators_update(modulator):
    fast, reference = _two_learners(modulator)
    x, y = torch.rand(6, 20), torch.tensor([0, 1, 2, 3, 0, 1])
    for window in range(3):  # buffers reused from the second window on
        for learner in (fast, reference):
            learner.network.zero_grad(set_to_none=True)
            generator = torch.Generator().manual_seed(window)
            learner.run(x, 12, BernoulliEncoder(generator=generator))
            learner.step(loss_fn=lambda out: F.cross_entropy(out, y))
        for layer in (0, 2):
            got, want = fast.network[layer].weight.grad, reference.network[layer].weight.grad
            assert torch.equal(got, want)
            assert got.abs().max() > 0
    assert fast.network[0].weight.grad is fast._update_buffers._updates["0"]  # written without a copy


def test_a_gradient_the_caller_kept_is_never_overwritten_by_the_next_window():
    (learner, _) = _two_learners(FeedbackSign)
    net, x = learner.network, torch.rand(6, 20)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    kept, copies = [], []
    for window in range(3):
        net.zero_grad(set_to_none=True)
        learner.run(x, 12, BernoulliEncoder(generator=torch.Generator().manual_seed(window)))
        learner.step(loss_fn=lambda out: F.cross_entropy(out, y))
        kept.append(net[0].weight.grad)  # the caller holds each window's gradient
        copies.append(net[0].weight.grad.clone())
    assert len({id(grad) for grad in kept}) == 3
    for grad, copy in zip(kept, copies):
        assert torch.equal(grad, copy)
    assert not torch.equal(copies[0], copies[1])  # different windows: different updates


def test_a_gradient_left_in_place_is_overwritten_as_before():
    """Without ``zero_grad`` the learner's ``.grad`` is the update of the last window (not a sum), as the copy
    into an existing ``.grad`` gave."""
    fast, reference = _two_learners(FeedbackSign)
    x, y = torch.rand(6, 20), torch.tensor([0, 1, 2, 3, 0, 1])
    for window in range(2):
        for learner in (fast, reference):
            learner.run(x, 12, BernoulliEncoder(generator=torch.Generator().manual_seed(window)))
            learner.step(loss_fn=lambda out: F.cross_entropy(out, y))
    assert torch.equal(fast.network[0].weight.grad, reference.network[0].weight.grad)
