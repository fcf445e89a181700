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

from experiments import cli
from tfhyper.training import TrainingDiverged, train

FLAGS = flags.FLAGS
cli.define_run_flags()  # one flag per tfhyper.training.RunConfig setting, named as the setting
flags.DEFINE_string("model_dir", None, "Directory of the run: checkpoints, logs, final model.keras.")
flags.mark_flag_as_required("model_dir")


def main(argv):
    del argv
    config = cli.run_config(FLAGS)
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
