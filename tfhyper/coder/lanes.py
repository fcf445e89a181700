"""The lane schedule: how many interleaved coders a stream uses, which symbols each step codes, and when lanes retire.

To run in numpy without a Python loop per symbol, ``S`` independent coders ("lanes") advance together: one loop step
codes one symbol in each active lane. A lane ends owing the decoder its 32-bit window, of which only ``32 - log2 R``
bits carry information; the other ``floor(log2 R)`` bits are free, and feed the lanes still running. Lanes therefore
retire one at a time at the end of the last segment, each after the lanes still running are expected to read its
freed window. The last lane's free bits hold a check of everything decoded (`values_checksum` modulo its range).

Everything here is computed from the tables' integer expected costs and the symbol counts alone, so the encoder and
the decoder derive the same schedule.
"""
import dataclasses
import math
import zlib

import numpy as np

from tfhyper.coder.log2 import COST_UNITS_PER_BIT

MAX_LANES_LOG2 = 9
LANE_COUNTS = [1 << k for k in range(MAX_LANES_LOG2 + 1)]

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
_SPARSE_BITS_PER_LANE = 2048
_MAX_STEPS = 1 << 15


@dataclasses.dataclass
class Block:
    """Symbols coded consecutively, with the number of active lanes at each step (non-increasing at the end)."""

    tables: object  # ScaledTables
    indexes: np.ndarray
    symbols: np.ndarray = None
    widths: np.ndarray = None
    retiring: bool = False
    segment: int = -1  # the segment it belongs to


def round_robin(count, lanes):
    """Steps of a block coded with all lanes: full steps, then the rest."""
    full, rest = divmod(count, lanes)
    return np.array([lanes] * full + ([rest] if rest else []), np.int64)


