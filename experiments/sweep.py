r"""The paper's 32 models, trained and evaluated on Kodak: resumable, any subset, with presets for a GPU or a CPU.

Section 4.1 trains "a total of 32 separate models": with and without the hyperprior, for MSE and for MS-SSIM, each
at 8 values of lambda (N, M and lambda per quality in `paper.QUALITIES`). Section 4.2 evaluates them on Kodak.

    python -m experiments.sweep --preset=cpu --data=PHOTOS --root=runs/cpu --kodak=KODAK
    python -m experiments.sweep --preset=cpu --models=hyperprior,factorized --distortions=mse --qualities=1,2,3,4 \
        --data=PHOTOS --root=runs/cpu --kodak=KODAK
    python -m experiments.sweep --preset=paper --data=PHOTOS --root=runs/paper --kodak=KODAK    # a GPU

ROOT holds one `tfhyper.training` run directory per model, named KIND-DISTORTION-qQUALITY (`hyperprior-mse-q4`).
Run the same command again after an interruption: a finished model is skipped, an interrupted one resumes from its
last checkpoint (`tfhyper.training.train`), and a model whose evaluation is cached in its run directory
(`evaluation.json`, valid for the same weights and the same images) is not evaluated again. A stale cache (other
images, e.g. another --limit) is replaced. The results table of the selected models is then rewritten from these
per-model results, atomically: ROOT/results.csv (one row per model and image) and ROOT/results.json (each model's
settings, run settings and means), with the columns of `experiments.evaluate`. A model whose training diverges is
reported and the others go on; the command then exits with an error.

Several workers (one per GPU with --gpu, or machines sharing ROOT) may run the same command at once: they split
the models by claims in ROOT/claims (`experiments.claims`), a stopped worker's model is taken over after
--claim_expiry seconds and resumed from its checkpoint, and each worker writes the merged table once all models
are evaluated. With --strategy=multi_worker a cluster instead trains every model together, its chief evaluating.

    for gpu in 0 1 2 3; do python -m experiments.sweep --preset=paper ... --gpu=$gpu & done

Presets (flags --steps, --learning_rate, --patch_size, --batch_size, --checkpoint_every, --filter_scale override
them; --patch_size and --batch_size apply to MSE and MS-SSIM models alike):

  paper  Section 4.1: Adam with learning rate 1e-4, batches of 8 random 256x256 crops, N and M of figure 4,
         photographs screened for saturation and downsampled (shorter side 640-1200). The paper gives no step
         count; 10^6 steps is the default of the authors' example scripts in tensorflow/compression. Where the
         paper is silent, the authors' implementation's choices: Glorot initialization, Adam's epsilon 1e-7, no
         gradient clipping. For a GPU.
  cpu    The MSE models of both priors at qualities 1-4 in about an hour on 2 CPU cores (all 32 in seven to eight):
         - N and M a quarter of the paper's (32/48 for qualities 1-5, 48/80 for 6-8). Figure 9 (appendix 6.3)
           shows performance saturating with the number of filters, earlier for lower lambda: smaller transforms
           cost quality mostly at high rates, and the inner convolutions' multiply-adds (N^2) fall 16-fold.
         - 128x128 crops in batches of 8 for MSE. MS-SSIM's five scales need 161 pixels per side, so MS-SSIM
           models take 176x176 crops in batches of 4, about the same number of pixels per step.
         - Adam starting at 2e-3 and falling along half a cosine to 2e-5 at the last step (not the paper's
           constant 1e-4, which is for 10^6 steps). With clipping at 1.0, 5000 steps at quality 4 on Kodak gave
           0.4322 bpp, 27.96 dB from 2e-3 against 0.4189 bpp, 27.23 dB from 1e-3 (hyperprior, same machine; the
           factorized prior 0.4628 bpp, 27.87 dB against 0.4619, 27.25): +0.7 dB at the same rate, 4-5 times the
           0.14 dB between two seeds (WORKSPACE_NOTES.md, 2026-12-07). Before clipping, 600 steps had measured
           1e-3 best (loss 4.48 against 4.58 at 2e-3 and 5.64 at 1e-4), and a constant 1e-3 let a factorized model
           (quality 4) diverge near step 4,750; the decay brings the rate down so that the last weights settle. A
           run that diverges anyway stops at its last finite checkpoint. Fine-tunes from a base run (--base_quality)
           start at 3e-4, the measured schedule of the fine-tuned reproduction.
         - Convolutions initialized as PyTorch does and gradients clipped to norm 1.0 (CompressAI's recipe;
           `tfhyper.paper` has the measurement): quality 4 went from 0.383 bpp, 25.13 dB to 0.427 bpp, 27.24 dB.
         - 5000 steps: measured medians of 0.07-0.08 s per step for the MSE models of qualities 1-4 (both
           priors, alone on the machine), 0.09-0.19 s for qualities 6-8 and 0.20-0.27 s for MS-SSIM models.
           Evaluation adds about 0.3 s per model and Kodak image.
  test   Seconds per model (N and M a sixteenth, 64x64 crops, 4 steps): exercises the machinery, compresses badly.
"""
import contextlib
import dataclasses
import hashlib
import json
import pathlib
import sys
import time

