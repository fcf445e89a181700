"""The paper's figures that show images: latents (Figure 2), reconstructions (Figure 6) and per-image results
(Figures 12 to 35), drawn from trained models, images and the per-image results of `experiments.evaluate`.

    2      an image, a few channels of y_hat of the factorized-prior model, and the normalized responses
           y / sigma_hat of the hyperprior model (section 3): the hyperprior explains away the scale structure.
    6      a crop of an image reconstructed at a low rate by the hyperprior trained for MS-SSIM and by the one
           trained for squared error, with bpp, PSNR and MS-SSIM (section 4.2).
    12-35  one per Kodak image (kodim01 -> 12, ..., kodim24 -> 35): the image's PSNR and MS-SSIM RD curves, and
           its reconstructions by the hyperprior models for squared error and MS-SSIM at one rate point (the
           paper shows the third from the left).

Models are chosen by their settings (`evaluate.model_settings`): class, distortion and lambda. Every number in a
caption is measured here on the real file `tfhyper.compress` writes (`tfhyper.analysis.explore`).

This module has no command line of its own: `python -m experiments.figures --figures=2,6,12-35` draws these.
"""
import sys

import matplotlib.pyplot as plt
import numpy as np

from experiments import cli
from experiments.plotting import METRICS, RATE_LABEL, MissingInput, codec_curves, draw_rd, model_curves
from tfhyper import analysis
from tfhyper.losses import ms_ssim_uint8, psnr_uint8

FIGURE2_CHANNELS = 4  # channels of y shown in Figure 2, those carrying the most bits
PER_IMAGE_FIRST = 12  # Figure 12 is kodim01 (appendix 6.5)
KODAK_IMAGES = 24


def models_of(models, kind, distortion):
    """(name, model) of the given kind (`tfhyper.models.MODELS`) and distortion, by increasing lambda (i.e. rate)."""
    chosen = [(name, model) for name, model in models.items()
              if model.KIND == kind and model.distortion == distortion]
    return sorted(chosen, key=lambda item: item[1].lmbda)


def at_point(candidates, point):
    """The `point`-th model (1-based, counted from the lowest rate), or the highest-rate one if there are fewer."""
    return candidates[min(point, len(candidates)) - 1] if candidates else None


def caption(name, found):
    """bpp of the real file, PSNR and MS-SSIM of its decoding."""
    return (f"{name}: {found.bpp:.4f} bpp, PSNR {psnr_uint8(found.image, found.x_hat):.2f} dB, "
            f"MS-SSIM {ms_ssim_uint8(found.image, found.x_hat):.4f}")


