"""The encoder: segments of integer values -> one range-coded stream (the AE box of Figure 3).

Each coded integer ``v`` picks one table ``t`` of a `CodingTables`; symbol ``s = v - offsets[t]`` is coded with
probability ``(cdf[t, s+1] - cdf[t, s]) / 2**precision`` (`window` has the arithmetic). Values outside the table's
range take the escape (`escapes`). All lanes advance together (`lanes`); the decoder mirrors the encoder's ranges
exactly, so it knows when each lane shifts a byte, and the stream lays out bytes in the order the decoder reads them,
carries propagated after encoding. Stream layout: the header (`header`), then the bit stream; every segment starts
with its escapes, then its symbols.
"""
import numpy as np

from tfhyper.coder import header
from tfhyper.coder.escapes import escape_blocks
from tfhyper.coder.lanes import (
    LANE_COUNTS,
    MAX_LANES_LOG2,
    Block,
    choose_lanes,
    choose_sparse_lanes,
    schedule,
    values_checksum,
)
from tfhyper.coder.sparse import (
    MAX_SPARSE_SEGMENTS,
    exception_count,
    exceptions,
    position_bits,
    position_blocks,
    worth_it,
)
from tfhyper.coder.symbols import Segment, symbols_of
from tfhyper.coder.window import FULL_RANGE, PRECISION, SHIFT_BITS, WINDOW, WINDOW_MASK


def encode(segments, tables=None, *, lanes=None, sparse=True):
    """Code segments into one stream; decode them in the same order with `Decoder`.

    ``segments`` is a list of ``(values, indexes, tables)`` (or ``(values, indexes)`` using ``tables``): integer
    arrays of one shape, ``indexes`` choosing a table of `CodingTables` for each value. Any int64 value is codable.
    ``lanes`` (a power of two up to 512) overrides the number of interleaved coders, otherwise chosen from the
    symbol count and the estimated rate: more lanes decode faster and cost about half a bit each.

    A segment whose values nearly all equal their tables' modes is coded sparse (`sparse`: only the exceptions),
    where that is estimated no larger; such a stream is of version 2 (`header`), others are version 1, byte for byte
    as before version 2 existed. ``sparse=False`` writes version 1 always.
    """
    segments = [Segment.from_input(s, tables) for s in segments]
    if len(segments) >= header.MAX_SEGMENTS:
        raise ValueError(f"at most {header.MAX_SEGMENTS - 1} segments")
    blocks, bits, plan = _coding_blocks(segments, sparse)
    coded = [at for at, segment in enumerate(segments) if at not in plan and segment.values.size]
    retiring = coded[-1] if coded else None  # version 2: the last segment coded in full
    if lanes is None and not plan:
        lanes = choose_lanes(sum(bits), bits[-1] if bits else 0.0, sum(b.indexes.size for b in blocks))
    elif lanes is None:
        lanes = choose_sparse_lanes(sum(bits), bits[retiring] if coded else 0.0, sum(b.indexes.size for b in blocks),
                                    sum(segment.values.size for segment in segments))
    elif not isinstance(lanes, (int, np.integer)) or isinstance(lanes, bool) or lanes not in LANE_COUNTS:
        raise ValueError(f"lanes must be a power of two up to {1 << MAX_LANES_LOG2}, got {lanes!r}")
    lanes = int(lanes)
    version = 2 if plan else 1
    retire_block = _retire_block(blocks, plan, retiring)
    schedule(blocks, lanes, retiring=bool(segments) and segments[-1].values.size > 0, version=version,
             retire_at=retire_block)
    checksum = 0
    for segment in segments:
        checksum = values_checksum(segment.values, checksum)
    mask = sum(1 << at for at in plan)
    return header.write(lanes.bit_length() - 1, len(segments), mask, retiring) + _encode_blocks(blocks, lanes, checksum)


def _retire_block(blocks, plan, retiring):
    """Version 2: the index of the block of the retiring segment's symbols (its last block), or None."""
    if not plan or retiring is None:
        return None
    return max(at for at, block in enumerate(blocks) if block.segment == retiring)


def _coding_blocks(segments, sparse=True):
    """Every segment's blocks (a sparse segment's exception positions, then its escapes, then its symbols), each
    segment's estimated bits, and which segments are sparse ({index: exception positions})."""
    blocks, bits, plan = [], [], {}
    for at, segment in enumerate(segments):
        if segment.values.size == 0:
            bits.append(0.0)
            continue
        code = segment.tables._coding
        symbols, escapes = symbols_of(segment)
        flat = code.flat_index(segment.indexes, symbols)
        bits.append(float(code.flat_bits.take(flat).sum()) + escapes.cost())
        new = escape_blocks(escapes) + [Block(code, segment.indexes, symbols)]
        # Counted first, in one gather: most segments have far too many exceptions to be listed.
        if sparse and at < MAX_SPARSE_SEGMENTS and worth_it(segment.values.size, exception_count(flat, code)):
            positions = exceptions(segment.values, segment.indexes, code)
            # Every escape is an exception (a mode is a regular symbol), so the escapes' cost stays.
            listed = position_bits(positions) + float(code.flat_bits.take(flat[positions]).sum()) + escapes.cost()
            if listed <= bits[-1]:
                plan[at], bits[-1] = positions, listed
                new = position_blocks(positions)
                if positions.size:
                    new += escape_blocks(escapes) + [Block(code, segment.indexes[positions], symbols[positions])]
        for block in new:
            block.segment = at
        blocks += new
    return blocks, bits, plan


