"""Export a trained [`SpikingNetwork`][ghl_snn.SpikingNetwork] to NIR (the Neuromorphic Intermediate Representation).

Built from our own modules (not snntorch's exporter): the network's children become a chain
``input -> node_0 -> ... -> output`` of NIR nodes with **per-neuron parameter arrays** (shape of the neuron
layer's output without the batch dimension):

* ``nn.Linear`` -> ``nir.Affine(W, b)`` (``nir.Linear(W)`` without bias); ``nn.Conv2d`` -> ``nir.Conv2d``;
  [`SumPool2d`][ghl_snn.models.pooling.SumPool2d] -> ``nir.SumPool2d``; ``nn.AvgPool2d`` -> ``nir.AvgPool2d``;
  ``nn.Flatten`` -> ``nir.Flatten``
  (``start_dim`` counted without the batch dimension, as NIR's shape inference does).
* Discrete-time neurons are mapped to NIR's continuous-time ODEs so that their **forward-Euler discretisation
  with step** ``dt`` **is exactly our update**:

  - built-in [`LIF`][ghl_snn.LIF] / snntorch ``Leaky`` (``v_t = beta v_{t-1} + I_t``) -> ``nir.LIF`` with
    ``tau = dt / (1 - beta)``, ``r = tau / dt = 1 / (1 - beta)``, ``v_leak = 0``, ``v_threshold = theta``,
    ``v_reset = 0``: Euler gives ``v + dt/tau (0 - v + r I) = beta v + I``;
  - built-in [`IF`][ghl_snn.IF] (``beta = 1``) -> ``nir.IF`` with ``r = 1 / dt`` (``v + dt r I = v + I``);
  - snntorch ``Synaptic`` (``i_t = alpha i_{t-1} + I_t``, ``v_t = beta v_{t-1} + i_t``) -> ``nir.CubaLIF`` with
    ``tau_syn = dt / (1 - alpha)``, ``w_in = tau_syn / dt``, ``tau_mem = dt / (1 - beta)``, ``r = tau_mem / dt``;
  - norse ``LIFBoxCell`` -> ``nir.LIF(tau = 1 / tau_mem_inv, r = 1, v_leak, v_th, v_reset)`` and norse ``LIFCell``
    -> ``nir.CubaLIF(tau_syn = 1 / tau_syn_inv, tau_mem = 1 / tau_mem_inv, r = 1, w_in = 1)`` (norse's own
    parameters are already continuous-time).

  NIR neurons reset to ``v_reset`` in the step they spike.  A neuron that resets by subtraction (our default) is
  therefore **not** represented exactly, and neither are snntorch neurons (snntorch applies the reset of step
  ``t-1`` at step ``t``, undecayed): [`export_nir`][] warns (``strict=True`` raises); the graph then matches
  the network until the first spike.  Build the network with ``LIF(reset="zero")`` for an exact export.
* ``fold_resistance=True`` moves every neuron's ``r`` (and CubaLIF's ``w_in``) into the weights and bias of the
  synapse that feeds it (``W'_k = r_k W_k``, ``b'_k = r_k b_k``; ``r`` must then be uniform per output channel)
  and exports ``r = 1``, ``w_in = 1``.  The graph is mathematically equivalent, and runnable by importers that
  ignore ``r`` -- norse 1.1's ``from_nir`` does (it only logs a warning for ``r != 1`` on LIF and IF nodes).

The read-out of a network that ends with a synapse is the NIR ``output`` (the current of the last synapse).

What norse 1.1's ``norse.torch.from_nir`` (through ``nirtorch.load``) does with these graphs -- it is tested to
reproduce the network step by step for ``LIF(reset="zero")`` with ``fold_resistance=True``:

* LIF / IF nodes: ``r`` is ignored (a warning is logged), hence ``fold_resistance``; ``v_reset`` is ignored too
  (norse's default 0 is used, which is what this exporter writes); the ``reset_method`` argument is only applied
  to CubaLIF nodes.
* ``nir.Flatten(start_dim)`` becomes ``torch.nn.Flatten(start_dim)`` although NIR counts dimensions without the
  batch, so the imported module must be run **unbatched** (one ``(C, H, W)`` sample per call).
* ``nir.SumPool2d`` becomes ``LPPool2d(1)`` (equal for non-negative spikes); ``nir.AvgPool2d`` is not imported.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence

import nir
import numpy as np
import torch
from torch import Tensor, nn

from ..models.pooling import SumPool2d
from ..spiking.encoders import present
from ..spiking.network import SYNAPSE_TYPES, SpikingNetwork
from ..spiking.neurons import SpikingNeuron


class NIRExportError(ValueError):
    """The network contains a module or configuration NIR (or this exporter) cannot represent."""


def _pair(value: int | Sequence[int]) -> np.ndarray:
    return np.array([value, value] if isinstance(value, int) else list(value), dtype=np.int64)


def neuron_node(neuron: SpikingNeuron, shape: Sequence[int], dt: float) -> tuple[nir.NIRNode, bool]:
    """The NIR node of ``neuron`` for a layer of ``shape`` and whether its reset is represented exactly (the
    neuron's own [`to_nir`][ghl_snn.spiking.neurons.SpikingNeuron.to_nir])."""
    try:
        return neuron.to_nir(shape, dt)
    except NotImplementedError as error:
        raise NIRExportError(str(error)) from error


def _synapse_node(module: nn.Module, in_shape: Sequence[int], scale: np.ndarray | None) -> nir.NIRNode:
    """``nir.Affine`` / ``nir.Linear`` / ``nir.Conv2d`` of ``module``, rows scaled by ``scale`` (per output unit)."""
    weight = module.weight.detach().cpu().double().numpy()
    bias = None if module.bias is None else module.bias.detach().cpu().double().numpy()
    if scale is not None:
        weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        bias = None if bias is None else bias * scale
    weight = weight.astype(np.float32)
    bias = None if bias is None else bias.astype(np.float32)
    if isinstance(module, nn.Linear):
        return nir.Linear(weight=weight) if bias is None else nir.Affine(weight=weight, bias=bias)
    if module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise NIRExportError("Conv2d with string padding or a non-zero padding_mode is not exported")
    return nir.Conv2d(input_shape=tuple(int(s) for s in in_shape[1:]), weight=weight, stride=_pair(module.stride),
                      padding=_pair(module.padding), dilation=_pair(module.dilation), groups=module.groups,
                      bias=bias if bias is not None else np.zeros(weight.shape[0], dtype=np.float32))


def _per_channel(values: np.ndarray, name: str) -> np.ndarray:
    """Reduce a per-neuron array ``(K, ...)`` to one value per output channel ``(K,)`` (must be uniform)."""
    flat = values.reshape(values.shape[0], -1)
    if not np.allclose(flat, flat[:, :1]):
        raise NIRExportError(f"fold_resistance needs {name} uniform per output channel")
    return flat[:, 0].astype(np.float64)


def export_nir(network: SpikingNetwork, input_shape: Sequence[int], dt: float = 1e-3, fold_resistance: bool = False,
               strict: bool = False) -> nir.NIRGraph:
    """NIR graph of ``network`` for per-step input of ``input_shape`` (without batch); see the module docstring.

    Args:
        network: the spiking network (its children in order form the chain).
        input_shape: e.g. ``(2, 34, 34)`` for N-MNIST frames or ``(700,)`` for SHD.
        dt: the time step (seconds) that one call of ``network.forward`` stands for.
        fold_resistance: fold ``r`` (and ``w_in``) into the preceding synapse and export ``r = w_in = 1``.
        strict: raise instead of warning when a neuron's reset (by subtraction) has no exact NIR equivalent.
    """
    if not isinstance(network, SpikingNetwork):
        raise TypeError(f"export_nir needs a SpikingNetwork, got {type(network).__name__}")
    dt = float(dt)
    if not dt > 0 or math.isinf(dt):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    children = list(network.named_children())
    shapes: list[tuple[int, ...]] = []
    with torch.no_grad():
        h = torch.zeros(1, *input_shape, dtype=next(network.parameters()).dtype,
                        device=next(network.parameters()).device)
        network.check_input(h)
        for _, module in children:
            if not isinstance(module, SpikingNeuron):
                h = module(h)
            shapes.append(tuple(h.shape[1:]))
    names = [f"{type(m).__name__.lower()}_{name}" for name, m in children]
    neurons: dict[int, nir.NIRNode] = {}
    inexact: list[str] = []
    for index, (name, module) in enumerate(children):
        if isinstance(module, SpikingNeuron):
            node, exact = neuron_node(module, shapes[index], dt)
            neurons[index] = node
            if not exact:
                inexact.append(names[index])
    if inexact:
        message = (f"neurons {inexact} reset by subtraction (or norse LIFCell jump dynamics), which NIR's LIF/IF/"
                   "CubaLIF (reset to v_reset) cannot represent exactly; the exported graph fires like the network "
                   "until the first spike and then differs. Use LIF(reset='zero') for an exact export.")
        if strict:
            raise NIRExportError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    scales: dict[int, np.ndarray] = {}
    if fold_resistance:
        for index, node in neurons.items():
            previous = children[index - 1][1] if index > 0 else None
            if not isinstance(previous, SYNAPSE_TYPES):
                raise NIRExportError(f"fold_resistance: neuron {names[index]} does not follow a Linear/Conv2d")
            gain = _per_channel(node.r, "r")
            if isinstance(node, nir.CubaLIF):
                gain = gain * _per_channel(node.w_in, "w_in")
                node.w_in = np.ones_like(node.w_in)
            node.r = np.ones_like(node.r)
            scales[index - 1] = gain
    nodes: dict[str, nir.NIRNode] = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    previous_shape: tuple[int, ...] = tuple(input_shape)
    for index, (name, module) in enumerate(children):
        key = names[index]
        if index in neurons:
            nodes[key] = neurons[index]
        elif isinstance(module, SYNAPSE_TYPES):
            nodes[key] = _synapse_node(module, previous_shape, scales.get(index))
        elif isinstance(module, SumPool2d):
            nodes[key] = nir.SumPool2d(kernel_size=_pair(module.kernel_size), stride=_pair(module.stride),
                                       padding=_pair(0))
        elif isinstance(module, nn.AvgPool2d):
            if module.ceil_mode or not module.count_include_pad:
                raise NIRExportError("AvgPool2d with ceil_mode or count_include_pad=False is not exported")
            stride = module.stride if module.stride is not None else module.kernel_size
            nodes[key] = nir.AvgPool2d(kernel_size=_pair(module.kernel_size), stride=_pair(stride),
                                       padding=_pair(module.padding))
        elif isinstance(module, nn.Flatten):
            start = module.start_dim - 1 if module.start_dim >= 1 else module.start_dim
            end = module.end_dim - 1 if module.end_dim >= 1 else module.end_dim
            if module.start_dim == 0:
                raise NIRExportError("nn.Flatten(start_dim=0) would flatten the batch dimension")
            nodes[key] = nir.Flatten(input_type={"input": np.array(previous_shape)}, start_dim=start, end_dim=end)
        elif isinstance(module, nn.Identity):
            continue
        else:
            raise NIRExportError(f"no NIR mapping for module {name!r} ({type(module).__name__})")
        previous_shape = shapes[index]
    nodes["output"] = nir.Output(output_type={"output": np.array(previous_shape)})
    keys = list(nodes)
    edges = list(zip(keys[:-1], keys[1:]))
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata={"exporter": "ghl_snn.export.nir", "dt": dt, "fold_resistance": fold_resistance})


