"""Tests of experiments.figures (paper Figures 5, 7, 8, 10 and 11) on small synthetic CSVs."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import figures, plotting, results
from tfhyper.losses import ms_ssim_db
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
            "ms_ssim_db": float(ms_ssim_db(ms_ssim))}


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
    rows = results.read_rows(evaluation)
    figure = draw(rows, results.read_rows(baselines)) if number != "7" else draw(rows)
    _check_written(plotting.save_figure(figure, tmp_path / "out", f"figure{number}"))


def test_model_curves_mean_over_images_per_family():
    """Appendix 6.4: one point per model, the mean of bpp and PSNR over its images, grouped by family."""
    curves = plotting.model_curves(evaluation_rows(), {}, "psnr")
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
    settings = results.read_settings(evaluation)
    curves = plotting.model_curves(results.read_rows(evaluation), settings, "psnr")
    assert set(curves) == {"ScaleHyperprior (mse)", "FactorizedPrior (mse)"}
    assert set(figures.hyperprior_curves(results.read_rows(evaluation), settings)) == {"ScaleHyperprior (mse)"}


def test_figure7_needs_hyperprior_rows():
    rows = [row for row in evaluation_rows() if row["bpp_z"] == 0]
    with pytest.raises(plotting.MissingInput, match="hyperprior"):
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
    _check_written(plotting.save_figure(figures.figure8(data), tmp_path, "figure8"))


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


def test_ms_ssim_curves_average_at_equal_rates():
    """Appendix 6.4: MS-SSIM curves are interpolated per image at common rates, then averaged there."""
    rows = []
    for image, (offset, rates) in {"a": (10.0, (0.2, 0.5, 1.0)), "b": (12.0, (0.3, 0.6, 1.2))}.items():
        for q, bpp in enumerate(rates):  # each image's curve is the line 8 * bpp + offset
            rows.append({"model": f"m-q{q}", "image": image, "bpp": bpp, "ms_ssim_db": 8 * bpp + offset,
                         "psnr": 30.0})
    rates, values = plotting.aggregate(rows, "model", "ms_ssim_db")
    np.testing.assert_allclose(rates, np.linspace(0.3, 1.0, plotting.RATE_POINTS))
    np.testing.assert_allclose(values, 8 * rates + 11.0)
    # PSNR keeps lambda aggregation: one point per model.
    assert len(plotting.aggregate(rows, "model", "psnr")[0]) == 3


def test_capacity_is_n_relative_to_the_paper():
    assert plotting.capacity({"N": 32, "lambda": 0.0018, "distortion": "mse"}) == 0.25
    assert plotting.capacity({"N": 48, "lambda": 0.0932, "distortion": "mse"}) == 0.25
    assert plotting.capacity({"N": 128, "lambda": 16.64, "distortion": "ms-ssim"}) == 1.0
    assert plotting.capacity({"N": 32, "lambda": 0.5, "distortion": "mse"}) is None


def test_figure9_draws_one_curve_per_capacity(tmp_path):
    rows, models = [], {}
    for n, gain in ((16, 0.0), (32, 1.0)):
        for q, lmbda in ((1, 0.0018), (4, 0.0130)):
            name = f"factorized-n{n}-q{q}"
            models[name] = {"settings": {"class": "FactorizedPrior", "distortion": "mse", "N": n, "M": 2 * n,
                                         "lambda": lmbda}}
            for image in IMAGES:
                rows.append({"model": name, "image": image, "bpp": 0.2 * q, "psnr": 25 + q + gain,
                             "ms_ssim_db": 10.0, "bpp_z": 0.0})
    evaluation = _write_csv(tmp_path / "eval.csv", rows)
    evaluation.with_suffix(".json").write_text(json.dumps({"models": models}))
    rows, settings = results.read_evaluations([evaluation])
    curves = figures.capacity_curves(rows, settings)
    assert list(curves) == ["N = 16", "N = 32"]
    np.testing.assert_allclose(curves["N = 32"][1], curves["N = 16"][1] + 1.0)
    _check_written(plotting.save_figure(figures.figure9(rows, settings), tmp_path, "figure9"))
    with pytest.raises(plotting.MissingInput, match="capacities"):
        figures.figure9([row for row in rows if "n16" in row["model"]], settings)


def test_models_fine_tuned_from_one_base_run_stay_one_curve_by_name(tmp_path):
    """Settings that name their curve keep a fine-tuned family together: N=32 at q6 is not the paper's N there
    (192, x1/6 against x1/4), which would otherwise split q6 off, in Figure 5's curves and Figure 9's alike."""
    rows, models = [], {}
    for n in (16, 32):
        for q, lmbda in ((2, 0.0035), (4, 0.0130), (6, 0.0483)):
            name = f"factorized-n{n}-q{q}"
            models[name] = {"settings": {"class": "FactorizedPrior", "distortion": "mse", "N": n, "M": 3 * n // 2,
                                         "lambda": lmbda, "curve": f"FactorizedPrior (mse, fine-tuned, N={n})"}}
            for image in IMAGES:
                rows.append({"model": name, "image": image, "bpp": 0.1 * q, "psnr": 25 + q + n / 16,
                             "ms_ssim_db": 10.0, "bpp_z": 0.0})
    evaluation = _write_csv(tmp_path / "eval.csv", rows)
    evaluation.with_suffix(".json").write_text(json.dumps({"models": models}))
    rows, settings = results.read_evaluations([evaluation])
    curves = plotting.model_curves(rows, settings, "psnr")
    assert set(curves) == {"FactorizedPrior (mse, fine-tuned, N=16)", "FactorizedPrior (mse, fine-tuned, N=32)"}
    assert all(len(bpp) == 3 for bpp, _ in curves.values())
    assert list(figures.capacity_curves(rows, settings)) == ["N = 16", "N = 32"]


def test_evaluations_of_several_roots_keep_same_named_models_apart(tmp_path):
    first = tmp_path / "a" / "results.csv"
    second = tmp_path / "b" / "results.csv"
    for path in (first, second):
        path.parent.mkdir()
        _write_csv(path, evaluation_rows())
    rows, _ = results.read_evaluations([first, second])
    names = {row["model"] for row in rows}
    assert "hyperprior-mse-q1" in names and "b/hyperprior-mse-q1" in names and len(rows) == 2 * len(evaluation_rows())
