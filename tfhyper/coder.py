"""Range coding of integer symbols with static integer tables (the AE/AD boxes of Figure 3), in pure numpy.

Each coded integer ``v`` picks one table ``t`` of a `CodingTables`; symbol ``s = v - offsets[t]`` is coded with
probability ``(cdf[t, s+1] - cdf[t, s]) / 2**precision``. Values outside the table's range take the last symbol of the
table (the escape) followed by a universal code of how far outside they are, so that every int64 value is codable.

The coder is a range coder (Martin 1979) with a 32-bit window and exact multiply-then-shift subdivision:
an interval ``[low, low + R)`` is narrowed for symbol ``s`` to

    [low + floor(R cdf[s] / 2^16),  low + floor(R cdf[s+1] / 2^16))

so that the subintervals tile the parent exactly and the cost of a symbol is ``-log2(f / 2^16)`` up to an error of
order ``2^16 / (R f)`` with ``R >= 2^24``, i.e. negligible. To run in numpy without a Python loop per symbol, ``S``
independent coders ("lanes") advance together: one loop step codes one symbol in each lane. The decoder mirrors the
encoder's ``R`` exactly, so it knows when each lane shifts a byte; the stream lays out bytes in the order the decoder
reads them, and carries are propagated after encoding.

A lane ends owing the decoder its 32-bit window, of which only ``32 - log2 R`` bits carry information. The other
``floor(log2 R)`` bits are free: the decoder hands them back to a first-in first-out pool that later reads draw from
before the file. Lanes therefore retire one at a time at the end of the last segment (the schedule is computed from
the tables alone, identically on both sides), each freed window feeding the lanes still running. The last lane's
free bits hold a check of everything decoded (CRC-32 of the values modulo its range, at least 24 bits), so that a
corrupted or truncated stream fails instead of decoding to wrong values. The overhead is about half a bit per lane
plus 4 bytes, instead of four bytes per lane.

Stream layout: one header byte ``(log2 S) << 4 | min(segments, 15)`` (then an unsigned LEB128 of ``segments - 15``
when ``segments >= 15``), followed by the bit stream. Every segment starts with the count of its escapes (coded
with a built-in table), then the escapes' sizes and payloads, then its symbols.
"""
import dataclasses
import functools
import math
import zlib

import numpy as np

from tfhyper.errors import BitstreamError

PRECISION_MIN = 8
PRECISION_MAX = 16

# All tables are scaled to this precision internally; 2^16 * 2^32 stays far inside int64.
_PRECISION = 16
_TOTAL = 1 << _PRECISION
_WINDOW = 32
_FULL_RANGE = 1 << _WINDOW
_WINDOW_MASK = _FULL_RANGE - 1
_TABLE_KEY_SHIFT = _PRECISION + 1

_MAX_LANES_LOG2 = 9
_MAX_SYMBOLS = 1 << 40
_MAX_SEGMENTS = 1 << 24

# A lane is retired only once the lanes still running are expected to read its freed window (at most 32 bits),
# with margin for the spread of actual costs around their expectation.
_RETIRE_BITS_PER_LANE = 40
_RETIRE_SLACK_BITS = 48
# The lane count is chosen so that the retirement loss (about half a bit per lane) stays near 0.2 % of the rate,
# that the last segment can feed every retiring lane, and, for speed, at least 16 lanes whenever there are symbols.
_BITS_PER_LANE = 256
_LAST_SEGMENT_BITS_PER_LANE = 128
_MIN_SYMBOLS_PER_LANE = 32
_MIN_LANES = 16
_FLOOR_BITS_PER_LANE = 2048
_MAX_STEPS = 1 << 15

# Renormalization: a range below 2^24 shifts one byte, below 2^16 two; indexed by range >> 16.
_SHIFT_BYTES = np.zeros((_FULL_RANGE >> 16) + 1, np.int64)
_SHIFT_BYTES[0] = 2
_SHIFT_BYTES[1:256] = 1
_BYTE_MASKS = np.array([0, 0xFF, 0xFFFF], np.int64)
# After a shift, low keeps its 32 window bits; without one it also keeps its carry bit (bit 32) for the next shift.
_LOW_MASKS = np.array([(2 << _WINDOW) - 1, _WINDOW_MASK, _WINDOW_MASK], np.int64)


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
    precision = _check_precision(precision)
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


def _check_precision(precision):
    if isinstance(precision, (bool, np.bool_)) or not isinstance(precision, (int, np.integer)):
        raise ValueError(f"precision must be an integer, got {precision!r}")
    if not PRECISION_MIN <= precision <= PRECISION_MAX:
        raise ValueError(f"precision must be in [{PRECISION_MIN}, {PRECISION_MAX}], got {precision}")
    return int(precision)


