"""Entropy models: how latents are perturbed or quantized, and their likelihoods.

Training replaces quantization by additive uniform noise, y~ = y + U(-1/2, 1/2) (eq. 4 and 8), and rates
are the differential cross entropies under the uniform-convolved priors (eq. 6, 7, 9, 30). Evaluation
rounds: y_hat = round(y), and z_hat = round(z - median) + median, so that the quantization grid of each
channel of z is centred on the mode region of its density, as the references do.
"""
import keras
import tensorflow as tf

from tfhyper import paper
from tfhyper.densities import NonParametricDensity, bounded_scale, gaussian_likelihood
from tfhyper.layers import lower_bound


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
    """

    def __init__(self, channels, filters=paper.DENSITY_FILTERS, init_scale=paper.DENSITY_INIT_SCALE, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.density = NonParametricDensity(self.channels, self.filters, self.init_scale, name="density")

    def build(self, input_shape=None):
        self.density.build()

    def medians(self):
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
            v_tilde = self.from_symbols(self.to_symbols(v))
        return v_tilde, bound_likelihood(self.density.likelihood(v_tilde))

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, filters=self.filters, init_scale=self.init_scale)
        return config


@keras.saving.register_keras_serializable(package="tfhyper")
class GaussianConditional(keras.layers.Layer):
    """The conditional prior of eq. 7: y~_i ~ N(0, sigma_i^2) * U(-1/2, 1/2), sigma_i from h_s.

    sigma is lower-bounded at `scale_bound` (0.11, as in the references): narrower Gaussians would put
    almost all mass on 0 and make the rate gradient vanish. Evaluation uses eq. 11 on y_hat = round(y).
    """

    def __init__(self, scale_bound=paper.SCALE_BOUND, **kwargs):
        super().__init__(**kwargs)
        self.scale_bound = float(scale_bound)

    def call(self, y, sigma, training=False):
        """Returns (y~ or y_hat, likelihoods)."""
        y_tilde = add_uniform_noise(y) if training else tf.round(y)
        sigma = bounded_scale(sigma, self.scale_bound)
        return y_tilde, bound_likelihood(gaussian_likelihood(y_tilde, sigma))

    def get_config(self):
        config = super().get_config()
        config.update(scale_bound=self.scale_bound)
        return config
