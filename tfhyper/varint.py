"""Unsigned LEB128 varints, the one implementation of the `.tfh` header's sizes and the coder's segment count.

Seven bits per byte, least significant group first, the high bit set on every byte but the last. Values below
2^32 take at most 5 bytes. Reading refuses overlong encodings (a multi-byte varint ending in a zero group), so that
every value has exactly one encoding and a file cannot carry the same header in two spellings, and refuses values of
2^32 and more, so that no caller sees a number larger than it bounds.
"""
from tfhyper.errors import BitstreamError

MAX_BYTES = 5
LIMIT = 2**32


def encode(value):
    """The shortest LEB128 bytes of ``value`` in [0, 2^32)."""
    if not 0 <= value < LIMIT:
        raise BitstreamError(f"{value} does not fit a 32-bit varint")
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def decode(data, position, field):
    """(value, position after it) of the varint at ``data[position]``; ``field`` names it in errors.

    ``data`` is any indexable sequence of byte values (bytes, a memoryview). Running out of data is a truncation.
    """
    value = 0
    for index in range(MAX_BYTES):
        if position + index >= len(data):
            raise BitstreamError(f"truncated bitstream: ends inside the {field}")
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            if byte == 0 and index > 0:
                raise BitstreamError(f"malformed varint in the {field}: overlong encoding")
            if value >= LIMIT:
                break
            return value, position + index + 1
    raise BitstreamError(f"malformed varint in the {field}: exceeds 32 bits")
