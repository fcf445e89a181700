"""The `.tfh` container: exact layout, round trips, every refusal, and fuzzing that only BitstreamError escapes."""
import math
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfhyper import bitstream, varint
from tfhyper.bitstream import (
    Header,
    ModelKind,
    check_fingerprint,
    describe,
    expected_latent_hw,
    pack,
    register_kind,
    unpack,
)
from tfhyper.errors import BitstreamError

FINGERPRINT = bytes.fromhex("deadbeef")
# 768 x 512 Kodak image, scale hyperprior with N = 128, M = 192: y is 512/16 x 768/16, z a further 4 times smaller.
KODAK = Header(ModelKind.SCALE_HYPERPRIOR, FINGERPRINT, 512, 768, (32, 48, 192), (8, 12, 128))
FUZZ = settings(max_examples=3000, deadline=None, database=None)
FEW = settings(max_examples=300, deadline=None, database=None)
# Each example tries every prefix of its file, some 50 to 200 parses.
TRUNCATIONS = settings(max_examples=1000, deadline=None, database=None)


def leb128(value):
    """Unsigned LEB128, written independently of the module under test."""
    out = bytearray()
    while True:
        group, value = value & 0x7F, value >> 7
        out.append(group | (0x80 if value else 0))
        if not value:
            return bytes(out)


def with_crc(body):
    return body + zlib.crc32(body).to_bytes(4, "little")


def craft(kind=1, version=1, dims=(512, 768, 32, 48, 192, 8, 12, 128), count=None, lengths=None, payload=b"abc"):
    """A file assembled by hand from raw field values (sizes given as true values, or as raw bytes to insert as is)."""
    lengths = [len(payload)] if lengths is None else lengths
    count = len(lengths) if count is None else count
    sizes = b"".join(d if isinstance(d, bytes) else leb128(d - 1) for d in dims)
    counts = leb128(count) + b"".join(leb128(n) for n in lengths)
    return with_crc(b"TFH" + bytes([version, kind]) + FINGERPRINT + sizes + counts + payload)


def refused(data, message):
    with pytest.raises(BitstreamError) as info:
        unpack(data)
    assert message in str(info.value)
    return str(info.value)


# --- strategies -------------------------------------------------------------------------------------------------

# Values around the one/two/three-byte varint boundaries of the stored (minus one) sizes, and the limits.
EDGE_SIDES = [1, 2, 128, 129, 130, 16384, 16385, 16386, 65535]
sides = st.one_of(st.integers(1, bitstream.MAX_SIDE), st.sampled_from(EDGE_SIDES))
channels = st.one_of(st.integers(1, bitstream.MAX_CHANNELS), st.sampled_from([1, 128, 129, 192, 320, 4096]))
latent_shapes = st.tuples(sides, sides, channels)


@st.composite
def headers(draw):
    kind = draw(st.sampled_from(list(ModelKind)))
    height = draw(sides)
    widest = min(bitstream.MAX_SIDE, bitstream.MAX_PIXELS // height)
    width = draw(st.one_of(st.integers(1, widest), st.just(widest)))
    z_shape = draw(latent_shapes) if kind == ModelKind.SCALE_HYPERPRIOR else None
    fingerprint = draw(st.binary(min_size=4, max_size=4))
    return Header(kind, fingerprint, height, width, draw(latent_shapes), z_shape)


section_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=bitstream.MAX_SECTIONS)
valid_files = st.builds(pack, headers(), section_lists)


def assert_only_bitstream_errors(data):
    """Either a BitstreamError, or a file whose re-encoding is byte-identical (the format has one encoding)."""
    try:
        header, sections = unpack(data)
    except BitstreamError:
        return
    assert pack(header, sections) == bytes(data)


# --- layout ------------------------------------------------------------------------------------------------------


