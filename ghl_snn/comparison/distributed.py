"""Multi-process training for the experiments: torchrun + DistributedDataParallel, mixed precision, channels_last.

Launch any experiment that supports it with ``torchrun`` (one process per GPU; multi-node with ``--nnodes`` and a
rendezvous endpoint)::

    torchrun --nproc_per_node 8 -m ghl_snn.experiments.imagenet --preset resnet50-ghl --data-root /data/imagenet
    torchrun --nproc_per_node 2 -m ghl_snn.experiments.cifar --preset resnet20-cifar10-ghl --data-root DIR

[`init_distributed`][] reads torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and initialises ``torch.distributed``
(NCCL on CUDA, gloo on CPU); without them it returns a one-process context and nothing changes.  The model is wrapped in
``torch.nn.parallel.DistributedDataParallel``; the GHL plug-in hooks the *inner* model, and since DDP averages ``dL/dW``
over replicas and [`ghl_snn.GHL`][ghl_snn.GHL] all-reduces the eligibility ``E`` before normalising
([Architecture][architecture-performance]), every replica writes the identical ``M ⊙ |E|`` and the replicas stay equal.
Each global batch of ``B`` samples is split over the ``R`` processes as in ``DistributedSampler`` (process ``r`` takes
samples ``r, r + R, ...``), so with equal shards the averaged gradient equals the single-process gradient of the whole
batch.  (BatchNorm normalises per process unless ``--sync-bn`` converts it to ``torch.nn.SyncBatchNorm``, which needs
CUDA.)

Only rank 0 logs, writes ``config.json`` / ``metrics.csv`` / ``results.json`` / ``checkpoint.pt``; the other ranks
train into a scratch folder (seeded from rank 0's checkpoint on ``--resume``) that is removed afterwards.

Mixed precision ([`AmpTrainer`][]): the forward pass runs under ``torch.autocast`` (bf16 or fp16); with fp16 a
``torch.amp.GradScaler`` scales the loss, and ``scaler.unscale_(optimizer)`` runs **before** ``rule.step()``
so that the Hebbian update ``M ⊙ |E|`` is never divided by the loss scale; steps with overflowing gradients are
still skipped by ``scaler.step``.  The eligibility is always accumulated in float32 by the plug-in.
"""
from __future__ import annotations

import gc
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .runner import Trainer

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size``, its ``local_rank`` on the node, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or any launcher) set ``WORLD_SIZE`` > 1 in the environment."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device, backend: str | None = None) -> DistContext:
    """Initialise ``torch.distributed`` from torchrun's environment; a one-process context when not launched so.

    On CUDA each process uses ``cuda:LOCAL_RANK`` and NCCL; on CPU gloo.  Ranks other than 0 get tqdm disabled.
    """
    if not launched_by_torchrun():
        return DistContext(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"), rank=rank,
                                world_size=world)
    if rank != 0:
        os.environ["TQDM_DISABLE"] = "1"
    return DistContext(rank, world, local_rank, device)


def cleanup_distributed() -> None:
    """Destroy the process group if one is active.

    Unreachable ``DistributedDataParallel`` models are collected first (a GHL plug-in's hooks keep its model in a
    reference cycle): a DDP reducer outliving its gloo group can abort the process at exit ("terminate called
    without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, sync_bn: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed (optionally with SyncBatchNorm), else ``model``."""
    if not ctx.distributed:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The inner module of a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(batch: tuple[Tensor, Tensor], ctx: DistContext) -> tuple[Tensor, Tensor]:
    """This process's share ``[rank::world_size]`` of a global batch (DistributedSampler's interleaving)."""
    if not ctx.distributed:
        return batch
    images, labels = batch
    if images.shape[0] % ctx.world_size:
        raise ValueError(f"global batch of {images.shape[0]} does not split evenly over {ctx.world_size} processes")
    return images[ctx.rank::ctx.world_size], labels[ctx.rank::ctx.world_size]


class ShardedStream:
    """A global in-memory batch stream (``.epoch(e)``, ``len``) split over the processes with [`shard`][]."""

    def __init__(self, stream: Any, ctx: DistContext) -> None:
        self.stream, self.ctx = stream, ctx

    def __len__(self) -> int:
        return len(self.stream)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.stream.epoch(epoch):
            yield shard(batch, self.ctx)


