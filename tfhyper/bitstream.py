"""The `.tfh` container: a compact header, the entropy-coded sections, and a checksum.

A compressed image is the header below followed by the payload sections (opaque bytes from the arithmetic coder;
the codec decides what each section holds) and a CRC-32. Fields, in order:

| field              | size            | content                                                                 |
| ------------------ | --------------- | ----------------------------------------------------------------------- |
| magic              | 3 bytes         | `TFH`                                                                   |
| format version     | 1 byte          | `1` or `2` (see below); files of any other version are refused          |
| model kind         | 1 byte          | the model class's `FILE_KIND`: `0` factorized, `1` scale hyperprior, ... |
| model fingerprint  | 4 bytes         | identifies the model that wrote the file; decoding checks it            |
| image height       | varint          | stored minus one; 1..65535                                              |
| image width        | varint          | stored minus one; 1..65535, and height * width <= 2^28                  |
| y shape h, w, c    | 3 varints       | stored minus one; h, w in 1..65535, c in 1..4096                        |
| z shape h, w, c    | 3 varints       | kinds with side information only; stored and bounded like y             |
| section count      | varint          | 1..8                                                                    |
| section lengths    | 1 varint each   | bytes in each section                                                   |
| sections           | sum of lengths  | the sections' bytes, in order                                           |
| checksum           | 4 bytes         | CRC-32 (`zlib.crc32`, little endian) of everything before it            |

Version 2 differs only in what its section holds: a coded stream of version 2 (`tfhyper.coder.header`, with sparse
segments), which a reader of version 1 cannot decode; it refuses the file by its version byte. The encoder writes
version 1, byte for byte as before version 2 existed, whenever its stream has no sparse segment.

Varints are unsigned LEB128 (`tfhyper.varint`, shared with the coder's stream header): seven bits per byte, least
significant group first, the high bit set on every byte but the last. They hold values below 2^32 in at most 5 bytes,
and overlong encodings (a multi-byte varint ending in a zero group) are refused, so each header has exactly one
encoding. Sizes are stored minus one, as WebP and AV1 do, because
zero is never valid and 128 (a common channel count) then fits one byte.

A typical Kodak file (768 x 512, scale hyperprior with N = 128, M = 192, y of 4,600 bytes, z of 300 bytes) spends
29 bytes on header and checksum, 25 of them before the payload; a factorized-prior file spends 24.

`unpack` checks every field as it is read, before anything is allocated, and raises only `BitstreamError`.
Whether the latent shapes fit the image (y is ceil(H / 16) x ceil(W / 16) in this paper's g_a) depends on the model,
so the codec checks that, with `expected_latent_hw`.
"""
import dataclasses
import enum
import operator
import zlib

from tfhyper import varint
from tfhyper.errors import BitstreamError

MAGIC = b"TFH"
VERSION = 2  # the newest; files of VERSIONS are read
VERSIONS = (1, 2)
FINGERPRINT_BYTES = 4
CHECKSUM_BYTES = 4
MAX_SIDE = 65535
MAX_PIXELS = 2**28
MAX_CHANNELS = 4096
MAX_SECTIONS = 8
# Magic, version, kind, fingerprint, five one-byte sizes (image and y), a count, one length and the checksum.
MIN_FILE_BYTES = len(MAGIC) + 2 + FINGERPRINT_BYTES + 5 + 2 + CHECKSUM_BYTES


class ModelKind(enum.IntEnum):
    """The paper's two kinds (section 3 vs. section 4); further kinds are registered by their model classes."""

    FACTORIZED_PRIOR = 0
    SCALE_HYPERPRIOR = 1


# kind byte -> (title, whether the header carries z's shape); `register_kind` adds the kinds of new models.
_KINDS = {ModelKind.FACTORIZED_PRIOR: ("factorized prior", False), ModelKind.SCALE_HYPERPRIOR: ("scale hyperprior", True)}


def register_kind(value, title, side_information):
    """Makes kind byte `value` known to `unpack`: its title and whether its files carry side information z."""
    value = int(value)
    if not 0 <= value <= 255:
        raise ValueError(f"a model kind is one byte, got {value}")
    known = _KINDS.get(value)
    if known is not None and known[1] != bool(side_information):
        raise ValueError(f"model kind {value} is registered already as {known[0]!r}")
    if known is None:
        _KINDS[value] = (title, bool(side_information))


def has_side_information(kind):
    return _KINDS[kind][1]


