"""Training batches: dead leaves, image files and TFDS, crops, downsampling and saturation screening."""
import fractions
import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfhyper import data
from tfhyper.data import DatasetError

PATCH = 16


def crops(dataset):
    """All patches of a finite dataset, as uint8 arrays (the pipeline's floats are v / 255)."""
    patches = []
    for batch in dataset:
        values = batch.numpy()
        assert values.dtype == np.float32 and values.shape[1:] == (PATCH, PATCH, 3)
        assert 0.0 <= values.min() and values.max() <= 1.0
        patches.extend(np.round(values * 255.0).astype(np.uint8))
    return patches


def one_pass(source, **options):
    options = {"patch_size": PATCH, "batch_size": 1, "shuffle_buffer": 0, "repeat": False, "seed": 0, **options}
    return crops(data.make_dataset(source, **options))


def constant_colors(patches):
    """The color of each patch, which must be flat."""
    colors = []
    for patch in patches:
        assert (patch == patch[0, 0]).all(), "a crop of a flat image is not flat"
        colors.append(tuple(int(v) for v in patch[0, 0]))
    return colors


def save(path, pixels, **options):
    Image.fromarray(np.asarray(pixels)).save(path, **options)
    return path


def flat(height, width, color, dtype=np.uint8):
    return np.full((height, width, len(color)), color, dtype)


def round_16_to_8(v):
    return round(fractions.Fraction(int(v) * 255, 65535))


# Dead leaves.


def test_dead_leaves_shape_range_and_reproducibility():
    image = data.dead_leaves(64, np.random.default_rng(1))
    assert image.dtype == np.float32 and image.shape == (64, 64, 3)
    assert image.min() >= 0.0 and image.max() <= 1.0
    np.testing.assert_array_equal(image, data.dead_leaves(64, np.random.default_rng(1)))
    assert not np.array_equal(image, data.dead_leaves(64, np.random.default_rng(2)))


def test_dead_leaves_are_many_smooth_regions_with_sharp_edges():
    image = data.dead_leaves(128, np.random.default_rng(3), noise=0.0)
    steps = np.abs(np.diff(image, axis=1)).max(axis=2)
    # Inside a leaf, shading changes a pixel by at most 0.1 / r; across an edge, the colors of two leaves differ.
    # Small leaves are many, so edges are everywhere, but a good part of the image lies inside large leaves.
    assert np.quantile(steps, 0.25) < 0.01
    assert np.quantile(steps, 0.9) > 0.08
    distinct = np.unique(np.round(image[::4, ::4] * 20).reshape(-1, 3), axis=0)
    assert len(distinct) > 50


def radial_power_slope(image):
    """Slope of log power against log frequency, radially averaged, between 4 and 64 cycles per 256 pixels."""
    gray = image.mean(axis=2) - image.mean()
    power = np.abs(np.fft.fft2(gray)) ** 2
    size = gray.shape[0]
    frequency = np.fft.fftfreq(size) * size
    radius = np.hypot(frequency[:, None], frequency[None, :])
    bands = np.arange(size // 64, size // 4 + 1)
    mean_power = [power[np.abs(radius - band) < 0.5].mean() for band in bands]
    return np.polyfit(np.log(bands), np.log(mean_power), 1)[0]


def test_dead_leaves_power_spectrum_is_natural():
    rng = np.random.default_rng(4)
    slope = np.mean([radial_power_slope(data.dead_leaves(256, rng)) for _ in range(3)])
    # Natural images fall off as f^-alpha with alpha near 2 (Field 1987; van der Schaaf & van Hateren 1996).
    assert -2.8 < slope < -1.6
    # The estimator separates white noise (alpha 0) from that range.
    assert abs(radial_power_slope(rng.random((256, 256, 3)))) < 0.3


@pytest.mark.parametrize("size, r_max", [(40, 40.0), (48, 12.0), (32, 80.0)])
def test_visible_leaf_is_the_topmost_covering_one(size, r_max):
    radii, centers = data._falling_leaves(size, 1.0, r_max, tf.constant([7, size], tf.int64))
    top = data._topmost_leaf(size, radii, centers).numpy()
    radii, centers = radii.numpy(), centers.numpy()
    # Painter's algorithm, bottom leaf first, on the same leaves.
    rows, columns = np.mgrid[0:size, 0:size]
    expected = np.full((size, size), len(radii))
    for leaf in range(len(radii) - 1, -1, -1):
        expected[(columns - centers[leaf, 0]) ** 2 + (rows - centers[leaf, 1]) ** 2 <= radii[leaf] ** 2] = leaf
    np.testing.assert_array_equal(top, expected)
    assert len(np.unique(top)) > 10


@pytest.mark.parametrize(
    "size, radius_range", [(0, (1.0, None)), (2.5, (1.0, None)), (8, (0.0, None)), (8, (5.0, 2.0))])
def test_dead_leaves_rejects_bad_arguments(size, radius_range):
    with pytest.raises(ValueError):
        data.dead_leaves(size, np.random.default_rng(0), radius_range=radius_range)


def test_synthetic_batches():
    first = next(iter(data.make_dataset(None, patch_size=32, batch_size=4, seed=3))).numpy()
    assert first.shape == (4, 32, 32, 3) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert not np.array_equal(first[0], first[1])
    again = next(iter(data.make_dataset("synthetic", patch_size=32, batch_size=4, seed=3))).numpy()
    np.testing.assert_array_equal(first, again)


def test_a_process_using_the_pipelines_exits(tmp_path):
    # Python code running in tf.data's threads makes an exiting process hang; the pipelines must not need it.
    save(tmp_path / "a.tif", flat(20, 20, (1, 2, 3)))
    script = textwrap.dedent(
        f"""
        from tfhyper import data
        for source in (None, {str(tmp_path)!r}):
            next(iter(data.make_dataset(source, patch_size=16, batch_size=2)))
        print("done")
        """
    )
    repository = pathlib.Path(__file__).resolve().parents[1]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repository), os.environ.get("PYTHONPATH", "")])}
    finished = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=environment)
    assert finished.returncode == 0 and "done" in finished.stdout, finished.stderr[-2000:]


