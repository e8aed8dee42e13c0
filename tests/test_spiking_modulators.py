"""Per-neuron modulators (NeuronSign, FeedbackSign, RewardSign, plain DFA): the per-synapse sign of
sum_n delta_nk x_ni against float64 loops and autograd, in the rate plug-in and the spiking learner."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, GradSign, LayerSignals, StepContext, swta_oja
from ghl_snn.modulators import (FeedbackAlignment, FeedbackSign, NeuronSign, PlainGradient, RewardSign,
                                choose_actions, presynaptic_credit)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def signals(module, eligibility, **kwargs):
    return LayerSignals(name=kwargs.pop("name", "layer"), module=module, eligibility=eligibility, **kwargs)


def loop_credit_linear(delta, x):
    """Float64 loop: C_ik = sum_n delta_nk x_ni."""
    delta, x = delta.double(), x.double()
    out = torch.zeros(delta.shape[1], x.shape[1], dtype=torch.float64)
    for k in range(delta.shape[1]):
        for i in range(x.shape[1]):
            out[k, i] = sum(delta[n, k] * x[n, i] for n in range(x.shape[0]))
    return out


def loop_credit_conv(delta, x, conv):
    """Float64 loop over samples, positions and kernel taps: C_kcij = sum_n,p,q delta_nkpq x_pad[n,c,sp+di,sq+dj]."""
    (pad_h, pad_w), (s_h, s_w), (d_h, d_w) = conv.padding, conv.stride, conv.dilation
    x = F.pad(x.double(), (pad_w, pad_w, pad_h, pad_h))
    delta = delta.double()
    out = torch.zeros(conv.weight.shape, dtype=torch.float64)
    kh, kw = conv.kernel_size
    for n in range(delta.shape[0]):
        for p in range(delta.shape[2]):
            for q in range(delta.shape[3]):
                for i in range(kh):
                    for j in range(kw):
                        patch = x[n, :, s_h * p + d_h * i, s_w * q + d_w * j]
                        out[:, :, i, j] += delta[n, :, p, q][:, None] * patch[None, :]
    return out


def test_presynaptic_credit_against_float64_loops():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    delta, x = torch.randn(5, 4), torch.rand(5, 6)
    torch.testing.assert_close(presynaptic_credit(delta, x, layer).double(), loop_credit_linear(delta, x), rtol=1e-5,
                               atol=1e-6)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=1)
    x = torch.rand(2, 2, 7, 7)
    y = conv(x)
    delta = torch.randn_like(y)
    torch.testing.assert_close(presynaptic_credit(delta, x, conv).double(), loop_credit_conv(delta, x, conv),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Linear credit"):
        presynaptic_credit(torch.randn(5, 3), torch.rand(5, 6), layer)
    with pytest.raises(ValueError, match="Conv2d credit"):
        presynaptic_credit(torch.randn(2, 3, 4), x, conv)


CONV_KINDS = {
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), (2, 4, 9)),
    "conv2d same": (lambda: nn.Conv2d(4, 6, 3, padding="same", dilation=2), (2, 4, 6, 7)),
    "conv2d reflect": (lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), (2, 4, 5, 5)),
    "conv2d grouped circular": (lambda: nn.Conv2d(4, 6, 3, padding=2, padding_mode="circular", groups=2),
                                (2, 4, 5, 6)),
    "conv3d valid": (lambda: nn.Conv3d(4, 2, 2, padding="valid"), (2, 4, 3, 4, 3)),
}


def test_a_per_sample_signal_reaches_every_token_of_a_sequence_layer():
    """A Linear layer on token sequences (N, T, in) with one signal row per sample: every token of sample n gets
    delta_n, which is the float64 loop over samples and tokens; GHL with FeedbackSign then steps a sequence model."""
    torch.manual_seed(3)
    layer = nn.Linear(4, 5)
    delta, x = torch.randn(2, 5), torch.rand(2, 3, 4)
    expected = torch.zeros(5, 4, dtype=torch.float64)
    for n in range(2):
        for t in range(3):
            expected += delta[n].double()[:, None] * x[n, t].double()[None, :]
    torch.testing.assert_close(presynaptic_credit(delta, x, layer).double(), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="one delta row per sample"):
        presynaptic_credit(torch.randn(3, 5), x, layer)  # neither one row per sample nor one per token
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    rule = GHL(model, modulator=FeedbackSign(output_layers=["2"]))
    model(torch.randn(2, 7, 4)).mean(dim=1).square().sum().backward()
    rule.step(error=torch.randn(2, 3))
    assert all(torch.isfinite(model[i].weight.grad).all() and model[i].weight.grad.abs().sum() > 0 for i in (0, 2))


@pytest.mark.parametrize("kind", sorted(CONV_KINDS))
def test_presynaptic_credit_of_any_convolution_is_the_weight_gradient(kind):
    """With delta = dL/dy the accumulated product is dL/dW (autograd) for every ConvNd geometry the plug-in accepts
    (1-3 spatial dims, groups, padding="same"/"valid", reflect / circular padding); output_shape is the layer's."""
    from ghl_snn.modulators.credit import output_shape

    torch.manual_seed(0)
    make, shape = CONV_KINDS[kind]
    conv = make()
    x = torch.rand(shape)
    y = conv(x)
    assert output_shape(conv, x) == tuple(y.shape[1:])
    delta = torch.randn_like(y)
    (weight_grad,) = torch.autograd.grad((y * delta).sum(), conv.weight)
    torch.testing.assert_close(presynaptic_credit(delta, x, conv), weight_grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=f"{type(conv).__name__} credit"):
        presynaptic_credit(delta[:, :-1], x, conv)


