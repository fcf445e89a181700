"""Sparse segments (stream version 2): only the values that differ from their table's most frequent value are coded.

A segment whose values nearly all equal their table's mode (latents an untrained or a very low-rate model leaves
at zero, channels a trained model does not use) costs a fraction of a bit as symbols, but a step of every lane per
symbol, and, coded last, it cannot take the free bits of the lanes retiring into it. Coded sparse, it is the count
of its exceptions, the gap before each (both with the escape machinery's built-in tables: an Elias-gamma-like
length class and its mantissa bits), then the exceptions themselves as an ordinary segment of their own tables; the
other values are their tables' modes. The encoder codes a segment sparse where `worth_it` allows and that is
estimated no larger, and the decoder refuses more exceptions than `worth_it` allows, so that a crafted stream
cannot make it decode symbol by symbol.
"""
import numpy as np

from tfhyper.coder.escapes import (
    CHUNK_TABLE0,
    COUNT_TABLE,
    INTERNAL,
    LENGTH_TABLE,
    bit_length_u64,
    chunks,
    count_blocks,
)
from tfhyper.coder.lanes import Block
from tfhyper.errors import BitstreamError

MAX_EXCEPTIONS = 1 << 13
# A segment is coded sparse only where its values outnumber its exceptions (plus one) this many times: what it
# saves is work per value, and the escape machinery's tables expect few exceptions (its counts' prior gives nothing
# listed 99.8 %). Small or busy segments stay as version 1 writes them.
VALUES_PER_EXCEPTION = 64
# ... and only segments this large: below, coding every value takes little time, and version 2's longer header
# (3 bytes) can outweigh what it saves.
MIN_VALUES = 1 << 14
# At most this many segments of a stream can be sparse (their flags are one 32-bit varint in the header).
MAX_SPARSE_SEGMENTS = 32


def worth_it(size, exception_count):
    """Whether a segment of `size` values with `exception_count` exceptions may be coded sparse."""
    return exception_count <= MAX_EXCEPTIONS and size >= max(MIN_VALUES, VALUES_PER_EXCEPTION * (exception_count + 1))


def exceptions(values, indexes, code):
    """Positions (in coding order) of the values that are not their table's mode."""
    return np.flatnonzero(~code.has_mode[indexes] | (values != code.mode_values[indexes]))


def exception_count(flat, code):
    """How many values `exceptions` finds, from their symbols' flat indexes (`ScaledTables.flat_index`) in one
    gather: a value outside its table's range has the escape symbol, which is no mode."""
    return flat.size - np.count_nonzero(code.flat_is_mode.take(flat))


def _gap_classes(positions):
    """Gaps before each exception (position - previous - 1, from -1) as length class n and n mantissa bits of
    gap + 1 = 2^n + mantissa (the escapes' overflow code without its side bit)."""
    gaps = np.diff(positions, prepend=-1) - 1
    lengths = bit_length_u64(gaps + 1) - 1
    return lengths, (gaps + 1 - (np.int64(1) << lengths)).astype(np.uint64)


def position_blocks(positions):
    """Blocks of a sparse segment before its exceptions: their count, each gap's length class, the mantissas."""
    blocks = count_blocks(positions.size)
    if positions.size:
        lengths, mantissas = _gap_classes(positions)
        blocks.append(Block(INTERNAL, np.full(positions.size, LENGTH_TABLE), lengths))
        values, widths = chunks(mantissas, lengths)
        if values.size:
            blocks.append(Block(INTERNAL, CHUNK_TABLE0 + widths, values))
    return blocks


def position_bits(positions):
    """Estimated bits of `position_blocks`."""
    count_class = int(positions.size).bit_length()
    bits = INTERNAL.bits[COUNT_TABLE, count_class] + max(count_class - 1, 0)
    if positions.size:
        lengths, _ = _gap_classes(positions)
        bits += float(INTERNAL.bits[LENGTH_TABLE, lengths].sum() + lengths.sum())
    return float(bits)


def positions_from(lengths, mantissas, size):
    """The decoder's exception positions from the decoded gap classes and mantissas, checked against the segment's
    size."""
    if np.any(lengths >= 40):  # segments hold fewer than 2^40 values
        raise BitstreamError("an exception of a sparse segment lies outside the segment")
    gaps = (np.int64(1) << lengths) + mantissas.astype(np.int64) - 1
    positions = np.cumsum(gaps + 1) - 1
    if positions.size and positions[-1] >= size:
        raise BitstreamError("an exception of a sparse segment lies outside the segment")
    return positions


def check_count(count, size):
    """Refuses more exceptions than an encoder lists (`worth_it`): a bound on the decoder's work per segment."""
    if not worth_it(size, count):
        raise BitstreamError(f"a sparse segment of {size} values declares {count} exceptions")


def fill(indexes, code, positions, exception_values):
    """The segment's values: its tables' modes, and the exceptions at their positions. An encoder lists exactly the
    values that are not their table's mode, so a stream listing another, or leaving out a value of a table without
    a mode, is refused: a segment has one coding."""
    at = indexes[positions]
    unlisted = ~code.has_mode[indexes]
    unlisted[positions] = False
    if unlisted.any() or np.any(code.has_mode[at] & (exception_values == code.mode_values[at])):
        raise BitstreamError("a sparse segment lists its exceptions wrongly")
    values = code.mode_values[indexes]  # a new array
    values[positions] = exception_values
    return values
