r"""The main job for a new user: small models of both priors, real files, the codecs, a report and a plot.

    python -m experiments.quickstart                  # built-in synthetic images, within 15 minutes on 2 cores
    python -m experiments.quickstart --full --data=../shared/data/train --kodak=../shared/data/kodak

On a fresh machine with nothing downloaded it:
1. trains the factorized-prior and scale-hyperprior models (eq. 10, MSE) at four of the paper's lambdas
   (qualities 1, 2, 3, 5), with N and M a quarter of the paper's, on random crops of the built-in dead-leaves
   images (or of --data). Each prior first trains a base run at quality 3; all four models start from it and are
   fine-tuned for a quarter of its steps (not the paper's separate models: a short run moves a trained model along
   the curve, where separate short runs did not separate by lambda). The step count is chosen so that all of it
   takes --training_minutes on this machine: a few steps of each prior are timed first, and the count is kept in
   --output_dir/schedule.json, so that a rerun resumes the same runs (--steps sets the count instead);
2. compresses sample images (synthetic dead leaves; Kodak with --full or --images) to real .tfh files and
   back, measuring bpp from the file sizes, PSNR and MS-SSIM (`experiments.evaluate`);
3. runs the classical codecs on the same images (`experiments.baselines`: JPEG, WebP, JPEG 2000, AVIF, HEVC);
4. writes --output_dir/report.md (models, codecs, BD-rates of the hyperprior against the factorized prior and
   each codec; with Kodak also against the paper's curves) and --output_dir/figure5.png (and .pdf), the
   Figure 5-style plot.

--full trains with the sweep's cpu preset (5000 steps per model) and evaluates on Kodak.
Training is resumable: run the same command again after an interruption; finished models are kept and not
retrained, and the results files are rewritten atomically.
"""
import dataclasses
import json
import pathlib
import sys
import time

import keras
import numpy as np
from absl import flags

from experiments import baselines, cli, evaluate, figures, report, results, sweep
from experiments.inputs import MODEL_FILE

# The cpu preset's recipe; its step count is replaced by one that fits the time budget (`steps_within`). One base
# run per prior trains at the middle quality and every model is fine-tuned from it for a quarter of its steps: with
# 8 separate models of 653 steps the factorized prior's rate hardly moved with lambda (WORKSPACE_NOTES.md,
# 2026-12-01); a trained model moves along the curve within a few hundred steps.
# The factorized density starts at width 1, not the references' 10 (`paper.DENSITY_INIT_SCALE`): Adam moves its
# parameters by about the learning rate per step, so narrowing it tenfold takes thousands of steps, and in a run of
# a few hundred the factorized prior's rate hardly answered lambda (WORKSPACE_NOTES.md, 2026-12-03: 500 steps at
# q1, loss 1.82 against 2.21, 0.240 bpp against 0.648 at the same MSE).
# Adam starts at 1e-3, not the cpu preset's 2e-3: at the main job's budget (535 base steps of dead leaves) 2e-3 lifted
# both priors, the factorized one most (by 0.8 dB against 0.2-0.35 dB), and put it 0.37 dB (BD-PSNR) above the
# hyperprior, where 1e-3 gives the paper's ordering (+0.13 dB; WORKSPACE_NOTES.md, 2026-12-07).
QUICK = dataclasses.replace(sweep.PRESETS["cpu"], checkpoint_every=200, base_quality=3, fine_tune_learning_rate=3e-4,
                            density_init_scale=1.0, learning_rate=1e-3)
SCHEDULE_FILE = "schedule.json"
# What the timed steps leave out (checkpoints every 200 steps, the logs, saving and evaluating each model): 8 models
# of 653 steps took 750 s where the timed steps and set-up predicted 600 s (WORKSPACE_NOTES.md, 2026-12-01).
FIT_OVERHEAD = 1.25
MIN_STEPS = 100
SAMPLE_SIDE = 256  # synthetic sample images: large enough for MS-SSIM's five scales (161 pixels)
SAMPLE_COUNT = 4
SAMPLE_SEED = 2018

cli.define_run_flags(["data"])
flags.DEFINE_bool("full", False, f"Train longer (the sweep's cpu preset, {sweep.PRESETS['cpu'].steps} steps per "
                  "model) and evaluate on Kodak (--kodak, or downloaded once when online).")
