"""FactorizedPrior and ScaleHyperprior: shapes, rates, training, saving."""
import math
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfhyper
from tfhyper import paper
from tfhyper.models import MODELS, MeanScaleHyperprior


def images(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth random images: a coarse random field upsampled, so that they are compressible.
    coarse = rng.random((n, max(h // 8, 1), max(w // 8, 1), 3)).astype(np.float32)
    return tf.image.resize(coarse, (h, w), method="bilinear")


@pytest.mark.parametrize("size", [(128, 192), (70, 45), (1, 1), (64, 64)])
def test_latent_shapes_are_h_over_16_and_h_over_64(size):
    model = tfhyper.ScaleHyperprior(8, 12)
    x = images(1, *size)
    x_hat, likelihoods = model(x)
    h, w = size
    assert x_hat.shape == (1, h, w, 3)
    assert likelihoods["y"].shape == (1, math.ceil(h / 16), math.ceil(w / 16), 12)
    assert likelihoods["z"].shape == (1, math.ceil(h / 64), math.ceil(w / 64), 8)
    factorized = tfhyper.FactorizedPrior(8, 12)
    x_hat, likelihoods = factorized(x)
    assert x_hat.shape == (1, h, w, 3)
    assert likelihoods["y"].shape == (1, math.ceil(h / 16), math.ceil(w / 16), 12)
    x_hat, likelihoods = MeanScaleHyperprior(8, 12)(x)
    assert likelihoods["y"].shape == (1, math.ceil(h / 16), math.ceil(w / 16), 12)
    assert likelihoods["z"].shape == (1, math.ceil(h / 64), math.ceil(w / 64), 8)


def numpy_logits(density, v):
    """The cumulative's logits of appendix 6.1, recomputed in float64 from the weights (independent path)."""
    softplus = lambda t: np.logaddexp(0.0, t)  # noqa: E731
    x = v.astype(np.float64)  # (channels, 1, n)
    for k, (matrix, bias) in enumerate(zip(density.matrices, density.biases)):
        x = np.matmul(softplus(matrix.numpy().astype(np.float64)), x) + bias.numpy()
        if k < len(density.factors):
            x = x + np.tanh(density.factors[k].numpy()) * np.tanh(x)
    return x


def numpy_factorized_likelihood(density, v):
    """Eq. 30 in float64; v is NHWC with one batch element."""
    c = v.shape[-1]
    flat = np.transpose(v[0], (2, 0, 1)).reshape(c, 1, -1)
    sig = lambda t: 0.5 * (1 + np.tanh(t / 2))  # noqa: E731
    lower, upper = numpy_logits(density, flat - 0.5), numpy_logits(density, flat + 0.5)
    flip = np.where(lower + upper > 0, -1.0, 1.0)
    return np.abs(sig(flip * upper) - sig(flip * lower)).ravel()


def numpy_gaussian_likelihood(v, sigma):
    """Eq. 11 in float64 with math.erfc, sigma lower-bounded at 0.11."""
    erfc = np.vectorize(math.erfc)
    sigma = np.maximum(sigma.astype(np.float64), paper.SCALE_BOUND)
    a = np.abs(v.astype(np.float64))
    return 0.5 * (erfc((a - 0.5) / (sigma * math.sqrt(2))) - erfc((a + 0.5) / (sigma * math.sqrt(2))))


def randomize(model, seed=0):
    model.build()
    rng = np.random.default_rng(seed)
    for w in model.entropy_bottleneck.weights:
        w.assign(w.numpy() + rng.normal(scale=0.3, size=w.shape))


def test_hyperprior_estimated_bits_equal_sum_of_minus_log2_likelihoods():
    model = tfhyper.ScaleHyperprior(16, 24)
    randomize(model)
    x = images(1, 128, 128)
    terms = model.rate_distortion(x, training=False)
    # Independent path: rounded latents from the transforms, likelihoods recomputed in float64.
    y = model.analysis(x)
    z = model.hyper_analysis(y)
    medians = model.entropy_bottleneck.medians().numpy()
    z_hat = np.round(z.numpy() - medians) + medians
    sigma = model.hyper_synthesis(tf.constant(z_hat, tf.float32), tf.shape(y)).numpy()
    y_hat = np.round(y.numpy())
    bits_y = -np.log2(np.maximum(numpy_gaussian_likelihood(y_hat, sigma), 1e-9)).sum()
    bits_z = -np.log2(np.maximum(numpy_factorized_likelihood(model.entropy_bottleneck.density, z_hat), 1e-9)).sum()
    num_pixels = 128 * 128
    assert float(terms["bpp_y"][0]) == pytest.approx(bits_y / num_pixels, rel=1e-3)
    assert float(terms["bpp_z"][0]) == pytest.approx(bits_z / num_pixels, rel=1e-3)


def test_factorized_estimated_bits_equal_sum_of_minus_log2_likelihoods():
    model = tfhyper.FactorizedPrior(16, 24)
    randomize(model, 1)
    x = images(1, 96, 64, seed=3)
    terms = model.rate_distortion(x, training=False)
    y = model.analysis(x).numpy()
    medians = model.entropy_bottleneck.medians().numpy()
    y_hat = np.round(y - medians) + medians
    bits = -np.log2(np.maximum(numpy_factorized_likelihood(model.entropy_bottleneck.density, y_hat), 1e-9)).sum()
    assert float(terms["bpp_y"][0]) == pytest.approx(bits / (96 * 64), rel=1e-3)


def test_evaluation_quantizes_z_around_the_median():
    model = tfhyper.ScaleHyperprior(8, 12)
    randomize(model, 2)
    eb = model.entropy_bottleneck
    z = tf.random.normal((1, 3, 3, 8)) * 4
    z_hat, _ = eb(z, training=False)
    offsets = (z_hat - eb.medians()).numpy()
    np.testing.assert_allclose(offsets, np.round(offsets), atol=1e-4)
    assert np.max(np.abs(z_hat.numpy() - z.numpy())) <= 0.5 + 1e-4
    z_tilde, _ = eb(z, training=True)
    noise = (z_tilde - z).numpy()
    assert np.all(np.abs(noise) <= 0.5) and noise.std() > 0.2  # eq. 8: uniform noise of unit width


@pytest.mark.parametrize("cls", list(MODELS.values()), ids=list(MODELS))
def test_training_on_a_fixed_batch_lowers_the_loss(cls):
    keras.utils.set_random_seed(0)
    model = cls(8, 8, lmbda=0.01)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(4, 64, 64, seed=5)
    first = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    model.fit(tf.data.Dataset.from_tensors(x).repeat(100), epochs=1, verbose=0)
    last = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)
    # Each kind measured 0.16 x the first loss and +7.2 dB after these 100 steps (300 steps: 0.12 x, +8.5 dB).
    assert last["loss"] < 0.3 * first["loss"], (first, last)
    assert last["psnr"] > first["psnr"] + 5


def test_ms_ssim_distortion_trains():
    keras.utils.set_random_seed(0)
    model = tfhyper.ScaleHyperprior(8, 8, lmbda=10.0, distortion="ms-ssim")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(2, 176, 176, seed=6)
    history = model.fit(tf.data.Dataset.from_tensors(x).repeat(30), epochs=1, verbose=0)
    assert "ms_ssim" in history.history and np.isfinite(history.history["loss"][-1])
    with pytest.raises(ValueError, match="distortion"):
        tfhyper.ScaleHyperprior(8, 8, distortion="l1")


@pytest.mark.parametrize("cls", list(MODELS.values()), ids=list(MODELS))
def test_save_and_load_give_identical_outputs(cls, tmp_path):
    model = cls(8, 12, lmbda=0.05, density_filters=(3, 3))
    randomize(model, 4)
    x = images(2, 80, 48, seed=7)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = tfhyper.load_model(path)
    assert type(loaded) is cls
    assert loaded.get_config() == model.get_config()
    a_hat, a_lik = model(x)
    b_hat, b_lik = loaded(x)
    np.testing.assert_array_equal(a_hat.numpy(), b_hat.numpy())
    for key in a_lik:
        np.testing.assert_array_equal(a_lik[key].numpy(), b_lik[key].numpy())
    # The integer coding tables travel with the model, so the reloaded one decodes the same files.
    assert loaded.coding_tables is not None and loaded.fingerprint() == model.fingerprint()
    assert loaded.coding_tables.keys() == model.coding_tables.keys()
    for key, value in model.coding_tables.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(loaded.coding_tables[key], value)
        else:
            for name, array in value.to_dict().items():
                np.testing.assert_array_equal(loaded.coding_tables[key].to_dict()[name], array)


def count_parameters(n, m):
    """Trainable parameters of figure 4's hyperprior model, counted layer by layer."""
    conv = lambda i, o, k: k * k * i * o + o  # noqa: E731
    gdn = lambda c: c + c * c  # noqa: E731
    g_a = conv(3, n, 5) + conv(n, n, 5) * 2 + conv(n, m, 5) + 3 * gdn(n)
    g_s = conv(m, n, 5) + conv(n, n, 5) * 2 + conv(n, 3, 5) + 3 * gdn(n)
    h_a = conv(m, n, 3) + conv(n, n, 5) * 2
    h_s = conv(n, n, 5) * 2 + conv(n, m, 3)
    dims = (1, 3, 3, 3, 1)  # K = 4, filters (3, 3, 3)
    density = sum(dims[k] * dims[k + 1] + dims[k + 1] for k in range(4)) + sum(dims[1:4])
    return g_a + g_s + h_a + h_s + n * density


def test_paper_sized_hyperprior_has_about_5_07_million_parameters():
    model = tfhyper.model_for_quality("hyperprior", 1)
    model.build()
    count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert count == count_parameters(128, 192)
    assert 5.06e6 < count < 5.08e6


def test_mixed_bfloat16_transforms_keep_float32_entropy_models():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tfhyper.ScaleHyperprior(8, 8, lmbda=0.01)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        logs = model.train_on_batch(images(2, 64, 64), return_dict=True)
        assert np.isfinite(logs["loss"])
        assert model.entropy_bottleneck.density.compute_dtype == "float32"
        assert model.g_a.layers[0].layers[-1].compute_dtype == "bfloat16"
        _, likelihoods = model(images(1, 64, 64))
        assert likelihoods["z"].dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_model_saved_without_scale_thresholds_is_refused_in_one_clear_error(tmp_path, monkeypatch):
    from tfhyper import models

    model = tfhyper.ScaleHyperprior(8, 12, density_filters=(3, 3))
    model.build()
    # What an early build wrote: the hyperprior's tables without the thresholds of its coding scales.
    full = models._tables_to_arrays
    monkeypatch.setattr(models, "_tables_to_arrays", lambda t: {k: v for k, v in full(t).items() if "thresh" not in k})
    model.save(tmp_path / "old.keras")
    monkeypatch.undo()
    message = "old.keras: the saved model's coding tables lack thresholds"
    with pytest.raises(models.IncompatibleModelError, match=message):
        tfhyper.load_model(tmp_path / "old.keras")
    # The command line says so in one line, rather than calling the file "not a tfhyper model".
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    result = subprocess.run([sys.executable, "-m", "tfhyper", "compress", str(tmp_path / "old.keras"),
                             str(tmp_path / "x.png"), str(tmp_path / "x.tfh")], capture_output=True, text=True)
    assert result.returncode != 0 and not (tmp_path / "x.tfh").exists()
    assert result.stderr.strip().splitlines()[-1].endswith("coding tables lack thresholds (saved by an older build): "
                                                           "load it with tfhyper of that version, or retrain")


def test_xla_training_step_gives_the_plain_step_s_loss(monkeypatch):
    """jit_compile=True (--jit_compile=on) computes the same training steps as the plain graph, to float tolerance.

    The training noise is replaced by a fixed function of y and z, so that both paths see the same perturbation
    (XLA draws other random numbers).
    """
    from tfhyper import entropy_models

    monkeypatch.setattr(entropy_models, "add_uniform_noise", lambda v: v + 0.4 * tf.sin(7.0 * v))
    x = images(2, 64, 64, seed=8)
    losses = {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = tfhyper.ScaleHyperprior(8, 8, lmbda=0.01)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
        losses[jit] = [model.train_on_batch(x, return_dict=True)["loss"] for _ in range(3)]
    assert losses[False][0] != losses[False][2]  # the steps did train
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