def test_kodak_hyperprior_header_bytes_are_exact():
    sections = [b"z" * 300, b"y" * 4600]
    expected_header = bytes.fromhex(
        "544648"  # TFH
        "01" "01"  # version 1, scale hyperprior
        "deadbeef"  # fingerprint
        "ff03" "ff05"  # 511 = height - 1, 767 = width - 1
        "1f" "2f" "bf01"  # y: 31, 47, 191
        "07" "0b" "7f"  # z: 7, 11, 127
        "02" "ac02" "f823"  # 2 sections of 300 and 4600 bytes
    )
    body = expected_header + b"".join(sections)
    data = pack(KODAK, sections)
    assert data == body + zlib.crc32(body).to_bytes(4, "little")
    # 3 + 1 + 1 + 4 (fixed) + 2 + 2 (image) + 4 (y) + 3 (z) + 1 + 2 + 2 (sections) + 4 (checksum)
    assert len(data) - 4900 == 29


def test_factorized_header_size():
    data = pack(Header(ModelKind.FACTORIZED_PRIOR, FINGERPRINT, 512, 768, (32, 48, 192)), [b"y" * 4600])
    # 9 fixed + 4 image + 4 y + 1 count + 2 length + 4 checksum
    assert len(data) - 4600 == 24


def test_smallest_file_has_the_declared_minimum_size():
    data = pack(Header(0, FINGERPRINT, 1, 1, (1, 1, 1)), [b""])
    assert len(data) == bitstream.MIN_FILE_BYTES == 20
    assert unpack(data) == (Header(0, FINGERPRINT, 1, 1, (1, 1, 1)), [b""])


@given(headers(), section_lists)
@FEW
def test_round_trip(header, sections):
    assert unpack(pack(header, sections)) == (header, sections)