@dataclasses.dataclass(frozen=True)
class Header:
    """What a decoder must know before reading the payload; construction validates every bound.

    `y_shape` and `z_shape` are (height, width, channels) of the quantized latents y_hat and z_hat; `z_shape` is
    present exactly for kinds with side information (the hyperpriors).
    """

    kind: ModelKind
    fingerprint: bytes
    height: int
    width: int
    y_shape: tuple
    z_shape: tuple | None = None
    version: int = 1

    def __post_init__(self):
        kind = _kind(self.kind)
        set_field = object.__setattr__  # frozen: normalized values are stored once, here
        set_field(self, "kind", kind)
        set_field(self, "fingerprint", _fingerprint(self.fingerprint))
        set_field(self, "height", _bounded("image height", self.height, MAX_SIDE))
        set_field(self, "width", _bounded("image width", self.width, MAX_SIDE))
        if self.height * self.width > MAX_PIXELS:
            raise BitstreamError(
                f"image of {self.height} x {self.width} pixels exceeds the limit of {MAX_PIXELS} pixels"
            )
        _check_version(self.version)
        set_field(self, "y_shape", _latent_shape("y", self.y_shape))
        if has_side_information(kind):
            if self.z_shape is None:
                raise BitstreamError(f"a {_KINDS[kind][0]} header needs the shape of z")
            set_field(self, "z_shape", _latent_shape("z", self.z_shape))
        elif self.z_shape is not None:
            raise BitstreamError(f"a {_KINDS[kind][0]} header has no z, but z_shape was given")


def _check_version(version):
    if version not in VERSIONS:
        readable = " and ".join(map(str, VERSIONS))
        raise BitstreamError(f"unsupported format version {version} (this tfhyper reads versions {readable})")


def pack(header, sections):
    """Serializes `header` and the payload `sections` (a list of bytes-like) into one `.tfh` file's bytes."""
    if not isinstance(header, Header):
        raise BitstreamError(f"expected a Header, got {type(header).__name__}")
    sections = [_as_bytes_view(s, "section") for s in _section_list(sections)]
    sizes = [header.height, header.width, *header.y_shape, *(header.z_shape or ())]
    parts = [MAGIC, bytes([header.version, header.kind]), header.fingerprint]
    parts += [varint.encode(size - 1) for size in sizes]
    parts.append(varint.encode(len(sections)))
    parts += [varint.encode(len(s)) for s in sections]
    body = b"".join(parts + sections)
    return body + zlib.crc32(body).to_bytes(CHECKSUM_BYTES, "little")


def unpack(data):
    """Parses one `.tfh` file into (Header, list of section bytes); raises BitstreamError, and only that.

    Order of checks: magic, version, each header field with its bounds, the declared section lengths against the
    bytes present (truncation, trailing bytes), and last the checksum, so that a file cut short is reported as such.
    """
    view = _as_bytes_view(data, "bitstream")
    _check_magic(view)
    if len(view) < MIN_FILE_BYTES:
        raise BitstreamError(
            f"truncated bitstream: {len(view)} bytes, shorter than the smallest tfhyper file ({MIN_FILE_BYTES} bytes)"
        )
    _check_version(view[3])
    reader = _Reader(view, position=4)
    kind = _kind(reader.byte("model kind"))
    fingerprint = reader.take(FINGERPRINT_BYTES, "model fingerprint")
    height, width = (reader.size(name, MAX_SIDE) for name in ("image height", "image width"))
    y_shape = reader.latent_shape("y")
    z_shape = reader.latent_shape("z") if has_side_information(kind) else None
    header = Header(kind, bytes(fingerprint), height, width, y_shape, z_shape, version=view[3])
    count = reader.varint("section count")
    if not 1 <= count <= MAX_SECTIONS:
        raise BitstreamError(f"section count {count} outside 1..{MAX_SECTIONS}")
    lengths = [reader.varint(f"length of section {i}") for i in range(count)]
    _check_total_length(view, reader.position, lengths)
    _check_checksum(view)
    return header, _split_sections(view, reader.position, lengths)


def check_fingerprint(header, expected):
    """Refuses a file written by another model: decoding it would produce garbage, not an error."""
    expected = _fingerprint(expected)
    if header.fingerprint != expected:
        raise BitstreamError(
            f"file was written by a different model "
            f"(fingerprint {header.fingerprint.hex()}, this model {expected.hex()})"
        )