@dataclasses.dataclass(frozen=True, eq=False)
class CodingTables:
    """Static integer coding tables, one row per table (e.g. one per scale of eq. 11, or per channel of App. 6.1).

    ``cdf[t, :lengths[t] + 1]`` are cumulative frequencies from 0 to ``2**precision``, strictly increasing (every
    symbol has frequency >= 1), padded with ``2**precision`` after. Symbol ``s < lengths[t] - 1`` codes the value
    ``offsets[t] + s``; symbol ``lengths[t] - 1`` is the escape for values outside ``[offsets[t], offsets[t] +
    lengths[t] - 2]``. Arrays are stored as read-only copies; construction validates them.
    """

    cdf: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    precision: int = 16

    def __post_init__(self):
        object.__setattr__(self, "cdf", _frozen_int32(self.cdf, "cdf"))
        object.__setattr__(self, "lengths", _frozen_int32(self.lengths, "lengths"))
        object.__setattr__(self, "offsets", _frozen_int32(self.offsets, "offsets"))
        object.__setattr__(self, "precision", _check_precision(self.precision))
        self.validate()

    @classmethod
    def from_pmfs(cls, pmfs, offsets, overflows, precision=16):
        """Tables from float pmfs (one 1-D array per table), the value of each pmf's first entry, and tail masses."""
        pmfs = [np.asarray(p, np.float64) for p in pmfs]
        offsets = np.asarray(offsets)
        overflows = np.asarray(overflows, np.float64)
        if offsets.shape != (len(pmfs),) or overflows.shape != (len(pmfs),):
            raise ValueError(f"need one offset and one overflow per pmf ({len(pmfs)} pmfs)")
        freqs = [quantize_pmf(p, o, precision) for p, o in zip(pmfs, overflows)]
        lengths = np.array([f.size for f in freqs], np.int64)
        cdf = np.full((len(freqs), int(lengths.max(initial=1)) + 1), 1 << precision, np.int64)
        for row, f in zip(cdf, freqs):
            row[0] = 0
            row[1 : f.size + 1] = np.cumsum(f)
        return cls(cdf=cdf, lengths=lengths, offsets=offsets, precision=precision)

    def to_dict(self):
        """The tables as numpy arrays only (e.g. to keep them as weights of a saved model)."""
        return {
            "cdf": self.cdf.copy(),
            "lengths": self.lengths.copy(),
            "offsets": self.offsets.copy(),
            "precision": np.array(self.precision, np.int32),
        }

    @classmethod
    def from_dict(cls, d):
        """Inverse of `to_dict`; raises ValueError for anything that is not a consistent set of tables."""
        try:
            keys = ("cdf", "lengths", "offsets", "precision")
            cdf, lengths, offsets, precision = (np.asarray(d[k]) for k in keys)
        except (KeyError, TypeError) as e:
            raise ValueError(f"coding tables need the arrays cdf, lengths, offsets, precision: {e}") from None
        if precision.shape != () or precision.dtype.kind not in "iu":
            raise ValueError("precision must be an integer scalar")
        return cls(cdf=cdf, lengths=lengths, offsets=offsets, precision=int(precision))

    def validate(self):
        """Raise ValueError unless every table is a strictly increasing cdf from 0 to 2**precision."""
        cdf, lengths, offsets, top = self.cdf, self.lengths, self.offsets, 1 << self.precision
        if cdf.ndim != 2 or cdf.shape[0] < 1 or cdf.shape[1] < 3:
            raise ValueError(f"cdf must have shape (tables >= 1, symbols + 1 >= 3), got {cdf.shape}")
        if lengths.shape != (cdf.shape[0],) or offsets.shape != (cdf.shape[0],):
            raise ValueError(f"lengths and offsets must have shape ({cdf.shape[0]},)")
        if np.any(lengths < 2) or np.any(lengths > cdf.shape[1] - 1):
            raise ValueError(f"lengths must be in [2, {cdf.shape[1] - 1}] (a symbol and the escape)")
        if np.any(offsets.astype(np.int64) + lengths - 2 > np.iinfo(np.int32).max):
            raise ValueError("offsets + lengths - 2 must fit int32")
        if np.any(cdf[:, 0] != 0):
            raise ValueError("every cdf must start at 0")
        column = np.arange(cdf.shape[1])
        if np.any((cdf != top) & (column >= lengths[:, None])):
            raise ValueError(f"every cdf must reach 2**precision = {top} at its length and stay there")
        if np.any((np.diff(cdf, axis=1) < 1) & (column[:-1] < lengths[:, None])):
            raise ValueError("every cdf must be strictly increasing (each frequency >= 1)")

    @functools.cached_property
    def _coding(self):
        scaled = self.cdf.astype(np.int64) << (_PRECISION - self.precision)
        return _Tables(scaled, self.lengths.astype(np.int64), self.offsets.astype(np.int64))


def _frozen_int32(array, name):
    array = np.asarray(array)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got dtype {array.dtype}")
    info = np.iinfo(np.int32)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"{name} does not fit int32")
    array = array.astype(np.int32)  # a copy: later changes to the caller's array do not reach the tables
    array.setflags(write=False)
    return array


def _fixed_log2_table():
    """log2(f) in units of 2^-16 for f in [1, 2^16] (0 at f = 0), by repeated squaring in integers.

    Integer arithmetic makes the lane schedule, which depends on these costs, identical on every platform.
    """
    f = np.arange(_TOTAL + 1, dtype=np.int64)
    exponent = np.frexp(np.maximum(f, 1).astype(np.float64))[1].astype(np.int64) - 1  # floor(log2 f), exact
    x = (np.maximum(f, 1) << 30) >> exponent  # f / 2^exponent in [1, 2), 30 fraction bits
    log2 = exponent << 16
    for bit in range(15, -1, -1):
        x = (x * x) >> 30
        above = x >> 31  # 1 where x >= 2
        log2 += above << bit
        x >>= above
    return np.where(f > 0, log2, 0)


_FIXED_LOG2 = _fixed_log2_table()
_COST_UNITS_PER_BIT = 1 << 24


class _Tables:
    """Tables at 16-bit precision in the shapes the coder uses.

    Decoding searches ``keys``: the cdf of table ``t`` offset by ``t << 17``, all tables flattened, so that one
    `np.searchsorted` per step finds every lane's symbol whatever its table. ``start``/``end`` give the cdf values
    around a search result.
    """

    def __init__(self, cdf16, lengths, offsets):
        self.cdf = cdf16
        self.lengths = lengths
        self.offsets = offsets
        tables, width = cdf16.shape
        column = np.arange(width)
        valid = column <= lengths[:, None]
        self.keys = ((np.arange(tables, dtype=np.int64)[:, None] << _TABLE_KEY_SHIFT) + cdf16)[valid]
        values = cdf16[valid]
        self.start = np.concatenate([[0], values[:-1]])
        self.end = values
        self.first = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        self.key_base = np.arange(tables, dtype=np.int64) << _TABLE_KEY_SHIFT
        freqs = np.diff(cdf16, axis=1) * valid[:, 1:]
        bits = -np.log2(np.maximum(freqs, 1) / _TOTAL)
        self.bits = np.where(valid[:, 1:], bits, 0.0)
        # Expected cost per symbol of each table in 2^-24 bits, from integers only (it sets the lane schedule).
        self.expected_cost = (freqs * ((_PRECISION << 16) - _FIXED_LOG2[freqs])).sum(axis=1) >> 8

    def bounds(self, tables, symbols):
        flat = tables * self.cdf.shape[1] + symbols
        return self.cdf.take(flat), self.cdf.take(flat + 1)


