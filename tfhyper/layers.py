"""GDN / IGDN (section 4.1, Ballé et al. 2016a) and convolutions with the reference implementations' padding.

GDN, for channel i at each spatial position:

    out_i = x_i / sqrt(beta_i + sum_j gamma_ij * x_j^2)

and IGDN, its approximate inverse, multiplies by the same square root. beta and gamma are kept non-negative
by the usual reparameterization (see `NonNegative`).
"""
import keras
import numpy as np
import tensorflow as tf

# Added under the square root of the reparameterization so that its gradient stays finite at zero
# (both references use 2^-18 squared).
_PEDESTAL = 2.0**-36


def lower_bound(x, bound):
    """max(x, bound), letting gradients through where they would push x back above the bound.

    A plain maximum has zero gradient below the bound, so a parameter that falls below could never
    recover; the reference implementations use this same "identity if it helps" gradient.
    """
    x = tf.convert_to_tensor(x)
    return _lower_bound(x, tf.constant(bound, x.dtype))


@tf.custom_gradient
def _lower_bound(x, bound):
    y = tf.maximum(x, bound)

    def grad(dy):
        pass_through = tf.logical_or(x >= bound, dy < 0)
        return tf.where(pass_through, dy, tf.zeros_like(dy)), None

    return y, grad


class NonNegative:
    """value = max(param, sqrt(minimum + pedestal))^2 - pedestal, so value >= minimum.

    Parameterizing the square root makes small values (gamma near 0) as easy to reach as large ones.
    """

    def __init__(self, minimum=0.0):
        self.minimum = float(minimum)
        self.bound = (self.minimum + _PEDESTAL) ** 0.5

    def init(self, value):
        return tf.sqrt(tf.maximum(value + _PEDESTAL, _PEDESTAL))

    def __call__(self, param):
        return tf.square(lower_bound(param, self.bound)) - _PEDESTAL


@keras.saving.register_keras_serializable(package="tfhyper")
class GDN(keras.layers.Layer):
    """Generalized divisive normalization, out_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2).

    With `inverse=True` it is IGDN: out_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2).
    `gamma[i, j]` weighs input channel j in the normalization of output channel i.
    Initial beta = 1 and gamma = 0.1 I; beta >= 1e-6 and gamma >= 0 throughout training.
    """

    def __init__(self, inverse=False, beta_min=1e-6, gamma_init=0.1, **kwargs):
        super().__init__(**kwargs)
        self.inverse = bool(inverse)
        self.beta_min = float(beta_min)
        self.gamma_init = float(gamma_init)
        self._beta = NonNegative(beta_min)
        self._gamma = NonNegative(0.0)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.beta_param = self.add_weight(
            name="beta",
            shape=(channels,),
            initializer=lambda shape, dtype=None: self._beta.init(tf.ones(shape)),
        )
        self.gamma_param = self.add_weight(
            name="gamma",
            shape=(channels, channels),
            initializer=lambda shape, dtype=None: self._gamma.init(self.gamma_init * tf.eye(shape[0])),
        )

    @property
    def beta(self):
        return self._beta(self.beta_param)

    @property
    def gamma(self):
        return self._gamma(self.gamma_param)

    def call(self, x):
        # sum_j gamma_ij x_j^2 is a 1x1 convolution with kernel[0, 0, j, i] = gamma[i, j].
        kernel = tf.transpose(self.gamma)[None, None]
        norm = tf.nn.conv2d(tf.square(x), kernel, strides=1, padding="VALID")
        norm = tf.nn.bias_add(norm, self.beta)
        return x * tf.sqrt(norm) if self.inverse else x * tf.math.rsqrt(norm)

    def get_config(self):
        config = super().get_config()
        config.update(inverse=self.inverse, beta_min=self.beta_min, gamma_init=self.gamma_init)
        return config


INITIALIZERS = ("glorot_uniform", "fan_in_uniform")


