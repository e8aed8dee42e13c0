"""MNIST / Fashion-MNIST presets load through torchvision from the data root's standard layout; broken idx files
give one line naming the file and the problem."""
import struct

import pytest
import torch

from ghl_snn.datasets.mnist import check_idx_file, load_mnist, mnist_split, mnist_vectors
from ghl_snn.experiments import hebbff as experiment


def write_idx(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.to(torch.uint8).numpy().tobytes())


def write_dataset(root, name, n_train=12, n_test=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=gen)
        labels = torch.randint(0, 10, (n,), generator=gen)
        write_idx(root / name / "raw" / f"{split}-images-idx3-ubyte", images)
        write_idx(root / name / "raw" / f"{split}-labels-idx1-ubyte", labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_presets_load_the_standard_layout_through_torchvision(tmp_path, monkeypatch, name):
    arrays = write_dataset(tmp_path, name, seed=len(name))
    monkeypatch.setenv("GHL_SNN_DATA", str(tmp_path))
    for train, split in ((True, "train"), (False, "t10k")):
        images, labels = load_mnist(None, train=train, name=name)  # root from GHL_SNN_DATA
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert torch.equal(images, arrays[split][0].to(torch.uint8)) and torch.equal(labels, arrays[split][1])
    vectors = mnist_vectors(images)
    assert vectors.shape == (5, 784) and float(vectors.max()) <= 1.0
    torch.testing.assert_close(vectors[0, :3], arrays["t10k"][0][0, 0, :3].float() / 255)
    preset = "deep-mnist" if name == "MNIST" else "deep-fashionmnist"
    split = mnist_split(str(tmp_path), experiment.PRESETS[preset][1], 0.25, seed=0)
    assert split.train_x.shape == (9, 784) and split.val_x.shape == (3, 784) and split.test_x.shape == (5, 784)


def test_missing_dataset_names_the_layout(tmp_path):
    write_dataset(tmp_path, "MNIST")
    with pytest.raises(FileNotFoundError, match=r"FashionMNIST.*FashionMNIST/raw"):
        load_mnist(tmp_path, name="FashionMNIST")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_mnist(tmp_path, name="KMNIST")


@pytest.mark.parametrize("damage,problem", [
    (lambda data: b"", "empty file"),
    (lambda data: data[:-100], "truncated: dimensions (12, 28, 28) need 9424 bytes, the file has 9324"),
    (lambda data: data[:10], "truncated header"),
    (lambda data: b"\x12\x34" + data[2:], "not a 3-d uint8 idx file"),
    (lambda data: data + b"\x00", "trailing bytes"),
])
def test_broken_idx_file_gives_one_line_naming_file_and_problem(tmp_path, damage, problem, capsys):
    write_dataset(tmp_path, "MNIST")
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError) as info:
        load_mnist(tmp_path, train=True)
    message = str(info.value)
    assert str(path) in message and problem in message and "\n" not in message
    code = experiment.cli_main(["--preset", "deep-mnist", "--methods", "bp", "--data-root", str(tmp_path), "--quiet",
                                "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "train-images-idx3-ubyte" in err and len(err.strip().splitlines()) == 1  # one line


def test_label_count_mismatch_and_header_reader(tmp_path):
    write_dataset(tmp_path, "MNIST")
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    write_idx(labels, torch.zeros(11, dtype=torch.uint8))
    with pytest.raises(ValueError, match="holds 12 images but .* holds 11 labels"):
        load_mnist(tmp_path)
    assert check_idx_file(labels, 1) == (11,)
