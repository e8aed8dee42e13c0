"""The CIFAR CLI's validation split, per-group learning rates and eligibility normalisation option."""
import json

import pytest
import torch

from ghl_snn.datasets.cifar import ImageData, split_validation
from ghl_snn.experiments import cifar, cifar_presets
from ghl_snn.models import DeepHebb


def make_data(per_class=(7, 12, 5, 9)) -> ImageData:
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(per_class)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    images = torch.arange(len(labels), dtype=torch.int64).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.uint8)
    return ImageData(images.contiguous(), labels, [str(c) for c in range(len(per_class))])


def test_split_is_disjoint_complete_stratified_and_seeded():
    data = make_data()
    train, val = split_validation(data, 0.25, seed=3)
    ids_train, ids_val = set(train.images[:, 0, 0, 0].tolist()), set(val.images[:, 0, 0, 0].tolist())
    assert not ids_train & ids_val
    assert ids_train | ids_val == set(range(len(data)))
    for c, n in enumerate((7, 12, 5, 9)):  # round(0.25 * n) of every class held out
        assert int((val.labels == c).sum()) == round(0.25 * n)
        assert int((train.labels == c).sum()) == n - round(0.25 * n)
    for part in (train, val):  # each image keeps its label
        assert torch.equal(data.labels[part.images[:, 0, 0, 0].long()], part.labels)
    again_train, again_val = split_validation(data, 0.25, seed=3)
    assert torch.equal(again_val.images, val.images) and torch.equal(again_train.labels, train.labels)
    _, other = split_validation(data, 0.25, seed=4)
    assert not torch.equal(other.images, val.images)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="validation fraction"):
        split_validation(make_data(), fraction)


@pytest.mark.parametrize("method", ["ghl", "sign", "bp", "bp-same", "hebb"])
def test_group_learning_rates_reach_the_optimiser(method):
    model = DeepHebb(width=0.1)
    plastic = set(model.plastic_taus)
    preset = cifar.Preset("deephebb", "cifar10", (method,), conv_lr=0.123, head_lr=0.0456)
    groups = cifar.optimiser_for(method, preset, model, plastic).param_groups
    conv_ids = {id(p) for name, m in model.named_modules() if name in plastic for p in m.parameters()}
    assert {id(p) for p in groups[0]["params"]} == conv_ids
    assert groups[0]["lr"] == 0.123 and groups[1]["lr"] == 0.0456
    default = cifar.optimiser_for(method, cifar.Preset("deephebb", "cifar10", (method,)), model, plastic)
    expected = cifar_presets.BP_SETTINGS if method == "bp" else cifar_presets.GHL_SETTINGS["deephebb"]
    assert default.param_groups[0]["lr"] == expected.conv_lr and default.param_groups[1]["lr"] == expected.rest_lr


@pytest.mark.parametrize("normalize", ["max", "mean", "channel", None])
def test_normalize_reaches_the_rule(normalize):
    rule = cifar.build_rule("ghl", DeepHebb(width=0.1), normalize=normalize)
    assert {r.normalize for r in rule.rules.values()} == {normalize}


def test_cli_trains_on_train_part_and_reports_validation(tmp_path, capsys):
    code = cifar.cli_main(["--preset", "quickstart", "--methods", "ghl", "--epochs", "1", "--train-subset", "200",
                       "--val-split", "0.25", "--conv-lr", "0.07", "--head-lr", "0", "--normalize", "mean",
                       "--out", str(tmp_path)])
    assert code == 0
    run = tmp_path / "quickstart" / "ghl" / "seed0"
    config = json.loads((run / "config.json").read_text())
    assert config["eval_on"] == "val" and config["val_split"] == 0.25
    assert config["train_samples"] + config["test_samples"] == 200 and config["test_samples"] == 50
    assert config["preset"]["conv_lr"] == 0.07 and config["preset"]["normalize"] == "mean"
    assert "final val acc %" in (tmp_path / "quickstart" / "summary.md").read_text()
    assert "lr: 0.07" in config["optimizer"]


def test_cli_rejects_eval_on_val_without_split(capsys):
    assert cifar.cli_main(["--preset", "quickstart", "--eval-on", "val"]) == 2
    assert "--val-split" in capsys.readouterr().err
    assert cifar.cli_main(["--preset", "quickstart", "--conv-lr", "-1"]) == 2
    error = capsys.readouterr().err
    assert "--conv-lr" in error and ">= 0" in error and error.count("\n") == 1


def test_cli_eval_on_test_trains_on_the_same_split(tmp_path):
    """--val-split F --eval-on test: the same training part as the validation run, accuracy on the test set."""
    args = ["--preset", "quickstart", "--methods", "bp", "--epochs", "1", "--train-subset", "200", "--val-split",
            "0.25", "--test-subset", "40"]
    assert cifar.cli_main(args + ["--eval-on", "test", "--out", str(tmp_path / "t")]) == 0
    config = json.loads((tmp_path / "t" / "quickstart" / "bp" / "seed0" / "config.json").read_text())
    assert config["eval_on"] == "test" and config["train_samples"] == 150 and config["test_samples"] == 40
    assert "final test acc %" in (tmp_path / "t" / "quickstart" / "summary.md").read_text()


def test_balanced_index_draws_per_class_in_class_order():
    from ghl_snn.datasets.cifar import balanced_index

    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 2, 1, 0])
    index = balanced_index(labels, 3, 2, seed=5)
    assert labels[index].tolist() == [0, 0, 1, 1, 2, 2] and len(set(index.tolist())) == 6
    # the same draw as one permutation per class from one generator seeded with the seed
    generator = torch.Generator().manual_seed(5)
    expected = torch.cat([torch.nonzero(labels == c).flatten()[torch.randperm(int((labels == c).sum()),
                                                                              generator=generator)[:2]]
                          for c in range(3)])
    assert torch.equal(index, expected)
    assert len(balanced_index(labels, 3, 10, seed=0)) == 10  # fewer than per_class: all of the class
    with pytest.raises(ValueError, match="per_class must be > 0"):
        balanced_index(labels, 3, 0, seed=0)


def test_standardized_vectors_use_the_given_statistics():
    from ghl_snn.datasets.cifar import standardized_vectors

    images = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8)
    x, mean, std = standardized_vectors(images)
    per_channel = x.reshape(20, 3, 16).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(3), atol=1e-5, rtol=0)
    again, _, _ = standardized_vectors(images[:5], mean, std)  # the training statistics, not the batch's own
    torch.testing.assert_close(again, x[:5])
