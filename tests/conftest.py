import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def shared_data() -> Path:
    """Root of the real data sets (``GHL_SNN_DATA``), or skip when absent."""
    root = os.environ.get("GHL_SNN_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("real data not available: set GHL_SNN_DATA to the folder holding MNIST/, cifar10-jpeg/, ...")
    return Path(root)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of many tiny ops (faster, and light on a shared CPU); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_autotune():
    """The weight-gradient kernel chosen without timing (as in a process started with ``GHL_SNN_AUTOTUNE=0``), so
    that this process computes to the same bit as another one; restored afterwards."""
    from ghl_snn.ops import autotune

    before = autotune()
    autotune(False)
    yield
    autotune(before)


@pytest.fixture(scope="session")
def write_bar_nmnist():
    """``write(root, spacing, train_per_digit, events)``: a tiny N-MNIST tree in the real binary format,
    ``<root>/NMNIST-small/NMNIST/{Train,Test}/<digit>/<i>.bin`` for digits 0-2 (one test recording each), digit ``d``
    a vertical bar of ``events`` events at ``x = spacing * d + 4`` (or one to the right), drawn from one seeded
    generator; returns ``root``."""
    import numpy as np

    from ghl_snn.datasets.events import encode_nmnist

    def write(root: Path, spacing: int, train_per_digit: int, events: int) -> Path:
        rng = np.random.default_rng(0)
        for split, per_digit in (("Train", train_per_digit), ("Test", 1)):
            for digit in range(3):
                for index in range(per_digit):
                    path = root / "NMNIST-small" / "NMNIST" / split / str(digit) / f"{index}.bin"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(encode_nmnist(spacing * digit + 4 + rng.integers(0, 2, events),
                                                   rng.integers(4, 30, events),
                                                   np.sort(rng.integers(0, 90_000, events)),
                                                   rng.integers(0, 2, events)))
        return root
    return write


@pytest.fixture(scope="session")
def finished_comparison_is_reused():
    """``check(main, argv, results_path)``: running a finished comparison again reuses its trials; the same folder
    with its ``final`` entry removed (an unfinished comparison) is refused without ``--resume`` and completed, with
    no trial run again, with it."""
    import json

    from ghl_snn.comparison import cli

    def check(main, argv: list[str], results_path: Path) -> None:
        stored = json.loads(results_path.read_text())
        before = len(stored["trials"])
        main(argv)
        assert len(json.loads(results_path.read_text())["trials"]) == before
        results_path.write_text(json.dumps({k: v for k, v in stored.items() if k != "final"}))
        with pytest.raises(cli.CliError, match="unfinished comparison; pass --resume"):
            main(argv)
        main(argv + ["--resume"])
        assert len(json.loads(results_path.read_text())["trials"]) == before
    return check


@pytest.fixture(scope="session")
def tiny_cifar_root(tmp_path_factory) -> Path:
    """A CIFAR-10 ImageFolder tree (``cifar10-jpeg/{train,test}/class<k>/``) of 6 training and 2 test PNG images
    per class, each class brighter in one colour channel, so that a small network can learn something."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar")
    generator = np.random.default_rng(0)
    for split, per_class in (("train", 6), ("test", 2)):
        for label in range(10):
            folder = root / "cifar10-jpeg" / split / f"class{label}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                image = generator.integers(0, 50, (32, 32, 3), dtype=np.uint8)
                image[:, :, label % 3] += 20 * (label + 1)
                Image.fromarray(image).save(folder / f"{k}.png")
    return root
