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
from tfhyper.coder.sparse import MAX_SPARSE_SEGMENTS, exceptions, position_bits, position_blocks, worth_it
from tfhyper.coder.symbols import Segment, symbols_of
from tfhyper.coder.window import FULL_RANGE, LOW_MASKS, PRECISION, SHIFT_BYTES, WINDOW, WINDOW_MASK


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
        bits.append(float(code.bits[segment.indexes, symbols].sum()) + escapes.cost())
        new = escape_blocks(escapes) + [Block(code, segment.indexes, symbols)]
        if sparse and at < MAX_SPARSE_SEGMENTS:
            positions = exceptions(segment.values, segment.indexes, code)
            if worth_it(segment.values.size, positions.size):
                # Every escape is an exception (a mode is a regular symbol), so the escapes' cost stays.
                listed = position_bits(positions) + float(code.bits[segment.indexes[positions],
                                                                     symbols[positions]].sum()) + escapes.cost()
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
    starts, ends = zip(*(b.tables.bounds(b.indexes, b.symbols) for b in blocks))
    start, end = np.concatenate(starts), np.concatenate(ends)
    widths = np.concatenate([b.widths for b in blocks])
    low, rng, low_before, shift = _range_code(start, end, widths, lanes)
    retiring = [at for at, block in enumerate(blocks) if block.retiring]
    retire_step = sum(b.widths.size for b in blocks[: retiring[0]]) if retiring else None
    return _Stream(widths, low_before, shift, lanes).bytes(low, rng, retire_step, checksum)


def _range_code(start, end, widths, lanes):
    """Advance all lanes symbol by symbol; record each step's low (before shifting) and shift in bits."""
    low = np.zeros(lanes, np.int64)
    rng = np.full(lanes, FULL_RANGE, np.int64)
    low_before = np.empty(start.size, np.int64)
    shift = np.empty(start.size, np.int64)
    pos = 0
    for a in widths.tolist():
        nxt = pos + a
        r, lo_ = rng[:a], low[:a]
        below = r * start[pos:nxt]
        below >>= PRECISION
        above = r * end[pos:nxt]
        above >>= PRECISION
        lo_ += below
        np.subtract(above, below, out=r)
        nbytes = SHIFT_BYTES.take(r >> 16)
        keep = LOW_MASKS.take(nbytes)
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
        read = np.flatnonzero(shift)
        # The step and lane of each read only (a minority of the symbols): the step is found among the steps' ends.
        step_ends = np.cumsum(widths)
        read_step = np.searchsorted(step_ends, read, side="right")
        read_lane = read - (step_ends - widths)[read_step]
        read_bytes = shift[read] >> 3
        within = _rank_within_lanes(read_lane, read_bytes, self.live)
        self.shifted = np.bincount(read_lane, weights=read_bytes, minlength=self.live).astype(np.int64)
        self.base = np.cumsum(self.shifted + 4) - (self.shifted + 4)
        chunks = low_before[read] >> (WINDOW - shift[read])
        self.lane_bytes = self._shifted_bytes(chunks, read_bytes, self.base[read_lane] + within)
        self._order_reads(read_step, read_lane, read_bytes, within)

    def _shifted_bytes(self, chunks, nbytes, at):
        """Each lane's shifted bytes, with the carry of every chunk added to the byte before it."""
        out = np.zeros(int((self.shifted + 4).sum()), np.int64)
        two = nbytes == 2
        out[at[two]] = (chunks[two] >> 8) & 0xFF
        out[at + two] = chunks & 0xFF
        carry = (chunks >> (8 * nbytes)) == 1
        out[at[carry] - 1] += 1  # at most one carry per byte: from the chunk right after it
        return propagate_carries(out)

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
        self.lane_bytes[at : at + 4] = list((window & WINDOW_MASK).to_bytes(4, "big"))
        if window >> WINDOW:
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
