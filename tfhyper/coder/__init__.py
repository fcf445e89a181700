"""Range coding of integer symbols with static integer tables (the AE/AD boxes of Figure 3), in pure numpy.

Each coded integer ``v`` picks one table ``t`` of a `CodingTables`; symbol ``s = v - offsets[t]`` is coded with
probability ``(cdf[t, s+1] - cdf[t, s]) / 2**precision``. Values outside the table's range take the last symbol of the
table (the escape) followed by a universal code of how far outside they are, so that every int64 value is codable.

The coder is a range coder (Martin 1979) with a 32-bit window and exact multiply-then-shift subdivision; ``S``
independent coders ("lanes") advance together so that numpy codes one symbol per lane per Python step. Lanes retire
one at a time at the end of the last segment, the free bits of each final window feeding the lanes still running,
and the last lane's free bits check everything decoded, so that a corrupted or truncated stream fails instead of
decoding to wrong values. The overhead is about half a bit per lane plus 4 bytes.

A segment whose values nearly all equal their tables' modes (many values, few exceptions) is coded as its exceptions
alone (`sparse`); a stream with such a segment is of version 2, where the lanes retire in the last segment coded in
full and the one lane left codes the sparse segments after it. Streams without one are version 1, unchanged.

One job per module:

    pmf.py       float pmf -> integer frequencies of least expected code length (`quantize_pmf`)
    tables.py    `CodingTables` and their 16-bit form inside the coder
    window.py    the interval arithmetic: precision, 32-bit window, renormalization tables
    log2.py      fixed-point log2: integer expected costs, identical on every platform
    symbols.py   segments as given, validated; each value's symbol or escape
    escapes.py   the code of values outside their table, and the built-in tables it uses
    rate.py      ideal code lengths (`estimate_bits`, `symbol_bits`)
    lanes.py     lane count, schedule and retirement (`minimum_lanes`), the check of the decoded values
    sparse.py    segments coded as their exceptions to their tables' modes (stream version 2)
    header.py    the stream's first bytes: version, lanes, segment count (and version 2's sparse segments)
    encoder.py   `encode`
    decoder.py   `Decoder`
"""
from tfhyper.coder.decoder import Decoder
from tfhyper.coder.encoder import encode
from tfhyper.coder.header import version as stream_version
from tfhyper.coder.lanes import minimum_lanes
from tfhyper.coder.pmf import PRECISION_MAX, PRECISION_MIN, quantize_pmf
from tfhyper.coder.rate import estimate_bits, symbol_bits
from tfhyper.coder.tables import CodingTables

__all__ = [
    "CodingTables",
    "Decoder",
    "PRECISION_MAX",
    "PRECISION_MIN",
    "encode",
    "estimate_bits",
    "minimum_lanes",
    "quantize_pmf",
    "stream_version",
    "symbol_bits",
]
