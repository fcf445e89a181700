"""The decoder: one range-coded stream -> its segments of integer values, in order (the AD box of Figure 3).

It mirrors the encoder's ranges exactly (`window`), so it knows when each lane shifts bytes, follows the same lane
schedule (`lanes`), and draws the free bits of retired lanes' windows from a first-in first-out pool before the file.
Anything malformed, truncated or inconsistent raises `BitstreamError`; the last lane's window checks the values.
"""
import numpy as np

from tfhyper.coder import header, sparse
from tfhyper.coder.escapes import CHUNK_TABLE0, COUNT_TABLE, INTERNAL, LENGTH_TABLE, Escapes, chunk_widths, join_chunks
from tfhyper.coder.lanes import minimum_lanes, retiring_order, retiring_widths, round_robin, values_checksum
from tfhyper.coder.symbols import check_indexes
from tfhyper.coder.window import BYTE_MASKS, FULL_RANGE, PRECISION, SHIFT_BYTES, TOTAL
from tfhyper.errors import BitstreamError


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
        self._header, at = header.read(data)
        self._segments = self._header.segments
        self._lanes = 1 << self._header.lanes_log2
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
        # Version 2 without a segment coded in full: one lane codes everything.
        self._after_retiring = self._header.version == 2 and self._header.retiring is None

    def decode(self, indexes, tables):
        """Values of the next segment, int64, shaped like ``indexes``."""
        shape = np.shape(indexes)
        indexes = check_indexes(indexes, tables)
        if self._failed:
            raise BitstreamError(f"decoding already failed: {self._failed}")
        try:
            values = self._decode(indexes, tables)
            self._checksum = values_checksum(values, self._checksum)
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
        segment = self._decoded
        self._decoded += 1
        code = tables._coding
        if self._header.is_sparse(segment):
            values = self._decode_sparse(indexes, code)
        elif indexes.size == 0:
            values = np.zeros(0, np.int64)
        else:
            values = self._decode_values(indexes, code, retiring=self._header.retires_in(segment))
        if self._decoded == self._segments:
            self._retire(0, self._live)  # what is left: the last lane, when no lane retired in the last segment
        return values

    def _decode_values(self, indexes, code, retiring=False):
        """A segment's values coded in full: its escapes, then its symbols (where the lanes retire, in the order
        `retiring_order` gives)."""
        escapes = self._decode_escapes(indexes.size)
        if retiring:
            order = retiring_order(indexes, code, self._lanes)
            widths = retiring_widths(code.expected_cost[indexes[order]], self._lanes)
            # Version 2: one lane goes on when sparse segments follow.
            later = self._header.sparse >> self._decoded
            found = np.empty(indexes.size, np.int64)
            found[order] = self._run(code, indexes[order], widths, retiring=True, end_width=1 if later else 0)
            self._after_retiring = True
        else:
            found = self._run(code, indexes, round_robin(indexes.size, self._width()))
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

    def _decode_sparse(self, indexes, code):
        """A sparse segment: its exceptions' count and positions, then their values; the rest their tables' modes."""
        count = self._decode_count()
        sparse.check_count(count, indexes.size)
        positions = np.zeros(0, np.int64)
        if count:
            lengths = self._internal_symbols(np.full(count, LENGTH_TABLE))
            positions = sparse.positions_from(lengths, self._decode_payload(lengths), indexes.size)
        return sparse.fill(indexes, code, positions, self._decode_values(indexes[positions], code) if count else
                           np.zeros(0, np.int64))

    def _width(self):
        """Lanes of a block coded round robin: all of them, or the one left after the lanes retired (version 2)."""
        return 1 if self._after_retiring else self._lanes

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

    def _decode_count(self):
        """A count coded as its bit-length class and mantissa (the escape count's code)."""
        count_class = int(self._internal_symbols(np.array([COUNT_TABLE]))[0])
        count = (1 << count_class) >> 1
        if count_class > 1:
            count |= int(self._decode_payload(np.array([count_class - 1]))[0])
        return count

    def _decode_escapes(self, segment_size):
        count = self._decode_count()
        if count > segment_size:
            raise BitstreamError(f"coded segment declares {count} escapes for {segment_size} values")
        if not count:
            return Escapes.none()
        lengths = self._internal_symbols(np.full(count, LENGTH_TABLE))
        return Escapes(lengths, self._decode_payload(lengths + 1), lengths + 1)

    def _internal_symbols(self, tables):
        """Decode one symbol of the escape machinery per entry of ``tables``."""
        found = self._run(INTERNAL, tables, round_robin(tables.size, self._width()))
        return found - 1 - INTERNAL.first[tables]

    def _decode_payload(self, nbits):
        widths = chunk_widths(nbits)
        values = self._internal_symbols(CHUNK_TABLE0 + widths)
        return join_chunks(values, widths, nbits)

    # -- the lanes --

    def _run(self, code, indexes, widths, retiring=False, end_width=0):
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
            v = dv << PRECISION
            v |= TOTAL - 1
            v //= rv
            v += key_base[pos:nxt]
            i = keys.searchsorted(v, "right")
            found[pos:nxt] = i
            below = rv * start.take(i)
            below >>= PRECISION
            above = rv * end.take(i)
            above >>= PRECISION
            dv -= below
            np.subtract(above, below, out=rv)
            nbytes = SHIFT_BYTES.take(rv >> 16)
            if self._bitwise:
                self._read_bits(nbytes, dv, rv)
            else:
                ends = nbytes.cumsum()
                total = int(ends[-1])
                if total:
                    ends += self._cursor
                    value = words.take(ends)
                    value &= BYTE_MASKS.take(nbytes)
                    nbytes <<= 3
                    dv <<= nbytes
                    dv |= value
                    rv <<= nbytes
                    self._cursor += total
                    if self._cursor > self._limit:
                        raise BitstreamError("coded stream is truncated")
            if retiring:
                after = widths[step + 1] if step + 1 < len(widths) else end_width
                if after < a:
                    self._retire(after, a)
            pos = nxt
        return found

    def _start_lanes(self, count):
        """Lanes ``live..count-1`` start: each reads its first 32-bit window (before any lane has retired)."""
        new = np.arange(count - self._live, dtype=np.int64)
        at = self._cursor + 4 * new
        self._d[self._live : count] = (self._words.take(at + 2) << 16) | self._words.take(at + 4)
        self._rng[self._live : count] = FULL_RANGE
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
        got = words.take(ends) & BYTE_MASKS.take(nbytes)
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
