"""Delayed reward: per-stream synaptic tags decaying by lambda per step, against a closed form computed by hand."""
import math

import pytest
import torch
from torch import nn

from ghl_snn import IF, AttentionGatedReward, BernoulliEncoder, SpikingNetwork, ThreeFactor
from ghl_snn.modulators.actions import choose_actions
from ghl_snn.spiking.delayed_reward import DelayedReward, TagRecorder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_one_synapse_weight_change_by_hand():
    """One synapse, windows of T = 4 steps with given presynaptic spike trains and tags, reward delay D = 6,
    lambda = 0.8.  The reward of window 0 (ends at step 4) arrives at step 10, inside window 2 (steps 9-12), and
    sees E_10 = lambda^6 tag_0 x_0 + lambda^2 tag_1 x_1; the reward of window 1 arrives at step 14 and sees
    lambda^10 tag_0 x_0 + lambda^6 tag_1 x_1 + lambda^2 tag_2 x_2.  dW = -eta * grad, grad = -RPE * E."""
    spikes = [[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1], [0, 1, 0, 0]]
    tags = [0.5, -1.0, 2.0, 0.3]
    rpes = [0.7, -0.3, 1.0, 0.2]
    lam, delay, window, eta = 0.8, 6, 4, 0.1
    delayed = DelayedReward(lam, delay, window)
    weight = 0.0
    credits_per_window = []
    for spike_train, tag, rpe in zip(spikes, tags, rpes):
        x = sum(spike_train) / window  # the window-mean presynaptic trace
        credits = delayed.end_window({"w": (torch.tensor([[tag]]), torch.tensor([[x]]))}, torch.tensor([rpe]))
        credits_per_window.append(len(credits))
        for credit in credits:
            weight -= eta * float(credit["w"])
    x = [sum(s) / window for s in spikes]
    e = [t * xi for t, xi in zip(tags, x)]  # tag x presynaptic trace, added at steps 4, 8, 12, 16
    by_hand = eta * (rpes[0] * (lam ** 6 * e[0] + lam ** 2 * e[1])
                     + rpes[1] * (lam ** 10 * e[0] + lam ** 6 * e[1] + lam ** 2 * e[2]))
    assert credits_per_window == [0, 0, 1, 1]
    assert weight == pytest.approx(by_hand, rel=1e-6)
    # a delay that is a multiple of the window: the reward arrives together with a later window's tag
    same_step = DelayedReward(0.5, 4, 4)
    assert same_step.end_window({"w": (torch.tensor([[1.0]]), torch.tensor([[1.0]]))}, torch.tensor([1.0])) == []
    (credit,) = same_step.end_window({"w": (torch.tensor([[3.0]]), torch.tensor([[1.0]]))}, torch.tensor([2.0]))
    assert float(credit["w"]) == pytest.approx(-1.0 * (0.5 ** 4 * 1.0 + 3.0))  # window 0's reward (RPE 1)


def test_trials_wait_for_the_reward_by_hand():
    """Trial protocol (T = 4, D = 6, lambda = 0.8): trial 0 is tagged at step 4, its reward arrives at step 10
    during advance(6) and sees lambda^6 e_0; trial 1 is tagged at step 14, its reward at step 20 sees
    lambda^6 e_1 + lambda^16 e_0."""
    lam, delay, window = 0.8, 6, 4
    delayed = DelayedReward(lam, delay, window)
    spikes, tags, rpes = [[1, 1, 0, 1], [0, 1, 0, 0]], [1.5, -0.5], [0.4, -0.9]
    credits = []
    for spike_train, tag, rpe in zip(spikes, tags, rpes):
        x = sum(spike_train) / window
        credits += delayed.end_window({"w": (torch.tensor([[tag]]), torch.tensor([[x]]))}, torch.tensor([rpe]))
        credits += delayed.advance(delay)
    e = [t * sum(s) / window for t, s in zip(tags, spikes)]
    expected = [-rpes[0] * lam ** 6 * e[0], -rpes[1] * (lam ** 6 * e[1] + lam ** 16 * e[0])]
    assert [float(c["w"]) for c in credits] == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="steps"):
        delayed.advance(-1)


def test_no_delay_and_no_trace_is_the_immediate_attention_gated_update():
    """D = 0, lambda = 0: the credit is exactly AttentionGatedReward's update of the same window."""
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(8, 6, bias=False), IF(), nn.Linear(6, 3, bias=False))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    recorder = TagRecorder()
    learner = ThreeFactor(net, modulator=recorder)
    readout = learner.run(torch.rand(5, 8), 20, BernoulliEncoder())
    action = choose_actions(readout, 0.0)
    reward = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    learner.step(action=action, reward=reward)
    rpe = reward - readout.gather(1, action[:, None]).squeeze(1)
    (credit,) = DelayedReward(0.0, 0, 20).end_window(recorder.tags, rpe)
    learner.modulator = AttentionGatedReward()
    learner.step(action=action, reward=reward)
    torch.testing.assert_close(credit["0"], net[0].weight.grad)
    torch.testing.assert_close(credit["2"], net[2].weight.grad)
    assert not torch.equal(net[0].weight.grad, torch.zeros_like(net[0].weight.grad))


def test_each_stream_keeps_its_own_tag():
    """Two streams: stream 0's reward credits only stream 0's tag (no mixing across the batch)."""
    delayed = DelayedReward(1.0, 0, 1)
    tag = torch.tensor([[1.0], [5.0]])
    pre = torch.tensor([[2.0], [3.0]])
    (credit,) = delayed.end_window({"w": (tag, pre)}, torch.tensor([1.0, 0.0]))
    assert float(credit["w"]) == pytest.approx(-(1.0 * 1.0 * 2.0) / 2)


def test_delayed_reward_rejects_bad_input():
    with pytest.raises(ValueError, match="decay"):
        DelayedReward(1.5, 0, 10)
    with pytest.raises(ValueError, match="delay"):
        DelayedReward(0.5, -1, 10)
    with pytest.raises(ValueError, match="window"):
        DelayedReward(0.5, 1, 0)
    delayed = DelayedReward(0.5, 1, 10)
    with pytest.raises(ValueError, match="non-finite"):
        delayed.end_window({}, torch.tensor([math.nan]))
    with pytest.raises(ValueError, match="streams"):
        delayed.end_window({"w": (torch.ones(2, 3), torch.ones(2, 4))}, torch.ones(3))
