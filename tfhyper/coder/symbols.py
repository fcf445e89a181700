"""Segments as the coder receives them, validated, and each value's symbol in its table (or the escape)."""
import dataclasses

import numpy as np

from tfhyper.coder.escapes import Escapes
from tfhyper.coder.tables import CodingTables

MAX_SYMBOLS = 1 << 40


@dataclasses.dataclass
class Segment:
    """One segment's symbols in coding order: values, table per value, the tables."""

    values: np.ndarray
    indexes: np.ndarray
    tables: CodingTables

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
        indexes = check_indexes(segment[1], tables)
        if values.shape != np.shape(segment[1]):
            raise ValueError(f"values {values.shape} and indexes {np.shape(segment[1])} differ in shape")
        return cls(values.astype(np.int64, copy=False).ravel(), indexes, tables)


def check_indexes(indexes, tables):
    """``indexes`` flattened to int64, or ValueError unless each names a table of ``tables``."""
    if not isinstance(tables, CodingTables):
        raise ValueError(f"tables must be CodingTables, got {type(tables).__name__}")
    indexes = np.asarray(indexes)
    if indexes.dtype.kind not in "iu":
        raise ValueError(f"indexes must be an integer array, got dtype {indexes.dtype}")
    if indexes.size >= MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS - 1} symbols per segment")
    if indexes.size and (indexes.min() < 0 or indexes.max() >= tables.cdf.shape[0]):
        raise ValueError(f"indexes must be in [0, {tables.cdf.shape[0]})")
    return indexes.astype(np.int64, copy=False).ravel()


def symbols_of(segment):
    """Symbol of every value in its table (the escape where out of range), and the escapes."""
    code = segment.tables._coding
    t = segment.indexes
    low = code.offsets.take(t)
    regular = (code.lengths - 1).take(t)  # count of regular symbols
    # value - low modulo 2^64 (int64 arithmetic wraps): read as uint64, below `regular` exactly when inside.
    symbols = np.subtract(segment.values, low)
    out = np.flatnonzero(symbols.view(np.uint64) >= regular.view(np.uint64))
    low, regular = low[out], regular[out]
    escapes = Escapes.of(segment.values[out], low, low + regular - 1)
    symbols[out] = regular
    return symbols, escapes