@pytest.mark.parametrize("kind", sorted(CONV_KINDS))
def test_neuron_sign_writes_grad_signs_update_on_any_convolution(kind):
    """The plug-in with NeuronSign on a model with that convolution writes GradSign's update (sign(dL/dW) |E|)."""
    torch.manual_seed(2)
    make, shape = CONV_KINDS[kind]
    model = nn.Sequential(make(), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.rand(shape)
    model(x)
    target = torch.tensor([0, 2])
    writes = []
    for modulator in (GradSign(), NeuronSign()):
        model.zero_grad(set_to_none=True)
        rule = GHL(model, modulator=modulator)
        F.cross_entropy(model(x), target).backward()
        rule.step()
        writes.append(model[0].weight.grad.clone())
        rule.remove()
    assert writes[0].abs().sum() > 0
    torch.testing.assert_close(writes[1], writes[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_neuron_sign_is_grad_sign_per_synapse_in_rate_plugin(kind):
    """sign(sum_n dL/dy_nk x_ni) is sign(dL/dW) for a batch: NeuronSign writes GradSign's exact update (Linear and
    Conv2d: the captured input meets the captured delta through the weight-gradient convolution)."""
    torch.manual_seed(1)
    if kind == "linear":
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        x = torch.rand(8, 6)
    else:
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 3))
        x = torch.rand(8, 2, 5, 5)
    target = torch.randint(0, 3, (8,))
    writes = {}
    for modulator in (GradSign(), NeuronSign()):
        model.zero_grad(set_to_none=True)
        rule = GHL(model, modulator=modulator)
        F.cross_entropy(model(x), target).backward()
        grads = {name: m.weight.grad.clone() for name, m in rule.layers.items()}
        rule.step()
        writes[type(modulator).__name__] = {name: m.weight.grad.clone() for name, m in rule.layers.items()}
        rule.remove()
    for name in writes["GradSign"]:
        mask = grads[name].abs() > 1e-6  # sign of float round-off near zero may differ
        torch.testing.assert_close(writes["NeuronSign"][name][mask], writes["GradSign"][name][mask])
    with pytest.raises(RuntimeError, match="dL/dy"):
        NeuronSign().sign(signals(nn.Linear(3, 2), torch.ones(2, 3), inputs=torch.rand(4, 3)))


def test_feedback_sign_against_float64_loop():
    """Hidden: delta_nk = (e_n B^T)_k f'(I_nk); M_ik = sign(sum_n delta_nk x_ni).  Output: delta = e."""
    torch.manual_seed(3)
    hidden, output = nn.Linear(6, 5, bias=False), nn.Linear(5, 3, bias=False)
    error = torch.randn(4, 3)
    slope = torch.rand(4, 5) * (torch.rand(4, 5) > 0.3)
    inputs = torch.rand(4, 6) * (torch.rand(4, 6) > 0.3)
    modulator = FeedbackSign(seed=7, output_layers=["out"])
    m_hidden = modulator.sign(signals(hidden, torch.ones(5, 6), name="hid", inputs=inputs,
                                      post_slope=slope), error=error)
    B = modulator.matrices["hid"].double()
    assert B.shape == (5, 3)
    for k in range(5):
        for i in range(6):
            total = sum(sum(float(error[n, c]) * float(B[k, c]) for c in range(3)) * float(slope[n, k]) *
                        float(inputs[n, i]) for n in range(4))
            assert m_hidden[k, i].item() == (total > 1e-9) - (total < -1e-9) or abs(total) < 1e-9
    hidden_out = torch.rand(4, 5)
    m_out = modulator.sign(signals(output, torch.ones(3, 5), name="out", inputs=hidden_out), error=error)
    torch.testing.assert_close(m_out.double(), loop_credit_linear(error, hidden_out).sign())
    # plain DFA control: the same credit with no sign and no |E|
    dfa = FeedbackAlignment(seed=7, output_layers=["out"])
    update = dfa.update(signals(hidden, torch.zeros(5, 6), name="hid", inputs=inputs, post_slope=slope),
                        error=error)
    reference = loop_credit_linear((error.double() @ B.t()) * slope.double(), inputs)
    torch.testing.assert_close(update.double(), reference, rtol=1e-5, atol=1e-6)
    # same seed and name -> same matrix; other name -> other matrix; state round trip
    again = FeedbackSign(seed=7)
    again.sign(signals(hidden, torch.ones(5, 6), name="hid", inputs=inputs), error=error)
    assert torch.equal(again.matrices["hid"], modulator.matrices["hid"])
    assert not torch.equal(FeedbackSign(seed=7).feedback_matrix("other", 5, 3), modulator.matrices["hid"])
    restored = FeedbackSign(seed=0)
    restored.load_state_dict(modulator.state_dict())
    assert torch.equal(restored.matrices["hid"], modulator.matrices["hid"]) and restored.seed == 7
    with pytest.raises(RuntimeError, match="error"):
        modulator.sign(signals(hidden, torch.ones(5, 6), name="hid", inputs=inputs))
    with pytest.raises(ValueError, match="columns"):
        modulator.sign(signals(hidden, torch.ones(5, 6), name="out", inputs=inputs), error=error)


def test_feedback_sign_conv_has_one_feedback_row_per_neuron_and_position():
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    x = torch.rand(2, 2, 4, 4)
    error = torch.randn(2, 5)
    modulator = FeedbackSign(seed=1)
    m = modulator.sign(signals(conv, torch.ones_like(conv.weight), name="c", inputs=x), error=error)
    B = modulator.matrices["c"]
    assert B.shape == (3 * 4 * 4, 5)
    delta = (error @ B.t()).view(2, 3, 4, 4)
    torch.testing.assert_close(m.double(), loop_credit_conv(delta, x, conv).sign())


def test_feedback_sign_in_rate_plugin_needs_no_backward():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, target = torch.rand(8, 6), torch.randint(0, 3, (8,))
    rule = GHL(model, modulator=FeedbackSign(output_layers=["2"]))
    logits = model(x)
    error = torch.softmax(logits.detach(), 1) - F.one_hot(target, 3).float()
    rule.step(error=error)  # no loss.backward() at all
    hidden = torch.relu(model[0](x)).detach()
    assert model[0].weight.grad is not None
    # the read-out's DFA signal is the true output gradient: the written sign is sign(dL/dW2)
    expected = loop_credit_linear(error, hidden).sign()
    nonzero = model[2].weight.grad != 0
    assert torch.equal(model[2].weight.grad.sign()[nonzero].double(), expected[nonzero])


class Wrapper(nn.Module):
    """Holds a model under ``attribute``, as DDP / DataParallel (``module``) and torch.compile (``_orig_mod``) do."""

    def __init__(self, model, attribute):
        super().__init__()
        setattr(self, attribute, model)
        self.attribute = attribute

    def forward(self, x):
        return getattr(self, self.attribute)(x)


@pytest.mark.parametrize("attributes", [("module",), ("_orig_mod",), ("module", "_orig_mod")])
def test_feedback_sign_is_unchanged_by_model_wrappers(attributes):
    """B is drawn from the layer name in the unwrapped model, and output_layers name layers there: wrapping the
    model (DDP, torch.compile) changes neither the feedback matrices nor the update."""
    def update(wrap):
        torch.manual_seed(4)
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3))
        held = model
        for attribute in reversed(attributes) if wrap else ():
            held = Wrapper(held, attribute)
        modulator = FeedbackSign(seed=3, output_layers=["4"])
        rule = GHL(held, modulator=modulator)
        x, target = torch.rand(8, 6), torch.randint(0, 3, (8,))
        logits = held(x)
        rule.step(error=torch.softmax(logits.detach(), 1) - F.one_hot(target, 3).float())
        return [layer.weight.grad.clone() for layer in model[::2]], modulator.state_dict()["matrices"], rule

    plain, plain_matrices, _ = update(wrap=False)
    wrapped, wrapped_matrices, rule = update(wrap=True)
    assert all(name.startswith(attributes[0] + ".") for name in rule.synapses)  # the names did change
    assert sorted(wrapped_matrices) == sorted(plain_matrices) == ["0", "2"]  # "4" (output) needs no matrix
    for name in plain_matrices:
        assert torch.equal(wrapped_matrices[name], plain_matrices[name])
    for before, after in zip(plain, wrapped):
        assert torch.equal(before, after)
    # a state saved under wrapped names (before names were unwrapped) loads under the unwrapped ones
    restored = FeedbackSign()
    restored.load_state_dict({"seed": 3, "matrices": {f"module.{n}": m for n, m in plain_matrices.items()}})
    assert sorted(restored.matrices) == ["0", "2"]


