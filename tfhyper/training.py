"""Training runs: Adam on rate + lambda * distortion (section 4.1), resumable, with Keras callbacks.

A run lives in one directory:

    MODEL_DIR/
      run.json          the settings of the run (a resumed run must match them)
      checkpoint.keras  the latest model with its optimizer state, replaced atomically
      progress.json     steps done, written after each checkpoint
      logs/             TensorBoard
      model.keras       the final model, written when training finishes

Training is split into "epochs" of `checkpoint_every` steps: Keras checkpoints at epoch ends, so an
interrupted run resumes at exactly the step of its last checkpoint with the optimizer state intact.

On several devices or machines (`RunConfig.strategy`, `tfhyper.distribute`) the model and optimizer live under
the strategy's scope, every worker draws its own crops, and only the chief writes the directory; the other
workers resume from the chief's checkpoint, so the directory must be on a filesystem they all see.
"""
import dataclasses
import json
import math
import os
import pathlib
import tempfile
import warnings

import keras
import tensorflow as tf

from tfhyper import distribute, paper
from tfhyper.hardware import precision_warning


def _setting(default, help_text, **flag):
    """A RunConfig field with what a command line says of it (`experiments.cli` makes a flag per field): its help,
    and where they apply `lower_bound`, `upper_bound`, `choices` (a tuple, or a mapping value -> description
    listed after the help, or a function returning one) and `off` (the flag's value that stands for None)."""
    return dataclasses.field(default=default, metadata={"help": help_text, **flag})


def model_kinds():
    """kind -> title of each model of `tfhyper.models.MODELS`, the choices of RunConfig.model."""
    from tfhyper.models import MODELS

    return {kind: cls.TITLE for kind, cls in MODELS.items()}


@dataclasses.dataclass
class RunConfig:
    """Everything that defines a training run. Defaults: the paper's values where section 4.1 gives them (Adam
    1e-4, batches of 8 random 256x256 crops); where it is silent (initialization, Adam's epsilon, clipping),
    tfhyper's measured recipe (`tfhyper.paper`)."""

    model: str = _setting("hyperprior", "Model kind (tfhyper.models.MODELS)", choices=model_kinds)
    distortion: str = _setting("mse", "D of eq. 10", choices={"mse": "MSE on the 0..255 scale",
                                                              "ms-ssim": "1 - MS-SSIM"})
    quality: int = _setting(3, "The paper's rate point 1..8; sets N, M and lambda.", lower_bound=1, upper_bound=8)
    lmbda: float | None = _setting(None, "Rate-distortion trade-off; overrides the quality's lambda.")
    num_filters: int | None = _setting(None, "N of figure 4; overrides the quality's.", lower_bound=1)
    latent_filters: int | None = _setting(None, "M of figure 4; overrides the quality's.", lower_bound=1)
    data: str | None = _setting(
        None, "Training images: a folder, a glob, or tfds:NAME[:split]. Default: built-in synthetic images.")
    steps: int = _setting(1_000_000, "Total training steps.", lower_bound=1)
    batch_size: int = _setting(paper.BATCH_SIZE, f"Crops per optimizer step in all, shared by the replicas of a "
                               f"--strategy (paper: {paper.BATCH_SIZE}).", lower_bound=1)
    patch_size: int = _setting(paper.PATCH_SIZE, f"Crop size (paper: {paper.PATCH_SIZE}).", lower_bound=16)
    learning_rate: float = _setting(paper.LEARNING_RATE, "Adam learning rate (paper: 1e-4).")
    learning_rate_decay: str = _setting("none", "Learning-rate schedule", choices={
        "none": "constant, as in the paper", "cosine": "down to a hundredth of it at the last step"})
    checkpoint_every: int = _setting(1000, "Steps between checkpoints (and progress bars).", lower_bound=1)
    downsample: bool = _setting(False, "Paper's preprocessing: shrink large photos so the shorter side is 640-1200.")
    screen_saturation: bool = _setting(False, "Paper's preprocessing: skip over-saturated images.")
    precision: str = _setting("float32", "Keras dtype policy of the transforms (entropy models: float32).",
                              choices=("float32", "mixed_bfloat16"))
    seed: int = _setting(0, "Random seed of initialization and crops.")
    initializer: str = _setting(paper.INITIALIZER, "Starting weights of the convolutions (tfhyper.layers.INITIALIZERS)",
                                choices={"glorot_uniform": "Keras' default, zero biases",
                                         "fan_in_uniform": "PyTorch's default: kernel and bias uniform within "
                                                           "1/sqrt(fan-in)"})
    density_init_scale: float = _setting(paper.DENSITY_INIT_SCALE, "Initial width of the factorized density "
                                         "(appendix 6.1): of y in the factorized prior, of z in the hyperpriors.",
                                         lower_bound=1e-3)
    adam_epsilon: float = _setting(paper.ADAM_EPSILON, "Adam's epsilon.", lower_bound=0.0)
    clip_norm: float | None = _setting(paper.GRADIENT_CLIP_NORM, "Clip each step's gradients to this global norm "
                                       "(0: no clipping).", lower_bound=0.0, off=0.0)
    jit_compile: str = _setting("auto", "XLA compilation of the training step", choices={
        "auto": "Keras' choice: on with a GPU or TPU, off on CPUs, where XLA made the step slower",
        "on": "always", "off": "never"})
    strategy: str = _setting("default", "tf.distribute strategy (tfhyper.distribute)",
                             choices=distribute.STRATEGIES)
    devices: str | None = _setting(None, "Devices of the mirrored strategy, comma-separated (e.g. /gpu:0,/gpu:1); "
                                   "default: all local GPUs.")
    init_from: str | None = _setting(
        None, "Start from the weights of a saved model (.keras file or zoo:NAME) of the same kind, N and M instead "
        "of a fresh initialization: fine-tuning one trained model to other lambdas shares its training across a "
        "curve.")

    def resolved(self):
        """N, M and lambda after applying the quality table and any overrides."""
        q = paper.QUALITIES[self.quality]
        return (
            self.num_filters or q.num_filters,
            self.latent_filters or q.latent_filters,
            self.lmbda if self.lmbda is not None else q.lmbda(self.distortion),
        )


