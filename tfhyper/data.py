"""Training data: batches of random crops, as in the paper's section 4.1.

The paper trains on randomly placed 256 x 256 crops of photographs, in minibatches of 8. Its photographs were
screened for excessive saturation (to drop non-photographic images) and downsampled by a random factor so
that the shorter side lies between 640 and 1200 pixels (to remove compression artifacts); both steps are
available here and off by default.

`make_dataset` yields float32 batches (B, patch, patch, 3) in [0, 1] from
  - `None` or "synthetic": dead-leaves images (`dead_leaves`), generated on the fly, no download needed;
  - a directory (searched recursively), a glob pattern, or a list of image files;
  - "tfds:NAME[/CONFIG][:SPLIT]": the "image" feature of a TensorFlow Datasets dataset.
"""
import concurrent.futures
import dataclasses
import glob
import io
import logging
import math
import os
import pathlib
import re
import secrets

import numpy as np
import tensorflow as tf
from PIL import Image

from tfhyper import imageio
from tfhyper.errors import TfhyperError

# Section 4.1: 256 x 256 crops, minibatches of 8, shorter side downsampled into [640, 1200].
PATCH_SIZE = 256
BATCH_SIZE = 8
DOWNSAMPLE_RANGE = (640, 1200)
# Mean HSV saturation above which an image is taken for non-photographic (section 4.1 screens "excessive
# saturation" without a number). Photographs reach high values too: over the 24 Kodak images and the 580
# BSDS500 / Sun-Hays photographs the mean saturation has median 0.33, 99th percentile 0.76 and maximum 0.87
# (a dark cave lit in orange; Kodak's red door reaches 0.78). 0.9 keeps every one of them and drops images
# made mostly of pure, flat colors: graphics, logos, cartoons.
SATURATION_THRESHOLD = 0.9
# Every 4th row and column is enough to estimate an image's mean saturation.
_SATURATION_STRIDE = 4
SHUFFLE_BUFFER = 64
# Dead leaves: disk radii in pixels (None: the image size) and the standard deviation of the added noise.
# From 1 pixel up, the radially averaged power spectrum falls as f^-2.2 to f^-2.5 between 4 and 64 cycles per
# 256 pixels, as the Kodak images' (f^-1.8 to f^-2.6); with 2 pixels the smallest leaves steepen it to f^-2.8.
LEAF_RADIUS_RANGE = (1.0, None)
LEAF_NOISE = 0.01
# Expected number of leaves over each pixel; exp(-5) < 1 % of pixels are left to the background leaf.
_LEAF_COVERAGE = 5.0
# Leaves up to this radius are drawn through shared stencils; larger ones (a few dozen) against every pixel.
_STENCIL_MAX_RADIUS = 16
# One stencil per octave of radius keeps the graph small (it is traced for every dataset).
_STENCIL_HALF_SIDES = (1, 2, 4, 8, 16)

_PHOTO_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm",
    ".pnm", ".avif", ".qoi", ".tga",
}
IMAGE_SUFFIXES = frozenset(_PHOTO_SUFFIXES & {s for s, f in Image.registered_extensions().items() if f in Image.OPEN})
# How each file is decoded inside the pipeline.
_TF_8BIT, _TF_PNG16, _PILLOW = 0, 1, 2
_TFDS_SPEC = re.compile(r"tfds:(?P<name>[a-z0-9_]+)(?:/(?P<config>[\w.\-]+))?(?::(?P<split>.+))?")

log = logging.getLogger(__name__)


class DatasetError(TfhyperError, ValueError):
    """A training data source is missing, empty, holds no usable image, or cannot be loaded."""


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """A TensorFlow Datasets source, "tfds:NAME[/CONFIG][:SPLIT]"."""

    name: str
    config: str | None = None
    split: str = "train"

    @property
    def builder_name(self):
        return self.name if self.config is None else f"{self.name}/{self.config}"


