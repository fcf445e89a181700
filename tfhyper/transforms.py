"""The four transforms of Figure 4.

    g_a (analysis):         conv N 5x5/2, GDN, conv N 5x5/2, GDN, conv N 5x5/2, GDN, conv M 5x5/2
    g_s (synthesis):        deconv N 5x5/2, IGDN, deconv N 5x5/2, IGDN, deconv N 5x5/2, IGDN, deconv 3 5x5/2
    h_a (hyper-analysis):   |y|, conv N 3x3/1, ReLU, conv N 5x5/2, ReLU, conv N 5x5/2
    h_s (hyper-synthesis):  deconv N 5x5/2, ReLU, deconv N 5x5/2, ReLU, conv M 3x3/1, ReLU

`initializer` chooses the convolutions' starting weights (`tfhyper.layers.initializers`).
Layer names match the references' indices (g_a.0, g_a.2, ...) so that weights can be mapped one to one.
"""
import keras

from tfhyper.layers import GDN, conv, deconv


def analysis_transform(num_filters, latent_filters, name="g_a", initializer="glorot_uniform"):
    """g_a: x -> y, downsampling by 16."""
    return keras.Sequential(
        [
            conv(num_filters, 5, 2, name="conv0", in_channels=3, initializer=initializer),
            GDN(name="gdn0"),
            conv(num_filters, 5, 2, name="conv1", in_channels=num_filters, initializer=initializer),
            GDN(name="gdn1"),
            conv(num_filters, 5, 2, name="conv2", in_channels=num_filters, initializer=initializer),
            GDN(name="gdn2"),
            conv(latent_filters, 5, 2, name="conv3", in_channels=num_filters, initializer=initializer),
        ],
        name=name,
    )


def synthesis_transform(num_filters, name="g_s", initializer="glorot_uniform"):
    """g_s: y_hat -> x_hat, upsampling by 16, ending in 3 channels."""
    return keras.Sequential(
        [
            deconv(num_filters, 5, 2, name="deconv0", initializer=initializer),
            GDN(inverse=True, name="igdn0"),
            deconv(num_filters, 5, 2, name="deconv1", initializer=initializer),
            GDN(inverse=True, name="igdn1"),
            deconv(num_filters, 5, 2, name="deconv2", initializer=initializer),
            GDN(inverse=True, name="igdn2"),
            deconv(3, 5, 2, name="deconv3", initializer=initializer),
        ],
        name=name,
    )


def hyper_analysis_transform(num_filters, latent_filters, name="h_a", initializer="glorot_uniform"):
    """h_a: |y| -> z, downsampling by 4. The caller passes |y| (figure 4)."""
    return keras.Sequential(
        [
            conv(num_filters, 3, 1, name="conv0", in_channels=latent_filters, initializer=initializer),
            keras.layers.ReLU(),
            conv(num_filters, 5, 2, name="conv1", in_channels=num_filters, initializer=initializer),
            keras.layers.ReLU(),
            conv(num_filters, 5, 2, name="conv2", in_channels=num_filters, initializer=initializer),
        ],
        name=name,
    )


def hyper_synthesis_transform(num_filters, latent_filters, name="h_s", initializer="glorot_uniform"):
    """h_s: z_hat -> sigma_hat, upsampling by 4; the final ReLU keeps sigma non-negative."""
    return keras.Sequential(
        [
            deconv(num_filters, 5, 2, name="deconv0", initializer=initializer),
            keras.layers.ReLU(),
            deconv(num_filters, 5, 2, name="deconv1", initializer=initializer),
            keras.layers.ReLU(),
            conv(latent_filters, 3, 1, name="conv2", in_channels=num_filters, initializer=initializer),
            keras.layers.ReLU(),
        ],
        name=name,
    )


# The mean-scale hyperprior's pair (Minnen, Ballé, Toderici 2018; CompressAI's MeanScaleHyperprior). LeakyReLU's
# slope is PyTorch's default, so that CompressAI's weights compute the same function here.
LEAKY_RELU_SLOPE = 0.01


def mean_scale_hyper_analysis_transform(num_filters, latent_filters, name="h_a", initializer="glorot_uniform"):
    """h_a of the mean-scale hyperprior: y (not |y|) -> z, downsampling by 4."""
    return keras.Sequential(
        [
            conv(num_filters, 3, 1, name="conv0", in_channels=latent_filters, initializer=initializer),
            keras.layers.LeakyReLU(LEAKY_RELU_SLOPE),
            conv(num_filters, 5, 2, name="conv1", in_channels=num_filters, initializer=initializer),
            keras.layers.LeakyReLU(LEAKY_RELU_SLOPE),
            conv(num_filters, 5, 2, name="conv2", in_channels=num_filters, initializer=initializer),
        ],
        name=name,
    )


def mean_scale_hyper_synthesis_transform(num_filters, latent_filters, name="h_s", initializer="glorot_uniform"):
    """h_s of the mean-scale hyperprior: z_hat -> (sigma, mu) as 2M channels (M -> 3M/2 -> 2M), upsampling by 4."""
    return keras.Sequential(
        [
            deconv(latent_filters, 5, 2, name="deconv0", initializer=initializer),
            keras.layers.LeakyReLU(LEAKY_RELU_SLOPE),
            deconv(latent_filters * 3 // 2, 5, 2, name="deconv1", initializer=initializer),
            keras.layers.LeakyReLU(LEAKY_RELU_SLOPE),
            conv(latent_filters * 2, 3, 1, name="conv2", in_channels=latent_filters * 3 // 2, initializer=initializer),
        ],
        name=name,
    )
