"""Images to bytes and back with a trained model (figure 3, right: Q, AE and AD).

    compress:    x -g_a-> y;  hyperprior: z = h_a(|y|), z symbols = round(z - median),
                 table index of each y = integer h_s(z symbols) (see integer_hyper_synthesis);
                 y symbols = round(y) (factorized: round(y - median)); both coded into one stream
    decompress:  z symbols -> the same integer indexes -> y symbols -> g_s -> x_hat, clipped to 8 bits

The file is the container of `bitstream` around that stream. Everything a decoder needs besides the
model (image size, latent shapes) is in the header, and the model is identified by its fingerprint.
"""
import weakref

import numpy as np
import tensorflow as tf

from tfhyper import bitstream, coder, paper
from tfhyper.errors import BitstreamError
from tfhyper.integer_hyper_synthesis import IntegerHyperSynthesis
from tfhyper.models import ScaleHyperprior


def _tables(model):
    if model.coding_tables is None:
        model.update_tables()
    return model.coding_tables


# Per model, for one version of its tables: quantizing h_s's weights once, not for every file.
_INTEGER_HYPER_SYNTHESES = weakref.WeakKeyDictionary()


def _integer_hyper_synthesis(model):
    """h_s in integer arithmetic, built from the weights, the stored medians and the scale table."""
    tables = _tables(model)
    cached = _INTEGER_HYPER_SYNTHESES.get(model)
    if cached is None or cached[0] != model.tables_version:
        ihs = IntegerHyperSynthesis.from_model(model, tables["medians"], tables["thresholds"])
        _INTEGER_HYPER_SYNTHESES[model] = cached = (model.tables_version, ihs)
    return cached[1]


# g_s holds about N * H * W * 4 bytes per activation at half resolution: 2^23 pixels (3840 x 2160 fits)
# peaks near 6.5 GB with N = 192. Files claiming more are refused before anything is allocated.
MAX_PIXELS = 2**23


def _check_image(image):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB array of shape (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError("the image is empty")
    if image.shape[0] > bitstream.MAX_SIDE or image.shape[1] > bitstream.MAX_SIDE:
        raise ValueError(f"images are limited to {bitstream.MAX_SIDE} pixels per side")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ValueError(f"images are limited to {MAX_PIXELS} pixels, got {image.shape[1]}x{image.shape[0]}")
    return image


def channel_indexes(shape):
    """Table index of each element of an (H, W, C) latent coded with one table per channel."""
    return np.broadcast_to(np.arange(shape[-1], dtype=np.int32), shape)


_GRAPHS = weakref.WeakKeyDictionary()
_IMAGE_SIGNATURE = [tf.TensorSpec((1, None, None, 3), tf.float32)]


def _graphs(model):
    """The transforms as tf.function graphs for any image size (one trace each, then no Python per layer)."""
    graphs = _GRAPHS.get(model)
    if graphs is None:
        hyperprior = isinstance(model, ScaleHyperprior)
        model_ref = weakref.ref(model)  # a strong reference here would keep every model alive in _GRAPHS

        @tf.function(input_signature=_IMAGE_SIGNATURE)
        def analysis(x):
            model = model_ref()
            y = model.analysis(x / 255.0)
            return (y, model.hyper_analysis(y)) if hyperprior else (y, y)

        @tf.function(input_signature=[tf.TensorSpec((1, None, None, model.latent_filters), tf.float32),
                                      tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32)])  # fmt: skip
        def synthesis(y_hat, height, width):
            return model_ref().synthesis(y_hat, height, width)

        graphs = _GRAPHS[model] = (analysis, synthesis)
    return graphs


def analyse(model, image):
    """The encoder's latents: dict with y (H_y, W_y, M) and, for the hyperprior, z; float32 numpy."""
    y, z = _graphs(model)[0](tf.constant(image[None], tf.float32))
    latents = {"y": y.numpy()[0]}
    if isinstance(model, ScaleHyperprior):
        latents["z"] = z.numpy()[0]
    return latents


