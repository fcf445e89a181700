"""Seconds per training step at the paper's setting (section 4.1), median of several steps after warm-up.

    python -m experiments.benchmark                       # ScaleHyperprior N=128, M=192, 8 x 256x256, float32
    python -m experiments.benchmark --precision=mixed_bfloat16
    python -m experiments.benchmark --jit_compile=on       # the step compiled with XLA
    python -m experiments.benchmark --strategy=mirrored    # the global batch split over the local GPUs

Reports s/step and images (crops) per second, in total and per replica; --batch_size is the global batch, as in
`experiments.train`.

A program that prints figures, not a test: wall-clock time depends on the machine and its load.
"""
import numpy as np
from absl import app, flags

from experiments import cli
from experiments.timing import time_training_steps
from tfhyper import paper

FLAGS = flags.FLAGS
cli.define_run_flags(["model", "jit_compile", "strategy", "devices"])  # as experiments.train has them
flags.DEFINE_integer("num_filters", 128, "N of figure 4.")
flags.DEFINE_integer("latent_filters", 192, "M of figure 4.")
flags.DEFINE_integer("batch_size", paper.BATCH_SIZE, "Crops per step (paper: 8).")
flags.DEFINE_integer("patch_size", paper.PATCH_SIZE, "Crop size (paper: 256).")
flags.DEFINE_integer("logical_cpus", None, "Split the CPU into this many logical devices and mirror over them "
                     "(--strategy=mirrored without a GPU: the machinery's cost, not a speed-up).", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Steps run before timing (graph tracing, allocator warm-up).")
flags.DEFINE_integer("steps", 10, "Timed steps; the median is reported.")
flags.DEFINE_enum(
    "precision",
    "float32",
    ["float32", "mixed_bfloat16"],
    "Keras dtype policy of the transforms; entropy models always run in float32.",
)


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from tfhyper import distribute
    from tfhyper.data import dead_leaves
    from tfhyper.models import model_class
    from tfhyper.training import JIT_COMPILE

    from tfhyper.hardware import native_bfloat16, precision_warning

    warning = precision_warning(FLAGS.precision)
    if warning:
        print(f"warning: {warning}")
    native, reason = native_bfloat16()
    print(f"bfloat16 here: {'native' if native else 'emulated'} ({reason})")
    devices = distribute.device_names(FLAGS.devices)
    if FLAGS.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.logical_cpus)
        devices = devices or [f"/cpu:{index}" for index in range(FLAGS.logical_cpus)]
    try:
        strategy = distribute.make_strategy(FLAGS.strategy, devices)
        distribute.check_batch_size(FLAGS.batch_size, strategy)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    replicas = strategy.num_replicas_in_sync
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    cls = model_class(FLAGS.model)
    with strategy.scope():
        model = cls(FLAGS.num_filters, FLAGS.latent_filters, lmbda=paper.QUALITIES[3].lmbda_mse)
        model.compile(optimizer=keras.optimizers.Adam(paper.LEARNING_RATE),
                      jit_compile=JIT_COMPILE[FLAGS.jit_compile])
    rng = np.random.default_rng(0)
    batch = np.stack([dead_leaves(FLAGS.patch_size, rng) for _ in range(FLAGS.batch_size)])
    batches = tf.data.Dataset.from_tensors(batch).repeat()  # the global batch, split over the replicas
    if FLAGS.strategy != "default":
        batches = strategy.experimental_distribute_dataset(batches)
    times = time_training_steps(model, batches, FLAGS.warmup, FLAGS.steps)
    step = np.median(times)
    print(
        f"{cls.__name__} N={FLAGS.num_filters} M={FLAGS.latent_filters} "
        f"batch {FLAGS.batch_size}x{FLAGS.patch_size}x{FLAGS.patch_size} {FLAGS.precision} "
        f"jit_compile={FLAGS.jit_compile} (XLA {'on' if model.jit_compile else 'off'}) "
        f"strategy={FLAGS.strategy} ({replicas} replica{'s' if replicas != 1 else ''}) "
        f"on {tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads: "
        f"median {step:.3f} s/step (min {times.min():.3f}, max {times.max():.3f}, {len(times)} steps), "
        f"{FLAGS.batch_size / step:.1f} images/s in total, {FLAGS.batch_size / step / replicas:.1f} per replica"
    )


if __name__ == "__main__":
    app.run(main)
