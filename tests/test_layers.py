"""GDN / IGDN against their closed forms, and the convolution alignment of the references."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfhyper import layers
from tfhyper.layers import GDN, SUBPIXEL_MAX_FILTERS, conv, deconv


def set_gdn(layer, beta, gamma):
    # Inverse of value = param^2 - 2^-36 (param above its bound).
    layer.beta_param.assign(np.sqrt(beta + 2.0**-36))
    layer.gamma_param.assign(np.sqrt(gamma + 2.0**-36))


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_matches_closed_form(inverse):
    rng = np.random.default_rng(0)
    channels = 5
    x = rng.normal(size=(2, 4, 3, channels)).astype(np.float32) * 3
    beta = rng.uniform(0.5, 2.0, channels)
    gamma = rng.uniform(0.0, 0.3, (channels, channels))
    layer = GDN(inverse=inverse)
    layer.build(x.shape)
    set_gdn(layer, beta, gamma)
    out = layer(x).numpy()
    x64 = x.astype(np.float64)
    norm = np.sqrt(beta + np.einsum("ij,nhwj->nhwi", gamma, x64**2))
    expected = x64 * norm if inverse else x64 / norm
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_gdn_initialization_and_constraints():
    layer = GDN()
    layer.build((1, 1, 1, 4))
    np.testing.assert_allclose(layer.beta.numpy(), np.ones(4), rtol=1e-6)
    np.testing.assert_allclose(layer.gamma.numpy(), 0.1 * np.eye(4), atol=1e-6)
    # Push parameters far below their bounds: the reparameterization keeps beta >= 1e-6, gamma >= 0.
    layer.beta_param.assign(-np.ones(4))
    layer.gamma_param.assign(-np.ones((4, 4)))
    assert np.all(layer.beta.numpy() >= 1e-6 - 1e-12)
    assert np.all(layer.gamma.numpy() >= 0)


def test_gdn_gradient_can_bring_parameters_back_above_bound():
    layer = GDN()
    layer.build((1, 1, 1, 2))
    layer.beta_param.assign([-1.0, -1.0])
    with tf.GradientTape() as tape:
        loss = -tf.reduce_sum(layer.beta)  # wants beta larger
    grad = tape.gradient(loss, layer.beta_param)
    assert np.all(grad.numpy() < 0), "gradient descent must be able to raise beta again"


def numpy_conv(x, w, stride, pad):
    """Cross-correlation with zero padding `pad` on every side; x (H, W, Cin), w (k, k, Cin, Cout)."""
    k = w.shape[0]
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    out_h = (xp.shape[0] - k) // stride + 1
    out_w = (xp.shape[1] - k) // stride + 1
    out = np.zeros((out_h, out_w, w.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[i * stride : i * stride + k, j * stride : j * stride + k]
            out[i, j] = np.einsum("abc,abcd->d", patch, w)
    return out


def numpy_conv_transpose(z, w, stride, pad):
    """The references' ConvTranspose2d(k, stride, padding=pad, output_padding=stride-1):
    input i contributes to output stride*i - pad + kk; w (k, k, Cout, Cin); output stride * input."""
    k = w.shape[0]
    h, wd = z.shape[:2]
    out = np.zeros((stride * h, stride * wd, w.shape[2]))
    for i in range(h):
        for j in range(wd):
            for a in range(k):
                for b in range(k):
                    oi, oj = stride * i - pad + a, stride * j - pad + b
                    if 0 <= oi < out.shape[0] and 0 <= oj < out.shape[1]:
                        out[oi, oj] += w[a, b] @ z[i, j]
    return out


@pytest.mark.parametrize("size", [(8, 8), (7, 5), (1, 1)])
def test_conv_is_symmetrically_padded(size):
    rng = np.random.default_rng(1)
    layer = conv(4, 5, 2)
    x = rng.normal(size=(1, *size, 3)).astype(np.float32)
    out = layer(x).numpy()[0]
    kernel, bias = layer.layers[-1].get_weights()
    expected = numpy_conv(x[0].astype(np.float64), kernel, 2, 2) + bias
    assert out.shape[:2] == tuple(-(-s // 2) for s in size)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (1, 1)])
@pytest.mark.parametrize("filters", [3, SUBPIXEL_MAX_FILTERS + 2])  # the sub-pixel form, the transposed convolution
def test_deconv_doubles_size_aligned_with_references(size, filters):
    rng = np.random.default_rng(2)
    layer = deconv(filters, 5, 2)
    z = rng.normal(size=(1, *size, 4)).astype(np.float32)
    out = layer(z).numpy()[0]
    kernel, bias = layer.layers[0].get_weights()
    expected = numpy_conv_transpose(z[0].astype(np.float64), kernel, 2, 2) + bias
    assert out.shape[:2] == (2 * size[0], 2 * size[1])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel_size, strides", [(3, 2), (5, 3), (2, 2), (4, 1), (3, 3), (5, 4), (1, 2)])
@pytest.mark.parametrize("filters", [2, SUBPIXEL_MAX_FILTERS + 1])
def test_deconv_forms_agree_with_the_references_for_other_kernels_and_strides(kernel_size, strides, filters):
    rng = np.random.default_rng(4)
    layer = deconv(filters, kernel_size, strides)
    z = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    out = layer(z).numpy()[0]
    kernel, bias = layer.layers[0].get_weights()
    expected = numpy_conv_transpose(z[0].astype(np.float64), kernel, strides, (kernel_size - 1) // 2) + bias
    assert out.shape[:2] == (3 * strides, 4 * strides)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argument", [{"activation": "relu"}, {"padding": "valid"}, {"output_padding": 0},
                                      {"dilation_rate": 2}, {"data_format": "channels_first"}])
def test_transposed_convolution_refuses_what_its_call_would_ignore(argument):
    with pytest.raises(ValueError, match="takes no"):
        layers.Conv2DTranspose(3, 5, 1, **argument)


def test_transposed_convolution_round_trips_its_config():
    layer = layers.Conv2DTranspose(6, 5, 2)
    clone = layers.Conv2DTranspose.from_config(layer.get_config())
    assert (clone.filters, clone.kernel_size, clone.strides) == (6, (5, 5), (2, 2))


@pytest.mark.parametrize("transposed", [False, True])
def test_fan_in_uniform_is_pytorchs_default_initialization(transposed):
    """PyTorch initializes Conv2d / ConvTranspose2d weights with kaiming_uniform_(a=sqrt(5)), i.e. bound
    gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a^2)), and biases uniform within 1 / sqrt(fan_in). Its fan-in
    is weight.size(1) * k^2: in_channels for Conv2d (weight (out, in, k, k)), out_channels for ConvTranspose2d
    (weight (in, out, k, k))."""
    import math

    in_channels, out_channels, k = 24, 40, 5
    keras.utils.set_random_seed(0)
    if transposed:
        layer = layers.deconv(out_channels, k, 2, initializer="fan_in_uniform")
        fan_in = out_channels * k * k
    else:
        layer = layers.conv(out_channels, k, 2, in_channels=in_channels, initializer="fan_in_uniform")
        fan_in = in_channels * k * k
    layer(np.zeros((1, 16, 16, in_channels), np.float32))
    kernel, bias = (w.numpy() for w in layer.weights)
    a = math.sqrt(5.0)
    kernel_bound = math.sqrt(2.0 / (1.0 + a * a)) * math.sqrt(3.0 / fan_in)
    assert abs(kernel_bound - 1 / math.sqrt(fan_in)) < 1e-12
    # Uniform on [-b, b]: within the bound, reaching close to it, variance b^2 / 3.
    assert np.abs(kernel).max() <= kernel_bound and np.abs(kernel).max() > 0.99 * kernel_bound
    np.testing.assert_allclose(kernel.var(), kernel_bound**2 / 3, rtol=0.03)
    assert np.abs(bias).max() <= 1 / math.sqrt(fan_in) and np.abs(bias).max() > 0.5 / math.sqrt(fan_in)


def test_glorot_uniform_keeps_keras_defaults():
    keras.utils.set_random_seed(0)
    layer = layers.conv(40, 5, 2, in_channels=24, initializer="glorot_uniform")
    layer(np.zeros((1, 16, 16, 24), np.float32))
    kernel, bias = (w.numpy() for w in layer.weights)
    bound = (6 / (25 * 24 + 25 * 40)) ** 0.5
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.99 * bound
    assert not bias.any()
    with pytest.raises(ValueError, match="initializer must be one of"):
        layers.conv(4, 3, initializer="he")
