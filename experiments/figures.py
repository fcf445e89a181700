r"""The paper's figures, drawn from the results of `experiments.evaluate` / `experiments.sweep` and
`experiments.baselines`, and from trained models and images.

    python -m experiments.figures --evaluation=runs/cpu/results.csv --baselines=results/baselines.csv \
        --models=runs/cpu/hyperprior-mse-q1,runs/cpu/factorized-mse-q1,... --images=../shared/data/kodak \
        --output_dir=figures                      # every figure; --figures=5,9,12-14 draws a selection

Figures (paper numbering):
    2      an image, channels of y_hat of the factorized prior, y / sigma_hat of the hyperprior (models, images).
    5      RD curves over Kodak: PSNR (top) and MS-SSIM in dB (bottom) against bits per pixel: our models, the
           codecs of the baselines CSV and the paper's published curves (`tfhyper.reference`).
    6      reconstructions at a low rate by hyperprior models trained for MS-SSIM and for MSE (models, images).
    7      side information (bpp of z_hat) against total bpp for the hyperprior models.
    8      the non-parametric density (appendix 6.1) on a log scale: K = 1 (eq. 25) against a Laplacian, and a
           K = 4 fit to a Gaussian+Laplacian mixture.
    9      factorized-prior models differing only in N (appendix 6.3), e.g. sweeps with different --filter_scale.
    10     PSNR against bpp for every published curve, with ours and the codecs (appendix 6.4).
    11     MS-SSIM (dB) against bpp for every published curve, with ours and the codecs (appendix 6.4).
    12-35  one per Kodak image (kodim01 -> 12): its RD curves and reconstructions (appendix 6.5);
           --per_image=NAME,... adds other images of --images. See `experiments.image_figures`.

Grouping of our models into curves. The per-image CSV names each row's model; `evaluate` (and the sweep) writes
each model's settings into the JSON beside the CSV (same stem, suffix .json). A curve ("family") is every model
sharing class, distortion and capacity (N relative to the paper's N at the model's lambda), e.g.
"ScaleHyperprior (mse, N x0.25)", one point per model, i.e. per lambda. Without that JSON the family is the model
name with a last "-..." part that contains a digit removed ("hyperprior-mse-q3" -> "hyperprior-mse"), and the
hyperprior models of Figure 7 are those with a non-zero bpp_z. Several evaluation CSVs may be given (--evaluation
takes a list); a model name met again in a later file is prefixed with that file's folder name.

Aggregation (appendix 6.4, `aggregate`): PSNR points are means over the images at equal lambda (or codec quality)
of bpp and PSNR in dB; MS-SSIM curves are interpolated per image at common rates and averaged there, in dB.

Each figure is written as NAME.png and NAME.pdf (e.g. figure5.png), each saved to a temporary name in the output
folder and then renamed over the old one, so a reader never sees half a file. A figure whose inputs are missing is
skipped with one logged line saying why.
"""
import dataclasses
import os
import pathlib
import re

import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags, logging

from experiments import cli, image_figures, inputs, results
from experiments.plotting import (
    METRICS, PUBLISHED, RATE_LABEL, MissingInput, aggregate, capacity, codec_curves, draw_rd, model_curves,
    published_curves, save_figure,
)
from tfhyper import reference

FIGURES = ("2", "5", "6", "7", "8", "9", "10", "11")
PER_IMAGE_FIGURES = (12, 35)  # appendix 6.5: one figure per Kodak image, kodim01 to kodim24
WIDE_MAX_BPP = 2.5  # x range of Figures 10 and 11


# --- curves ------------------------------------------------------------------------------------------------


def hyperprior_curves(rows, settings):
    """family -> (total bpp, bpp of z) for the hyperprior models (Figure 7), averaged per model over the images."""
    def is_hyperprior(row):
        entry = settings.get(row["model"])
        if entry and "class" in entry:
            return "Hyperprior" in entry["class"]
        return row["bpp_z"] > 0  # a factorized prior codes no z

    chosen = [row for row in rows if is_hyperprior(row)]
    if not chosen:
        raise MissingInput("no hyperprior models (non-zero bpp_z) in the evaluation CSV")
    return model_curves(chosen, settings, "bpp_z")


