r"""Train one of the paper's models (section 4.1) with absl flags.

    python -m experiments.train --model_dir=runs/hp-q3                       # hyperprior, MSE, quality 3
    python -m experiments.train --model=factorized --distortion=ms-ssim --quality=5 --model_dir=runs/f5
    python -m experiments.train --data=../shared/data/train --num_filters=32 --latent_filters=48 \
        --steps=2000 --checkpoint_every=200 --model_dir=runs/small

Defaults are the paper's (Adam 1e-4, batches of 8 random 256x256 crops, N/M/lambda per quality) and, where the
paper is silent, tfhyper's measured recipe: PyTorch's initialization and gradients clipped to norm 1.0
(`tfhyper.paper`; --initializer=glorot_uniform --clip_norm=0 is what the authors' implementation does).
Interrupt it at any time and run the same command again: it resumes from the last checkpoint.
"""
import sys

from absl import app, flags

from tfhyper.models import MODELS

from tfhyper import paper

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "hyperprior", list(MODELS), "Model kind (tfhyper.models.MODELS): " + ", ".join(
    f"{kind} ({cls.TITLE})" for kind, cls in MODELS.items()) + ".")
flags.DEFINE_enum("distortion", "mse", ["mse", "ms-ssim"], "D of eq. 10: MSE on the 0..255 scale, or 1 - MS-SSIM.")
flags.DEFINE_integer("quality", 3, "The paper's rate point 1..8; sets N, M and lambda.", lower_bound=1, upper_bound=8)
flags.DEFINE_float("lmbda", None, "Rate-distortion trade-off; overrides the quality's lambda.")
flags.DEFINE_integer("num_filters", None, "N of figure 4; overrides the quality's.", lower_bound=1)
flags.DEFINE_integer("latent_filters", None, "M of figure 4; overrides the quality's.", lower_bound=1)
flags.DEFINE_string(
    "data", None, "Training images: a folder, a glob, or tfds:NAME[:split]. Default: built-in synthetic images."
)
flags.DEFINE_integer("steps", 1_000_000, "Total training steps.", lower_bound=1)
flags.DEFINE_integer("batch_size", paper.BATCH_SIZE, "Crops per step (paper: 8).", lower_bound=1)
flags.DEFINE_integer("patch_size", paper.PATCH_SIZE, "Crop size (paper: 256).", lower_bound=16)
flags.DEFINE_float("learning_rate", paper.LEARNING_RATE, "Adam learning rate (paper: 1e-4).")
flags.DEFINE_enum("learning_rate_decay", "none", ["none", "cosine"],
                  "Learning-rate schedule: none (constant, as in the paper), cosine (down to a hundredth of it at "
                  "--steps).")
flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints (and progress bars).", lower_bound=1)
flags.DEFINE_bool("downsample", False, "Paper's preprocessing: shrink large photos so the shorter side is 640-1200.")
flags.DEFINE_bool("screen_saturation", False, "Paper's preprocessing: skip over-saturated images.")
flags.DEFINE_enum(
    "precision", "float32", ["float32", "mixed_bfloat16"], "Dtype policy of the transforms (entropy models: float32)."
)
flags.DEFINE_integer("seed", 0, "Random seed of initialization and crops.")
flags.DEFINE_enum("initializer", paper.INITIALIZER, ["glorot_uniform", "fan_in_uniform"],
                  "Starting weights of the convolutions: glorot_uniform (Keras' default, zero biases) or "
                  "fan_in_uniform (PyTorch's default: kernel and bias uniform within 1/sqrt(fan-in)).")
flags.DEFINE_float("adam_epsilon", paper.ADAM_EPSILON, "Adam's epsilon.", lower_bound=0.0)
flags.DEFINE_float("clip_norm", paper.GRADIENT_CLIP_NORM,
                   "Clip each step's gradients to this global norm (0: no clipping).", lower_bound=0.0)
flags.DEFINE_string("model_dir", None, "Directory of the run: checkpoints, logs, final model.keras.")
flags.mark_flag_as_required("model_dir")


def config_from_flags():
    from tfhyper.training import RunConfig

    return RunConfig(
        model=FLAGS.model,
        distortion=FLAGS.distortion,
        quality=FLAGS.quality,
        lmbda=FLAGS.lmbda,
        num_filters=FLAGS.num_filters,
        latent_filters=FLAGS.latent_filters,
        data=FLAGS.data,
        steps=FLAGS.steps,
        batch_size=FLAGS.batch_size,
        patch_size=FLAGS.patch_size,
        learning_rate=FLAGS.learning_rate,
        learning_rate_decay=FLAGS.learning_rate_decay,
        checkpoint_every=FLAGS.checkpoint_every,
        downsample=FLAGS.downsample,
        screen_saturation=FLAGS.screen_saturation,
        precision=FLAGS.precision,
        seed=FLAGS.seed,
        initializer=FLAGS.initializer,
        adam_epsilon=FLAGS.adam_epsilon,
        clip_norm=FLAGS.clip_norm or None,
    )


def main(argv):
    del argv
    from tfhyper.training import TrainingDiverged, train

    config = config_from_flags()
    num_filters, latent_filters, lmbda = config.resolved()
    print(f"{config.model} prior, {config.distortion}, N={num_filters} M={latent_filters} lambda={lmbda:g}")
    try:
        _, metrics = train(config, FLAGS.model_dir)
    except (TrainingDiverged, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    print(
        f"final: rate {metrics.get('bpp', float('nan')):.4f} bpp "
        f"(y {metrics.get('bpp_y', float('nan')):.4f}, z {metrics.get('bpp_z', float('nan')):.4f}), "
        f"distortion MSE {metrics.get('mse', float('nan')):.2f}, PSNR {metrics.get('psnr', float('nan')):.2f} dB; "
        f"model saved to {FLAGS.model_dir}/model.keras"
    )


if __name__ == "__main__":
    app.run(main)