# What a run trained with before its run.json recorded these settings (they were added later, some with other
# defaults): resuming such a run with other values is refused like any other change of settings.
SETTINGS_BEFORE_THEY_EXISTED = {
    "learning_rate_decay": "none",
    "initializer": "glorot_uniform",
    "adam_epsilon": 1e-7,
    "density_init_scale": paper.DENSITY_INIT_SCALE,
    "clip_norm": None,
    "init_from": None,
    "jit_compile": "auto",
}

# How a run is computed, not what it trains: a run may resume with other values (on other devices, say).
EXECUTION_SETTINGS = ("strategy", "devices")

JIT_COMPILE = {"auto": "auto", "on": True, "off": False}  # RunConfig.jit_compile -> keras.Model.compile's

LEARNING_RATE_DECAYS = ("none", "cosine")


def learning_rate_schedule(config):
    """Adam's learning rate: constant (section 4.1), or a cosine decay over the run's steps.

    The paper trains at a constant 1e-4 for as long as it takes. Short runs at a higher rate (the cpu preset of
    `experiments.sweep`) need the rate brought down towards their end: at a constant 1e-3 a factorized model
    diverged near step 4,750, and a rate that stays high keeps the last weights jittering instead of settling.
    "cosine" falls from `learning_rate` to 1 % of it along half a cosine, ending at `steps`. The schedule is part
    of the optimizer, so it is saved in every checkpoint and a resumed run continues on it.
    """
    if config.learning_rate_decay not in LEARNING_RATE_DECAYS:
        raise ValueError(f"learning_rate_decay must be one of {', '.join(LEARNING_RATE_DECAYS)}, "
                         f"got {config.learning_rate_decay!r}")
    if config.learning_rate_decay == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=config.steps, alpha=0.01)
    return config.learning_rate


def build_model(config):
    from tfhyper.models import model_class

    num_filters, latent_filters, lmbda = config.resolved()
    cls = model_class(config.model)
    model = cls(num_filters, latent_filters, lmbda=lmbda, distortion=config.distortion, initializer=config.initializer,
                density_init_scale=config.density_init_scale)
    model.build()
    return model


