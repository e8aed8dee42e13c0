"""Scores over seeds: Student's t quantiles (exact, no SciPy), the paired difference of two methods' scores with its
confidence interval, used by [`compare`][ghl_snn.comparison.engine.compare], and the ``mean ± sd`` of a table cell."""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["t_quantile", "paired_interval", "mean_sd"]


def _two_sided_t_cdf(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-26.7.4, finite sums in
    ``theta = atan(t / sqrt(df))``)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):  # terms cos^(k) theta * (2*4*..*(k-1)) / (1*3*..*k)
                term *= c2 * (k - 1) / k
                total += term
        return 2 / math.pi * (theta + math.sin(theta) * total)
    total, term = 1.0, 1.0
    for k in range(2, df - 1, 2):  # terms cos^(k) theta * (1*3*..*(k-1)) / (2*4*..*k)
        term *= c2 * (k - 1) / k
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom (``p`` in (0.5, 1)), by
    bisection of the exact two-sided distribution function; ``t_quantile(0.975, n - 1)`` is the factor of a 95 %
    interval."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must lie in (0.5, 1), got {p}")
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be an integer >= 1, got {df}")
    target, low, high = 2 * p - 1, 0.0, 1.0
    while _two_sided_t_cdf(high, int(df)) < target:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if _two_sided_t_cdf(middle, int(df)) < target else (low, middle)
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Paired difference ``a - b`` (one pair per seed): ``{"n", "diffs", "mean", "sd", "low", "high",
    "excludes_zero"}`` with the Student-t interval ``mean ± t_{(1+level)/2, n-1} sd / sqrt(n)``."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same seeds on both sides, got {len(a)} and {len(b)} values")
    if len(a) < 2:
        raise ValueError(f"a paired interval needs at least 2 pairs, got {len(a)}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    half = t_quantile((1 + level) / 2, len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return {"n": len(diffs), "diffs": diffs, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half,
            "level": level, "excludes_zero": bool(mean - half > 0 or mean + half < 0)}


def mean_sd(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """A table cell: ``mean ± sd`` (sample standard deviation) of the finite ``values`` times ``scale``, with
    ``digits`` decimals; one value alone without ``±``; ``"–"`` when none is finite."""
    finite = [float(v) * scale for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "–"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}"
    return f"{statistics.fmean(finite):.{digits}f} ± {statistics.stdev(finite):.{digits}f}"
