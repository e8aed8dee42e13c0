"""Moved to [`ghl_snn.ops.weight_gradient`][] (the modulators and diagnostics use it too); this alias keeps
``ghl_snn.rules.weight_gradient.conv_weight_gradient`` and ``autotune`` importable."""
from __future__ import annotations

import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    from ..ops import weight_gradient

    warnings.warn(f"ghl_snn.rules.weight_gradient moved to ghl_snn.ops.weight_gradient; import {name} from there",
                  DeprecationWarning, stacklevel=2)
    return getattr(weight_gradient, name)
