"""tfhyper.analysis: the latents and bit maps agree with the real file and with the continuous model."""
import numpy as np
import pytest
import tensorflow as tf

import tfhyper
from tfhyper import analysis, coder
from tests.test_codec import perturbed, random_image


@pytest.fixture(scope="module")
def models():
    return {"hyperprior": perturbed(tfhyper.ScaleHyperprior, 0),
            "factorized": perturbed(tfhyper.FactorizedPrior, 1)}


@pytest.mark.parametrize("kind", ["hyperprior", "factorized"])
def test_latents_are_what_the_file_decodes_to(models, kind):
    model, image = models[kind], random_image(70, 45, 3)
    found = analysis.explore(model, image)
    data = tfhyper.compress(model, image)
    assert found.file_bytes == len(data)
    np.testing.assert_array_equal(found.x_hat, tfhyper.decompress(model, data))
    assert found.y.shape == found.y_hat.shape == found.y_bits.shape == (5, 3, 24)
    assert found.bits_y.shape == (5, 3)
    if kind == "hyperprior":
        assert found.z_hat.shape == found.z_bits.shape == (2, 1, 16)
        np.testing.assert_array_equal(found.y_hat, np.round(found.y))
        assert found.sigma_hat.shape == found.y.shape and np.all(found.sigma_hat >= 0.11)
        np.testing.assert_allclose(found.normalized, found.y / found.sigma_hat)
    else:
        assert found.z is None and found.normalized is None and found.bpp_z == 0.0


@pytest.mark.parametrize("kind", ["hyperprior", "factorized"])
def test_bit_maps_add_up_to_the_file(models, kind):
    model, image = models[kind], random_image(128, 96, 4)
    found = analysis.explore(model, image)
    payload_bits = found.y_bits.sum() + (0 if found.z_bits is None else found.z_bits.sum())
    # The file adds a header of ~30 bytes and the coder's framing of ~5 bytes plus half a bit per lane.
    overhead_bytes = found.file_bytes - payload_bits / 8
    assert 0 < overhead_bytes < 60
    assert found.bpp == pytest.approx(8 * found.file_bytes / (128 * 96))


def test_bits_per_position_follow_the_continuous_likelihoods(models):
    """Integer-table bits per y position are within 2 % of -log2 of eq. 11 computed by the model."""
    # Latents of moderate size (no escapes, which eq. 11's lower-bounded likelihoods cannot price).
    model = tfhyper.ScaleHyperprior(16, 24)
    model.build()
    for w in model.g_a.weights[-2:]:
        w.assign(w.numpy() * 2)
    bias = model.h_s.weights[-1]
    bias.assign(bias.numpy() + 3.0)  # scales of a few units, so that y stays inside its tables
    model.update_tables()
    image = random_image(128, 128, 5)
    found = analysis.explore(model, image)
    _, likelihoods = model(tf.constant(image[None] / 255.0, tf.float32), training=False)
    continuous = -np.log2(likelihoods["y"].numpy()[0]).sum(axis=-1)
    np.testing.assert_allclose(found.bits_y, continuous, rtol=0.02, atol=0.5)
    continuous_z = -np.log2(likelihoods["z"].numpy()[0]).sum(axis=-1)
    np.testing.assert_allclose(found.bits_z, continuous_z, rtol=0.02, atol=0.5)


def test_symbol_bits_by_hand_and_for_escapes():
    cdf = np.array([[0, 16384, 49152, 65535, 65536]])  # values 5, 6, 7, then the escape (frequency 1)
    tables = coder.CodingTables(cdf=cdf, lengths=[4], offsets=[5])
    values = np.array([[5, 6, 7], [6, 100, 5]])
    bits = coder.symbol_bits(values, np.zeros_like(values), tables)
    assert bits.shape == values.shape
    np.testing.assert_allclose(bits[0], [2.0, 1.0, -np.log2(16383 / 65536)])
    # An escaped value costs the escape symbol (16 bits) and more for its distance outside the table.
    assert bits[1, 1] > 16.0 + np.log2(100 - 7)
    assert bits.sum() == pytest.approx(coder.estimate_bits(values, np.zeros_like(values), tables))