def _encode_blocks(blocks, lanes, checksum):
    if not blocks:
        return b""
    widths = np.concatenate([b.widths for b in blocks])
    coded = _bounds(blocks, int(widths.sum()))
    rng, low = _range_code(coded, widths, lanes)
    retiring = [at for at, block in enumerate(blocks) if block.retiring]
    retire_step = sum(b.widths.size for b in blocks[: retiring[0]]) if retiring else None
    return _Stream(widths, coded[0], coded[1], low, lanes).bytes(rng, retire_step, checksum)


def _bounds(blocks, count):
    """Every symbol's cdf bounds in coding order: row 0 the start ``cdf[s]``, row 1 the end ``cdf[s + 1]``."""
    bounds = np.empty((2, count), np.int64)
    pos = 0
    for block in blocks:
        nxt = pos + block.indexes.size
        block.tables.bounds(block.indexes, block.symbols, out=bounds[:, pos:nxt])
        pos = nxt
    return bounds


def _range_code(coded, widths, lanes):
    """Advance all lanes symbol by symbol, in place of ``coded`` (the bounds of `_bounds`); return each lane's final
    range and low.

    Lane ``k`` at range ``R`` narrows its interval by ``below = floor(R start / 2^16)`` and ``above = floor(R end /
    2^16)``: its low grows by ``below`` and its range becomes ``above - below``, then shifts left by whole bytes
    while below 2^24. The ranges do not depend on the low, so the loop runs the range recursion alone and keeps the
    low as a plain sum: row 0 of ``coded`` becomes, for every symbol, the sum of its lane's ``below`` up to and
    including it (modulo 2^64: only differences are used), and row 1 the bits the lane shifts after it (0, 8 or 16).
    Where the shifted bytes go, with their carries, is worked out afterwards from these (`_Stream`). The loop is
    bound by numpy's cost per call (about 600 steps of 512 lanes at 1 bpp), hence the in-place calls on views.
    """
    rng = np.full(lanes, FULL_RANGE, np.int64)
    low = np.zeros(lanes, np.int64)
    scratch = np.empty(lanes, np.int64)
    pos = 0
    for a in widths.tolist():
        nxt = pos + a
        both = coded[:, pos:nxt]
        below, above = both[0], both[1]
        r, lo, top = (rng, low, scratch) if a == lanes else (rng[:a], low[:a], scratch[:a])
        np.multiply(both, r, out=both)
        both >>= PRECISION
        np.subtract(above, below, out=r)
        lo += below
        below[...] = lo
        np.right_shift(r, 16, out=top)
        SHIFT_BITS.take(top, out=above, mode="clip")
        r <<= above
        pos = nxt
    return rng, low


class _Stream:
    """Lays the lanes' bytes out in the order the decoder reads them, with carries and retired windows resolved.

    The decoder reads 4 bytes when a lane starts and, at every step, the bytes the encoder shifted at that step, in
    lane order; lane ``k``'s ``r``-th read is its ``r``-th output byte (its shifted bytes, then its final 32-bit
    window). "G" below is that read sequence. When a lane retires, the decoder knows ``d = w - low`` of its final
    window ``w``, and the low ``m = floor(log2 R)`` bits of ``w - low`` are free: they go to a FIFO pool that later
    reads draw from before the file, so those G bits are not stored. Lanes are laid out one after the other in
    ``lane_bytes``; ``g_to_lane_bytes`` maps G to them.

    A lane's output is one big number: every ``below`` of the lane added into its 32-bit window, which sits at the
    lane's output byte ``c`` once it has shifted ``c`` bytes, plus the free bits of its final window. So the bytes
    come from additions at known byte offsets and one carry propagation (`_lane_bytes`), with no step loop.
    """

    def __init__(self, widths, low_sums, shift, low, lanes):
        self.lanes, self.widths, self.live = lanes, widths, int(widths.max())
        read = np.flatnonzero(shift)
        # The step and lane of each read only (a minority of the symbols): the step is found among the steps' ends.
        step_ends = np.cumsum(widths)
        read_step = np.searchsorted(step_ends, read, side="right")
        read_lane = read - (step_ends - widths)[read_step]
        read_bytes = shift[read] >> 3
        by_lane = np.argsort(read_lane.astype(np.uint16), kind="stable")
        within, increments, last_sum = _lane_runs(read_lane, read_bytes, low_sums[read], by_lane, self.live)
        self.shifted = np.bincount(read_lane, weights=read_bytes, minlength=self.live).astype(np.int64)
        self.base = np.cumsum(self.shifted + 4) - (self.shifted + 4)
        # The final window of each lane holds what its low gained after its last read.
        self.window_at = self.base + self.shifted
        at = np.concatenate([self.base[read_lane] + within, self.window_at])
        self.lane_bytes = _lane_bytes(at, np.concatenate([increments, low[: self.live] - last_sum]),
                                      int(self.window_at[-1]) + 4)
        self._order_reads(read_step, read_lane, read_bytes, within)

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

    def _g_bits(self, lane_bytes, start, count):
        """``count`` bits of G from bit ``start`` (zeros past its end: pool bits no lane reads)."""
        g_len = self.g_to_lane_bytes.size
        first, stop = start >> 3, (start + count + 7) >> 3
        raw = bytes(lane_bytes[at] for at in self.g_to_lane_bytes[first : min(stop, g_len)].tolist())
        raw += bytes(max(0, stop - max(first, g_len)))
        return (int.from_bytes(raw, "big") >> (8 * (stop - first) - (start & 7) - count)) & ((1 << count) - 1)

    def bytes(self, rng, retire_step, checksum):
        """The file: G without the bits that retired windows supply."""
        retirements = self._retirements(retire_step)
        spans, pool_end = {}, 0
        for at, k in retirements[:-1]:  # the FIFO pool: a window's bits follow those still unread
            start = max(at, pool_end)
            pool_end = start + int(rng[k]).bit_length() - 1
            spans[k] = (start, pool_end)
        lane_bytes = bytearray(self.lane_bytes.astype(np.uint8))
        for k, at in enumerate(self.window_at.tolist()):  # reverse retirement order: a window's bits are read by
            if k in spans:  # lower lanes only
                free = self._g_bits(lane_bytes, spans[k][0], spans[k][1] - spans[k][0])
            else:  # the last lane: its free window bits check everything decoded
                free = checksum % int(rng[k])
            _add_to_window(lane_bytes, at, free)
        g = np.frombuffer(lane_bytes, np.uint8)[self.g_to_lane_bytes]
        return _drop_bits(g, sorted(spans.values()))


