"""Percentiles and CDF points of latency samples, as the reports show them."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cdf_ms", "percentiles_ms"]


def percentiles_ms(seconds: list[float] | np.ndarray[Any, Any], points: tuple[float, ...] = (50, 99, 99.9),
                   ) -> dict[str, float | None]:
    """``{"p50_ms": .., "p99_ms": .., "p99_9_ms": .., "mean_ms": .., "max_ms": ..}`` of samples in seconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000
    out: dict[str, float | None] = {}
    for q in points:
        out[f"p{q:g}_ms".replace(".", "_")] = round(float(np.percentile(values, q)), 3) if values.size else None
    out["mean_ms"] = round(float(values.mean()), 3) if values.size else None
    out["max_ms"] = round(float(values.max()), 3) if values.size else None
    return out


def cdf_ms(seconds: list[float] | np.ndarray[Any, Any]) -> list[float]:
    """101 points: the 0th..100th percentiles in ms (for CDF plots)."""
    values = np.asarray(seconds, dtype=np.float64) * 1000
    if not values.size:
        return []
    return [round(float(v), 4) for v in np.percentile(values, np.arange(101))]
