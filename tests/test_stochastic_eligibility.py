"""Stochastic eligibility (``GHL(..., eligibility_fraction=f)``): unbiased for the batch-mean E, exact at f = 1."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, swta_oja
from ghl_snn.rules import batch_subset
from ghl_snn.rules.stochastic import subset_size


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))


def per_sample_eligibilities(model, x, tau):
    """float64 reference: the SWTA-Oja E of every sample on its own (GHL Eq. 4), one sample at a time."""
    conv, linear = model[0].double(), model[3].double()
    conv_e, linear_e = [], []
    with torch.no_grad():
        for sample in x.double():
            sample = sample[None]
            hidden = conv(sample)
            conv_e.append(swta_oja(sample, hidden - conv.bias.view(1, -1, 1, 1), conv.weight, tau, padding=1))
            flat = F.relu(hidden).flatten(1)
            linear_e.append(swta_oja(flat, flat @ linear.weight.t(), linear.weight, tau))
    model.float()
    return {"0": torch.stack(conv_e), "3": torch.stack(linear_e)}


def test_subset_estimate_is_unbiased_with_the_finite_population_variance():
    model = small_net()
    torch.manual_seed(1)
    x = torch.randn(8, 3, 5, 5)
    batch, fraction, draws = x.shape[0], 0.25, 2000
    m = subset_size(batch, fraction)
    assert m == 2
    per_sample = per_sample_eligibilities(model, x, tau=0.7)
    rule = GHL(model, tau=0.7, eligibility_fraction=fraction)
    samples = {name: [] for name in per_sample}
    torch.manual_seed(2)
    for _ in range(draws):
        model(x)
        for name in samples:
            samples[name].append(rule.eligibility(name).double())
        rule.clear()
    for name, e_n in per_sample.items():
        exact = e_n.mean(dim=0)
        # variance of the mean of m of the N per-sample terms drawn without replacement (closed form)
        theory_var = e_n.var(dim=0, unbiased=False) / m * (batch - m) / (batch - 1)
        draws_t = torch.stack(samples[name])
        standard_error = (theory_var / draws).sqrt()
        error = (draws_t.mean(dim=0) - exact).abs()
        assert (error <= 5 * standard_error + 1e-6).all(), f"{name}: max z = {(error / standard_error).max():.2f}"
        # the spread matches sampling *without* replacement (with replacement would be (N-1)/(N-m) = 7/6 larger)
        ratio = (draws_t.var(dim=0) / theory_var).mean().item()
        assert 0.9 < ratio < 1.1, f"{name}: empirical / theoretical variance {ratio:.3f}"
        # the criterion has power: a fixed subset (the first m samples) is biased and is rejected
        biased = e_n[:m].mean(dim=0)
        assert ((biased - exact).abs() > 5 * standard_error + 1e-6).any()


def test_fraction_one_is_bit_identical_to_the_exact_rule_and_draws_nothing():
    model_a = small_net()
    model_b = copy.deepcopy(model_a)
    rule_a, rule_b = GHL(model_a, tau=0.8), GHL(model_b, tau=0.8, eligibility_fraction=1.0)
    torch.manual_seed(3)
    x, target = torch.randn(6, 3, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    for model, rule in ((model_a, rule_a), (model_b, rule_b)):
        state = torch.get_rng_state()
        F.cross_entropy(model(x), target).backward()
        rule.step()
        assert torch.equal(torch.get_rng_state(), state)
    for layer in ("0", "3"):
        assert torch.equal(model_a.get_submodule(layer).weight.grad, model_b.get_submodule(layer).weight.grad)


def test_fraction_below_one_changes_the_update_but_keeps_sign_and_normalisation():
    model = small_net()
    reference = copy.deepcopy(model)
    rule, exact = GHL(model, eligibility_fraction=0.5), GHL(reference)
    torch.manual_seed(4)
    x, target = torch.randn(8, 3, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for net, ghl in ((model, rule), (reference, exact)):
        F.cross_entropy(net(x), target).backward()
        backprop_sign = net[0].weight.grad.sign().clone()
        ghl.step()
        grad = net[0].weight.grad
        assert grad.abs().max().item() == pytest.approx(1.0)  # max-normalisation after the estimate
        assert torch.equal(grad.sign()[grad != 0], backprop_sign[grad != 0])
    assert not torch.allclose(model[0].weight.grad, reference[0].weight.grad)


def test_batch_subset_keeps_pairs_and_draws_distinct_samples():
    x = torch.arange(64.0)[:, None].expand(64, 5)
    y = 3 * x[:, :2]
    torch.manual_seed(5)
    sub_x, sub_y = batch_subset(x, y, 0.25)
    assert sub_x.shape == (16, 5) and sub_y.shape == (16, 2)
    assert torch.equal(sub_y, 3 * sub_x[:, :2])  # rows stay paired
    assert len(set(sub_x[:, 0].tolist())) == 16  # without replacement
    assert subset_size(10, 0.01) == 1 and subset_size(30, 0.1) == 3 and subset_size(7, 0.5) == math.ceil(3.5)
    same_x, same_y = batch_subset(x, y, 1.0)
    assert same_x is x and same_y is y


@pytest.mark.parametrize("fraction", [0, -0.25, 1.5, float("nan"), float("inf"), "0.5", True, None])
def test_invalid_fraction_is_one_clear_error(fraction):
    with pytest.raises(ValueError, match="eligibility_fraction"):
        GHL(small_net(), eligibility_fraction=fraction)


def test_cifar_harness_passes_the_fraction_to_the_rule():
    from ghl_snn.experiments.cifar import build_parser, build_rule
    from ghl_snn.models import DeepHebb

    args = build_parser().parse_args(["--eligibility-fraction", "0.25"])
    assert args.eligibility_fraction == 0.25
    rule = build_rule("ghl", DeepHebb(width=0.0625), args.eligibility_fraction)
    assert rule.eligibility_fraction == 0.25
    assert build_rule("bp", DeepHebb(width=0.0625), 0.25) is None


@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_projections_draw_whole_samples(batch_first):
    """On attention projections the subset is one of samples, each with all its tokens: every draw's E equals the
    mean of the per-sample E of some pair of the 4 samples (each sample's E from a forward of that sample alone),
    and the draws cover all 6 pairs."""
    torch.manual_seed(9)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    x = torch.randn(4, 3, 8) if batch_first else torch.randn(3, 4, 8)
    sample_dim = 0 if batch_first else 1
    exact = GHL(copy.deepcopy(mha))
    per_sample = []
    for n in range(4):
        sample = x.narrow(sample_dim, n, 1)
        exact.model(sample, sample, sample)
        per_sample.append({name: exact.eligibility(name).double() for name in exact.synapses})
        exact.clear()
    pairs = {(a, b): {name: (per_sample[a][name] + per_sample[b][name]) / 2 for name in exact.synapses}
             for a in range(4) for b in range(a + 1, 4)}
    rule = GHL(mha, eligibility_fraction=0.5)
    seen = set()
    torch.manual_seed(10)
    for _ in range(60):
        mha(x, x, x)
        drawn = {name: rule.eligibility(name).double() for name in rule.synapses}
        rule.clear()
        # the in- and output projections draw their own subsets: match each against the pair means
        for name, value in drawn.items():
            matches = [pair for pair, means in pairs.items()
                       if torch.allclose(value, means[name], rtol=1e-4, atol=1e-6)]
            assert len(matches) == 1, name
            seen.add(matches[0])
    assert seen == set(pairs)
