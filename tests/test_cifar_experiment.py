"""The CIFAR harness: models, data, runner outputs, resume, quick start, errors."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ghl_snn.datasets.cifar import (BatchStream, ImageData, load_cifar, load_image_folder, random_crop_flip)
from ghl_snn.experiments import cifar
from ghl_snn.comparison.runner import Trainer, TrainingDiverged, fit
from ghl_snn.models import DeepHebb, FastHebb

RUN_FILES = ("config.json", "metrics.csv", "results.json", "curves.png", "checkpoint.pt")


def test_deephebb_shapes_and_parameter_count():
    model = DeepHebb(num_classes=10, width=1.0)
    assert model.head_features == 24576
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [(3, 96, 5), (96, 384, 3),
                                                                                 (384, 1536, 3)]
    assert all(c.bias is None for c in convs)
    expected = 96 * 3 * 25 + 384 * 96 * 9 + 1536 * 384 * 9 + (24576 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert list(model.plastic_taus.values()) == pytest.approx([1.0, 1 / 0.65, 4.0])


def test_fasthebb_shapes():
    model = FastHebb(num_classes=100, width=0.25)
    assert FastHebb(width=1.0).head_features == 2304
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 100)
    assert set(model.plastic_taus.values()) == {1.0}


@pytest.mark.parametrize("method", ["ghl", "sign", "hebb"])
def test_only_hidden_convs_are_plastic(method):
    model = DeepHebb(width=0.1)
    rule = cifar.build_rule(method, model)
    assert all(isinstance(m, nn.Conv2d) for m in rule.layers.values())
    assert len(rule.layers) == 3
    assert cifar.build_rule("bp", model) is None


def test_random_crop_flip_matches_per_sample_reference():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    generator = torch.Generator().manual_seed(3)
    got = random_crop_flip(images, generator, padding=2)
    generator = torch.Generator().manual_seed(3)
    shifts = torch.randint(0, 5, (2, 2), generator=generator)
    flips = torch.rand(2, generator=generator) < 0.5
    for n in range(2):
        padded = torch.nn.functional.pad(images[n], (2, 2, 2, 2))
        crop = padded[:, shifts[0, n]:shifts[0, n] + 6, shifts[1, n]:shifts[1, n] + 6]
        expected = crop.flip(-1) if flips[n] else crop
        assert torch.equal(got[n], expected)


TEN_CLASSES = tuple(f"class{k}" for k in range(10))


def write_image_folder(root: Path, per_class: int = 6, classes=("cat", "dog")) -> Path:
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for index, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(per_class):
                image = torch.randint(0, 100, (3, 32, 32), generator=generator, dtype=torch.uint8)
                image[index % 3] += 120  # class-dependent colour, learnable
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{k:04d}.png")
    return root


def test_image_folder_loader(tmp_path):
    root = write_image_folder(tmp_path / "data")
    data = load_cifar("cifar10", root, train=True)
    assert data.images.shape == (12, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0] * 6 + [1] * 6
    (root / "test" / "cat" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="0000.png"):
        load_image_folder(root, train=False)


def test_missing_data_root_names_layout_and_remedies(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"cifar10-jpeg/\{train,test\}.*ImageFolder tree.*cifar-10-batches-py"
                                                r".*--data-root.*--download"):
        load_cifar("cifar10", tmp_path / "nowhere", train=True)
    code = cifar.cli_main(["--preset", "deephebb-cifar10-ghl", "--data-root", str(tmp_path / "nowhere"),
                       "--out", str(tmp_path / "out")])
    assert code == 2
    assert "cifar-10-batches-py" in capsys.readouterr().err


def test_unknown_preset_and_method(capsys):
    assert cifar.cli_main(["--preset", "resnet9000-ghl"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert cifar.cli_main(["--preset", "quickstart", "--methods", "ghl,adam"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_every_table_row_has_a_preset():
    for model in ("deephebb", "fasthebb"):
        for dataset in ("cifar10", "cifar100"):
            for method in ("ghl", "bp", "bp-same", "sign", "hebb"):
                preset = cifar.PRESETS[f"{model}-{dataset}-{method}"]
                assert preset.epochs == 100 and preset.batch_size == 64 and preset.width == 1.0


def test_two_epoch_run_writes_every_output(tmp_path):
    root = write_image_folder(tmp_path / "data", per_class=1, classes=TEN_CLASSES)
    out = tmp_path / "out"
    code = cifar.cli_main(["--preset", "deephebb-cifar10-ghl", "--methods", "ghl,bp", "--epochs", "2",
                           "--width", "0.05", "--batch-size", "4", "--data-root", str(root), "--out", str(out)])
    assert code == 0
    for method in ("ghl", "bp"):
        run = out / "deephebb-cifar10-ghl" / method / "seed0"
        for name in RUN_FILES:
            assert (run / name).is_file(), name
        results = json.loads((run / "results.json").read_text())
        assert results["epochs"] == 2 and 0.0 <= results["final_test_acc"] <= 1.0
        assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3
    assert "| ghl |" in (out / "deephebb-cifar10-ghl" / "summary.md").read_text()
    assert (out / "deephebb-cifar10-ghl" / "accuracy.png").is_file()


def test_resume_is_bit_identical(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", per_class=8)
    train, test = load_cifar("cifar10", root, True), load_cifar("cifar10", root, False)
    preset = cifar.Preset("deephebb", "cifar10", ("ghl",), epochs=3, batch_size=4, width=0.05)
    straight = cifar.run_method("ghl", preset, train, test, 0, tmp_path / "straight", torch.device("cpu"))

    original = Trainer.train_epoch
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cifar.run_method("ghl", preset, train, test, 0, tmp_path / "resumed", torch.device("cpu"))
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = cifar.run_method("ghl", preset, train, test, 0, tmp_path / "resumed", torch.device("cpu"),
                               resume=True)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["final_test_acc"] == straight["final_test_acc"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 0, 1]))]
    epochs_seen = {"n": 0}

    def loss_fn(logits, labels):
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if epochs_seen["n"] >= 2 else loss

    def train_batches(epoch):
        epochs_seen["n"] += 1
        return batches

    trainer = Trainer(model, optimizer, loss_fn=loss_fn)
    with pytest.raises(TrainingDiverged, match=r"nan at epoch 2.*last good checkpoint.*epoch 1"):
        fit(trainer, train_batches, lambda: batches, 3, tmp_path, {"test": True})
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_quickstart_preset_end_to_end(tmp_path, capsys):
    assert cifar.cli_main(["--preset", "quickstart", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| ghl |" in printed and "| bp |" in printed
    summary = json.loads((tmp_path / "quickstart" / "summary.json").read_text())
    accuracies = {run: values[0]["final_test_acc"] for run, values in summary["runs"].items()}
    assert accuracies["ghl"] > 0.5 and accuracies["bp"] > 0.5  # 10 classes: chance is 0.1


def test_batch_stream_order_depends_on_seed_and_epoch():
    data = ImageData(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 1, 1).contiguous(),
                     torch.arange(10), [str(i) for i in range(10)])
    stream = BatchStream(data, 4, torch.device("cpu"), shuffle=True, seed=1)
    first = torch.cat([labels for _, labels in stream.epoch(0)])
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(first, torch.cat([labels for _, labels in stream.epoch(0)]))
    assert not torch.equal(first, torch.cat([labels for _, labels in stream.epoch(1)]))
    assert len(stream) == 3


def test_resume_of_a_finished_run_trains_nothing(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "data", per_class=4)
    train, test = load_cifar("cifar10", root, True), load_cifar("cifar10", root, False)
    preset = cifar.Preset("deephebb", "cifar10", ("bp",), epochs=1, batch_size=4, width=0.05)
    first = cifar.run_method("bp", preset, train, test, 0, tmp_path / "run", torch.device("cpu"))

    def fail(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(Trainer, "train_epoch", fail)
    again = cifar.run_method("bp", preset, train, test, 0, tmp_path / "run", torch.device("cpu"), resume=True)
    assert again == first


def test_monitor_option_records_diagnostics(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", per_class=1, classes=TEN_CLASSES)
    out = tmp_path / "out"
    assert cifar.cli_main(["--preset", "deephebb-cifar10-ghl", "--monitor", "alignment,gini"]) == 2
    assert "unknown monitor" in capsys.readouterr().err
    code = cifar.cli_main(["--preset", "deephebb-cifar10-ghl", "--epochs", "1", "--width", "0.05", "--batch-size", "4",
                       "--monitor", "alignment,competition", "--monitor-every", "1", "--data-root", str(root),
                       "--out", str(out)])
    assert code == 0
    run = out / "deephebb-cifar10-ghl" / "ghl" / "seed0"
    rows = (run / "alignment.csv").read_text().strip().splitlines()
    assert len(rows) > 3 * 3  # header + 3 steps x 3 plastic convolutions (10 images, batch 4)
    assert rows[0].split(",")[1] == "layer"
    assert {row.split(",")[1] for row in rows[1:]} == {"features.1", "features.5", "features.9"}
    assert (run / "competition.csv").is_file()
