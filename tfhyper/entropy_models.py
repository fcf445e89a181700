"""Entropy models: how latents are perturbed or quantized, and their likelihoods.

Training replaces quantization by additive uniform noise, y~ = y + U(-1/2, 1/2) (eq. 4 and 8), and rates
are the differential cross entropies under the uniform-convolved priors (eq. 6, 7, 9, 30). Evaluation
rounds: y_hat = round(y), and z_hat = round(z - median) + median, so that the quantization grid of each
channel of z is centred on the mode region of its density, as the references do.
"""
import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf

from tfhyper import paper
from tfhyper.densities import NonParametricDensity, bounded_scale, gaussian_likelihood
from tfhyper.layers import lower_bound


@dataclasses.dataclass
class Segment:
    """How one latent is coded: a table index per element, the tables, and the offset subtracted before rounding.

    symbols = round(v - offset) (the median of a factorized density, a hyperprior's mean, or 0), and the decoder's
    values are symbols + offset; offsets are float32, so both sides compute exactly the same numbers.
    """

    indexes: np.ndarray
    tables: object  # coder.CodingTables
    offset: object = None  # float32 array broadcastable to the latent, or None for 0

    def symbols(self, values):
        values = np.asarray(values, np.float32)
        return np.round(values if self.offset is None else values - self.offset).astype(np.int64)

    def values(self, symbols):
        values = np.asarray(symbols).astype(np.float32)
        return values if self.offset is None else values + self.offset


def channel_indexes(shape):
    """Table index of each element of an (H, W, C) latent coded with one table per channel."""
    return np.broadcast_to(np.arange(shape[-1], dtype=np.int32), shape)


def add_uniform_noise(v):
    """Eq. 4 / 8: v + U(-1/2, 1/2), the training stand-in for quantization."""
    return v + tf.random.uniform(tf.shape(v), -0.5, 0.5, dtype=v.dtype)


def bound_likelihood(likelihood):
    """Keep likelihoods above LIKELIHOOD_BOUND so that -log2 p stays finite (both references do this)."""
    return lower_bound(likelihood, paper.LIKELIHOOD_BOUND)


@keras.saving.register_keras_serializable(package="tfhyper")
class EntropyBottleneck(keras.layers.Layer):
    """The factorized prior (eq. 6 for y in the factorized model, eq. 9 for z in the hyperprior model).

    One non-parametric density per channel (appendix 6.1), shared over spatial positions (section 4.1),
    convolved with U(-1/2, 1/2) (appendix 6.2).

    The quantization offsets are the densities' medians, found by bisection whenever needed, or, with
    `fixed_medians=True`, stored values (imported weights carry the medians their codec used).
    """

    def __init__(
        self,
        channels,
        filters=paper.DENSITY_FILTERS,
        init_scale=paper.DENSITY_INIT_SCALE,
        fixed_medians=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.fixed_medians = bool(fixed_medians)
        # Densities stay in float32 under mixed precision: their tails need the range.
        self.density = NonParametricDensity(
            self.channels, self.filters, self.init_scale, name="density", dtype="float32"
        )

    def build(self, input_shape=None):
        self.density.build()
        if self.fixed_medians:
            self.stored_medians = self.add_weight(
                name="medians", shape=(self.channels,), initializer="zeros", trainable=False
            )

    def medians(self):
        if self.fixed_medians:
            return tf.convert_to_tensor(self.stored_medians)
        return self.density.median()

    def to_symbols(self, v, medians=None):
        """Integer symbols round(v - median), per channel (what the arithmetic coder sees)."""
        medians = self.medians() if medians is None else medians
        return tf.round(v - medians)

    def from_symbols(self, symbols, medians=None):
        medians = self.medians() if medians is None else medians
        return tf.cast(symbols, medians.dtype) + medians

    def call(self, v, training=False):
        """Returns (v~ or v_hat, likelihoods)."""
        if training:
            v_tilde = add_uniform_noise(v)
        else:
            medians = self.medians()
            v_tilde = self.from_symbols(self.to_symbols(v, medians), medians)
        return v_tilde, bound_likelihood(self.density.likelihood(v_tilde))

    @staticmethod
    def segment(shape, tables, medians):
        """Coding of a latent of `shape`: one table per channel, symbols round(v - median) (the stored medians)."""
        return Segment(channel_indexes(shape), tables, np.asarray(medians, np.float32))

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels,
            filters=self.filters,
            init_scale=self.init_scale,
            fixed_medians=self.fixed_medians,
        )
        return config