# --- drawing -----------------------------------------------------------------------------------------------


def figure5(evaluation_rows, baseline_rows=None, settings=None, published=True, title=None):
    """Figure 5: PSNR (top) and MS-SSIM in dB (bottom) against bpp, ours vs codecs vs the paper's curves.

    published: overlay the paper's Kodak curves (only meaningful when the images are Kodak).
    """
    if not evaluation_rows:
        raise MissingInput("figure 5 needs the evaluation CSV (--evaluation)")
    figure, panels = plt.subplots(2, 1, figsize=(7.5, 10))
    for axes, metric in zip(panels, ("psnr", "msssim")):
        column, label = METRICS[metric]
        draw_rd(axes, model_curves(evaluation_rows, settings or {}, column),
                codec_curves(baseline_rows, column) if baseline_rows else {},
                published_curves(PUBLISHED[metric], metric) if published else {}, label)
    panels[0].set_title(title or "Kodak, averaged over images (paper Figure 5)")
    figure.tight_layout()
    return figure


def figure7(evaluation_rows, settings=None):
    """Figure 7: side information (bpp of z_hat) against total bpp for the hyperprior models."""
    if not evaluation_rows:
        raise MissingInput("figure 7 needs the evaluation CSV (--evaluation)")
    curves = {f"ours: {name}": curve for name, curve in hyperprior_curves(evaluation_rows, settings or {}).items()}
    figure, axes = line_figure(curves, f"total {RATE_LABEL} (y and z)", "side information, bits per pixel (z)",
                               "Side information vs total rate (paper Figure 7)")
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    return figure


def line_figure(curves, xlabel, ylabel, title, legend_loc="best"):
    """A small figure of labelled curves (label -> (x, y)), drawn as lines through circles."""
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for label, (x, y) in curves.items():
        axes.plot(x, y, "-o", linewidth=2, label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=9, loc=legend_loc)
    axes.set_title(title)
    figure.tight_layout()
    return figure, axes


def capacity_curves(rows, settings):
    """label -> (bpp, mean PSNR) of the factorized MSE models, one curve per capacity (N relative to the paper's)."""
    groups = {}
    for row in rows:
        entry = settings.get(row["model"], {})
        if results.model_kind(entry) == "factorized" and entry.get("distortion") == "mse":
            scale = capacity(entry)
            key = entry.get("curve") or (entry["N"] if scale is None else scale)
            groups.setdefault(key, []).append(row)
    if len(groups) < 2:
        raise MissingInput("figure 9 needs factorized MSE models of two or more capacities N in the evaluation "
                           "results (with the settings JSON beside the CSV), e.g. a sweep with --filter_scale")
    curves = {}
    for key in sorted(groups, key=str):
        numbers = sorted({int(settings[row["model"]]["N"]) for row in groups[key]})
        curves[f"N = {', '.join(map(str, numbers))}"] = aggregate(groups[key], "model", "psnr")
    return curves


def figure9(evaluation_rows, settings=None):
    """Figure 9: factorized-prior models differing only in their number of filters N (appendix 6.3)."""
    if not evaluation_rows:
        raise MissingInput("figure 9 needs the evaluation CSV (--evaluation)")
    curves = {f"ours: factorized prior, {name}": curve
              for name, curve in capacity_curves(evaluation_rows, settings or {}).items()}
    return line_figure(curves, RATE_LABEL, METRICS["psnr"][1], "Transform capacity, factorized prior (paper Figure 9)",
                       legend_loc="lower right")[0]


def wide_comparison(evaluation_rows, baseline_rows, settings, metric, number):
    """Figures 10 and 11: every published curve for `metric`, plus ours and the codecs when given."""
    column, label = METRICS[metric]
    figure, axes = plt.subplots(figsize=(12, 7))
    ours = model_curves(evaluation_rows, settings or {}, column) if evaluation_rows else {}
    codecs = codec_curves(baseline_rows, column) if baseline_rows else {}
    # All published curves make the point here, so the axes are not zoomed to ours.
    published = published_curves(reference.available(metric), metric)
    # Twenty-odd curves: grey would make them indistinguishable, so each gets its own colour here.
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(published), 1)))
    draw_rd(axes, ours, codecs, published, label, published_colors=colors)
    _limit_to_all(axes, [*published.values(), *ours.values(), *codecs.values()], WIDE_MAX_BPP)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), framealpha=0.9)
    axes.set_title(f"Kodak, published methods (paper Figure {number})")
    figure.tight_layout()
    return figure