@pytest.mark.parametrize("length", [0, 127, 128, 16383, 16384])
def test_round_trip_of_section_lengths_at_varint_boundaries(length):
    sections = [bytes(range(256)) * (length // 256) + bytes(length % 256), b"\x01"]
    assert unpack(pack(KODAK, sections)) == (KODAK, sections)


def test_unpack_accepts_bytes_like_inputs_and_leaves_them_unchanged():
    data = pack(KODAK, [b"side", b"main"])
    buffer = bytearray(data)
    assert unpack(buffer) == unpack(memoryview(data)) == (KODAK, [b"side", b"main"])
    assert buffer == data


def test_header_normalizes_integer_like_fields():
    header = Header(1, bytearray(FINGERPRINT), 512, 768, [32, 48, 192], [8, 12, 128])
    assert header == KODAK
    assert header.kind is ModelKind.SCALE_HYPERPRIOR and header.y_shape == (32, 48, 192)


# --- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, message",
    [
        ("TFH", "must be bytes, not str"),
        (12345, "bytes-like object, not int"),
        (None, "bytes-like object, not NoneType"),
        (b"", "truncated bitstream: 0 bytes"),
        (b"TF", "truncated bitstream: 2 bytes"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a tfhyper file"),
        (b"TFX" + bytes(40), "not a tfhyper file"),
        (b"TFH\x01\x01", "truncated bitstream: 5 bytes, shorter than the smallest tfhyper file (20 bytes)"),
    ],
)
def test_refuses_foreign_and_short_inputs(data, message):
    refused(data, message)


def test_refuses_other_versions_naming_both():
    assert refused(craft(version=3), "unsupported format version 3") == (
        "unsupported format version 3 (this tfhyper reads versions 1 and 2)"
    )
    refused(craft(version=0), "unsupported format version 0 (this tfhyper reads versions 1 and 2)")
    header, _ = bitstream.unpack(craft(version=2))  # version 2: the same container around a version-2 stream
    assert header.version == 2 and bitstream.unpack(craft(version=1))[0].version == 1


def test_refuses_unknown_model_kind():
    refused(craft(kind=9), "unknown model kind 9 (expected 0 = factorized prior, 1 = scale hyperprior")


def test_registered_kinds_are_read_with_their_side_information():
    """A kind a model class registers (the mean-scale hyperprior is 2) round-trips with its z shape; a kind without
    side information refuses a z shape; registering a taken byte with another layout is refused."""
    register_kind(2, "mean-scale hyperprior", side_information=True)
    header = Header(2, FINGERPRINT, 512, 768, (32, 48, 192), (8, 12, 128))
    parsed, _ = unpack(pack(header, [b"yz"]))
    assert parsed.kind == 2 and parsed.z_shape == (8, 12, 128)
    with pytest.raises(BitstreamError, match="has no z"):
        Header(ModelKind.FACTORIZED_PRIOR, FINGERPRINT, 512, 768, (32, 48, 192), (8, 12, 128))
    with pytest.raises(ValueError, match="registered already"):
        register_kind(1, "something else", side_information=False)


@pytest.mark.parametrize(
    "dims, message",
    [
        ((70000, 768, 32, 48, 192, 8, 12, 128), "image height 70000 outside 1..65535"),
        ((512, 65536, 32, 48, 192, 8, 12, 128), "image width 65536 outside 1..65535"),
        ((65535, 65535, 32, 48, 192, 8, 12, 128), "image of 65535 x 65535 pixels exceeds the limit of 268435456"),
        ((16384, 16385, 32, 48, 192, 8, 12, 128), "image of 16384 x 16385 pixels exceeds"),
        ((512, 768, 65536, 48, 192, 8, 12, 128), "y height 65536 outside 1..65535"),
        ((512, 768, 32, 65536, 192, 8, 12, 128), "y width 65536 outside 1..65535"),
        ((512, 768, 32, 48, 4097, 8, 12, 128), "y channels 4097 outside 1..4096"),
        ((512, 768, 32, 48, 192, 10**6, 12, 128), "z height 1000000 outside 1..65535"),
        ((512, 768, 32, 48, 192, 8, 65536, 128), "z width 65536 outside 1..65535"),
        ((512, 768, 32, 48, 192, 8, 12, 5000), "z channels 5000 outside 1..4096"),
    ],
)
def test_refuses_out_of_range_sizes(dims, message):
    refused(craft(dims=dims), message)


def test_largest_sizes_are_accepted():
    dims = (16384, 16384, 65535, 65535, 4096, 65535, 65535, 4096)
    header, _ = unpack(craft(dims=dims))
    assert (header.height, header.width, header.y_shape, header.z_shape) == (
        16384, 16384, (65535, 65535, 4096), (65535, 65535, 4096)
    )


@pytest.mark.parametrize(
    "raw_height, message",
    [
        (b"\x80\x00", "malformed varint in the image height: overlong encoding"),
        (b"\xff\x80\x80\x00", "malformed varint in the image height: overlong encoding"),
        (b"\xff\xff\xff\xff\x10", "malformed varint in the image height: exceeds 32 bits"),
        (b"\x80\x80\x80\x80\x80\x01", "malformed varint in the image height: exceeds 32 bits"),
    ],
)
def test_refuses_malformed_varints(raw_height, message):
    refused(craft(dims=(raw_height, 768, 32, 48, 192, 8, 12, 128)), message)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16383, 16384, 2**21, 2**28 - 1, 2**28, 2**32 - 1])
def test_varints_are_minimal_leb128_and_read_back(value):
    """The one varint implementation (the container's and the coder's) against the independent `leb128`."""
    data = b"\xaa" + varint.encode(value) + b"\xbb"
    assert data[1:-1] == leb128(value)
    assert varint.decode(data, 1, "field") == (value, len(data) - 1)


@pytest.mark.parametrize("value", [-1, 2**32, 2**40])
def test_varint_encoding_refuses_values_outside_32_bits(value):
    with pytest.raises(BitstreamError, match="does not fit a 32-bit varint"):
        varint.encode(value)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff"])
def test_varint_cut_short_is_a_truncation(data):
    with pytest.raises(BitstreamError, match="^truncated bitstream: ends inside the field"):
        varint.decode(data, 0, "field")


def test_largest_varint_is_read():
    # 2^32 - 1 in five bytes is well formed; only its bound refuses it.
    refused(craft(dims=(b"\xff\xff\xff\xff\x0f", 768, 32, 48, 192, 8, 12, 128)), "image height 4294967296 outside")


