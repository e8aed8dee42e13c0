"""NIR export of spiking networks: parameter mapping, nir.write -> nir.read round trip, norse's from_nir."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import nir
import numpy as np
import pytest
import torch
from torch import nn

from ghl_snn.export.nir import NIRExportError, SumPool2d, export_nir, graph_parameters, norse_agreement
from ghl_snn.spiking import IF, LIF, SpikingNetwork

DT = 1e-3


def _conv_net(reset: str = "zero") -> SpikingNetwork:
    torch.manual_seed(0)
    net = SpikingNetwork(nn.Conv2d(2, 4, 3), LIF(beta=0.8, threshold=0.7, reset=reset), SumPool2d(2),
                         nn.Conv2d(4, 5, 3, padding=1), LIF(beta=0.9, reset=reset), nn.Flatten(),
                         nn.Linear(5 * 4 * 4, 6), LIF(beta=0.95, reset=reset), nn.Linear(6, 3))
    with torch.no_grad():
        for index in (0, 3, 6):
            net[index].weight.mul_(3.0)
    return net


def _reference(net: SpikingNetwork, frames: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Read-out current per step of ``net`` on ``frames (T, ...)`` (batch of one) and the hidden spike count."""
    net.reset()
    outputs, spikes = [], 0.0
    with torch.no_grad():
        for frame in frames:
            h = frame[None]
            for module in net:
                h = module(h)
                if isinstance(module, LIF):
                    spikes += float(h.sum())
            outputs.append(h[0])
    return torch.stack(outputs), spikes


def test_export_maps_parameters_per_neuron() -> None:
    net = _conv_net()
    graph = export_nir(net, (2, 10, 10), dt=DT)
    kinds = {name: type(node).__name__ for name, node in graph.nodes.items()}
    assert list(kinds.values()) == ["Input", "Conv2d", "LIF", "SumPool2d", "Conv2d", "LIF", "Flatten", "Affine",
                                    "LIF", "Affine", "Output"]
    assert graph.edges == list(zip(list(kinds)[:-1], list(kinds)[1:]))
    lif1, lif2, lif3 = (graph.nodes[k] for k, v in kinds.items() if v == "LIF")
    assert lif1.tau.shape == (4, 8, 8) and lif2.tau.shape == (5, 4, 4) and lif3.tau.shape == (6,)
    # forward Euler of tau dv/dt = -v + r I with step dt must give v <- beta v + I
    np.testing.assert_allclose(lif1.tau, DT / (1 - 0.8), rtol=1e-6)
    np.testing.assert_allclose(lif1.r * DT / lif1.tau, 1.0, rtol=1e-6)
    np.testing.assert_allclose(1 - DT / lif2.tau, 0.9, rtol=1e-5)
    np.testing.assert_allclose(lif1.v_threshold, 0.7)
    assert (lif3.v_reset == 0).all() and (lif3.v_leak == 0).all()
    conv = graph.nodes["conv2d_3"]
    np.testing.assert_array_equal(conv.weight, net[3].weight.detach().numpy())
    assert tuple(conv.padding) == (1, 1) and tuple(conv.input_shape) == (4, 4)
    np.testing.assert_array_equal(graph.nodes["linear_8"].bias, net[8].bias.detach().numpy())
    assert tuple(graph.nodes["output"].output_type["output"]) == (3,)


def test_if_neuron_and_bias_free_linear() -> None:
    net = SpikingNetwork(nn.Linear(4, 3, bias=False), IF(threshold=2.0, reset="zero"), nn.Linear(3, 2, bias=False))
    graph = export_nir(net, (4,), dt=0.5)
    assert isinstance(graph.nodes["if_1"], nir.IF) and isinstance(graph.nodes["linear_0"], nir.Linear)
    np.testing.assert_allclose(graph.nodes["if_1"].r, 2.0)  # r = 1/dt so that v <- v + dt r I = v + I
    np.testing.assert_allclose(graph.nodes["if_1"].v_threshold, 2.0)


def test_write_read_round_trip_keeps_weights_and_parameters(tmp_path: Path) -> None:
    net = _conv_net()
    graph = export_nir(net, (2, 10, 10), dt=DT)
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    loaded = nir.read(path)
    assert sorted(loaded.nodes) == sorted(graph.nodes)  # nir.read returns the nodes sorted by name
    assert sorted(loaded.edges) == sorted(graph.edges)
    before, after = graph_parameters(graph), graph_parameters(loaded)
    assert set(before) == set(after) and len(before) > 20
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], value, err_msg=key)
    np.testing.assert_array_equal(loaded.nodes["conv2d_0"].weight, net[0].weight.detach().numpy())
    np.testing.assert_array_equal(loaded.nodes["lif_4"].tau, graph.nodes["lif_4"].tau)


def _norse_run(graph: nir.NIRGraph, frames: torch.Tensor, **kwargs: object) -> torch.Tensor:
    norse = pytest.importorskip("norse.torch")
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = norse.from_nir(graph, dt=DT, **kwargs)
    finally:
        logging.disable(logging.NOTSET)
    state, outputs = None, []
    with torch.no_grad():
        for frame in frames:  # unbatched: norse maps nir.Flatten(start_dim=0) to torch's Flatten(0, -1)
            out, state = module(frame, state)
            outputs.append(out)
    return torch.stack(outputs)