def _limit_to_all(axes, curves, max_bpp):
    """Axes spanning every curve's points up to `max_bpp`, the range of the paper's appendix figures."""
    values = np.concatenate([v[np.asarray(b) <= max_bpp] for b, v in curves])
    axes.set_xlim(0, max_bpp)
    axes.set_ylim(values.min() - 1, values.max() + 1)


def figure10(evaluation_rows=None, baseline_rows=None, settings=None):
    """Figure 10: PSNR against bpp for all published methods."""
    return wide_comparison(evaluation_rows, baseline_rows, settings, "psnr", 10)


def figure11(evaluation_rows=None, baseline_rows=None, settings=None):
    """Figure 11: MS-SSIM (dB) against bpp for all published methods."""
    return wide_comparison(evaluation_rows, baseline_rows, settings, "msssim", 11)


# --- Figure 8: the density model ---------------------------------------------------------------------------


def density_k1(x, h, b):
    """p(x) of the K = 1 non-parametric density with H = h and bias b (Figure 8 left, eq. 25), by the layer."""
    from tfhyper.densities import NonParametricDensity
    import tensorflow as tf

    layer = NonParametricDensity(1, filters=())
    layer.build()
    # H = softplus(H_hat), so H_hat = softplus^-1(h) gives the wanted slope.
    layer.matrices[0].assign(np.full((1, 1, 1), np.log(np.expm1(h)), np.float32))
    layer.biases[0].assign(np.full((1, 1, 1), b, np.float32))
    v = tf.constant(np.asarray(x, np.float32).reshape(1, 1, -1, 1))
    return layer.pdf(v).numpy().reshape(-1).astype(np.float64)


def laplace_pdf(x, scale, location=0.0):
    return np.exp(-np.abs(x - location) / scale) / (2 * scale)


def mixture_pdf(x):
    """The ground truth of Figure 8 right: 0.6 N(-1, 0.7^2) + 0.4 Laplace(2, 0.5)."""
    gaussian = np.exp(-0.5 * ((x + 1) / 0.7) ** 2) / (0.7 * np.sqrt(2 * np.pi))
    return 0.6 * gaussian + 0.4 * laplace_pdf(x, 0.5, 2.0)


def sample_mixture(n, rng):
    pick = rng.random(n) < 0.6
    return np.where(pick, rng.normal(-1, 0.7, n), rng.laplace(2, 0.5, n))


def fit_density(samples, filters=(3, 3, 3), steps=300, seed=0):
    """A NonParametricDensity fitted to `samples` by maximum likelihood with Adam (Figure 8 right)."""
    import keras
    import tensorflow as tf
    from tfhyper.densities import NonParametricDensity

    keras.utils.set_random_seed(seed)
    layer = NonParametricDensity(1, filters=filters, init_scale=4.0)
    layer.build()
    v = tf.constant(np.asarray(samples, np.float32).reshape(1, 1, -1, 1))
    optimizer = keras.optimizers.Adam(0.05)

    # Eager on purpose: as a tf.function, this step (a tape around the pdf's own tape) crashed TensorFlow 2.21's
    # runtime now and then (a segmentation fault or an abort in 2 of 4 test runs, WORKSPACE_NOTES.md).
    def step():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(tf.math.log(layer.pdf(v) + 1e-9))
        optimizer.apply_gradients(zip(tape.gradient(loss, layer.trainable_variables), layer.trainable_variables))
        return loss

    for _ in range(steps):
        step()
    return layer


def figure8_data(h=2.0, b=0.0, steps=300, seed=0):
    """The curves of Figure 8: x, K = 1 density, matching Laplacian, K = 4 fit and the true mixture."""
    import tensorflow as tf

    x = np.linspace(-6, 6, 601)
    fitted = fit_density(sample_mixture(4000, np.random.default_rng(seed)), steps=steps, seed=seed)
    fit = fitted.pdf(tf.constant(x.astype(np.float32).reshape(1, 1, -1, 1))).numpy().reshape(-1)
    # Scale 1/h gives the Laplacian the same exponential tails as eq. 25 (~ h exp(-h|x|)), so only the mode differs.
    return {"x": x, "k1": density_k1(x, h, b), "laplace": laplace_pdf(x, 1.0 / h, -b / h),
            "fit": fit.astype(np.float64), "truth": mixture_pdf(x), "h": h}


