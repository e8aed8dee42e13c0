"""GHL under DistributedDataParallel (gloo, 2 CPU processes) equals one process on the concatenated batch: Linear,
Conv2d, grouped Conv2d, grouped Conv1d and MultiheadAttention projections, with GradSign and with the per-neuron
modulators, whose per-synapse credit is averaged over the replicas before its sign is taken.  Likewise the online
spiking learner ThreeFactor, each process running its shard through its own copy of a SpikingNetwork, and the
gradient-free HebbFF learner, whose replicas average their weights after each update."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ghl_snn import GHL, IF, FeedbackSign, ForwardForwardMLP, HebbFF, NeuronSign, SpikingNetwork, ThreeFactor
from ghl_snn.comparison.distributed import cleanup_distributed
from ghl_snn.rules.hebbff import random_wrong_labels

STEPS = 3


class AttentionNet(nn.Module):
    """Grouped Conv1d over the flattened image, self-attention over its positions, a Linear read-out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 8, 3, padding=1)
        self.grouped = nn.Conv1d(8, 8, 3, padding=1, groups=4)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        tokens = self.grouped(self.conv(x.flatten(2)).relu()).transpose(1, 2)
        return self.head(self.attention(tokens, tokens, tokens, need_weights=False)[0].mean(dim=1))


def make_model(kind="conv"):
    torch.manual_seed(0)
    if kind == "attention":
        return AttentionNet()
    # 128 inputs to the Linear layer: its E buffer has padded rows, which the all-reduce must handle
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, groups=2),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))


#: (model, modulator): GradSign (default), NeuronSign (dL/dy captured per replica), FeedbackSign (the error)
KINDS = (("conv", None), ("attention", None), ("conv", "neuron"), ("attention", "feedback"))
MODULATORS = {None: lambda: None, "neuron": NeuronSign, "feedback": lambda: FeedbackSign(seed=2)}


def make_batches():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, 8, 8, generator=generator), torch.randint(0, 4, (8,), generator=generator))
            for _ in range(STEPS)]


def train(model, batches, rank=0, world=1, modulator=None):
    rule = GHL(model, tau=0.9, modulator=MODULATORS[modulator]())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=1e-3)
    for x, target in batches:
        share = x.shape[0] // world
        x, target = x[rank * share:(rank + 1) * share], target[rank * share:(rank + 1) * share]
        optimizer.zero_grad()
        logits = model(x)
        F.cross_entropy(logits, target).backward()
        if modulator == "feedback":
            rule.step(error=logits.detach().softmax(dim=1) - F.one_hot(target, logits.shape[1]))
        else:
            rule.step()
        optimizer.step()
    return model


#: ThreeFactor settings: (modulator, eligibility mode); GradSign reads the rate surrogate's dL/dW, FeedbackSign the
#: output error and the per-neuron credit; "step" accumulates an eligibility trace every time step
SPIKING = (("grad", "window"), ("feedback", "step"), ("neuron", "window"))


def make_spiking_network():
    torch.manual_seed(0)
    return SpikingNetwork(nn.Linear(12, 10), IF(), nn.Linear(10, 4))


def train_spiking(net, modulator, eligibility, rank=0, world=1):
    """Three windows of ThreeFactor + SGD on this process's share of every batch (constant-current input)."""
    modulators = {"grad": lambda: None, "neuron": NeuronSign, "feedback": lambda: FeedbackSign(seed=2)}
    learner = ThreeFactor(net, modulator=modulators[modulator](), tau=0.9, eligibility=eligibility)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    generator = torch.Generator().manual_seed(3)
    for _ in range(STEPS):
        x, target = torch.rand(8, 12, generator=generator) * 2, torch.randint(0, 4, (8,), generator=generator)
        share = x.shape[0] // world
        x, target = x[rank * share:(rank + 1) * share], target[rank * share:(rank + 1) * share]
        optimizer.zero_grad()
        learner.run(x, num_steps=6)
        learner.step(loss_fn=lambda out: F.cross_entropy(out, target))
        optimizer.step()
    return net


