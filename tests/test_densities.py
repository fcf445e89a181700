"""The non-parametric density (appendix 6.1-6.2) and the Gaussian conditional (eq. 7, 11)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfhyper.densities import NonParametricDensity, gaussian_likelihood, scale_table


def randomized_density(channels, filters, seed):
    density = NonParametricDensity(channels, filters)
    density.build()
    rng = np.random.default_rng(seed)
    for w in density.weights:
        w.assign(rng.normal(scale=1.5, size=w.shape))
    return density


def as_nhwc(values, channels):
    """(n,) values -> (1, n, 1, channels), the same values in every channel."""
    return tf.constant(np.tile(np.asarray(values, np.float32)[None, :, None, None], (1, 1, 1, channels)))


@pytest.mark.parametrize("seed", range(5))
def test_random_density_is_a_valid_cdf(seed):
    density = randomized_density(3, (3, 3, 3), seed)
    grid = np.linspace(-60, 60, 2001)
    cdf = density.cdf(as_nhwc(grid, 3)).numpy()[0, :, 0, :]
    assert np.all(np.diff(cdf, axis=0) >= -1e-7), "cumulative must be monotone"
    far = density.cdf(as_nhwc([-1e6, 1e6], 3)).numpy()[0, :, 0, :]
    np.testing.assert_allclose(far[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(far[1], 1.0, atol=1e-6)
    fine = np.linspace(-60, 60, 400001)
    pdf = density.pdf(as_nhwc(fine, 3)).numpy()
    assert np.all(pdf >= 0)
    # The density integrates to the increase of the cumulative (trapezoid rule on a fine grid).
    area = np.trapezoid(pdf[0, :, 0, :].astype(np.float64), fine, axis=0)
    np.testing.assert_allclose(area, cdf[-1] - cdf[0], atol=2e-3)


def test_k1_reduces_to_logistic_eq_24_to_26():
    density = NonParametricDensity(1, filters=())
    density.build()
    density.matrices[0].assign([[[0.7]]])
    density.biases[0].assign([[[0.3]]])
    h = math.log1p(math.exp(0.7))  # softplus, eq. 22
    b = 0.3
    x = np.linspace(-10, 10, 41)
    cdf = density.cdf(as_nhwc(x, 1)).numpy().ravel()
    np.testing.assert_allclose(cdf, 1 / (1 + np.exp(-(h * x + b))), rtol=1e-5, atol=1e-7)  # eq. 24
    pdf = density.pdf(as_nhwc(x, 1)).numpy().ravel()
    np.testing.assert_allclose(pdf, h / 2 / (1 + np.cosh(h * x + b)), rtol=1e-4, atol=1e-9)  # eq. 25
    softplus = lambda t: np.logaddexp(0, t)  # noqa: E731
    log_p = np.log(h) - softplus(h * x + b) - softplus(-h * x - b)  # eq. 26 (with its log h term)
    np.testing.assert_allclose(np.log(pdf), log_p, atol=1e-4)


def test_likelihood_is_stable_far_in_the_tails():
    density = NonParametricDensity(1, filters=())
    density.build()
    density.matrices[0].assign([[[math.log(math.expm1(1.0))]]])  # h = 1
    density.biases[0].assign([[[0.0]]])
    v = np.array([30.0, 60.0, -60.0])
    lik = density.likelihood(as_nhwc(v, 1)).numpy().ravel()
    sig = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    # Exact: sigma(v + 1/2) - sigma(v - 1/2) = e^{-v} (e^{1/2} - e^{-1/2}) approximately, far out.
    expected = np.abs(sig(-np.abs(v) + 0.5) - sig(-np.abs(v) - 0.5))
    np.testing.assert_allclose(lik, expected, rtol=1e-3)
    assert np.all(lik > 0)


def test_median_and_tails():
    density = randomized_density(4, (3, 3, 3), 7)
    q = density.quantiles([1e-9 / 2, 0.5, 1 - 1e-9 / 2]).numpy()
    at = density.cdf(tf.constant(q.T[None, :, None, :], tf.float32)).numpy()[0, :, 0, :]
    np.testing.assert_allclose(np.diag(at[1:2].repeat(4, 0)), 0.5, atol=1e-4)
    assert np.all(q[:, 0] < q[:, 1]) and np.all(q[:, 1] < q[:, 2])
    np.testing.assert_allclose(density.median().numpy(), q[:, 1], atol=1e-5)


def mixture_pdf(x):
    gauss = np.exp(-((x - 2.0) ** 2) / 2) / math.sqrt(2 * math.pi)
    laplace = np.exp(-np.abs(x + 3.0) / 0.8) / 1.6
    return 0.5 * gauss + 0.5 * laplace


def test_fit_to_gaussian_laplacian_mixture_reaches_its_entropy():
    """Figure 8 (right): maximum likelihood fit of a K = 4 model to a toy mixture."""
    rng = np.random.default_rng(0)
    n = 20000
    pick = rng.random(n) < 0.5
    samples = np.where(pick, rng.normal(2.0, 1.0, n), rng.laplace(-3.0, 0.8, n)).astype(np.float32)
    grid = np.linspace(-25, 25, 200001)
    p = mixture_pdf(grid)
    entropy = -np.trapezoid(p * np.log(p), grid)  # differential entropy, nats

    tf.keras.utils.set_random_seed(0)  # deterministic initialization of the biases
    density = NonParametricDensity(1, (3, 3, 3))
    density.build()
    optimizer = tf.keras.optimizers.Adam(0.02)
    batch = tf.constant(samples[None, :, None, None])

    def cross_entropy():
        return -tf.reduce_mean(tf.math.log(density.pdf(batch) + 1e-12))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = cross_entropy()
        grads = tape.gradient(loss, density.trainable_variables)
        optimizer.apply_gradients(zip(grads, density.trainable_variables))
        return loss

    initial = float(cross_entropy())
    for _ in range(1500):
        step()
    final = float(cross_entropy())
    assert initial > entropy + 0.3
    # The sample cross entropy of the true density differs from the entropy by ~ 1/sqrt(n).
    assert final < entropy + 0.03, (final, entropy)


@pytest.mark.parametrize("sigma", [0.11, 0.5, 1.0, 7.3, 50.0, 256.0])
def test_gaussian_likelihoods_sum_to_one_over_integers(sigma):
    k = np.arange(-5000, 5001, dtype=np.float32)
    lik = gaussian_likelihood(tf.constant(k), tf.constant(sigma, tf.float32)).numpy().astype(np.float64)
    assert abs(lik.sum() - 1.0) < 1e-5
    # Closed form of eq. 11 at a few points, as upper-tail masses (exact in float64 for |v| >= 1/2).
    upper_tail = lambda t: 0.5 * math.erfc(t / math.sqrt(2))  # noqa: E731
    for v in (0.0, 1.0, -3.0, 10.0):
        a = abs(v)
        expected = upper_tail((a - 0.5) / sigma) - upper_tail((a + 0.5) / sigma)
        got = float(gaussian_likelihood(tf.constant(v), tf.constant(sigma)))
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-30)


def test_scale_table():
    table = scale_table()
    assert len(table) == 64
    assert table[0] == pytest.approx(0.11) and table[-1] == pytest.approx(256.0)
    np.testing.assert_allclose(np.diff(np.log(table)), math.log(256 / 0.11) / 63)
