"""The CIFAR experiment's torchrun path (2 gloo processes) equals one process on the same global batches."""
import os
import socket

import torch
import torch.multiprocessing as mp
from torch import nn

from ghl_snn.datasets.cifar import ImageData
from ghl_snn.comparison import distributed
from ghl_snn.experiments import cifar, cifar_presets

PRESET = cifar.Preset("tiny", "synthetic", ("ghl",), epochs=1, batch_size=8)


class TinyNet(nn.Module):
    """BatchNorm- and dropout-free, so per-process batch statistics cannot differ from the single process."""

    def __init__(self, num_classes: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6 * 2 * 2, num_classes)

    @property
    def plastic_taus(self):
        return {"conv1": 1.0, "conv2": 0.7}

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.adaptive_avg_pool2d(torch.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))


TINY_SETTINGS = cifar_presets.OptimiserSettings(conv_lr=0.05, conv_weight_decay=1e-3, rest_lr=0.05)


def register_tiny() -> None:
    cifar.MODELS["tiny"] = TinyNet
    cifar_presets.GHL_SETTINGS["tiny"] = TINY_SETTINGS


def make_data():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, 3, (16,), generator=generator)
    return ImageData(images, labels, ["a", "b", "c"])


def keep_weights(path):
    """Wrap the experiment's ``fit`` so the trained (inner) model of this process is saved to ``path``."""
    original = cifar.fit

    def fit(trainer, *args, **kwargs):
        result = original(trainer, *args, **kwargs)
        torch.save(distributed.unwrap(trainer.model).state_dict(), path)
        return result

    cifar.fit = fit


def worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    register_tiny()
    keep_weights(os.path.join(out_dir, f"rank{rank}.pt"))
    ctx = distributed.init_distributed(torch.device("cpu"))
    try:
        assert ctx.distributed and ctx.rank == rank
        data = make_data()
        cifar.run_method("ghl", PRESET, data, data, 0, __import__("pathlib").Path(out_dir) / "ddp",
                         torch.device("cpu"), ctx=ctx)
    finally:
        distributed.cleanup_distributed()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_path_replicas_identical_and_equal_single_process(tmp_path, monkeypatch):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    monkeypatch.setitem(cifar.MODELS, "tiny", TinyNet)
    monkeypatch.setitem(cifar_presets.GHL_SETTINGS, "tiny", TINY_SETTINGS)
    data = make_data()
    cifar.run_method("ghl", PRESET, data, data, 0, tmp_path / "single", torch.device("cpu"))
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=False)["model"]
    torch.manual_seed(0)
    initial = TinyNet().state_dict()
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-5, atol=1e-6)
        assert not torch.equal(single[key], initial[key]), key
    # rank 0 alone wrote the run's files; its checkpoint holds the unwrapped model
    ddp_state = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)
    assert set(ddp_state["model"]) == set(single) and ddp_state["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "rank0.pt", "rank1.pt", "single"]


def test_cifar_amp_channels_last_path_writes_top5_and_scaler_state(tmp_path, monkeypatch):
    monkeypatch.setitem(cifar.MODELS, "tiny", TinyNet)
    monkeypatch.setitem(cifar_presets.GHL_SETTINGS, "tiny", TINY_SETTINGS)
    data = make_data()
    results = cifar.run_method("ghl", PRESET, data, data, 0, tmp_path, torch.device("cpu"), amp="bf16",
                               channels_last=True)
    assert 0.0 <= results["final_test_acc"] <= 1.0
    assert "test_top5" in (tmp_path / "metrics.csv").read_text().splitlines()[0]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert "scaler" in state and not any(key.startswith("module.") for key in state["model"])
    torch.manual_seed(0)
    assert not torch.equal(state["model"]["conv1.weight"], TinyNet().state_dict()["conv1.weight"])