from absl import flags

from experiments import cli, evaluate, results
from experiments.claims import EXPIRY, FAILED, ClaimLost, Claims
from experiments.inputs import MODEL_FILE
from tfhyper import paper
from tfhyper.imageio import atomic_write_bytes
from tfhyper.losses import MS_SSIM_MIN_SIDE
from tfhyper.models import DISTORTIONS, MODELS
from tfhyper.training import model_kinds

KINDS = ("hyperprior", "factorized")  # the paper's two (section 4.1's 32 models); any kind of MODELS may be chosen
QUALITIES = tuple(paper.QUALITIES)
# The settings of `tfhyper.training.RunConfig` that --flags of the same names set instead of the preset.
# A fine-tuned model's share of the base run's steps and learning rate, unless set (--fine_tune_steps and
# --fine_tune_learning_rate): the shares of the measured schedule (WORKSPACE_NOTES.md, the fine-tuned reproduction).
FINE_TUNE_SHARE = 0.25
FINE_TUNE_LEARNING_RATE_SHARE = 0.3
OVERRIDES = ("steps", "learning_rate", "learning_rate_decay", "patch_size", "batch_size", "checkpoint_every")
EVALUATION_FILE = "evaluation.json"
RESULTS_FILE = "results.csv"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A training schedule for every model of the sweep (section 4.1's values in the `paper` preset)."""

    steps: int
    learning_rate: float
    patch_size: int  # crops of the MSE models
    batch_size: int
    ms_ssim_patch_size: int  # crops of the MS-SSIM models, at least MS_SSIM_MIN_SIDE
    ms_ssim_batch_size: int
    checkpoint_every: int
    learning_rate_decay: str = "none"  # `tfhyper.training.learning_rate_schedule`
    filter_scale: float = 1.0  # N and M of paper.QUALITIES are multiplied by this
    downsample: bool = False
    screen_saturation: bool = False
    # What the paper leaves unsaid (`tfhyper.paper`, `tfhyper.training.build_optimizer`).
    initializer: str = paper.INITIALIZER
    adam_epsilon: float = paper.ADAM_EPSILON
    clip_norm: float | None = paper.GRADIENT_CLIP_NORM
    density_init_scale: float = paper.DENSITY_INIT_SCALE
    # Sharing one long run across a curve (not the paper's 32 separate models): each kind first trains a base run
    # KIND-DISTORTION-qQ-base at `base_quality` (MSE if selected) for `steps`; every selected model, that quality's
    # included, starts from it (`--init_from`) and is fine-tuned for `fine_tune_steps` at `fine_tune_learning_rate`,
    # all with the base's N and M, so that every point of a curve has had the same training.
    base_quality: int | None = None
    fine_tune_steps: int | None = None  # default: FINE_TUNE_SHARE of `steps`
    fine_tune_learning_rate: float | None = None  # default: FINE_TUNE_LEARNING_RATE_SHARE of `learning_rate`

    def fine_tuning(self):
        """(steps, learning rate) of a model fine-tuned from the base run, derived from the base's unless set."""
        return (self.fine_tune_steps or max(1, round(self.steps * FINE_TUNE_SHARE)),
                self.fine_tune_learning_rate or self.learning_rate * FINE_TUNE_LEARNING_RATE_SHARE)

    def crops(self, distortion):
        """(crop size, batch size) for models trained on `distortion`."""
        if distortion == "ms-ssim":
            return self.ms_ssim_patch_size, self.ms_ssim_batch_size
        return self.patch_size, self.batch_size

    def filters(self, quality):
        """(N, M) for a quality, or (None, None) to take the paper's from `paper.QUALITIES` unchanged."""
        if self.filter_scale == 1.0:
            return None, None
        q = paper.QUALITIES[quality]
        return max(1, round(q.num_filters * self.filter_scale)), max(1, round(q.latent_filters * self.filter_scale))


PRESETS = {
    "paper": Preset(
        steps=1_000_000, learning_rate=paper.LEARNING_RATE, patch_size=paper.PATCH_SIZE, batch_size=paper.BATCH_SIZE,
        ms_ssim_patch_size=paper.PATCH_SIZE, ms_ssim_batch_size=paper.BATCH_SIZE, checkpoint_every=5000,
        downsample=True, screen_saturation=True,
        initializer=paper.AUTHORS_INITIALIZER, adam_epsilon=paper.AUTHORS_ADAM_EPSILON, clip_norm=None,
    ),
    "cpu": Preset(
        steps=5000, learning_rate=2e-3, learning_rate_decay="cosine", patch_size=128, batch_size=8,
        ms_ssim_patch_size=176, ms_ssim_batch_size=4, checkpoint_every=250, filter_scale=0.25,
        fine_tune_learning_rate=3e-4,
    ),
    "test": Preset(
        steps=4, learning_rate=1e-3, patch_size=64, batch_size=2, ms_ssim_patch_size=176, ms_ssim_batch_size=1,
        checkpoint_every=2, filter_scale=1 / 16,
    ),
}  # fmt: skip


def with_overrides(preset, steps=None, learning_rate=None, patch_size=None, batch_size=None, checkpoint_every=None,
                   filter_scale=None, learning_rate_decay=None, base_quality=None, fine_tune_steps=None,
                   fine_tune_learning_rate=None):
    """`preset` with the given (not None) fields replaced; crop and batch sizes apply to both distortions."""
    changes = {"steps": steps, "learning_rate": learning_rate, "learning_rate_decay": learning_rate_decay,
               "checkpoint_every": checkpoint_every,
               "filter_scale": filter_scale, "patch_size": patch_size, "ms_ssim_patch_size": patch_size,
               "batch_size": batch_size, "ms_ssim_batch_size": batch_size, "base_quality": base_quality,
               "fine_tune_steps": fine_tune_steps, "fine_tune_learning_rate": fine_tune_learning_rate}
    return dataclasses.replace(preset, **{key: value for key, value in changes.items() if value is not None})


BASE_SUFFIX = "-base"  # the run directory of a base run: trained, not evaluated, the start of the others


def run_name(kind, distortion, quality):
    return f"{kind}-{distortion}-q{quality}"


def sweep_configs(preset, kinds=KINDS, distortions=DISTORTIONS, qualities=QUALITIES, data=None, root=None):
    """name -> `tfhyper.training.RunConfig` of each selected model, in kind, distortion, quality order (with a
    `base_quality`, each kind's base run KIND-D-qQ-base first: the others start from its ROOT/.../model.keras, so
    `root` is needed)."""
    from tfhyper.training import RunConfig

    _check_choice("model", kinds, tuple(MODELS))
    _check_choice("distortion", distortions, DISTORTIONS)
    _check_choice("quality", qualities, QUALITIES)
    base = _base_run(preset, distortions, qualities, root)
    configs = {}
    for kind in kinds:
        runs = [(distortion, quality, False) for distortion in distortions for quality in qualities]
        if base:  # the base run first, so that its fine-tunes find it
            runs.insert(0, (*base, True))
        for distortion, quality, is_base in runs:
            patch_size, batch_size = preset.crops(distortion)
            if distortion == "ms-ssim" and patch_size < MS_SSIM_MIN_SIDE:
                raise ValueError(f"MS-SSIM models need crops of at least {MS_SSIM_MIN_SIDE} pixels, got {patch_size}")
            num_filters, latent_filters = preset.filters(base[1] if base else quality)
            steps, learning_rate, init_from = preset.steps, preset.learning_rate, None
            if base and not is_base:
                steps, learning_rate = preset.fine_tuning()
                init_from = str(pathlib.Path(root) / (run_name(kind, *base) + BASE_SUFFIX) / MODEL_FILE)
            configs[run_name(kind, distortion, quality) + (BASE_SUFFIX if is_base else "")] = RunConfig(
                model=kind, distortion=distortion, quality=quality, num_filters=num_filters,
                latent_filters=latent_filters, data=data, steps=steps, batch_size=batch_size,
                patch_size=patch_size, learning_rate=learning_rate,
                learning_rate_decay=preset.learning_rate_decay, checkpoint_every=preset.checkpoint_every,
                downsample=preset.downsample, screen_saturation=preset.screen_saturation,
                initializer=preset.initializer, adam_epsilon=preset.adam_epsilon, clip_norm=preset.clip_norm,
                density_init_scale=preset.density_init_scale, init_from=init_from,
            )  # fmt: skip
    return configs


def _base_run(preset, distortions, qualities, root):
    """(distortion, quality) of the run every other one is fine-tuned from, or None for separate models."""
    if preset.base_quality is None:
        return None
    if preset.base_quality not in qualities:
        raise ValueError(f"the base quality {preset.base_quality} is not among the qualities "
                         f"{', '.join(map(str, qualities))}")
    if root is None:
        raise ValueError("fine-tuning from a base run needs the sweep's root folder")
    return ("mse" if "mse" in distortions else distortions[0]), preset.base_quality


def _check_choice(what, chosen, known):
    if not chosen:
        raise ValueError(f"no {what} selected")
    unknown = [str(value) for value in chosen if value not in known]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(map(str, known))}")


