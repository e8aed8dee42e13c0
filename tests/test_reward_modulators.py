"""Reward modulators (Q-AGREL's attention-gated credit with and without the sign) and action selection, against
float64 loops, autograd of the chosen unit's squared reward-prediction error, and closed-form probabilities."""
import pytest
import torch
from torch import nn

from ghl_snn import (IF, AttentionGatedReward, BernoulliEncoder, LayerSignals, RewardSign, SpikingNetwork,
                     ThreeFactor, boltzmann_actions, choose_actions)

pytestmark = pytest.mark.usefixtures("one_thread")


def small_network(seed=0, inputs=7, hidden=6, outputs=4):
    torch.manual_seed(seed)
    net = SpikingNetwork(nn.Linear(inputs, hidden, bias=False), IF(), nn.Linear(hidden, outputs, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    return net


def window(net, modulator, batch=5, steps=30, seed=1):
    """One presentation window of a learner with ``modulator``; returns the learner, its read-out and the traces."""
    learner = ThreeFactor(net, modulator=modulator)
    torch.manual_seed(seed)
    x = torch.rand(batch, net[0].in_features)
    readout = learner.run(x, steps, BernoulliEncoder())
    return learner, readout


def loop_hidden_credit(net, learner, action, rpe, tag_of):
    """Float64 loops: C_ki = sum_n -RPE_n tag_nk x_ni / N, x = the input trace, tag given per (n, k)."""
    x = learner.traces["0"].x_bar.double()
    n_samples, inputs = x.shape
    hidden = net[0].out_features
    credit = torch.zeros(hidden, inputs, dtype=torch.float64)
    for n in range(n_samples):
        for k in range(hidden):
            for i in range(inputs):
                credit[k, i] += -float(rpe[n]) * tag_of(n, k) * float(x[n, i]) / n_samples
    return credit


def if_slope(current):
    """Closed-form slope of the IF f-I curve clamp(I / theta, 0, 1), theta = 1: 1 inside (0, 1), else 0."""
    return 1.0 if 0.0 < current < 1.0 else 0.0


def test_forward_feedback_credit_is_the_gradient_of_the_chosen_units_squared_rpe():
    """Greedy choice, tag through the transposed forward weights: the hidden credit equals (a) the float64 loop
    -RPE_n W_out[a_n, k] f'(I_nk) x_ni / N and (b) autograd's gradient of mean_n (r_n - Q_n,a)^2 / 2 in a float64
    rate network at the observed means; the read-out's credit is -RPE_n onehot(a_n) h_n / N."""
    net = small_network()
    learner, readout = window(net, AttentionGatedReward(feedback="forward"))
    action = choose_actions(readout, epsilon=0.0)
    reward = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    learner.step(reward=reward, action=action)
    rpe = reward - readout.gather(1, action[:, None]).squeeze(1)
    current = net.mean_outputs["0"].double()
    w_out = net[2].weight.detach().double()

    loop = loop_hidden_credit(net, learner, action, rpe,
                              lambda n, k: float(w_out[action[n], k]) * if_slope(float(current[n, k])))
    torch.testing.assert_close(net[0].weight.grad.double(), loop, rtol=1e-5, atol=1e-7)

    w_in = net[0].weight.detach().double().requires_grad_(True)
    w_out_leaf = net[2].weight.detach().double().requires_grad_(True)
    x = learner.traces["0"].x_bar.double()
    hidden_current = x @ w_in.t()
    rate = hidden_current.clamp(0.0, 1.0)  # the IF f-I curve, theta = 1
    hidden = net.mean_outputs["1"].double() + rate - rate.detach()  # observed rates, f-I slope (straight-through)
    q = (hidden @ w_out_leaf.t()).gather(1, action[:, None]).squeeze(1)
    loss = 0.5 * ((reward.double() - q) ** 2).mean()
    grad_in, grad_out = torch.autograd.grad(loss, [w_in, w_out_leaf])
    torch.testing.assert_close(net[0].weight.grad.double(), grad_in, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(net[2].weight.grad.double(), grad_out, rtol=1e-5, atol=1e-7)
    assert net[0].weight.grad.abs().sum() > 0


def test_reward_sign_is_the_sign_of_the_same_credit_times_abs_e():
    net = small_network(seed=2)
    modulator = RewardSign(feedback="forward")
    learner, readout = window(net, modulator, seed=3)
    action = choose_actions(readout, epsilon=0.0)
    reward = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    learner.step(reward=reward, action=action)
    sign_update = net[0].weight.grad.clone()
    plain = AttentionGatedReward(feedback="forward")
    learner.modulator = plain
    learner.step(reward=reward, action=action)
    eligibility = learner.eligibility("0", normalized=True)
    torch.testing.assert_close(sign_update, net[0].weight.grad.sign() * eligibility.abs())


def test_random_feedback_tags_hidden_neurons_through_b():
    net = small_network(seed=4)
    modulator = AttentionGatedReward(feedback="random", seed=3)
    learner, readout = window(net, modulator, seed=5)
    action = torch.tensor([0, 3, 3, 1, 2])
    reward = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    learner.step(reward=reward, action=action)
    rpe = reward - readout.gather(1, action[:, None]).squeeze(1)
    current = net.mean_outputs["0"].double()
    b = modulator.matrices["0"].double()
    loop = loop_hidden_credit(net, learner, action, rpe,
                              lambda n, k: float(b[k, action[n]]) * if_slope(float(current[n, k])))
    torch.testing.assert_close(net[0].weight.grad.double(), loop, rtol=1e-5, atol=1e-7)


def test_learned_feedback_takes_the_readouts_local_step():
    """B_ka <- (1 - decay) B_ka - lr C_out[a, k] (C_out: the read-out's credit of the same step); the next step's
    hidden tag uses the updated B."""
    net = small_network(seed=6)
    modulator = AttentionGatedReward(feedback="learned", seed=1, feedback_lr=0.5, feedback_decay=0.1)
    learner, readout = window(net, modulator, seed=7)
    b_before = modulator.matrices.get("0")
    assert b_before is None  # drawn at the first update
    action = torch.tensor([2, 2, 0, 1, 3])
    reward = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    # the same B as feedback="random" with this seed, before the update
    reference = AttentionGatedReward(feedback="random", seed=1)
    drawn = reference.feedback_matrix("0", 6, 4).double()
    learner.step(reward=reward, action=action)
    rpe = reward - readout.gather(1, action[:, None]).squeeze(1)
    h = learner.traces["2"].x_bar.double()
    readout_credit = torch.zeros(4, 6, dtype=torch.float64)
    for n in range(5):
        for k in range(6):
            readout_credit[action[n], k] += -float(rpe[n]) * float(h[n, k]) / 5
    torch.testing.assert_close(net[2].weight.grad.double(), readout_credit, rtol=1e-5, atol=1e-7)
    expected = 0.9 * drawn - 0.5 * readout_credit.t()
    torch.testing.assert_close(modulator.matrices["0"].double(), expected, rtol=1e-5, atol=1e-7)


def test_reward_rules_reject_bad_input():
    net = small_network()
    learner, readout = window(net, AttentionGatedReward())
    with pytest.raises(RuntimeError, match="reward"):
        learner.step()
    with pytest.raises(FloatingPointError, match="reward"):  # the learner's guard, before the modulator
        learner.step(reward=torch.tensor([float("nan")] * 5), action=torch.zeros(5, dtype=torch.long))
    layer = LayerSignals(name="x", module=nn.Linear(3, 2), eligibility=torch.ones(2, 3), inputs=torch.ones(4, 3),
                         is_output=True)
    with pytest.raises(ValueError, match="non-finite reward"):  # the modulator itself, used directly
        AttentionGatedReward().update(layer, reward=torch.full((4,), float("nan")),
                                      action=torch.zeros(4, dtype=torch.long), value=torch.zeros(4), num_outputs=2)
    with pytest.raises(ValueError, match="rewards for"):
        learner.step(reward=torch.ones(3), action=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="feedback"):
        AttentionGatedReward(feedback="symmetric")
    layer = LayerSignals(name="x", module=nn.Linear(3, 2), eligibility=torch.ones(2, 3), inputs=torch.ones(4, 3))
    with pytest.raises(RuntimeError, match="rate surrogate"):
        AttentionGatedReward().update(layer, reward=torch.ones(4), action=torch.zeros(4, dtype=torch.long),
                                      value=torch.zeros(4), num_outputs=3)


def test_boltzmann_choice_follows_the_softmax_probabilities():
    readout = torch.tensor([[0.0, 0.2, 0.1, -0.3]]).expand(20000, 4)
    generator = torch.Generator().manual_seed(0)
    actions = boltzmann_actions(readout, temperature=0.1, generator=generator)
    counts = torch.bincount(actions, minlength=4).double() / 20000
    expected = torch.exp(torch.tensor([0.0, 2.0, 1.0, -3.0], dtype=torch.float64))
    expected /= expected.sum()
    torch.testing.assert_close(counts, expected, atol=0.012, rtol=0)  # > 4 binomial standard deviations
    cold = boltzmann_actions(readout[:50], temperature=1e-4)
    assert torch.equal(cold, torch.ones(50, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        boltzmann_actions(readout, temperature=0.0)
    with pytest.raises(ValueError, match="read-out"):
        choose_actions(torch.zeros(5), epsilon=0.1)
