"""`CodingTables`, the static integer tables a stream is coded with, and their form inside the coder."""
import dataclasses
import functools

import numpy as np

from tfhyper.coder.log2 import expected_costs
from tfhyper.coder.pmf import check_precision, quantize_pmf
from tfhyper.coder.window import PRECISION, TOTAL

# Decoding searches the cdfs of all tables at once, table t's offset by t << TABLE_KEY_SHIFT (above any cdf value).
TABLE_KEY_SHIFT = PRECISION + 1


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
        object.__setattr__(self, "precision", check_precision(self.precision))
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
        """The tables as the coder uses them (`ScaledTables`), built once per tables."""
        scaled = self.cdf.astype(np.int64) << (PRECISION - self.precision)
        return ScaledTables(scaled, self.lengths.astype(np.int64), self.offsets.astype(np.int64))


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


class ScaledTables:
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
        self.keys = ((np.arange(tables, dtype=np.int64)[:, None] << TABLE_KEY_SHIFT) + cdf16)[valid]
        values = cdf16[valid]
        self.start = np.concatenate([[0], values[:-1]])
        self.end = values
        self.first = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        self.key_base = np.arange(tables, dtype=np.int64) << TABLE_KEY_SHIFT
        freqs = np.diff(cdf16, axis=1) * valid[:, 1:]
        bits = -np.log2(np.maximum(freqs, 1) / TOTAL)
        self.bits = np.where(valid[:, 1:], bits, 0.0)
        # Expected cost per symbol of each table, from integers only (it sets the lane schedule).
        self.expected_cost = expected_costs(freqs)
        # Each table's most frequent regular value (the first of equals), which a sparse segment leaves uncoded;
        # a table holding only the escape has none.
        regular = np.arange(width - 1)[None, :] < (lengths[:, None] - 1)
        self.has_mode = lengths > 1
        mode_symbols = np.where(regular, freqs, -1).argmax(axis=1)
        self.mode_values = offsets.astype(np.int64) + mode_symbols
        # The same by flat symbol index (`flat_index`), for one gather per value: the cost of each symbol (0 in the
        # last column), and whether it is its table's mode.
        self.flat_bits = np.pad(self.bits, ((0, 0), (0, 1))).ravel()
        is_mode = np.zeros((tables, width), bool)
        is_mode[np.arange(tables), mode_symbols] = self.has_mode
        self.flat_is_mode = is_mode.ravel()

    def flat_index(self, tables, symbols):
        """``tables * width + symbols``: the index of each symbol in the raveled (tables, width) arrays."""
        flat = tables * self.cdf.shape[1]
        flat += symbols
        return flat

    def bounds(self, tables, symbols, out=None):
        """``cdf[tables, symbols]`` and ``cdf[tables, symbols + 1]`` as the rows of ``out`` (2, n), from one flat
        index into the raveled table (the end is the same index into the table raveled from its second entry)."""
        if out is None:
            out = np.empty((2, symbols.size), np.int64)
        flat = self.flat_index(tables, symbols)
        cdf = self.cdf.ravel()
        cdf.take(flat, out=out[0], mode="clip")
        cdf[1:].take(flat, out=out[1], mode="clip")
        return out