def expected_latent_hw(height, width, factor):
    """Latent height and width (ceil(height / factor), ceil(width / factor)) of a transform downsampling by `factor`.

    g_a downsamples by 16 (four stride-2 layers, Figure 4) and h_a by a further 4, with padding that rounds up.
    """
    height, width, factor = (operator.index(v) for v in (height, width, factor))
    if min(height, width, factor) < 1:
        raise ValueError(f"height, width and factor must be positive, got {height}, {width}, {factor}")
    return -(-height // factor), -(-width // factor)


def describe(header, sections, total_bytes):
    """A human-readable summary of one file, for `python -m tfhyper info`."""
    payload = sum(len(s) for s in sections)
    lines = [
        f"model:       {_KINDS[header.kind][0]} (fingerprint {header.fingerprint.hex()})",
        f"image:       {header.width} x {header.height} pixels (width x height)",
        f"latent y:    {_shape_text(header.y_shape)}",
    ]
    if header.z_shape is not None:
        lines.append(f"latent z:    {_shape_text(header.z_shape)}")
    lines.append(f"sections:    {len(sections)} ({', '.join(f'{len(s)}' for s in sections)} bytes)")
    lines.append(f"header:      {total_bytes - payload} bytes, checksum included")
    bpp = 8 * total_bytes / (header.height * header.width)
    lines.append(f"total:       {total_bytes} bytes, {bpp:.4f} bits per pixel")
    return "\n".join([f"tfhyper file, format version {header.version}"] + lines)


class _Reader:
    """Reads fields from a byte view in order; running out of bytes is a truncation, never an IndexError."""

    def __init__(self, view, position):
        self.view = view
        self.position = position

    def take(self, count, field):
        end = self.position + count
        if end > len(self.view):
            raise BitstreamError(f"truncated bitstream: ends inside the {field}")
        chunk = self.view[self.position : end]
        self.position = end
        return chunk

    def byte(self, field):
        return self.take(1, field)[0]

    def varint(self, field):
        value, self.position = varint.decode(self.view, self.position, field)
        return value

    def size(self, field, limit):
        """A size stored minus one; bounded here so that no later step sees a huge number."""
        return _bounded(field, self.varint(field) + 1, limit)

    def latent_shape(self, name):
        h = self.size(f"{name} height", MAX_SIDE)
        w = self.size(f"{name} width", MAX_SIDE)
        return h, w, self.size(f"{name} channels", MAX_CHANNELS)


def _check_magic(view):
    head = bytes(view[: len(MAGIC)])
    if head != MAGIC:
        if MAGIC.startswith(head):
            raise BitstreamError(f"truncated bitstream: {len(view)} bytes, shorter than the magic {MAGIC!r}")
        raise BitstreamError(f"not a tfhyper file (starts with {head!r}, expected {MAGIC!r})")


def _check_total_length(view, start, lengths):
    expected = start + sum(lengths) + CHECKSUM_BYTES
    if len(view) < expected:
        raise BitstreamError(
            f"truncated bitstream: {len(view)} bytes, the header declares {expected} "
            f"({sum(lengths)} in {len(lengths)} sections)"
        )
    if len(view) > expected:
        raise BitstreamError(
            f"trailing garbage: {len(view) - expected} bytes after the checksum "
            f"({len(view)} bytes, the header declares {expected})"
        )


def _check_checksum(view):
    stored = int.from_bytes(view[-CHECKSUM_BYTES:], "little")
    if zlib.crc32(view[:-CHECKSUM_BYTES]) != stored:
        raise BitstreamError("checksum mismatch: file is corrupted")


def _split_sections(view, start, lengths):
    sections = []
    for length in lengths:
        sections.append(bytes(view[start : start + length]))
        start += length
    return sections


def _as_bytes_view(data, what):
    """A flat byte view of any bytes-like object, without copying it."""
    if isinstance(data, str):
        raise BitstreamError(f"{what} must be bytes, not str")
    try:
        return memoryview(data).cast("B")
    except TypeError:
        raise BitstreamError(f"{what} must be a contiguous bytes-like object, not {type(data).__name__}") from None


def _section_list(sections):
    if isinstance(sections, (bytes, bytearray, memoryview, str)):
        raise BitstreamError("sections must be a list of bytes objects, not a single one")
    sections = list(sections)
    if not 1 <= len(sections) <= MAX_SECTIONS:
        raise BitstreamError(f"section count {len(sections)} outside 1..{MAX_SECTIONS}")
    return sections


def _integer(field, value):
    if isinstance(value, bool):
        raise BitstreamError(f"{field} must be an integer, not bool")
    try:
        return operator.index(value)
    except TypeError:
        raise BitstreamError(f"{field} must be an integer, not {type(value).__name__}") from None


def _bounded(field, value, limit):
    value = _integer(field, value)
    if not 1 <= value <= limit:
        raise BitstreamError(f"{field} {value} outside 1..{limit}")
    return value


def _kind(value):
    value = _integer("model kind", value)
    if value not in _KINDS:
        choices = ", ".join(f"{int(k)} = {title}" for k, (title, _) in sorted(_KINDS.items()))
        raise BitstreamError(f"unknown model kind {value} (expected {choices})")
    return ModelKind(value) if value in ModelKind._value2member_map_ else value


def _fingerprint(value):
    if isinstance(value, str):
        raise BitstreamError("fingerprint must be bytes, not str")
    try:
        value = bytes(memoryview(value).cast("B"))
    except TypeError:
        raise BitstreamError(f"fingerprint must be bytes, not {type(value).__name__}") from None
    if len(value) != FINGERPRINT_BYTES:
        raise BitstreamError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(value)}")
    return value


def _latent_shape(name, shape):
    try:
        h, w, c = shape
    except (TypeError, ValueError):
        raise BitstreamError(f"{name}_shape must be (height, width, channels), got {shape!r}") from None
    return (
        _bounded(f"{name} height", h, MAX_SIDE),
        _bounded(f"{name} width", w, MAX_SIDE),
        _bounded(f"{name} channels", c, MAX_CHANNELS),
    )


def _shape_text(shape):
    return f"{shape[0]} x {shape[1]} x {shape[2]} (height x width x channels)"
