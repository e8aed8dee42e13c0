"""The mean of a tensor over data-parallel replicas: what every process of a ``torch.distributed`` group must agree on
before it writes an update (an eligibility, a per-neuron modulator's credit), as DDP averages gradients; and a
layer's name as it is without the wrappers (DDP, ``torch.compile``) that prefix every name."""
from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = ["replica_count", "replica_mean", "unwrapped_name"]


def replica_count() -> int:
    """The number of data-parallel processes (1 unless ``torch.distributed`` is initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def replica_mean(tensor: Tensor, replicas: int | None = None) -> Tensor:
    """``tensor`` averaged in place over the processes of the default group (all-reduced sum / ``replicas``;
    unchanged with one process).  A tensor with gaps between its rows (a padded buffer) goes through a dense copy,
    since collectives need dense tensors.  ``replicas``: [`replica_count`][ghl_snn.ops.data_parallel.replica_count]
    if already known."""
    replicas = replica_count() if replicas is None else replicas
    if replicas > 1:
        dense = tensor.contiguous()
        dist.all_reduce(dense, op=dist.ReduceOp.SUM)
        if dense is not tensor:
            tensor.copy_(dense)
        tensor /= replicas
    return tensor


#: The attribute under which a wrapper holds the model: DistributedDataParallel / DataParallel (``module``) and
#: ``torch.compile``'s OptimizedModule (``_orig_mod``).
WRAPPER_ATTRIBUTES = ("module", "_orig_mod")


def unwrapped_name(name: str) -> str:
    """``name`` without the leading wrapper components that DDP, DataParallel and ``torch.compile`` add to every
    qualified name (``"module._orig_mod.fc"`` -> ``"fc"``): the layer's name in the model as its author wrote it."""
    head, _, rest = name.partition(".")
    while rest and head in WRAPPER_ATTRIBUTES:
        name = rest
        head, _, rest = name.partition(".")
    return name