@keras.saving.register_keras_serializable(package="tfhyper")
class GaussianConditional(keras.layers.Layer):
    """The conditional prior of eq. 7: y~_i ~ N(0, sigma_i^2) * U(-1/2, 1/2), sigma_i from h_s.

    sigma is lower-bounded at `scale_bound` (0.11, as in the references): narrower Gaussians would put
    almost all mass on 0 and make the rate gradient vanish. Evaluation uses eq. 11 on y_hat = round(y).
    With a mean mu (the mean-scale hyperprior), y - mu takes y's place: y_hat = round(y - mu) + mu.
    """

    def __init__(self, scale_bound=paper.SCALE_BOUND, **kwargs):
        super().__init__(**kwargs)
        self.scale_bound = float(scale_bound)

    def call(self, y, sigma, mu=None, training=False):
        """Returns (y~ or y_hat, likelihoods)."""
        sigma = bounded_scale(sigma, self.scale_bound)
        if mu is None:
            y_tilde = add_uniform_noise(y) if training else tf.round(y)
            return y_tilde, bound_likelihood(gaussian_likelihood(y_tilde, sigma))
        y_tilde = add_uniform_noise(y) if training else tf.round(y - mu) + mu
        return y_tilde, bound_likelihood(gaussian_likelihood(y_tilde - mu, sigma))

    @staticmethod
    def segment(indexes, tables, means=None):
        """Coding of y with the scale table picked per element (`indexes`), symbols round(y - mean)."""
        return Segment(np.asarray(indexes, np.int32), tables, None if means is None else np.asarray(means, np.float32))

    def get_config(self):
        config = super().get_config()
        config.update(scale_bound=self.scale_bound)
        return config


# -- Integer coding tables -------------------------------------------------------------------------
# Built once after training (`update_tables()` of a model, also run by `save`) and saved with the
# model, so that decoding never rebuilds them from floating point.


def _standard_normal_upper_tail(x):
    """Q(x) = 1 - Phi(x) in float64, accurate in the tail (math.erfc is correctly rounded)."""
    return 0.5 * np.vectorize(math.erfc)(np.asarray(x, np.float64) / math.sqrt(2.0))


def gaussian_tables(scales, tail_mass=paper.TAIL_MASS, precision=16):
    """One table per coding scale: the pmf of eq. 11 on [-half, half] with half = ceil(s * Q^-1(tail/2)).

    The mass beyond +-(half + 1/2) (at most `tail_mass`) goes to the escape symbol.
    """
    from tfhyper import coder

    multiplier = _inverse_upper_tail(tail_mass / 2)
    pmfs, offsets, overflows = [], [], []
    for s in np.asarray(scales, np.float64):
        half = max(1, math.ceil(s * multiplier))
        k = np.arange(-half, half + 1, dtype=np.float64)
        a = np.abs(k)
        pmf = _standard_normal_upper_tail((a - 0.5) / s) - _standard_normal_upper_tail((a + 0.5) / s)
        pmfs.append(pmf)
        offsets.append(-half)
        overflows.append(2 * float(_standard_normal_upper_tail((half + 0.5) / s)))
    return coder.CodingTables.from_pmfs(pmfs, offsets, overflows, precision=precision)


def _discrete_gaussian_pmf(sigma, support):
    """Eq. 11 on the integers `support` (|k| evaluated in the lower tail, exact in float64)."""
    a = np.abs(support.astype(np.float64))
    return _standard_normal_upper_tail((a - 0.5) / sigma) - _standard_normal_upper_tail((a + 0.5) / sigma)


