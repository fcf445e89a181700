r"""Classical codec baselines: rate, PSNR and MS-SSIM of each image at a sweep of quality settings.

The conventional codecs of the paper's Figures 5, 10 and 11 (JPEG, WebP, JPEG 2000, and HEVC intra, the codec
inside BPG), plus AVIF, run in memory through Pillow and pillow-heif (libheif with x265), no external programs.
For each codec, setting and image: bits per pixel from the encoded byte count (container included), PSNR and
MS-SSIM of the decoded 8-bit RGB against the original, and encode/decode wall time. The aggregated table averages
every column over the images sharing a setting, the paper's aggregation for PSNR curves (appendix 6.4).

    python -m experiments.baselines --images=DIR --output=results/baselines.csv \
        --codecs=jpeg420,jpeg444,webp,jpeg2000,avif,hevc444

writes the per-image rows to --output and the aggregated rows beside it (`baselines_aggregated.csv`).
"""
import dataclasses
import io
import pathlib
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from absl import flags, logging
from PIL import Image, features
from tqdm import tqdm

try:
    import pillow_heif
except ImportError:  # Optional: only the HEVC baselines need it, and they are skipped without it.
    pillow_heif = None

from experiments import cli
from experiments.inputs import check_images, load_images
from experiments.results import write_csv
from tfhyper import rd
from tfhyper.losses import ms_ssim_db, ms_ssim_uint8, psnr_uint8

COLUMNS = ("codec", "quality", "image", "height", "width", "bytes", "bpp", "psnr", "ms_ssim", "ms_ssim_db",
           "encode_s", "decode_s")
AGGREGATED_COLUMNS = ("codec", "quality", "images", "bpp", "psnr", "ms_ssim", "ms_ssim_db", "encode_s", "decode_s")


@dataclasses.dataclass(frozen=True)
class Codec:
    """One codec configuration: what its quality setting means, its default sweep, and how to run it."""

    description: str
    qualities: tuple
    encode: Callable[[np.ndarray, float], bytes]  # uint8 (H, W, 3) RGB, setting -> encoded bytes
    decode: Callable[[bytes], np.ndarray]  # encoded bytes -> uint8 (H, W, 3) RGB
    missing: Callable[[], str | None]  # why this machine cannot run the codec, or None


# --- Pillow codecs (JPEG, WebP, JPEG 2000, AVIF) -----------------------------------------------------------


def _integer(setting):
    """An integer quality setting; a fractional one is refused rather than silently truncated."""
    if setting != int(setting):
        raise ValueError(f"this codec's quality setting is an integer, got {setting!r}")
    return int(setting)