def symbols_and_indexes(model, image):
    """What the arithmetic coder receives: a list of (symbols, table indexes, tables) segments."""
    tables = _tables(model)
    latents = analyse(model, image)
    if not isinstance(model, ScaleHyperprior):
        y_symbols = np.round(latents["y"] - tables["medians"]).astype(np.int64)
        return latents, [(y_symbols, channel_indexes(y_symbols.shape), tables["y"])]
    z_symbols = np.round(latents["z"] - tables["medians"]).astype(np.int64)
    y_indexes = _integer_hyper_synthesis(model).indexes(z_symbols, latents["y"].shape[:2])
    y_symbols = np.round(latents["y"]).astype(np.int64)
    return latents, [
        (z_symbols, channel_indexes(z_symbols.shape), tables["z"]),
        (y_symbols, y_indexes, tables["y"]),
    ]


def compress(model, image):
    """uint8 RGB image (H, W, 3) -> bytes of a .tfh file."""
    image = _check_image(image)
    return pack(model, image.shape, *symbols_and_indexes(model, image))


def pack(model, image_shape, latents, segments):
    """The .tfh file of the output of `symbols_and_indexes` for an image of `image_shape`."""
    hyperprior = isinstance(model, ScaleHyperprior)
    header = bitstream.Header(
        kind=int(hyperprior),
        fingerprint=model.fingerprint(),
        height=image_shape[0],
        width=image_shape[1],
        y_shape=latents["y"].shape,
        z_shape=latents["z"].shape if hyperprior else None,
    )
    return bitstream.pack(header, [coder.encode(segments)])


def _expected_shapes(model, height, width):
    y_hw = bitstream.expected_latent_hw(height, width, paper.Y_DOWNSAMPLING)
    y_shape = (*y_hw, model.latent_filters)
    if not isinstance(model, ScaleHyperprior):
        return y_shape, None
    z_hw = bitstream.expected_latent_hw(height, width, paper.Z_DOWNSAMPLING)
    return y_shape, (*z_hw, model.num_filters)


def decode_symbols(model, data):
    """bytes -> (header, dict of decoded symbols); raises BitstreamError for anything malformed."""
    header, sections = bitstream.unpack(data)
    tables = _tables(model)
    bitstream.check_fingerprint(header, model.fingerprint())
    if header.height * header.width > MAX_PIXELS:
        raise BitstreamError(f"a {header.width}x{header.height} image exceeds the decoder's limit of {MAX_PIXELS} pixels")
    hyperprior = isinstance(model, ScaleHyperprior)
    if header.kind != int(hyperprior):
        raise BitstreamError("the file was written by another kind of model")
    y_shape, z_shape = _expected_shapes(model, header.height, header.width)
    if tuple(header.y_shape) != y_shape or (z_shape and tuple(header.z_shape) != z_shape):
        raise BitstreamError("latent shapes in the header do not match the image size and model")
    if len(sections) != 1:
        raise BitstreamError(f"expected one coded section, found {len(sections)}")
    symbol_count = int(np.prod(y_shape)) + (int(np.prod(z_shape)) if z_shape else 0)
    # No symbol costs more than a few bytes, escapes included: bound the decoder's buffers by the header.
    if len(sections[0]) > 16 * symbol_count + 4096:
        raise BitstreamError("coded section is larger than any coding of its symbols")
    decoder = coder.Decoder(sections[0], symbol_count=symbol_count)
    symbols = {}
    if hyperprior:
        symbols["z"] = decoder.decode(channel_indexes(z_shape), tables["z"])
        y_indexes = _integer_hyper_synthesis(model).indexes(symbols["z"], y_shape[:2])
    else:
        y_indexes = channel_indexes(y_shape)
    symbols["y"] = decoder.decode(y_indexes, tables["y"])
    decoder.finish()
    return header, symbols


def reconstruct(model, y_hat, height, width):
    """g_s on dequantized y, cropped and rounded to 8-bit RGB."""
    x_hat = _graphs(model)[1](tf.constant(y_hat[None], tf.float32), height, width).numpy()[0]
    x_hat = np.nan_to_num(x_hat, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.round(x_hat * 255.0), 0, 255).astype(np.uint8)


def dequantize_y(model, y_symbols):
    if isinstance(model, ScaleHyperprior):
        return y_symbols.astype(np.float32)
    return y_symbols.astype(np.float32) + _tables(model)["medians"]


def decompress(model, data):
    """bytes of a .tfh file -> uint8 RGB image (H, W, 3)."""
    header, symbols = decode_symbols(model, data)
    return reconstruct(model, dequantize_y(model, symbols["y"]), header.height, header.width)