def initializers(initializer, fan_in):
    """(kernel, bias) initializers of a convolution whose output units each see `fan_in` inputs.

    "glorot_uniform" is Keras' default: kernel U(-a, a) with a = sqrt(6 / (fan_in + fan_out)), bias 0.
    "fan_in_uniform" is PyTorch's default for Conv2d and ConvTranspose2d (kaiming_uniform with a = sqrt(5)), which
    CompressAI's models train with: kernel and bias both U(-1/sqrt(fan_in), 1/sqrt(fan_in)). For the inner 5x5
    layers (fan_in = fan_out) it is 1/sqrt(3) of Glorot's spread, and biases start non-zero.
    """
    if initializer == "glorot_uniform":
        return keras.initializers.GlorotUniform(), keras.initializers.Zeros()
    if initializer == "fan_in_uniform":
        bound = fan_in**-0.5
        return keras.initializers.RandomUniform(-bound, bound), keras.initializers.RandomUniform(-bound, bound)
    raise ValueError(f"initializer must be one of {', '.join(INITIALIZERS)}, got {initializer!r}")


def conv(filters, kernel_size, strides=1, name=None, *, in_channels=None, initializer="glorot_uniform"):
    """Convolution padded (kernel_size - 1) / 2 on every side, as the references do.

    Keras' "same" padding is asymmetric for stride 2 (one pixel top/left, two bottom/right), which would
    shift every layer by half a pixel relative to the references and stop weights from carrying over.
    The output size is ceil(input / strides) for any input size. `in_channels` sets the fan-in of
    "fan_in_uniform" (see `initializers`).
    """
    pad = (kernel_size - 1) // 2
    kernel_init, bias_init = initializers(initializer, (in_channels or 1) * kernel_size**2)
    return keras.Sequential(
        [
            keras.layers.ZeroPadding2D(pad),
            keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="valid",
                                kernel_initializer=kernel_init, bias_initializer=bias_init),
        ],
        name=name,
    )


# Few output channels (g_s's last layer, RGB) make oneDNN's transposed convolution slow; there the sub-pixel form
# is used instead. Measured with 2 threads (WORKSPACE_NOTES.md, 2026-12-07): 128 -> 3 channels from 256 x 384,
# 50.7 -> 22.2 ms; the same at the cpu preset's training size (32 -> 3, 8 x 64 x 64, forward and backward) 9.4 ->
# 8.8 ms; with 32 output channels the sub-pixel form is slower (3.6 -> 4.1 ms forward), as it computes 36 taps for 25.
SUBPIXEL_MAX_FILTERS = 4