flags.DEFINE_integer("steps", None, "Training steps per model (default: as many as fit in --training_minutes; "
                                    f"{sweep.PRESETS['cpu'].steps} with --full).", lower_bound=1)
# 8 minutes keeps the whole job, install included, within 15 on the slowest 2-core machine measured: with 10, an
# AVX2-only EPYC took 922 s (training 659 s, codecs 87 s, install 75 s; WORKSPACE_NOTES.md, 2026-12-02), and 500
# base steps (what 8 minutes buys there) gave rising curves with the narrow density (2026-12-03).
flags.DEFINE_float("training_minutes", 8.0, "Wall-clock budget for training all the models together, when neither "
                   "--steps nor --full is given.", lower_bound=0.1)
# Qualities 1-5 share N=32, M=48 here; 6-8 (N=48, M=80) train more slowly and lag in a run this short.
flags.DEFINE_list("qualities", ["1", "2", "3", "5"], "The paper's rate points to train (four or more give the "
                                                   "cubic BD-rate).")
flags.DEFINE_integer("base_quality", None, "The quality of each prior's base run, which every model is fine-tuned "
                     "from (default: the middle of --qualities).", lower_bound=1, upper_bound=8)
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

    runs = sorted((run for run in pathlib.Path(models_dir).glob("hyperprior-*") if not run.name.endswith(sweep.BASE_SUFFIX)),
                  key=lambda p: int(p.name.rsplit("q", 1)[1]))
    if not runs:
        return []
    model = tfhyper.load_model(runs[-1] / MODEL_FILE)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image in images.items():
        data = tfhyper.compress(model, image)
        atomic_write_bytes(out / f"{name}.tfh", data, force=True)
        write_png(out / f"{name}.decoded.png", tfhyper.decompress(model, data), force=True)
        written.append((name, len(data)))
    return written


