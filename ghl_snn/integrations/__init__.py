"""Integrations with training frameworks (optional extras).

* [`GHLCallback`][ghl_snn.integrations.lightning.GHLCallback] -- PyTorch Lightning
  (``pip install "ghl_snn[lightning]"``); imported lazily, so ``ghl_snn`` itself never needs Lightning.
"""
from __future__ import annotations

from typing import Any

__all__ = ["GHLCallback"]


def __getattr__(name: str) -> Any:
    if name == "GHLCallback":
        from .lightning import GHLCallback
        return GHLCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
