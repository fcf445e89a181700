"""Seconds per training step at the paper's setting (section 4.1), median of several steps after warm-up.

    python -m experiments.benchmark                       # ScaleHyperprior N=128, M=192, 8 x 256x256, float32
    python -m experiments.benchmark --precision=mixed_bfloat16
    python -m experiments.benchmark --jit_compile=on       # the step compiled with XLA

A program that prints figures, not a test: wall-clock time depends on the machine and its load.
"""
import time

import numpy as np
from absl import app, flags

from experiments import cli
from tfhyper import paper

FLAGS = flags.FLAGS
cli.define_run_flags(["model", "jit_compile"])  # as experiments.train has them
flags.DEFINE_integer("num_filters", 128, "N of figure 4.")
flags.DEFINE_integer("latent_filters", 192, "M of figure 4.")
flags.DEFINE_integer("batch_size", paper.BATCH_SIZE, "Crops per step (paper: 8).")
flags.DEFINE_integer("patch_size", paper.PATCH_SIZE, "Crop size (paper: 256).")
flags.DEFINE_integer("warmup", 3, "Steps run before timing (graph tracing, allocator warm-up).")
flags.DEFINE_integer("steps", 10, "Timed steps; the median is reported.")
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_bfloat16"],
    "Keras dtype policy of the transforms; entropy models always run in float32.",
)


def time_training_steps(model, batch, warmup, steps):
    """Per-step wall-clock seconds of `model.train_on_batch` (one Keras train_step graph each)."""
    for _ in range(warmup):
        model.train_on_batch(batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(batch)
        times.append(time.perf_counter() - start)
    return np.array(times)


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from tfhyper.data import dead_leaves
    from tfhyper.models import model_class
    from tfhyper.training import JIT_COMPILE

    from tfhyper.hardware import native_bfloat16, precision_warning

    warning = precision_warning(FLAGS.precision)
    if warning:
        print(f"warning: {warning}")
    native, reason = native_bfloat16()
    print(f"bfloat16 here: {'native' if native else 'emulated'} ({reason})")
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    cls = model_class(FLAGS.model)
    model = cls(FLAGS.num_filters, FLAGS.latent_filters, lmbda=paper.QUALITIES[3].lmbda_mse)
    model.compile(optimizer=keras.optimizers.Adam(paper.LEARNING_RATE), jit_compile=JIT_COMPILE[FLAGS.jit_compile])
    rng = np.random.default_rng(0)
    batch = tf.constant(np.stack([dead_leaves(FLAGS.patch_size, rng) for _ in range(FLAGS.batch_size)]))
    times = time_training_steps(model, batch, FLAGS.warmup, FLAGS.steps)
    print(
        f"{cls.__name__} N={FLAGS.num_filters} M={FLAGS.latent_filters} "
        f"batch {FLAGS.batch_size}x{FLAGS.patch_size}x{FLAGS.patch_size} {FLAGS.precision} "
        f"jit_compile={FLAGS.jit_compile} (XLA {'on' if model.jit_compile else 'off'}) "
        f"on {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads: "
        f"median {np.median(times):.3f} s/step (min {times.min():.3f}, max {times.max():.3f}, {len(times)} steps)"
    )


if __name__ == "__main__":
    app.run(main)
