"""PyTorch Lightning callback that runs the GHL plug-in inside Lightning's training loop.

Lightning's optimisation step runs, in this order: the closure (``training_step`` and ``backward``), the AMP
``GradScaler.unscale_`` (``precision="16-mixed"``), the ``on_before_optimizer_step`` hooks, gradient clipping
(``gradient_clip_val``), then ``optimizer.step()`` (through ``scaler.step`` under AMP).  [`GHLCallback`][] calls
[`ghl_snn.plasticity.GHL.step`][ghl_snn.plasticity.GHL.step] in ``on_before_optimizer_step``, which is the plain
loop's order::

    scaler.scale(loss).backward(); scaler.unscale_(optimizer)   # Lightning
    rule.step()                                                 # GHLCallback: .grad <- M ⊙ |E| (GHL Eq. 6)
    clip_grad_norm_(model.parameters(), max_norm)               # Lightning: clips the GHL update
    scaler.step(optimizer); scaler.update()                     # Lightning

so the Hebbian update is never divided by the loss scale, and clipping acts on the update that is applied.  With
``accumulate_grad_batches=k`` the eligibility is averaged over the ``k`` training forwards of one optimiser step, as
in a plain loop.  Validation and prediction forwards (``eval()`` mode) record nothing.

Usage::

    from ghl_snn.integrations.lightning import GHLCallback
    trainer = lightning.Trainer(callbacks=[GHLCallback(tau=1.0)], gradient_clip_val=1.0)
    trainer.fit(lit_module)   # GHL(lit_module, tau=1.0) is created at fit start and removed at its end
"""
from __future__ import annotations

from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - exercised only without the optional extra
    raise ImportError("ghl_snn.integrations.lightning needs PyTorch Lightning: pip install 'ghl_snn[lightning]' "
                      "(or pip install lightning)") from error

from ..plasticity import GHL


class GHLCallback(pl.Callback):
    """Run [`GHL.step`][ghl_snn.plasticity.GHL.step] after ``backward`` (and AMP unscaling) and before clipping and the
    optimiser step.

    Args:
        rule: a ready [`GHL`][ghl_snn.GHL] on the LightningModule (or on a sub-module of it); if ``None`` one is
            created at the start of ``fit`` with ``GHL(lightning_module, **ghl_kwargs)``.
        **ghl_kwargs: arguments of [`GHL`][ghl_snn.GHL] (``tau``, ``layers``, ``modulator``, ``strict``, ...).

    ``rule.step()`` runs once per optimiser step, at the first ``on_before_optimizer_step`` after a training forward
    was recorded (with several optimisers, the other ones find nothing recorded and are left alone).  The rule's
    state (per-layer temperatures, modulator state) is saved in Lightning checkpoints.
    """

    def __init__(self, rule: GHL | None = None, **ghl_kwargs: Any) -> None:
        if rule is not None and not isinstance(rule, GHL):
            raise TypeError(f"rule must be a ghl_snn.GHL or None, got {type(rule).__name__}")
        if rule is not None and ghl_kwargs:
            raise TypeError(f"give either a ready rule or GHL arguments, not both (got {sorted(ghl_kwargs)})")
        self.rule = rule
        self.ghl_kwargs = ghl_kwargs
        self._owned = rule is None
        self._pending_state: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.rule is None:
            self.rule = GHL(pl_module, **self.ghl_kwargs)
        if self.rule is not None and self._pending_state is not None:
            self.rule.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self.rule is not None and self.rule.recorded():
            self.rule.step()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._owned and self.rule is not None:
            self.rule.remove()
            self.rule = None

    def state_dict(self) -> dict[str, Any]:
        return self.rule.state_dict() if self.rule is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.rule is not None:
            self.rule.load_state_dict(state_dict)
        else:  # restored before setup() created the rule
            self._pending_state = dict(state_dict)
