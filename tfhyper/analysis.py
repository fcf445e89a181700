"""Inside a compressed image: the latents of Figure 2, the hyperprior's scales, and where the bits go.

`explore(model, image)` runs the codec's own encoder path (the same rounding, tables and integer h_s as
`tfhyper.compress`) and keeps what it computes on the way, for plots and notebooks:

- ``y`` = g_a(x) and ``y_hat`` = round(y) (Figure 2, middle: the factorized model's quantized latents);
- for the hyperprior, ``z`` = h_a(|y|), ``z_hat`` and ``sigma_hat`` = h_s(z_hat) (eq. 11, the float transform;
  the file codes y with the table that the integer-exact h_s picks, which agrees on all but ~1e-4 of elements), so that
  ``normalized`` = y / sigma_hat shows what is left of y once the hyperprior has explained its scales
  (Figure 2, right: the responses look far more like independent unit-scale noise than y does);
- ``bits_y`` and ``bits_z``: the code length of every position in bits, summed over channels, with the integer
  tables the file is written with (escapes included), so their sum is the file's payload up to the coder's few
  bytes of framing.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tfhyper import codec, coder
from tfhyper.models import ScaleHyperprior


@dataclasses.dataclass
class Latents:
    """What the encoder computes for one image; arrays are numpy, latents (H', W', C), maps (H', W')."""

    image: np.ndarray  # uint8 (H, W, 3), the input
    x_hat: np.ndarray  # uint8 (H, W, 3), the decoder's reconstruction
    y: np.ndarray  # g_a(x), float32 (H/16, W/16, M)
    y_hat: np.ndarray  # y as the decoder sees it: round(y), or round(y - median) + median (factorized prior)
    y_bits: np.ndarray  # code length of every element of y in bits (float64, the shape of y)
    file_bytes: int  # size of the .tfh file written for the image, header included
    z: np.ndarray = None  # h_a(|y|) (hyperprior only), (H/64, W/64, N)
    z_hat: np.ndarray = None
    sigma_hat: np.ndarray = None  # h_s(z_hat), lower-bounded as in the Gaussian conditional, like y
    z_bits: np.ndarray = None  # code length of every element of z in bits

    @property
    def pixels(self):
        return self.image.shape[0] * self.image.shape[1]

    @property
    def normalized(self):
        """y / sigma_hat, the normalized responses of Figure 2 (hyperprior only)."""
        return None if self.sigma_hat is None else self.y / self.sigma_hat

    @property
    def bpp(self):
        """Bits per pixel of the real file, header included."""
        return 8.0 * self.file_bytes / self.pixels

    @property
    def bits_y(self):
        """Bits of y per position (H/16, W/16), summed over channels."""
        return self.y_bits.sum(axis=-1)

    @property
    def bits_z(self):
        """Bits of z per position (H/64, W/64), summed over channels (hyperprior only)."""
        return None if self.z_bits is None else self.z_bits.sum(axis=-1)

    @property
    def bpp_y(self):
        return float(self.y_bits.sum()) / self.pixels

    @property
    def bpp_z(self):
        return 0.0 if self.z_bits is None else float(self.z_bits.sum()) / self.pixels

    def channels_by_rate(self):
        """Channels of y ordered by the bits spent in them, most first (the informative ones, for plots)."""
        return np.argsort(-self.y_bits.sum(axis=(0, 1)), kind="stable")


def explore(model, image):
    """`Latents` of a uint8 RGB image (H, W, 3) under `model`, as compressed by `tfhyper.compress`."""
    image = codec._check_image(image)
    latents, segments = codec.symbols_and_indexes(model, image)
    per_element = [coder.symbol_bits(*segment) for segment in segments]
    y_symbols = segments[-1][0]
    y_hat = codec.dequantize_y(model, y_symbols)
    found = Latents(
        image=image,
        x_hat=codec.reconstruct(model, y_hat, image.shape[0], image.shape[1]),
        y=latents["y"],
        y_hat=y_hat,
        y_bits=per_element[-1],
        file_bytes=len(codec.pack(model, image.shape, latents, segments)),
    )
    if isinstance(model, ScaleHyperprior):
        z_hat = (segments[0][0] + codec._tables(model)["medians"]).astype(np.float32)
        sigma = model.hyper_synthesis(tf.constant(z_hat[None]), tf.shape(latents["y"][None]))
        bound = model.gaussian_conditional.scale_bound
        found.z, found.z_hat, found.z_bits = latents["z"], z_hat, per_element[0]
        found.sigma_hat = np.maximum(sigma.numpy()[0], bound)
    return found