def _uniform_cdf(bits):
    return np.arange((1 << bits) + 1, dtype=np.int64) << (_PRECISION - bits)


def _internal_tables():
    """Tables of the escape machinery: escape-count bit length, overflow bit length, and uniform 1..8-bit chunks."""
    count_freqs = np.full(41, 4, np.int64)  # bit length of the count of escapes in a segment, 0..40
    count_freqs[0] = _TOTAL - 4 * 40  # a segment without escapes costs 0.0035 bits
    length_freqs = np.ones(64, np.int64)  # bit length - 1 of (overflow + 1), 0..63: Elias-gamma-like
    length_freqs[:15] = 1 << (15 - np.arange(15))
    length_freqs[0] += _TOTAL - length_freqs.sum()
    rows = [np.concatenate([[0], np.cumsum(count_freqs)]), np.concatenate([[0], np.cumsum(length_freqs)])]
    rows += [_uniform_cdf(b) for b in range(1, 9)]
    width = max(r.size for r in rows)
    cdf = np.stack([np.pad(r, (0, width - r.size), constant_values=_TOTAL) for r in rows])
    return _Tables(cdf, np.array([r.size - 1 for r in rows], np.int64), np.zeros(len(rows), np.int64))


_INTERNAL = _internal_tables()
_COUNT_TABLE, _LENGTH_TABLE, _CHUNK_TABLE0 = 0, 1, 1  # chunk of b bits uses table _CHUNK_TABLE0 + b
_CHUNK_BITS = 8


def _bit_length_u64(x):
    x = np.asarray(x, np.uint64)
    length = np.zeros(x.shape, np.int64)
    for k in range(64):
        length += (x >> np.uint64(k)) != 0
    return length


