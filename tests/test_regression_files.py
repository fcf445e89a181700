"""Files written by an earlier tfhyper decode bit-exactly today, and today's encoder writes exactly the same bytes.

`tests/fixtures/regression/` holds `.tfh` files, the small models that wrote them, their source images and
decodings, and raw coder streams with their symbols (how they were made: `tests/regression_fixtures.py`). They are
never regenerated: SHA-256 of every file is pinned below, so that a fixture replaced to make a test pass fails here.
"""
import hashlib
import pathlib

import numpy as np
import pytest

import tfhyper
from tfhyper import codec, coder
from tfhyper.imageio import read_image

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "regression"
SHA256 = {
    "factorized-kodim23-48x80.decoded.png": "583d8350135f07e8f034b9486aaf8106949e76c3b24abd7b3a4952a46fe98b52",
    "factorized-kodim23-48x80.tfh": "bf318a13724b0a0223aff8c03a5f92c19920af39ca95b7167a45fc378a764bb4",
    "factorized-synthetic-37x53.decoded.png": "3ee7f3d7374d65d2900444848cb0ca5378985379c34143f38f488ad543975b7c",
    "factorized-synthetic-37x53.tfh": "3293a249aa147386c71ab36bd1064b9daaaf725e8fb92d44f8762ce105490e87",
    "factorized.keras": "09f5cc69062356d7d31a253941359d19cae9b8f9845cbe5cf08f819c8a34bdbb",
    "hyperprior-kodim23-48x80.decoded.png": "512f02cbb1edc4bf404168c51dcae867d7381f8375755b97e77aa6748b0d47c1",
    "hyperprior-kodim23-48x80.tfh": "8ec75e999638298009826e41320666f1cd01f074e2d482e8fbdd3754a2a234b4",
    "hyperprior-synthetic-37x53.decoded.png": "134c110410b4faf332418f44174a07ecd75157a50bd4222e1ada96adda2b572a",
    "hyperprior-synthetic-37x53.tfh": "caaca55c4b80d4107010af4d83eba66597afc0ff0c9a6385a339c6d9cee152ca",
    "hyperprior.keras": "1470dc4235adc97cf78babc35a8ba82e376039f34284386bd840d6a551ee8c2e",
    "kodim23-48x80.png": "760aee14385c66e7a6449f020fd7ea68bd82f2bc95966e9a6d16a59e0fea995b",
    "streams.npz": "4f48122719a33a819398b6adff63c87c1e1c037988f71738e4473f27c9535700",
    "synthetic-37x53.png": "ba127e501c599448d74d1c19a92a15bf396d55952655b8427dce8f5ec43acedb",
}
MODELS = ("hyperprior", "factorized")
IMAGES = ("kodim23-48x80", "synthetic-37x53")
STREAMS = ("mixed", "mixed-4-lanes", "many-segments")
FILES = [(m, i) for m in MODELS for i in IMAGES]


def test_fixtures_are_the_committed_ones():
    present = sorted(p.name for p in FIXTURES.iterdir())
    assert present == sorted(SHA256)
    for name, digest in SHA256.items():
        assert hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest() == digest, name


@pytest.fixture(scope="module")
def models():
    return {name: tfhyper.load_model(FIXTURES / f"{name}.keras") for name in MODELS}


@pytest.mark.parametrize("model_name, image_name", FILES)
def test_file_decodes_to_the_committed_pixels(models, model_name, image_name):
    """The symbols decode exactly (test_file_symbols_are_those_the_model_codes); the pixels then pass through g_s in
    floating point, whose last bits depend on the CPU's kernels (oneDNN on AVX2 or AVX-512), so a value within a
    rounding error of k + 1/2 may round to the neighbouring 8-bit level on another machine: at most one level, on
    a handful of the 11,520 or 5,883 values. Written and checked on one machine, they are identical."""
    data = (FIXTURES / f"{model_name}-{image_name}.tfh").read_bytes()
    expected = read_image(FIXTURES / f"{model_name}-{image_name}.decoded.png").astype(np.int16)
    decoded = tfhyper.decompress(models[model_name], data).astype(np.int16)
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected).max() <= 1
    assert np.count_nonzero(decoded != expected) <= 5


@pytest.mark.parametrize("model_name, image_name", FILES)
def test_image_encodes_to_the_committed_bytes(models, model_name, image_name):
    image = read_image(FIXTURES / f"{image_name}.png")
    expected = (FIXTURES / f"{model_name}-{image_name}.tfh").read_bytes()
    assert tfhyper.compress(models[model_name], image) == expected


@pytest.mark.parametrize("model_name, image_name", FILES)
def test_file_symbols_are_those_the_model_codes(models, model_name, image_name):
    """The decoded symbols are the encoder's own, segment by segment (independently of g_s)."""
    model = models[model_name]
    _, symbols, _ = codec.symbols_and_segments(model, read_image(FIXTURES / f"{image_name}.png"))
    _, decoded, _ = codec.decode_symbols(model, (FIXTURES / f"{model_name}-{image_name}.tfh").read_bytes())
    assert list(decoded) == list(symbols) == (["z", "y"] if model_name == "hyperprior" else ["y"])
    for name in decoded:
        np.testing.assert_array_equal(decoded[name], symbols[name])


def stream(name):
    """(bytes, lanes or None, segments as (values, indexes, tables)) of one committed raw stream."""
    with np.load(FIXTURES / "streams.npz") as arrays:
        a = {key.split("/", 1)[1]: arrays[key] for key in arrays.files if key.startswith(f"{name}/")}
    tables = coder.CodingTables.from_dict({key: a[f"tables/{key}"] for key in ("cdf", "lengths", "offsets", "precision")})
    shapes = [tuple(int(d) for d in row if d >= 0) for row in a["shapes"]]
    ends = np.cumsum([int(np.prod(s)) for s in shapes])
    values = np.split(a["values"], ends[:-1])
    indexes = np.split(a["indexes"], ends[:-1])
    segments = [(v.reshape(s), i.reshape(s), tables) for v, i, s in zip(values, indexes, shapes)]
    return a["bytes"].tobytes(), int(a["lanes"]) or None, segments


@pytest.mark.parametrize("name", STREAMS)
def test_raw_stream_decodes_to_the_committed_symbols(name):
    data, _, segments = stream(name)
    decoder = coder.Decoder(data)
    for values, indexes, tables in segments:
        np.testing.assert_array_equal(decoder.decode(indexes, tables), values)
    decoder.finish()


@pytest.mark.parametrize("name", STREAMS)
def test_raw_stream_encodes_to_the_committed_bytes(name):
    data, lanes, segments = stream(name)
    assert coder.encode(segments, lanes=lanes) == data


def test_raw_streams_cover_escapes_lanes_and_the_extended_segment_count():
    """What the fixtures are meant to pin: int64 extremes escape, lane counts differ, >= 15 segments."""
    mixed, _, segments = stream("mixed")
    assert {2**63 - 1, -(2**63)} <= set(segments[1][0].tolist())
    assert 1 << (stream("mixed-4-lanes")[0][0] >> 4) == 4 and mixed[0] >> 4 != 2
    many, _, segments = stream("many-segments")
    assert many[0] & 0x0F == 15 and len(segments) - 15 >= 128  # a two-byte count follows the header byte