def test_norse_from_nir_reproduces_the_forward_pass(tmp_path: Path) -> None:
    net = _conv_net(reset="zero")
    frames = (torch.rand(12, 2, 10, 10, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    expected, spikes = _reference(net, frames)
    assert spikes > 20  # the neurons do fire and reset, so the comparison covers the spike dynamics
    nir.write(tmp_path / "net.nir", export_nir(net, (2, 10, 10), dt=DT, fold_resistance=True))
    graph = nir.read(tmp_path / "net.nir")
    assert all(np.all(node.r == 1) for node in graph.nodes.values() if isinstance(node, nir.LIF))
    actual = _norse_run(graph, frames)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    # norse 1.1 ignores r on LIF nodes: the unfolded (spec-exact) graph runs with the wrong input scale
    unfolded = _norse_run(export_nir(net, (2, 10, 10), dt=DT), frames)
    assert not torch.allclose(unfolded, expected, atol=1e-3)


def test_norse_agreement_counts_agreeing_predictions() -> None:
    pytest.importorskip("norse.torch")
    net = _conv_net(reset="zero")
    with torch.no_grad():
        net[8].bias.zero_()  # with its bias the read-out predicts class 2 for every input
    frames = (torch.rand(3, 12, 2, 10, 10, generator=torch.Generator().manual_seed(2)) < 0.4).float()
    expected = torch.stack([_reference(net, sample)[0].mean(0) for sample in frames])  # time-averaged read-out
    predicted = expected.argmax(1)
    assert predicted.unique().numel() > 1  # agreement is not one class predicted everywhere
    labels = predicted.clone()
    labels[0] = (labels[0] + 1) % 3  # two of three right: the accuracies count per sample
    graph = export_nir(net, (2, 10, 10), dt=DT, fold_resistance=True)
    check = norse_agreement(net, graph, [(frames[:2], labels[:2]), (frames[2:], labels[2:])], DT, max_samples=3)
    assert check["samples"] == 3 and check["same_prediction"] == 1.0 and check["max_abs_readout_diff"] < 1e-4
    assert check["accuracy_ours"] == check["accuracy_norse"] == 2 / 3
    assert norse_agreement(net, graph, [(frames, labels)], DT, max_samples=2)["samples"] == 2


def test_reset_by_subtraction_warns_and_strict_raises() -> None:
    net = _conv_net(reset="subtract")
    with pytest.warns(RuntimeWarning, match="reset by subtraction"):
        graph = export_nir(net, (2, 10, 10), dt=DT)
    assert isinstance(graph.nodes["lif_1"], nir.LIF)
    with pytest.raises(NIRExportError, match="reset by subtraction"):
        export_nir(net, (2, 10, 10), dt=DT, strict=True)
    frames = (torch.rand(12, 2, 10, 10, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    with pytest.warns(RuntimeWarning):
        folded = export_nir(net, (2, 10, 10), dt=DT, fold_resistance=True)
    actual, (expected, _) = _norse_run(folded, frames), _reference(net, frames)
    first_spike = next(t for t in range(len(frames)) if _reference(net, frames[:t + 1])[1] > 0)
    # identical up to and including the first spike, different once a reset by subtraction has happened
    torch.testing.assert_close(actual[:first_spike + 1], expected[:first_spike + 1], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(actual, expected, atol=1e-4)


def test_snntorch_synaptic_exports_cuba_lif() -> None:
    snntorch = pytest.importorskip("snntorch")
    net = SpikingNetwork(nn.Linear(5, 6), snntorch.Synaptic(alpha=0.7, beta=0.8), nn.Linear(6, 3))
    with pytest.warns(RuntimeWarning, match="reset"):
        graph = export_nir(net, (5,), dt=DT)
    node = graph.nodes["snntorchneuron_1"]
    assert isinstance(node, nir.CubaLIF) and node.tau_syn.shape == (6,)
    np.testing.assert_allclose(1 - DT / node.tau_syn, 0.7, rtol=1e-5)
    np.testing.assert_allclose(1 - DT / node.tau_mem, 0.8, rtol=1e-5)
    np.testing.assert_allclose(node.w_in * DT / node.tau_syn, 1.0, rtol=1e-5)  # i <- alpha i + I
    np.testing.assert_allclose(node.r * DT / node.tau_mem, 1.0, rtol=1e-5)  # v <- beta v + i


def test_unsupported_modules_and_arguments_raise() -> None:
    net = SpikingNetwork(nn.Conv2d(1, 2, 3), LIF(reset="zero"), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(NIRExportError, match="MaxPool2d"):
        export_nir(net, (1, 6, 6))
    with pytest.raises(ValueError, match="dt"):
        export_nir(net, (1, 6, 6), dt=0.0)
    with pytest.raises(ValueError, match="does not fit"):
        export_nir(net, (3, 6, 6))
    with pytest.raises(TypeError):
        export_nir(nn.Sequential(nn.Linear(2, 2)), (2,))  # type: ignore[arg-type]
