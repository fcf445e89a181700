"""Training runs: checkpoints, exact resume after interruption, refusal of mixed settings, NaN stop."""
import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfhyper
from tfhyper.training import RunConfig, TrainingDiverged, build_model, train

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def tiny(**overrides):
    settings = dict(num_filters=8, latent_filters=8, steps=6, checkpoint_every=2, batch_size=2, patch_size=64)
    settings.update(overrides)
    return RunConfig(**settings)


class Interrupt(keras.callbacks.Callback):
    """Simulates a kill right after the checkpoint of the given epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.snapshot = [w.numpy().copy() for w in self.model.weights]
            self.iterations = int(self.model.optimizer.iterations.numpy())
            raise KeyboardInterrupt


def test_interrupted_run_resumes_exactly_from_its_checkpoint(tmp_path):
    config = tiny()
    interrupt = Interrupt(epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, verbose=0, extra_callbacks=[interrupt])
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress["steps_done"] == 4 and not (tmp_path / "model.keras").exists()

    from tfhyper import load_model

    restored = load_model(tmp_path / "checkpoint.keras")
    assert int(restored.optimizer.iterations.numpy()) == interrupt.iterations == 4
    for saved, now in zip(interrupt.snapshot, restored.weights):
        np.testing.assert_array_equal(saved, now.numpy())

    model, metrics = train(config, tmp_path, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 6  # resumed at step 4, not restarted
    assert (tmp_path / "model.keras").exists() and np.isfinite(metrics["loss"])
    # A finished run is not trained again.
    again, _ = train(config, tmp_path, verbose=0)
    assert int(again.optimizer.iterations.numpy()) == 6


def test_a_run_directory_refuses_other_settings(tmp_path):
    train(tiny(steps=2), tmp_path, verbose=0)
    with pytest.raises(ValueError, match="other settings.*lmbda"):
        train(tiny(steps=2, lmbda=0.5), tmp_path, verbose=0)


def test_training_stops_on_nan(tmp_path):
    with pytest.raises(TrainingDiverged, match="NaN"):
        train(tiny(learning_rate=float("inf")), tmp_path, verbose=0)
    assert not (tmp_path / "model.keras").exists()


@pytest.mark.parametrize("kind", ["meanscale"])  # the command is the same for every kind; the newest one runs it
def test_train_command_on_shared_photos(kind, shared_dir, tmp_path):
    command = [
        sys.executable, "-m", "experiments.train", f"--model={kind}", f"--data={shared_dir / 'data/train/bsds500'}",
        "--num_filters=8", "--latent_filters=8", "--patch_size=64", "--batch_size=2", "--steps=4",
        "--checkpoint_every=2", f"--model_dir={tmp_path / 'run'}", "--clip_norm=0", "--initializer=glorot_uniform",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PSNR" in result.stdout and (tmp_path / "run" / "model.keras").exists()
    assert type(tfhyper.load_model(tmp_path / "run" / "model.keras")).KIND == kind
    # --clip_norm=0 turns clipping off (the authors' recipe, with --initializer=glorot_uniform).
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert settings["clip_norm"] is None and settings["initializer"] == "glorot_uniform"


def test_steps_are_exact_when_not_a_multiple_of_the_checkpoint_interval(tmp_path):
    model, _ = train(tiny(steps=5, checkpoint_every=2), tmp_path, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 5
    assert json.loads((tmp_path / "progress.json").read_text())["steps_done"] == 5
    assert keras.mixed_precision.global_policy().name == "float32"


def test_cosine_decay_follows_half_a_cosine_to_a_hundredth():
    from tfhyper.training import learning_rate_schedule

    schedule = learning_rate_schedule(tiny(learning_rate=1e-3, steps=1000, learning_rate_decay="cosine"))
    for step in (0, 250, 500, 999, 1000):
        expected = 1e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * step / 1000)))
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)
    assert learning_rate_schedule(tiny(learning_rate=2e-4)) == 2e-4  # "none": the paper's constant rate
    with pytest.raises(ValueError, match="learning_rate_decay must be one of none, cosine"):
        train(tiny(learning_rate_decay="linear"), REPO / "no-such-run", verbose=0)
    assert not (REPO / "no-such-run").exists()


def test_a_resumed_run_continues_on_its_decay_schedule(tmp_path):
    config = tiny(learning_rate=1e-3, learning_rate_decay="cosine")
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path, verbose=0, extra_callbacks=[Interrupt(epoch=1)])
    from tfhyper import load_model

    restored = load_model(tmp_path / "checkpoint.keras")
    # Step 4 of 6: 1e-3 * (0.01 + 0.99 * (1 + cos(2 pi / 3)) / 2), not the initial rate.
    np.testing.assert_allclose(float(restored.optimizer.learning_rate), 1e-3 * (0.01 + 0.99 * 0.25), rtol=1e-5)
    model, _ = train(config, tmp_path, verbose=0)
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 1e-5, rtol=1e-5)  # the last step's


def test_a_run_started_before_a_setting_existed_resumes_with_its_default(tmp_path):
    train(tiny(steps=2), tmp_path, verbose=0)
    settings = json.loads((tmp_path / "run.json").read_text())
    del settings["learning_rate_decay"]
    (tmp_path / "run.json").write_text(json.dumps(settings))
    model, _ = train(tiny(steps=2), tmp_path, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2
    with pytest.raises(ValueError, match="other settings.*learning_rate_decay"):
        train(tiny(steps=2, learning_rate_decay="cosine"), tmp_path, verbose=0)


def test_a_run_started_before_a_setting_existed_is_not_resumed_with_a_new_default(tmp_path):
    """A run recorded before clipping existed trained without it: resuming it with clipping mixes two recipes."""
    train(tiny(steps=2, clip_norm=None), tmp_path, verbose=0)
    settings = json.loads((tmp_path / "run.json").read_text())
    del settings["clip_norm"]
    (tmp_path / "run.json").write_text(json.dumps(settings))
    model, _ = train(tiny(steps=2, clip_norm=None), tmp_path, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2
    with pytest.raises(ValueError, match="other settings.*clip_norm"):
        train(tiny(steps=2, clip_norm=1.0), tmp_path, verbose=0)


@pytest.mark.parametrize("clip_norm", [None, 1.0, 0.25])
def test_adam_steps_on_the_gradient_clipped_to_the_configured_global_norm(clip_norm):
    """Adam's first step in Keras' form, var -= lr sqrt(1 - b2) / (1 - b1) m / (sqrt(v) + eps) with m = (1 - b1) g
    and v = (1 - b2) g^2, computed here on g clipped by hand; a large epsilon makes the step depend on |g|."""
    from tfhyper.training import build_optimizer

    epsilon, lr, b1, b2 = 10.0, 0.1, 0.9, 0.999
    optimizer = build_optimizer(RunConfig(learning_rate=lr, adam_epsilon=epsilon, clip_norm=clip_norm))
    # Two variables: clipping is by the norm of all gradients together, not per variable.
    gradients = [np.array([3.0, -4.0, 12.0], np.float32), np.array([[84.0]], np.float32)]  # global norm 85
    variables = [keras.Variable(np.zeros_like(g)) for g in gradients]
    optimizer.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in gradients], variables))
    scale = 1.0 if clip_norm is None else min(1.0, clip_norm / 85.0)
    for g, variable in zip(gradients, variables):
        clipped = g.astype(np.float64) * scale
        m, v = (1 - b1) * clipped, (1 - b2) * clipped**2
        expected = -lr * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + epsilon)
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5)


def test_a_trained_run_uses_the_configured_optimizer_and_initializer(tmp_path):
    config = tiny(steps=2, clip_norm=0.5, adam_epsilon=1e-8, initializer="fan_in_uniform")
    model, _ = train(config, tmp_path, verbose=0)
    restored = __import__("tfhyper").load_model(tmp_path / "checkpoint.keras")
    for m in (model, restored):
        assert m.optimizer.global_clipnorm == 0.5 and m.optimizer.epsilon == 1e-8
        assert m.get_config()["initializer"] == "fan_in_uniform"


def test_training_defaults_are_the_measured_recipe():
    """Section 4.1's values where the paper gives them; PyTorch's initialization and clipping at 1.0 where it is
    silent (tfhyper.paper has the measurement)."""
    from tfhyper.training import build_model, build_optimizer

    config = RunConfig()
    assert (config.learning_rate, config.batch_size, config.patch_size) == (1e-4, 8, 256)
    assert (config.initializer, config.adam_epsilon, config.clip_norm) == ("fan_in_uniform", 1e-7, 1.0)
    optimizer = build_optimizer(config)
    assert optimizer.global_clipnorm == 1.0 and optimizer.epsilon == 1e-7
    model = build_model(tiny())
    # Every convolution's bias starts non-zero within 1 / sqrt(fan-in) (Keras' default would be zeros).
    biases = [w for w in model.weights if w.path.endswith("/bias")]
    assert len(biases) == 14
    assert all(np.any(w.numpy() != 0) for w in biases)


def test_a_run_can_start_from_a_saved_model(tmp_path):
    """--init_from: the run starts from the saved weights (a step at a vanishing learning rate keeps them), not
    from its own initialization; a model of another size is refused in one line."""
    start, _ = train(tiny(steps=2, seed=3), tmp_path / "base", verbose=0)
    base = str(tmp_path / "base" / "model.keras")
    tuned, _ = train(tiny(steps=1, lmbda=0.05, learning_rate=1e-12, init_from=base), tmp_path / "tuned", verbose=0)
    assert tuned.lmbda == 0.05
    for mine, theirs in zip(tuned.get_weights(), start.get_weights(), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-6)
    # Without --init_from the same run starts from its own initialization, far from those weights.
    fresh = build_model(tiny(steps=1, lmbda=0.05))
    assert max(np.abs(a - b).max() for a, b in zip(fresh.get_weights(), start.get_weights())) > 0.01
    with pytest.raises(ValueError, match="N=8, M=8; this run trains a hyperprior model with N=16"):
        train(tiny(steps=1, num_filters=16, init_from=base), tmp_path / "bad", verbose=0)


@pytest.mark.parametrize("kind", ["factorized", "hyperprior"])
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_the_factorized_density_starts_as_a_logistic_of_the_configured_width(kind, scale):
    """At initialization the factors are zero and every softplus(matrix) is 1 / (s^(1/K) r_out): the composed
    logits are x / s plus a bias, whatever r (dims 1-3-3-3-1 multiply out to 1). So c(x) = sigmoid(x / s + b)."""
    model = build_model(tiny(model=kind, density_init_scale=scale))
    density = model.entropy_bottleneck.density
    x = np.array([-4.0, 0.0, 3.0, 7.5], np.float32)
    logits = density.logits_cumulative(np.broadcast_to(x, (density.channels, 1, x.size))).numpy()
    np.testing.assert_allclose(logits - logits[..., :1], np.broadcast_to((x - x[0]) / scale, logits.shape), rtol=1e-5)
    assert model.get_config()["density_init_scale"] == scale


def test_the_quickstart_starts_the_density_narrow_and_the_paper_preset_as_the_references():
    from experiments import quickstart, sweep
    from tfhyper import paper

    configs = sweep.sweep_configs(quickstart.QUICK, sweep.KINDS, ("mse",), (1, 3), root="runs")
    assert {c.density_init_scale for c in configs.values()} == {1.0}
    assert sweep.PRESETS["paper"].density_init_scale == paper.DENSITY_INIT_SCALE == 10.0
    assert RunConfig().density_init_scale == 10.0


def test_the_cpu_preset_starts_adam_at_2e_3_and_the_paper_preset_keeps_section_4_1():
    """The cpu preset's runs start at 2e-3 and fall along half a cosine to 1 % of it at their last step (closed form
    below); its fine-tunes and the quickstart's start at 3e-4, the quickstart's base runs at 1e-3; the paper preset
    keeps section 4.1's constant 1e-4."""
    import math

    from experiments import quickstart, sweep
    from tfhyper import paper
    from tfhyper.training import learning_rate_schedule

    def cosine(start, step, steps):
        return start * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / steps)))

    cpu = sweep.sweep_configs(sweep.PRESETS["cpu"], ("hyperprior",), ("mse",), (4,), root="runs")["hyperprior-mse-q4"]
    tuned = sweep.sweep_configs(sweep.with_overrides(sweep.PRESETS["cpu"], base_quality=4), ("factorized",),
                                ("mse",), (2, 4), root="runs")
    quick = sweep.sweep_configs(quickstart.QUICK, ("hyperprior",), ("mse",), (1, 3), root="runs")
    expected = [(cpu, 2e-3), (tuned["factorized-mse-q4-base"], 2e-3), (tuned["factorized-mse-q2"], 3e-4),
                (quick["hyperprior-mse-q3-base"], 1e-3), (quick["hyperprior-mse-q1"], 3e-4)]
    for config, start in expected:
        schedule = learning_rate_schedule(config)
        for step in (0, config.steps // 3, config.steps):
            assert float(schedule(step)) == pytest.approx(cosine(start, step, config.steps), rel=1e-5)
    paper_run = sweep.sweep_configs(sweep.PRESETS["paper"], ("hyperprior",), ("mse",), (4,), root="runs")
    assert learning_rate_schedule(paper_run["hyperprior-mse-q4"]) == paper.LEARNING_RATE == 1e-4
