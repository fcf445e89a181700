"""h_s in integer-exact arithmetic, so that encoder and decoder pick the same coding table (and mean) for every y.

The decoder must rebuild sigma_hat = h_s(z_hat) (figure 3) to decode y. Evaluated in floating point,
sigma_hat depends on the machine (BLAS, oneDNN, thread count, GPU): a last-bit difference that moves one
sigma across a table boundary makes everything after it decode to garbage. Here every quantity is an
integer: weights and biases are rounded to fixed point once, activations are re-rounded after each
layer with one fixed rule (round half up), and the sums are computed as float64 matrix products of
integer-valued operands. Those are exact, whatever the summation order, as long as every partial sum
stays below 2^53 in magnitude, which the bit budget below guarantees. Table indexes then come from
integer comparisons with fixed-point thresholds.

Bit budget per layer: |activation| <= 2^ACTIVATION_BITS and at most F terms per output sum (F = k^2 * C_in
for convolutions, ceil(k/2)^2 * C_in for stride-2 transposed ones), so weights get the bits that keep
|sum| < 2^51 (|weight| < 2^(51 - ACTIVATION_BITS - ceil(log2 F))); biases stay below 2^51 too, and the
total below 2^52.
"""
import math

import keras
import numpy as np

# Fractional bits of activations (sigma resolution 2^-16, far below the spacing of the scale table).
ACTIVATION_FRACTION = 16
# Activations are clamped to +-2^ACTIVATION_BITS (+-512 in real value): twice the largest coding
# scale, far above what trained models produce; it bounds the sums even for adversarial files.
ACTIVATION_BITS = 25
SUM_BITS = 51
# Weights need some precision left: fan-ins up to 2^14 (N up to ~1800 for 3x3 kernels) leave 12 bits.
MIN_WEIGHT_BITS = 12
BIAS_LIMIT = 2.0**SUM_BITS
# A leaky ReLU's slope in fixed point: 0.01 becomes 655 / 2^16 (0.009995), the same on every machine. Products
# of a clamped activation (< 2^26) and the slope (< 2^17) stay far below 2^53.
SLOPE_FRACTION = 16


def _round_half_up(x):
    return np.floor(x + 0.5)


def _fixed_point_weights(kernel, bias, weight_bits):
    """kernel * 2^f rounded, with f chosen per output channel so that its largest weight uses weight_bits
    bits (per channel, because channels of one layer differ in magnitude by orders)."""
    # Exponents from frexp and scaling with ldexp: exact by specification (a pow or log2 routine might not be).
    largest = np.max(np.abs(kernel.astype(np.float64)), axis=(0, 1, 2))
    fraction = weight_bits - np.frexp(np.where(largest > 0, largest, 1.0))[1]
    # A channel of tiny weights must not push its bias (at scale 2^(ACTIVATION_FRACTION + fraction)) past the budget.
    bias_exponent = np.frexp(np.where(bias != 0, np.abs(bias.astype(np.float64)), 1.0))[1]
    fraction = np.minimum(fraction, SUM_BITS - 1 - ACTIVATION_FRACTION - bias_exponent).astype(np.int64)
    kernel_q = _round_half_up(np.ldexp(kernel.astype(np.float64), fraction))
    bias_q = _round_half_up(np.ldexp(bias.astype(np.float64), ACTIVATION_FRACTION + fraction))
    if np.max(np.abs(bias_q), initial=0.0) >= BIAS_LIMIT:
        raise ValueError("h_s biases are too large relative to its weights for exact integer arithmetic")
    return kernel_q, bias_q, fraction


class IntegerLayer:
    """One convolution (stride 1, 'same') or transposed convolution (stride 2, references' alignment)."""

    def __init__(self, kernel, bias, transposed, relu, negative_slope=None):
        # kernel: (k, k, in, out) for convolutions; Keras' (k, k, out, in) for transposed ones.
        if transposed:
            kernel = np.transpose(kernel, (0, 1, 3, 2))
        taps = math.ceil(kernel.shape[0] / 2) ** 2 if transposed else kernel.shape[0] * kernel.shape[1]
        weight_bits = SUM_BITS - ACTIVATION_BITS - math.ceil(math.log2(taps * kernel.shape[2]))
        if weight_bits < MIN_WEIGHT_BITS:
            raise ValueError(f"a layer with {taps * kernel.shape[2]} inputs per output is too wide for exact arithmetic")
        self.kernel, self.bias, self.fraction = _fixed_point_weights(kernel, bias, weight_bits)
        self.transposed = transposed
        self.relu = relu
        self.negative_slope = negative_slope  # a leaky ReLU's slope, applied after the clamp

    @property
    def negative_slope(self):
        return self._slope_q

    @negative_slope.setter
    def negative_slope(self, slope):
        self._slope_q = None if slope is None else _round_half_up(math.ldexp(float(slope), SLOPE_FRACTION))

    def __call__(self, x):
        """x: (H, W, in) integer-valued float64 at scale 2^ACTIVATION_FRACTION."""
        out = self._transposed(x) if self.transposed else self._same(x)
        out += self.bias
        # Back to the activation scale: exact division by a power of two, then one rounding rule.
        out = _round_half_up(np.ldexp(out, -self.fraction))
        if self.relu:
            np.maximum(out, 0.0, out=out)
        limit = 2.0**ACTIVATION_BITS
        np.clip(out, -limit, limit, out=out)
        if self._slope_q is not None:
            out = np.where(out < 0, _round_half_up(np.ldexp(out * self._slope_q, -SLOPE_FRACTION)), out)
        return out

    def _same(self, x):
        k = self.kernel.shape[0]
        pad = (k - 1) // 2
        h, w, _ = x.shape
        padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
        out = np.zeros((h, w, self.kernel.shape[3]))
        for a in range(k):
            for b in range(k):
                out += padded[a : a + h, b : b + w] @ self.kernel[a, b]
        return out

    def _transposed(self, x):
        # Input i lands on output 2i - pad + a (PyTorch's ConvTranspose2d(k, 2, pad, output_padding=1)).
        k = self.kernel.shape[0]
        pad = (k - 1) // 2
        h, w, _ = x.shape
        full = np.zeros((2 * h + k - 1, 2 * w + k - 1, self.kernel.shape[3]))
        for a in range(k):
            for b in range(k):
                full[a : a + 2 * h : 2, b : b + 2 * w : 2] += x @ self.kernel[a, b]
        return full[pad : pad + 2 * h, pad : pad + 2 * w]


