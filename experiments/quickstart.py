r"""The main job for a new user: small models of both priors, real files, the codecs, a report and a plot.

    python -m experiments.quickstart                  # built-in synthetic images, about 12 minutes on 2 cores
    python -m experiments.quickstart --full --data=../shared/data/train --kodak=../shared/data/kodak

On a fresh machine with nothing downloaded it:
1. trains the factorized-prior and scale-hyperprior models (eq. 10, MSE) at four of the paper's lambdas
   (qualities 1, 2, 3, 5), 600 steps each, with N and M a quarter of the paper's, on random crops of the
   built-in dead-leaves images (or of --data);
2. compresses sample images (synthetic dead leaves; Kodak with --full or --images) to real .tfh files and
   back, measuring bpp from the file sizes, PSNR and MS-SSIM (`experiments.evaluate`);
3. runs the classical codecs on the same images (`experiments.baselines`: JPEG, WebP, JPEG 2000, AVIF, HEVC);
4. writes --output_dir/report.md (models, codecs, BD-rates of the hyperprior against the factorized prior and
   each codec; with Kodak also against the paper's curves) and --output_dir/figure5.png (and .pdf), the
   Figure 5-style plot.

--full trains with the sweep's cpu preset (5000 steps per model, decaying learning rate) and evaluates on Kodak.
Training is resumable: run the same command again after an interruption; finished models are kept and not
retrained, and the results files are rewritten atomically.
"""
import dataclasses
import pathlib
import sys
import time

import numpy as np
from absl import app, flags

from experiments import baselines, evaluate, figures, report, sweep

FLAGS = flags.FLAGS
# A constant learning rate: the quickstart's figures in the README and the lab notebook were measured with it.
QUICK = dataclasses.replace(sweep.PRESETS["cpu"], steps=600, checkpoint_every=200, learning_rate_decay="none")
SAMPLE_SIDE = 256  # synthetic sample images: large enough for MS-SSIM's five scales (161 pixels)
SAMPLE_COUNT = 4
SAMPLE_SEED = 2018

flags.DEFINE_string("data", None, "Training images (folder, glob or tfds:NAME); default: built-in synthetic images.")
flags.DEFINE_bool("full", False, f"Train longer (the sweep's cpu preset, {sweep.PRESETS['cpu'].steps} steps per "
                  "model) and evaluate on Kodak (--kodak, or downloaded once when online).")
flags.DEFINE_integer("steps", None, f"Training steps per model (default {QUICK.steps}; "
                                    f"{sweep.PRESETS['cpu'].steps} with --full).", lower_bound=1)
# Qualities 1-5 share N=32, M=48 here; 6-8 (N=48, M=80) train more slowly and lag in a run this short.
flags.DEFINE_list("qualities", ["1", "2", "3", "5"], "The paper's rate points to train (four or more give the "
                                                   "cubic BD-rate).")
flags.DEFINE_list("codecs", list(baselines.CODECS), "Classical codecs to compare with.")
flags.DEFINE_string("output_dir", "quickstart_output", "Where the runs, results, report and plot go.")
flags.DEFINE_string("images", None, "Folder of images to compress and measure (default: synthetic samples; "
                                    "Kodak with --full).")
evaluate.define_image_flags()


def sample_images():
    """name -> uint8 dead-leaves images: test images that need no download (shared statistics with photos)."""
    from tfhyper.data import dead_leaves

    rng = np.random.default_rng(SAMPLE_SEED)
    return {f"dead-leaves-{i + 1}": (dead_leaves(SAMPLE_SIDE, rng) * 255).round().astype(np.uint8)
            for i in range(SAMPLE_COUNT)}


def write_sample_files(models_dir, images, out):
    """Each image compressed to a real .tfh file by the highest-rate hyperprior, and the decoded PNG beside it."""
    import tfhyper
    from tfhyper.imageio import atomic_write_bytes, write_png

    runs = sorted(pathlib.Path(models_dir).glob("hyperprior-*"), key=lambda p: int(p.name.rsplit("q", 1)[1]))
    if not runs:
        return []
    model = tfhyper.load_model(runs[-1] / evaluate.MODEL_FILE)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image in images.items():
        data = tfhyper.compress(model, image)
        atomic_write_bytes(out / f"{name}.tfh", data, force=True)
        write_png(out / f"{name}.decoded.png", tfhyper.decompress(model, data), force=True)
        written.append((name, len(data)))
    return written


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    out = pathlib.Path(FLAGS.output_dir)
    preset = sweep.PRESETS["cpu"] if FLAGS.full else QUICK
    preset = sweep.with_overrides(preset, steps=FLAGS.steps)
    start = time.time()
    try:
        qualities = [int(q) for q in FLAGS.qualities]
        configs = sweep.sweep_configs(preset, sweep.KINDS, ("mse",), qualities, FLAGS.data)
        if FLAGS.full or FLAGS.images:
            images = evaluate.resolve_images(FLAGS.images, FLAGS.kodak, FLAGS.cache_dir, FLAGS.limit)
        else:
            images = sample_images()
        out.mkdir(parents=True, exist_ok=True)
        print(f"training {len(configs)} models ({preset.steps} steps each) into {out / 'runs'}", flush=True)
        rows, summary, failures = sweep.run_sweep(configs, out / "runs", images)
        trained = time.time()
        print(f"trained and evaluated in {trained - start:.0f} s", flush=True)
        evaluation = out / "evaluation.csv"
        evaluate.write_results(evaluation, rows, summary, overwrite=True, failures=failures,
                               preset_settings=dataclasses.asdict(preset))
        samples = write_sample_files(out / "runs", images, out / "samples")
        print(f"codecs on {len(images)} images ...", flush=True)
        codec_rows = baselines.run_baselines(images, FLAGS.codecs)
        baselines.write_csv(out / "baselines.csv", codec_rows, baselines.COLUMNS)
    except ValueError as error:  # bad flags or images: one line
        sys.exit(f"quickstart: {error}")
    kodak = FLAGS.full and not FLAGS.images
    rows, settings = figures.read_evaluations([evaluation])
    command = " ".join(["python -m experiments.quickstart", *sys.argv[1:]])
    notes = [f"Command: `{command}`",
             f"Training: {len(configs)} models, {preset.steps} steps each of {preset.batch_size} crops of "
             f"{preset.patch_size}x{preset.patch_size}, Adam {preset.learning_rate:g}, N and M x{preset.filter_scale:g} "
             f"of the paper's, on {FLAGS.data or 'built-in synthetic dead-leaves images'}.",
             f"Images: {len(images)} ({', '.join(images)}). Total time {time.time() - start:.0f} s.",
             f"Sample files: {', '.join(f'samples/{n}.tfh ({b} bytes)' for n, b in samples)}."]
    text = report.markdown_report(rows, settings, figures.read_rows(out / "baselines.csv"), published=kodak,
                                  title="tfhyper quickstart report", notes=notes)
    from tfhyper.imageio import atomic_write_bytes

    atomic_write_bytes(out / "report.md", text.encode("utf-8"), force=True)
    where = "Kodak" if kodak else f"{len(images)} sample images"
    figure = figures.figure5(rows, figures.read_rows(out / "baselines.csv"), settings, published=kodak,
                             title=f"{where}, averaged over images (as paper Figure 5)")
    figures.save_figure(figure, out, "figure5")
    print(text)
    print(f"\nwrote {out / 'report.md'} and {out / 'figure5.png'} in {time.time() - start:.0f} s")
    if failures:
        sys.exit(f"quickstart: training diverged for {', '.join(failures)}")


if __name__ == "__main__":
    app.run(main)