# The class keeps Keras' name on purpose: a weight file names each layer of a Sequential after its class
# (conv2d_transpose), so models saved when a Cropping2D layer followed it load unchanged.
@keras.saving.register_keras_serializable(package="tfhyper")
class Conv2DTranspose(keras.layers.Conv2DTranspose):
    """Transposed convolution with output exactly `strides` times the input, aligned like the references.

    With weights W (kh, kw, out, in), the "valid" transposed convolution adds ``x[i] W[a]`` to output ``s*i + a``
    (s*n + k - s outputs per dimension). PyTorch's ConvTranspose2d(k, s, padding=p=(k-1)/2, output_padding=s-1)
    is that without its first p outputs and its last k - s - p. Two exact ways to compute it:

    - the transposed convolution, then one `tf.slice` (not a strided slice: TensorFlow's gradient of a strided
      slice is a slow scatter on CPUs, a fifth of a training step at the cpu preset's size);
    - the sub-pixel form, for few output channels (`SUBPIXEL_MAX_FILTERS`): output ``s*m + r`` sums
      ``x[m + j] W[r + p - s*j]`` over the input offsets j, so every phase r is a stride-1 convolution of x, and
      `tf.nn.depth_to_space` interleaves the s*s phases.
    """

    def __init__(self, filters, kernel_size, strides=2, **kwargs):
        if kwargs.setdefault("padding", "same") != "same":  # "same": only what Keras infers shapes from (s * n)
            raise ValueError("Conv2DTranspose pads like the references; it takes no padding")
        super().__init__(filters, kernel_size, strides=strides, **kwargs)
        if self.strides[0] != self.strides[1] or self.kernel_size[0] != self.kernel_size[1]:
            raise ValueError("square kernels and equal strides only")
        if (self.activation is not keras.activations.linear or self.output_padding is not None
                or self.data_format != "channels_last" or tuple(self.dilation_rate) != (1, 1)):
            raise ValueError("Conv2DTranspose takes no activation, output_padding, dilation or channels_first")
        k, s = self.kernel_size[0], self.strides[0]
        self.front = (k - 1) // 2
        # Input offsets j of the sub-pixel form: those with 0 <= r + p - s*j < k for some phase r < s.
        self.offsets = np.arange(-((k - 1 - self.front) // s), (s - 1 + self.front) // s + 1)

    def call(self, x):
        y = self._subpixel(x) if self.filters <= SUBPIXEL_MAX_FILTERS else self._transposed(x)
        return tf.nn.bias_add(y, self.bias) if self.use_bias else y

    def _transposed(self, x):
        k, s = self.kernel_size[0], self.strides[0]
        shape = tf.shape(x)
        # s*n + k - s outputs, or more where the crop in front needs them (k - s < p: zeros, as a valid transposed
        # convolution may produce up to s - 1 extra outputs).
        extra = max(k - s, self.front)
        valid = tf.stack([shape[0], s * shape[1] + extra, s * shape[2] + extra, self.filters])
        y = tf.nn.conv2d_transpose(x, self.kernel, valid, strides=s, padding="VALID")
        size = tf.stack([shape[0], s * shape[1], s * shape[2], self.filters])
        return tf.slice(y, [0, self.front, self.front, 0], size)

    def _subpixel(self, x):
        s, j = self.strides[0], self.offsets
        y = tf.pad(x, [[0, 0], [-j[0], j[-1]], [-j[0], j[-1]], [0, 0]])
        y = tf.nn.conv2d(y, self.subpixel_kernel(), strides=1, padding="VALID")
        return tf.nn.depth_to_space(y, s) if s > 1 else y

    def subpixel_kernel(self):
        """(taps, taps, in, s*s*out) kernel of the sub-pixel form: [j, j', :, (r*s + r')*out + o] = W[r + p - s*j,
        r' + p - s*j', o, :], zero where that index falls outside the kernel."""
        k, s, j = self.kernel_size[0], self.strides[0], self.offsets
        taps = np.arange(s)[None, :] + self.front - s * j[:, None]  # (offsets, phases) -> index into W
        taps = np.where((taps >= 0) & (taps < k), taps, k).ravel()  # index k: a zero row appended below
        padded = tf.pad(self.kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])
        gathered = tf.gather(tf.gather(padded, taps, axis=0), taps, axis=1)
        channels_out, channels_in = self.filters, padded.shape[3]
        gathered = tf.reshape(gathered, (j.size, s, j.size, s, channels_out, channels_in))
        gathered = tf.transpose(gathered, (0, 2, 5, 1, 3, 4))  # j, j', in, r, r', out
        return tf.reshape(gathered, (j.size, j.size, channels_in, s * s * channels_out))


def deconv(filters, kernel_size, strides=2, name=None, *, initializer="glorot_uniform"):
    """`Conv2DTranspose` producing exactly `strides` times the input size, aligned like the references.

    PyTorch takes a transposed convolution's fan-in from its weight's second dimension, the output channels:
    "fan_in_uniform" does the same, so both start from the same distribution. The Sequential around the one layer
    keeps the layout of saved models.
    """
    kernel_init, bias_init = initializers(initializer, filters * kernel_size**2)
    return keras.Sequential(
        [Conv2DTranspose(filters, kernel_size, strides=strides, kernel_initializer=kernel_init,
                         bias_initializer=bias_init)],
        name=name,
    )
