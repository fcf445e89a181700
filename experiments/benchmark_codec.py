"""Real files against the model's own estimates, and the codec's speed, on Kodak.

    python -m experiments.benchmark_codec --model=runs/hp3/model.keras --images=../shared/data/kodak
    python -m experiments.benchmark_codec --images=../shared/data/kodak --limit=1   # speed only, fresh N=128, M=192

For every image it compares four rates of the same rounded latents:
  continuous   sum of -log2 of eq. 11 (y, float sigma) and eq. 30 (z): what training optimizes at test time
  tables       the integer coding tables with sigma from the float path (table chosen by entropy_models.scale_thresholds)
  coded        the same tables with sigma from the integer-exact h_s (what the files use)
  file         8 x the .tfh file size, header and everything included
and prints the overheads between them, then the median compress / decompress seconds (after warm-up), with the
transforms as plain graphs and compiled by XLA (`jit_compile`), in the same run.
A program that prints figures, not a test: wall-clock times depend on the machine and its load.
"""
import pathlib

import numpy as np
from absl import app, flags

from experiments.timing import median_seconds

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A saved model (.keras); default: a fresh ScaleHyperprior N=128, M=192.")
flags.DEFINE_string("images", None, "Folder of images (e.g. ../shared/data/kodak).")
flags.DEFINE_integer("limit", None, "Use only the first LIMIT images.")
flags.DEFINE_integer("repeats", 5, "Timed compress/decompress runs per image for the speed medians.")
flags.mark_flag_as_required("images")


def float_path_indexes(model, latents, tables):
    """Table indexes from sigma = h_s(z_hat) in float32 TensorFlow (what the references do)."""
    import tensorflow as tf

    z_hat = np.round(latents["z"] - tables["medians"]) + tables["medians"]
    sigma = model.hyper_synthesis(tf.constant(z_hat[None], tf.float32), (1, *latents["y"].shape)).numpy()[0]
    sigma = np.maximum(sigma, model.gaussian_conditional.scale_bound)
    return np.searchsorted(tables["thresholds"], sigma, side="left").astype(np.int32), sigma


def continuous_bits(model, latents, tables, sigma):
    """eq. 11 for y (float sigma) plus eq. 30 for z, in float64 where the closed form allows."""
    import math

    import tensorflow as tf

    upper_tail = np.vectorize(lambda t: 0.5 * math.erfc(t / math.sqrt(2)))
    a = np.abs(np.round(latents["y"]).astype(np.float64))
    p_y = upper_tail((a - 0.5) / sigma) - upper_tail((a + 0.5) / sigma)
    z_hat = np.round(latents["z"] - tables["medians"]) + tables["medians"]
    p_z = model.entropy_bottleneck.density.likelihood(tf.constant(z_hat[None], tf.float32)).numpy()
    return float(-np.log2(p_y).sum() - np.log2(p_z.astype(np.float64)).sum())


def measure(model, image):
    from tfhyper import codec, coder

    tables = model.coding_tables
    latents, symbols, segments = codec.symbols_and_segments(model, image)
    coded = sum(coder.estimate_bits(*triple) for triple in codec.coder_input(symbols, segments))
    float_indexes, sigma = float_path_indexes(model, latents, tables)
    with_float_indexes = coder.estimate_bits(symbols["z"], segments["z"].indexes, tables["z"]) + coder.estimate_bits(
        symbols["y"], float_indexes, tables["y"]
    )
    data = codec.compress(model, image)
    return {
        "pixels": image.shape[0] * image.shape[1],
        "continuous": continuous_bits(model, latents, tables, sigma),
        "tables": with_float_indexes,
        "coded": coded,
        "file": 8 * len(data),
        "data": data,
    }


def main(argv):
    del argv
    import tfhyper
    from tfhyper.imageio import read_image

    if FLAGS.model:
        model = tfhyper.load_model(FLAGS.model)
    else:
        model = tfhyper.ScaleHyperprior(128, 192)
        model.build()
    if model.coding_tables is None:
        model.update_tables()
    paths = sorted(p for p in pathlib.Path(FLAGS.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    paths = paths[: FLAGS.limit] if FLAGS.limit else paths
    rows = []
    for path in paths:
        row = measure(model, read_image(path))
        rows.append(row)
        print(
            f"{path.name}: {row['file'] / row['pixels']:.4f} bpp in the file; file vs coded estimate "
            f"{(row['file'] - row['coded']) / 8:+.1f} B ({100 * (row['file'] / row['coded'] - 1):+.3f} %), "
            f"integer vs float h_s {100 * (row['coded'] / row['tables'] - 1):+.3f} %, "
            f"tables vs continuous {100 * (row['tables'] / row['continuous'] - 1):+.3f} %"
        )
    total = {key: sum(row[key] for row in rows) for key in ("pixels", "continuous", "tables", "coded", "file")}
    print(
        f"all {len(rows)} images: {total['file'] / total['pixels']:.4f} bpp; "
        f"file vs coded estimate {100 * (total['file'] / total['coded'] - 1):+.3f} %; "
        f"integer vs float h_s {100 * (total['coded'] / total['tables'] - 1):+.3f} %; "
        f"tables vs continuous {100 * (total['tables'] / total['continuous'] - 1):+.3f} %"
    )
    image = read_image(paths[0])
    data = rows[0]["data"]
    seconds = {}
    for jit_compile in (False, True):
        seconds[jit_compile] = (median_seconds(lambda: tfhyper.compress(model, image, jit_compile), FLAGS.repeats),
                                median_seconds(lambda: tfhyper.decompress(model, data, jit_compile), FLAGS.repeats))
        print(
            f"{type(model).__name__} N={model.num_filters} M={model.latent_filters}, {paths[0].name} "
            f"({image.shape[1]}x{image.shape[0]}), XLA {'on' if jit_compile else 'off'}: compress "
            f"{seconds[jit_compile][0]:.3f} s, decompress {seconds[jit_compile][1]:.3f} s (medians of {FLAGS.repeats})"
        )
    print(f"XLA / plain: compress {seconds[True][0] / seconds[False][0]:.2f}x, "
          f"decompress {seconds[True][1] / seconds[False][1]:.2f}x the time")


if __name__ == "__main__":
    app.run(main)
