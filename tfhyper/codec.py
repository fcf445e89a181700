"""Images to bytes and back with a trained model (figure 3, right: Q, AE and AD).

    compress:    x -> the model's latents (`encoder_latents`); for each name in `model.LATENTS`, in order, the
                 model says how it is coded (`model.segment`: table indexes, tables, offset), given the symbols
                 coded before it; symbols = round(latent - offset); all segments go into one stream
    decompress:  the same loop, with each segment's symbols decoded instead; y_hat = symbols + offset -> g_s ->
                 x_hat, clipped to 8 bits

Because the encoder and decoder ask the model the same question with the same symbols (the hyperpriors answer
with the integer-exact h_s of `integer_hyper_synthesis`), both use the same tables on any machine. The file is the
container of `bitstream` around that stream. Everything a decoder needs besides the model (image size, latent
shapes) is in the header, and the model is identified by its fingerprint.
"""
import weakref

import numpy as np
import tensorflow as tf

from tfhyper import bitstream, coder
from tfhyper.errors import BitstreamError

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


_GRAPHS = weakref.WeakKeyDictionary()
_IMAGE_SIGNATURE = [tf.TensorSpec((1, None, None, 3), tf.float32)]


def _graphs(model, jit_compile=False):
    """The transforms as tf.function graphs for any image size (one trace each, then no Python per layer); with
    `jit_compile`, compiled by XLA (once per image size).

    XLA is off by default: on the CPU measured it gained nothing (compress 0.95-1.30x, decompress 1.15-1.35x the
    plain graphs' time; WORKSPACE_NOTES.md, "XLA for the codec"). Either
    way the file decodes the same on any machine, since the tables come from the integer-exact h_s on the
    symbols; XLA changes the float latents and x_hat by rounding only.
    """
    graphs = _GRAPHS.setdefault(model, {})
    if jit_compile not in graphs:
        model_ref = weakref.ref(model)  # a strong reference here would keep every model alive in _GRAPHS

        @tf.function(input_signature=_IMAGE_SIGNATURE, jit_compile=jit_compile)
        def analysis(x):
            return model_ref().encoder_latents(x / 255.0)

        @tf.function(input_signature=[tf.TensorSpec((1, None, None, model.latent_filters), tf.float32),
                                      tf.TensorSpec((), tf.int32), tf.TensorSpec((), tf.int32)],
                     jit_compile=jit_compile)  # fmt: skip
        def synthesis(y_hat, height, width):
            return model_ref().synthesis(y_hat, height, width)

        graphs[jit_compile] = (analysis, synthesis)
    return graphs[jit_compile]


def analyse(model, image, jit_compile=False):
    """The encoder's latents: {name: (h, w, c) float32 numpy} for every name in `model.LATENTS`."""
    latents = _graphs(model, jit_compile)[0](tf.constant(image[None], tf.float32))
    return {name: latents[name].numpy()[0] for name in model.LATENTS}


def symbols_and_segments(model, image, jit_compile=False):
    """What the arithmetic coder receives: (latents, {name: symbols}, {name: Segment}), in coding order."""
    latents = analyse(model, image, jit_compile)
    shapes = {name: latent.shape for name, latent in latents.items()}
    symbols, segments = {}, {}
    for name in model.LATENTS:
        segments[name] = model.segment(name, symbols, shapes)
        symbols[name] = segments[name].symbols(latents[name])
    return latents, symbols, segments


def coder_input(symbols, segments):
    """The (symbols, indexes, tables) triples of `coder.encode`, in coding order."""
    return [(symbols[name], segment.indexes, segment.tables) for name, segment in segments.items()]


def compress(model, image, jit_compile=False):
    """uint8 RGB image (H, W, 3) -> bytes of a .tfh file (g_a and h_a compiled by XLA with `jit_compile`)."""
    image = _check_image(image)
    return pack(model, image.shape, *symbols_and_segments(model, image, jit_compile))


def pack(model, image_shape, latents, symbols, segments):
    """The .tfh file of the output of `symbols_and_segments` for an image of `image_shape`."""
    stream = coder.encode(coder_input(symbols, segments))
    header = bitstream.Header(
        kind=model.FILE_KIND,
        fingerprint=model.fingerprint(),
        height=image_shape[0],
        width=image_shape[1],
        y_shape=latents["y"].shape,
        z_shape=latents["z"].shape if "z" in latents else None,
        version=coder.stream_version(stream),  # 2 only for a stream with sparse segments
    )
    return bitstream.pack(header, [stream])


def decode_symbols(model, data):
    """bytes -> (header, {name: symbols}, {name: Segment}); raises BitstreamError for anything malformed."""
    header, sections = bitstream.unpack(data)
    model.tables()
    bitstream.check_fingerprint(header, model.fingerprint())
    if header.height * header.width > MAX_PIXELS:
        raise BitstreamError(f"a {header.width}x{header.height} image exceeds the decoder's limit of {MAX_PIXELS} pixels")
    if header.kind != model.FILE_KIND:
        raise BitstreamError("the file was written by another kind of model")
    shapes = model.latent_shapes(header.height, header.width)
    if tuple(header.y_shape) != shapes["y"] or (header.z_shape is not None and tuple(header.z_shape) != shapes["z"]):
        raise BitstreamError("latent shapes in the header do not match the image size and model")
    if len(sections) != 1:
        raise BitstreamError(f"expected one coded section, found {len(sections)}")
    if coder.stream_version(sections[0]) != header.version:
        raise BitstreamError(f"a file of format version {header.version} holds a coded stream of version "
                             f"{coder.stream_version(sections[0])}")
    symbol_count = sum(int(np.prod(shape)) for shape in shapes.values())
    # No symbol costs more than a few bytes, escapes included: bound the decoder's buffers by the header.
    if len(sections[0]) > 16 * symbol_count + 4096:
        raise BitstreamError("coded section is larger than any coding of its symbols")
    decoder = coder.Decoder(sections[0], symbol_count=symbol_count)
    symbols, segments = {}, {}
    for name in model.LATENTS:
        segments[name] = model.segment(name, symbols, shapes)
        symbols[name] = decoder.decode(segments[name].indexes, segments[name].tables)
    decoder.finish()
    return header, symbols, segments


def reconstruct(model, y_hat, height, width, jit_compile=False):
    """g_s on dequantized y, cropped and rounded to 8-bit RGB."""
    x_hat = _graphs(model, jit_compile)[1](tf.constant(y_hat[None], tf.float32), height, width).numpy()[0]
    x_hat = np.nan_to_num(x_hat, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.round(x_hat * 255.0), 0, 255).astype(np.uint8)


def decompress(model, data, jit_compile=False):
    """bytes of a .tfh file -> uint8 RGB image (H, W, 3) (g_s compiled by XLA with `jit_compile`)."""
    header, symbols, segments = decode_symbols(model, data)
    return reconstruct(model, segments["y"].values(symbols["y"]), header.height, header.width, jit_compile)