def _chunks(payload, nbits):
    """Split each unsigned ``payload`` of ``nbits`` bits into big-endian chunks of at most 8 bits."""
    count = -(-nbits // _CHUNK_BITS)
    owner = np.repeat(np.arange(nbits.size), count)
    index = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    remaining = nbits[owner] - _CHUNK_BITS * index  # bits from this chunk to the end
    width = np.minimum(remaining, _CHUNK_BITS)
    shift = (remaining - width).astype(np.uint64)
    values = (payload[owner] >> shift) & ((np.uint64(1) << width.astype(np.uint64)) - np.uint64(1))
    return values.astype(np.int64), width


def _join_chunks(values, widths, nbits):
    """Inverse of `_chunks` given each payload's bit count; returns uint64 payloads."""
    count = -(-nbits // _CHUNK_BITS)
    payload = np.zeros(nbits.size, np.uint64)
    for k in range(int(count.max(initial=0))):  # at most 8 rounds (64 bits)
        index = np.cumsum(count) - count + k
        has = count > k
        at = index[has]
        payload[has] = (payload[has] << widths[at].astype(np.uint64)) | values[at].astype(np.uint64)
    return payload


@dataclasses.dataclass
class _Segment:
    """One segment's symbols in coding order: values, table per value, the tables."""

    values: np.ndarray
    indexes: np.ndarray
    tables: "CodingTables"

    @classmethod
    def from_input(cls, segment, default_tables):
        if not isinstance(segment, (tuple, list)) or len(segment) not in (2, 3):
            raise ValueError("each segment must be (values, indexes, tables) or (values, indexes)")
        tables = segment[2] if len(segment) == 3 else default_tables
        if not isinstance(tables, CodingTables):
            raise ValueError(f"segment tables must be CodingTables, got {type(tables).__name__}")
        values = np.asarray(segment[0])
        if values.dtype.kind not in "iu" or (values.dtype.kind == "u" and values.size and values.max() > 2**63 - 1):
            raise ValueError(f"values must be an int64-representable integer array, got dtype {values.dtype}")
        indexes = _check_indexes(segment[1], tables)
        if values.shape != np.shape(segment[1]):
            raise ValueError(f"values {values.shape} and indexes {np.shape(segment[1])} differ in shape")
        return cls(values.astype(np.int64).ravel(), indexes, tables)


def _check_indexes(indexes, tables):
    if not isinstance(tables, CodingTables):
        raise ValueError(f"tables must be CodingTables, got {type(tables).__name__}")
    indexes = np.asarray(indexes)
    if indexes.dtype.kind not in "iu":
        raise ValueError(f"indexes must be an integer array, got dtype {indexes.dtype}")
    if indexes.size >= _MAX_SYMBOLS:
        raise ValueError(f"at most {_MAX_SYMBOLS - 1} symbols per segment")
    if indexes.size and (indexes.min() < 0 or indexes.max() >= tables.cdf.shape[0]):
        raise ValueError(f"indexes must be in [0, {tables.cdf.shape[0]})")
    return indexes.astype(np.int64).ravel()


@dataclasses.dataclass
class _Escapes:
    """The escapes of a segment: overflow bit-length class and payload (mantissa bits, then the side bit)."""

    lengths: np.ndarray  # n, so that overflow + 1 has n + 1 bits
    payload: np.ndarray  # uint64, n + 1 bits
    nbits: np.ndarray

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
        lengths = _bit_length_u64(overflow + np.uint64(1)) - 1
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
        return _INTERNAL.bits[_LENGTH_TABLE, self.lengths] + self.nbits

    def cost(self):
        return float(self.costs().sum())


def _symbols(segment):
    """Symbol of every value in its table (the escape where out of range), and the escapes."""
    code = segment.tables._coding
    t = segment.indexes
    low = code.offsets.take(t)
    regular = code.lengths.take(t) - 1  # count of regular symbols
    offset = segment.values.astype(np.uint64) - low.astype(np.uint64)  # modulo 2^64
    inside = offset < regular.astype(np.uint64)
    symbols = np.where(inside, offset.astype(np.int64), regular)
    out = ~inside
    escapes = _Escapes.of(segment.values[out], low[out], low[out] + regular[out] - 1)
    return symbols, escapes


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
    segment = _Segment.from_input((values, indexes, tables), None)
    symbols, escapes = _symbols(segment)
    bits = tables._coding.bits[segment.indexes, symbols]
    bits[symbols == tables._coding.lengths.take(segment.indexes) - 1] += escapes.costs()
    return bits.reshape(np.shape(values))


# --- coding program: blocks of symbols and the lane schedule -------------------------------------------------------


@dataclasses.dataclass
class _Block:
    """Symbols coded consecutively, with the number of active lanes at each step (non-increasing at the end)."""

    tables: _Tables
    indexes: np.ndarray
    symbols: np.ndarray = None
    widths: np.ndarray = None
    retiring: bool = False


def _round_robin(count, lanes):
    full, rest = divmod(count, lanes)
    return np.array([lanes] * full + ([rest] if rest else []), np.int64)


def _retiring_widths(costs, lanes):
    """Steps of the last block: all lanes, then lanes retire one at a time from the highest.

    Working back from the end, the last ``m`` lanes must together read more than the ``m`` windows freed before them:
    the steps with ``m`` lanes active are as few as make the expected cost of the last symbols reach
    ``m * 40 + 48`` bits. When the block is too cheap for that, the steps with ``m`` lanes are capped so that
    retiring at most doubles the number of steps, and the windows not read cost their bits. ``costs`` are the
    expected costs per symbol in integer units; the same integers on both sides give the same schedule.
    """
    count = costs.size
    suffix = np.cumsum(costs[::-1])
    # log2(lanes) >= the harmonic number H(lanes - 1), so the capped steps add up to at most count / lanes.
    budget, log2_lanes = max(count // lanes, 1), max(lanes.bit_length() - 1, 1)
    steps = np.zeros(lanes, np.int64)
    used = 0
    for m in range(1, lanes):
        target = (m * _RETIRE_BITS_PER_LANE + _RETIRE_SLACK_BITS) * _COST_UNITS_PER_BIT
        needed = int(np.searchsorted(suffix, target)) + 1
        cap = max(1, budget // (m * log2_lanes))
        steps[m] = min(max(0, -(-(needed - used) // m)), cap, (count - used) // m)
        used += steps[m] * m
    full, rest = divmod(count - used, lanes)
    if rest:
        steps[rest] += 1
    tail = np.repeat(np.arange(lanes - 1, 0, -1), steps[:0:-1])
    return np.concatenate([np.full(full, lanes, np.int64), tail])


def _retiring_order(indexes, code, lanes):
    """Coding order of the last segment: symbols of the costliest tables go last, where lanes retire.

    Retiring needs about 40 bits per lane read after it; taking them from the costliest symbols keeps the steps
    with few lanes few. Chosen from the tables' integer expected costs, so the decoder derives the same order.
    """
    cost = code.expected_cost
    counts = np.bincount(indexes, minlength=cost.size)
    by_cost = np.argsort(-cost, kind="stable")
    need = 2 * (lanes * _RETIRE_BITS_PER_LANE + _RETIRE_SLACK_BITS) * _COST_UNITS_PER_BIT
    reached = np.cumsum(counts[by_cost] * cost[by_cost]) >= need
    chosen = np.zeros(cost.size, bool)
    chosen[by_cost[: int(np.argmax(reached)) + 1 if reached.any() else cost.size]] = True
    late = chosen[indexes]
    return np.concatenate([np.flatnonzero(~late), np.flatnonzero(late)])


def _escape_blocks(escape_count, escapes):
    """Blocks before a segment's symbols: escape count class, its mantissa, the overflow classes, the payloads."""
    count_class = int(escape_count).bit_length()
    blocks = [_Block(_INTERNAL, np.array([_COUNT_TABLE]), np.array([count_class]))]
    if count_class > 1:
        values, widths = _chunks(
            np.array([escape_count - (1 << (count_class - 1))], np.uint64), np.array([count_class - 1])
        )
        blocks.append(_Block(_INTERNAL, _CHUNK_TABLE0 + widths, values))
    if escape_count:
        blocks.append(_Block(_INTERNAL, np.full(escape_count, _LENGTH_TABLE), escapes.lengths))
        values, widths = _chunks(escapes.payload, escapes.nbits)
        blocks.append(_Block(_INTERNAL, _CHUNK_TABLE0 + widths, values))
    return blocks


_LANE_COUNTS = [1 << k for k in range(_MAX_LANES_LOG2 + 1)]


def _choose_lanes(total_bits, last_bits, symbol_count):
    by_symbols = symbol_count / _MIN_SYMBOLS_PER_LANE
    lanes = min(1 << _MAX_LANES_LOG2, total_bits / _BITS_PER_LANE, last_bits / _LAST_SEGMENT_BITS_PER_LANE, by_symbols)
    # The speed floor only where a lane that cannot retire (up to ~4 bytes) stays a small part of the file.
    floor = min(_MIN_LANES, by_symbols, total_bits / _FLOOR_BITS_PER_LANE)
    lanes = max(lanes, floor, 1.0)
    return max(1 << int(math.floor(math.log2(lanes))), minimum_lanes(symbol_count))


def minimum_lanes(symbol_count):
    """Fewest lanes for `symbol_count` symbols: bounds the decoder's Python steps (at most 2^15 per stream), so
    that neither a flat image nor a crafted file can make decoding crawl one symbol per step."""
    needed = -(-int(symbol_count) // _MAX_STEPS)
    return min(1 << _MAX_LANES_LOG2, 1 << max(0, (needed - 1).bit_length()))


def _header(lanes_log2, segments):
    head = bytearray([(lanes_log2 << 4) | min(segments, 15)])
    rest = segments - 15
    while rest >= 0:
        head.append((rest & 0x7F) | (0x80 if rest > 0x7F else 0))
        rest = (rest >> 7) if rest > 0x7F else -1
    return bytes(head)


def encode(segments, tables=None, *, lanes=None):
    """Code segments into one stream; decode them in the same order with `Decoder`.

    ``segments`` is a list of ``(values, indexes, tables)`` (or ``(values, indexes)`` using ``tables``): integer
    arrays of one shape, ``indexes`` choosing a table of `CodingTables` for each value. Any int64 value is codable.
    ``lanes`` (a power of two up to 512) overrides the number of interleaved coders, otherwise chosen from the
    symbol count and the estimated rate: more lanes decode faster and cost about half a bit each.
    """
    segments = [_Segment.from_input(s, tables) for s in segments]
    if len(segments) >= _MAX_SEGMENTS:
        raise ValueError(f"at most {_MAX_SEGMENTS - 1} segments")
    blocks, bits = _coding_blocks(segments)
    if lanes is None:
        lanes = _choose_lanes(sum(bits), bits[-1] if bits else 0.0, sum(b.indexes.size for b in blocks))
    elif not isinstance(lanes, (int, np.integer)) or isinstance(lanes, bool) or lanes not in _LANE_COUNTS:
        raise ValueError(f"lanes must be a power of two up to {1 << _MAX_LANES_LOG2}, got {lanes!r}")
    lanes = int(lanes)
    _schedule(blocks, lanes, retiring=bool(segments) and segments[-1].values.size > 0)
    checksum = 0
    for segment in segments:
        checksum = _values_checksum(segment.values, checksum)
    return _header(lanes.bit_length() - 1, len(segments)) + _encode_blocks(blocks, lanes, checksum)


def _coding_blocks(segments):
    """Every segment's escape blocks then its symbols, and each segment's estimated bits."""
    blocks, bits = [], []
    for segment in segments:
        if segment.values.size == 0:
            bits.append(0.0)
            continue
        symbols, escapes = _symbols(segment)
        code = segment.tables._coding
        blocks += _escape_blocks(escapes.lengths.size, escapes)
        blocks.append(_Block(code, segment.indexes, symbols))
        bits.append(float(code.bits[segment.indexes, symbols].sum()) + escapes.cost())
    return blocks, bits


def _schedule(blocks, lanes, retiring):
    """Lane widths of every block; lanes retire in the last block when it holds the last segment's symbols."""
    if retiring:
        last = blocks[-1]
        order = _retiring_order(last.indexes, last.tables, lanes)
        last.indexes, last.symbols, last.retiring = last.indexes[order], last.symbols[order], True
    for block in blocks:
        if block.retiring:
            block.widths = _retiring_widths(block.tables.expected_cost[block.indexes], lanes)
        else:
            block.widths = _round_robin(block.indexes.size, lanes)


def _values_checksum(values, previous=0):
    """CRC-32 of int64 values (little-endian, C order), continuing ``previous``: what the last lane's window checks."""
    return zlib.crc32(np.ascontiguousarray(values, dtype="<i8").tobytes(), previous)


# --- encoder -------------------------------------------------------------------------------------------------------


def _encode_blocks(blocks, lanes, checksum):
    if not blocks:
        return b""
    starts, ends = zip(*(b.tables.bounds(b.indexes, b.symbols) for b in blocks))
    start, end = np.concatenate(starts), np.concatenate(ends)
    widths = np.concatenate([b.widths for b in blocks])
    low, rng, low_before, shift = _range_code(start, end, widths, lanes)
    retire_step = sum(b.widths.size for b in blocks[:-1]) if blocks[-1].retiring else None
    return _Stream(widths, low_before, shift, lanes).bytes(low, rng, retire_step, checksum)


def _range_code(start, end, widths, lanes):
    """Advance all lanes symbol by symbol; record each step's low (before shifting) and shift in bits."""
    low = np.zeros(lanes, np.int64)
    rng = np.full(lanes, _FULL_RANGE, np.int64)
    low_before = np.empty(start.size, np.int64)
    shift = np.empty(start.size, np.int64)
    pos = 0
    for a in widths.tolist():
        nxt = pos + a
        r, lo_ = rng[:a], low[:a]
        below = r * start[pos:nxt]
        below >>= _PRECISION
        above = r * end[pos:nxt]
        above >>= _PRECISION
        lo_ += below
        np.subtract(above, below, out=r)
        nbytes = _SHIFT_BYTES.take(r >> 16)
        keep = _LOW_MASKS.take(nbytes)
        nbytes <<= 3
        low_before[pos:nxt] = lo_
        shift[pos:nxt] = nbytes
        lo_ <<= nbytes
        lo_ &= keep
        r <<= nbytes
        pos = nxt
    return low, rng, low_before, shift


class _Stream:
    """Lays the lanes' bytes out in the order the decoder reads them, with carries and retired windows resolved.

    The decoder reads 4 bytes when a lane starts and, at every step, the bytes the encoder shifted at that step, in
    lane order; lane ``k``'s ``r``-th read is its ``r``-th output byte (its shifted bytes, then its final 32-bit
    window). "G" below is that read sequence. When a lane retires, the decoder knows ``d = w - low`` of its final
    window ``w``, and the low ``m = floor(log2 R)`` bits of ``w - low`` are free: they go to a FIFO pool that later
    reads draw from before the file, so those G bits are not stored. Lanes are laid out one after the other in
    ``lane_bytes``; ``g_to_lane_bytes`` maps G to them.
    """

    def __init__(self, widths, low_before, shift, lanes):
        self.lanes, self.widths, self.live = lanes, widths, int(widths.max())
        step = np.repeat(np.arange(widths.size), widths)
        lane = np.arange(widths.sum()) - np.repeat(np.cumsum(widths) - widths, widths)
        read = np.flatnonzero(shift)
        read_lane, read_bytes = lane[read], shift[read] >> 3
        within = _rank_within_lanes(read_lane, read_bytes, self.live)
        self.shifted = np.bincount(read_lane, weights=read_bytes, minlength=self.live).astype(np.int64)
        self.base = np.cumsum(self.shifted + 4) - (self.shifted + 4)
        chunks = low_before[read] >> (_WINDOW - shift[read])
        self.lane_bytes = self._shifted_bytes(chunks, read_bytes, self.base[read_lane] + within)
        self._order_reads(step[read], read_lane, read_bytes, within)

    def _shifted_bytes(self, chunks, nbytes, at):
        """Each lane's shifted bytes, with the carry of every chunk added to the byte before it."""
        out = np.zeros(int((self.shifted + 4).sum()), np.int64)
        two = nbytes == 2
        out[at[two]] = (chunks[two] >> 8) & 0xFF
        out[at + two] = chunks & 0xFF
        carry = (chunks >> (8 * nbytes)) == 1
        out[at[carry] - 1] += 1  # at most one carry per byte: from the chunk right after it
        return _propagate_carries(out)

    def _order_reads(self, read_step, read_lane, read_bytes, within):
        """The decoder's reads: at each step, first the 4-byte windows of lanes starting, then shifted bytes."""
        starts = np.arange(self.live)
        first_step = np.searchsorted(np.maximum.accumulate(self.widths), starts, side="right")
        key_read = (read_step * 2 + 1) * self.lanes + read_lane
        key_start = first_step * 2 * self.lanes + starts
        at_read = np.arange(key_read.size) + np.searchsorted(key_start, key_read, side="right")
        at_start = starts + np.searchsorted(key_read, key_start, side="left")
        self.keys = np.empty(key_read.size + self.live, np.int64)
        self.keys[at_read], self.keys[at_start] = key_read, key_start
        count = np.empty(self.keys.size, np.int64)
        count[at_read], count[at_start] = read_bytes, 4
        first = np.empty(self.keys.size, np.int64)  # where in lane_bytes each read starts
        first[at_read], first[at_start] = self.base[read_lane] + 4 + within, self.base[starts]
        self.g_end = np.cumsum(count)
        self.g_to_lane_bytes = np.repeat(first - (self.g_end - count), count) + np.arange(int(self.g_end[-1]))

    def _g_bytes_before(self, key):
        return int(self.g_end[int(np.searchsorted(self.keys, key)) - 1]) if key > self.keys[0] else 0

    def _retirements(self, retire_step):
        """(G bit position, lane) of every retirement, in order: highest lanes first."""
        if retire_step is None:
            return [(8 * int(self.g_end[-1]), k) for k in range(self.live - 1, -1, -1)]
        widths = np.append(self.widths, 0)
        before = int(widths[:retire_step].max(initial=0))
        at = 8 * self._g_bytes_before(2 * retire_step * self.lanes)
        events = [(at, k) for k in range(before - 1, int(widths[retire_step]) - 1, -1)]
        for step in retire_step + np.flatnonzero(np.diff(widths[retire_step:]) < 0):
            at = 8 * self._g_bytes_before((2 * int(step) + 2) * self.lanes)
            events += [(at, k) for k in range(int(widths[step]) - 1, int(widths[step + 1]) - 1, -1)]
        return events

    def _g_bits(self, start, count):
        """``count`` bits of G from bit ``start`` (zeros past its end: pool bits no lane reads)."""
        g_len = self.g_to_lane_bytes.size
        first, stop = start >> 3, (start + count + 7) >> 3
        values = self.lane_bytes[self.g_to_lane_bytes[first : min(stop, g_len)]]
        raw = bytes(values.astype(np.uint8)) + bytes(max(0, stop - max(first, g_len)))
        return (int.from_bytes(raw, "big") >> (8 * (stop - first) - (start & 7) - count)) & ((1 << count) - 1)

    def _close_lane(self, lane, window):
        """Write the lane's final window and carry its overflow into the lane's shifted bytes."""
        at = int(self.base[lane] + self.shifted[lane])
        self.lane_bytes[at : at + 4] = list((window & _WINDOW_MASK).to_bytes(4, "big"))
        if window >> _WINDOW:
            shifted = self.lane_bytes[self.base[lane] : at]
            below = np.flatnonzero(shifted != 0xFF)[-1]  # exists: a lane's value stays below 1
            shifted[below] += 1
            shifted[below + 1 :] = 0

    def bytes(self, low, rng, retire_step, checksum):
        """The file: G without the bits that retired windows supply."""
        retirements = self._retirements(retire_step)
        spans, pool_end = {}, 0
        for at, k in retirements[:-1]:  # the FIFO pool: a window's bits follow those still unread
            start = max(at, pool_end)
            pool_end = start + int(rng[k]).bit_length() - 1
            spans[k] = (start, pool_end)
        for k in range(self.live):  # reverse retirement order: a window's bits are read by lower lanes only
            lo, r = int(low[k]), int(rng[k])
            if k in spans:
                window = lo + self._g_bits(spans[k][0], spans[k][1] - spans[k][0])
            else:  # the last lane: its free window bits check everything decoded
                window = lo + checksum % r
            self._close_lane(k, window)
        bits = np.unpackbits(self.lane_bytes[self.g_to_lane_bytes].astype(np.uint8))
        keep = np.ones(bits.size, bool)
        for start, stop in spans.values():
            keep[start:stop] = False
        return np.packbits(bits[keep]).tobytes()


def _rank_within_lanes(lanes, nbytes, live):
    """For each read, in order, the number of bytes its lane shifted before it."""
    by_lane = np.argsort(lanes.astype(np.uint16), kind="stable")
    sorted_lanes, sorted_bytes = lanes[by_lane], nbytes[by_lane]
    before = np.cumsum(sorted_bytes) - sorted_bytes
    lane_first = np.searchsorted(sorted_lanes, np.arange(live))
    within = np.empty(lanes.size, np.int64)
    within[by_lane] = before - before[lane_first[sorted_lanes]]
    return within


def _propagate_carries(digits):
    """Base-256 digits that may hold 256 (a carry) -> bytes, carrying leftwards through runs of 255."""
    if not np.any(digits > 0xFF):
        return digits
    position = np.arange(digits.size)
    not_ff = np.where(digits != 0xFF, position, digits.size)
    next_not_ff = np.minimum.accumulate(not_ff[::-1])[::-1]  # first index >= i whose digit is not 255
    incoming = np.zeros(digits.size, np.int64)
    follower = next_not_ff[1:]
    has = follower < digits.size
    incoming[:-1][has] = digits[follower[has]] > 0xFF
    return (digits + incoming) & 0xFF


# --- decoder -------------------------------------------------------------------------------------------------------


class Decoder:
    """Decodes the segments of one `encode` stream, in order, one `decode` call per segment.

    Each call takes the indexes (and tables) of its segment, which may depend on values decoded before, as the
    hyperprior's y tables depend on z. Malformed or truncated data raises `BitstreamError`; work is bounded by
    the sizes of the indexes given.
    """

    def __init__(self, data, symbol_count=None):
        try:
            data = bytes(memoryview(data))
        except TypeError:
            raise TypeError(f"coded data must be bytes-like, got {type(data).__name__}") from None
        if not data:
            raise BitstreamError("empty coded stream")
        lanes_log2, self._segments = data[0] >> 4, data[0] & 0x0F
        at = 1
        if self._segments == 15:
            extra, shift = 0, 0
            while True:
                if at >= len(data) or shift > 21:
                    raise BitstreamError("bad segment count in coded stream header")
                extra |= (data[at] & 0x7F) << shift
                at, shift = at + 1, shift + 7
                if not data[at - 1] & 0x80:
                    break
            self._segments += extra
        if lanes_log2 > _MAX_LANES_LOG2:
            raise BitstreamError(f"coded stream declares 2**{lanes_log2} lanes (at most 2**{_MAX_LANES_LOG2})")
        self._lanes = 1 << lanes_log2
        if symbol_count is not None and self._lanes < minimum_lanes(symbol_count):
            raise BitstreamError(
                f"coded stream uses {self._lanes} lanes for {symbol_count} symbols "
                f"(at least {minimum_lanes(symbol_count)})"
            )
        self._body = np.frombuffer(data, np.uint8, offset=at)
        self._body_bytes = data[at:]
        pad = np.zeros(4 * self._lanes + 16, np.uint8)
        padded = np.concatenate([[0, 0], self._body, pad]).astype(np.int64)
        self._words = (padded[:-1] << 8) | padded[1:]  # _words[e] = the two bytes ending at byte e
        self._limit = self._body.size
        self._d = np.zeros(self._lanes, np.int64)  # code - low, in [0, rng)
        self._rng = np.zeros(self._lanes, np.int64)
        self._live = 0
        self._cursor = 0  # bytes while no lane has retired, bits after
        self._bitwise = False
        self._pool, self._pool_bits = 0, 0
        self._decoded = 0
        self._checksum = 0
        self._check = None  # (offset, range) of the last lane's final window
        self._closed = False
        self._failed = None

    def decode(self, indexes, tables):
        """Values of the next segment, int64, shaped like ``indexes``."""
        shape = np.shape(indexes)
        indexes = _check_indexes(indexes, tables)
        if self._failed:
            raise BitstreamError(f"decoding already failed: {self._failed}")
        try:
            values = self._decode(indexes, tables)
            self._checksum = _values_checksum(values, self._checksum)
            if self._decoded == self._segments and self._check is not None:
                offset, rng = self._check
                if offset != self._checksum % rng:
                    raise BitstreamError("coded stream is corrupted: decoded values fail their check")
            return values.reshape(shape)
        except BitstreamError as e:
            self._failed = str(e)
            raise

    def _decode(self, indexes, tables):
        if self._decoded >= self._segments:
            raise BitstreamError(f"coded stream holds {self._segments} segments; asked for more")
        self._decoded += 1
        last = self._decoded == self._segments
        if indexes.size == 0:
            if last:
                self._retire(0, self._live)
            return np.zeros(0, np.int64)
        code = tables._coding
        escapes = self._decode_escapes(indexes.size)
        if last:
            order = _retiring_order(indexes, code, self._lanes)
            widths = _retiring_widths(code.expected_cost[indexes[order]], self._lanes)
            found = np.empty(indexes.size, np.int64)
            found[order] = self._run(code, indexes[order], widths, retiring=True)
        else:
            found = self._run(code, indexes, _round_robin(indexes.size, self._lanes))
        symbols = found - 1 - code.first[indexes]
        regular = code.lengths[indexes] - 1
        low = code.offsets[indexes]
        out = low + symbols
        escaped = np.flatnonzero(symbols == regular)
        if escaped.size != escapes.lengths.size:
            raise BitstreamError("escape count does not match the escapes in the coded segment")
        if escaped.size:
            out[escaped] = escapes.values(low[escaped], low[escaped] + regular[escaped] - 1)
        return out

    def finish(self):
        """Check that the stream ended exactly where the last segment did; raise BitstreamError otherwise."""
        if self._closed:
            return
        self._closed = True
        if self._failed:
            raise BitstreamError(f"decoding failed: {self._failed}")
        if self._decoded != self._segments:
            raise BitstreamError(f"coded stream holds {self._segments} segments; {self._decoded} were decoded")
        used = self._cursor_bits()
        spare = 8 * self._body.size - used
        if spare >= 8:
            raise BitstreamError(f"{spare // 8} bytes of coded data left over")
        if spare > 0 and self._body[-1] & ((1 << spare) - 1):
            raise BitstreamError("nonzero padding after the coded data")

    # -- escapes --

    def _decode_escapes(self, segment_size):
        count_class = int(self._internal_symbols(np.array([_COUNT_TABLE]))[0])
        count = (1 << count_class) >> 1
        if count_class > 1:
            count |= int(self._decode_payload(np.array([count_class - 1]))[0])
        if count > segment_size:
            raise BitstreamError(f"coded segment declares {count} escapes for {segment_size} values")
        if not count:
            return _Escapes(np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(0, np.int64))
        lengths = self._internal_symbols(np.full(count, _LENGTH_TABLE))
        return _Escapes(lengths, self._decode_payload(lengths + 1), lengths + 1)

    def _internal_symbols(self, tables):
        """Decode one symbol of the escape machinery per entry of ``tables``."""
        found = self._run(_INTERNAL, tables, _round_robin(tables.size, self._lanes))
        return found - 1 - _INTERNAL.first[tables]

    def _decode_payload(self, nbits):
        count = -(-nbits // _CHUNK_BITS)
        owner = np.repeat(np.arange(nbits.size), count)
        index = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
        widths = np.minimum(nbits[owner] - _CHUNK_BITS * index, _CHUNK_BITS)
        values = self._internal_symbols(_CHUNK_TABLE0 + widths)
        return _join_chunks(values, widths, nbits)

    # -- the lanes --

    def _run(self, code, indexes, widths, retiring=False):
        """Decode one block; returns the search result (flat cdf index + 1) of every symbol in coding order."""
        found = np.empty(indexes.size, np.int64)
        keys, start, end = code.keys, code.start, code.end
        key_base = code.key_base.take(indexes)
        d, rng, words = self._d, self._rng, self._words
        if retiring:
            self._retire(int(widths[0]), self._live)
        pos = 0
        widths = widths.tolist()
        for step, a in enumerate(widths):
            if a > self._live:
                self._start_lanes(a)
            nxt = pos + a
            dv, rv = d[:a], rng[:a]
            v = dv << _PRECISION
            v |= _TOTAL - 1
            v //= rv
            v += key_base[pos:nxt]
            i = keys.searchsorted(v, "right")
            found[pos:nxt] = i
            below = rv * start.take(i)
            below >>= _PRECISION
            above = rv * end.take(i)
            above >>= _PRECISION
            dv -= below
            np.subtract(above, below, out=rv)
            nbytes = _SHIFT_BYTES.take(rv >> 16)
            if self._bitwise:
                self._read_bits(nbytes, dv, rv)
            else:
                ends = nbytes.cumsum()
                total = int(ends[-1])
                if total:
                    ends += self._cursor
                    value = words.take(ends)
                    value &= _BYTE_MASKS.take(nbytes)
                    nbytes <<= 3
                    dv <<= nbytes
                    dv |= value
                    rv <<= nbytes
                    self._cursor += total
                    if self._cursor > self._limit:
                        raise BitstreamError("coded stream is truncated")
            if retiring:
                after = widths[step + 1] if step + 1 < len(widths) else 0
                if after < a:
                    self._retire(after, a)
            pos = nxt
        return found

    def _start_lanes(self, count):
        """Lanes ``live..count-1`` start: each reads its first 32-bit window (before any lane has retired)."""
        new = np.arange(count - self._live, dtype=np.int64)
        at = self._cursor + 4 * new
        self._d[self._live : count] = (self._words.take(at + 2) << 16) | self._words.take(at + 4)
        self._rng[self._live : count] = _FULL_RANGE
        self._cursor += 4 * new.size
        self._live = count
        if self._cursor > self._limit:
            raise BitstreamError("coded stream is truncated")

    def _cursor_bits(self):
        return self._cursor if self._bitwise else 8 * self._cursor

    def _retire(self, lo, hi):
        """Lanes ``hi-1`` down to ``lo`` end; the free bits of their windows join the pool (not the very last)."""
        if hi <= lo:
            return
        if not self._bitwise:  # from here on reads may start at any bit
            self._bitwise, self._cursor = True, 8 * self._cursor
        for k in range(hi - 1, lo - 1, -1):
            if k == 0:
                if self._pool:  # the encoder fills what no lane read with zeros
                    raise BitstreamError("inconsistent lane ends in coded stream")
                self._check = (int(self._d[0]), int(self._rng[0]))
                continue
            r, d = int(self._rng[k]), int(self._d[k])
            m = r.bit_length() - 1
            if d >> m:
                raise BitstreamError("inconsistent lane end in coded stream")
            self._pool = (self._pool << m) | d
            self._pool_bits += m
        self._live = min(self._live, lo)

    def _read_bits(self, nbytes, dv, rv):
        """Renormalize once lanes retire: reads take pool bits first, then file bits at any bit position."""
        total = int(nbytes.sum())
        if not total:
            return
        need = 8 * total
        if self._pool_bits >= need:
            self._pool_bits -= need
            value = self._pool >> self._pool_bits
            self._pool &= (1 << self._pool_bits) - 1
        else:
            take = need - self._pool_bits
            value = (self._pool << take) | self._file_bits(take)
            self._pool, self._pool_bits = 0, 0
        chunk = np.concatenate([[0, 0], np.frombuffer(value.to_bytes(total, "big"), np.uint8)]).astype(np.int64)
        words = (chunk[:-1] << 8) | chunk[1:]
        ends = nbytes.cumsum()
        got = words.take(ends) & _BYTE_MASKS.take(nbytes)
        nbytes <<= 3
        dv <<= nbytes
        dv |= got
        rv <<= nbytes

    def _file_bits(self, count):
        start = self._cursor
        if start + count > 8 * self._limit:
            raise BitstreamError("coded stream is truncated")
        first, stop = start >> 3, (start + count + 7) >> 3
        raw = self._body_bytes[first:stop]
        raw += bytes(stop - first - len(raw))
        self._cursor += count
        return (int.from_bytes(raw, "big") >> (8 * (stop - first) - (start & 7) - count)) & ((1 << count) - 1)
