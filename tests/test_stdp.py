"""Timing rules against brute-force float64 references: every spike pair (pair STDP, all-to-all and nearest-spike),
every pair and triplet (triplet STDP), and a hand-computed closed form for reward-modulated STDP."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ghl_snn import STDP, LIF, Ones, RewardSign, RewardSTDP, ScalarReward, SpikingNetwork, ThreeFactor, TripletSTDP
from ghl_snn.modulators import FeedbackSign, GradSign
from ghl_snn.spiking.neurons import SpikingNeuron

N, IN, OUT, T = 3, 4, 5, 40


def spike_trains(seed: int, rate: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    pre = (torch.rand(T, N, IN, generator=generator, dtype=torch.float64) < rate).double()
    post = (torch.rand(T, N, OUT, generator=generator, dtype=torch.float64) < rate).double()
    return pre, post


def run_rule(rule, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
    state = rule.new_state()
    for t in range(pre.shape[0]):
        rule.step(state, pre[t], post[t], (OUT, IN))
    return state.eligibility


def times(train: torch.Tensor) -> list[int]:
    return [t for t in range(train.shape[0]) if train[t] > 0]


def brute_pair(pre, post, a_plus, a_minus, tau_plus, tau_minus, nearest: bool) -> torch.Tensor:
    result = torch.zeros(OUT, IN, dtype=torch.float64)
    for n in range(N):
        for k in range(OUT):
            for i in range(IN):
                pre_t, post_t = times(pre[:, n, i]), times(post[:, n, k])
                total = 0.0
                if nearest:
                    for tp in post_t:
                        earlier = [t for t in pre_t if t <= tp]
                        if earlier:
                            total += a_plus * math.exp(-(tp - max(earlier)) / tau_plus)
                    for tq in pre_t:
                        earlier = [t for t in post_t if t < tq]
                        if earlier:
                            total -= a_minus * math.exp(-(tq - max(earlier)) / tau_minus)
                else:
                    for tq in pre_t:
                        for tp in post_t:
                            if tp >= tq:
                                total += a_plus * math.exp(-(tp - tq) / tau_plus)
                            else:
                                total -= a_minus * math.exp(-(tq - tp) / tau_minus)
                result[k, i] += total / N
    return result


def brute_triplet(pre, post, rule: TripletSTDP) -> torch.Tensor:
    result = torch.zeros(OUT, IN, dtype=torch.float64)
    for n in range(N):
        for k in range(OUT):
            for i in range(IN):
                pre_t, post_t = times(pre[:, n, i]), times(post[:, n, k])
                total = 0.0
                for tp in post_t:  # potentiation: pairs (pre <= post) and triplets (pre <= post, earlier post)
                    for tq in (t for t in pre_t if t <= tp):
                        pair = math.exp(-(tp - tq) / rule.tau_plus)
                        total += rule.a2_plus * pair
                        for tp2 in (t for t in post_t if t < tp):
                            total += rule.a3_plus * pair * math.exp(-(tp - tp2) / rule.tau_y)
                for tq in pre_t:  # depression: pairs (post < pre) and triplets (post < pre, earlier pre)
                    for tp in (t for t in post_t if t < tq):
                        pair = math.exp(-(tq - tp) / rule.tau_minus)
                        total -= rule.a2_minus * pair
                        for tq2 in (t for t in pre_t if t < tq):
                            total -= rule.a3_minus * pair * math.exp(-(tq - tq2) / rule.tau_x)
                result[k, i] += total / N
    return result


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("interaction", ["all", "nearest"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pair_stdp_matches_every_spike_pair(interaction: str, seed: int) -> None:
    pre, post = spike_trains(seed, rate=0.3)
    rule = STDP(a_plus=0.7, a_minus=0.45, tau_plus=4.0, tau_minus=7.5, interaction=interaction)
    reference = brute_pair(pre, post, 0.7, 0.45, 4.0, 7.5, nearest=interaction == "nearest")
    assert reference.abs().max() > 0.1
    assert relative_error(run_rule(rule, pre, post), reference) <= 1e-10


def test_nearest_differs_from_all_to_all() -> None:
    pre, post = spike_trains(3, rate=0.4)
    assert relative_error(run_rule(STDP(interaction="nearest"), pre, post), run_rule(STDP(), pre, post)) > 0.05


@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_stdp_matches_every_pair_and_triplet(seed: int) -> None:
    pre, post = spike_trains(seed, rate=0.3)
    rule = TripletSTDP(a2_plus=0.3, a3_plus=0.2, a2_minus=0.25, a3_minus=0.15, tau_plus=3.0, tau_minus=5.0,
                       tau_x=9.0, tau_y=11.0)
    reference = brute_triplet(pre, post, rule)
    pairs_only = brute_triplet(pre, post, TripletSTDP(0.3, 0.0, 0.25, 0.0, 3.0, 5.0, 9.0, 11.0))
    assert relative_error(pairs_only, reference) > 0.1  # the triplet terms matter on these trains
    assert relative_error(run_rule(rule, pre, post), reference) <= 1e-10


class Replay(SpikingNeuron):
    """A neuron that emits a given spike train (T, N, out), whatever its input."""

    def __init__(self, train: torch.Tensor) -> None:
        super().__init__()
        self.train, self.t = train, 0

    def reset(self) -> None:
        self.t = 0

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        self.t += 1
        return self.train[self.t - 1].to(current.dtype)


class Sequence:
    """Encoder that presents a given input spike train step by step."""

    def __init__(self, train: torch.Tensor) -> None:
        self.train, self.t = train, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.t += 1
        return self.train[self.t - 1].float()


def replay_learner(pre, post, rule, modulator, readout: bool = False) -> tuple[ThreeFactor, nn.Module]:
    synapse = nn.Linear(pre.shape[-1], post.shape[-1], bias=False)
    modules = [synapse, Replay(post)] + ([nn.Linear(post.shape[-1], 2, bias=False)] if readout else [])
    net = SpikingNetwork(*modules)
    learner = ThreeFactor(net, modulator=modulator, rule=rule, layers=["0"])
    return learner, synapse


def test_learner_feeds_the_rule_every_step_and_ones_gives_unsupervised_stdp() -> None:
    pre, post = spike_trains(4, rate=0.3)
    rule = STDP(a_plus=0.7, a_minus=0.45, tau_plus=4.0, tau_minus=7.5)
    learner, synapse = replay_learner(pre, post, rule, Ones())
    learner.run(torch.zeros(N, IN), T, encoder=Sequence(pre))
    learner.step()
    expected = brute_pair(pre, post, 0.7, 0.45, 4.0, 7.5, nearest=False)
    assert relative_error(learner.eligibility("0").double(), expected) <= 1e-6  # the learner records in float32
    assert relative_error(synapse.weight.grad.double(), -expected) <= 1e-6


def test_timing_rule_needs_a_post_synaptic_neuron() -> None:
    net = SpikingNetwork(nn.Linear(4, 3), LIF(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="drives no spiking neuron"):
        ThreeFactor(net, modulator=Ones(), rule=STDP())
    with pytest.raises(TypeError, match="timing rule"):
        STDP().linear(torch.zeros(1, 4), torch.zeros(1, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="tau_plus"):
        STDP(tau_plus=0.0)


@pytest.mark.parametrize("rule_cls", [STDP, TripletSTDP, RewardSTDP])
def test_timing_rules_run_with_feedback_and_reward_modulators(rule_cls) -> None:
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Linear(6, 5, bias=False), LIF(beta=0.9), nn.Linear(5, 3, bias=False), LIF(beta=0.9))
    nn.init.uniform_(net[0].weight, 0.0, 0.3)
    nn.init.uniform_(net[2].weight, 0.0, 0.3)
    x = torch.rand(8, 6)
    from ghl_snn import BernoulliEncoder
    for modulator, kwargs in [(FeedbackSign(), {"loss_fn": lambda out: out.square().sum()}),
                              (GradSign(), {"loss_fn": lambda out: out.square().sum()}),
                              (RewardSign(), {"reward": torch.ones(8), "action": torch.arange(8) % 3})]:
        learner = ThreeFactor(net, modulator=modulator, rule=rule_cls())
        learner.run(x, 30, encoder=BernoulliEncoder())
        learner.step(**kwargs)
        for name in ("0", "2"):
            eligibility = learner.eligibility(name)
            grad = net[int(name)].weight.grad
            moved = grad != 0
            assert moved.float().mean() > 0.5, (type(modulator).__name__, name, grad)
            torch.testing.assert_close(grad.abs()[moved], eligibility.abs()[moved])  # M ⊙ |E|, M = ±1
        learner.remove()


def test_reward_stdp_closed_form_one_synapse() -> None:
    """One synapse; pre spikes at t = 2, 9, post spikes at t = 4, 5; reward r = 0.8 at the end of T = 12 steps;
    W <- W + eta (r - b) E_T with b = 0 (Florian's MSTDPET).  By hand:
    pairs (t_pre, t_post): (2, 4) +A+ e^{-2/tp}, (2, 5) +A+ e^{-3/tp}, (9, 4) -A- e^{-5/tm}, (9, 5) -A- e^{-4/tm};
    each pair enters the trace at the later spike's step s and decays to the end: times lambda^{11 - s}."""
    a_plus, a_minus, tau_plus, tau_minus, tau_e, eta, reward = 1.2, 0.9, 3.0, 5.0, 6.0, 0.05, 0.8
    lam = math.exp(-1 / tau_e)
    expected_e = (a_plus * math.exp(-2 / tau_plus) * lam ** (11 - 4)
                  + a_plus * math.exp(-3 / tau_plus) * lam ** (11 - 5)
                  - (a_minus * math.exp(-5 / tau_minus) + a_minus * math.exp(-4 / tau_minus)) * lam ** (11 - 9))
    expected_dw = eta * reward * expected_e
    pre = torch.zeros(12, 1, 1, dtype=torch.float64)
    post = torch.zeros(12, 1, 1, dtype=torch.float64)
    pre[[2, 9]] = 1.0
    post[[4, 5]] = 1.0
    rule = RewardSTDP(tau_e=tau_e, a_plus=a_plus, a_minus=a_minus, tau_plus=tau_plus, tau_minus=tau_minus)
    state = rule.new_state()
    for t in range(12):
        rule.step(state, pre[t], post[t], (1, 1))
    assert abs(float(state.eligibility) - expected_e) <= 1e-12 * abs(expected_e)
    # the same through the spiking learner, the reward modulator and an SGD step
    learner, synapse = replay_learner(pre, post, rule, ScalarReward())
    with torch.no_grad():
        synapse.weight.fill_(0.25)
    optimizer = torch.optim.SGD(synapse.parameters(), lr=eta)
    learner.run(torch.zeros(1, 1), 12, encoder=Sequence(pre))
    learner.step(reward=reward)
    optimizer.step()
    assert abs(float(synapse.weight) - 0.25 - expected_dw) <= 1e-5 * abs(expected_dw)  # float32 weight


def test_scalar_reward_baseline_and_errors() -> None:
    modulator = ScalarReward(momentum=0.5)
    learner_signals = __import__("ghl_snn").LayerSignals(name="a", module=nn.Linear(1, 1),
                                                         eligibility=torch.tensor([[2.0]]))
    modulator.begin_step(__import__("ghl_snn").StepContext(step=1))
    torch.testing.assert_close(modulator.update(learner_signals, reward=1.0), torch.tensor([[-2.0]]))
    torch.testing.assert_close(modulator.update(learner_signals, reward=1.0), torch.tensor([[-2.0]]))  # same step
    modulator.begin_step(__import__("ghl_snn").StepContext(step=2))  # the baseline moves once per update
    torch.testing.assert_close(modulator.update(learner_signals, reward=1.0), torch.tensor([[-1.0]]))  # b = 0.5
    with pytest.raises(RuntimeError, match="reward"):
        modulator.update(learner_signals)
    with pytest.raises(ValueError, match="finite"):
        modulator.update(learner_signals, reward=float("nan"))