def test_reward_sign_is_feedback_sign_of_the_chosen_output_error():
    """delta = -RPE_n onehot(a_n) at the output, with RPE = r - Q_a (Q-AGREL); hidden: through B[:, a]."""
    torch.manual_seed(5)
    hidden, output = nn.Linear(6, 5, bias=False), nn.Linear(5, 3, bias=False)
    readout = torch.randn(4, 3)
    action = torch.tensor([0, 2, 2, 1])
    reward = torch.tensor([1.0, 0.0, 1.0, 0.0])
    inputs, hidden_out = torch.rand(4, 6), torch.rand(4, 5)
    modulator = RewardSign(seed=3, feedback="random")
    modulator.begin_step(StepContext(readout=readout))  # what the learner tells it when the update begins
    m_out = modulator.sign(signals(output, torch.ones(3, 5), name="out", inputs=hidden_out, is_output=True),
                           reward=reward, action=action)
    rpe = reward - readout[torch.arange(4), action]
    torch.testing.assert_close(modulator.last_rpe, rpe)
    error = torch.zeros(4, 3)
    error[torch.arange(4), action] = -rpe
    torch.testing.assert_close(m_out.double(), loop_credit_linear(error, hidden_out).sign())
    m_hidden = modulator.sign(signals(hidden, torch.ones(5, 6), name="hid", inputs=inputs),
                              reward=reward, action=action)
    B = modulator.matrices["hid"]
    assert torch.equal(m_hidden, loop_credit_linear(error @ B.t(), inputs).sign().float())
    # baseline mode: the prediction is the running mean reward
    base = RewardSign(value="baseline", momentum=0.5, feedback="random")
    base.begin_step(StepContext(readout=readout))
    base.sign(signals(output, torch.ones(3, 5), name="out", inputs=hidden_out, is_output=True),
              reward=reward, action=action)
    base.sign(signals(hidden, torch.ones(5, 6), name="hid", inputs=inputs), reward=reward, action=action)
    torch.testing.assert_close(base.last_rpe, reward)
    assert base.baseline == 0.0  # two layers of one update: the baseline moves only when the next update begins
    base.begin_step(StepContext(readout=readout))
    assert base.baseline == pytest.approx(0.25)
    other = RewardSign()
    other.load_state_dict(base.state_dict())
    assert other.baseline == base.baseline
    with pytest.raises(RuntimeError, match="reward"):
        modulator.sign(signals(output, torch.ones(3, 5), name="out", inputs=hidden_out))
    with pytest.raises(ValueError, match="momentum"):
        RewardSign(momentum=0.0)