def _lane_runs(lanes, nbytes, sums, by_lane, live):
    """For each read, in order: the bytes its lane shifted before it, and what its lane's low gained since its
    previous read (the difference of the running sums ``sums``); and each lane's running sum at its last read."""
    sorted_lanes, sorted_bytes, sorted_sums = lanes[by_lane], nbytes[by_lane], sums[by_lane]
    before = np.cumsum(sorted_bytes) - sorted_bytes
    lane_first = np.searchsorted(sorted_lanes, np.arange(live))
    lane_last = np.searchsorted(sorted_lanes, np.arange(live), side="right") - 1
    within, increments = np.empty(lanes.size, np.int64), np.empty(lanes.size, np.int64)
    within[by_lane] = before - before[lane_first[sorted_lanes]]
    has_read = lane_last >= lane_first
    gained = np.diff(sorted_sums, prepend=0)
    gained[lane_first[has_read]] = sorted_sums[lane_first[has_read]]  # a lane's first read: all since the start
    increments[by_lane] = gained
    last_sum = np.zeros(live, np.int64)
    last_sum[has_read] = sorted_sums[lane_last[has_read]]
    return within, increments, last_sum


def _lane_bytes(at, increments, size):
    """Bytes of the lanes (laid out one after the other) from the additions of ``increments`` to 32-bit windows
    whose first byte is at ``at``. An increment is below 2^32: the belows between two reads of a lane add up to less
    than its range after the first (the intervals nest), which is at most 2^32, so no window overflows by itself.

    Within a lane the windows start at distinct offsets, so each of the four byte positions is one scatter-add
    without repeated indexes; a byte then holds at most 4 * 255, normalized to base 256 by carry passes.
    """
    digits = np.zeros(size, np.int64)
    for byte in range(4):
        digits[at + byte] += (increments >> (24 - 8 * byte)) & 0xFF
    while digits.max(initial=0) > 0x100:  # two passes at most: 1020 -> 258 -> 256
        high = digits >> 8
        digits &= 0xFF
        digits[:-1] += high[1:]
    return propagate_carries(digits)


def _add_to_window(lane_bytes, at, value):
    """Add ``value`` to the 32-bit window at byte ``at`` of ``lane_bytes``, carrying into the bytes before it."""
    window = int.from_bytes(lane_bytes[at : at + 4], "big") + value
    lane_bytes[at : at + 4] = (window & WINDOW_MASK).to_bytes(4, "big")
    if window >> WINDOW:
        at -= 1
        while lane_bytes[at] == 0xFF:  # ends: a lane's value stays below 1
            lane_bytes[at] = 0
            at -= 1
        lane_bytes[at] += 1


def _drop_bits(data, spans):
    """The bits of ``data`` (uint8) outside the sorted, disjoint bit ranges ``spans``, packed into bytes."""
    bits = np.unpackbits(data)
    edges = np.clip(np.array([0] + [e for span in spans for e in span] + [bits.size], np.int64), 0, bits.size)
    keep = np.repeat(np.arange(edges.size - 1) % 2 == 0, np.diff(edges))
    return np.packbits(bits[keep]).tobytes()


def propagate_carries(digits):
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
