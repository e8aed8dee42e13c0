"""Files a run writes are readable like any other file the user writes (the umask decides, not mkstemp's 0600)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ghl_snn.comparison.common import write_json


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomically_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "results.json", {"test_acc": 0.5})
        reference = tmp_path / "plain.txt"
        reference.write_text("x")
    finally:
        os.umask(previous)
    mode = stat.S_IMODE((tmp_path / "results.json").stat().st_mode)
    assert mode == stat.S_IMODE(reference.stat().st_mode) == 0o666 & ~umask


def test_metrics_log_the_rate_each_epoch_used_and_the_plot_shows_integer_epochs(tmp_path: Path) -> None:
    """metrics.csv's lr is the rate an epoch trained with (before the scheduler's steps), so a schedule annealed to 0
    never shows 0 for the last epoch; curves.png is written."""
    import csv

    import torch
    from torch import nn

    from ghl_snn.comparison.runner import Trainer, fit

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 0, 1]))] * 2
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3 * len(batches))  # per iteration
    trainer = Trainer(model, optimizer, scheduler=scheduler)
    fit(trainer, lambda epoch: batches, lambda: batches, 3, tmp_path, {"test": True})
    with open(tmp_path / "metrics.csv") as handle:
        logged = [float(row["lr"]) for row in csv.DictReader(handle)]
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), T_max=6)
    expected = []
    for _ in range(3):
        expected.append(reference.get_last_lr()[0])
        for _ in batches:
            reference.optimizer.step()
            reference.step()
    assert logged == pytest.approx(expected)
    assert logged[-1] > 0 and (tmp_path / "curves.png").stat().st_size > 0