def _start_from(model, spec):
    """Copies the weights of the saved model `spec` into the freshly built `model` (same kind, N and M)."""
    from tfhyper import zoo
    from tfhyper.models import load_model

    start = load_model(zoo.resolve(spec))
    mine = (model.KIND, model.num_filters, model.latent_filters, model.density_filters)
    theirs = (start.KIND, start.num_filters, start.latent_filters, start.density_filters)
    if mine != theirs:
        raise ValueError(f"--init_from {spec} is a {theirs[0]} model with N={theirs[1]}, M={theirs[2]}; this run "
                         f"trains a {mine[0]} model with N={mine[1]}, M={mine[2]}")
    model.set_weights(start.get_weights())


def build_optimizer(config):
    """Adam (section 4.1) with the run's learning-rate schedule, epsilon and gradient clipping.

    Clipping is by the global norm of all gradients together (`clip_norm`), as torch.nn.utils.clip_grad_norm_
    does in CompressAI's training recipe, so the direction of a step is kept and only its length bounded.
    """
    return keras.optimizers.Adam(
        learning_rate_schedule(config), epsilon=config.adam_epsilon, global_clipnorm=config.clip_norm or None)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the model with its optimizer state at each epoch end: temp file, then rename into place,
    so that a run killed mid-save still has its previous checkpoint."""

    def __init__(self, run_dir, steps_per_epoch):
        super().__init__()
        self.run_dir = pathlib.Path(run_dir)
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        if logs and any(not math.isfinite(v) for v in logs.values() if isinstance(v, float)):
            return  # never checkpoint a diverged model
        fd, tmp = tempfile.mkstemp(suffix=".keras", dir=self.run_dir)
        os.close(fd)
        try:
            self.model.save(tmp)
            os.replace(tmp, self.run_dir / "checkpoint.keras")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        steps = int(self.model.optimizer.iterations.numpy())
        progress = {"epochs_done": epoch + 1, "steps_done": steps, "metrics": logs}
        write_json_atomic(self.run_dir / "progress.json", progress)


class StopAtStep(keras.callbacks.Callback):
    """Ends training after exactly `steps` optimizer steps, also in the middle of a checkpoint interval."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and remembers it (keras.callbacks.TerminateOnNaN does not)."""

    diverged_at = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = batch
            self.model.stop_training = True


def write_json_atomic(path, obj):
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=float)
    os.replace(tmp, path)


class TrainingDiverged(RuntimeError):
    pass


class WorkerLost(RuntimeError):
    """A worker of a multi-worker run stopped or could not be reached, so the others could not go on."""


def devices_of(config):
    """The device names of `config.devices` ("/gpu:0,/gpu:1"), or None."""
    return distribute.device_names(config.devices)


def train(config, run_dir, verbose=1, extra_callbacks=()):
    """Trains (or resumes) the run in `run_dir`; returns the final model and its last metrics.

    A finished run is not retrained; a run whose settings differ from `run.json` is refused, so a
    directory never mixes two experiments.
    """
    from tfhyper.models import load_model

    learning_rate_schedule(config)  # a bad decay is refused before the run directory is touched
    # First: a multi-worker strategy must exist before any other TensorFlow operation of the process.
    strategy = distribute.make_strategy(config.strategy, devices_of(config))
    distribute.check_batch_size(config.batch_size, strategy)
    chief = distribute.is_chief(strategy)
    run_dir = pathlib.Path(run_dir)
    if chief:
        run_dir.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.asdict(config)
    run_file = run_dir / "run.json"
    if run_file.exists():
        # Settings added since a run was started take the values that run trained with.
        stored = json.loads(run_file.read_text())
        previous = {**dataclasses.asdict(RunConfig()), **SETTINGS_BEFORE_THEY_EXISTED, **stored}
        changed = sorted(k for k in settings if previous.get(k) != settings[k] and k not in EXECUTION_SETTINGS)
        if changed:
            raise ValueError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); use another directory")
    elif chief:
        write_json_atomic(run_file, settings)

    final = run_dir / "model.keras"
    if final.exists():
        progress = json.loads((run_dir / "progress.json").read_text())
        return load_model(final), progress.get("metrics", {})

    slow = precision_warning(config.precision)
    if slow:
        warnings.warn(slow, RuntimeWarning, stacklevel=2)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    try:
        return _train(config, run_dir, final, verbose, extra_callbacks, strategy, chief)
    except tf.errors.OpError as error:
        if config.strategy != "multi_worker":
            raise
        raise WorkerLost(f"a worker of the cluster stopped or cannot be reached ({type(error).__name__}); run the "
                         f"same command on every worker again to resume {run_dir} from its last checkpoint") from None
    finally:
        # The policy is process-wide: models made after this run must not silently compute in bfloat16.
        keras.mixed_precision.set_global_policy(previous_policy)