def rank_out_dir(out_dir: Path, ctx: DistContext, resume: bool = False, force: bool = False) -> Path:
    """``out_dir`` on rank 0; elsewhere a uniquely named scratch folder holding copies of rank 0's
    ``checkpoint.pt``, ``results.json`` and ``config.json`` (unless ``force``), so that every rank decides alike
    whether to skip, resume or start the run ([`ghl_snn.comparison.runner.plan_run`][])."""
    if ctx.is_main:
        return out_dir
    remove_orphaned_scratch()
    scratch = Path(tempfile.mkdtemp(prefix=f"ghl_rank{ctx.rank}_{os.getpid()}_"))
    if not force:
        for name in ("checkpoint.pt", "results.json", "config.json"):
            if (out_dir / name).is_file():
                shutil.copy2(out_dir / name, scratch / name)
    return scratch


def remove_orphaned_scratch() -> list[Path]:
    """Remove scratch folders (``ghl_rank<r>_<pid>_*`` in the temporary directory) whose process no longer runs:
    what a rank killed with SIGKILL could not remove itself."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob("ghl_rank*_*_*"):
        try:
            pid = int(folder.name.split("_")[2])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except PermissionError:  # alive, another user's
            pass
    return removed


def finish_rank(run_dir: Path, out_dir: Path) -> None:
    """Remove a non-zero rank's scratch folder (also on errors, Ctrl-C and SIGTERM: callers use ``finally``)."""
    if run_dir != out_dir:
        shutil.rmtree(run_dir, ignore_errors=True)


def agree(ok: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``ok`` holds on every process (all-reduce of the minimum; ``ok`` itself without a process
    group), so that one rank's refusal (e.g. a locked output folder) stops all of them."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return ok
    flag = torch.tensor([1 if ok else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def all_reduce_sums(values: list[float], device: torch.device) -> list[float]:
    """Sum a few scalars over all processes (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@dataclass
class AmpTrainer(Trainer):
    """[`Trainer`][ghl_snn.comparison.runner.Trainer] with AMP, channels_last, DDP-aware checkpoints and top-5.

    ``amp``: ``None`` (fp32), ``"bf16"`` or ``"fp16"`` (the latter with a ``GradScaler``).  ``max_steps`` caps the
    batches of every training and evaluation epoch (smoke runs).  ``shard_eval``: evaluation batches are a shard
    of the test set per process, so correct counts are summed over processes.  Checkpoints hold the *inner*
    model's state dict and the scaler's state.
    """

    amp: str | None = None
    channels_last: bool = False
    shard_eval: bool = False
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self) -> None:
        if self.amp not in (None, *AMP_DTYPES):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        self.device = next(unwrap(self.model).parameters()).device
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

    def _autocast(self):
        if self.amp is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.amp])

    def _prepare(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(self.device, non_blocking=True)

    def _forward(self, images: Tensor) -> Tensor:
        with self._autocast():
            return self.model(images)

    def _apply_update(self, loss: Tensor) -> None:
        self.scaler.scale(loss).backward()
        if self.rule is not None:
            self.scaler.unscale_(self.optimizer)  # before rule.step(): M ⊙ |E| must not be unscaled
            self.rule.step()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _epoch_totals(self, loss_sum: float, correct: float, seen: float) -> tuple[float, float, float]:
        return tuple(all_reduce_sums([loss_sum, correct, seen], self.device))

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        """Cross-entropy, top-1 (``test_acc``) and top-5 (``test_top5``) accuracy."""
        self.model.eval()
        loss_sum, correct, top5, seen = 0.0, 0.0, 0.0, 0.0
        for step, (images, labels) in enumerate(batches):
            if self.max_steps is not None and step >= self.max_steps:
                break
            images, labels = self._prepare(images, labels)
            with self._autocast():
                logits = self.model(images)
            logits = logits.float()
            loss_sum += self.loss_fn(logits, labels).item() * labels.shape[0]
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct += (best[:, 0] == labels).sum().item()
            top5 += (best == labels[:, None]).any(dim=1).sum().item()
            seen += labels.shape[0]
        if self.shard_eval:
            loss_sum, correct, top5, seen = all_reduce_sums([loss_sum, correct, top5, seen], self.device)
        return {"test_loss": loss_sum / max(seen, 1), "test_acc": correct / max(seen, 1),
                "test_top5": top5 / max(seen, 1)}

    def state_dict(self, epoch: int, elapsed: float) -> dict[str, Any]:
        inner, self.model = self.model, unwrap(self.model)
        try:
            state = super().state_dict(epoch, elapsed)
        finally:
            self.model = inner
        state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> tuple[int, float]:
        inner, self.model = self.model, unwrap(self.model)
        try:
            result = super().load_state_dict(state)
        finally:
            self.model = inner
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        return result