def _mosaic(latent, channels):
    """Channels of a (H, W, C) latent side by side in a 2-row grid, separated by a blank column/row."""
    tiles = [latent[..., c] for c in channels]
    columns = (len(tiles) + 1) // 2
    h, w = tiles[0].shape
    grid = np.full((2 * h + 1, columns * (w + 1) - 1), np.nan)
    for i, tile in enumerate(tiles):
        top, left = (i // columns) * (h + 1), (i % columns) * (w + 1)
        grid[top : top + h, left : left + w] = tile
    return grid


def figure2(models, image, name="image"):
    """Figure 2: the image, y_hat of the factorized prior, y / sigma_hat of the hyperprior (equal lambda if any)."""
    factorized = models_of(models, "factorized", "mse")
    hyperprior = models_of(models, "hyperprior", "mse")
    if not factorized or not hyperprior:
        raise MissingInput("figure 2 needs a factorized-prior and a hyperprior MSE model (--models)")
    # The highest-rate pair: most non-zero responses, so the structure is easiest to see.
    hyper_name, hyper_model = hyperprior[-1]
    fact_name, fact_model = min(factorized, key=lambda item: abs(np.log(item[1].lmbda / hyper_model.lmbda)))
    fact, hyper = analysis.explore(fact_model, image), analysis.explore(hyper_model, image)
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    left.imshow(image)
    left.set_title(name)
    shown = fact.channels_by_rate()[:FIGURE2_CHANNELS]
    y_hat = _mosaic(fact.y_hat, shown)
    limit = max(np.nanmax(np.abs(y_hat)), 1.0)
    drawn = middle.imshow(y_hat, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    figure.colorbar(drawn, ax=middle, shrink=0.8, label="y_hat (quantization bins)")
    middle.set_title(f"factorized prior, y_hat, {FIGURE2_CHANNELS} channels\n{fact_name}, {fact.bpp:.3f} bpp",
                     fontsize=10)
    shown = hyper.channels_by_rate()[:FIGURE2_CHANNELS]
    normalized = _mosaic(hyper.normalized, shown)
    drawn = right.imshow(normalized, cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
    figure.colorbar(drawn, ax=right, shrink=0.8, label="y / sigma_hat (unit scale)")
    right.set_title(f"hyperprior, normalized responses y / sigma_hat\n{hyper_name}, {hyper.bpp:.3f} bpp",
                    fontsize=10)
    for axes in (left, middle, right):
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle("Latents with a factorized prior and with the hyperprior (paper Figure 2)")
    figure.tight_layout()
    return figure


def figure6(models, image, crop, name="image"):
    """Figure 6: low-rate reconstructions of the hyperprior trained for MS-SSIM and for squared error.

    crop: (top, left, height, width) of the region shown; captions describe the whole image.
    """
    ms_ssim = models_of(models, "hyperprior", "ms-ssim")
    mse = models_of(models, "hyperprior", "mse")
    if not ms_ssim or not mse:
        raise MissingInput("figure 6 needs hyperprior models trained for MS-SSIM and for MSE (--models)")
    # The lowest-rate MS-SSIM model and the MSE model closest to its rate on this image.
    first = analysis.explore(ms_ssim[0][1], image)
    candidates = [(n, analysis.explore(m, image)) for n, m in mse]
    second = min(candidates, key=lambda item: abs(item[1].bpp - first.bpp))
    panels = [("original", image, None), (ms_ssim[0][0], first.x_hat, first), (second[0], second[1].x_hat, second[1])]
    top, left, height, width = _clip_crop(crop, image.shape)
    figure, axes = plt.subplots(len(panels), 1, figsize=(7, 5.2 * len(panels) * height / width + 0.6))
    for ax, (label, picture, found) in zip(axes, panels):
        ax.imshow(picture[top : top + height, left : left + width], interpolation="nearest")
        ax.set_title(label if found is None else caption(f"{label} (trained for {_trained_for(label, models)})",
                                                         found), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(f"{name}, crop {height}x{width} at ({top}, {left}) (paper Figure 6)")
    figure.tight_layout()
    return figure


def _trained_for(name, models):
    return "MS-SSIM" if models[name].distortion == "ms-ssim" else "squared error"


def _clip_crop(crop, shape):
    top, left, height, width = crop
    top, left = min(max(top, 0), shape[0] - 1), min(max(left, 0), shape[1] - 1)
    return top, left, min(height, shape[0] - top), min(width, shape[1] - left)


def per_image_number(name):
    """Paper figure number of a Kodak image's results (kodim01 -> 12), or None for other images."""
    if name.startswith("kodim") and name[5:].isdigit() and 1 <= int(name[5:]) <= KODAK_IMAGES:
        return PER_IMAGE_FIRST + int(name[5:]) - 1
    return None


def per_image_figure(name, image, evaluation_rows=None, baseline_rows=None, settings=None, models=None, point=3):
    """Figures 12-35: one image's RD curves (PSNR, MS-SSIM in dB) and its reconstructions at one rate point."""
    own = [row for row in evaluation_rows or () if row["image"] == name]
    codecs = [row for row in baseline_rows or () if row["image"] == name]
    chosen = [at_point(models_of(models or {}, "hyperprior", d), point) for d in ("mse", "ms-ssim")]
    chosen = [item for item in chosen if item]
    if not own and not codecs and not chosen:
        raise MissingInput(f"no results or models for {name}")
    figure = plt.figure(figsize=(12, 10 if chosen else 5))
    grid = figure.add_gridspec(2 if chosen else 1, 2, height_ratios=[1, 1.1] if chosen else [1])
    for column, metric in enumerate(("psnr", "msssim")):
        key, label = METRICS[metric]
        axes = figure.add_subplot(grid[0, column])
        draw_rd(axes, model_curves(own, settings or {}, key) if own else {},
                codec_curves(codecs, key) if codecs else {}, {}, label)
        axes.set_title(f"{name}: {label} against {RATE_LABEL}", fontsize=10)
    for column, (model_name, model) in enumerate(chosen):
        found = analysis.explore(model, image)
        axes = figure.add_subplot(grid[1, column])
        axes.imshow(found.x_hat)
        axes.set_title(caption(f"{model_name} ({_trained_for(model_name, models)})", found), fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
    number = per_image_number(name)
    figure.suptitle(f"Kodak image {name[5:]} (paper Figure {number})" if number else name)
    figure.tight_layout()
    return figure


def main(options):
    """Point to the command line that draws these figures."""
    del options
    sys.exit("image_figures: these figures are drawn by python -m experiments.figures --figures=2,6,12-35")


if __name__ == "__main__":
    cli.run(main)
