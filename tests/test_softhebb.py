"""SoftHebb baseline: float64 loop reference of the update, norm-dependent learning rate, Triangle, trainer."""
import math

import pytest
import torch
from torch import nn

from ghl_snn.models.vgg import PlainCNN
from ghl_snn.learners.softhebb import SoftHebbLearner, train_softhebb
from ghl_snn.models.activations import Triangle
from ghl_snn.rules.softhebb import (SoftHebb, hpca_conv2d, hpca_linear, norm_learning_rate, softhebb_conv2d,
                                    softhebb_linear)


def loop_reference_conv(x, weight, tau, padding):
    """E_ik = mean_n sum_pos s_k softmax_k(u/tau) (x_i - u_k w_ik), with explicit loops (float64)."""
    n, c, h, w = x.shape
    k_out, _, kh, kw = weight.shape
    xp = torch.nn.functional.pad(x, (padding,) * 4)
    oh, ow = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    out = torch.zeros_like(weight)
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                patch = xp[b, :, i:i + kh, j:j + kw]
                u = torch.stack([(weight[k] * patch).sum() for k in range(k_out)])
                soft = [math.exp(u[k].item() / tau) for k in range(k_out)]
                total = sum(soft)
                winner = int(u.argmax())
                for k in range(k_out):
                    y = soft[k] / total * (1.0 if k == winner else -1.0)
                    out[k] += y * (patch - u[k] * weight[k])
    return out / n


def test_conv_update_matches_float64_loop_reference():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 3, 3, generator=generator, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, generator=generator, dtype=torch.float64) * 0.5
    u = torch.nn.functional.conv2d(x, weight, padding=1)
    got = softhebb_conv2d(x, u, weight, tau=0.7, padding=(1, 1))
    torch.testing.assert_close(got, loop_reference_conv(x, weight, 0.7, 1), rtol=1e-10, atol=1e-12)


def test_linear_update_matches_loop_and_non_winners_are_anti_hebbian():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    weight = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    u = x @ weight.t()
    expected = torch.zeros_like(weight)
    for n in range(5):
        soft = torch.softmax(u[n] / 2.0, dim=0)
        for k in range(3):
            sign = 1.0 if k == int(u[n].argmax()) else -1.0
            for i in range(4):
                expected[k, i] += sign * soft[k] * (x[n, i] - u[n, k] * weight[k, i])
    got = softhebb_linear(x, u, weight, tau=2.0)
    torch.testing.assert_close(got, expected / 5, rtol=1e-10, atol=1e-12)
    # one sample, the loser's Hebbian term points away from the input
    single = softhebb_linear(x[:1], u[:1], torch.zeros_like(weight), tau=2.0)
    loser = [k for k in range(3) if k != int(u[0].argmax())][0]
    assert (single[loser] * x[0]).sum() < 0 < (single[int(u[0].argmax())] * x[0]).sum()


def test_norm_learning_rate_vanishes_on_unit_sphere():
    weight = torch.tensor([[0.6, 0.8], [3.0, 4.0]])
    factor = norm_learning_rate(weight, power=0.5).flatten()
    assert factor[0] < 1e-6 and factor[1] == pytest.approx(2.0)


def test_triangle_activation():
    x = torch.tensor([[1.0, 2.0, 6.0]]).view(1, 3, 1, 1)
    assert Triangle()(x).flatten().tolist() == pytest.approx([0.0, 0.0, 3.0])
    assert Triangle(power=2.0)(x).flatten().tolist() == pytest.approx([0.0, 0.0, 9.0])


def test_learner_moves_weights_along_norm_scaled_eligibility():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3, bias=False)
    model = nn.Sequential(layer)
    before = layer.weight.detach().clone()
    x = torch.randn(6, 4)
    learner = SoftHebbLearner(model, {"0": 1.0}, lr=0.1)
    model(x)
    learner.step()
    eligibility = SoftHebb(1.0, normalize=None).linear(x, x @ before.t(), before)
    eligibility = eligibility / eligibility.abs().max()
    expected = before + 0.1 * norm_learning_rate(before) * eligibility
    torch.testing.assert_close(layer.weight.detach(), expected)
    assert layer.weight.grad is None


def test_layerwise_protocol_trains_convs_without_labels_then_only_the_classifier():
    torch.manual_seed(0)
    model = PlainCNN(num_classes=2, width=1 / 24, depth=2, growth=2)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    convs = model.plastic_taus
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    seen_epochs = []

    def batches(epoch):
        seen_epochs.append(epoch)
        yield images, labels

    history = train_softhebb(model, convs, batches, classifier_epochs=1)
    assert [row["phase"] for row in history] == [f"hebb:{n}" for n in convs] + ["classifier"]
    assert seen_epochs == [0, 1, 2]
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, start[name])}
    assert changed == {f"{n}.weight" for n in convs} | {"classifier.2.weight", "classifier.2.bias"}
    assert all(p.requires_grad for p in model.parameters())


def test_fig2_softhebb_preset_runs_through_the_cifar_harness(tmp_path):
    from dataclasses import replace

    from ghl_snn.datasets.cifar import ImageData
    from ghl_snn.experiments import cifar

    generator = torch.Generator().manual_seed(0)
    data = ImageData(torch.randint(0, 256, (8, 3, 32, 32), generator=generator, dtype=torch.uint8),
                     torch.arange(8) % 2, ["a", "b"])
    preset = replace(cifar.PRESETS["fig2-d2-x2-triangle-softhebb"], width=1 / 24, epochs=1, batch_size=4)
    results = cifar.run_method("softhebb", preset, data, data, 0, tmp_path, torch.device("cpu"))
    assert 0.0 <= results["final_test_acc"] <= 1.0
    assert [row["phase"] for row in results["phases"]] == ["hebb:features.1", "hebb:features.5", "classifier"]
    assert (tmp_path / "results.json").is_file() and (tmp_path / "config.json").is_file()


def test_hpca_matches_sanger_loop_reference():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    weight = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    y = x @ weight.t()
    expected = torch.zeros_like(weight)
    for n in range(4):
        for k in range(2):
            for i in range(3):
                expected[k, i] += y[n, k] * (x[n, i] - sum(y[n, j] * weight[j, i] for j in range(k + 1)))
    torch.testing.assert_close(hpca_linear(x, y, weight), expected / 4, rtol=1e-10, atol=1e-12)
    # conv with a 1x1 kernel on a 1x1 map is the linear case
    conv = hpca_conv2d(x[:, :, None, None], y[:, :, None, None], weight[:, :, None, None])
    torch.testing.assert_close(conv[:, :, 0, 0], expected / 4, rtol=1e-10, atol=1e-12)
