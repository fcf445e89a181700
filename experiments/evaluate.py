r"""Rate and distortion of trained models on the Kodak images, measured on the files `tfhyper.compress` writes.

The paper evaluates every model on the 24 Kodak images (section 4.2): bits per pixel against PSNR and MS-SSIM
(Figure 5), side information against total rate (Figure 7), per image (appendix 6.5) and aggregated (appendix 6.4).
Rates here come from real bitstreams, never from likelihoods alone. For each model and image:

    bpp            8 * bytes of the .tfh file / pixels, container header and checksum included
    bpp_y, bpp_z   that same rate split between y_hat and z_hat (side information, Figure 7): the file's bits are
                   shared in proportion to `coder.estimate_bits` of the y and z symbols with the tables that coded
                   them (the coder interleaves both in one stream, so no byte belongs to either alone); a
                   factorized-prior model has no z, so bpp_z = 0
    bpp_estimated  the ideal code length of those symbols under the integer tables (estimate_bits), for comparison
    psnr           10 log10(255^2 / MSE) of the decoded 8-bit RGB against the original (Figure 5, top)
    ms_ssim        MS-SSIM of the decoded 8-bit RGB, and ms_ssim_db = -10 log10(1 - MS-SSIM) (Figure 5, bottom)
    encode_s, decode_s   wall time of tfhyper.compress and tfhyper.decompress

Aggregates are per model, i.e. per lambda: the mean of every column over the images, the paper's aggregation for
its PSNR curves (appendix 6.4, `rd.aggregate_by_parameter`).

    python -m experiments.evaluate --models=runs/hyperprior-mse-q3,model.keras --output=results/evaluate.csv

writes the per-image rows to --output and, beside it with the suffix .json, each model's settings (class, N, M,
lambda, distortion, fingerprint) and aggregates. Images come from --images, else from --kodak, else the Kodak set is
downloaded once into --cache_dir, each file checked against its md5.
"""
import hashlib
import os
import pathlib
import sys
import time
import urllib.error
import urllib.request

from absl import flags
from tqdm import tqdm

from experiments import cli
from experiments.inputs import check_images, load_images, load_models
from experiments.results import EVALUATION_COLUMNS, check_outputs, json_path, write_results
from tfhyper import codec, coder, rd
from tfhyper.imageio import atomic_write_bytes
from tfhyper.losses import ms_ssim_db, ms_ssim_uint8, psnr_uint8
from tfhyper.models import CompressionModel

COLUMNS = EVALUATION_COLUMNS  # the keys of the rows `evaluate_models` returns
AGGREGATED_COLUMNS = COLUMNS[5:]

# The Kodak Lossless True Color Image Suite (Eastman Kodak, 1993), the paper's test set (section 4.2), from its
# public home. Plain HTTP is what that site serves; the md5 of every file is checked before it is kept.
KODAK_URL = "http://r0k.us/graphics/kodak/kodak/"
KODAK_MD5 = {
    "kodim01.png": "02abfa3bf18ae21ed932bfcdb15a1fa9",
    "kodim02.png": "b9092ba16d8fa44967ef3b1351af1559",
    "kodim03.png": "c365268cc1e0afcd68eaf421eadebc82",
    "kodim04.png": "c1cb79f2256beace37724dda67a247b8",
    "kodim05.png": "5cac931933f9304457042a0000c42429",
    "kodim06.png": "633dfca900df851d3cbd2438660accd0",
    "kodim07.png": "70b7e0b612e50f4d9da6c02ea4f06910",
    "kodim08.png": "ceb5bb8b3aeaee454a9a422dd8b9470b",
    "kodim09.png": "66f5667e9afc6184e8af953b559403e5",
    "kodim10.png": "58961ea985c508fb8f3229d406fd6b19",
    "kodim11.png": "d827aad59e17120880986c932c160113",
    "kodim12.png": "97239b0c0b2df2425e2c7e73e905efbf",
    "kodim13.png": "2070d64c0957776791bce41c1a01a387",
    "kodim14.png": "c0798cde7b20cf51c954736c160bd403",
    "kodim15.png": "d97b760064e592489695234d392247be",
    "kodim16.png": "fbedf7f4e8b39e1a67132b8bc6e8e4d7",
    "kodim17.png": "e13ea68bbc03805901881c4256cbafaa",
    "kodim18.png": "e8de0c990dd993d6a02cd9ec7118fdeb",
    "kodim19.png": "e9641bc6f3a50775ca33ca73de80d81c",
    "kodim20.png": "c3c611b8b25732c9a70f2efc82f9d0d5",
    "kodim21.png": "d11b562b985a0b379ef4c133ceba27b4",
    "kodim22.png": "6f7b80b0faf37eade33d362fda9050b9",
    "kodim23.png": "1d3955f7cbf7eef0b49c2cb3e136d31f",
    "kodim24.png": "e56e3be0b6c6331410a4cefca2134833",
}
DOWNLOAD_TIMEOUT_S = 60


