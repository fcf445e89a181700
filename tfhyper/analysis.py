"""Inside a compressed image: the latents of Figure 2, the hyperprior's scales, and where the bits go.

`explore(model, image)` runs the codec's own encoder path (the same rounding, tables and integer h_s as
`tfhyper.compress`) and keeps what it computes on the way, for plots and notebooks:

- ``y`` = g_a(x) and ``y_hat`` = round(y) (Figure 2, middle: the factorized model's quantized latents);
- for the hyperpriors, ``z`` = h_a(|y|) (or h_a(y)), ``z_hat`` and ``sigma_hat`` = h_s(z_hat) (eq. 11, the float transform;
  the file codes y with the table that the integer-exact h_s picks, which agrees on all but ~1e-4 of elements), so that
  ``normalized`` = y / sigma_hat shows what is left of y once the hyperprior has explained its scales
  (Figure 2, right: the responses look far more like independent unit-scale noise than y does); the mean-scale
  hyperprior adds ``mu_hat``, the means the file codes y around;
- ``bits_y`` and ``bits_z``: the code length of every position in bits, summed over channels, with the integer
  tables the file is written with (escapes included), so their sum is the file's payload up to the coder's few
  bytes of framing.
"""
import dataclasses

import numpy as np

from tfhyper import codec, coder


@dataclasses.dataclass
class Latents:
    """What the encoder computes for one image; arrays are numpy, latents (H', W', C), maps (H', W')."""

    image: np.ndarray  # uint8 (H, W, 3), the input
    x_hat: np.ndarray  # uint8 (H, W, 3), the decoder's reconstruction
    y: np.ndarray  # g_a(x), float32 (H/16, W/16, M)
    y_hat: np.ndarray  # y as the decoder sees it: round(y - offset) + offset (a median, a mean, or 0)
    y_bits: np.ndarray  # code length of every element of y in bits (float64, the shape of y)
    file_bytes: int  # size of the .tfh file written for the image, header included
    z: np.ndarray = None  # h_a(|y|) (hyperprior only), (H/64, W/64, N)
    z_hat: np.ndarray = None
    sigma_hat: np.ndarray = None  # h_s(z_hat), lower-bounded as in the Gaussian conditional, like y
    mu_hat: np.ndarray = None  # the means of y (mean-scale hyperprior only), as the file uses them
    z_bits: np.ndarray = None  # code length of every element of z in bits

    @property
    def pixels(self):
        return self.image.shape[0] * self.image.shape[1]

    @property
    def normalized(self):
        """(y - mu_hat) / sigma_hat, the normalized responses of Figure 2 (hyperpriors only)."""
        if self.sigma_hat is None:
            return None
        return (self.y if self.mu_hat is None else self.y - self.mu_hat) / self.sigma_hat

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
    latents, symbols, segments = codec.symbols_and_segments(model, image)
    bits = {name: coder.symbol_bits(*triple) for name, triple in zip(segments, codec.coder_input(symbols, segments))}
    values = {name: segment.values(symbols[name]) for name, segment in segments.items()}
    shapes = {name: latent.shape for name, latent in latents.items()}
    found = Latents(
        image=image,
        x_hat=codec.reconstruct(model, values["y"], image.shape[0], image.shape[1]),
        y=latents["y"],
        y_hat=values["y"],
        y_bits=bits["y"],
        file_bytes=len(codec.pack(model, image.shape, latents, symbols, segments)),
        z=latents.get("z"),
        z_hat=values.get("z"),
        z_bits=bits.get("z"),
        **model.explain(values, shapes),
    )
    return found
