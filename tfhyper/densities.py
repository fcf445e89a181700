"""Densities of the priors: the non-parametric density of appendix 6.1 and the Gaussian of eq. 7 / 11,
both convolved with a unit uniform as in appendix 6.2 (eq. 30).
"""
import math

import keras
import numpy as np
import tensorflow as tf

from tfhyper import paper
from tfhyper.layers import lower_bound


def _logit_difference_likelihood(lower, upper):
    """sigmoid(upper) - sigmoid(lower), computed on the side of the median where both are small.

    In the upper tail both sigmoids are close to 1 and their difference cancels catastrophically in
    float32; flipping the sign there evaluates 1 - sigmoid(a) = sigmoid(-a) instead, which is exact.
    """
    sign = -tf.sign(lower + upper)
    sign = tf.where(sign == 0, tf.ones_like(sign), sign)
    return tf.abs(tf.sigmoid(sign * upper) - tf.sigmoid(sign * lower))


@keras.saving.register_keras_serializable(package="tfhyper")
class NonParametricDensity(keras.layers.Layer):
    """Univariate density per channel, defined by its cumulative (appendix 6.1, eq. 12-23).

        c = f_K o ... o f_1,   f_k(x) = g_k(H^(k) x + b^(k)) for k < K,   f_K(x) = sigmoid(H^(K) x + b^(K))
        g_k(x) = x + a^(k) * tanh(x),   H^(k) = softplus(H_hat^(k)) >= 0,   a^(k) = tanh(a_hat^(k)) > -1

    so every Jacobian is non-negative and c is a valid cumulative. `filters` are r_1..r_{K-1}
    (the paper: K = 4, filters (3, 3, 3)). The layer works on logits of c (the argument of the final
    sigmoid), which keeps the tails accurate; `likelihood` is eq. 30, c(v + 1/2) - c(v - 1/2).
    """

    def __init__(self, channels, filters=paper.DENSITY_FILTERS, init_scale=paper.DENSITY_INIT_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)

    def build(self, input_shape=None):
        dims = (1,) + self.filters + (1,)
        # Initialize so that the composed cumulative is roughly a logistic of width init_scale.
        scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
        self.matrices, self.biases, self.factors = [], [], []
        for k in range(len(dims) - 1):
            init = math.log(math.expm1(1.0 / scale / dims[k + 1]))
            self.matrices.append(
                self.add_weight(
                    name=f"matrix{k}",
                    shape=(self.channels, dims[k + 1], dims[k]),
                    initializer=keras.initializers.Constant(init),
                )
            )
            self.biases.append(
                self.add_weight(
                    name=f"bias{k}",
                    shape=(self.channels, dims[k + 1], 1),
                    initializer=keras.initializers.RandomUniform(-0.5, 0.5),
                )
            )
            if k < len(dims) - 2:
                self.factors.append(
                    self.add_weight(
                        name=f"factor{k}", shape=(self.channels, dims[k + 1], 1), initializer="zeros"
                    )
                )

    def logits_cumulative(self, x):
        """Logits of c(x) for x of shape (channels, 1, n): eq. 16-18 with the final sigmoid left out."""
        logits = x
        for k, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
            logits = tf.linalg.matmul(tf.nn.softplus(matrix), logits) + bias
            if k < len(self.factors):
                logits += tf.tanh(self.factors[k]) * tf.tanh(logits)
        return logits

    def _per_channel(self, v):
        """NHWC -> (channels, 1, n), and the inverse permutation's shape."""
        flat = tf.reshape(tf.transpose(v, (3, 0, 1, 2)), (self.channels, 1, -1))
        return flat, tf.shape(v)

    def cdf(self, v):
        """c(v) for v of shape (..., channels)."""
        flat, shape = self._per_channel(v)
        return self._back(tf.sigmoid(self.logits_cumulative(flat)), shape)

    def pdf(self, v):
        """p(v) = dc/dv (eq. 14), by automatic differentiation of the cumulative, for NHWC v."""
        flat, shape = self._per_channel(v)
        with tf.GradientTape() as tape:
            tape.watch(flat)
            logits = self.logits_cumulative(flat)
        # d sigmoid(l)/dv = sigmoid(l) sigmoid(-l) dl/dv; dl/dv >= 0 by construction.
        density = tf.sigmoid(logits) * tf.sigmoid(-logits) * tape.gradient(logits, flat)
        return self._back(density, shape)

    def likelihood(self, v):
        """Eq. 30: probability of the unit interval around v, c(v + 1/2) - c(v - 1/2), for NHWC v."""
        flat, shape = self._per_channel(v)
        lower = self.logits_cumulative(flat - 0.5)
        upper = self.logits_cumulative(flat + 0.5)
        return self._back(_logit_difference_likelihood(lower, upper), shape)

    def _back(self, flat, shape):
        v = tf.reshape(flat, (self.channels, shape[0], shape[1], shape[2]))
        return tf.transpose(v, (1, 2, 3, 0))

    def quantiles(self, probabilities, iterations=64):
        """Per-channel x with c(x) = p for each p, by bisection on the monotone logits.

        Returns shape (channels, len(probabilities)). c is strictly increasing, so bisection converges
        from any bracket containing the answer; the bracket is widened until it does.
        """
        targets = tf.constant([math.log(p / (1 - p)) for p in probabilities], self.compute_dtype)
        targets = tf.broadcast_to(targets[None, None, :], (self.channels, 1, len(probabilities)))
        return self._bisection(targets, iterations)

    @tf.function(reduce_retracing=True)
    def _bisection(self, targets, iterations):
        """The quantiles of the logit `targets` (channels, 1, P): one graph, so that eager calls (a model applied
        in a notebook) run it as fast as a traced step does."""
        lo = tf.fill(tf.shape(targets), tf.constant(-1.0, targets.dtype))
        hi = -lo

        def widen(lo, hi):
            return (tf.where(self.logits_cumulative(lo) > targets, lo * 2, lo),
                    tf.where(self.logits_cumulative(hi) < targets, hi * 2, hi))

        def halve(lo, hi):
            mid = (lo + hi) / 2
            below = self.logits_cumulative(mid) < targets
            return tf.where(below, mid, lo), tf.where(below, hi, mid)

        # Loops, not unrolled Python: 144 unrolled copies of the density made tracing a test step take 7 s.
        # Widen brackets geometrically: the tails of c are at most logistic-like, so 2^40 is ample.
        lo, hi = tf.while_loop(lambda lo, hi: True, widen, (lo, hi), maximum_iterations=40)
        lo, hi = tf.while_loop(lambda lo, hi: True, halve, (lo, hi), maximum_iterations=iterations)
        return tf.squeeze((lo + hi) / 2, axis=1)

    def median(self):
        """Per-channel median, shape (channels,): the offset of the quantization grid for z (eq. 9)."""
        return self.quantiles([0.5])[:, 0]

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, filters=self.filters, init_scale=self.init_scale)
        return config


