"""Reading images for the codec and writing files atomically.

The codec works on uint8 RGB arrays of shape (H, W, 3). `read_image` turns anything Pillow can open into
that form: grayscale is replicated to three channels, palettes are expanded, alpha is dropped and 16-bit
samples v are reduced to 8 bits by rounding, round(v * 255 / 65535), each with an `ImageWarning` so a user
knows the codec sees something other than the file. Pixel data are taken as stored (EXIF orientation is not
applied), so a decoded image lines up with its source sample for sample.

`write_png` and `atomic_write_bytes` never leave a half-written file: data go to a temporary file in the
destination's directory, which then replaces the destination in one `os.replace`.
"""
import io
import os
import pathlib
import secrets
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from tfhyper.errors import TfhyperError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Pillow's modes holding one 16- or 32-bit integer sample per pixel (grayscale).
_WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageError(TfhyperError, ValueError):
    """An image file is missing, unreadable, truncated, or not an image."""


class ImageWarning(UserWarning):
    """An image was read with a loss: alpha dropped or 16-bit samples reduced to 8 bits."""


class OutputError(TfhyperError, OSError):
    """A destination file cannot be written."""


class OutputExistsError(OutputError, FileExistsError):
    """The destination exists and overwriting was not asked for."""


def read_image(path):
    """Reads an image file as a uint8 RGB array of shape (H, W, 3).

    Raises `ImageError` with one line naming the file when it is missing, a directory, unreadable,
    not an image, or truncated. Warns with `ImageWarning` when alpha is dropped or 16-bit samples are
    reduced to 8 bits. The file is only read.
    """
    data = _read_bytes(path)
    pixels, losses = decode_image_bytes(data, name=os.fspath(path))
    for loss in losses:
        warnings.warn(f"{os.fspath(path)}: {loss}", ImageWarning, stacklevel=2)
    return pixels


def decode_image_bytes(data, *, name="image"):
    """Decodes encoded image bytes to (uint8 array (H, W, 3), list of losses in words).

    The losses ("alpha channel dropped", "16-bit samples reduced to 8 bits") are returned rather than
    warned about, so that a training pipeline can decode silently.
    """
    if png_bit_depth(data) == 16:
        return _decode_png16(data, name)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not an image Pillow can read") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name} cannot be decoded: {_one_line(error)}") from None
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name} is truncated or corrupt: {_one_line(error)}") from None
    return _to_rgb8(image, name)


def png_bit_depth(data):
    """Bit depth from a PNG header (IHDR byte 24), or None when `data` is not a PNG."""
    if len(data) < 25 or not data.startswith(PNG_SIGNATURE):
        return None
    return data[24]


def reduce_16_to_8(samples):
    """Maps 16-bit samples v to round(v * 255 / 65535) in integer arithmetic (no ties occur: 65535 = 255 * 257)."""
    wide = np.asarray(samples).astype(np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        raise ValueError("16-bit samples must lie in [0, 65535]")
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def write_png(path, array, *, force=False):
    """Writes a uint8 RGB array (H, W, 3) as a PNG file, atomically (see `atomic_write_bytes`)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ImageError(f"write_png expects a uint8 array of shape (H, W, 3), got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue(), force=force)


def atomic_write_bytes(path, data, *, force=False):
    """Writes `data` to `path` so that readers see either the old file or the complete new one.

    The bytes go to a temporary file beside `path` that replaces it at the end; on any failure the
    temporary file is removed. An existing `path` is kept (`OutputExistsError`, a `FileExistsError`)
    unless `force`; an unwritable destination raises `OutputError` with one line.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if path.exists() and not force:
        raise _exists_error(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_new_file(temporary, data)
        _move_into_place(temporary, path, force)
    except FileExistsError:
        raise _exists_error(path) from None
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error, path)}") from None
    finally:
        temporary.unlink(missing_ok=True)


def _read_bytes(path):
    path = pathlib.Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"cannot read {path}: permission denied") from None
    except OSError as error:
        if path.is_dir():
            raise ImageError(f"{path} is a directory, not an image") from None
        raise ImageError(f"cannot read {path}: {error.strerror or error}") from None


def _to_rgb8(image, name):
    """Converts an opened Pillow image to uint8 RGB, listing what was lost."""
    losses = []
    if image.mode == "P" and "transparency" in image.info:
        # Pillow keeps palette transparency only through RGBA; converting straight to RGB would warn on its own.
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        losses.append("alpha channel dropped")
    if image.mode in _WIDE_GRAY_MODES:
        try:
            gray = reduce_16_to_8(np.asarray(image))
        except ValueError:
            raise ImageError(f"{name} holds integer samples outside the 16-bit range") from None
        losses.append("16-bit samples reduced to 8 bits")
        return np.repeat(gray[:, :, None], 3, axis=2), losses
    if image.mode == "F":
        raise ImageError(f"{name} holds floating-point samples, which have no defined 8-bit range")
    return np.asarray(image.convert("RGB")), losses


def _decode_png16(data, name):
    """Decodes a 16-bit PNG with full precision (Pillow reads 16-bit RGB PNGs by truncating to the high byte)."""
    import tensorflow as tf  # Only 16-bit PNGs need it; keep reading ordinary images light.

    try:
        samples = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
    except tf.errors.OpError as error:
        raise ImageError(f"{name} is truncated or corrupt: {_one_line(error.message)}") from None
    losses = ["16-bit samples reduced to 8 bits"]
    channels = samples.shape[2]
    if channels in (2, 4):
        losses.insert(0, "alpha channel dropped")
    color = samples[:, :, :1] if channels <= 2 else samples[:, :, :3]
    return np.repeat(reduce_16_to_8(color), 3 // color.shape[2], axis=2), losses


def _write_new_file(path, data):
    # os.open with 0o666 lets the umask give the file the same permissions as any newly created file.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _move_into_place(temporary, path, force):
    if force:
        os.replace(temporary, path)
        return
    try:
        # A hard link fails if `path` appeared meanwhile, so a concurrent writer is never overwritten.
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:
        # The filesystem has no hard links: the existence check above is the best available.
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(temporary, path)


def _one_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _exists_error(path):
    return OutputExistsError(f"{path} already exists; use --force to overwrite it")


def _reason(error, path):
    if isinstance(error, FileNotFoundError) and not path.parent.is_dir():
        return f"directory {path.parent} does not exist"
    if isinstance(error, PermissionError):
        return "permission denied"
    return error.strerror or str(error)
