"""Speed of the training data pipeline (section 4.1's random crops), and how much of a training step waits for it.

    python -m experiments.benchmark_data                                   # synthetic dead leaves, 256x256
    python -m experiments.benchmark_data --data=../shared/data/train --patch_size=128 --num_filters=32 --latent_filters=48

Prints medians over the repeats: seconds per dead-leaves image (`tfhyper.data.dead_leaves`), crops per second out of
`make_dataset` on its own, and, for a model of the given size, seconds per training step on one batch held in memory
against steps fed by the pipeline: the difference is the share of a step spent waiting for data.

A program that prints figures, not a test: wall-clock time depends on the machine and its load.
"""
import numpy as np
from absl import app, flags

from experiments import cli
from experiments.timing import median_seconds
from tfhyper import paper

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Folder or glob of training photos; default: the built-in dead-leaves images.")
flags.DEFINE_integer("patch_size", paper.PATCH_SIZE, "Crop size (paper: 256).")
flags.DEFINE_integer("batch_size", paper.BATCH_SIZE, "Crops per batch (paper: 8).")
flags.DEFINE_integer("batches", 20, "Batches drawn per timed pass of the pipeline.")
flags.DEFINE_integer("repeats", 5, "Timed passes; medians are reported.")
cli.define_run_flags(["model"])  # as experiments.train has it
flags.DEFINE_integer("num_filters", 128, "N of figure 4.")
flags.DEFINE_integer("latent_filters", 192, "M of figure 4.")
flags.DEFINE_integer("steps", 10, "Training steps per timed pass in the waiting-share measurement (0: skip it).")


def main(argv):
    del argv
    import keras

    from tfhyper import data
    from tfhyper.training import RunConfig, build_model

    rng = np.random.default_rng(0)
    leaves = median_seconds(lambda: data.dead_leaves(FLAGS.patch_size, rng), FLAGS.repeats)
    print(f"dead_leaves({FLAGS.patch_size}): median {leaves * 1e3:.1f} ms per image")

    source = FLAGS.data or "dead leaves"
    batches = iter(data.make_dataset(FLAGS.data, patch_size=FLAGS.patch_size, batch_size=FLAGS.batch_size, seed=0))
    draw = lambda: [next(batches) for _ in range(FLAGS.batches)]  # noqa: E731
    pipeline = median_seconds(draw, FLAGS.repeats) / FLAGS.batches
    print(f"make_dataset({source}, {FLAGS.batch_size} x {FLAGS.patch_size}x{FLAGS.patch_size}): "
          f"median {FLAGS.batch_size / pipeline:.1f} crops/s ({pipeline * 1e3:.1f} ms per batch)")
    if FLAGS.steps <= 0:
        return

    config = RunConfig(model=FLAGS.model, num_filters=FLAGS.num_filters, latent_filters=FLAGS.latent_filters,
                       quality=3, patch_size=FLAGS.patch_size, batch_size=FLAGS.batch_size)
    model = build_model(config)
    model.compile(optimizer=keras.optimizers.Adam(paper.LEARNING_RATE))
    batch = next(batches)
    held = median_seconds(lambda: [model.train_on_batch(batch) for _ in range(FLAGS.steps)], FLAGS.repeats)
    fed = median_seconds(lambda: [model.train_on_batch(next(batches)) for _ in range(FLAGS.steps)], FLAGS.repeats)
    held, fed = held / FLAGS.steps, fed / FLAGS.steps
    waiting = max(0.0, fed - held) / fed
    print(f"{type(model).__name__} N={FLAGS.num_filters} M={FLAGS.latent_filters}: median {held:.3f} s/step on a batch "
          f"in memory, {fed:.3f} s/step fed by the pipeline: {100 * waiting:.0f} % of a step waits for data")


if __name__ == "__main__":
    app.run(main)