@dataclasses.dataclass(frozen=True)
class _ImageFile:
    path: str
    width: int
    height: int
    decoder: int
    png: bytes | None = None  # The pixels, when Pillow had to decode them.


def make_dataset(
    source=None,
    *,
    patch_size=PATCH_SIZE,
    batch_size=BATCH_SIZE,
    downsample=False,
    downsample_range=DOWNSAMPLE_RANGE,
    screen_saturation=False,
    saturation_threshold=SATURATION_THRESHOLD,
    shuffle_buffer=SHUFFLE_BUFFER,
    cache=False,
    seed=None,
    repeat=True,
    tfds_data_dir=None,
    tfds_download=True,
):
    """Batches of random crops, float32 (batch_size, patch_size, patch_size, 3) in [0, 1].

    Args:
      source: None or "synthetic" (dead leaves, endless), a directory, a glob pattern, a list of image files,
        or "tfds:NAME[/CONFIG][:SPLIT]" (split "train" by default).
      downsample: shrink photographs whose shorter side exceeds `downsample_range[1]` by a random factor, so
        that the shorter side is uniform in `downsample_range` (section 4.1); never enlarges.
      screen_saturation: drop photographs whose mean HSV saturation exceeds `saturation_threshold`.
      shuffle_buffer: number of crops mixed across images (0 or None: none); file lists are moreover
        reshuffled on every pass.
      cache: keep decoded photographs in memory (True) or in files with this prefix (a string).
      seed: makes file order, downsampling factors and crop positions reproducible.
      repeat: pass over the photographs endlessly; when False the last batch may be smaller.
      tfds_data_dir, tfds_download: where TFDS keeps its data, and whether it may download it.

    The two photographic steps do not apply to synthetic images, which are generated at the patch size.
    Photographs with a side shorter than `patch_size` and files that are not images are skipped with a
    logged warning (TFDS images too small are dropped as they come); `DatasetError` (a `ValueError`) says
    when no file is usable or a source cannot be loaded.
    """
    _check_arguments(patch_size, batch_size, downsample, downsample_range, saturation_threshold, shuffle_buffer)
    seed = secrets.randbits(31) if seed is None else int(seed)
    if source is None or source == "synthetic":
        return _batched(_synthetic_patches(patch_size, seed), batch_size, 0, seed, drop_remainder=True)
    if isinstance(source, str) and source.startswith("tfds:"):
        images = _tfds_images(parse_tfds_spec(source), tfds_data_dir, tfds_download)
    else:
        images = _file_images(_usable_files(source, patch_size), seed)
    if screen_saturation:
        images = images.filter(lambda image: mean_saturation(image) <= saturation_threshold)
    if cache is not False:
        # Cached passes replay the first pass's order; crops still differ and are mixed by the shuffle buffer.
        images = images.cache("" if cache is True else os.fspath(cache))
    if repeat:
        images = images.repeat()
    patches = _random_crops(images, patch_size, downsample_range if downsample else None, seed)
    return _batched(patches, batch_size, shuffle_buffer or 0, seed, drop_remainder=repeat)


def dead_leaves(size, rng, *, radius_range=LEAF_RADIUS_RANGE, noise=LEAF_NOISE):
    """A dead-leaves image, float32 (size, size, 3) in [0, 1].

    Disks ("leaves") of random color fall on the plane and hide what lies beneath; their radii follow
    p(r) ~ r^-3 on [r_min, r_max], the scale-invariant law under which the model reproduces the occlusions and
    the ~1/f^2 power spectrum of natural images (Lee, Mumford & Huang 2001). Each leaf carries a gentle linear
    shading, edges get a slight optical blur ([1, 2, 1] / 4 in each direction) and Gaussian noise of standard
    deviation `noise` is added.

    Args:
      size: side in pixels.
      rng: a numpy Generator (or a seed for one), which draws the image's seed.
      radius_range: (r_min, r_max) in pixels; r_max None means `size`.
    """
    r_min, r_max = _leaf_radii(size, radius_range)
    seed = np.random.default_rng(rng).integers(0, 2**31, size=2)
    image = _dead_leaves_function(int(size), r_min, r_max, float(noise), tf.constant(seed, tf.int64))
    return image.numpy()