# Files: formats, crops, skipping.


def test_every_format_gives_crops_of_its_own_colors(tmp_path):
    expected = {}
    expected[save(tmp_path / "rgb.png", flat(20, 24, (10, 200, 30)))] = (10, 200, 30)
    expected[save(tmp_path / "gray.png", flat(18, 30, (77,))[:, :, 0])] = (77, 77, 77)
    expected[save(tmp_path / "rgba.png", flat(16, 16, (120, 40, 220, 0)))] = (120, 40, 220)
    palette = Image.fromarray(np.full((17, 19), 3, np.uint8), mode="P")
    palette.putpalette([0, 0, 0] * 3 + [33, 66, 99] + [0, 0, 0] * 252)
    palette.save(tmp_path / "palette.png", transparency=3)
    expected[tmp_path / "palette.png"] = (33, 66, 99)
    rgb16 = (129, 32768, 65407)
    (tmp_path / "rgb16.png").write_bytes(tf.io.encode_png(flat(20, 20, rgb16, np.uint16)).numpy())
    expected[tmp_path / "rgb16.png"] = tuple(round_16_to_8(v) for v in rgb16)
    expected[save(tmp_path / "gray16.png", flat(20, 21, (386,), np.uint16)[:, :, 0])] = (2, 2, 2)
    expected[save(tmp_path / "a.tif", flat(22, 20, (5, 6, 7)))] = (5, 6, 7)
    expected[save(tmp_path / "a.webp", flat(20, 20, (90, 91, 92)), lossless=True)] = (90, 91, 92)
    expected[save(tmp_path / "a.bmp", flat(20, 20, (250, 0, 125)))] = (250, 0, 125)
    expected[save(tmp_path / "a.gif", flat(20, 20, (0, 255, 0)))] = (0, 255, 0)
    expected[save(tmp_path / "a.ppm", flat(20, 20, (3, 33, 133)))] = (3, 33, 133)
    assert sorted(constant_colors(one_pass(tmp_path))) == sorted(expected.values())


def test_jpeg_crops(tmp_path):
    save(tmp_path / "a.jpg", flat(40, 30, (200, 100, 50)), quality=95)
    save(tmp_path / "gray.jpg", flat(40, 30, (60,))[:, :, 0], quality=95)
    patches = one_pass(tmp_path)
    assert len(patches) == 2
    # JPEG moves a flat color by a few levels at most.
    targets = np.array([(200, 100, 50), (60, 60, 60)])
    for patch in patches:
        assert np.abs(patch.astype(int) - targets[:, None, None, :]).max(axis=(1, 2, 3)).min() <= 3