# --- training and evaluation -------------------------------------------------------------------------------


def image_digests(images):
    """name -> sha256 of the pixels and shape, so that a cached evaluation names exactly the images it measured."""
    return {
        name: hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest() for name, image in images.items()
    }


def evaluated_rows(name, model, run_dir, images, progress=True):
    """The model's rows on `images` (`evaluate.evaluate_models`), from run_dir/evaluation.json when that cache was
    written for the same weights and tables (the model's fingerprint) and the same images."""
    key = {"fingerprint": model.fingerprint().hex(), "images": image_digests(images)}
    stored = _cached_evaluation(run_dir)
    if stored.get("key") == key:
        return [{**row, "model": name} for row in stored["rows"]]
    rows = evaluate.evaluate_models({name: model}, images, progress=progress)
    atomic_write_bytes(pathlib.Path(run_dir) / EVALUATION_FILE,
                       json.dumps({"key": key, "rows": rows}, indent=1).encode("utf-8"), force=True)
    return rows


def _cached_evaluation(run_dir):
    """run_dir/evaluation.json as {"key": ..., "rows": [...]}, or {} where there is none (or an unreadable one)."""
    try:
        stored = json.loads((pathlib.Path(run_dir) / EVALUATION_FILE).read_text())
        return stored if isinstance(stored, dict) and isinstance(stored.get("key"), dict) and "rows" in stored else {}
    except (OSError, ValueError):
        return {}


