"""log2 of a frequency in fixed point, from integers only: the expected costs that set the lane schedule.

The schedule (which lanes code which symbols, when lanes retire) must be identical at the encoder and the decoder;
computing it from floats would make it depend on the platform's libm. These integer costs cannot differ.
"""
import numpy as np

from tfhyper.coder.window import PRECISION, TOTAL

# Expected costs are kept in units of 2^-24 bits.
COST_UNITS_PER_BIT = 1 << 24


def _fixed_log2_table():
    """log2(f) in units of 2^-16 for f in [1, 2^16] (0 at f = 0), by repeated squaring in integers."""
    f = np.arange(TOTAL + 1, dtype=np.int64)
    exponent = np.frexp(np.maximum(f, 1).astype(np.float64))[1].astype(np.int64) - 1  # floor(log2 f), exact
    x = (np.maximum(f, 1) << 30) >> exponent  # f / 2^exponent in [1, 2), 30 fraction bits
    log2 = exponent << 16
    for bit in range(15, -1, -1):
        x = (x * x) >> 30
        above = x >> 31  # 1 where x >= 2
        log2 += above << bit
        x >>= above
    return np.where(f > 0, log2, 0)


FIXED_LOG2 = _fixed_log2_table()


def expected_costs(freqs):
    """Expected cost per symbol of each row of 16-bit frequencies (0 where unused), in 2^-24 bits, exactly."""
    return (freqs * ((PRECISION << 16) - FIXED_LOG2[freqs])).sum(axis=1) >> 8
