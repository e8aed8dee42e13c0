"""GHLCallback runs GHL.step() at the plain loop's point of Lightning's loop: after backward and AMP unscaling, before
gradient clipping and the optimiser step.  Checked by equality with a plain PyTorch loop."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

from ghl_snn import GHL  # noqa: E402
from ghl_snn.integrations.lightning import GHLCallback  # noqa: E402

STEPS = 3


def data():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4 * STEPS, 2, 6, 6, generator=generator)
    labels = torch.randint(0, 3, (4 * STEPS,), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=4)


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


class Lit(pl.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def training_step(self, batch, index):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, index):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def plain_loop(net, clip=None, scaler=None):
    rule = GHL(net, tau=0.7)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for x, y in data():
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16, enabled=scaler is not None):
            loss = F.cross_entropy(net(x), y)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        rule.step()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
    return net


def fit(callback, clip=None, plugins=None, validate=False):
    lit = Lit(make_net())
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[callback],
                         gradient_clip_val=clip, plugins=plugins, num_sanity_val_steps=2 if validate else 0,
                         limit_val_batches=1 if validate else 0)
    trainer.fit(lit, train_dataloaders=data(), val_dataloaders=data() if validate else None)
    return lit.net


def assert_same(got, expected, initial):
    for (name, a), b, c in zip(got.state_dict().items(), expected.state_dict().values(),
                                initial.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(a, c), name  # it did train


def test_callback_equals_plain_loop_with_gradient_clipping_and_validation():
    expected = plain_loop(make_net(), clip=0.5)
    callback = GHLCallback(tau=0.7)
    got = fit(callback, clip=0.5, validate=True)
    assert_same(got, expected, make_net())
    assert callback.rule is None  # removed at the end of fit
    assert all(not m._forward_hooks for m in got.modules())


def test_callback_order_with_amp_grad_scaler():
    from lightning.pytorch.plugins.precision import MixedPrecision
    scale = 2.0 ** 10
    expected = plain_loop(make_net(), clip=0.5, scaler=torch.amp.GradScaler("cpu", init_scale=scale))
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=scale))
    got = fit(GHLCallback(tau=0.7), clip=0.5, plugins=[plugin])
    assert_same(got, expected, make_net())


def test_ready_rule_and_argument_errors():
    net = make_net()
    lit = Lit(net)
    rule = GHL(lit, tau=0.7, layers=nn.Conv2d)
    callback = GHLCallback(rule)
    assert callback.rule is rule and callback.state_dict()["rules"] == {"net.0": {"tau": 0.7}}
    with pytest.raises(TypeError, match="either a ready rule or GHL arguments"):
        GHLCallback(rule, tau=1.0)
    with pytest.raises(TypeError, match="rule must be a ghl_snn.GHL"):
        GHLCallback(copy.copy)