def _expected_code_length(sigma, tables, index, support):
    """E[-log2 q_index(Y)] in bits for Y of eq. 11 with scale sigma, over `support`; values outside the
    table cost the escape symbol plus about 2 log2|overflow| bits of its universal code."""
    cdf = tables.cdf[index].astype(np.float64)
    length, offset = int(tables.lengths[index]), int(tables.offsets[index])
    symbol = support - offset
    inside = (symbol >= 0) & (symbol < length - 1)
    freq = np.where(inside, cdf[np.clip(symbol + 1, 0, length)] - cdf[np.clip(symbol, 0, length)], 0.0)
    escape = cdf[length] - cdf[length - 1]
    overflow = np.maximum(np.where(symbol < 0, -symbol, symbol - (length - 2)), 0)
    bits = np.where(inside, -np.log2(np.maximum(freq, 1.0) / 2.0**tables.precision), 0.0)
    bits = np.where(inside, bits, -np.log2(escape / 2.0**tables.precision) + 2 * np.log2(overflow + 1) + 1)
    return float(np.sum(_discrete_gaussian_pmf(sigma, support) * bits))


def scale_thresholds(scales, tables, iterations=40):
    """Where to switch from coding scale k to k + 1: the sigma at which both tables cost the same bits.

    The references use the smallest table scale >= sigma, which overpays up to 13 % in scale (the table's
    spacing) and about 1-3 % in rate; deciding by expected code length (a bisection in log sigma between
    neighbouring scales, on the integer tables themselves) keeps the table cost within a few tenths of a percent.
    """
    scales = np.asarray(scales, np.float64)
    thresholds = np.empty(len(scales) - 1)
    for k in range(len(scales) - 1):
        wider = int(-tables.offsets[k + 1])
        support = np.arange(-wider - 8, wider + 9)
        lo, hi = math.log(scales[k]), math.log(scales[k + 1])
        for _ in range(iterations):
            mid = (lo + hi) / 2
            narrow = _expected_code_length(math.exp(mid), tables, k, support)
            if narrow <= _expected_code_length(math.exp(mid), tables, k + 1, support):
                lo = mid
            else:
                hi = mid
        thresholds[k] = math.exp((lo + hi) / 2)
    return thresholds


def _inverse_upper_tail(p):
    """x with Q(x) = p, by bisection on the monotone tail function (no scipy needed)."""
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _standard_normal_upper_tail(mid) > p:
            lo = mid
        else:
            hi = mid
    return hi


def factorized_tables(bottleneck, tail_mass=paper.TAIL_MASS, precision=16):
    """One table per channel of the non-parametric density, over symbols round(v - median) whose interval
    lies between the tail quantiles; returns (tables, medians) with medians float32 as used for coding."""
    from tfhyper import coder

    tails = bottleneck.density.quantiles([tail_mass / 2, 1 - tail_mass / 2]).numpy().astype(np.float64)
    medians = bottleneck.medians().numpy().astype(np.float32)
    low = np.floor(np.minimum(tails[:, 0] - medians, 0)).astype(np.int64)
    high = np.ceil(np.maximum(tails[:, 1] - medians, 0)).astype(np.int64)
    length = int(np.max(high - low)) + 1
    grid = medians[:, None].astype(np.float32) + (low[:, None] + np.arange(length)[None, :]).astype(np.float32)
    # Evaluate eq. 30 for every channel on its own grid: (1, length, 1, channels).
    pmf_all = bottleneck.density.likelihood(tf.constant(grid.T[None, :, None, :])).numpy()[0, :, 0, :].T
    pmfs, overflows = [], []
    for c in range(bottleneck.channels):
        pmf = pmf_all[c, : high[c] - low[c] + 1].astype(np.float64)
        pmfs.append(pmf)
        overflows.append(max(0.0, 1.0 - float(pmf.sum())))
    tables = coder.CodingTables.from_pmfs(pmfs, low.astype(np.int32), overflows, precision=precision)
    return tables, medians