def keep_claim(claim):
    """A Keras callback that stops training (`ClaimLost`) once another worker has taken the model over."""
    import keras

    return keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: claim.check())


def _finished(run_dir, images, is_base):
    """Whether the run needs nothing more: trained, and evaluated on exactly `images` unless it is a base run."""
    if not (run_dir / MODEL_FILE).exists():
        return False
    if images is None or is_base:
        return True
    return _cached_evaluation(run_dir).get("key", {}).get("images") == image_digests(images)


def run_sweep(configs, root, images=None, progress=True, extra_callbacks=(), claims=None, poll=None):
    """Train (or resume, or skip) each run of `configs` under `root`, then evaluate it on `images` (if given).

    claims: an `experiments.claims.Claims` shared with other workers running the same sweep (default: one on
    `root`; False: none, every model is this process's). A model claimed by a live worker is left to it and waited
    for (every `poll` seconds, default the claims' heartbeat); a fine-tune waits for its base run.

    Returns (rows, summary, failures): the per-image rows of every evaluated model, name -> {"run": its
    RunConfig, "settings", "aggregate"} as in `evaluate.summarize`, and name -> message for diverged runs.
    """
    root = pathlib.Path(root)
    if claims is None:
        claims = Claims(root)
    poll = poll if poll is not None else (claims.heartbeat if claims else 1.0)
    failures, pending = {}, list(configs)
    while pending:
        waiting = [name for name in pending
                   if not _work_on(name, configs, root, images, progress, extra_callbacks, claims, failures)]
        if waiting and len(waiting) == len(pending):
            time.sleep(poll)  # every model left is another worker's, or waits for a base run
        pending = waiting
    return (*_collected(configs, root, images, progress, failures), failures)


