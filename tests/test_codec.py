"""compress / decompress: round trips, rate honesty, cross-machine safety, robustness, command line."""
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfhyper
from tfhyper import codec, coder
from tfhyper.errors import BitstreamError
from tfhyper.models import MODELS, MeanScaleHyperprior

REPO = pathlib.Path(__file__).resolve().parents[1]


def perturbed(cls, seed):
    """A seeded ``cls(16, 24)`` whose channels differ (a fresh one has identical densities in every channel).

    Seeded before it is built: unseeded, its weights (and so its rates) would depend on the tests run before it.
    """
    keras.utils.set_random_seed(seed)
    model = cls(16, 24)
    model.build()
    rng = np.random.default_rng(seed)
    for w in model.entropy_bottleneck.weights:
        w.assign(w.numpy() + rng.normal(scale=0.5, size=w.shape))
    for w in model.g_a.weights[-2:]:  # wider latents, so that y spans several symbols
        w.assign(w.numpy() * 4)
    model.update_tables()
    return model


@pytest.fixture(scope="module")
def hyperprior():
    return perturbed(tfhyper.ScaleHyperprior, 0)


@pytest.fixture(scope="module")
def factorized():
    return perturbed(tfhyper.FactorizedPrior, 1)


@pytest.fixture(scope="module")
def meanscale():
    model = perturbed(MeanScaleHyperprior, 2)
    rng = np.random.default_rng(3)
    for w in model.h_s.weights:  # means of a few units, so that round(y - mu) differs from round(y)
        w.assign(w.numpy() + rng.normal(scale=0.3, size=w.shape))
    model.update_tables()
    return model


@pytest.fixture(scope="module")
def models(hyperprior, factorized, meanscale):
    return {"hyperprior": hyperprior, "factorized": factorized, "meanscale": meanscale}