#: HebbFF settings: (reduction, entry point): the fast label-conditioned path, the generic traces path, and the
#: update written into .grad (mode="grad") for a torch optimiser (the replicas average .grad)
HEBBFF = (("mean", "train_step"), ("sum", "train_step"), ("mean", "step"), ("mean", "grad"), ("sum", "grad"))


def make_ff_model():
    torch.manual_seed(0)
    return ForwardForwardMLP(in_features=12, hidden=(10, 8), num_classes=4)


def train_hebbff(model, reduction, entry, rank=0, world=1):
    """Three HebbFF steps (weight decay on) on this process's share of every batch."""
    lr = 0.2 if reduction == "mean" else 0.05
    learner = HebbFF(model.layers, lr=lr, theta=0.05, weight_decay=0.01, reduction=reduction,
                     mode="grad" if entry == "grad" else "fused")
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(5)
    for _ in range(STEPS):
        x, labels = torch.rand(8, 12, generator=generator), torch.randint(0, 4, (8,), generator=generator)
        wrong = random_wrong_labels(labels, 4, generator=generator)
        share = x.shape[0] // world
        x, labels, wrong = (t[rank * share:(rank + 1) * share] for t in (x, labels, wrong))
        if entry == "train_step":
            learner.train_step(model, x, labels, wrong)
        elif entry == "grad":
            learner.train_step(model, x, labels, wrong)
            optimizer.step()
        else:
            with torch.no_grad():
                learner.step(model.trace(x, labels), model.trace(x, wrong))
    return model


def worker(rank, world, port, out_dir):
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for kind, modulator in KINDS:
            save_replica(kind, modulator, rank, world, out_dir)
        for modulator, eligibility in SPIKING:
            net = train_spiking(make_spiking_network(), modulator, eligibility, rank, world)
            torch.save(net.state_dict(), os.path.join(out_dir, f"spiking-{modulator}-{eligibility}-rank{rank}.pt"))
        for reduction, entry in HEBBFF:
            model = train_hebbff(make_ff_model(), reduction, entry, rank, world)
            torch.save(model.state_dict(), os.path.join(out_dir, f"hebbff-{reduction}-{entry}-rank{rank}.pt"))
    finally:
        cleanup_distributed()  # frees the DDP replicas (held in cycles by GHL's hooks) before the group goes


def save_replica(kind, modulator, rank, world, out_dir):
    model = nn.parallel.DistributedDataParallel(make_model(kind))
    train(model, make_batches(), rank, world, modulator)
    torch.save(model.module.state_dict(), os.path.join(out_dir, f"{kind}-{modulator}-rank{rank}.pt"))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_replicas(tmp_path, label, single, initial, moves=lambda key: True):
    """Both ranks saved identical parameters under ``label``, equal to one process's on the whole batch, and
    training moved every parameter that ``moves``."""
    rank0, rank1 = (torch.load(tmp_path / f"{label}-rank{r}.pt") for r in range(2))
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), (label, key)
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-5, atol=1e-6, msg=f"{label} {key}")
        if moves(key):
            assert not torch.equal(single[key], initial[key]), (label, key)


def test_ddp_replicas_identical_and_equal_single_process(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for kind, modulator in KINDS:
        # the unwrapped model: FeedbackSign draws B from the layer names without DDP's "module." prefix
        single = train(make_model(kind), make_batches(), modulator=modulator).state_dict()
        check_replicas(tmp_path, f"{kind}-{modulator}", single, make_model(kind).state_dict())
    for modulator, eligibility in SPIKING:
        single = train_spiking(make_spiking_network(), modulator, eligibility).state_dict()
        # FeedbackSign runs no backward: the biases stay
        check_replicas(tmp_path, f"spiking-{modulator}-{eligibility}", single, make_spiking_network().state_dict(),
                       moves=lambda key: key.endswith("weight") or modulator != "feedback")
    for reduction, entry in HEBBFF:
        single = train_hebbff(make_ff_model(), reduction, entry).state_dict()
        check_replicas(tmp_path, f"hebbff-{reduction}-{entry}", single, make_ff_model().state_dict())