@pytest.mark.parametrize("count", [0, 9, 1000])
def test_refuses_section_counts_outside_range(count):
    refused(craft(count=count, lengths=[3]), f"section count {count} outside 1..8")


KODAK_SIZES = bytes.fromhex("ff03ff05" "1f2fbf01" "070b7f")  # image, y and z sizes of KODAK, each minus one


@pytest.mark.parametrize(
    "fields, message",
    [
        # factorized, a 65535 x 1 image, y of 65535 x 65535 x (channels cut after the varint's first byte)
        (b"\x00" + FINGERPRINT + b"\xfe\xff\x03\x00\xfe\xff\x03\xfe\xff\x03\xbf", "the y channels"),
        (b"\x01" + FINGERPRINT + KODAK_SIZES + b"\x02\x04\x80", "the length of section 1"),
        (b"\x01" + FINGERPRINT + KODAK_SIZES + b"\xff\xff", "the section count"),
    ],
)
def test_refuses_truncation_inside_the_header(fields, message):
    data = b"TFH\x01" + fields
    assert len(data) >= bitstream.MIN_FILE_BYTES
    assert refused(data, "truncated") == f"truncated bitstream: ends inside {message}"


def test_refuses_sections_longer_than_the_file():
    data = craft(lengths=[3, 50], payload=b"abc" + bytes(10))
    assert refused(data, "truncated bitstream") == (
        f"truncated bitstream: {len(data)} bytes, the header declares {len(data) - 10 + 50} (53 in 2 sections)"
    )


def test_refuses_trailing_bytes():
    data = pack(KODAK, [b"side", b"main"])
    assert refused(data + b"\x00", "trailing garbage") == (
        f"trailing garbage: 1 bytes after the checksum ({len(data) + 1} bytes, the header declares {len(data)})"
    )


@pytest.mark.parametrize("position", [5, 9, 25, -5, -1])
def test_refuses_corrupted_bytes_by_checksum(position):
    data = bytearray(pack(KODAK, [b"side", b"main"]))
    data[position] ^= 0x01  # fingerprint, height, payload, checksum: the structure stays valid, only the CRC can tell
    assert refused(bytes(data), "checksum") == "checksum mismatch: file is corrupted"


def test_check_fingerprint():
    check_fingerprint(KODAK, FINGERPRINT)
    with pytest.raises(BitstreamError) as info:
        check_fingerprint(KODAK, bytes.fromhex("01020304"))
    assert str(info.value) == "file was written by a different model (fingerprint deadbeef, this model 01020304)"


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(kind=9), "unknown model kind 9"),
        (dict(kind=1.0), "model kind must be an integer, not float"),
        (dict(fingerprint=b"abc"), "fingerprint must be 4 bytes, got 3"),
        (dict(fingerprint="abcd"), "fingerprint must be bytes, not str"),
        (dict(height=0), "image height 0 outside 1..65535"),
        (dict(width=True), "image width must be an integer, not bool"),
        (dict(height=20000, width=20000), "image of 20000 x 20000 pixels exceeds"),
        (dict(y_shape=(32, 48)), "y_shape must be (height, width, channels), got (32, 48)"),
        (dict(y_shape=(32, 48, 0)), "y channels 0 outside 1..4096"),
        (dict(z_shape=None), "a scale hyperprior header needs the shape of z"),
        (dict(kind=0), "a factorized prior header has no z"),
        (dict(z_shape=(8, 12.5, 128)), "z width must be an integer, not float"),
    ],
)
def test_header_refuses_invalid_fields(fields, message):
    values = dict(kind=1, fingerprint=FINGERPRINT, height=512, width=768, y_shape=(32, 48, 192), z_shape=(8, 12, 128))
    with pytest.raises(BitstreamError) as info:
        Header(**{**values, **fields})
    assert message in str(info.value)


@pytest.mark.parametrize(
    "header, sections, message",
    [
        ("header", [b""], "expected a Header, got str"),
        (KODAK, [], "section count 0 outside 1..8"),
        (KODAK, [b""] * 9, "section count 9 outside 1..8"),
        (KODAK, b"payload", "a list of bytes objects, not a single one"),
        (KODAK, ["text"], "section must be bytes, not str"),
        (KODAK, [3], "section must be a contiguous bytes-like object, not int"),
    ],
)
def test_pack_refuses_invalid_input(header, sections, message):
    with pytest.raises(BitstreamError) as info:
        pack(header, sections)
    assert message in str(info.value)