def parse_tfds_spec(spec):
    """Parses "tfds:NAME[/CONFIG][:SPLIT]" into a `TfdsSpec`; the split may use TFDS slicing ("train[:90%]")."""
    match = _TFDS_SPEC.fullmatch(spec) if isinstance(spec, str) else None
    if match is None:
        raise DatasetError(f"bad TFDS source {spec!r}: expected tfds:NAME[/CONFIG][:SPLIT], e.g. tfds:clic:train")
    return TfdsSpec(match["name"], match["config"], match["split"] or "train")


def mean_saturation(image):
    """Mean HSV saturation, (max - min) / max of R, G, B, of a uint8 image, estimated on a regular subgrid."""
    sample = tf.image.convert_image_dtype(image[::_SATURATION_STRIDE, ::_SATURATION_STRIDE], tf.float32)
    return tf.reduce_mean(tf.image.rgb_to_hsv(sample)[..., 1])


def image_files(source):
    """The files a file source names: a directory (recursively, image suffixes only), a glob, or a list."""
    if isinstance(source, (list, tuple)):
        return _listed_files(source)
    path = pathlib.Path(source)
    if path.is_dir():
        return _files_in_directory(path)
    if path.is_file():
        return [os.fspath(path)]
    if glob.has_magic(os.fspath(source)):
        matches = sorted(p for p in glob.glob(os.fspath(source), recursive=True) if os.path.isfile(p))
        if not matches:
            raise DatasetError(f"no files match {source}")
        return matches
    raise DatasetError(f"no such file or directory: {source}")


# Files.


def _usable_files(source, patch_size):
    paths = image_files(source)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        headers = list(pool.map(_read_header, paths))
    usable = [h for h in headers if isinstance(h, _ImageFile) and min(h.width, h.height) >= patch_size]
    unreadable = [p for p, h in zip(paths, headers, strict=True) if not isinstance(h, _ImageFile)]
    small = [h.path for h in headers if isinstance(h, _ImageFile) and min(h.width, h.height) < patch_size]
    _warn_skipped(unreadable, "not readable as images")
    _warn_skipped(small, f"smaller than {patch_size} x {patch_size} pixels")
    if not usable:
        raise DatasetError(
            f"no usable training image in {source!s:.200}: {len(small)} smaller than {patch_size} x {patch_size} "
            f"pixels, {len(unreadable)} not readable as images"
        )
    return usable


def _read_header(path):
    """Size and decoder of an image file from its header, or None when Pillow cannot identify it."""
    try:
        with open(path, "rb") as file:
            head = file.read(32)
            file.seek(0)
            with Image.open(file) as image:
                width, height, form, mode = image.width, image.height, image.format, image.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if form == "PNG":
        decoder = _TF_PNG16 if imageio.png_bit_depth(head) == 16 else _TF_8BIT
    elif form in ("GIF", "BMP", "WEBP") or form == "JPEG" and mode in ("L", "RGB"):
        decoder = _TF_8BIT
    else:
        decoder = _PILLOW
    return _ImageFile(os.fspath(path), width, height, decoder)


def _file_images(files, seed):
    """Decoded uint8 RGB images, in a fresh random order on every pass.

    TensorFlow decodes PNG, JPEG, GIF, BMP and WebP files, in parallel. Files in other formats (TIFF, PPM,
    ...) are decoded by Pillow now, once, and kept in memory as PNG: Python must not run inside tf.data's
    threads, since a process that exits while they call into Python hangs.
    """
    items, decoders, in_memory = [], [], []
    for file in _with_foreign_formats_in_memory(files):
        items.append(file.path if file.png is None else file.png)
        decoders.append(file.decoder)
        in_memory.append(file.png is not None)
    paths = tf.data.Dataset.from_tensor_slices((items, decoders, in_memory))
    # Shuffling names before decoding costs nothing and mixes the whole list, unlike a buffer of images.
    paths = paths.shuffle(len(items), seed=seed, reshuffle_each_iteration=True)
    images = paths.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
    # A file whose header was fine but whose data are corrupt is skipped (and logged by tf.data).
    return images.ignore_errors(log_warning=True)


