"""The stream's header: one byte ``(log2 lanes) << 4 | min(segments, 15)``, then, when ``segments >= 15``, the
unsigned LEB128 varint (`tfhyper.varint`) of ``segments - 15``."""
from tfhyper import varint
from tfhyper.coder.lanes import MAX_LANES_LOG2
from tfhyper.errors import BitstreamError

MAX_SEGMENTS = 1 << 24
_EXTENDED = 15


def write(lanes_log2, segments):
    """The header bytes of a stream of ``2**lanes_log2`` lanes and ``segments`` segments."""
    head = bytes([(lanes_log2 << 4) | min(segments, _EXTENDED)])
    return head + varint.encode(segments - _EXTENDED) if segments >= _EXTENDED else head


def read(data):
    """(log2 of the lane count, segment count, bytes read) of the stream ``data``; BitstreamError if malformed."""
    if not data:
        raise BitstreamError("empty coded stream")
    lanes_log2, segments, at = data[0] >> 4, data[0] & 0x0F, 1
    if segments == _EXTENDED:
        extra, at = varint.decode(data, at, "segment count of the coded stream")
        segments += extra
    if segments >= MAX_SEGMENTS:
        raise BitstreamError(f"coded stream declares {segments} segments (at most {MAX_SEGMENTS - 1})")
    if lanes_log2 > MAX_LANES_LOG2:
        raise BitstreamError(f"coded stream declares 2**{lanes_log2} lanes (at most 2**{MAX_LANES_LOG2})")
    return lanes_log2, segments, at