def test_choose_actions_explores_with_probability_epsilon():
    readout = torch.tensor([[0.0, 1.0, 0.0]]).expand(4000, 3)
    generator = torch.Generator().manual_seed(0)
    actions = choose_actions(readout, epsilon=0.3, generator=generator)
    greedy_share = (actions == 1).float().mean().item()
    assert greedy_share == pytest.approx(0.7 + 0.3 / 3, abs=0.03)
    assert torch.equal(choose_actions(readout, 0.0), torch.ones(4000, dtype=torch.long))
    with pytest.raises(ValueError, match="epsilon"):
        choose_actions(readout, 1.5)


def test_plain_gradient_writes_the_gradient_and_grad_sign_stays_exact_in_plugin():
    torch.manual_seed(5)
    layer = nn.Linear(4, 3, bias=False)
    x = torch.rand(6, 4)
    rule = GHL(layer, modulator=GradSign())
    layer(x).pow(2).sum().backward()
    grad = layer.weight.grad.clone()
    rule.step()
    expected = grad.sign() * swta_oja(x, x @ layer.weight.detach().t(), layer.weight, normalize="max").abs()
    torch.testing.assert_close(layer.weight.grad, expected)
    rule.remove()
    layer.zero_grad()
    rule = GHL(layer, modulator=PlainGradient())
    layer(x).pow(2).sum().backward()
    rule.step()
    torch.testing.assert_close(layer.weight.grad, grad)