class BatchClock(keras.callbacks.Callback):
    """Records the time at the end of every training step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def step_timing(config, warmup=10, timed=30):
    """(seconds per step, seconds of set-up) of `config`'s model trained by `fit` on its own data pipeline on this
    machine. Set-up is what a run spends besides its steps: building the model and tracing its training step.

    The steps are timed inside one `fit`, after `warmup` steps that let the pipeline reach its steady pace (timing
    whole short `fit` calls would count each call's new iterator). The crops of synthetic images cost about as much
    processor time as a small model's step, so a step timed on a batch held in memory would undercount."""
    from tfhyper.data import make_dataset
    from tfhyper.training import build_model, build_optimizer

    start = time.perf_counter()
    model = build_model(config)
    model.compile(optimizer=build_optimizer(config))
    dataset = make_dataset(config.data, patch_size=config.patch_size, batch_size=config.batch_size, seed=config.seed)
    clock = BatchClock()
    model.fit(dataset, steps_per_epoch=warmup + timed, epochs=1, verbose=0, callbacks=[clock])
    per_step = (clock.times[-1] - clock.times[warmup - 1]) / timed
    return per_step, max(0.0, clock.times[0] - start - per_step)


def steps_within(budget_s, configs, timing=None):
    """(steps, {model kind: (s/step, s of set-up)}): the step count per model that trains all `configs` in about
    `budget_s` of wall-clock time, each model's set-up included."""
    timing = timing or step_timing
    per_kind = {}
    for config in configs.values():
        if config.model not in per_kind:
            per_kind[config.model] = timing(dataclasses.replace(config, init_from=None))
    # A fine-tuned model trains sweep.FINE_TUNE_SHARE of the base run's steps.
    share = {name: sweep.FINE_TUNE_SHARE if config.init_from else 1.0 for name, config in configs.items()}
    per_step = sum(per_kind[config.model][0] * share[name] for name, config in configs.items()) * FIT_OVERHEAD
    setup = sum(per_kind[config.model][1] for config in configs.values())
    return max(MIN_STEPS, int((budget_s - setup) / per_step)), per_kind


def schedule(out, configs, budget_minutes):
    """The step count of this output folder's runs: the one chosen before (schedule.json), else a new one."""
    path = out / SCHEDULE_FILE
    if path.exists():
        return json.loads(path.read_text())["steps"]
    print(f"timing a few training steps to fit {budget_minutes:g} minutes of training ...", flush=True)
    steps, per_kind = steps_within(budget_minutes * 60, configs)
    from tfhyper.training import write_json_atomic

    write_json_atomic(path, {"steps": steps, "training_minutes": budget_minutes, "seconds_per_step": per_kind})
    return steps


def schedule_text(preset):
    if preset.base_quality is None:
        return f"{preset.steps} steps each"
    steps, learning_rate = preset.fine_tuning()
    return (f"a base run at quality {preset.base_quality} for {preset.steps} steps, every model fine-tuned from it "
            f"for {steps} (Adam {learning_rate:g})")


def main(options):
    """Train, evaluate, run the codecs, and write the report and the plot into --output_dir."""
    out = pathlib.Path(options.output_dir)
    preset = sweep.PRESETS["cpu"] if options.full else QUICK
    preset = sweep.with_overrides(preset, steps=options.steps)
    start = time.time()
    try:
        qualities = [int(q) for q in options.qualities]
        if not options.full:  # the middle of the selected curve is the base run, unless chosen
            base = options.base_quality or sorted(qualities)[len(qualities) // 2]
            preset = dataclasses.replace(preset, base_quality=base)
        runs = out / "runs"
        configs = sweep.sweep_configs(preset, sweep.KINDS, ("mse",), qualities, options.data, root=runs)
        if options.full or options.images:
            images = evaluate.resolve_images(options.images, options.kodak, options.cache_dir, options.limit)
        else:
            images = sample_images()
        out.mkdir(parents=True, exist_ok=True)
        if not options.full and options.steps is None:
            steps = schedule(out, configs, options.training_minutes)
            preset = sweep.with_overrides(preset, steps=steps)
            configs = sweep.sweep_configs(preset, sweep.KINDS, ("mse",), qualities, options.data, root=runs)
        print(f"training {len(configs)} models into {runs}: {schedule_text(preset)}", flush=True)
        rows, summary, failures = sweep.run_sweep(configs, runs, images)
        trained = time.time()
        print(f"trained and evaluated in {trained - start:.0f} s", flush=True)
        evaluation = out / "evaluation.csv"
        results.write_results(evaluation, rows, summary, overwrite=True, failures=failures,
                              preset_settings=dataclasses.asdict(preset))
        samples = write_sample_files(out / "runs", images, out / "samples")
        print(f"codecs on {len(images)} images ...", flush=True)
        codec_rows = baselines.run_baselines(images, options.codecs)
        results.write_csv(out / "baselines.csv", codec_rows, baselines.COLUMNS)
    except ValueError as error:  # bad flags or images: one line
        sys.exit(f"quickstart: {error}")
    kodak = options.full and not options.images
    rows, settings = results.read_evaluations([evaluation])
    command = " ".join(["python -m experiments.quickstart", *sys.argv[1:]])
    notes = [f"Command: `{command}`",
             f"Training: {len(configs)} models, {schedule_text(preset)}; each step {preset.batch_size} crops of "
             f"{preset.patch_size}x{preset.patch_size}, Adam {preset.learning_rate:g}, N and M x{preset.filter_scale:g} "
             f"of the paper's, on {options.data or 'built-in synthetic dead-leaves images'}.",
             f"Images: {len(images)} ({', '.join(images)}). Total time {time.time() - start:.0f} s.",
             f"Sample files: {', '.join(f'samples/{n}.tfh ({b} bytes)' for n, b in samples)}."]
    text = report.markdown_report(rows, settings, results.read_rows(out / "baselines.csv"), published=kodak,
                                  title="tfhyper quickstart report", notes=notes)
    from tfhyper.imageio import atomic_write_bytes

    atomic_write_bytes(out / "report.md", text.encode("utf-8"), force=True)
    where = "Kodak" if kodak else f"{len(images)} sample images"
    figure = figures.figure5(rows, results.read_rows(out / "baselines.csv"), settings, published=kodak,
                             title=f"{where}, averaged over images (as paper Figure 5)")
    figures.save_figure(figure, out, "figure5")
    print(text)
    print(f"\nwrote {out / 'report.md'} and {out / 'figure5.png'} in {time.time() - start:.0f} s")
    if failures:
        sys.exit(f"quickstart: training diverged for {', '.join(failures)}")


if __name__ == "__main__":
    cli.run(main)
