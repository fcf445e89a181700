"""Reading images into uint8 RGB and writing files atomically."""
import errno
import fractions
import hashlib
import os
import pathlib
import warnings

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfhyper import imageio
from tfhyper.errors import TfhyperError
from tfhyper.imageio import ImageError, ImageWarning, OutputError, OutputExistsError

# 16-bit samples around the rounding boundaries of v * 255 / 65535 = v / 257: 128 -> 0.498, 129 -> 0.502.
SAMPLES_16 = [0, 1, 128, 129, 257, 385, 386, 32767, 32768, 65407, 65408, 65535]


def expected_8(samples):
    """round(v * 255 / 65535) in exact rational arithmetic."""
    return np.array([round(fractions.Fraction(int(v) * 255, 65535)) for v in np.ravel(samples)], np.uint8).reshape(
        np.shape(samples)
    )


def save_png16(path, samples):
    """Writes a 16-bit PNG with TensorFlow's encoder (Pillow cannot write 16-bit color)."""
    path.write_bytes(tf.io.encode_png(tf.constant(samples, tf.uint16)).numpy())
    return path


def random_rgb(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def read_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return imageio.read_image(path)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


# Reading.


def test_rgb_png_is_read_exactly_without_warning(tmp_path):
    pixels = random_rgb((7, 5, 3))
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_quietly(tmp_path / "a.png")
    assert image.dtype == np.uint8 and image.shape == (7, 5, 3)
    np.testing.assert_array_equal(image, pixels)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1)])
def test_images_of_any_size_down_to_one_pixel(tmp_path, shape):
    pixels = random_rgb(shape + (3,), seed=3)
    Image.fromarray(pixels).save(tmp_path / "tiny.png")
    np.testing.assert_array_equal(read_quietly(tmp_path / "tiny.png"), pixels)


def test_jpeg_of_a_flat_color_reads_as_that_color(tmp_path):
    Image.new("RGB", (24, 16), (200, 30, 90)).save(tmp_path / "a.jpg", quality=95)
    image = read_quietly(tmp_path / "a.jpg")
    assert image.shape == (16, 24, 3)
    # JPEG's color conversion and quantization move a flat color by a few levels at most.
    assert np.abs(image.astype(int) - [200, 30, 90]).max() <= 3


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    gray = random_rgb((6, 4), seed=1)
    Image.fromarray(gray).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_quietly(tmp_path / "g.png"), np.stack([gray] * 3, axis=-1))


def test_rgba_drops_alpha_keeping_colors_where_transparent(tmp_path):
    rgba = random_rgb((5, 6, 4), seed=2)
    rgba[0, :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    with pytest.warns(ImageWarning, match="alpha"):
        image = imageio.read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(image, rgba[:, :, :3])


def test_gray_with_alpha_drops_alpha(tmp_path):
    la = random_rgb((3, 4, 2), seed=4)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    with pytest.warns(ImageWarning, match="alpha"):
        image = imageio.read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(image, np.stack([la[:, :, 0]] * 3, axis=-1))


def palette_image(indexes, palette):
    image = Image.fromarray(indexes, mode="P")
    image.putpalette(palette.ravel().tolist())
    return image


def test_palette_is_looked_up(tmp_path):
    palette = random_rgb((256, 3), seed=5)
    indexes = random_rgb((8, 9), seed=6)
    palette_image(indexes, palette).save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_quietly(tmp_path / "p.png"), palette[indexes])


def test_palette_with_transparency_drops_alpha(tmp_path):
    palette = random_rgb((256, 3), seed=7)
    indexes = random_rgb((8, 9), seed=8)
    palette_image(indexes, palette).save(tmp_path / "p.png", transparency=int(indexes[0, 0]))
    with pytest.warns(ImageWarning, match="alpha"):
        image = imageio.read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(image, palette[indexes])


def test_16_bit_rgb_png_is_rounded_not_truncated(tmp_path):
    samples = np.array(SAMPLES_16, np.uint16).reshape(2, 2, 3)
    save_png16(tmp_path / "rgb16.png", samples)
    with pytest.warns(ImageWarning, match="16-bit"):
        image = imageio.read_image(tmp_path / "rgb16.png")
    np.testing.assert_array_equal(image, expected_8(samples))
    # 129 / 257 = 0.502 rounds to 1, where keeping the high byte would give 0.
    assert image[0, 1, 0] == 1


