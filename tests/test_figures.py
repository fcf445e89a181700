"""Tests of experiments.figures (paper Figures 5, 7, 8, 10 and 11) on small synthetic CSVs."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import figures
from tests.conftest import REPO

IMAGES = ("kodim01", "kodim02")
# family name -> (bpp at the three settings, PSNR at those rates, whether it codes z)
MODELS = {"hyperprior-mse": ((0.2, 0.5, 1.0), (28.0, 31.5, 35.0), True),
          "factorized-mse": ((0.25, 0.6, 1.1), (27.0, 30.5, 34.0), False)}
# codec -> (bpp at three quality settings, PSNR offset so that the two curves do not coincide)
CODECS = {"jpeg420": ((0.4, 0.8, 1.5), 0.0), "webp": ((0.3, 0.7, 1.3), 1.5)}


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _quality(bpp, psnr, offset):
    """Plausible per-image numbers: images differ by a fixed offset so that means are known exactly."""
    ms_ssim = 1 - 10 ** (-(psnr - 14 + offset) / 10)
    return {"bpp": bpp + 0.1 * offset, "psnr": psnr + offset, "ms_ssim": ms_ssim,
            "ms_ssim_db": float(figures.ms_ssim_db(ms_ssim))}


def evaluation_rows():
    rows = []
    for name, (rates, psnrs, hyper) in MODELS.items():
        for q, (bpp, psnr) in enumerate(zip(rates, psnrs), start=1):
            for offset, image in enumerate(IMAGES):
                row = {"model": f"{name}-q{q}", "image": image, **_quality(bpp, psnr, offset)}
                row["bpp_z"] = 0.02 * bpp if hyper else 0.0
                row["bpp_y"] = row["bpp"] - row["bpp_z"]
                rows.append(row)
    return rows


def baseline_rows():
    rows = []
    for codec, (rates, better) in CODECS.items():
        for quality, bpp in zip((20, 50, 80), rates):
            for offset, image in enumerate(IMAGES):
                rows.append({"codec": codec, "quality": quality, "image": image,
                             **_quality(bpp, 24 + better + 6 * bpp, offset)})
    return rows


@pytest.fixture
def inputs(tmp_path):
    evaluation = _write_csv(tmp_path / "evaluate.csv", evaluation_rows())
    baselines = _write_csv(tmp_path / "baselines.csv", baseline_rows())
    return evaluation, baselines


def _check_written(paths):
    png, pdf = paths
    assert png.suffix == ".png" and pdf.suffix == ".pdf"
    assert pdf.stat().st_size > 1000 and pdf.read_bytes().startswith(b"%PDF")
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) >= 400
    # No temporary file is left behind by the atomic save.
    assert not [p for p in png.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("number", ["5", "7", "10", "11"])
def test_rd_figures_are_written(inputs, tmp_path, number):
    evaluation, baselines = inputs
    draw = getattr(figures, f"figure{number}")
    rows = figures.read_rows(evaluation)
    figure = draw(rows, figures.read_rows(baselines)) if number != "7" else draw(rows)
    _check_written(figures.save_figure(figure, tmp_path / "out", f"figure{number}"))


def test_model_curves_mean_over_images_per_family():
    """Appendix 6.4: one point per model, the mean of bpp and PSNR over its images, grouped by family."""
    curves = figures.model_curves(evaluation_rows(), {}, "psnr")
    assert set(curves) == set(MODELS)
    bpp, psnr = curves["hyperprior-mse"]
    np.testing.assert_allclose(bpp, np.array(MODELS["hyperprior-mse"][0]) + 0.05)
    np.testing.assert_allclose(psnr, np.array(MODELS["hyperprior-mse"][1]) + 0.5)


def test_family_comes_from_evaluate_settings(inputs):
    """With the JSON evaluate writes, models group by class and distortion, not by name."""
    evaluation, _ = inputs
    models = {f"{name}-q{q}": {"settings": {"class": cls, "distortion": "mse"}}
              for name, cls in (("hyperprior-mse", "ScaleHyperprior"), ("factorized-mse", "FactorizedPrior"))
              for q in (1, 2, 3)}
    evaluation.with_suffix(".json").write_text(json.dumps({"models": models}))
    settings = figures.read_settings(evaluation)
    curves = figures.model_curves(figures.read_rows(evaluation), settings, "psnr")
    assert set(curves) == {"ScaleHyperprior (mse)", "FactorizedPrior (mse)"}
    assert set(figures.hyperprior_curves(figures.read_rows(evaluation), settings)) == {"ScaleHyperprior (mse)"}


def test_figure7_needs_hyperprior_rows():
    rows = [row for row in evaluation_rows() if row["bpp_z"] == 0]
    with pytest.raises(figures.MissingInput, match="hyperprior"):
        figures.figure7(rows)


def test_figure8_k1_is_eq25():
    """Figure 8 left: the K = 1 layer's density is p(x) = h/2 / (1 + cosh(h x + b)) (eq. 25)."""
    x = np.linspace(-8, 8, 161)
    for h, b in ((1.0, 0.0), (2.5, -0.7)):
        expected = h / 2 / (1 + np.cosh(h * x + b))
        np.testing.assert_allclose(figures.density_k1(x, h, b), expected, rtol=1e-4, atol=1e-9)


def test_figure8_fit_approaches_the_mixture(tmp_path):
    """Figure 8 right: the K = 4 maximum-likelihood fit is close to the true density where it has mass."""
    data = figures.figure8_data(steps=200)
    mass = data["truth"] > 0.02
    assert np.max(np.abs(np.log(data["fit"][mass] / data["truth"][mass]))) < 0.7
    assert abs(np.trapezoid(data["fit"], data["x"]) - 1) < 0.02
    _check_written(figures.save_figure(figures.figure8(data), tmp_path, "figure8"))


def _run_cli(*arguments):
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "experiments.figures", *arguments], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_cli_writes_and_skips(inputs, tmp_path):
    """One run: figure 5 is drawn from the CSVs; a missing input skips figure 7 with a reason, status 0."""
    evaluation, baselines = inputs
    out = tmp_path / "figures"
    result = _run_cli(f"--evaluation={evaluation}", f"--baselines={baselines}", f"--output_dir={out}",
                      "--figures=5")
    assert result.returncode == 0, result.stderr
    _check_written((out / "figure5.png", out / "figure5.pdf"))
    result = _run_cli(f"--evaluation={tmp_path / 'absent.csv'}", f"--output_dir={out}", "--figures=7")
    assert result.returncode == 0, result.stderr
    assert "skipping figure 7" in result.stderr and "--evaluation" in result.stderr
    assert not (out / "figure7.png").exists()
