"""The main job for a new user: train a small scale-hyperprior model and report its rate and distortion.

    python -m experiments.quickstart                        # built-in synthetic images, a few minutes on 2 cores
    python -m experiments.quickstart --data=../shared/data/train --steps=2000

It trains with the paper's loss (eq. 10) on random crops, evaluates on held-out crops with real rounding,
compresses one held-out image to a real .tfh file and back, and prints rate, distortion and PSNR.
Everything it writes goes to --output_dir (default: quickstart_output/).
"""
import pathlib
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Training images (folder, glob or tfds:NAME); default: built-in synthetic images.")
flags.DEFINE_integer("steps", 600, "Training steps.", lower_bound=1)
flags.DEFINE_integer("num_filters", 64, "N of figure 4 (the paper: 128 or 192).", lower_bound=1)
flags.DEFINE_integer("latent_filters", 96, "M of figure 4 (the paper: 192 or 320).", lower_bound=1)
flags.DEFINE_float("lmbda", 0.0130, "Rate-distortion trade-off (quality 4 of the paper's MSE models).")
flags.DEFINE_integer("patch_size", 128, "Crop size (the paper: 256; smaller trains faster on a CPU).", lower_bound=64)
flags.DEFINE_integer("batch_size", 8, "Crops per step (the paper: 8).", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (the paper: 1e-4 for its million-step runs).")
flags.DEFINE_string("output_dir", "quickstart_output", "Where the run, the model and the sample file go.")


def main(argv):
    del argv
    import tfhyper
    from tfhyper.data import dead_leaves, make_dataset
    from tfhyper.training import RunConfig, train

    out = pathlib.Path(FLAGS.output_dir)
    config = RunConfig(
        model="hyperprior",
        lmbda=FLAGS.lmbda,
        num_filters=FLAGS.num_filters,
        latent_filters=FLAGS.latent_filters,
        data=FLAGS.data,
        steps=FLAGS.steps,
        batch_size=FLAGS.batch_size,
        patch_size=FLAGS.patch_size,
        learning_rate=FLAGS.learning_rate,
        checkpoint_every=max(1, FLAGS.steps // 6),
    )
    start = time.time()
    model, _ = train(config, out / "run")
    print(f"trained {FLAGS.steps} steps in {time.time() - start:.0f} s")

    held_out = make_dataset(FLAGS.data, patch_size=256, batch_size=4, seed=12345).take(4)
    metrics = model.evaluate(held_out, verbose=0, return_dict=True)
    print(
        f"held-out crops, rounded latents: rate {metrics['bpp']:.4f} bpp (side information {metrics['bpp_z']:.4f}), "
        f"distortion MSE {metrics['mse']:.2f}, PSNR {metrics['psnr']:.2f} dB"
    )
    image = (dead_leaves(256, np.random.default_rng(7)) * 255).round().astype(np.uint8)
    data = tfhyper.compress(model, image)
    decoded = tfhyper.decompress(model, data)
    (out / "sample.tfh").write_bytes(data)
    from tfhyper.losses import psnr_uint8

    print(
        f"real file {out / 'sample.tfh'}: {len(data)} bytes for 256x256, {8 * len(data) / 256**2:.4f} bpp, "
        f"PSNR {psnr_uint8(image, decoded):.2f} dB"
    )


if __name__ == "__main__":
    app.run(main)
