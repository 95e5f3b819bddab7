"""Buckets of activations, relative to the percentiles of all of them: the one rule for the filter and the reports.

An activation at or above the high percentile is high, one at or below the low percentile is low,
anything between is mid. When both hold (the percentiles coincide, e.g. many equal activations),
high wins, as in the original tool; with fewer than two activations there is no spread to take
percentiles of, and everything is mid. So every activation is in exactly one bucket.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Bucket = Literal["low", "mid", "high"]
BUCKETS: tuple[Bucket, ...] = ("low", "mid", "high")


def bucket_cuts(activations: np.ndarray, low_percentile: float, high_percentile: float) -> tuple[float, float] | None:
    """The activations at the low and high percentiles; None below two activations."""
    if activations.size < 2:
        return None
    low, high = np.percentile(activations, [low_percentile, high_percentile])
    return float(low), float(high)


def bucket_codes(activations: np.ndarray, cuts: tuple[float, float] | None) -> np.ndarray:
    """Each activation's bucket under these cuts, as an index into BUCKETS."""
    codes = np.ones(activations.shape, dtype=np.intp)
    if cuts is not None:
        codes[activations <= cuts[0]] = 0
        codes[activations >= cuts[1]] = 2  # after low: on ties high wins
    return codes


def bucket_counts(activations: np.ndarray, low_percentile: float, high_percentile: float) -> dict[str, int]:
    """How many activations each bucket holds; the counts sum to len(activations)."""
    activations = np.asarray(activations, dtype=np.float64)
    codes = bucket_codes(activations, bucket_cuts(activations, low_percentile, high_percentile))
    counts = np.bincount(codes, minlength=len(BUCKETS))
    return {bucket: int(count) for bucket, count in zip(BUCKETS, counts)}
