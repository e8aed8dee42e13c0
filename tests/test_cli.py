"""Every experiment's command line refuses bad input before any work: one line on stderr, exit code 2.

Also: the data-root convention (the folder holding the data sets, or a data set's own folder), the preset checked
against the data found, subsets decoding only what they use, and complete help pages.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from ghl_snn.datasets.cifar import ImageData, find_cifar, load_cifar, load_image_folder
from ghl_snn.datasets.root import DataNotFound
from ghl_snn.comparison import cli
from ghl_snn.experiments import alignment, cifar, competition, imagenet

EXPERIMENTS = {
    "cifar": (cifar.cli_main, ["--preset", "quickstart"]),
    "imagenet": (imagenet.cli_main, ["--preset", "deephebb-ghl"]),
    "alignment": (alignment.cli_main, ["--parts", "sre"]),
    "competition": (competition.cli_main, []),
}
BAD_VALUES = {
    "cifar": [["--epochs", "0"], ["--width", "0"], ["--batch-size", "0"], ["--train-subset", "0"], ["--seeds", "0"],
              ["--bp-lr", "-1"], ["--bp-lr", "0"], ["--lr", "0"], ["--lr", "nan"], ["--weight-decay", "-1"],
              ["--monitor-every", "0"], ["--tau", "0"], ["--tau", "features.99=1"], ["--tau", "1,2"],
              ["--val-split", "1.5"], ["--methods", "ghl,adam"], ["--monitor", "gini"], ["--preset", "nope"],
              ["--eligibility-fraction", "0"], ["--device", "tpu"], ["--eval-on", "val"]],
    "imagenet": [["--epochs", "0"], ["--batch-size", "-4"], ["--lr", "0"], ["--workers", "-1"], ["--max-steps", "0"],
                 ["--image-size", "0"], ["--preset", "nope"], ["--device", "cuda:x"]],
    "alignment": [["--every", "0"], ["--window", "0"], ["--lr", "-0.1"], ["--sce-weight-decays", "0,-1"],
                  ["--parts", "sce,foo"], ["--batch-size", "0"], ["--sre-noises", ","]],
    "competition": [["--widths", "8,0"], ["--epochs", "0"], ["--tau", "0"], ["--methods", "swta"],
                    ["--dead-threshold", "1.5"], ["--dropout", "1"]],
}


def one_error_line(text: str) -> str:
    lines = [line.split("\r")[-1] for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize("name,bad", [(name, bad) for name, cases in BAD_VALUES.items() for bad in cases],
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_bad_values_are_one_line_and_exit_code_2(name, bad, tmp_path, capsys):
    main, base = EXPERIMENTS[name]
    assert main([*base, "--out", str(tmp_path / "out"), *bad]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "error:" in line
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cifar", "imagenet"])  # alignment and competition run on the CPU only
def test_cuda_without_a_gpu_is_one_line(name, tmp_path, capsys):
    main, base = EXPERIMENTS[name]
    assert main([*base, "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "CUDA requested but not available" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("name,args,expected", [
    ("cifar", ["--preset", "deephebb-cifar10-ghl"], ["cifar10-jpeg/{train,test}", "cifar-10-batches-py"]),
    ("imagenet", ["--preset", "deephebb-ghl", "--device", "cpu"], ["imagenet/{train,val}/<class>"]),
    ("alignment", ["--parts", "sce"], ["cifar10-jpeg/{train,test}", "cifar-10-batches-py"]),
    ("competition", [], ["MNIST"]),
])
def test_wrong_data_root_is_one_line_naming_the_layouts(name, args, expected, tmp_path, capsys):
    main = EXPERIMENTS[name][0]
    (tmp_path / "empty").mkdir()
    assert main([*args, "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(tmp_path / "empty") in line and all(text in line for text in expected)


def write_tree(root, classes: int, size: int = 32, per_class: int = 1):
    from PIL import Image

    for split in ("train", "test"):
        for label in range(classes):
            folder = root / split / f"class{label:03d}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                Image.fromarray(np.full((size, size, 3), 7 * label + k, dtype=np.uint8)).save(folder / f"{k}.png")
    return root


def test_data_root_is_the_folder_holding_the_data_sets_or_the_data_set_itself(tmp_path):
    tree = write_tree(tmp_path / "cifar10-jpeg", classes=10)
    assert find_cifar("cifar10", tmp_path).path == tree == find_cifar("cifar10", tree).path
    batches = tmp_path / "other" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in ("data_batch_1", "test_batch"):
        (batches / name).write_bytes(b"")
    assert find_cifar("cifar10", tmp_path / "other").path == batches == find_cifar("cifar10", batches).path
    with pytest.raises(DataNotFound, match="cifar100-jpeg.*cifar-100-python"):
        find_cifar("cifar100", tmp_path)


def test_preset_is_checked_against_the_data_before_decoding(tmp_path, capsys, monkeypatch):
    decoded = []
    monkeypatch.setattr(cifar, "load_data", lambda *a, **k: decoded.append(1))
    write_tree(tmp_path / "ten" / "cifar10-jpeg", classes=10)
    code = cifar.cli_main(["--preset", "deephebb-cifar100-ghl", "--data-root", str(tmp_path / "ten" / "cifar10-jpeg"),
                       "--out", str(tmp_path / "out")])
    assert code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "10 classes" in line and "cifar100" in line
    write_tree(tmp_path / "big" / "cifar10-jpeg", classes=10, size=64)
    assert cifar.cli_main(["--preset", "deephebb-cifar10-ghl", "--data-root", str(tmp_path / "big"),
                       "--out", str(tmp_path / "out")]) == 2
    assert "64x64" in one_error_line(capsys.readouterr().err)
    assert not decoded


def test_a_subset_decodes_only_its_images(tmp_path, monkeypatch):
    from ghl_snn.datasets import cifar as cifar_data

    tree = write_tree(tmp_path / "cifar10-jpeg", classes=10, per_class=3)
    full = load_image_folder(tree, train=True)
    opened = []
    real_open = cifar_data.Image.open
    monkeypatch.setattr(cifar_data.Image, "open", lambda path, *a: opened.append(path) or real_open(path, *a))
    part = load_cifar("cifar10", tmp_path, train=True, subset=7, seed=3)
    assert len(opened) == 7 + 1  # the 7 images, and the header of one read by find_cifar (the size check)
    expected = full.subset(7, seed=3)  # the same images, in the same order, as decoding all and sub-sampling
    assert torch.equal(part.images, expected.images) and torch.equal(part.labels, expected.labels)
    assert isinstance(part, ImageData) and part.classes == full.classes


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_help_describes_every_option(name, capsys):
    module = {"cifar": cifar, "imagenet": imagenet, "alignment": alignment, "competition": competition}[name]
    parser = module.build_parser()
    undocumented = [action.option_strings for action in parser._actions
                    if action.option_strings and not (action.help and action.help.strip())]
    assert not undocumented
    assert EXPERIMENTS[name][0](["--help"]) == 0
    text = capsys.readouterr().out
    assert "--out" in text and "(default: None)" not in text


def test_argument_types_refuse_what_they_should():
    assert cli.positive_int("3") == 3 and cli.nonnegative_float("0") == 0.0
    for parse, text in ((cli.positive_int, "0"), (cli.positive_int, "1.5"), (cli.positive_float, "inf"),
                        (cli.positive_float, "-2"), (cli.open_fraction, "1"), (cli.list_of(cli.positive_int), "")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)
    assert cli.device_name("cpu") == "cpu" and cli.device_name("auto") == "auto"
