"""The range coder's arithmetic: tables at 16-bit precision, a 32-bit window, and byte-wise renormalization.

An interval ``[low, low + R)`` is narrowed for symbol ``s`` to

    [low + floor(R cdf[s] / 2^16),  low + floor(R cdf[s+1] / 2^16))

so that the subintervals tile the parent exactly and the cost of a symbol is ``-log2(f / 2^16)`` up to an error of
order ``2^16 / (R f)`` with ``R >= 2^24``, i.e. negligible. Encoder and decoder share these constants and the lookup
tables below, so that both shift the same bytes at the same step.
"""
import numpy as np

# All tables are scaled to this precision internally; 2^16 * 2^32 stays far inside int64.
PRECISION = 16
TOTAL = 1 << PRECISION
WINDOW = 32
FULL_RANGE = 1 << WINDOW
WINDOW_MASK = FULL_RANGE - 1

# Renormalization: a range below 2^24 shifts one byte, below 2^16 two; indexed by range >> 16.
SHIFT_BYTES = np.zeros((FULL_RANGE >> 16) + 1, np.int64)
SHIFT_BYTES[0] = 2
SHIFT_BYTES[1:256] = 1
SHIFT_BITS = SHIFT_BYTES * 8
BYTE_MASKS = np.array([0, 0xFF, 0xFFFF], np.int64)
