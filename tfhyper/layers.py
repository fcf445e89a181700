"""GDN / IGDN (section 4.1, Ballé et al. 2016a) and convolutions with the reference implementations' padding.

GDN, for channel i at each spatial position:

    out_i = x_i / sqrt(beta_i + sum_j gamma_ij * x_j^2)

and IGDN, its approximate inverse, multiplies by the same square root. beta and gamma are kept non-negative
by the usual reparameterization (see `NonNegative`).
"""
import keras
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


@keras.saving.register_keras_serializable(package="tfhyper")
class Crop2D(keras.layers.Layer):
    """Keras' Cropping2D as one `tf.slice`, whose gradient is a padding.

    Cropping2D slices with strides, and TensorFlow's gradient of a strided slice is a slow general scatter on
    CPUs: at the cpu preset's size the four crops of g_s took a fifth of a training step (WORKSPACE_NOTES.md).
    The layer holds no weights, so models saved with Cropping2D load unchanged.
    """

    def __init__(self, cropping, **kwargs):
        super().__init__(**kwargs)
        (self.top, self.bottom), (self.left, self.right) = self.cropping = tuple(tuple(map(int, c)) for c in cropping)

    def call(self, x):
        shape = tf.shape(x)
        size = tf.stack([shape[0], shape[1] - self.top - self.bottom, shape[2] - self.left - self.right, shape[3]])
        return tf.slice(x, [0, self.top, self.left, 0], size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        height = None if height is None else height - self.top - self.bottom
        width = None if width is None else width - self.left - self.right
        return batch, height, width, channels

    def get_config(self):
        return {**super().get_config(), "cropping": self.cropping}


def deconv(filters, kernel_size, strides=2, name=None, *, initializer="glorot_uniform"):
    """Transposed convolution producing exactly `strides` times the input size, aligned like the references.

    PyTorch's ConvTranspose2d(k, s, padding=(k-1)/2, output_padding=s-1) places input i at output
    s*i - (k-1)/2 + k_index; a "valid" transposed convolution places it at s*i + k_index, so we crop
    (k-1)/2 in front and keep s * input. Keras' "same" would sit one pixel off.
    PyTorch takes a transposed convolution's fan-in from its weight's second dimension, the output
    channels: "fan_in_uniform" does the same, so both start from the same distribution.
    """
    pad = (kernel_size - 1) // 2
    tail = kernel_size - strides - pad  # valid output is s*(n-1) + k = s*n + (k - s)
    kernel_init, bias_init = initializers(initializer, filters * kernel_size**2)
    return keras.Sequential(
        [
            keras.layers.Conv2DTranspose(filters, kernel_size, strides=strides, padding="valid",
                                         kernel_initializer=kernel_init, bias_initializer=bias_init),
            Crop2D(((pad, tail), (pad, tail))),
        ],
        name=name,
    )