def _work_on(name, configs, root, images, progress, extra_callbacks, claims, failures):
    """One look at one model: train and evaluate it if it is free; True once nothing is left to do for it here."""
    from tfhyper.training import TrainingDiverged, train

    config, run_dir, is_base = configs[name], root / name, name.endswith(BASE_SUFFIX)
    failed = claims.failure(name) if claims else None
    if failed:
        failures[name] = failed
        return True
    position = f"[{list(configs).index(name) + 1}/{len(configs)}] {name}"
    if _finished(run_dir, images, is_base):
        print(f"{position}: trained already", flush=True)
        return True
    if config.init_from and not pathlib.Path(config.init_from).exists():
        base = pathlib.Path(config.init_from).parent.name
        if base in configs and base not in failures:
            return False  # its base run is still training, here or on another worker
        failures[name] = f"not trained: its base run {base} has no model"
        print(f"{name}: {failures[name]}", file=sys.stderr, flush=True)
        return True
    claim = claims.take(name) if claims else contextlib.nullcontext()
    if claim is None:
        return False
    with claim:
        state = "trained already" if (run_dir / MODEL_FILE).exists() else "training"
        print(f"{position}: {state}", flush=True)
        keep = [keep_claim(claim)] if claims else []
        try:
            model, _ = train(config, run_dir, verbose=1 if progress else 0,
                             extra_callbacks=[*keep, *extra_callbacks])
        except TrainingDiverged as error:
            print(f"{name}: {error}", file=sys.stderr, flush=True)
            failures[name] = str(error)
            if claims:
                claim.end(FAILED, str(error))
            return True
        except ClaimLost as error:
            print(f"{name}: {error}; leaving it to that worker", file=sys.stderr, flush=True)
            return False
        if images is not None and not is_base:
            evaluated_rows(name, model, run_dir, images, progress)
    return True


def _collected(configs, root, images, progress, failures):
    """(rows, summary) of every evaluated model, whichever worker trained and evaluated it (from its cache)."""
    from tfhyper.training import train

    rows, summary = [], {}
    if images is None:
        return rows, summary
    for name, config in configs.items():
        if name in failures or name.endswith(BASE_SUFFIX):
            continue
        run_dir = root / name
        model = train(config, run_dir, verbose=0)[0]  # a finished run is loaded, not trained
        model_rows = evaluated_rows(name, model, run_dir, images, progress)
        rows += model_rows
        summary[name] = {"run": dataclasses.asdict(config), **evaluate.summarize(model_rows, {name: model})[name]}
        if config.init_from:  # one curve per base run, whatever the paper's N at each lambda
            settings = summary[name]["settings"]
            settings["curve"] = (f"{settings['class']} ({config.distortion}, fine-tuned, N={settings['N']}, "
                                 f"M={settings['M']})")
    return rows, summary


# --- command line ------------------------------------------------------------------------------------------


