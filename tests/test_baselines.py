"""Classical codec baselines: rates from the real encoded bytes, distortions against independent computations."""
import csv
import dataclasses
import io
import logging
import os
import subprocess
import sys

import numpy as np
import pillow_heif
import pytest
from conftest import KODAK_CROP_SIDE as SIDE
from PIL import Image

from experiments import baselines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




# --- independent specification of each configuration: Pillow / pillow-heif called directly -----------------


def _pillow_bytes(image, image_format, **options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _heif_bytes(image, quality, chroma):
    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(image)).save(
        buffer, format="HEIF", quality=quality, chroma=chroma, enc_params={"preset": "slow", "tune": "ssim"}
    )
    return buffer.getvalue()


def _pillow_pixels(data):
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _heif_pixels(data):
    return np.asarray(pillow_heif.open_heif(io.BytesIO(data)).to_pillow().convert("RGB"))


REFERENCE = {
    "jpeg420": ((10, 75), lambda x, q: _pillow_bytes(x, "JPEG", quality=q, subsampling="4:2:0"), _pillow_pixels),
    "jpeg444": ((50,), lambda x, q: _pillow_bytes(x, "JPEG", quality=q, subsampling="4:4:4"), _pillow_pixels),
    "webp": ((0, 60), lambda x, q: _pillow_bytes(x, "WEBP", quality=q, method=4), _pillow_pixels),
    "jpeg2000": (
        (0.25, 1.0),
        lambda x, bpp: _pillow_bytes(
            x, "JPEG2000", quality_mode="rates", quality_layers=[24 / bpp], irreversible=True, mct=1, no_jp2=True
        ),
        _pillow_pixels,
    ),
    "avif": ((30,), lambda x, q: _pillow_bytes(x, "AVIF", quality=q, subsampling="4:4:4", speed=6), _pillow_pixels),
    "hevc444": ((20, 45), lambda x, q: _heif_bytes(x, q, "444"), _heif_pixels),
    "hevc420": ((30,), lambda x, q: _heif_bytes(x, q, "420"), _heif_pixels),
}


def test_every_codec_has_an_independent_reference():
    assert set(REFERENCE) == set(baselines.CODECS)


# --- an independent MS-SSIM (Wang, Simoncelli & Bovik 2003), numpy, float64 ---------------------------------

MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


def _gaussian_blur_valid(channel, size=11, sigma=1.5):
    taps = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
    taps /= taps.sum()
    windows = np.lib.stride_tricks.sliding_window_view(channel, size, axis=0)
    rows = windows @ taps
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=1) @ taps


def _ssim_terms(x, y, max_value=255.0):
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mx, my = _gaussian_blur_valid(x), _gaussian_blur_valid(y)
    vx = _gaussian_blur_valid(x * x) - mx * mx
    vy = _gaussian_blur_valid(y * y) - my * my
    cov = _gaussian_blur_valid(x * y) - mx * my
    luminance = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    contrast_structure = (2 * cov + c2) / (vx + vy + c2)
    return np.mean(luminance * contrast_structure), np.mean(contrast_structure)


def _ms_ssim_numpy(a, b):
    """MS-SSIM per channel over five scales (2x2 mean downsampling), then the mean over the channels."""
    per_channel = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        value = 1.0
        for scale, weight in enumerate(MS_SSIM_WEIGHTS):
            ssim, cs = _ssim_terms(x, y)
            value *= max(ssim if scale == len(MS_SSIM_WEIGHTS) - 1 else cs, 0.0) ** weight
            x = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).mean(axis=(1, 3))
            y = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
        per_channel.append(value)
    return float(np.mean(per_channel))


