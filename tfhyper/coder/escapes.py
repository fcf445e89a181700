"""Values outside their table: the escape symbol, then a universal code of how far outside the value is.

Every segment starts with the count of its escapes, then each escape's overflow bit-length class, then the
payloads (the overflow's mantissa bits and a side bit), all coded with the built-in tables below, so that every
int64 value is codable whatever the tables. An overflow ``o`` costs ``2 floor(log2(o + 1)) + 2`` bits or less.
"""
import dataclasses

import numpy as np

from tfhyper.coder.lanes import Block
from tfhyper.coder.tables import ScaledTables
from tfhyper.coder.window import PRECISION, TOTAL
from tfhyper.errors import BitstreamError

COUNT_TABLE, LENGTH_TABLE, CHUNK_TABLE0 = 0, 1, 1  # a chunk of b bits uses table CHUNK_TABLE0 + b
CHUNK_BITS = 8


def _uniform_cdf(bits):
    return np.arange((1 << bits) + 1, dtype=np.int64) << (PRECISION - bits)


def _internal_tables():
    """Tables of the escape machinery: escape-count bit length, overflow bit length, and uniform 1..8-bit chunks."""
    count_freqs = np.full(41, 4, np.int64)  # bit length of the count of escapes in a segment, 0..40
    count_freqs[0] = TOTAL - 4 * 40  # a segment without escapes costs 0.0035 bits
    length_freqs = np.ones(64, np.int64)  # bit length - 1 of (overflow + 1), 0..63: Elias-gamma-like
    length_freqs[:15] = 1 << (15 - np.arange(15))
    length_freqs[0] += TOTAL - length_freqs.sum()
    rows = [np.concatenate([[0], np.cumsum(count_freqs)]), np.concatenate([[0], np.cumsum(length_freqs)])]
    rows += [_uniform_cdf(b) for b in range(1, 9)]
    width = max(r.size for r in rows)
    cdf = np.stack([np.pad(r, (0, width - r.size), constant_values=TOTAL) for r in rows])
    return ScaledTables(cdf, np.array([r.size - 1 for r in rows], np.int64), np.zeros(len(rows), np.int64))


INTERNAL = _internal_tables()


def bit_length_u64(x):
    x = np.asarray(x, np.uint64)
    length = np.zeros(x.shape, np.int64)
    for k in range(64):
        length += (x >> np.uint64(k)) != 0
    return length


def chunks(payload, nbits):
    """Split each unsigned ``payload`` of ``nbits`` bits into big-endian chunks of at most 8 bits."""
    count = -(-nbits // CHUNK_BITS)
    owner = np.repeat(np.arange(nbits.size), count)
    index = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    remaining = nbits[owner] - CHUNK_BITS * index  # bits from this chunk to the end
    width = np.minimum(remaining, CHUNK_BITS)
    shift = (remaining - width).astype(np.uint64)
    values = (payload[owner] >> shift) & ((np.uint64(1) << width.astype(np.uint64)) - np.uint64(1))
    return values.astype(np.int64), width


def chunk_widths(nbits):
    """The widths `chunks` splits payloads of ``nbits`` bits into (what the decoder reads)."""
    count = -(-nbits // CHUNK_BITS)
    owner = np.repeat(np.arange(nbits.size), count)
    index = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    return np.minimum(nbits[owner] - CHUNK_BITS * index, CHUNK_BITS)


def join_chunks(values, widths, nbits):
    """Inverse of `chunks` given each payload's bit count; returns uint64 payloads."""
    count = -(-nbits // CHUNK_BITS)
    payload = np.zeros(nbits.size, np.uint64)
    for k in range(int(count.max(initial=0))):  # at most 8 rounds (64 bits)
        index = np.cumsum(count) - count + k
        has = count > k
        at = index[has]
        payload[has] = (payload[has] << widths[at].astype(np.uint64)) | values[at].astype(np.uint64)
    return payload


@dataclasses.dataclass
class Escapes:
    """The escapes of a segment: overflow bit-length class and payload (mantissa bits, then the side bit)."""

    lengths: np.ndarray  # n, so that overflow + 1 has n + 1 bits
    payload: np.ndarray  # uint64, n + 1 bits
    nbits: np.ndarray

    @classmethod
    def none(cls):
        return cls(np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.int64))

    @classmethod
    def of(cls, values, low, high):
        """Values below ``low`` or above ``high`` (int64 arrays), coded by how far outside they are."""
        below = values < low
        # Differences as uint64 modulo 2^64: exact, as every true difference lies in [0, 2^64).
        overflow = np.where(
            below,
            low.astype(np.uint64) - np.uint64(1) - values.astype(np.uint64),
            values.astype(np.uint64) - high.astype(np.uint64) - np.uint64(1),
        )
        lengths = bit_length_u64(overflow + np.uint64(1)) - 1
        mantissa = (overflow + np.uint64(1)) - (np.uint64(1) << lengths.astype(np.uint64))
        return cls(lengths, (mantissa << np.uint64(1)) | below.astype(np.uint64), lengths + 1)

    def values(self, low, high):
        """The escaped values, or BitstreamError when one does not fit int64.

        In uint64 arithmetic modulo 2^64, exact because every true result checked or returned lies in range.
        """
        u64 = np.uint64
        below = (self.payload & u64(1)).astype(bool)
        overflow = ((u64(1) << self.lengths.astype(u64)) | (self.payload >> u64(1))) - u64(1)
        low, high = low.astype(u64), high.astype(u64)
        room = np.where(below, low + u64(2**63 - 1), u64(2**63 - 2) - high)  # largest overflow that fits int64
        if np.any(overflow > room):
            raise BitstreamError("an escaped value does not fit int64")
        return np.where(below, low - u64(1) - overflow, high + u64(1) + overflow).view(np.int64)

    def costs(self):
        """Bits of each escape beyond its escape symbol: the bit-length class and the payload."""
        return INTERNAL.bits[LENGTH_TABLE, self.lengths] + self.nbits

    def cost(self):
        return float(self.costs().sum())


def count_blocks(count):
    """A count as its bit-length class (COUNT_TABLE), then its mantissa bits: the code of escape counts (and of a
    sparse segment's exception count)."""
    count_class = int(count).bit_length()
    blocks = [Block(INTERNAL, np.array([COUNT_TABLE]), np.array([count_class]))]
    if count_class > 1:
        mantissa = np.array([count - (1 << (count_class - 1))], np.uint64)
        values, widths = chunks(mantissa, np.array([count_class - 1]))
        blocks.append(Block(INTERNAL, CHUNK_TABLE0 + widths, values))
    return blocks


def escape_blocks(escapes):
    """Blocks before a segment's symbols: escape count class, its mantissa, the overflow classes, the payloads."""
    escape_count = escapes.lengths.size
    blocks = count_blocks(escape_count)
    if escape_count:
        blocks.append(Block(INTERNAL, np.full(escape_count, LENGTH_TABLE), escapes.lengths))
        values, widths = chunks(escapes.payload, escapes.nbits)
        blocks.append(Block(INTERNAL, CHUNK_TABLE0 + widths, values))
    return blocks