def test_crops_are_windows_of_the_image(tmp_path):
    height, width = 40, 60
    rows, columns = np.mgrid[0:height, 0:width]
    image = np.stack([columns * 4, rows * 6, np.full_like(rows, 50)], axis=-1).astype(np.uint8)
    save(tmp_path / "ramp.png", image)
    dataset = data.make_dataset(tmp_path, patch_size=PATCH, batch_size=8, seed=1)
    corners = set()
    for patch in crops(dataset.take(5)):
        left, top = patch[0, 0, 0] // 4, patch[0, 0, 1] // 6
        np.testing.assert_array_equal(patch, image[top:top + PATCH, left:left + PATCH])
        corners.add((top, left))
    assert len(corners) > 10


def test_small_images_are_skipped_with_a_warning(tmp_path, caplog):
    save(tmp_path / "big.png", flat(PATCH, PATCH + 5, (1, 2, 3)))
    for i, shape in enumerate([(PATCH - 1, 40), (40, PATCH - 1), (1, 1)]):
        save(tmp_path / f"small{i}.png", flat(*shape, (9, 9, 9)))
    with caplog.at_level(logging.WARNING, logger="tfhyper.data"):
        colors = constant_colors(one_pass(tmp_path))
    assert colors == [(1, 2, 3)]
    assert "3 file(s) smaller than 16 x 16" in caplog.text


def test_nothing_usable_is_an_error_giving_the_counts(tmp_path):
    for i in range(3):
        save(tmp_path / f"small{i}.png", flat(8, 8, (9, 9, 9)))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DatasetError, match="3 smaller than 16 x 16 pixels, 1 not readable as images"):
        data.make_dataset(tmp_path, patch_size=PATCH)


def test_non_images_are_skipped_with_a_warning(tmp_path, caplog):
    save(tmp_path / "good.png", flat(20, 20, (4, 5, 6)))
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "README.txt").write_text("photos")
    (tmp_path / "sub").mkdir()
    save(tmp_path / "sub" / "nested.jpeg", flat(20, 20, (250, 250, 250)), quality=100)
    with caplog.at_level(logging.WARNING, logger="tfhyper.data"):
        patches = one_pass(tmp_path)
    assert len(patches) == 2
    assert "1 file(s) not readable as images" in caplog.text and "notes.png" in caplog.text
    assert "1 file(s) without an image suffix" in caplog.text and "README.txt" in caplog.text


def test_corrupt_image_data_is_skipped(tmp_path):
    save(tmp_path / "good.png", flat(20, 20, (4, 5, 6)))
    whole = tf.io.encode_png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).numpy()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    assert constant_colors(one_pass(tmp_path)) == [(4, 5, 6)]


def test_glob_and_list_sources(tmp_path):
    png = save(tmp_path / "a.png", flat(20, 20, (1, 1, 1)))
    save(tmp_path / "b.bmp", flat(20, 20, (2, 2, 2)))
    assert constant_colors(one_pass(str(tmp_path / "*.png"))) == [(1, 1, 1)]
    assert constant_colors(one_pass([png])) == [(1, 1, 1)]
    assert constant_colors(one_pass(png)) == [(1, 1, 1)]


