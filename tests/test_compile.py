"""GHL under ``torch.compile``: DeepHebb at the batch size of its presets (64) compiles, and the update the plug-in
writes equals the eager one."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ghl_snn import GHL, DeepHebb

pytestmark = [pytest.mark.slow, pytest.mark.faults]


def _update(compiled: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = DeepHebb(width=0.25)
    rule = GHL(model, tau=1.0)
    forward = torch.compile(model) if compiled else model
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(2))
    F.cross_entropy(forward(x), y).backward()
    rule.step()
    return {name: synapse.weight.grad.clone() for name, synapse in rule.synapses.items()}


def test_ghl_on_compiled_deephebb_at_batch_64_writes_the_eager_update():
    torch._dynamo.reset()
    eager, compiled = _update(False), _update(True)
    assert eager.keys() == compiled.keys() and len(eager) == 4  # three convolutions and the classifier
    for name in eager:
        assert compiled[name].abs().max() > 0
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-5, msg=name)
