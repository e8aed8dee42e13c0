"""ImageNet experiment on a tiny ImageFolder of PNGs (CLI, outputs, resume, errors) and mixed precision on CPU."""
import copy
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ghl_snn.datasets.imagenet import check_imagenet_root
from ghl_snn.experiments import cifar, imagenet
from ghl_snn.comparison.distributed import AmpTrainer
from ghl_snn.models import DeepHebb


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one intra-op thread is faster


def write_png_folder(root, per_class=4, size=(20, 24)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index, name in enumerate(("n01", "n02")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 120, (*size, 3), dtype=np.uint8)
                pixels[..., index] += 120
                Image.fromarray(pixels).save(folder / f"img{k}.png")
    return root


def test_cli_one_step_writes_outputs_and_resumes(tmp_path, capsys):
    root = write_png_folder(tmp_path / "imagenet")
    args = ["--preset", "deephebb-ghl", "--data-root", str(root), "--out", str(tmp_path / "runs"), "--epochs", "1",
            "--batch-size", "2", "--image-size", "32", "--width", "0.0625", "--workers", "0", "--max-steps", "1",
            "--amp", "none", "--device", "cpu"]
    assert imagenet.cli_main(args) == 0
    run = tmp_path / "runs" / "deephebb-ghl" / "seed0"
    results = json.loads((run / "results.json").read_text())
    assert 0 <= results["final_test_acc"] <= results["final_top5"] == 1.0  # 2 classes: top-5 covers all
    assert results["paper_top1"] == 53.71
    config = json.loads((run / "config.json").read_text())
    assert config["plastic_layers"] == ["features.1", "features.5", "features.9"] and config["classes"] == 2
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and "features.1.weight" in state["model"] and "scaler" in state
    assert imagenet.cli_main(args[:7] + ["2"] + args[8:] + ["--resume"]) == 0
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"] and "test_top5" in rows[0]
    assert "top-1" in capsys.readouterr().out


def test_missing_data_is_one_clear_error(tmp_path, capsys):
    assert imagenet.cli_main(["--data-root", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    message = capsys.readouterr().err
    assert message.count("error:") == 1 and message.count("\n") == 1 and "imagenet/{train,val}/<class>" in message
    assert "data-set folder itself" in message  # both accepted layouts: the folder holding it, or its own
    (tmp_path / "half" / "train" / "n01").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="val"):
        check_imagenet_root(tmp_path / "half")


def test_hpca_row_writes_minus_the_local_pca_eligibility():
    from ghl_snn.models.imagenet import fasthebb
    from ghl_snn.rules.softhebb import hpca_conv2d

    torch.manual_seed(0)
    model = fasthebb(num_classes=3, width=1 / 16)
    rule = imagenet.build_rule("hpca", model)
    images = torch.randn(2, 3, 32, 32)
    model(images)
    rule.step()  # local-only: no backward pass needed, .grad = -E
    conv = model.features[0]
    y = F.conv2d(images, conv.weight)
    expected = hpca_conv2d(images, y, conv.weight.detach())
    torch.testing.assert_close(conv.weight.grad, -expected / expected.abs().max(), rtol=1e-4, atol=1e-6)
    assert set(rule.layers) == set(model.plastic_taus)


def one_step_update(base, amp, images, labels, scale=None):
    """Plastic-weight change of one AmpTrainer step (GHL on DeepHebb's convolutions)."""
    model = copy.deepcopy(base)
    rule = cifar.build_rule("ghl", model)
    trainer = AmpTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), None, rule, amp=amp)
    if scale is not None:
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    torch.manual_seed(1)  # same dropout mask in every variant
    trainer.train_epoch([(images, labels)], 0)
    return {n: (model.get_submodule(n).weight - base.get_submodule(n).weight).detach().flatten()
            for n in model.plastic_taus}, trainer


@pytest.mark.parametrize("amp, min_cosine", [("bf16", 0.85), ("fp16", 0.95)])  # measured: >= 0.92, >= 0.97
def test_amp_update_matches_fp32(amp, min_cosine):
    torch.manual_seed(0)
    base = DeepHebb(num_classes=4, width=1 / 16)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    reference, _ = one_step_update(base, None, images, labels)
    # fp16: the loss is scaled by 1024; unscale_ before rule.step() keeps M * |E| at its true size
    mixed, trainer = one_step_update(base, amp, images, labels, scale=1024.0 if amp == "fp16" else None)
    if amp == "fp16":
        assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() == 1024.0
    other, _ = one_step_update(base, None, torch.randn(4, 3, 32, 32), labels)
    for name, delta in reference.items():
        assert F.cosine_similarity(mixed[name], delta, dim=0) > min_cosine, name
        assert mixed[name].norm() / delta.norm() == pytest.approx(1.0, abs=0.05), name
        assert F.cosine_similarity(other[name], delta, dim=0) < 0.5, name  # the tolerance can fail