def test_unit_magnitude_writes_the_base_sign_alone():
    from ghl_snn.modulators import UnitMagnitude
    torch.manual_seed(6)
    layer = nn.Linear(6, 3, bias=False)
    inputs, error = torch.rand(5, 6), torch.randn(5, 3)
    ablation = UnitMagnitude(FeedbackSign(seed=1, output_layers=["out"]))
    assert not ablation.needs_eligibility and ablation.needs_inputs and not ablation.needs_weight_grad
    update = ablation.update(signals(layer, torch.zeros(3, 6), name="out", inputs=inputs), error=error)
    torch.testing.assert_close(update.double(), loop_credit_linear(error, inputs).sign())


def test_plain_readout_writes_the_base_rule_on_hidden_layers_and_the_plain_gradient_on_the_readout():
    """Hidden layer: exactly GradSign's ``sign(dL/dW) * |E|``; read-out: the closed-form cross-entropy gradient of
    the rate read-out, ``(softmax(z) - onehot)^T r / N`` with ``r`` the hidden spike rates (float64 reference)."""
    from ghl_snn import BernoulliEncoder, GradSign, IF, PlainReadout, SpikingNetwork, ThreeFactor

    def run(modulator):
        torch.manual_seed(3)
        net = SpikingNetwork(nn.Linear(8, 16, bias=False), IF(), nn.Linear(16, 3, bias=False))
        with torch.no_grad():
            net[0].weight.mul_(4.0)
        learner = ThreeFactor(net, modulator)
        torch.manual_seed(4)
        x, y = torch.rand(5, 8), torch.tensor([0, 1, 2, 0, 1])
        out = learner.run(x, num_steps=6, encoder=BernoulliEncoder())
        rates = learner.traces["2"].x_bar.detach().double()
        learner.step(loss_fn=lambda logits: F.cross_entropy(logits, y))
        return net, out.detach().double(), rates, y

    hybrid, out, rates, y = run(PlainReadout(GradSign()))
    reference, _, _, _ = run(GradSign())
    torch.testing.assert_close(hybrid[0].weight.grad, reference[0].weight.grad)
    expected = (torch.softmax(out, 1) - F.one_hot(y, 3).double()).t() @ rates / len(y)
    assert rates.shape == (5, 16) and rates.abs().sum() > 0
    torch.testing.assert_close(hybrid[2].weight.grad.double(), expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(hybrid[2].weight.grad, reference[2].weight.grad)
