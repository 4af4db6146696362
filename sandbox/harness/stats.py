"""Timing statistics, made by the engine from raw per-call samples (stdlib only: the engine never
imports torch, and no harness process computes statistics that decide anything)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def median_ci95(samples: Sequence[float]) -> tuple[float, float]:
    """Distribution-free 95% CI of the median: order statistics n/2 -+ 1.96 sqrt(n)/2."""
    ordered = sorted(samples)
    n = len(ordered)
    half_width = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half_width))
    high = min(n - 1, math.ceil(n / 2 + half_width) - 1)
    return ordered[low], ordered[high]


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    low, high = median_ci95(ordered)
    return {
        "median": statistics.median(ordered),
        "iqr": quartiles[2] - quartiles[0],
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
        "ci95": [low, high],
    }


def tight(samples: Sequence[float], target_rel_ci: float) -> bool:
    """Whether the median's 95% interval is within `target_rel_ci` of it on either side."""
    median = statistics.median(samples)
    low, high = median_ci95(samples)
    return median > 0 and (median - low) <= target_rel_ci * median and (high - median) <= target_rel_ci * median


def clean_samples(values: Any, limit: int) -> list[float]:
    """Samples a process sent: a list of at most `limit` finite non-negative numbers, else []."""
    if not isinstance(values, list) or len(values) > limit:
        return []
    cleaned = []
    for value in values:
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            return []
        cleaned.append(float(value))
    return cleaned