def test_16_bit_gray_png_is_rounded_and_replicated(tmp_path):
    samples = np.array(SAMPLES_16, np.uint16).reshape(3, 4)
    Image.fromarray(samples).save(tmp_path / "g16.png")
    with pytest.warns(ImageWarning, match="16-bit"):
        image = imageio.read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(image, np.stack([expected_8(samples)] * 3, axis=-1))


def test_16_bit_gray_alpha_png_warns_twice(tmp_path):
    samples = np.stack([np.array(SAMPLES_16, np.uint16), np.full(12, 65535, np.uint16)], axis=-1).reshape(3, 4, 2)
    save_png16(tmp_path / "la16.png", samples)
    with pytest.warns(ImageWarning) as record:
        image = imageio.read_image(tmp_path / "la16.png")
    messages = " ".join(str(w.message) for w in record)
    assert "alpha" in messages and "16-bit" in messages
    np.testing.assert_array_equal(image, np.stack([expected_8(samples[:, :, 0])] * 3, axis=-1))


def test_16_bit_rgba_png(tmp_path):
    samples = np.array(SAMPLES_16 * 2, np.uint16).reshape(2, 3, 4)
    save_png16(tmp_path / "rgba16.png", samples)
    with pytest.warns(ImageWarning) as record:
        image = imageio.read_image(tmp_path / "rgba16.png")
    assert sorted(str(w.message).split(": ")[-1] for w in record) == [
        "16-bit samples reduced to 8 bits", "alpha channel dropped"]
    np.testing.assert_array_equal(image, expected_8(samples[:, :, :3]))


def test_16_bit_gray_tiff(tmp_path):
    samples = np.array(SAMPLES_16, np.uint16).reshape(4, 3)
    Image.fromarray(samples).save(tmp_path / "g16.tif")
    with pytest.warns(ImageWarning, match="16-bit"):
        image = imageio.read_image(tmp_path / "g16.tif")
    np.testing.assert_array_equal(image, np.stack([expected_8(samples)] * 3, axis=-1))


def test_reduce_16_to_8_rejects_out_of_range():
    with pytest.raises(ValueError, match="16-bit"):
        imageio.reduce_16_to_8(np.array([70000]))


def test_reading_never_modifies_the_file(tmp_path):
    path = save_png16(tmp_path / "a.png", np.array(SAMPLES_16, np.uint16).reshape(2, 2, 3))
    before = digest(path)
    with pytest.warns(ImageWarning):
        imageio.read_image(path)
    assert digest(path) == before


# Reading errors: one line, naming the file.


def assert_one_line_error(path, pattern):
    with pytest.raises(ImageError, match=pattern) as caught:
        imageio.read_image(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, TfhyperError)


def test_missing_file(tmp_path):
    assert_one_line_error(tmp_path / "absent.png", "^no such file: ")


def test_directory(tmp_path):
    assert_one_line_error(tmp_path, "is a directory, not an image$")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("not pixels\n")
    assert_one_line_error(tmp_path / "notes.png", "is not an image Pillow can read$")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert_one_line_error(tmp_path / "empty.jpg", "is not an image Pillow can read$")


@pytest.mark.parametrize("bits", [8, 16])
def test_truncated_png(tmp_path, bits):
    pixels = random_rgb((64, 64, 3), seed=9).astype(np.uint16) * (257 if bits == 16 else 1)
    data = tf.io.encode_png(tf.constant(pixels, tf.uint8 if bits == 8 else tf.uint16)).numpy()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert_one_line_error(tmp_path / "cut.png", "truncated or corrupt")


def test_truncated_jpeg(tmp_path):
    Image.fromarray(random_rgb((64, 64, 3), seed=10)).save(tmp_path / "a.jpg")
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert_one_line_error(tmp_path / "cut.jpg", "truncated or corrupt")