def _pillow_encode(image, image_format, options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _pillow_decode(data):
    with Image.open(io.BytesIO(data)) as decoded:
        return np.asarray(decoded.convert("RGB"))


def _pillow_codec(description, image_format, feature, qualities, options):
    """A codec Pillow encodes as `image_format` with keyword options `options(quality)`."""
    return Codec(
        description=description,
        qualities=qualities,
        encode=lambda image, quality: _pillow_encode(image, image_format, options(quality)),
        decode=_pillow_decode,
        missing=lambda: None if features.check(feature) else f"this Pillow build has no {feature} support",
    )


# --- HEVC intra through libheif / x265 (the codec inside BPG) ----------------------------------------------


def _heif_encode(image, quality, chroma):
    buffer = io.BytesIO()
    heif = pillow_heif.from_bytes("RGB", (image.shape[1], image.shape[0]), np.ascontiguousarray(image).tobytes())
    # libheif's x265 defaults, pinned: BPG also runs x265 with tune=ssim.
    heif.save(buffer, format="HEIF", quality=_integer(quality), chroma=chroma,
              enc_params={"preset": "slow", "tune": "ssim"})
    return buffer.getvalue()


def _heif_decode(data):
    decoded = pillow_heif.read_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
    if decoded.mode != "RGB":
        raise RuntimeError(f"HEIF decoder returned mode {decoded.mode}, expected RGB")
    return np.asarray(decoded)


def _heif_missing():
    if pillow_heif is None:
        return "pillow-heif is not installed (pip install pillow-heif)"
    if not pillow_heif.libheif_info().get("HEIF"):
        return "this pillow-heif build has no HEVC (x265) encoder"
    return None


def _heif_codec(description, chroma, qualities):
    return Codec(
        description=description,
        qualities=qualities,
        encode=lambda image, quality: _heif_encode(image, quality, chroma),
        decode=_heif_decode,
        missing=_heif_missing,
    )


# Default sweeps span roughly 0.1 to 2 bpp averaged over Kodak (JPEG cannot go much below 0.2 bpp).
JPEG_QUALITIES = (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 85, 90)
WEBP_QUALITIES = (0, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 85, 90)
JPEG2000_RATES = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
AVIF_QUALITIES = (5, 10, 20, 30, 40, 45, 50, 55, 60, 70, 80, 85)
HEVC_QUALITIES = (10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60)

CODECS = {
    "jpeg420": _pillow_codec(
        "JPEG (libjpeg), 4:2:0; setting = Pillow quality", "JPEG", "jpg", JPEG_QUALITIES,
        lambda q: {"quality": _integer(q), "subsampling": "4:2:0"},
    ),
    "jpeg444": _pillow_codec(
        "JPEG (libjpeg), 4:4:4; setting = Pillow quality", "JPEG", "jpg", JPEG_QUALITIES,
        lambda q: {"quality": _integer(q), "subsampling": "4:4:4"},
    ),
    "webp": _pillow_codec(
        "WebP (libwebp, lossy, method 4); setting = quality", "WEBP", "webp", WEBP_QUALITIES,
        lambda q: {"quality": _integer(q), "method": 4},
    ),
    "jpeg2000": _pillow_codec(
        # OpenJPEG's "rates" are compression ratios against the 24-bit RGB input.
        "JPEG 2000 (OpenJPEG, 9/7 wavelet, colour transform, codestream); setting = target bpp", "JPEG2000",
        "jpg_2000", JPEG2000_RATES,
        lambda bpp: {"quality_mode": "rates", "quality_layers": [24.0 / bpp], "irreversible": True, "mct": 1,
                     "no_jp2": True},
    ),
    "avif": _pillow_codec(
        "AVIF (libavif), 4:4:4, speed 6; setting = quality", "AVIF", "avif", AVIF_QUALITIES,
        lambda q: {"quality": _integer(q), "subsampling": "4:4:4", "speed": 6},
    ),
    "hevc444": _heif_codec("HEVC intra (x265 in HEIF, as in BPG), 4:4:4; setting = quality", "444", HEVC_QUALITIES),
    "hevc420": _heif_codec("HEVC intra (x265 in HEIF, as in BPG), 4:2:0; setting = quality", "420", HEVC_QUALITIES),
}


# --- measuring ---------------------------------------------------------------------------------------------


def measure(codec, image, quality):
    """Encode and decode one image: its size, rate, distortions and timings (the numeric COLUMNS) as a dict."""
    start = time.perf_counter()
    data = codec.encode(image, quality)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decode(data)
    decode_s = time.perf_counter() - start
    if decoded.shape != image.shape or decoded.dtype != np.uint8:
        raise RuntimeError(f"{codec.description}: decoded {decoded.dtype}{decoded.shape}, expected uint8{image.shape}")
    height, width = image.shape[:2]
    ms_ssim = ms_ssim_uint8(image, decoded)
    return {
        "height": height,
        "width": width,
        "bytes": len(data),
        "bpp": 8.0 * len(data) / (height * width),
        "psnr": psnr_uint8(image, decoded),
        "ms_ssim": ms_ssim,
        "ms_ssim_db": float(ms_ssim_db(ms_ssim)),
        "encode_s": encode_s,
        "decode_s": decode_s,
    }


def run_baselines(images, codecs, qualities=None, progress=True):
    """Per-image rate-distortion rows of `codecs` on `images`.

    images: mapping name -> uint8 array (H, W, 3), each side at least MS_SSIM_MIN_SIDE (161) pixels.
    codecs: names from CODECS; one whose support is missing on this machine is skipped with one logged line.
    qualities: None for each codec's default sweep, a mapping codec -> settings, or one sequence for all codecs.
    Returns a list of dicts with keys COLUMNS, in codec, setting, image order.
    """
    check_images(images)
    jobs = []
    for name in _runnable(codecs):
        jobs += [(name, quality, image) for quality in _settings(name, qualities) for image in images]
    rows = []
    for name, quality, image in tqdm(jobs, desc="baselines", unit="encode", disable=not progress):
        row = {"codec": name, "quality": quality, "image": image}
        row.update(measure(CODECS[name], images[image], quality))
        rows.append(row)
    return rows


def aggregate(rows):
    """Rows averaged over images per codec and setting (appendix 6.4): one dict of AGGREGATED_COLUMNS each.

    Every column is the mean of the per-image values, so psnr is the average PSNR and ms_ssim_db the average of the
    per-image dB values, as the paper aggregates over equal lambda.
    """
    table = []
    for codec in dict.fromkeys(row["codec"] for row in rows):
        codec_rows = [row for row in rows if row["codec"] == codec]
        settings, rates, _ = rd.aggregate_by_parameter(codec_rows, "quality", "bpp", "psnr")
        means = {}
        for column in AGGREGATED_COLUMNS[4:]:
            column_settings, _, values = rd.aggregate_by_parameter(codec_rows, "quality", "bpp", column)
            means[column] = dict(zip(column_settings.tolist(), values.tolist()))
        count = len(codec_rows) // len(settings)
        for setting, rate in zip(settings.tolist(), rates.tolist()):
            entry = {"codec": codec, "quality": setting, "images": count, "bpp": rate}
            entry.update({column: means[column][setting] for column in means})
            table.append(entry)
    return table


def _runnable(codecs):
    unknown = [name for name in codecs if name not in CODECS]
    if unknown:
        raise ValueError(f"unknown codec(s) {', '.join(unknown)}; known: {', '.join(CODECS)}")
    runnable = []
    for name in codecs:
        reason = CODECS[name].missing()
        if reason:
            logging.warning("skipping codec %s: %s", name, reason)
        else:
            runnable.append(name)
    return runnable


def _settings(name, qualities):
    if qualities is None:
        return CODECS[name].qualities
    if isinstance(qualities, Mapping):
        return tuple(qualities.get(name, CODECS[name].qualities))
    if isinstance(qualities, Sequence) and not isinstance(qualities, str):
        return tuple(qualities)
    raise ValueError("qualities must be None, a mapping codec -> settings, or a sequence of settings")


# --- files -------------------------------------------------------------------------------------------------


def aggregated_path(output):
    output = pathlib.Path(output)
    return output.with_name(f"{output.stem}_aggregated{output.suffix or '.csv'}")


# --- command line ------------------------------------------------------------------------------------------


def define_flags():
    """The command line's flags; defined on demand so that importing this module adds none to other programs."""
    flags.DEFINE_string("images", None, "Folder of images to encode (e.g. the Kodak set).")
    flags.DEFINE_string("output", "results/baselines.csv", "Per-image CSV; the aggregated table goes beside it.")
    flags.DEFINE_string("aggregated_output", None, "Aggregated CSV (default: OUTPUT with an _aggregated suffix).")
    flags.DEFINE_list("codecs", ["jpeg420", "jpeg444", "webp", "jpeg2000", "avif", "hevc444"],
                      f"Codecs to run, from: {', '.join(CODECS)}.")
    flags.DEFINE_list("qualities", None, "Settings for every listed codec (default: each codec's own sweep).")
    flags.DEFINE_integer("limit", None, "Use only the first LIMIT images (sorted by name).")
    flags.mark_flag_as_required("images")


def main(options):
    """Run --codecs on --images and write the per-image and aggregated CSVs."""
    try:
        qualities = [float(q) if "." in q else int(q) for q in options.qualities] if options.qualities else None
        images = load_images(options.images, options.limit)
        rows = run_baselines(images, options.codecs, qualities)
        aggregated = options.aggregated_output or aggregated_path(options.output)
        write_csv(options.output, rows, COLUMNS)
        write_csv(aggregated, aggregate(rows), AGGREGATED_COLUMNS)
    except (ValueError, OSError) as error:  # Bad flags, folders, images or destinations: one line, no traceback.
        sys.exit(f"baselines: {error}")
    logging.info("wrote %d rows to %s and %s", len(rows), options.output, aggregated)


if __name__ == "__main__":
    cli.run(main, define_flags)
