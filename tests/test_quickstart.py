"""The README's first command, at a tiny size: trains, compresses, runs a codec, writes the report and plot."""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

import tfhyper
from tests.conftest import REPO


def _quickstart(out, *extra):
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "experiments.quickstart", "--steps=2", "--qualities=1,2",
                           "--codecs=jpeg420", f"--output_dir={out}", *extra], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=900)


def test_quickstart_writes_report_plot_and_real_files_and_resumes(tmp_path):
    out = tmp_path / "quickstart"
    result = _quickstart(out)
    assert result.returncode == 0, result.stderr[-3000:]
    text = (out / "report.md").read_text()
    for name in ("hyperprior-mse-q1", "hyperprior-mse-q2", "factorized-mse-q1", "factorized-mse-q2"):
        assert f"| {name} |" in text
    assert "| jpeg420 |" in text and "Bjøntegaard deltas of **ScaleHyperprior" in text
    with Image.open(out / "figure5.png") as image:
        assert image.format == "PNG" and min(image.size) > 400
    # The sample files are real: the saved model decodes them to the PNGs written beside them.
    model = tfhyper.load_model(out / "runs" / "hyperprior-mse-q2" / "model.keras")
    files = sorted((out / "samples").glob("*.tfh"))
    assert len(files) == 4
    for path in files:
        decoded = np.asarray(Image.open(path.with_suffix(".decoded.png")))
        np.testing.assert_array_equal(tfhyper.decompress(model, path.read_bytes()), decoded)
    # Run again: every model is kept, none retrained.
    result = _quickstart(out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained already") == 6 and ": training" not in result.stdout  # 2 bases, 4 models
    # Every model was fine-tuned from its prior's base run at quality 2 (the middle of the selected curve).
    import json

    run = json.loads((out / "runs" / "factorized-mse-q1" / "run.json").read_text())
    assert run["init_from"] == str(out / "runs" / "factorized-mse-q2-base" / "model.keras")


def test_quickstart_bad_images_folder_is_one_line(tmp_path):
    result = _quickstart(tmp_path / "q", f"--images={tmp_path / 'absent'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("quickstart: image folder not found")


def test_the_step_count_fits_the_budget_and_is_kept_for_a_rerun(tmp_path, monkeypatch):
    """Two priors timed at 0.2 and 0.1 s per step with 10 and 5 s of set-up; per prior a base run and two models
    fine-tuned from it for a quarter of its steps (qualities 1 and 3) in 150 s leave 150 - 3 * 15 = 105 s for
    (0.2 + 0.1) * (1 + 2 * 0.25) * 1.25 = 0.5625 s per base step: 186 steps."""
    from experiments import quickstart, sweep

    configs = sweep.sweep_configs(quickstart.QUICK, sweep.KINDS, ("mse",), [1, 3], root=tmp_path / "runs")
    assert list(configs)[0] == "hyperprior-mse-q3-base" and list(configs)[3] == "factorized-mse-q3-base"
    timed = []

    def timing(config):
        assert config.init_from is None  # timed from a fresh start: the base may not exist yet
        timed.append(config.model)
        return {"hyperprior": (0.2, 10.0), "factorized": (0.1, 5.0)}[config.model]

    assert quickstart.steps_within(150.0, configs, timing)[0] == 186
    assert sorted(timed) == ["factorized", "hyperprior"]  # each prior timed once
    monkeypatch.setattr(quickstart, "step_timing", timing)
    assert quickstart.schedule(tmp_path, configs, 2.5) == 186
    timed.clear()
    assert quickstart.schedule(tmp_path, configs, 2.5) == 186 and not timed  # a rerun keeps the count, untimed
    # A budget too small for any training still trains the minimum.
    assert quickstart.steps_within(1.0, configs, timing)[0] == quickstart.MIN_STEPS