def define_flags():
    """The command line's flags; defined on demand so that importing this module adds none to other programs."""
    flags.DEFINE_enum("preset", None, list(PRESETS), "Training schedule: paper (section 4.1, for a GPU), cpu "
                      "(all 32 models in hours on 2 cores), test (seconds; checks the machinery).")
    flags.DEFINE_list("models", list(KINDS), f"Model kinds, default the paper's two; any of "
                      f"{cli.described(model_kinds())}.")
    flags.DEFINE_list("distortions", list(DISTORTIONS), "Distortions D of eq. 10: mse, ms-ssim.")
    flags.DEFINE_list("qualities", [str(q) for q in QUALITIES], "The paper's rate points 1..8 (N, M and lambda).")
    cli.define_run_flags(["data"])
    flags.DEFINE_string("root", None, "Folder of the run directories, one per model (e.g. ROOT/hyperprior-mse-q4).")
    flags.DEFINE_string("output", None, f"Per-image results CSV; a JSON goes beside it (default: ROOT/{RESULTS_FILE}).")
    flags.DEFINE_bool("evaluate", True, "Evaluate the trained models on Kodak and write the results table.")
    cli.define_run_flags(OVERRIDES, default=None, help_text="{help} Default: the preset's (for every model).",
                         bounds={"learning_rate": {"lower_bound": 0}})
    flags.DEFINE_float("filter_scale", None, "Overrides the preset's factor on the paper's N and M.", lower_bound=0)
    flags.DEFINE_integer("base_quality", None, "Train one model per kind long and fine-tune it to every selected "
                         "quality: the quality (of the MSE models, if selected) of the base run, trained first for "
                         "--steps into ROOT/KIND-mse-qQ-base; every model starts from it with its N and M (default: "
                         "separate models, as the paper trains them).",
                         lower_bound=min(QUALITIES), upper_bound=max(QUALITIES))
    flags.DEFINE_integer("fine_tune_steps", None, "Steps of each fine-tuned model (default: a quarter of --steps).",
                         lower_bound=1)
    flags.DEFINE_float("fine_tune_learning_rate", None, "Adam learning rate of the fine-tuning (default: 0.3 x "
                       "--learning_rate), with the same decay.", lower_bound=0)
    cli.define_run_flags(["strategy", "devices", "jit_compile"])
    flags.DEFINE_integer("gpu", None, "Pin this worker to the GPU of this index (one worker per GPU, all with the "
                         "same flags, share the sweep). Default: TensorFlow's choice, or --strategy's devices.",
                         lower_bound=0)
    flags.DEFINE_float("claim_expiry", EXPIRY, "Seconds without a heartbeat after which another worker takes "
                       "over a model claimed by a worker that stopped (one of this machine's is taken over at once).",
                       lower_bound=1)
    evaluate.define_image_flags()
    flags.mark_flag_as_required("preset")
    flags.mark_flag_as_required("root")


def _qualities(values):
    try:
        return [int(value) for value in values]
    except ValueError:
        raise ValueError(f"qualities are integers 1..8, got {','.join(values)}") from None


def main(options):
    """Train, evaluate and tabulate the selected models (the command line of this module's docstring)."""
    output = options.output or pathlib.Path(options.root) / RESULTS_FILE
    try:
        from tfhyper import distribute

        if options.gpu is not None:
            distribute.pin_gpu(options.gpu)
        # A cluster (multi_worker) trains each model together, in the same order on every worker, and its chief
        # evaluates; elsewhere each process is one worker of the shared sweep, claiming models.
        cluster = options.strategy == "multi_worker"
        evaluates = options.evaluate and (not cluster or distribute.is_chief(distribute.make_strategy("multi_worker")))
        preset = with_overrides(PRESETS[options.preset], filter_scale=options.filter_scale,
                                base_quality=options.base_quality, fine_tune_steps=options.fine_tune_steps,
                                fine_tune_learning_rate=options.fine_tune_learning_rate,
                                **{name: options[name].value for name in OVERRIDES})
        configs = sweep_configs(preset, options.models, options.distortions, _qualities(options.qualities),
                                options.data, root=options.root)
        configs = {name: dataclasses.replace(config, strategy=options.strategy, devices=options.devices,
                                             jit_compile=options.jit_compile) for name, config in configs.items()}
        # Images first: a missing Kodak set is reported before hours of training, not after.
        images = None
        if evaluates:
            images = evaluate.resolve_images(None, options.kodak, options.cache_dir, options.limit)
        shared = False if cluster else Claims(options.root, expiry=options.claim_expiry)
        rows, summary, failures = run_sweep(configs, options.root, images, claims=shared)
        if rows:
            results.write_results(output, rows, summary, overwrite=True, preset=options.preset,
                                  preset_settings=dataclasses.asdict(preset), failures=failures)
    except (ValueError, OSError) as error:  # Bad flags, folders, run settings or destinations: one line.
        sys.exit(f"sweep: {error}")
    if rows:
        print(evaluate.format_table(summary))
        print(f"wrote {output} and {results.json_path(output)}")
    if failures:
        sys.exit(f"sweep: training diverged for {', '.join(failures)}")


if __name__ == "__main__":
    cli.run(main, define_flags)
