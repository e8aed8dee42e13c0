"""One-dimensional learning-rate search on a validation split with the grid extended past its edges.

[`extended_search`][ghl_snn.experiments.lr_search.extended_search] evaluates a geometric grid; while the best value
sits on an edge it adds the next value beyond that edge (``factor`` times further), so a chosen value is never on
an edge unless the search ran out of ``max_extensions`` (then the result says so).  Searching one parameter after
the other (the common learning rate, then the hidden layer's multiple of it) costs the sum, not the product, of
the grids.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