def _with_foreign_formats_in_memory(files):
    foreign = [f for f in files if f.decoder == _PILLOW]
    if not foreign:
        return files
    log.info("decoding %d file(s) in formats TensorFlow cannot read; they are kept in memory", len(foreign))
    ready, corrupt = [f for f in files if f.decoder != _PILLOW], []
    for file in foreign:
        try:
            pixels = imageio.decode_image_bytes(pathlib.Path(file.path).read_bytes(), name=file.path)[0]
        except (imageio.ImageError, OSError):
            corrupt.append(file.path)
            continue
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        ready.append(dataclasses.replace(file, decoder=_TF_8BIT, png=buffer.getvalue()))
    _warn_skipped(corrupt, "not readable as images")
    if not ready:
        raise DatasetError(f"no usable training image: {len(corrupt)} not readable as images")
    return ready


def _decode(item, decoder, in_memory):
    data = tf.cond(in_memory, lambda: item, lambda: tf.io.read_file(item))
    image = tf.cond(
        decoder == _TF_PNG16,
        lambda: _reduce_16_to_8(tf.io.decode_png(data, channels=3, dtype=tf.uint16)),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def _reduce_16_to_8(image):
    """round(v * 255 / 65535), as `imageio.reduce_16_to_8`; float32 is exact enough as no v / 257 is near a tie."""
    return tf.cast(tf.round(tf.cast(image, tf.float32) * (255.0 / 65535.0)), tf.uint8)


def _listed_files(source):
    paths = [os.fspath(p) for p in source]
    if not paths:
        raise DatasetError("the list of training images is empty")
    for path in paths:
        if not os.path.isfile(path):
            reason = "is a directory, not an image" if os.path.isdir(path) else "does not exist"
            raise DatasetError(f"training image {path} {reason}")
    return paths


def _files_in_directory(directory):
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    images = [os.fspath(p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    _warn_skipped([os.fspath(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES], "without an image suffix")
    if not images:
        raise DatasetError(f"no image files in {directory} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def _warn_skipped(paths, reason):
    if paths:
        examples = ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "")
        log.warning("skipping %d file(s) %s: %s", len(paths), reason, examples)


# TensorFlow Datasets.


def _tfds_images(spec, data_dir, download):
    try:
        import tensorflow_datasets as tfds  # Imported only for tfds sources: it is slow to import.
    except ImportError:
        raise DatasetError("tfds sources need the tensorflow-datasets package") from None
    builder = _tfds_builder(tfds, spec, data_dir)
    if "image" not in builder.info.features:
        raise DatasetError(f"TFDS dataset {spec.builder_name} has no 'image' feature")
    if not builder.is_prepared():
        _prepare_tfds(builder, spec, download)
    try:
        examples = builder.as_dataset(split=spec.split, shuffle_files=True)
    except (ValueError, KeyError, AssertionError) as error:
        message = f"TFDS dataset {spec.builder_name} has no split {spec.split!r}: {_first_line(error)}"
        raise DatasetError(message) from None
    return examples.map(lambda example: _to_rgb8(example["image"]), num_parallel_calls=tf.data.AUTOTUNE)


def _tfds_builder(tfds, spec, data_dir):
    try:
        return tfds.builder(spec.builder_name, data_dir=data_dir)
    except ValueError as error:  # Also DatasetNotFoundError and unknown configs.
        raise DatasetError(f"unknown TFDS dataset {spec.builder_name}: {_first_line(error)}") from None


def _prepare_tfds(builder, spec, download):
    if not download:
        raise DatasetError(
            f"TFDS dataset {spec.builder_name} is not prepared in {builder.data_dir} and downloading is off")
    try:
        builder.download_and_prepare()
    except Exception as error:  # Network and archive failures come in many types; all mean the same here.
        raise DatasetError(f"could not download TFDS dataset {spec.builder_name}: {_first_line(error)}") from None


def _to_rgb8(image):
    """uint8 RGB from a TFDS image of 1 to 4 channels (grayscale replicated, alpha dropped, 16 bits reduced)."""
    if image.dtype == tf.uint16:
        image = _reduce_16_to_8(image)
    channels = tf.shape(image)[-1]
    rgb = tf.cond(channels < 3, lambda: tf.repeat(image[..., :1], 3, axis=-1), lambda: image[..., :3])
    rgb.set_shape([None, None, 3])
    return rgb


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# Crops and batches.


def _random_crops(images, patch_size, downsample_range, seed):
    """One random patch per image; the i-th draw uses seed (seed, i), whatever the parallelism."""
    big_enough = images.filter(lambda image: tf.reduce_min(tf.shape(image)[:2]) >= patch_size)

    def crop(index, image):
        draw = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), index)
        downsample_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(draw, 2))
        if downsample_range is not None:
            image = _random_downsample(image, downsample_range, downsample_seed)
        return tf.image.stateless_random_crop(image, [patch_size, patch_size, 3], seed=crop_seed)

    return big_enough.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def _random_downsample(image, bounds, seed):
    """Shrinks so that the shorter side is uniform in [low, high], when it exceeds high (section 4.1)."""
    low, high = bounds
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    shorter = tf.reduce_min(size)
    target = tf.random.stateless_uniform([], seed, minval=float(low), maxval=float(high))

    def shrink():
        new_size = tf.cast(tf.round(size * target / shorter), tf.int32)
        smaller = tf.image.resize(image, new_size, method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(smaller), 0.0, 255.0), tf.uint8)

    return tf.cond(shorter > high, shrink, lambda: image)


