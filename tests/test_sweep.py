"""The sweep of the paper's 32 models: presets, selection, resumption after interruption, no repeated work."""
import csv
import dataclasses
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from PIL import Image

import tfhyper
from experiments import evaluate, sweep
from experiments.claims import Claims
from tfhyper import paper

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture
def photos(shared_dir):
    return str(shared_dir / "data/train/bsds500")


# --- presets and selection ---------------------------------------------------------------------------------


def test_the_paper_preset_trains_the_32_models_of_section_4_1(photos):
    configs = sweep.sweep_configs(sweep.PRESETS["paper"], data=photos)
    assert len(configs) == 32
    assert list(configs)[:3] == ["hyperprior-mse-q1", "hyperprior-mse-q2", "hyperprior-mse-q3"]
    assert list(configs)[-1] == "factorized-ms-ssim-q8"
    for name, config in configs.items():
        kind, quality = name.split("-")[0], int(name.split("-q")[1])
        assert (config.model, config.quality, config.data) == (kind, quality, photos)
        assert config.distortion == ("ms-ssim" if "-ms-ssim-" in name else "mse")
        # Section 4.1: Adam 1e-4, 8 crops of 256x256, N and M of figure 4 (from the quality table).
        assert (config.learning_rate, config.batch_size, config.patch_size) == (1e-4, 8, 256)
        num_filters, latent_filters, lmbda = config.resolved()
        q = paper.QUALITIES[quality]
        assert (num_filters, latent_filters, lmbda) == (q.num_filters, q.latent_filters, q.lmbda(config.distortion))
        assert config.downsample and config.screen_saturation
        # Where the paper is silent, what the authors' implementation does (TensorFlow's defaults, no clipping).
        assert (config.initializer, config.adam_epsilon, config.clip_norm) == ("glorot_uniform", 1e-7, None)


def test_the_cpu_preset_scales_the_filters_and_fits_ms_ssim_crops():
    configs = sweep.sweep_configs(sweep.PRESETS["cpu"], qualities=[1, 8])
    assert configs["hyperprior-mse-q1"].resolved()[:2] == (32, 48)
    assert configs["factorized-ms-ssim-q8"].resolved()[:2] == (48, 80)
    assert (configs["hyperprior-mse-q8"].patch_size, configs["hyperprior-mse-q8"].batch_size) == (128, 8)
    assert (configs["hyperprior-ms-ssim-q1"].patch_size, configs["hyperprior-ms-ssim-q1"].batch_size) == (176, 4)
    assert configs["factorized-ms-ssim-q1"].resolved()[2] == paper.QUALITIES[1].lmbda_ms_ssim
    assert {(c.learning_rate, c.learning_rate_decay, c.steps) for c in configs.values()} == {(2e-3, "cosine", 5000)}
    # The measured recipe (tfhyper.paper): PyTorch's initialization, gradients clipped to norm 1.0.
    assert {(c.initializer, c.adam_epsilon, c.clip_norm) for c in configs.values()} == {("fan_in_uniform", 1e-7, 1.0)}
    paper_configs = sweep.sweep_configs(sweep.PRESETS["paper"], qualities=[1])
    assert {c.learning_rate_decay for c in paper_configs.values()} == {"none"}  # section 4.1: constant 1e-4


def test_flags_override_the_preset_for_every_model():
    preset = sweep.with_overrides(sweep.PRESETS["cpu"], steps=10, patch_size=192, batch_size=2, filter_scale=0.5,
                                  learning_rate_decay="none")
    configs = sweep.sweep_configs(preset, ["factorized"], ["mse", "ms-ssim"], [6])
    for config in configs.values():
        assert (config.steps, config.patch_size, config.batch_size, config.learning_rate) == (10, 192, 2, 2e-3)
        assert config.learning_rate_decay == "none"
        assert config.resolved()[:2] == (96, 160)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((["hyperprior", "context"], ["mse"], [1]), "unknown model context; choose from factorized, hyperprior, meanscale"),
        ((["hyperprior"], ["psnr"], [1]), "unknown distortion psnr"),
        ((["hyperprior"], ["mse"], [0, 9]), "unknown quality 0, 9; choose from 1, 2, 3, 4, 5, 6, 7, 8"),
        ((["hyperprior"], [], [1]), "no distortion selected"),
    ],
)
def test_a_bad_selection_is_one_clear_error(arguments, message):
    with pytest.raises(ValueError, match=message):
        sweep.sweep_configs(sweep.PRESETS["test"], *arguments)