# --- measuring ---------------------------------------------------------------------------------------------


def latent_bits(model, image):
    """Ideal code lengths in bits of the symbols `compress` codes, {"y": .., "z": ..}, under the model's tables.

    The segments are those of `codec.symbols_and_segments`, named by latent; a model without side information
    codes y alone, so its z costs nothing.
    """
    _, symbols, segments = codec.symbols_and_segments(model, image)
    bits = {"z": 0.0}
    for name, segment in segments.items():
        bits[name] = coder.estimate_bits(symbols[name], segment.indexes, segment.tables)
    return bits


def measure(model, image):
    """One image through one model: the numeric COLUMNS from the real file, its decoding and its latents."""
    start = time.perf_counter()
    data = codec.compress(model, image)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    decoded = codec.decompress(model, data)
    decode_s = time.perf_counter() - start
    height, width = image.shape[:2]
    pixels = height * width
    bpp = 8.0 * len(data) / pixels
    estimated = latent_bits(model, image)
    estimated_total = estimated["y"] + estimated["z"]
    # Header, checksum and coder overhead are shared like the payload, so bpp_y + bpp_z is the file's rate.
    bpp_z = bpp * estimated["z"] / estimated_total if estimated_total else 0.0
    ms_ssim = ms_ssim_uint8(image, decoded)
    return {
        "height": height,
        "width": width,
        "bytes": len(data),
        "bpp": bpp,
        "bpp_y": bpp - bpp_z,
        "bpp_z": bpp_z,
        "bpp_estimated": estimated_total / pixels,
        "psnr": psnr_uint8(image, decoded),
        "ms_ssim": ms_ssim,
        "ms_ssim_db": float(ms_ssim_db(ms_ssim)),
        "encode_s": encode_s,
        "decode_s": decode_s,
    }


def evaluate_models(models, images, progress=True):
    """Per-image rows (dicts with keys COLUMNS) of every model on every image, in model, image order.

    models: mapping name -> tfhyper model (any kind of `tfhyper.models.MODELS`, with coding tables, e.g. from `load_model`).
    images: mapping name -> uint8 array (H, W, 3), each side at least MS_SSIM_MIN_SIDE (161) pixels.
    """
    if not models:
        raise ValueError("no models given")
    for name, model in models.items():
        if not isinstance(model, CompressionModel):
            raise ValueError(f"model {name!r} is a {type(model).__name__}, not a tfhyper model")
    check_images(images)
    jobs = [(model, image) for model in models for image in images]
    rows, warm = [], set()
    for model, image in tqdm(jobs, desc="evaluate", unit="image", disable=not progress):
        if model not in warm:
            warm_up(models[model], images[image])
            warm.add(model)
        rows.append({"model": model, "image": image, **measure(models[model], images[image])})
    return rows


def warm_up(model, image):
    """One untimed round trip: a model's first call traces its graphs, which would count in the first timings."""
    codec.decompress(model, codec.compress(model, image))


def model_settings(model):
    """What a model's rows depend on besides the images: its kind and class, N and M (Figure 4), lambda and D (eq. 10)."""
    return {
        "kind": model.KIND,
        "class": type(model).__name__,
        "N": model.num_filters,
        "M": model.latent_filters,
        "lambda": model.lmbda,
        "distortion": model.distortion,
        "fingerprint": model.fingerprint().hex(),
    }


def aggregate(rows):
    """Mean of every AGGREGATED_COLUMNS column per model, over its images (lambda aggregation, appendix 6.4)."""
    means = {}
    for column in AGGREGATED_COLUMNS:
        names, _, values = rd.aggregate_by_parameter(rows, "model", "bpp", column)
        for name, value in zip(names.tolist(), values.tolist()):
            means.setdefault(name, {"images": sum(row["model"] == name for row in rows)})[column] = value
    return means


def summarize(rows, models):
    """name -> {"settings": model_settings, "aggregate": means over the images}, in the order of `rows`."""
    means = aggregate(rows)
    names = dict.fromkeys(row["model"] for row in rows)
    return {name: {"settings": model_settings(models[name]), "aggregate": means[name]} for name in names}