@pytest.mark.parametrize(
    "source, message",
    [
        ("empty", "no image files in"),
        ("only_text", "no image files in"),
        ("absent", "no such file or directory"),
        ("nomatch/*.png", "no files match"),
        (["absent.png"], "does not exist"),
        ([], "empty"),
    ],
)
def test_source_errors(tmp_path, source, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    source = [str(tmp_path / p) for p in source] if isinstance(source, list) else str(tmp_path / source)
    with pytest.raises(DatasetError, match=message) as caught:
        data.make_dataset(source, patch_size=PATCH)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


def test_one_pass_keeps_the_last_partial_batch(tmp_path):
    for i in range(5):
        save(tmp_path / f"{i}.png", flat(20, 20, (i, i, i)))
    dataset = data.make_dataset(tmp_path, patch_size=PATCH, batch_size=2, repeat=False, seed=0)
    assert [len(batch) for batch in dataset] == [2, 2, 1]
    assert sorted(constant_colors(crops(dataset))) == [(i, i, i) for i in range(5)]


def test_repeating_passes_visit_every_image_in_fresh_orders(tmp_path):
    for i in range(6):
        save(tmp_path / f"{i}.png", flat(20, 20, (i, i, i)))
    # Without a crop buffer, a batch of 6 is one pass over the 6 images.
    dataset = data.make_dataset(tmp_path, patch_size=PATCH, batch_size=6, shuffle_buffer=0, seed=2)
    orders = [tuple(color[0] for color in constant_colors(crops(dataset.skip(i).take(1)))) for i in range(4)]
    assert all(sorted(order) == list(range(6)) for order in orders)
    assert len(set(orders)) > 1


def test_seed_makes_batches_reproducible(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        save(tmp_path / f"{i}.png", rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))

    def first_batches(seed):
        dataset = data.make_dataset(tmp_path, patch_size=PATCH, batch_size=4, seed=seed)
        return np.concatenate([b.numpy() for b in dataset.take(3)])

    np.testing.assert_array_equal(first_batches(5), first_batches(5))
    assert not np.array_equal(first_batches(5), first_batches(6))


def test_cache(tmp_path):
    for i in range(3):
        save(tmp_path / f"{i}.png", flat(20, 20, (i, 10, 20)))
    dataset = data.make_dataset(tmp_path, patch_size=PATCH, batch_size=3, shuffle_buffer=0, cache=True, seed=0)
    for batch in dataset.take(2):
        assert sorted(constant_colors(list(np.round(batch.numpy() * 255).astype(np.uint8)))) == [
            (0, 10, 20), (1, 10, 20), (2, 10, 20)]


# Downsampling (section 4.1).


def horizontal_steps(patches):
    """Per crop, the median step of the red channel between neighboring columns."""
    return np.array([np.median(np.diff(p[:, :, 0].astype(float), axis=1)) for p in patches])


def ramp(height, width=256):
    columns = np.broadcast_to(np.arange(width), (height, width))
    return np.stack([columns, np.zeros_like(columns), np.zeros_like(columns)], axis=-1).astype(np.uint8)


def test_downsampling_shrinks_large_images_into_the_range(tmp_path):
    save(tmp_path / "tall.png", ramp(64))
    dataset = data.make_dataset(
        tmp_path, patch_size=PATCH, batch_size=8, downsample=True, downsample_range=(20, 32), seed=0)
    steps = horizontal_steps(crops(dataset.take(6)))
    # A ramp of one level per pixel, shrunk so that 64 rows become t in [20, 32], steps 64 / t in [2, 3.2].
    assert steps.min() >= 2.0 - 0.1 and steps.max() <= 3.2 + 0.1
    assert steps.max() - steps.min() > 0.4  # The factor is random.


def test_downsampling_never_enlarges(tmp_path):
    save(tmp_path / "short.png", ramp(32))
    dataset = data.make_dataset(
        tmp_path, patch_size=PATCH, batch_size=8, downsample=True, downsample_range=(20, 32), seed=0)
    assert (horizontal_steps(crops(dataset.take(2))) == 1.0).all()


def test_downsampled_shorter_side_is_uniform_in_the_range():
    image = tf.zeros([300, 450, 3], tf.uint8)
    shape = tf.function(lambda seed: tf.shape(data._random_downsample(image, (100, 200), seed)))
    sides = np.array([shape(tf.constant([i, 0], tf.int64)).numpy()[:2] for i in range(200)])
    shorter = sides.min(axis=1)
    assert shorter.min() >= 100 and shorter.max() <= 200
    # Uniform on [100, 200]: mean 150, standard deviation 100 / sqrt(12) = 28.9; 200 draws.
    assert abs(shorter.mean() - 150) < 3 * 28.9 / np.sqrt(200)
    assert np.all(np.abs(sides[:, 1] - sides[:, 0] * 1.5) <= 1.0)


@pytest.mark.parametrize("options", [
    {"downsample": True, "downsample_range": (8, 32)}, {"downsample_range": (40, 30), "downsample": True},
    {"patch_size": 0}, {"batch_size": -1}, {"saturation_threshold": 0.0}, {"shuffle_buffer": -2}])
def test_bad_options(options):
    with pytest.raises(ValueError):
        data.make_dataset(None, **{"patch_size": PATCH, **options})


# Saturation screening (section 4.1).


def test_mean_saturation_closed_form():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (33, 42, 3), dtype=np.uint8)
    sample = image[::4, ::4].astype(float)
    high, low = sample.max(axis=2), sample.min(axis=2)
    expected = np.mean(np.where(high > 0, (high - low) / np.maximum(high, 1), 0.0))
    assert float(data.mean_saturation(tf.constant(image))) == pytest.approx(expected, abs=1e-5)
    halves = np.concatenate([flat(8, 8, (255, 0, 0)), flat(8, 8, (120, 110, 100))])
    assert float(data.mean_saturation(tf.constant(halves))) == pytest.approx((1 + 20 / 120) / 2, abs=1e-6)


