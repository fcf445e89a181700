"""Rate and distortion measures."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfhyper import losses


@pytest.fixture(scope="module")
def kodak_crop(shared_dir):
    return np.asarray(Image.open(shared_dir / "data/kodak/kodim05.png"))[:200, :230]


@pytest.mark.parametrize("noise", [2.0, 10.0, 40.0])
def test_ms_ssim_matches_tensorflow_where_terms_are_positive(kodak_crop, noise):
    rng = np.random.default_rng(0)
    distorted = np.clip(kodak_crop + rng.normal(0, noise, kodak_crop.shape), 0, 255).round()
    a = tf.constant(kodak_crop[None] / 255.0, tf.float32)
    b = tf.constant(distorted[None] / 255.0, tf.float32)
    ours = float(losses.ms_ssim(a, b)[0])
    reference = float(tf.image.ssim_multiscale(a, b, max_val=1.0)[0])
    assert ours == pytest.approx(reference, abs=2e-5)
    assert losses.ms_ssim_uint8(kodak_crop, distorted.astype(np.uint8)) == pytest.approx(reference, abs=2e-5)


def test_ms_ssim_gradient_is_finite_for_anticorrelated_images(kodak_crop):
    a = tf.constant(kodak_crop[None] / 255.0, tf.float32)
    b = tf.Variable(1.0 - a)
    with tf.GradientTape() as tape:
        value = losses.ms_ssim(a, b)
    grad = tape.gradient(value, b)
    assert np.all(np.isfinite(grad.numpy()))


def test_psnr_and_db_conversions():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 5, np.uint8)
    assert losses.psnr_uint8(a, b) == pytest.approx(10 * np.log10(255**2 / 25))
    assert float(losses.psnr_from_mse_255(tf.constant(25.0))) == pytest.approx(10 * np.log10(255**2 / 25), rel=1e-6)
    assert losses.ms_ssim_db(0.99) == pytest.approx(20.0)
    x = tf.zeros((1, 2, 2, 3))
    assert float(losses.mse_255(x, x + 2 / 255)[0]) == pytest.approx(4.0, rel=1e-5)


def test_bits_from_likelihoods():
    lik = tf.constant([[[[0.5, 0.25]]]])
    assert float(losses.bits_from_likelihoods(lik)[0]) == pytest.approx(3.0)


def test_ms_ssim_refuses_small_images():
    with pytest.raises(ValueError, match="161"):
        losses.ms_ssim(tf.zeros((1, 64, 64, 3)), tf.zeros((1, 64, 64, 3)))