class IntegerHyperSynthesis:
    """h_s of figure 4 on integer symbols of z, returning scale-table indexes for y (integer-exact), and for the
    mean-scale hyperprior the means of y as well (`indexes_and_means`).

    Built from a trained hyperprior's h_s weights, the medians of z's density and the scale table.
    """

    def __init__(self, layers, medians, thresholds, scale_bound):
        self.layers = layers
        # z_hat = symbol + median; the median enters in fixed point, so the input is an integer too.
        self.medians_q = _round_half_up(np.ldexp(np.asarray(medians, np.float64), ACTIVATION_FRACTION))
        # Index of sigma = number of thresholds below it (see entropy_models.scale_thresholds), compared in
        # fixed point: sigma_q > floor(threshold * 2^f)  <=>  sigma_q / 2^f > threshold for integer sigma_q.
        self.thresholds_q = np.floor(np.ldexp(np.asarray(thresholds, np.float64), ACTIVATION_FRACTION))
        # floor, so that sigma at the bound itself gets index 0 like the float path.
        self.bound_q = math.floor(math.ldexp(scale_bound, ACTIVATION_FRACTION))

    @classmethod
    def from_model(cls, model, medians, thresholds):
        layers = []
        for block in model.h_s.layers:
            inner = getattr(block, "layers", None)
            if isinstance(block, keras.layers.LeakyReLU):
                layers[-1].negative_slope = block.negative_slope  # after the previous convolution
                continue
            if inner is None:
                layers[-1].relu = True  # the ReLU after the previous convolution
                continue
            core = next(layer for layer in inner if isinstance(layer, keras.layers.Conv2D | keras.layers.Conv2DTranspose))
            transposed = isinstance(core, keras.layers.Conv2DTranspose)
            layers.append(IntegerLayer(core.kernel.numpy(), core.bias.numpy(), transposed=transposed, relu=False))
        return cls(layers, medians, thresholds, model.gaussian_conditional.scale_bound)

    def output_fixed_point(self, z_symbols, y_hw):
        """h_s(z_hat) * 2^ACTIVATION_FRACTION as integers, cropped to y's positions (H_y, W_y, channels)."""
        limit = 2.0**ACTIVATION_BITS
        x = np.clip(np.ldexp(z_symbols.astype(np.float64), ACTIVATION_FRACTION) + self.medians_q, -limit, limit)
        for layer in self.layers:
            x = layer(x)
        return x[: y_hw[0], : y_hw[1]]

    def sigma_fixed_point(self, z_symbols, y_hw):
        """sigma_hat * 2^ACTIVATION_FRACTION as integers, shape (H_y, W_y, M), lower-bounded like eq. 7."""
        return np.maximum(self.output_fixed_point(z_symbols, y_hw), self.bound_q)

    def scale_indexes(self, sigma_q):
        """Coding-table index of every sigma: how many scale thresholds lie strictly below it."""
        return np.searchsorted(self.thresholds_q, np.maximum(sigma_q, self.bound_q), side="left").astype(np.int32)

    def indexes(self, z_symbols, y_hw):
        """Coding-table index of every element of y (h_s's output is sigma)."""
        return self.scale_indexes(self.output_fixed_point(z_symbols, y_hw))

    def indexes_and_means(self, z_symbols, y_hw, channels):
        """(table indexes, float32 means) of y when h_s's output is sigma (first `channels`) then mu.

        mu = mu_q / 2^ACTIVATION_FRACTION is exact in float64 and rounded to float32 by IEEE's rule, so it is the
        same number on every machine.
        """
        out = self.output_fixed_point(z_symbols, y_hw)
        means = np.ldexp(out[..., channels:], -ACTIVATION_FRACTION).astype(np.float32)
        return self.scale_indexes(out[..., :channels]), means