def test_saturated_images_are_screened_out(tmp_path):
    save(tmp_path / "vivid.png", flat(20, 20, (255, 0, 0)))
    save(tmp_path / "muted.png", flat(20, 20, (120, 110, 100)))
    assert sorted(constant_colors(one_pass(tmp_path))) == [(120, 110, 100), (255, 0, 0)]
    assert constant_colors(one_pass(tmp_path, screen_saturation=True)) == [(120, 110, 100)]


def test_photographs_pass_the_saturation_screen(shared_dir):
    kodak = sorted((shared_dir / "data" / "kodak").glob("*.png"))
    assert len(kodak) == 24
    for path in kodak[:6]:
        image = tf.io.decode_png(tf.io.read_file(str(path)), channels=3)
        assert float(data.mean_saturation(image)) < data.SATURATION_THRESHOLD


# TensorFlow Datasets.


@pytest.mark.parametrize("spec, expected", [
    ("tfds:clic", data.TfdsSpec("clic", None, "train")),
    ("tfds:clic/2020", data.TfdsSpec("clic", "2020", "train")),
    ("tfds:div2k/bicubic_x2:validation", data.TfdsSpec("div2k", "bicubic_x2", "validation")),
    ("tfds:imagenet2012:train[:10%]", data.TfdsSpec("imagenet2012", None, "train[:10%]")),
])
def test_tfds_spec_parsing(spec, expected):
    parsed = data.parse_tfds_spec(spec)
    assert parsed == expected
    assert parsed.builder_name == spec[5:].split(":")[0]


@pytest.mark.parametrize(
    "spec", ["tfds:", "tfds:Clic", "tfds:/2020", "tfds:clic:", "tfds:clic/", "tfds:a b", "tfds:x/y/z"])
def test_bad_tfds_specs(spec):
    with pytest.raises(DatasetError, match="expected tfds:NAME"):
        data.make_dataset(spec)


def test_unknown_tfds_dataset(tmp_path):
    with pytest.raises(DatasetError, match="unknown TFDS dataset no_such_dataset_here") as caught:
        data.make_dataset("tfds:no_such_dataset_here", tfds_data_dir=str(tmp_path))
    assert "\n" not in str(caught.value)


def test_unprepared_tfds_dataset_without_download(tmp_path):
    with pytest.raises(DatasetError, match="mnist is not prepared in .* downloading is off"):
        data.make_dataset("tfds:mnist", tfds_data_dir=str(tmp_path), tfds_download=False)


class FakeBuilder:
    """Stands in for a TFDS builder: images held in memory, or a download that fails."""

    def __init__(self, images=None, error=None):
        self.images, self.error = images, error
        self.info = type("Info", (), {"features": {"image": None}})()
        self.data_dir = "nowhere"
        self.split = None

    def is_prepared(self):
        return self.error is None

    def download_and_prepare(self):
        raise self.error

    def as_dataset(self, split, shuffle_files):
        self.split = split
        return tf.data.Dataset.from_tensor_slices({"image": self.images})


@pytest.fixture
def fake_tfds(monkeypatch):
    import tensorflow_datasets as tfds

    def install(builder):
        monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: builder)
        return builder

    return install


def test_tfds_download_failure(fake_tfds):
    fake_tfds(FakeBuilder(error=ConnectionError("Temporary failure in name resolution\nmore detail")))
    with pytest.raises(DatasetError, match="could not download TFDS dataset clic: Temporary failure") as caught:
        data.make_dataset("tfds:clic")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("channels, color, expected", [(1, (70,), (70, 70, 70)), (4, (9, 8, 7, 0), (9, 8, 7))])
def test_tfds_images_are_cropped(fake_tfds, channels, color, expected):
    builder = fake_tfds(FakeBuilder(images=np.broadcast_to(np.array(color, np.uint8), (3, 20, 24, channels))))
    patches = one_pass("tfds:clic:validation")
    assert builder.split == "validation"
    assert constant_colors(patches) == [expected] * 3


# The training photographs beside the repository.


def test_training_folder_batches(shared_dir):
    dataset = data.make_dataset(shared_dir / "data" / "train" / "bsds500", seed=0)
    first, second = (batch.numpy() for batch in dataset.take(2))
    for batch in (first, second):
        assert batch.shape == (8, 256, 256, 3) and batch.dtype == np.float32
        assert 0.0 <= batch.min() and batch.max() <= 1.0
        assert batch.reshape(8, -1).std(axis=1).min() > 0.01
    assert not np.array_equal(first, second)