def _synthetic_patches(patch_size, seed):
    """Endless dead-leaves patches; the i-th is drawn from seed (seed, i), whatever the parallelism."""
    r_min, r_max = _leaf_radii(patch_size, LEAF_RADIUS_RANGE)
    base = tf.constant([seed, 1], tf.int64)

    def patch(index):
        draw = tf.random.experimental.stateless_fold_in(base, index)
        return _dead_leaves_image(patch_size, r_min, r_max, LEAF_NOISE, draw)

    return tf.data.Dataset.counter().map(patch, num_parallel_calls=tf.data.AUTOTUNE)


def _batched(patches, batch_size, shuffle_buffer, seed, *, drop_remainder):
    if shuffle_buffer:
        patches = patches.shuffle(shuffle_buffer, seed=seed)
    batches = patches.batch(batch_size, drop_remainder=drop_remainder)
    if batches.element_spec.dtype == tf.uint8:
        batches = batches.map(lambda batch: tf.cast(batch, tf.float32) / 255.0)
    return batches.prefetch(tf.data.AUTOTUNE)


def _check_arguments(patch_size, batch_size, downsample, downsample_range, saturation_threshold, shuffle_buffer):
    for name, value in (("patch_size", patch_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if shuffle_buffer is not None and (int(shuffle_buffer) != shuffle_buffer or shuffle_buffer < 0):
        raise ValueError(f"shuffle_buffer must be a non-negative integer, got {shuffle_buffer!r}")
    low, high = downsample_range
    if downsample and not patch_size <= low <= high:
        raise ValueError(
            f"downsample_range must satisfy patch_size <= low <= high so that a patch still fits, "
            f"got {downsample_range!r} with patch_size {patch_size}"
        )
    if not 0.0 < saturation_threshold <= 1.0:
        raise ValueError(f"saturation_threshold must lie in (0, 1], got {saturation_threshold!r}")


# Dead leaves.


def _leaf_radii(size, radius_range):
    if isinstance(size, bool) or int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    r_min, r_max = radius_range
    r_max = float(size if r_max is None else r_max)
    if not 0 < r_min <= r_max:
        raise ValueError(f"radius_range must satisfy 0 < r_min <= r_max, got {radius_range!r}")
    return float(r_min), r_max


def _dead_leaves_image(size, r_min, r_max, noise, seed):
    """The graph behind `dead_leaves`: pure TensorFlow, so tf.data can run it in parallel."""
    leaves_seed, paint_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    radii, centers = _falling_leaves(size, r_min, r_max, leaves_seed)
    top = _topmost_leaf(size, radii, centers)
    image = _blur(_paint_leaves(top, radii, centers, paint_seed))
    image += tf.random.stateless_normal(tf.shape(image), noise_seed, stddev=noise)
    return tf.clip_by_value(image, 0.0, 1.0)


_dead_leaves_function = tf.function(_dead_leaves_image, reduce_retracing=True)


def _falling_leaves(size, r_min, r_max, seed):
    """Radii (inverse CDF of p(r) ~ r^-3) and centers of the leaves touching the image, topmost first.

    Centers are uniform over the image widened by r_max on every side, which gives every leaf that can
    touch the image its fair share; those that miss it are dropped.
    """
    # E[pi r^2] = 2 pi log(r_max / r_min) / (r_min^-2 - r_max^-2) under p(r) = 2 r^-3 / (r_min^-2 - r_max^-2).
    if r_max > r_min:
        mean_area = 2.0 * math.pi * math.log(r_max / r_min) / (r_min**-2 - r_max**-2)
    else:
        mean_area = math.pi * r_min**2
    count = math.ceil(_LEAF_COVERAGE * (size + 2 * r_max) ** 2 / mean_area)
    radius_seed, center_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    radii = (r_min**-2 - tf.random.stateless_uniform([count], radius_seed) * (r_min**-2 - r_max**-2)) ** -0.5
    centers = tf.random.stateless_uniform([count, 2], center_seed, -r_max, size + r_max)
    touching = tf.reduce_all((centers + radii[:, None] >= 0) & (centers - radii[:, None] <= size - 1), axis=1)
    return tf.boolean_mask(radii, touching), tf.boolean_mask(centers, touching)


def _topmost_leaf(size, radii, centers):
    """Index of the visible (topmost = lowest-index) leaf at each pixel; len(radii) where none falls.

    Every leaf lists the (pixel, leaf) pairs of the pixels it covers, and each pixel keeps its smallest leaf
    index. The many small leaves share stencils by rounded-up radius; the few large ones scan their boxes.
    """
    half_sides = tf.cast(tf.math.ceil(radii), tf.int32)
    pairs = [_stencil_pairs(size, radii, centers, half_sides, half) for half in _STENCIL_HALF_SIDES]
    pairs.append(_box_pairs(size, radii, centers, tf.where(half_sides > _STENCIL_MAX_RADIUS)[:, 0]))
    pixels, leaves = (tf.concat(column, 0) for column in zip(*pairs, strict=True))
    # Pixels that no leaf covers get the largest int32, which the minimum replaces by the background.
    top = tf.math.unsorted_segment_min(leaves, pixels, size * size)
    return tf.minimum(tf.reshape(top, [size, size]), tf.shape(radii)[0])


def _stencil_pairs(size, radii, centers, half_sides, half):
    """(pixel, leaf) for leaves whose rounded-up radius is in (half / 2, half], through a (2 half + 1)^2 stencil."""
    chosen = tf.cast(tf.where((half_sides <= half) & (2 * half_sides > half))[:, 0], tf.int32)
    center = tf.gather(centers, chosen)
    offsets = tf.range(-half, half + 1)
    x = tf.cast(tf.round(center[:, 0]), tf.int32)[:, None, None] + offsets[None, None, :]
    y = tf.cast(tf.round(center[:, 1]), tf.int32)[:, None, None] + offsets[None, :, None]
    inside = _inside(center, tf.gather(radii, chosen), x, y) & (x >= 0) & (x < size) & (y >= 0) & (y < size)
    pixels = tf.broadcast_to(y * size + x, tf.shape(inside))
    leaves = tf.broadcast_to(chosen[:, None, None], tf.shape(inside))
    return tf.boolean_mask(pixels, inside), tf.boolean_mask(leaves, inside)


def _box_pairs(size, radii, centers, chosen):
    """(pixel, leaf) for the `chosen` leaves, scanning each one's bounding box within the image."""
    chosen = tf.cast(chosen, tf.int32)
    radius, center = tf.gather(radii, chosen), tf.gather(centers, chosen)
    low = tf.cast(tf.maximum(tf.math.ceil(center - radius[:, None]), 0.0), tf.int32)
    high = tf.cast(tf.minimum(tf.math.floor(center + radius[:, None]), size - 1.0), tf.int32) + 1
    extent = tf.maximum(high - low, 0)
    area = extent[:, 0] * extent[:, 1]
    ends = tf.cumsum(area)
    position = tf.range(tf.reduce_sum(area))
    # Which box each position falls in: linear memory, unlike tf.repeat, which tiles a dense matrix.
    owner = tf.searchsorted(ends, position, side="right")
    local = position - tf.gather(ends - area, owner)
    width = tf.gather(extent[:, 0], owner)
    x = tf.gather(low[:, 0], owner) + local % width
    y = tf.gather(low[:, 1], owner) + local // width
    inside = _inside(tf.gather(center, owner), tf.gather(radius, owner), x, y, paired=True)
    return tf.boolean_mask(y * size + x, inside), tf.boolean_mask(tf.gather(chosen, owner), inside)


def _inside(centers, radii, x, y, *, paired=False):
    """Whether pixel (x, y) lies in the leaf: per leaf and pixel (leaves, rows, columns), or pairwise."""
    if not paired:
        centers, radii = centers[:, None, None, :], radii[:, None, None]
    dx = tf.cast(x, tf.float32) - centers[..., 0]
    dy = tf.cast(y, tf.float32) - centers[..., 1]
    return dx * dx + dy * dy <= radii * radii


def _paint_leaves(top, radii, centers, seed):
    """Colors each pixel by its leaf: a random, partly desaturated color with a linear shading across the leaf."""
    size = tf.shape(top)[0]
    count = tf.shape(radii)[0] + 1  # The last leaf is the background, behind all others.
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    raw = tf.random.stateless_uniform([count, 3], seeds[0])
    gray = tf.reduce_mean(raw, axis=1, keepdims=True)
    colors = gray + tf.random.stateless_uniform([count, 1], seeds[1]) * (raw - gray)
    angle = tf.random.stateless_uniform([count], seeds[2], 0.0, 2.0 * math.pi)
    extent = tf.concat([radii, [tf.cast(size, tf.float32)]], 0)
    slope = tf.random.stateless_uniform([count], seeds[3], 0.0, 0.1) / extent
    centers = tf.concat([centers, [[tf.cast(size, tf.float32) / 2] * 2]], 0)
    y, x = tf.meshgrid(tf.range(size, dtype=tf.float32), tf.range(size, dtype=tf.float32), indexing="ij")
    along = (x - tf.gather(centers[:, 0], top)) * tf.gather(tf.cos(angle), top)
    along += (y - tf.gather(centers[:, 1], top)) * tf.gather(tf.sin(angle), top)
    return tf.gather(colors, top) + (tf.gather(slope, top) * along)[..., None]


def _blur(image):
    """[1, 2, 1] / 4 along both axes, edges replicated: a lens's slight blur, so that edges are not aliased."""
    taps = tf.constant([1.0, 2.0, 1.0]) / 4.0
    kernel = tf.tile((taps[:, None] * taps[None, :])[:, :, None, None], [1, 1, 3, 1])
    padded = tf.pad(image[None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    return tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")[0]