def _train(config, run_dir, final, verbose, extra_callbacks, strategy, chief):
    from tfhyper.models import load_model

    steps_per_epoch = min(config.checkpoint_every, config.steps)
    epochs = math.ceil(config.steps / steps_per_epoch)
    checkpoint = run_dir / "checkpoint.keras"
    initial_epoch = 0
    with strategy.scope():  # variables, optimizer state and metrics made for every replica
        if checkpoint.exists():
            model = load_model(checkpoint)
            # The step count lives in the checkpoint itself (the optimizer's), so it cannot disagree with it.
            done = int(model.optimizer.iterations.numpy())
            initial_epoch = done // steps_per_epoch if done < config.steps else epochs
            if verbose:
                print(f"Resuming {run_dir} at step {done} of {config.steps}")
        else:
            keras.utils.set_random_seed(config.seed)
            model = build_model(config)
            if config.init_from:
                _start_from(model, config.init_from)
            model.compile(optimizer=build_optimizer(config), jit_compile=JIT_COMPILE[config.jit_compile])

    # A resumed run draws fresh crops instead of replaying the ones it has already trained on.
    dataset = training_data(config, strategy, seed=config.seed + initial_epoch)
    nan_guard = StopOnNaN()
    # Only the chief writes the run directory; the other workers train in step with it.
    writers = [AtomicCheckpoint(run_dir, steps_per_epoch),
               keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), update_freq=100)] if chief else []
    history = model.fit(
        dataset,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        shuffle=False,  # the dataset shuffles itself
        verbose=verbose,
        callbacks=[
            StopAtStep(config.steps),
            nan_guard,
            *writers,
            *extra_callbacks,
        ],
    )
    if nan_guard.diverged_at is not None:
        raise TrainingDiverged(
            f"loss became NaN or infinite; the last good checkpoint is kept in {run_dir} "
            "(to try a lower --learning_rate, use a new --model_dir)"
        )
    if history.history:
        metrics = {k: float(v[-1]) for k, v in history.history.items()}
    else:  # killed after its last checkpoint: nothing left to train, the metrics are in progress.json
        metrics = json.loads((run_dir / "progress.json").read_text()).get("metrics", {})
    if not chief:
        return model, metrics
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=run_dir)
    os.close(fd)
    model.save(tmp)
    os.replace(tmp, final)
    steps = int(model.optimizer.iterations.numpy())
    write_json_atomic(run_dir / "progress.json", {"epochs_done": epochs, "steps_done": steps, "metrics": metrics})
    return model, metrics


def training_data(config, strategy, seed):
    """The run's crops: batches of `config.batch_size` on one device; under a strategy with several replicas or
    workers, each replica's share of the global batch, each worker drawing from its own seed
    (`distribute.pipeline_seed`)."""
    from tfhyper.data import make_dataset

    def crops(batch_size, seed):
        return make_dataset(config.data, patch_size=config.patch_size, batch_size=batch_size,
                            downsample=config.downsample, screen_saturation=config.screen_saturation, seed=seed)

    if strategy.num_replicas_in_sync == 1 and config.strategy == "default":
        return crops(config.batch_size, seed)

    def pipeline(context):
        return crops(context.get_per_replica_batch_size(config.batch_size),
                     distribute.pipeline_seed(seed, context))

    return strategy.distribute_datasets_from_function(pipeline)