# --- no allocation from declared sizes ----------------------------------------------------------------------------


def peak_allocation_while_refusing(data, message):
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match=message):
            unpack(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "dims, lengths, message",
    [
        ((10**9, 10**9, 32, 48, 192, 8, 12, 128), [0], "image height 1000000000 outside"),
        ((65535, 65535, 4096, 4096, 4096, 1024, 1024, 4096), [0], "exceeds the limit"),
        ((512, 768, 32, 48, 192, 8, 12, 128), [2**32 - 1] * 8, "truncated bitstream"),
    ],
)
def test_huge_declared_sizes_are_refused_without_allocating(dims, lengths, message):
    # The checksum is valid, so only the bound checks stand between these sizes and an allocation.
    assert peak_allocation_while_refusing(craft(dims=dims, lengths=lengths, payload=b""), message) < 64 * 1024


# --- helpers for the codec ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, factor, expected",
    [
        (512, 768, 16, (32, 48)),
        (500, 700, 16, (32, 44)),
        (32, 48, 4, (8, 12)),
        (1, 1, 64, (1, 1)),
        (17, 16, 16, (2, 1)),
    ],
)
def test_expected_latent_hw(height, width, factor, expected):
    assert expected_latent_hw(height, width, factor) == expected


@given(st.integers(1, 10**6), st.integers(1, 10**6), st.sampled_from([1, 2, 4, 16, 64]))
@FEW
def test_expected_latent_hw_is_the_ceiling(height, width, factor):
    assert expected_latent_hw(height, width, factor) == (math.ceil(height / factor), math.ceil(width / factor))


def test_expected_latent_hw_refuses_nonpositive():
    with pytest.raises(ValueError, match="must be positive"):
        expected_latent_hw(512, 0, 16)


def test_describe():
    sections = [b"z" * 300, b"y" * 4600]
    text = describe(KODAK, sections, 4929)
    assert text.splitlines() == [
        "tfhyper file, format version 1",
        "model:       scale hyperprior (fingerprint deadbeef)",
        "image:       768 x 512 pixels (width x height)",
        "latent y:    32 x 48 x 192 (height x width x channels)",
        "latent z:    8 x 12 x 128 (height x width x channels)",
        "sections:    2 (300, 4600 bytes)",
        "header:      29 bytes, checksum included",
        "total:       4929 bytes, 0.1003 bits per pixel",  # 8 * 4929 / (768 * 512) = 0.10028
    ]
    factorized = describe(Header(0, FINGERPRINT, 2, 2, (1, 1, 3)), [b"ab"], 22)
    assert "factorized prior" in factorized and "latent z" not in factorized and "44.0000 bits per pixel" in factorized


# --- fuzzing --------------------------------------------------------------------------------------------------------


@given(st.one_of(st.binary(max_size=120), st.binary(max_size=120).map(lambda tail: b"TFH\x01" + tail)))
@FUZZ
def test_fuzz_random_bytes(data):
    assert_only_bitstream_errors(data)


edits = st.lists(
    st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 2**16), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)


def apply_edits(data, edit_list):
    data = bytearray(data)
    for operation, position, value in edit_list:
        position %= len(data) + 1
        if operation == "insert":
            data.insert(position, value)
        elif position < len(data):
            if operation == "replace":
                data[position] = value
            else:
                del data[position]
    return bytes(data)


@given(valid_files, edits)
@FUZZ
def test_fuzz_mutated_valid_files(data, edit_list):
    assert_only_bitstream_errors(apply_edits(data, edit_list))


@given(valid_files)
@TRUNCATIONS
def test_every_truncation_is_reported_as_truncated(data):
    for length in range(len(data)):
        with pytest.raises(BitstreamError, match="^truncated bitstream"):
            unpack(data[:length])
