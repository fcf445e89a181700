"""The stream's header.

Version 1: one byte ``(log2 lanes) << 4 | min(segments, 15)``, then, when ``segments >= 15``, the unsigned LEB128
varint (`tfhyper.varint`) of ``segments - 15``.

Version 2 (streams with sparse segments, `sparse`): the byte ``0xF0 | log2 lanes`` (a high nibble no version-1 stream
has: it would declare 2^15 lanes, which a version-1 reader refuses), then three varints: the segment count, the set
of sparse segments (bit i for segment i), and one plus the index of the segment the lanes retire in (0: none, every
segment sparse or empty).
"""
import dataclasses

from tfhyper import varint
from tfhyper.coder.lanes import MAX_LANES_LOG2
from tfhyper.errors import BitstreamError

MAX_SEGMENTS = 1 << 24
_EXTENDED = 15
_VERSION_2 = 0xF


@dataclasses.dataclass(frozen=True)
class StreamHeader:
    lanes_log2: int
    segments: int
    version: int = 1
    sparse: int = 0  # bit i: segment i is sparse
    retiring: int | None = None  # version 2: the segment the lanes retire in; version 1: the last

    def is_sparse(self, segment):
        return bool(self.sparse >> segment & 1)

    def retires_in(self, segment):
        return segment == (self.segments - 1 if self.version == 1 else self.retiring)


def write(lanes_log2, segments, sparse=0, retiring=None):
    """The header bytes of a stream of ``2**lanes_log2`` lanes and ``segments`` segments: version 1 when no segment
    is sparse, else version 2 with the sparse segments' bits and the segment the lanes retire in."""
    if sparse:
        return bytes([_VERSION_2 << 4 | lanes_log2]) + b"".join(
            varint.encode(v) for v in (segments, sparse, 0 if retiring is None else retiring + 1))
    head = bytes([(lanes_log2 << 4) | min(segments, _EXTENDED)])
    return head + varint.encode(segments - _EXTENDED) if segments >= _EXTENDED else head


def read(data):
    """(`StreamHeader`, bytes read) of the stream ``data``; BitstreamError if malformed."""
    if not data:
        raise BitstreamError("empty coded stream")
    if data[0] >> 4 == _VERSION_2:
        lanes_log2, at = data[0] & 0x0F, 1
        segments, at = varint.decode(data, at, "segment count of the coded stream")
        sparse, at = varint.decode(data, at, "sparse segments of the coded stream")
        retiring, at = varint.decode(data, at, "retiring segment of the coded stream")
        if not sparse or sparse >> segments or retiring > segments or (retiring and sparse >> (retiring - 1) & 1):
            raise BitstreamError("inconsistent sparse segments in the coded stream header")
        stream = StreamHeader(lanes_log2, segments, 2, sparse, retiring - 1 if retiring else None)
    else:
        lanes_log2, segments, at = data[0] >> 4, data[0] & 0x0F, 1
        if segments == _EXTENDED:
            extra, at = varint.decode(data, at, "segment count of the coded stream")
            segments += extra
        stream = StreamHeader(lanes_log2, segments)
    if stream.segments >= MAX_SEGMENTS:
        raise BitstreamError(f"coded stream declares {stream.segments} segments (at most {MAX_SEGMENTS - 1})")
    if lanes_log2 > MAX_LANES_LOG2:
        raise BitstreamError(f"coded stream declares 2**{lanes_log2} lanes (at most 2**{MAX_LANES_LOG2})")
    return stream, at


def version(data):
    """The version (1 or 2) of the coded stream ``data``, from its first byte."""
    return 2 if data and data[0] >> 4 == _VERSION_2 else 1