def retiring_widths(costs, lanes):
    """Steps of the last block: all lanes, then lanes retire one at a time from the highest.

    Working back from the end, the last ``m`` lanes must together read more than the ``m`` windows freed before them:
    the steps with ``m`` lanes active are as few as make the expected cost of the last symbols reach
    ``m * 40 + 48`` bits. When the block is too cheap for that, the steps with ``m`` lanes are capped so that
    retiring at most doubles the number of steps, and the windows not read cost their bits. ``costs`` are the
    expected costs per symbol in integer units; the same integers on both sides give the same schedule.
    """
    count = costs.size
    # log2(lanes) >= the harmonic number H(lanes - 1), so the capped steps add up to at most count / lanes.
    budget, log2_lanes = max(count // lanes, 1), max(lanes.bit_length() - 1, 1)
    steps = np.zeros(lanes, np.int64)
    retiring = np.arange(1, lanes)
    targets = (retiring * _RETIRE_BITS_PER_LANE + _RETIRE_SLACK_BITS) * COST_UNITS_PER_BIT
    suffix = _suffix_sums(costs, targets[-1] if targets.size else 0)
    needs = (np.searchsorted(suffix, targets) + 1).tolist()  # one search for all lanes; the loop is integers only
    used = 0
    for m, needed in zip(retiring.tolist(), needs):
        cap = max(1, budget // (m * log2_lanes))
        steps[m] = taken = min(max(0, -(-(needed - used) // m)), cap, (count - used) // m)
        used += taken * m
    full, rest = divmod(count - used, lanes)
    if rest:
        steps[rest] += 1
    tail = np.repeat(np.arange(lanes - 1, 0, -1), steps[:0:-1])
    return np.concatenate([np.full(full, lanes, np.int64), tail])


def _suffix_sums(costs, reach):
    """Cumulative sums of ``costs`` from the last: as many as reach ``reach`` (all where they do not), which is all
    that searching them for targets up to ``reach`` needs. The last few thousand symbols usually suffice."""
    tail = 1 << 12
    while True:
        suffix = np.cumsum(costs[::-1][:tail])
        if tail >= costs.size or suffix[-1] >= reach:
            return suffix
        tail *= 8


def retiring_order(indexes, code, lanes):
    """Coding order of the last segment: symbols of the costliest tables go last, where lanes retire.

    Retiring needs about 40 bits per lane read after it; taking them from the costliest symbols keeps the steps
    with few lanes few. Chosen from the tables' integer expected costs, so the decoder derives the same order.
    """
    cost = code.expected_cost
    counts = np.bincount(indexes, minlength=cost.size)
    by_cost = np.argsort(-cost, kind="stable")
    need = 2 * (lanes * _RETIRE_BITS_PER_LANE + _RETIRE_SLACK_BITS) * COST_UNITS_PER_BIT
    reached = np.cumsum(counts[by_cost] * cost[by_cost]) >= need
    chosen = np.zeros(cost.size, bool)
    chosen[by_cost[: int(np.argmax(reached)) + 1 if reached.any() else cost.size]] = True
    late = chosen[indexes]
    return np.concatenate([np.flatnonzero(~late), np.flatnonzero(late)])


def schedule(blocks, lanes, retiring, version=1, retire_at=None):
    """Lane widths of every block. Version 1: all lanes code every block, and they retire in the last block when it
    holds the last segment's symbols (`retiring`). Version 2: they retire in block `retire_at` (None: in none), and
    the blocks after it are coded by the one lane left."""
    if version == 1:
        retire_at = len(blocks) - 1 if retiring else None
    if retire_at is not None:
        last = blocks[retire_at]
        order = retiring_order(last.indexes, last.tables, lanes)
        last.indexes, last.symbols, last.retiring = last.indexes[order], last.symbols[order], True
    for at, block in enumerate(blocks):
        if block.retiring:
            block.widths = retiring_widths(block.tables.expected_cost[block.indexes], lanes)
        else:
            before = version == 1 or (retire_at is not None and at < retire_at)
            block.widths = round_robin(block.indexes.size, lanes if before else 1)


def choose_lanes(total_bits, last_bits, symbol_count):
    """The encoder's lane count from the estimated rate, the last segment's, and the symbol count."""
    by_symbols = symbol_count / _MIN_SYMBOLS_PER_LANE
    lanes = min(1 << MAX_LANES_LOG2, total_bits / _BITS_PER_LANE, last_bits / _LAST_SEGMENT_BITS_PER_LANE, by_symbols)
    # The speed floor only where a lane that cannot retire (up to ~4 bytes) stays a small part of the file.
    floor = min(_MIN_LANES, by_symbols, total_bits / _FLOOR_BITS_PER_LANE)
    lanes = max(lanes, floor, 1.0)
    return max(1 << int(math.floor(math.log2(lanes))), minimum_lanes(symbol_count))


def choose_sparse_lanes(total_bits, retiring_bits, coded_symbols, symbol_count):
    """The lane count of a version-2 stream (one with sparse segments, which are small): half a bit per lane kept
    under 1/4096 of the rate, at least the decoder's minimum for all the stream's values."""
    lanes = min(1 << MAX_LANES_LOG2, total_bits / _SPARSE_BITS_PER_LANE, retiring_bits / _LAST_SEGMENT_BITS_PER_LANE,
                coded_symbols / _MIN_SYMBOLS_PER_LANE)
    return max(1 << int(math.floor(math.log2(max(lanes, 1.0)))), minimum_lanes(symbol_count))


def minimum_lanes(symbol_count):
    """Fewest lanes for `symbol_count` symbols: bounds the decoder's Python steps (at most 2^15 per stream), so
    that neither a flat image nor a crafted file can make decoding crawl one symbol per step."""
    needed = -(-int(symbol_count) // _MAX_STEPS)
    return min(1 << MAX_LANES_LOG2, 1 << max(0, (needed - 1).bit_length()))


def values_checksum(values, previous=0):
    """CRC-32 of int64 values (little-endian, C order), continuing ``previous``: what the last lane's window checks."""
    return zlib.crc32(np.ascontiguousarray(values, dtype="<i8"), previous)  # the array's buffer, not a copy