def figure8(data=None):
    """Figure 8: the non-parametric density on log scale, K = 1 vs Laplacian (left), K = 4 fit (right)."""
    data = data or figure8_data()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.semilogy(data["x"], data["k1"], linewidth=2, label="non-parametric, K = 1 (eq. 25)")
    left.semilogy(data["x"], data["laplace"], "--", color="grey", label=f"Laplacian, scale 1/{data['h']:g}")
    right.semilogy(data["x"], data["fit"], linewidth=2, label="non-parametric fit, K = 4")
    right.semilogy(data["x"], data["truth"], "--", color="grey", label="Gaussian + Laplacian mixture")
    for axes in (left, right):
        axes.set_xlabel("x")
        axes.set_ylabel("p(x), log scale")
        axes.set_ylim(1e-5, 2)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=9, loc="lower center")
    figure.suptitle("Non-parametric density model (paper Figure 8)")
    figure.tight_layout()
    return figure


# --- inputs ------------------------------------------------------------------------------------------------


def load_optional(path, what):
    """Rows of the CSV at `path`, or None with a logged reason when it was not given or does not exist."""
    if not path:
        return None
    if not pathlib.Path(path).is_file():
        logging.warning("%s CSV not found: %s", what, path)
        return None
    return results.read_rows(path)


def load_evaluations(paths):
    """Rows and settings of the evaluation CSVs that exist (missing ones logged), or (None, {})."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = []
    for path in paths or ():
        if pathlib.Path(path).is_file():
            found.append(path)
        else:
            logging.warning("evaluation CSV not found: %s", path)
    return results.read_evaluations(found) if found else (None, {})


def expand(selected):
    """Figure numbers from the command line's list: "12-35" stands for the per-image figures 12 to 35."""
    numbers = []
    for item in selected:
        if re.fullmatch(r"\d+-\d+", item):
            first, last = map(int, item.split("-"))
            numbers += [str(n) for n in range(first, last + 1)]
        else:
            numbers.append(item)
    return list(dict.fromkeys(numbers))


def unknown_figures(selected):
    known = set(FIGURES) | {str(n) for n in range(PER_IMAGE_FIGURES[0], PER_IMAGE_FIGURES[1] + 1)}
    return [number for number in expand(selected) if number not in known]


@dataclasses.dataclass
class ImageOptions:
    """What the figures showing images draw (see `experiments.image_figures`)."""

    figure2_image: str = "kodim23"
    figure6_image: str = "kodim20"
    figure6_crop: tuple = (200, 160, 256, 320)  # top, left, height, width: the aeroplane's lettering and grass
    point: int = 3  # rate point of the per-image reconstructions, from the lowest (the paper: the third)
    per_image: tuple = ()  # more images (by name) to draw per-image figures for, besides Kodak's numbers


