"""Integer frequencies from a float pmf: the table quantization that keeps the expected code length minimal."""
import math

import numpy as np

PRECISION_MIN = 8
PRECISION_MAX = 16


def quantize_pmf(pmf, overflow, precision=16):
    """Integer frequencies for a table: ``pmf`` over its symbols, then the escape carrying ``overflow``.

    Returns ``f`` of shape (n + 1,), int32, every ``f_i >= 1`` and ``sum(f) = 2**precision``, minimizing the expected
    code length ``sum_i q_i * -log2(f_i / 2**precision)`` with ``q = [pmf, overflow] / (sum(pmf) + overflow)``.

    The cost is separable and convex in each ``f_i``, so the optimum takes every unit step ``f -> f + 1`` whose gain
    ``q_i log2((f + 1) / f)`` exceeds a threshold ``lam``; counting those steps gives ``f_i(lam) = 1 +
    floor(1 / (2^(lam / q_i) - 1))``. Bisection finds the ``lam`` where the total crosses ``2**precision``; the few
    units left are tied in gain and go to the largest gains, then the lowest index.
    """
    q, total = _target_probabilities(pmf, overflow, precision)
    hi = float(q.max()) * 1.0001
    lo = float(q.max()) * math.log2(1.0 + 1.0 / total) / 2.0
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if not lo < mid < hi:
            break
        if _frequencies_above(q, mid, total).sum() > total:
            lo = mid
        else:
            hi = mid
    freqs = _frequencies_above(q, hi, total)
    ceiling = _frequencies_above(q, lo, total)
    while freqs.sum() < total:
        open_ = np.flatnonzero(freqs < ceiling)
        gains = q[open_] * np.log2(1.0 + 1.0 / freqs[open_])
        take = open_[np.argsort(-gains, kind="stable")[: total - int(freqs.sum())]]
        freqs[take] += 1
    return freqs.astype(np.int32)


def _target_probabilities(pmf, overflow, precision):
    precision = check_precision(precision)
    pmf = np.asarray(pmf, np.float64)
    if pmf.ndim != 1 or pmf.size < 1:
        raise ValueError(f"pmf must be a non-empty 1-D array, got shape {pmf.shape}")
    q = np.append(pmf, np.float64(overflow))
    if not np.all(np.isfinite(q)) or np.any(q < 0):
        raise ValueError("pmf and overflow must be finite and non-negative")
    total = 1 << precision
    if q.size > total:
        raise ValueError(f"{q.size} symbols (with the escape) do not fit {precision}-bit frequencies")
    if q.sum() <= 0:
        raise ValueError("pmf and overflow sum to zero")
    return q / q.sum(), total


def _frequencies_above(q, lam, total):
    """1 + the number of unit steps of each symbol whose gain ``q log2((f+1)/f)`` is at least ``lam``."""
    with np.errstate(divide="ignore", over="ignore"):
        steps = np.floor(1.0 / np.expm1(lam * math.log(2.0) / q))
    return 1 + np.minimum(np.nan_to_num(steps, nan=0.0, posinf=total), total).astype(np.int64)


def check_precision(precision):
    """``precision`` as an int in [PRECISION_MIN, PRECISION_MAX]; ValueError for anything else (bools included)."""
    if isinstance(precision, (bool, np.bool_)) or not isinstance(precision, (int, np.integer)):
        raise ValueError(f"precision must be an integer, got {precision!r}")
    if not PRECISION_MIN <= precision <= PRECISION_MAX:
        raise ValueError(f"precision must be in [{PRECISION_MIN}, {PRECISION_MAX}], got {precision}")
    return int(precision)