def standard_normal_cdf(x):
    """Phi(x) through erfc, which keeps the lower tail accurate where 1 + erf(x) would round to 0."""
    return 0.5 * tf.math.erfc(-x / math.sqrt(2.0))


def gaussian_likelihood(v, sigma):
    """Eq. 11: mass of N(0, sigma^2) on [v - 1/2, v + 1/2].

    By symmetry it is evaluated at -|v|, in the lower tail, where both cumulatives are small and their
    difference does not cancel: Phi((1/2 - |v|) / sigma) - Phi((-1/2 - |v|) / sigma).
    """
    v = tf.abs(v)
    return standard_normal_cdf((0.5 - v) / sigma) - standard_normal_cdf((-0.5 - v) / sigma)


def scale_table(minimum=paper.SCALE_BOUND, maximum=paper.SCALE_TABLE_MAX, size=paper.SCALE_TABLE_SIZE):
    """The coding scales: `size` values spaced evenly in log between `minimum` and `maximum` (float64)."""
    return np.exp(np.linspace(np.log(minimum), np.log(maximum), size))


def bounded_scale(sigma, bound=paper.SCALE_BOUND):
    """sigma lower-bounded at `bound` (the references' 0.11), with the gradient of `lower_bound`."""
    return lower_bound(sigma, bound)