# --- the image set -----------------------------------------------------------------------------------------


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "tfhyper" / "kodak"


def fetch_url(url):
    """The bytes at `url`; an OSError with one line when the machine is offline or the server fails."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise OSError(f"cannot download {url} ({reason}); give an image folder with --images or --kodak") from None


def _md5(data):
    return hashlib.md5(data).hexdigest()


def download_kodak(cache_dir, fetch=fetch_url, progress=True):
    """The Kodak folder in `cache_dir`, downloading the files it lacks; every file must match KODAK_MD5.

    A downloaded file is kept only when its md5 matches. A cached file that does not match is an error, not
    replaced, so that nothing the user put there is overwritten.
    """
    cache_dir = pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for name, expected in tqdm(KODAK_MD5.items(), desc="Kodak", unit="image", disable=not progress):
        path = cache_dir / name
        if path.exists():
            if _md5(path.read_bytes()) != expected:
                raise ValueError(f"{path} is not the Kodak image {name} (md5 differs); remove it to download it again")
            continue
        data = fetch(KODAK_URL + name)
        if _md5(data) != expected:
            raise ValueError(f"the downloaded {name} has md5 {_md5(data)}, expected {expected}; it was not kept")
        atomic_write_bytes(path, data)
    return cache_dir


def resolve_images(images_dir=None, kodak_dir=None, cache_dir=None, limit=None, progress=True):
    """name -> uint8 image: from `images_dir`, else `kodak_dir`, else the Kodak set downloaded into `cache_dir`."""
    folder = images_dir or kodak_dir or download_kodak(cache_dir or default_cache_dir(), progress=progress)
    return load_images(folder, limit)


# --- the table ---------------------------------------------------------------------------------------------


def format_table(summary):
    """A compact text table of the per-model aggregates."""
    lines = [f"{'model':<28} {'N':>4} {'M':>4} {'lambda':>8} {'bpp':>7} {'bpp_z':>7} {'PSNR':>6} {'MS-SSIM dB':>10}"]
    for name, entry in summary.items():
        settings, means = entry["settings"], entry["aggregate"]
        lines.append(
            f"{name:<28} {settings['N']:>4} {settings['M']:>4} {settings['lambda']:>8.4g} {means['bpp']:>7.4f} "
            f"{means['bpp_z']:>7.4f} {means['psnr']:>6.2f} {means['ms_ssim_db']:>10.2f}"
        )
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------------------


def define_image_flags():
    """Flags choosing the evaluation images, shared with the sweep."""
    flags.DEFINE_string("kodak", None, "Folder holding the Kodak images (kodim01..24.png). When no image folder is "
                        "given, the set is downloaded once into --cache_dir, each file checked against its known md5.")
    flags.DEFINE_string("cache_dir", None, "Where a downloaded Kodak set is kept "
                        "(default: $XDG_CACHE_HOME/tfhyper/kodak, or ~/.cache/tfhyper/kodak).")
    flags.DEFINE_integer("limit", None, "Use only the first LIMIT images (sorted by name).", lower_bound=1)


def define_flags():
    """The command line's flags; defined on demand so that importing this module adds none to other programs."""
    flags.DEFINE_list("models", None, "Models to evaluate: saved .keras files, run directories holding model.keras, "
                      "or zoo:NAME (python -m tfhyper zoo lists the names).")
    flags.DEFINE_string("images", None, "Folder of images to evaluate on (default: --kodak).")
    define_image_flags()
    flags.DEFINE_string("output", "results/evaluate.csv", "Per-image CSV; the JSON with settings and aggregates "
                        "goes beside it with the suffix .json.")
    flags.DEFINE_bool("overwrite", False, "Replace existing result files.")
    flags.mark_flag_as_required("models")


def main(options):
    """Evaluate --models on the images and write the results files."""
    try:
        check_outputs(options.output, options.overwrite)
        models = load_models(options.models)
        images = resolve_images(options.images, options.kodak, options.cache_dir, options.limit)
        rows = evaluate_models(models, images)
        summary = summarize(rows, models)
        write_results(options.output, rows, summary, overwrite=options.overwrite)
    except (ValueError, OSError) as error:  # Bad flags, files, images or destinations: one line, no traceback.
        sys.exit(f"evaluate: {error}")
    print(format_table(summary))
    print(f"wrote {len(rows)} rows to {options.output} and {json_path(options.output)}")


if __name__ == "__main__":
    cli.run(main, define_flags)