def _psnr_numpy(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


# --- measurements ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", sorted(REFERENCE))
def test_rows_match_independent_encodes_and_metrics(crops, codec):
    qualities, encode, decode = REFERENCE[codec]
    originals = {name: image.copy() for name, image in crops.items()}
    rows = baselines.run_baselines(crops, [codec], {codec: qualities}, progress=False)
    for name, image in crops.items():
        np.testing.assert_array_equal(image, originals[name])
    assert [(r["codec"], r["quality"], r["image"]) for r in rows] == [
        (codec, q, name) for q in qualities for name in crops
    ]
    for row in rows:
        image = crops[row["image"]]
        data = encode(image, row["quality"])
        assert (row["height"], row["width"], row["bytes"]) == (SIDE, SIDE, len(data))
        assert row["bpp"] == 8 * len(data) / (SIDE * SIDE)
        decoded = decode(data)
        assert row["psnr"] == pytest.approx(_psnr_numpy(image, decoded), abs=1e-9)
        assert row["ms_ssim"] == pytest.approx(_ms_ssim_numpy(image, decoded), abs=5e-6)
        assert row["ms_ssim_db"] == pytest.approx(-10 * np.log10(1 - row["ms_ssim"]), rel=1e-9)
        assert row["encode_s"] > 0 and row["decode_s"] > 0
        # Lossy, but not garbage.
        assert 20 < row["psnr"] < 60 and 0.5 < row["ms_ssim"] < 1


def test_numpy_ms_ssim_is_one_for_identical_images_and_falls_with_noise(crops):
    image = crops["kodim05"]
    assert _ms_ssim_numpy(image, image) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    assert _ms_ssim_numpy(image, noisy) < 0.99


def test_default_sweeps_are_increasing_in_rate(crops):
    # One image, every default setting of the two fast codecs: the settings are ordered from low to high rate.
    image = {"kodim23": crops["kodim23"]}
    for codec in ("jpeg420", "jpeg2000"):
        rows = baselines.run_baselines(image, [codec], progress=False)
        assert [row["quality"] for row in rows] == list(baselines.CODECS[codec].qualities)
        assert np.all(np.diff([row["bpp"] for row in rows]) > 0)


def test_aggregate_averages_every_column_over_images(crops):
    rows = baselines.run_baselines(crops, ["jpeg420", "webp"], [20, 70], progress=False)
    table = baselines.aggregate(rows)
    assert [(entry["codec"], entry["quality"]) for entry in table] == [
        ("jpeg420", 20), ("jpeg420", 70), ("webp", 20), ("webp", 70)
    ]
    for entry in table:
        group = [r for r in rows if (r["codec"], r["quality"]) == (entry["codec"], entry["quality"])]
        assert entry["images"] == len(group) == 2
        for column in ("bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s"):
            assert entry[column] == pytest.approx(sum(r[column] for r in group) / 2, rel=1e-12), column


def test_missing_codec_support_is_skipped_with_one_log_line(crops, monkeypatch, caplog):
    unavailable = dataclasses.replace(baselines.CODECS["avif"], missing=lambda: "no AVIF in this build")
    monkeypatch.setitem(baselines.CODECS, "avif", unavailable)
    with caplog.at_level(logging.WARNING):
        rows = baselines.run_baselines(crops, ["avif", "jpeg444"], [40], progress=False)
    assert {row["codec"] for row in rows} == {"jpeg444"}
    skipped = [record.getMessage() for record in caplog.records if "avif" in record.getMessage()]
    assert skipped == ["skipping codec avif: no AVIF in this build"]


def test_fractional_settings_of_integer_codecs_are_refused(crops):
    with pytest.raises(ValueError, match="integer"):
        baselines.run_baselines(crops, ["jpeg420"], [10.5], progress=False)


@pytest.mark.parametrize(
    "images, codecs, message",
    [
        ({"small": np.zeros((160, 200, 3), np.uint8)}, ["jpeg420"], "at least 161"),
        ({"float": np.zeros((192, 192, 3), np.float32)}, ["jpeg420"], "uint8"),
        ({"gray": np.zeros((192, 192), np.uint8)}, ["jpeg420"], r"\(H, W, 3\)"),
        ({}, ["jpeg420"], "no images"),
        ({"ok": np.zeros((192, 192, 3), np.uint8)}, ["jpeg420", "bpg"], "unknown codec"),
    ],
)
def test_bad_input_is_one_clear_error(images, codecs, message):
    with pytest.raises(ValueError, match=message):
        baselines.run_baselines(images, codecs, progress=False)


# --- command line ------------------------------------------------------------------------------------------


def _run_cli(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "experiments.baselines", *arguments],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def test_cli_writes_per_image_and_aggregated_csv(crops, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, image in crops.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    output = tmp_path / "results" / "baselines.csv"
    result = _run_cli(f"--images={folder}", f"--output={output}", "--codecs=jpeg420,webp", "--qualities=10,50")
    assert result.returncode == 0, result.stderr
    rows = _read_csv(output)
    assert list(rows[0]) == list(baselines.COLUMNS)
    assert len(rows) == 2 * 2 * 2
    for row in rows:
        image = crops[row["image"]]
        data = REFERENCE[row["codec"]][1](image, int(row["quality"]))
        assert int(row["bytes"]) == len(data)
        assert float(row["bpp"]) == pytest.approx(8 * len(data) / SIDE**2, rel=1e-12)
        assert float(row["psnr"]) == pytest.approx(_psnr_numpy(image, _pillow_pixels(data)), abs=1e-9)
    aggregated = _read_csv(tmp_path / "results" / "baselines_aggregated.csv")
    assert list(aggregated[0]) == list(baselines.AGGREGATED_COLUMNS)
    assert len(aggregated) == 2 * 2 and all(entry["images"] == "2" for entry in aggregated)
    assert sorted(os.listdir(output.parent)) == ["baselines.csv", "baselines_aggregated.csv"]
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask


def test_importing_defines_no_flags_and_the_cli_prints_help():
    from absl import flags

    assert not flags.FLAGS.flags_by_module_dict().get(baselines.__name__)
    result = _run_cli("--help")
    # absl's --help prints the usage to stdout and exits with status 1.
    assert "--codecs" in result.stdout and "--images" in result.stdout


def test_cli_reports_a_missing_folder_in_one_line(tmp_path):
    result = _run_cli(f"--images={tmp_path / 'absent'}", f"--output={tmp_path / 'out.csv'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"baselines: image folder not found: {tmp_path / 'absent'}"
    assert not (tmp_path / "out.csv").exists()