def make_figures(selected, output_dir, evaluation=None, baselines=None, models=None, images=None,
                 options=ImageOptions()):
    """Draw and save the selected figures; returns name -> written paths, skipping those whose inputs are missing.

    evaluation: one CSV of `experiments.evaluate` (or of a sweep) or a list of them; models: saved models or run
    directories (figures 2, 6 and the reconstructions of 12-35); images: a folder of images (e.g. Kodak).
    """
    evaluation_rows, settings = load_evaluations(evaluation)
    baseline_rows = load_optional(baselines, "baselines")
    loaded = {}

    def need_models():
        if not models:
            raise MissingInput("it needs trained models (--models)")
        if "models" not in loaded:
            loaded["models"] = inputs.load_models(models)
        return loaded["models"]

    def need_image(name):
        if not images:
            raise MissingInput("it needs the images (--images)")
        if "images" not in loaded:
            loaded["images"] = inputs.load_images(images)
        if name not in loaded["images"]:
            raise MissingInput(f"image {name} is not in {images}")
        return loaded["images"][name]

    builders = {
        "2": lambda: image_figures.figure2(need_models(), need_image(options.figure2_image), options.figure2_image),
        "5": lambda: figure5(evaluation_rows, baseline_rows, settings),
        "6": lambda: image_figures.figure6(need_models(), need_image(options.figure6_image), options.figure6_crop,
                                           options.figure6_image),
        "7": lambda: figure7(evaluation_rows, settings),
        "8": figure8,
        "9": lambda: figure9(evaluation_rows, settings),
        "10": lambda: figure10(evaluation_rows, baseline_rows, settings),
        "11": lambda: figure11(evaluation_rows, baseline_rows, settings),
    }

    def per_image(name):
        return lambda: image_figures.per_image_figure(
            name, need_image(name), evaluation_rows, baseline_rows, settings,
            need_models() if models else {}, options.point)

    jobs = []
    for number in expand(selected):
        if number in builders:
            jobs.append((number, f"figure{number}", builders[number]))
        else:
            name = f"kodim{int(number) - PER_IMAGE_FIGURES[0] + 1:02d}"
            jobs.append((number, f"figure{number}", per_image(name)))
    jobs += [(name, f"image-{name}", per_image(name)) for name in options.per_image]
    written = {}
    for number, file_name, build in jobs:
        try:
            figure = build()
        except MissingInput as reason:
            logging.warning("skipping figure %s: %s", number, reason)
            continue
        written[number] = save_figure(figure, output_dir, file_name)
        logging.info("wrote figure %s: %s", number, ", ".join(map(str, written[number])))
    return written


# --- command line ------------------------------------------------------------------------------------------


def define_flags():
    """The command line's flags; defined on demand so that importing this module adds none to other programs."""
    defaults = ImageOptions()
    flags.DEFINE_list("evaluation", None, "Per-image CSVs of experiments.evaluate or experiments.sweep (the .json "
                                          "beside each is used for model settings when present).")
    flags.DEFINE_string("baselines", None, "Per-image CSV of experiments.baselines.")
    flags.DEFINE_list("models", None, "Trained models (.keras files, run directories or zoo:NAME) for figures 2, 6 "
                                      "and the reconstructions of 12-35; a sweep's run directories, e.g. "
                                      "runs/cpu/*-q*.")
    flags.DEFINE_string("images", None, "Folder of the images the figures show (e.g. ../shared/data/kodak).")
    flags.DEFINE_string("output_dir", "figures", "Folder for figureN.png and figureN.pdf.")
    flags.DEFINE_list("figures", [*FIGURES, "12-35"], "Figures to draw, from: "
                      f"{', '.join(FIGURES)} and 12-35 (one per Kodak image; ranges such as 12-14 allowed).")
    flags.DEFINE_string("figure2_image", defaults.figure2_image, "Image of figure 2 (latents).")
    flags.DEFINE_string("figure6_image", defaults.figure6_image, "Image of figure 6 (reconstructions at a low rate).")
    flags.DEFINE_list("figure6_crop", list(map(str, defaults.figure6_crop)),
                      "Region of figure 6 in pixels: top, left, height, width.")
    flags.DEFINE_integer("point", defaults.point, "Rate point (1 = lowest) of the reconstructions in figures "
                                                  "12-35 (the paper shows the third).", lower_bound=1)
    flags.DEFINE_list("per_image", [], "Other images (names in --images) to draw per-image figures for.")


def main(options):
    """Draw the selected --figures into --output_dir."""
    unknown = unknown_figures(options.figures)
    if unknown:
        raise app.UsageError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}, 12-35")
    try:
        crop = tuple(int(value) for value in options.figure6_crop)
    except ValueError:
        crop = ()
    if len(crop) != 4 or min(crop[2:]) < 1:
        raise app.UsageError("--figure6_crop needs four integers: top, left, height, width (sizes >= 1)")
    image_options = ImageOptions(options.figure2_image, options.figure6_image, crop, options.point,
                                 tuple(options.per_image))
    try:
        make_figures(options.figures, options.output_dir, options.evaluation, options.baselines, options.models,
                     options.images, image_options)
    except ValueError as error:  # unreadable models or images: one line, not a traceback
        raise app.UsageError(str(error)) from None


if __name__ == "__main__":
    cli.run(main, define_flags)
