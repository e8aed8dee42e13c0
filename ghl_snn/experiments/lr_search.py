"""Learning-rate search on a validation split: grids extended past their edges, per-layer rates, paired intervals.

* [`extended_search`][]: evaluate a geometric grid; while the best value sits on an edge, add the next value
  beyond that edge (``factor`` times further) -- so a chosen value is never on an edge unless the search ran out
  of ``max_extensions`` (then the result says so).
* [`paired_interval`][]: mean paired difference of two methods over the same seeds and its 95 % confidence
  interval ``mean ± t_{0.975, S-1} sd / sqrt(S)`` (Student's t; seeds paired: same initialisation and data order).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: two-sided 97.5 % quantiles of Student's t for 1..10 degrees of freedom (larger: the normal 1.96 is within 6 %)
T_QUANTILE_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


@dataclass
class SearchResult:
    """Every value tried with its validation score, the chosen one, and whether it still sits on a grid edge."""

    scores: dict[float, float] = field(default_factory=dict)
    best: float = math.nan
    on_edge: str = ""  # "", "low" or "high" (the search stopped with the best value on that edge), "single value"

    def as_dict(self) -> dict[str, Any]:
        return {"scores": {f"{k:g}": v for k, v in sorted(self.scores.items())}, "best": self.best,
                "on_edge": self.on_edge}


def extended_search(evaluate: Callable[[float], float], grid: Sequence[float], factor: float = 3.0,
                    max_extensions: int = 3) -> SearchResult:
    """Maximise ``evaluate(value)`` (a validation score) over ``grid``, extended past whichever edge holds the best
    value, ``factor`` times beyond it, at most ``max_extensions`` times.  Ties go to the smaller value."""
    if not grid or any(not v > 0 for v in grid):
        raise ValueError(f"the grid needs positive values, got {list(grid)!r}")
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    result = SearchResult()
    for value in sorted(set(grid)):
        result.scores[value] = evaluate(value)
    for _ in range(max_extensions + 1):
        values = sorted(result.scores)
        best = max(values, key=lambda v: (result.scores[v], -v))
        result.best = best
        if len(values) == 1:  # one value: nothing to compare, nothing to extend
            result.on_edge = "single value"
            break
        edge = "low" if best == values[0] else "high" if best == values[-1] else ""
        result.on_edge = edge
        if not edge or _ == max_extensions:
            break
        value = best / factor if edge == "low" else best * factor
        result.scores[value] = evaluate(value)
    return result


def paired_interval(values: Sequence[float], controls: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the paired differences ``values[s] - controls[s]`` with a 95 % t interval
    (``low = high = nan`` with fewer than two pairs)."""
    if len(values) != len(controls):
        raise ValueError(f"paired comparison needs as many values as controls, got {len(values)} and "
                         f"{len(controls)}")
    differences = [v - c for v, c in zip(values, controls)]
    if not differences:
        raise ValueError("paired comparison needs at least one pair")
    mean = statistics.mean(differences)
    if len(differences) < 2:
        return mean, math.nan, math.nan
    degrees = len(differences) - 1
    quantile = T_QUANTILE_975[degrees - 1] if degrees <= len(T_QUANTILE_975) else 1.96
    half = quantile * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half
