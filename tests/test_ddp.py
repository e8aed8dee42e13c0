"""GHL under DistributedDataParallel (gloo, 2 CPU processes) equals one process on the concatenated batch."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL

STEPS = 3


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 4))


def make_batches():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 8, 8, generator=generator), torch.randint(0, 4, (8,), generator=generator))
            for _ in range(STEPS)]


def train(model, batches, rank=0, world=1):
    rule = GHL(model, tau=0.9)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=1e-3)
    for x, target in batches:
        share = x.shape[0] // world
        x, target = x[rank * share:(rank + 1) * share], target[rank * share:(rank + 1) * share]
        optimizer.zero_grad()
        F.cross_entropy(model(x), target).backward()
        rule.step()
        optimizer.step()
    return model


def worker(rank, world, port, out_dir):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(make_model())
        train(model, make_batches(), rank, world)
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_replicas_identical_and_equal_single_process(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    single = train(make_model(), make_batches()).state_dict()
    initial = make_model().state_dict()
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-5, atol=1e-6)
        assert not torch.equal(single[key], initial[key]), key
