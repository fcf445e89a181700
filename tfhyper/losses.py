"""Rate and distortion measures of the rate-distortion loss (section 2, eq. 2 and 10).

Images are float tensors in [0, 1] (NHWC) unless a name says `uint8`. Distortion is reported on the
0..255 scale, as in the paper's PSNR (Figure 5: 10 log10(255^2 / d)).
"""
import math

import numpy as np
import tensorflow as tf

# MS-SSIM (Wang, Simoncelli & Bovik 2003) with its five scales and 11x11 Gaussian window needs
# (11 - 1) * 2^4 + 1 = 161 pixels on the shorter side.
MS_SSIM_MIN_SIDE = 161


def bits_from_likelihoods(likelihoods):
    """Cross entropy in bits, sum of -log2 p over all elements (eq. 2); one value per batch element."""
    axes = list(range(1, likelihoods.shape.rank))
    return tf.reduce_sum(-tf.math.log(likelihoods), axis=axes) / math.log(2.0)


def mse_255(x, x_hat):
    """Mean squared error on the 0..255 scale, per batch element."""
    return tf.reduce_mean(tf.math.squared_difference(x * 255.0, x_hat * 255.0), axis=[1, 2, 3])


def psnr_from_mse_255(mse):
    """PSNR in dB from an MSE on the 0..255 scale: 10 log10(255^2 / mse) (Figure 5, top)."""
    return 10.0 * tf.math.log(255.0**2 / mse) / math.log(10.0)


# Wang, Simoncelli & Bovik 2003: five scales with these weights, 11x11 Gaussian window of sigma 1.5.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_K1, _K2 = 0.01, 0.03
# Floor for the per-scale terms before raising them to fractional powers. tf.image.ssim_multiscale
# clips them at 0 instead, where the gradient of t^w is infinite: training on 1 - MS-SSIM from a fresh
# model then yields NaN. Above the floor both agree exactly.
_MS_SSIM_FLOOR = 1e-6


def _gaussian_window(channels, size=11, sigma=1.5):
    t = tf.range(size, dtype=tf.float32) - (size - 1) / 2
    g = tf.exp(-(t**2) / (2 * sigma**2))
    g /= tf.reduce_sum(g)
    window = g[:, None] * g[None, :]
    return tf.tile(window[:, :, None, None], (1, 1, channels, 1))


def _ssim_terms(a, b, window, max_val):
    """Per-channel SSIM and contrast-structure terms, averaged over positions (valid filtering)."""
    blur = lambda t: tf.nn.depthwise_conv2d(t, window, (1, 1, 1, 1), "VALID")  # noqa: E731
    c1, c2 = (_K1 * max_val) ** 2, (_K2 * max_val) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    return tf.reduce_mean(luminance * cs, axis=[1, 2]), tf.reduce_mean(cs, axis=[1, 2])


def _halve(t):
    """2x2 average pooling; odd sizes are first mirror-padded by one, as tf.image.ssim_multiscale does."""
    pad_h, pad_w = tf.shape(t)[1] % 2, tf.shape(t)[2] % 2
    t = tf.pad(t, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]], mode="SYMMETRIC")
    return tf.nn.avg_pool2d(t, 2, 2, "VALID")


def ms_ssim(x, x_hat, max_val=1.0):
    """MS-SSIM per batch element (five scales), equal to tf.image.ssim_multiscale wherever every
    per-scale term is positive, and with finite gradients everywhere (see _MS_SSIM_FLOOR)."""
    side = min(x.shape[1], x.shape[2])
    if side is not None and side < MS_SSIM_MIN_SIDE:
        raise ValueError(f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE} pixels per side, got {side}")
    x, x_hat = tf.cast(x, tf.float32), tf.cast(x_hat, tf.float32)
    window = _gaussian_window(x.shape[-1])
    factors = []
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        if scale:
            x, x_hat = _halve(x), _halve(x_hat)
        ssim, cs = _ssim_terms(x, x_hat, window, max_val)
        term = ssim if scale == len(MS_SSIM_WEIGHTS) - 1 else cs
        factors.append(tf.maximum(term, _MS_SSIM_FLOOR) ** weight)
    return tf.reduce_mean(tf.reduce_prod(tf.stack(factors, axis=-1), axis=-1), axis=-1)


def ms_ssim_db(ms_ssim_value):
    """MS-SSIM in decibels, -10 log10(1 - MS-SSIM) (Figure 5, bottom)."""
    return -10.0 * np.log10(1.0 - np.asarray(ms_ssim_value, dtype=np.float64))


def psnr_uint8(original, reconstruction):
    """PSNR in dB between two uint8 RGB arrays (H, W, 3), computed in float64."""
    diff = original.astype(np.float64) - reconstruction.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ms_ssim_uint8(original, reconstruction):
    """MS-SSIM between two uint8 RGB arrays (H, W, 3); NaN for images too small for five scales."""
    if min(original.shape[:2]) < MS_SSIM_MIN_SIDE:
        return math.nan
    a = tf.convert_to_tensor(original[None], tf.float32)
    b = tf.convert_to_tensor(reconstruction[None], tf.float32)
    return float(ms_ssim(a, b, max_val=255.0)[0])