def random_image(h, w, seed):
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(h // 4, 1), max(w // 4, 1), 3)).astype(np.float32)
    smooth = tf.image.resize(coarse[None], (h, w)).numpy()[0]
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


SIZES = [(1, 1), (17, 31), (64, 64), (768, 512), (512, 768)]


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("size", SIZES)
def test_round_trip_equals_reconstruction_from_rounded_latents(kind, size, models):
    model = models[kind]
    image = random_image(*size, seed=size[0])
    latents, symbols, _ = codec.symbols_and_segments(model, image)
    data = codec.compress(model, image)
    header, decoded, _ = codec.decode_symbols(model, data)
    assert decoded.keys() == symbols.keys() == set(model.LATENTS)
    for name in model.LATENTS:
        np.testing.assert_array_equal(decoded[name], symbols[name])
    assert (header.height, header.width) == size
    # The model's own reconstruction from rounded latents, through the float model. It starts from the encoder's
    # y: an analysis recomputed outside the encoder's graph can differ in the last bit, and a latent at .5 then
    # rounds the other way (seen once in 768x512 under heavy load).
    y = latents["y"]
    if kind == "factorized":
        y_hat = np.round(y - model.entropy_bottleneck.medians().numpy()) + model.entropy_bottleneck.medians().numpy()
    elif kind == "meanscale":
        # The means the file uses come from the integer h_s; the float one agrees to its fixed point (2^-16).
        z_hat = symbols["z"] + model.coding_tables["medians"]
        mu = model.prior_parameters(tf.constant(z_hat[None], tf.float32), (1, *y.shape))["mu"].numpy()[0]
        _, means = model.integer_hyper_synthesis().indexes_and_means(symbols["z"], y.shape[:2], model.latent_filters)
        np.testing.assert_allclose(means, mu, atol=1e-3)
        assert np.any(np.round(y - means) != np.round(y)), "the means change no symbol: a weak test"
        y_hat = np.round(y - means) + means
    else:
        y_hat = np.round(y)
    expected = model.synthesis(tf.constant(y_hat[None], tf.float32), *size).numpy()[0]
    expected = np.clip(np.round(expected * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(tfhyper.decompress(model, data), expected)


@pytest.mark.parametrize("kind", list(MODELS))
def test_transforms_compiled_by_xla_agree_with_the_plain_graphs_and_files_decode_either_way(kind, models):
    model = models[kind]
    image = random_image(64, 96, seed=5)
    plain, compiled = codec.analyse(model, image), codec.analyse(model, image, jit_compile=True)
    for name in model.LATENTS:
        np.testing.assert_allclose(compiled[name], plain[name], rtol=1e-4, atol=1e-4)
    data = codec.compress(model, image, jit_compile=True)
    _, symbols, _ = codec.decode_symbols(model, data)  # a file of the compiled encoder, read by the plain decoder
    _, plain_symbols, _ = codec.symbols_and_segments(model, image)
    for name in model.LATENTS:  # latents within rounding of .5 may round the other way, nothing more
        assert np.mean(symbols[name] != plain_symbols[name]) < 0.01
        assert np.abs(symbols[name] - plain_symbols[name]).max() <= 1
    difference = tfhyper.decompress(model, data, jit_compile=True).astype(int) - tfhyper.decompress(model, data)
    assert np.abs(difference).max() <= 1 and np.mean(difference != 0) < 0.01


def test_file_size_is_close_to_the_estimate(hyperprior):
    image = random_image(256, 384, seed=3)
    _, symbols, segments = codec.symbols_and_segments(hyperprior, image)
    ideal_bits = sum(coder.estimate_bits(*triple) for triple in codec.coder_input(symbols, segments))
    data = codec.compress(hyperprior, image)
    # header (~30 bytes) + coder termination; the precise Kodak figures come from experiments.benchmark_codec
    assert len(data) * 8 <= ideal_bits + 8 * 64


@pytest.mark.parametrize("kind", ["hyperprior", "meanscale"])
def test_integer_path_is_independent_of_summation_order(kind, models):
    """The float64 BLAS path gives the same integers as pure int64 arithmetic summed in reverse order."""
    ihs = models[kind].integer_hyper_synthesis()
    rng = np.random.default_rng(0)
    z = rng.integers(-6, 7, (5, 7, 16))
    expected = ihs.output_fixed_point(z, (20, 28))
    x = np.clip(z * 2**16 + ihs.medians_q.astype(np.int64), -(2**25), 2**25)
    for layer in ihs.layers:
        x = _int_layer(layer, x, layer.kernel.astype(np.int64))
    np.testing.assert_array_equal(expected, x[:20, :28])


def _int_layer(layer, x, kernel):
    """The same layer in pure int64 arithmetic (numpy einsum on integers: exact by construction)."""
    k = kernel.shape[0]
    pad = (k - 1) // 2
    h, w, _ = x.shape
    if layer.transposed:
        full = np.zeros((2 * h + k - 1, 2 * w + k - 1, kernel.shape[3]), np.int64)
        for a in reversed(range(k)):
            for b in reversed(range(k)):
                full[a : a + 2 * h : 2, b : b + 2 * w : 2] += np.einsum("hwi,io->hwo", x, kernel[a, b])
        out = full[pad : pad + 2 * h, pad : pad + 2 * w]
    else:
        padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
        out = np.zeros((h, w, kernel.shape[3]), np.int64)
        for a in reversed(range(k)):
            for b in reversed(range(k)):
                out += np.einsum("hwi,io->hwo", padded[a : a + h, b : b + w], kernel[a, b])
    out = out + layer.bias.astype(np.int64)
    # round half up of out / 2^f, in integers: floor((out + 2^(f-1)) / 2^f) (f >= 1 for these layers)
    f = layer.fraction.astype(np.int64)
    out = np.floor_divide(out + (np.int64(1) << (f - 1)), np.int64(1) << f)
    if layer.relu:
        out = np.maximum(out, 0)
    out = np.clip(out, -(2**25), 2**25)
    if layer.negative_slope is not None:  # leaky ReLU: round half up of out * slope_q / 2^16, in integers
        slope = np.int64(layer.negative_slope)
        out = np.where(out < 0, np.floor_divide(out * slope + (1 << 15), 1 << 16), out)
    return out


CROSS_MACHINE_SCRIPT = """
import os, sys, numpy as np
sys.path.insert(0, {repo!r})
import tfhyper
mode, folder, name = sys.argv[1:4]
for kind in sys.argv[4:]:
    model = tfhyper.load_model(os.path.join(folder, kind + ".keras"))
    tfh = os.path.join(folder, kind + ".tfh")
    if mode == "encode":
        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (96, 160, 3)).astype(np.uint8)
        open(tfh, "wb").write(tfhyper.compress(model, image))
    else:
        from tfhyper import codec
        data = open(tfh, "rb").read()
        _, symbols, _ = codec.decode_symbols(model, data)
        np.savez(os.path.join(folder, name + "-" + kind + ".npz"), image=tfhyper.decompress(model, data), **symbols)
"""


def test_file_from_one_float_configuration_decodes_identically_in_another(models, tmp_path):
    """Files of both hyperpriors written with oneDNN on and 2 threads decode to the same symbols with oneDNN off and
    1 thread (both kinds go through each process, so that the test starts three interpreters, not six)."""
    kinds = ["hyperprior", "meanscale"]
    for kind in kinds:
        models[kind].save(tmp_path / f"{kind}.keras")
    script = tmp_path / "run.py"
    script.write_text(CROSS_MACHINE_SCRIPT.format(repo=str(REPO)))
    base = {k: v for k, v in os.environ.items() if k not in ("TF_ENABLE_ONEDNN_OPTS", "OMP_NUM_THREADS")}
    encoder_env = dict(base, TF_ENABLE_ONEDNN_OPTS="1", TF_NUM_INTRAOP_THREADS="2")
    decoder_env = dict(base, TF_ENABLE_ONEDNN_OPTS="0", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1")
    run = lambda env, *args: subprocess.run([sys.executable, str(script), *args, *kinds], env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    for env, mode, name in ((encoder_env, "encode", "-"), (decoder_env, "decode", "a"), (encoder_env, "decode", "b")):
        result = run(env, mode, str(tmp_path), name)
        assert result.returncode == 0, result.stderr[-2000:]
    for kind in kinds:
        a, b = np.load(tmp_path / f"a-{kind}.npz"), np.load(tmp_path / f"b-{kind}.npz")
        # The entropy decoding is exact on both: the same symbols, bit for bit.
        np.testing.assert_array_equal(a["z"], b["z"])
        np.testing.assert_array_equal(a["y"], b["y"])
        # g_s itself runs in floating point; its last-bit differences may move a pixel by one level, no more.
        assert np.max(np.abs(a["image"].astype(int) - b["image"].astype(int))) <= 1, kind


def test_file_from_another_model_is_refused(hyperprior):
    other = perturbed(tfhyper.ScaleHyperprior, 5)
    data = codec.compress(other, random_image(32, 32, 1))
    with pytest.raises(BitstreamError, match="different model"):
        tfhyper.decompress(hyperprior, data)


@pytest.fixture(scope="module")
def valid_file(hyperprior):
    return codec.compress(hyperprior, random_image(48, 80, 9))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_truncated_and_random_files_only_raise_bitstream_error(hyperprior, valid_file, data):
    choice = data.draw(st.integers(0, 3))
    if choice == 3:
        # A valid container around a corrupted payload: only the arithmetic decoder can notice.
        from tfhyper import bitstream

        header, sections = bitstream.unpack(valid_file)
        payload = bytearray(sections[0])
        for _ in range(data.draw(st.integers(1, 4))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(payload)))
        blob = bitstream.pack(header, [bytes(payload[:cut]) + data.draw(st.binary(max_size=8))])
    elif choice == 0:
        blob = data.draw(st.binary(max_size=300))
    elif choice == 1:
        blob = valid_file[: data.draw(st.integers(0, len(valid_file) - 1))]
    else:
        blob = bytearray(valid_file)
        for _ in range(data.draw(st.integers(1, 4))):
            blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    try:
        image = tfhyper.decompress(hyperprior, blob)
    except BitstreamError:
        return
    # Only a mutation the checksum cannot see may decode, and then to an image of the declared size.
    assert image.dtype == np.uint8 and image.shape == (48, 80, 3)


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tfhyper", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_command_line_round_trip_and_errors(hyperprior, tmp_path):
    from PIL import Image

    model_path = tmp_path / "model.keras"
    hyperprior.save(model_path)
    image = random_image(40, 56, 4)
    png = tmp_path / "in.png"
    Image.fromarray(image).save(png)
    before = png.read_bytes()
    tfh, out = tmp_path / "x.tfh", tmp_path / "out.png"
    result = cli("compress", model_path, png, tfh)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes() == before  # the input is never modified
    result = cli("decompress", model_path, tfh, out)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(out)), tfhyper.decompress(hyperprior, tfh.read_bytes()))
    info = cli("info", tfh)
    assert info.returncode == 0 and "40" in info.stdout and "56" in info.stdout
    # An existing output is kept without --force.
    stamp = out.read_bytes()
    refused = cli("decompress", model_path, tfh, out)
    assert refused.returncode != 0 and "--force" in refused.stderr and out.read_bytes() == stamp
    assert cli("decompress", model_path, tfh, out, "--force").returncode == 0

    cases = {
        "missing": ("compress", model_path, tmp_path / "nope.png", tmp_path / "a.tfh"),
        "not an image": ("compress", model_path, model_path, tmp_path / "b.tfh"),
        "directory": ("compress", model_path, tmp_path, tmp_path / "c.tfh"),
        "unwritable": ("compress", model_path, png, tmp_path / "no_such_dir" / "d.tfh"),
        "bad bitstream": ("decompress", model_path, png, tmp_path / "e.png"),
    }
    for name, args in cases.items():
        result = cli(*args)
        lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
        assert result.returncode != 0, name
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, result.stderr[-1500:])


def test_decoder_refuses_streams_that_would_crawl_or_exhaust_memory(hyperprior):
    from tfhyper import bitstream

    # Too few lanes for the declared symbols: one Python step per symbol would be a denial of service.
    values = np.zeros(40000, np.int64)
    stream = coder.encode([(values, np.zeros(40000, np.int32), hyperprior.coding_tables["y"])], lanes=1,
                          sparse=False)
    with pytest.raises(BitstreamError, match="lanes"):
        coder.Decoder(stream, symbol_count=40000)
    # A valid header (CRC and fingerprint included) claiming an image beyond the decoder's pixel limit.
    side = 4096
    header = bitstream.Header(
        kind=1, fingerprint=hyperprior.fingerprint(), height=side, width=side,
        y_shape=(side // 16, side // 16, 24), z_shape=(side // 64, side // 64, 16),
    )  # fmt: skip
    with pytest.raises(BitstreamError, match="limit"):
        tfhyper.decompress(hyperprior, bitstream.pack(header, [b"\x00" * 8]))


def test_latents_that_carry_nothing_make_a_version_2_file():
    """y all zeros (g_a's last layer zeroed, as in an untrained or collapsed model): y is coded sparse, the file is
    of format version 2, decodes to the encoder's symbols, is no larger than version 1's stream (18,432 values of y
    coded as none instead of one by one), and the same bytes labelled version 1 are refused."""
    import zlib

    model = perturbed(MODELS["hyperprior"], 7)
    for w in model.g_a.weights[-2:]:
        w.assign(np.zeros(w.shape, np.float32))
    image = random_image(384, 512, 3)  # y of 24 x 32 x 24 = 18,432 values
    data = tfhyper.compress(model, image)
    assert data[3] == 2
    _, symbols, segments = codec.symbols_and_segments(model, image)
    _, decoded, _ = codec.decode_symbols(model, data)
    for name in symbols:
        np.testing.assert_array_equal(decoded[name], symbols[name])
    assert not symbols["y"].any()
    version_1 = coder.encode(codec.coder_input(symbols, segments), sparse=False)
    from tfhyper import bitstream

    assert coder.stream_version(version_1) == 1 and len(bitstream.unpack(data)[1][0]) <= len(version_1)
    body = data[:3] + b"\x01" + data[4:-4]
    with pytest.raises(BitstreamError, match="holds a coded stream of version 2"):
        tfhyper.decompress(model, body + zlib.crc32(body).to_bytes(4, "little"))


def test_fingerprint_ignores_name_and_training_settings(hyperprior, tmp_path):
    path = tmp_path / "m.keras"
    hyperprior.save(path)
    twin = tfhyper.load_model(path)
    twin.lmbda = 123.0
    assert twin.fingerprint() == hyperprior.fingerprint()
    data = codec.compress(twin, random_image(32, 48, 2))
    np.testing.assert_array_equal(tfhyper.decompress(hyperprior, data), tfhyper.decompress(twin, data))
