"""What values cost with the integer tables: the ideal code length that `encode` approaches within a few bytes."""
import numpy as np

from tfhyper.coder.symbols import Segment, symbols_of


def estimate_bits(values, indexes, tables):
    """Ideal code length in bits with the integer tables: sum of -log2(f / 2**precision), escapes included.

    An escaped value costs its escape symbol plus the code of its overflow (bit-length class and payload bits).
    `encode` adds only its own overhead: a header byte, about half a bit per lane, the last lane's 32-bit window
    (which checks the decoded values), and each segment's escape count (0.0035 bits when there are none).
    """
    return float(symbol_bits(values, indexes, tables).sum())


def symbol_bits(values, indexes, tables):
    """The ideal code length of each value in bits (float64, the shape of `values`), escapes included.

    Summed, this is `estimate_bits`; per element it shows where the bits of an image go.
    """
    segment = Segment.from_input((values, indexes, tables), None)
    symbols, escapes = symbols_of(segment)
    bits = tables._coding.bits[segment.indexes, symbols]
    bits[symbols == tables._coding.lengths.take(segment.indexes) - 1] += escapes.costs()
    return bits.reshape(np.shape(values))