def graph_parameters(graph: nir.NIRGraph) -> dict[str, np.ndarray]:
    """Every array parameter of every node, keyed ``"<node>.<field>"`` (for round-trip comparisons)."""
    params: dict[str, np.ndarray] = {}
    for name, node in graph.nodes.items():
        for field, value in vars(node).items():
            if field in ("input_type", "output_type", "metadata"):
                continue
            if isinstance(value, (np.ndarray, np.generic, int, float, tuple, list)):
                params[f"{name}.{field}"] = np.asarray(value)
    return params


@torch.no_grad()
def norse_agreement(net: SpikingNetwork, graph: nir.NIRGraph, batches: Iterable[tuple[Tensor, Tensor]], dt: float,
                    max_samples: int = 100) -> dict[str, float]:
    """Run an exported graph through norse's ``from_nir`` on up to ``max_samples`` samples of ``batches`` (network
    input ``(N, T, ...)`` and labels, on the CPU) and compare it with ``net``: the fraction of identical
    predictions, the largest absolute difference of the time-averaged read-out and the accuracy of both.

    norse 1.1 maps ``nir.Flatten`` onto ``torch.nn.Flatten`` with NIR's batch-free ``start_dim`` (see the module
    docstring), so the imported module runs one unbatched sample at a time."""
    from norse.torch import from_nir

    logging.disable(logging.WARNING)  # norse logs r != 1 on every LIF node
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = from_nir(graph, dt=dt)
    finally:
        logging.disable(logging.NOTSET)
    same, seen, ours_correct, norse_correct, max_diff = 0, 0, 0, 0, 0.0
    for frames, labels in batches:
        ours = present(net, frames)
        for sample, label, reference in zip(frames, labels, ours):
            if seen >= max_samples:
                break
            state, total = None, torch.zeros_like(reference)
            for frame in sample:
                out_t, state = module(frame, state)
                total += out_t
            theirs = total / sample.shape[0]
            max_diff = max(max_diff, float((theirs - reference).abs().max()))
            same += int(theirs.argmax() == reference.argmax())
            ours_correct += int(reference.argmax() == label)
            norse_correct += int(theirs.argmax() == label)
            seen += 1
    return {"samples": seen, "same_prediction": same / max(seen, 1), "max_abs_readout_diff": max_diff,
            "accuracy_ours": ours_correct / max(seen, 1), "accuracy_norse": norse_correct / max(seen, 1)}