def test_unreadable_file(tmp_path, monkeypatch):
    # Permissions cannot be relied on to deny reading (the tests may run as root), so the denial is simulated.
    Image.new("RGB", (2, 2)).save(tmp_path / "locked.png")

    def deny(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "read_bytes", deny)
    assert_one_line_error(tmp_path / "locked.png", "permission denied$")


# Writing.


def test_write_png_round_trips_and_leaves_no_temporary_file(tmp_path):
    pixels = random_rgb((5, 7, 3), seed=11)
    imageio.write_png(tmp_path / "out.png", pixels)
    assert os.listdir(tmp_path) == ["out.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), pixels)


def test_write_png_does_not_modify_its_input(tmp_path):
    pixels = random_rgb((3, 3, 3), seed=12)
    copy = pixels.copy()
    imageio.write_png(tmp_path / "out.png", pixels)
    np.testing.assert_array_equal(pixels, copy)


@pytest.mark.parametrize(
    "array", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
              np.zeros((0, 4, 3), np.uint8)]
)
def test_write_png_rejects_other_arrays(tmp_path, array):
    with pytest.raises(ImageError, match=r"uint8 array of shape \(H, W, 3\)"):
        imageio.write_png(tmp_path / "out.png", array)
    assert os.listdir(tmp_path) == []


def test_existing_file_is_kept_without_force(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--force") as caught:
        imageio.atomic_write_bytes(tmp_path / "out.bin", b"new")
    assert isinstance(caught.value, OutputExistsError) and "\n" not in str(caught.value)
    assert (tmp_path / "out.bin").read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_force_overwrites(tmp_path):
    (tmp_path / "out.bin").write_bytes(b"old")
    imageio.atomic_write_bytes(tmp_path / "out.bin", b"new", force=True)
    assert (tmp_path / "out.bin").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_new_file_gets_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    imageio.atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o666 & ~umask


def test_missing_directory(tmp_path):
    with pytest.raises(OutputError, match="does not exist") as caught:
        imageio.atomic_write_bytes(tmp_path / "absent" / "out.bin", b"data")
    assert "\n" not in str(caught.value)
    assert os.listdir(tmp_path) == []


def test_destination_is_a_directory(tmp_path):
    (tmp_path / "out.png").mkdir()
    for force in (False, True):
        with pytest.raises(OutputError, match="is a directory"):
            imageio.write_png(tmp_path / "out.png", random_rgb((2, 2, 3)), force=force)
    assert os.listdir(tmp_path) == ["out.png"]


def test_permission_denied(tmp_path, monkeypatch):
    def deny(path, flags, mode=0o777):
        raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(OutputError, match="permission denied$"):
        imageio.atomic_write_bytes(tmp_path / "out.bin", b"data")


@pytest.mark.parametrize("existing", [False, True])
def test_failure_midway_leaves_old_state_and_no_temporary_file(tmp_path, monkeypatch, existing):
    if existing:
        (tmp_path / "out.bin").write_bytes(b"old")

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        imageio.atomic_write_bytes(tmp_path / "out.bin", b"new", force=True)
    assert os.listdir(tmp_path) == (["out.bin"] if existing else [])
    if existing:
        assert (tmp_path / "out.bin").read_bytes() == b"old"


def test_filesystem_without_hard_links(tmp_path, monkeypatch):
    def no_links(source, destination):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    imageio.atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert (tmp_path / "out.bin").read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["out.bin"]
    with pytest.raises(FileExistsError):
        imageio.atomic_write_bytes(tmp_path / "out.bin", b"other")


def test_file_appearing_meanwhile_is_not_overwritten(tmp_path, monkeypatch):
    # Another writer creates the destination between the existence check and the final step.
    real_open = os.open

    def open_and_race(path, flags, mode=0o777):
        (tmp_path / "out.bin").write_bytes(b"theirs")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", open_and_race)
    with pytest.raises(FileExistsError):
        imageio.atomic_write_bytes(tmp_path / "out.bin", b"ours")
    monkeypatch.undo()
    assert (tmp_path / "out.bin").read_bytes() == b"theirs"
    assert os.listdir(tmp_path) == ["out.bin"]
