"""Tests of the figures drawn from models and images: 2 (latents), 6 (reconstructions), 12-35 (per image)."""
import pytest
from PIL import Image

import tfhyper
from experiments import image_figures, inputs, plotting
from tests.test_figures import _check_written, _run_cli, _write_csv, baseline_rows, evaluation_rows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """Small untrained models of the kinds the figures pick by class, distortion and lambda."""
    folder = tmp_path_factory.mktemp("models")
    specs = {"factorized-mse": (tfhyper.FactorizedPrior, "mse", 0.0130),
             "hyperprior-mse-q1": (tfhyper.ScaleHyperprior, "mse", 0.0018),
             "hyperprior-mse-q4": (tfhyper.ScaleHyperprior, "mse", 0.0130),
             "hyperprior-msssim-q1": (tfhyper.ScaleHyperprior, "ms-ssim", 2.40)}
    for name, (cls, distortion, lmbda) in specs.items():
        model = cls(16, 24, lmbda=lmbda, distortion=distortion)
        model.build()
        model.save(folder / f"{name}.keras")
    return folder


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, crops):
    folder = tmp_path_factory.mktemp("images")
    for name, crop in zip(("kodim01", "kodim20"), crops.values()):
        Image.fromarray(crop).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def models(model_dir):
    return inputs.load_models(sorted(model_dir.glob("*.keras")))


def test_models_are_chosen_by_class_distortion_and_rate(models):
    chosen = image_figures.models_of(models, "hyperprior", "mse")
    assert [name for name, _ in chosen] == ["hyperprior-mse-q1", "hyperprior-mse-q4"]
    assert image_figures.at_point(chosen, 3)[0] == "hyperprior-mse-q4"  # fewer points than asked: the last
    assert image_figures.at_point(chosen, 1)[0] == "hyperprior-mse-q1"
    assert image_figures.per_image_number("kodim01") == 12 and image_figures.per_image_number("kodim24") == 35
    assert image_figures.per_image_number("photo") is None


def test_figures_2_and_6(models, crops, tmp_path):
    image = next(iter(crops.values()))
    _check_written(plotting.save_figure(image_figures.figure2(models, image), tmp_path, "figure2"))
    # The crop is clipped to the image (192 x 192 here).
    figure = image_figures.figure6(models, image, (100, 100, 256, 320))
    assert "92x92 at (100, 100)" in figure._suptitle.get_text()
    _check_written(plotting.save_figure(figure, tmp_path, "figure6"))
    without = {name: model for name, model in models.items() if "msssim" not in name}
    with pytest.raises(plotting.MissingInput, match="MS-SSIM"):
        image_figures.figure6(without, image, (0, 0, 64, 64))
    with pytest.raises(plotting.MissingInput, match="factorized"):
        image_figures.figure2({k: v for k, v in models.items() if "factorized" not in k}, image)


def test_caption_numbers_come_from_the_real_file(models, crops):
    image = next(iter(crops.values()))
    model = models["hyperprior-mse-q1"]
    found = image_figures.analysis.explore(model, image)
    data = tfhyper.compress(model, image)
    text = image_figures.caption("m", found)
    assert f"{8 * len(data) / image.shape[0] / image.shape[1]:.4f} bpp" in text
    assert f"PSNR {image_figures.psnr_uint8(image, tfhyper.decompress(model, data)):.2f} dB" in text


def test_cli_draws_image_figures_and_skips_without_models(model_dir, image_dir, tmp_path):
    evaluation = _write_csv(tmp_path / "evaluate.csv", evaluation_rows())
    baselines = _write_csv(tmp_path / "baselines.csv", baseline_rows())
    out = tmp_path / "figures"
    result = _run_cli(f"--evaluation={evaluation}", f"--baselines={baselines}", f"--output_dir={out}",
                      f"--models={','.join(str(p) for p in sorted(model_dir.glob('*.keras')))}",
                      f"--images={image_dir}", "--figure2_image=kodim01", "--figures=2,6,12-13",
                      "--figure6_crop=0,0,128,160")
    assert result.returncode == 0, result.stderr
    for name in ("figure2", "figure6", "figure12"):
        _check_written((out / f"{name}.png", out / f"{name}.pdf"))
    assert "skipping figure 13: image kodim02 is not in" in result.stderr
    result = _run_cli(f"--evaluation={evaluation}", f"--output_dir={tmp_path / 'other'}", "--figures=2,12")
    assert result.returncode == 0, result.stderr
    assert "skipping figure 2: it needs trained models (--models)" in result.stderr
    assert "skipping figure 12: it needs the images (--images)" in result.stderr
    # A figure of image_figures whose models are missing is skipped too (its MissingInput is the one caught).
    mse_only = ",".join(str(p) for p in sorted(model_dir.glob("*mse*.keras")))
    result = _run_cli(f"--models={mse_only}", f"--images={image_dir}", f"--output_dir={tmp_path / 'other'}",
                      "--figures=6")
    assert result.returncode == 0, result.stderr
    assert "skipping figure 6: figure 6 needs hyperprior models trained for MS-SSIM and for MSE" in result.stderr
    result = _run_cli(f"--output_dir={tmp_path / 'other'}", "--figures=4")
    assert result.returncode != 0 and "unknown figure(s) 4" in result.stderr
