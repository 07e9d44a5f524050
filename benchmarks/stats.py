"""Shared figures for the benchmark scripts (percentiles, latency summaries, target verdicts)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def percentile(values: list, q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary_ms(seconds: list, digits: int = 1) -> dict:
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), digits), "p95_ms": round(percentile(ms, 95), digits),
            "max_ms": round(max(ms), digits), "mean_ms": round(statistics.fmean(ms), digits)}


def verdict(value: float, limit: float) -> str:
    return "meets" if value <= limit else "misses"


def write_json(path, figures: dict) -> None:
    """--json OUT: the figures as JSON, for comparing runs."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"figures written to {out}")