def test_ms_ssim_models_refuse_crops_too_small_for_five_scales():
    preset = sweep.with_overrides(sweep.PRESETS["cpu"], patch_size=128)
    assert sweep.sweep_configs(preset, distortions=["mse"])
    with pytest.raises(ValueError, match="MS-SSIM models need crops of at least 161 pixels, got 128"):
        sweep.sweep_configs(preset, distortions=["ms-ssim"])


# --- resumption --------------------------------------------------------------------------------------------


class InterruptAfterFirstCheckpoint(keras.callbacks.Callback):
    """Stands for a kill: runs after the run's own checkpoint callback at the end of the first epoch."""

    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


class StartingStep(keras.callbacks.Callback):
    """Records the optimizer's step count each time training starts."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_begin(self, logs=None):
        self.steps.append(int(self.model.optimizer.iterations.numpy()))


def _stamps(run_dir):
    return {path.name: path.stat().st_mtime_ns for path in run_dir.iterdir() if path.is_file()}


def test_an_interrupted_sweep_resumes_and_skips_finished_models(crops, photos, tmp_path, monkeypatch):
    configs = sweep.sweep_configs(sweep.PRESETS["test"], ["hyperprior"], ["mse"], [1, 2], data=photos)
    first, second = list(configs)
    sweep.run_sweep({first: configs[first]}, tmp_path, crops, progress=False)
    finished = _stamps(tmp_path / first)
    assert {"model.keras", "evaluation.json"} <= set(finished)

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(configs, tmp_path, crops, progress=False, extra_callbacks=[InterruptAfterFirstCheckpoint()])
    progress = json.loads((tmp_path / second / "progress.json").read_text())
    assert progress["steps_done"] == 2 and not (tmp_path / second / "model.keras").exists()

    evaluated = []
    real_evaluate = evaluate.evaluate_models

    def spy(models, images, progress=True):
        evaluated.append(list(models))
        return real_evaluate(models, images, progress)

    monkeypatch.setattr(evaluate, "evaluate_models", spy)
    starts = StartingStep()
    rows, summary, failures = sweep.run_sweep(configs, tmp_path, crops, progress=False, extra_callbacks=[starts])
    # Only the interrupted model trained, from its checkpoint at step 2; only it was evaluated.
    assert starts.steps == [2]
    assert int(tfhyper.load_model(tmp_path / second / "model.keras").optimizer.iterations.numpy()) == 4
    assert evaluated == [[second]]
    assert _stamps(tmp_path / first) == finished
    assert failures == {} and list(summary) == [first, second]
    assert [(row["model"], row["image"]) for row in rows] == [(m, i) for m in configs for i in crops]
    cached = json.loads((tmp_path / first / "evaluation.json").read_text())["rows"]
    assert rows[:2] == cached
    assert summary[second]["run"]["steps"] == 4 and summary[second]["settings"]["N"] == 8

    # Another image set makes the cached evaluations stale: both models are measured again, neither retrained.
    one_image = {"kodim23": crops["kodim23"]}
    rows, _, _ = sweep.run_sweep(configs, tmp_path, one_image, progress=False, extra_callbacks=[starts])
    assert evaluated[1:] == [[first], [second]] and starts.steps == [2]
    assert [(row["model"], row["image"]) for row in rows] == [(first, "kodim23"), (second, "kodim23")]


# --- command line ------------------------------------------------------------------------------------------


def _command(*arguments):
    return [sys.executable, "-m", "experiments.sweep", *arguments]


@pytest.fixture
def kodak_folder(crops, tmp_path):
    """The two crops as PNG files in a folder, as --kodak takes them."""
    images = tmp_path / "kodak"
    images.mkdir()
    for name, image in crops.items():
        Image.fromarray(image).save(images / f"{name}.png")
    return images


def test_cli_killed_after_a_checkpoint_resumes_and_writes_the_table(crops, photos, tmp_path, kodak_folder):
    images = kodak_folder
    root = tmp_path / "runs"
    arguments = _command("--preset=test", "--models=hyperprior", "--distortions=mse", "--qualities=3", "--steps=8",
                         f"--data={photos}", f"--root={root}", f"--kodak={images}")
    run_dir = root / "hyperprior-mse-q3"

    process = subprocess.Popen(arguments, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hang_guard = time.monotonic() + 300  # against a hang only: a healthy run checkpoints within seconds
        while not (run_dir / "progress.json").exists():
            assert process.poll() is None, "the sweep ended before its first checkpoint"
            if time.monotonic() > hang_guard:
                pytest.fail("no checkpoint after 300 s: the sweep hangs")
            time.sleep(0.02)
    finally:
        process.kill()
        process.wait()
    steps_done = json.loads((run_dir / "progress.json").read_text())["steps_done"]
    assert 2 <= steps_done < 8 and not (run_dir / "model.keras").exists()

    result = subprocess.run(arguments, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Resuming {run_dir} at step {steps_done} of 8" in result.stdout
    assert int(tfhyper.load_model(run_dir / "model.keras").optimizer.iterations.numpy()) == 8
    with open(root / "results.csv", newline="", encoding="utf-8") as stream:
        written = list(csv.DictReader(stream))
    assert [(row["model"], row["image"]) for row in written] == [("hyperprior-mse-q3", "kodim05"),
                                                                 ("hyperprior-mse-q3", "kodim23")]
    document = json.loads((root / "results.json").read_text())
    entry = document["models"]["hyperprior-mse-q3"]
    assert document["preset"] == "test" and entry["run"]["steps"] == 8 and entry["settings"]["N"] == 8
    assert entry["aggregate"]["bpp"] == pytest.approx(np.mean([float(row["bpp"]) for row in written]), rel=1e-12)
    table = result.stdout.splitlines()
    assert any(line.startswith("hyperprior-mse-q3 ") for line in table) and any("bpp_z" in line for line in table)


def test_cli_prints_help_and_reports_bad_flags_in_one_line(tmp_path):
    from absl import flags

    assert not flags.FLAGS.flags_by_module_dict().get(sweep.__name__)
    result = subprocess.run(_command("--help"), cwd=REPO, capture_output=True, text=True, timeout=300)
    for flag in ("--preset", "--models", "--distortions", "--qualities", "--data", "--root", "--kodak"):
        assert flag in result.stdout
    result = subprocess.run(_command("--preset=test", "--qualities=1,x", f"--root={tmp_path / 'runs'}"),
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == "sweep: qualities are integers 1..8, got 1,x"
    assert not (tmp_path / "runs").exists()


def test_a_base_run_is_trained_first_and_every_model_fine_tuned_from_it(tmp_path):
    """--base_quality: per kind a base run at that quality (MSE if selected) first, with the preset's steps; every
    selected model (MS-SSIM and the base's quality included) starts from it with its N and M, a quarter of the
    steps and the preset's fine-tune learning rate (the cpu preset's 3e-4; where a preset sets none, 0.3 x the
    base's)."""
    preset = sweep.with_overrides(sweep.PRESETS["cpu"], steps=400, base_quality=4, patch_size=192)
    configs = sweep.sweep_configs(preset, ["hyperprior", "factorized"], ["ms-ssim", "mse"], [2, 4, 6], root=tmp_path)
    names = list(configs)
    assert names[0] == "hyperprior-mse-q4-base" and names[7] == "factorized-mse-q4-base" and len(names) == 14
    for name, config in configs.items():
        assert (config.num_filters, config.latent_filters) == (32, 48)  # q6 alone would be N=48, M=80
        if name.endswith("-base"):
            assert config.init_from is None and config.steps == 400 and config.learning_rate == 2e-3
            assert (config.distortion, config.quality) == ("mse", 4)
        else:
            assert config.init_from == str(tmp_path / f"{config.model}-mse-q4-base" / "model.keras")
            assert config.steps == 100 and config.learning_rate == pytest.approx(3e-4)
    shared = dataclasses.replace(preset, fine_tune_learning_rate=None)
    tuned = sweep.sweep_configs(shared, ["hyperprior"], ["mse"], [2, 4], root=tmp_path)["hyperprior-mse-q2"]
    assert tuned.learning_rate == pytest.approx(0.3 * 2e-3)
    with pytest.raises(ValueError, match="the base quality 4 is not among the qualities 2, 6"):
        sweep.sweep_configs(preset, ["hyperprior"], ["mse"], [2, 6], root=tmp_path)


def test_a_fine_tune_whose_base_diverged_is_reported_not_trained(tmp_path):
    preset = sweep.with_overrides(sweep.PRESETS["test"], base_quality=1)
    configs = sweep.sweep_configs(preset, ["factorized"], ["mse"], [1], root=tmp_path)
    del configs["factorized-mse-q1-base"]  # as if the base had diverged: no model to start from
    rows, summary, failures = sweep.run_sweep(configs, tmp_path, progress=False)
    assert failures == {"factorized-mse-q1": "not trained: its base run factorized-mse-q1-base has no model"}
    assert not (tmp_path / "factorized-mse-q1").exists()


def test_a_fine_tuned_curve_is_named_after_its_base_run(tmp_path):
    """Every model fine-tuned from a base run carries one curve name (its N and M), so that a curve whose lambdas
    the paper gives other N's stays one curve in the report and the figures."""
    preset = sweep.with_overrides(sweep.PRESETS["test"], base_quality=6)
    configs = sweep.sweep_configs(preset, ["factorized"], ["mse"], [1, 6], root=tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (176, 176, 3)).astype(np.uint8)
    rows, summary, failures = sweep.run_sweep(configs, tmp_path, {"a": image}, progress=False)
    assert not failures and set(summary) == {"factorized-mse-q1", "factorized-mse-q6"}  # the base is not evaluated
    n, m = configs["factorized-mse-q6-base"].num_filters, configs["factorized-mse-q6-base"].latent_filters
    for entry in summary.values():
        assert entry["settings"]["curve"] == f"FactorizedPrior (mse, fine-tuned, N={n}, M={m})"


# --- a sweep shared by workers -------------------------------------------------------------------------------


def _claims_of(root, pid, names):
    """Those of `names` whose newest claim is held (not ended) by the process `pid`."""
    claims = Claims(root)
    newest = {name: claims.newest(name) for name in names}
    return [name for name, claim in newest.items() if claim and claim[1].get("pid") == pid and not claim[1].get("state")]


def test_two_workers_share_a_sweep_and_one_finishes_the_model_of_the_other_killed(crops, photos, tmp_path,
                                                                                  kodak_folder):
    images = kodak_folder
    root = tmp_path / "runs"
    steps = 40
    arguments = _command("--preset=test", "--models=factorized", "--distortions=mse", "--qualities=1,2,3,4",
                         f"--steps={steps}", "--checkpoint_every=5", "--claim_expiry=5", f"--data={photos}",
                         f"--root={root}", f"--kodak={images}")
    names = [f"factorized-mse-q{quality}" for quality in (1, 2, 3, 4)]
    logs = {worker: tmp_path / f"{worker}.log" for worker in ("first", "second")}
    with open(logs["first"], "w") as log:
        first = subprocess.Popen(arguments, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    second = None
    try:
        hang_guard = time.monotonic() + 300  # against a hang only
        victim = None
        while victim is None:  # the first worker's model, once it has a checkpoint to resume from
            assert first.poll() is None, logs["first"].read_text()[-2000:]
            assert time.monotonic() < hang_guard, "the first worker claimed nothing within 300 s"
            held = _claims_of(root, first.pid, names)
            if held and second is None:
                with open(logs["second"], "w") as log:
                    second = subprocess.Popen(arguments, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            if held and (root / held[0] / "progress.json").exists():
                victim = held[0]
            time.sleep(0.01)
        first.kill()
        first.wait()
        assert not (root / victim / "model.keras").exists(), "killed too late: the model was finished"
        killed_at = json.loads((root / victim / "progress.json").read_text())["steps_done"]
        assert second.wait(timeout=600) == 0, logs["second"].read_text()[-3000:]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    first_log, second_log = logs["first"].read_text(), logs["second"].read_text()
    trained = {worker: [name for name in names if f" {name}: training" in text]
               for worker, text in (("first", first_log), ("second", second_log))}
    # Each model trained by one worker, except the killed one, which the other resumed from its checkpoint.
    assert victim in trained["first"] and victim in trained["second"]
    assert sorted(set(trained["first"]) | set(trained["second"])) == sorted(names)
    assert set(trained["first"]) & set(trained["second"]) == {victim}
    assert f"Resuming {root / victim} at step {killed_at} of {steps}" in second_log
    for name in names:
        assert int(tfhyper.load_model(root / name / "model.keras").optimizer.iterations.numpy()) == steps
    with open(root / "results.csv", newline="", encoding="utf-8") as stream:
        written = sorted((row["model"], row["image"]) for row in csv.DictReader(stream))
    assert written == sorted((name, image) for name in names for image in crops)
    assert sorted(json.loads((root / "results.json").read_text())["models"]) == sorted(names)
