"""The paper's model zoo (Tables 2-4, Fig. 2): architecture facts, which layers are plastic, one GHL step per preset."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, swta_oja
from ghl_snn.experiments import cifar, cifar_presets, imagenet
from ghl_snn.models import MODELS
from ghl_snn.models.imagenet import IMAGENET_MODELS
from ghl_snn.models.resnet_cifar import ResNetCIFAR, ShortcutA


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def test_resnet_cifar_depths_and_parameter_counts_match_he_et_al():
    # He et al. 2016 Table 6 / GHL Table 4 (millions): 0.27, 0.46, 0.66, 0.85, 1.7
    expected = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.73}
    for depth, millions in expected.items():
        model = ResNetCIFAR(depth)
        assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.006)
        weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(weighted) == depth  # 6n + 1 convolutions + 1 classifier
    model = ResNetCIFAR(20)
    assert [m.out_channels for m in (model.layer1[0].conv1, model.layer2[0].conv1, model.layer3[0].conv1)] == \
        [16, 32, 64]
    assert isinstance(model.layer2[0].shortcut, ShortcutA) and isinstance(model.layer1[0].shortcut, nn.Identity)
    x = torch.randn(1, 16, 8, 8)
    out = ShortcutA(16, 32, 2)(x)
    assert out.shape == (1, 32, 4, 4) and torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
    with pytest.raises(ValueError, match="6n"):
        ResNetCIFAR(21)


def count_on_meta(build) -> float:
    """Parameter count in millions, built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters()) / 1e6


def test_vgg_parameter_counts_match_table4():
    assert count_on_meta(MODELS["vgg16"]) == pytest.approx(33.63, abs=0.03)
    assert count_on_meta(MODELS["vgg14"]) == pytest.approx(14.71, abs=0.03)
    with torch.device("meta"):
        vgg14 = MODELS["vgg14"]()
    assert len(vgg14.plastic_taus) == 13 and len(MODELS["vgg16"](width=0.1).plastic_taus) == 15


def test_resnet20_ghl_step_rewrites_only_the_convolutions():
    torch.manual_seed(0)
    model = MODELS["resnet20"]()
    reference = MODELS["resnet20"]()
    reference.load_state_dict(model.state_dict())
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    F.cross_entropy(reference(images), labels).backward()
    rule = cifar.build_rule("ghl", model)
    assert set(rule.layers) == {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert len(rule.layers) == 19 and "fc" not in rule.layers
    F.cross_entropy(model(images), labels).backward()
    rule.step()
    bp = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        module_name = name.rsplit(".", 1)[0]
        if module_name in rule.layers:
            grad, bp_grad = param.grad, bp[name].grad
            assert not torch.allclose(grad, bp_grad), name
            assert grad.abs().max() == pytest.approx(1.0)  # max-normalised |E|
            nonzero = (bp_grad != 0) & (grad != 0)
            assert torch.equal(grad[nonzero].sign(), bp_grad[nonzero].sign()), name
        else:  # classifier, BatchNorm: untouched back-propagated gradients
            torch.testing.assert_close(param.grad, bp[name].grad, rtol=0, atol=0)
    # the stem's magnitude is exactly the SWTA-Oja eligibility of its input (GHL Eq. 4-6)
    expected = swta_oja(images, F.conv2d(images, model.conv1.weight, padding=1), model.conv1.weight.detach(),
                        tau=1.0, padding=1, normalize="max")
    torch.testing.assert_close(model.conv1.weight.grad.abs(), expected.abs(), rtol=1e-4, atol=1e-6)


def test_resnet1202_parameter_count():
    model = ResNetCIFAR(1202)  # (built on CPU: the meta device is slower for 2,400 small modules)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(19.4, abs=0.05)
    assert len(model.plastic_taus) == 1201


def _ghl_step(model: nn.Module, size: int, classes: int) -> None:
    """Forward, backward and ``rule.step()``: every plastic weight's ``.grad`` becomes ``M ⊙ |E|``, max |.| = 1."""
    taus = model.plastic_taus
    rule = GHL(model, tau=taus, layers=list(taus))
    F.cross_entropy(model(torch.randn(2, 3, size, size)), torch.tensor([0, classes - 1])).backward()
    bp_signs = {name: model.get_submodule(name).weight.grad.sign() for name in taus}
    rule.step()
    for name in taus:
        grad = model.get_submodule(name).weight.grad  # was dL/dW, now sign(dL/dW) * |E| / max|E|
        assert torch.isfinite(grad).all() and 0 < grad.abs().max() <= 1.0 + 1e-6, name
        assert torch.equal(grad.sign(), bp_signs[name] * (grad != 0)), name


# the deepest CIFAR ResNet is only counted (above); ResNet-110 gets the step instead.  Every network keeps its
# depth; widths are cut (ResNets 1/4: 4/8/16 channels, others 1/16) to keep the suite light on a shared CPU.
CIFAR_PRESET_MODELS = sorted({p.model for p in cifar.PRESETS.values()} - {"resnet1202"})


@pytest.mark.parametrize("name", CIFAR_PRESET_MODELS)
def test_every_cifar_preset_model_takes_a_ghl_step(name):
    torch.manual_seed(0)
    width = 0.25 if name.startswith("resnet") else 1 / 16
    model = MODELS[name](num_classes=10, width=width)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    _ghl_step(model, 32, 10)


@pytest.mark.parametrize("name", sorted(IMAGENET_MODELS))
def test_every_imagenet_model_takes_a_ghl_step(name):
    torch.manual_seed(0)
    model = IMAGENET_MODELS[name](num_classes=3, width=1.0 if name.startswith("resnet") else 1 / 16)
    assert "fc" not in model.plastic_taus and "classifier.6" not in model.plastic_taus
    _ghl_step(model, 16 if name.startswith("resnet") else 32, 3)  # torchvision ResNets: full width, 16x16 input


def test_every_preset_resolves():
    for name, preset in cifar.PRESETS.items():
        assert preset.model in MODELS, name
        for method in preset.methods:
            assert method in cifar_presets.METHODS
            if method != "bp":
                assert preset.model in cifar_presets.GHL_SETTINGS, name
    for table_row in ("vgg16-cifar10-ghl", "resnet20-cifar10-ghl", "resnet1202-cifar10-ghl", "vgg14-cifar10-ghl",
                      "deephebb-cifar10-softhebb", "fig2-d3-x4-triangle-softhebb", "fig2-d1-x1-relu-ghl"):
        assert table_row in cifar.PRESETS
    assert {f"{m}-{k}" for m, k in imagenet.TABLE3} == set(imagenet.PRESETS)
    assert all(p.model in IMAGENET_MODELS for p in imagenet.PRESETS.values())
    assert len(imagenet.PRESETS) == 13
