r"""The paper's result figures, drawn from the CSVs of `experiments.evaluate` and `experiments.baselines`.

    python -m experiments.figures --evaluation=results/evaluate.csv --baselines=results/baselines.csv \
        --output_dir=figures --figures=5,7,8,10,11

Figures (paper numbering):
    5    RD curves over Kodak: PSNR (top) and MS-SSIM in dB (bottom) against bits per pixel: our models, the
         codecs of the baselines CSV and the paper's published curves (`tfhyper.reference`).
    7    side information (bpp of z_hat) against total bpp for the hyperprior models.
    8    the non-parametric density (appendix 6.1) on a log scale: K = 1 (eq. 25) against a Laplacian, and a
         K = 4 fit to a Gaussian+Laplacian mixture.
    10   PSNR against bpp for every published curve, with ours and the codecs (appendix 6.4).
    11   MS-SSIM (dB) against bpp for every published curve, with ours and the codecs (appendix 6.4).

Grouping of our models into curves. The per-image CSV names each row's model; `evaluate` writes each model's
settings into the JSON beside the CSV (same stem, suffix .json). A curve ("family") is every model sharing
class and distortion, e.g. "ScaleHyperprior (mse)", one point per model, i.e. per lambda. Without that JSON the
family is the model name with a last "-..." part that contains a digit removed ("hyperprior-mse-q3" ->
"hyperprior-mse"), and the hyperprior models of Figure 7 are those with a non-zero bpp_z.

Aggregation: every point is the mean over the images of one model (or one codec quality) of bpp and of the
metric (PSNR in dB, MS-SSIM in dB): the paper's lambda aggregation (appendix 6.4, `rd.aggregate_by_parameter`).
The paper's MS-SSIM plots instead average over equal rates; with few settings per curve lambda aggregation is
used for both panels here, as `experiments.baselines` does for its aggregated table.

Each figure is written as NAME.png and NAME.pdf (e.g. figure5.png), each saved to a temporary name in the output
folder and then renamed over the old one, so a reader never sees half a file. A figure whose inputs are missing is
skipped with one logged line saying why.
"""
import csv
import json
import os
import pathlib
import re
import tempfile

import matplotlib

matplotlib.use("Agg")  # files only; no display is available or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from tfhyper import rd, reference  # noqa: E402
from tfhyper.losses import ms_ssim_db  # noqa: E402

FIGURES = ("5", "7", "8", "10", "11")

# The paper's own curves shown in Figure 5 (top: squared-error models, bottom: the MS-SSIM ones).
FIGURE5_PUBLISHED = {
    "psnr": ("balle-2018-iclr-opt-mse", "balle-2017-iclr-opt-mse", "bpg444", "jpeg420", "webp"),
    "msssim": ("balle-2018-iclr-opt-msssim", "balle-2017-iclr-opt-msssim", "bpg444", "jpeg420", "webp"),
}
# metric -> (CSV column of the per-image rows, axis label).
METRICS = {"psnr": ("psnr", "PSNR (dB)"), "msssim": ("ms_ssim_db", "MS-SSIM (dB)")}
RATE_LABEL = "bits per pixel"
WIDE_MAX_BPP = 2.5  # x range of Figures 10 and 11


class MissingInput(Exception):
    """A figure cannot be drawn from the inputs given; the message says which one is missing."""


# --- loading -----------------------------------------------------------------------------------------------


def read_rows(path):
    """The rows of a CSV as dicts; numeric fields become floats so they can be averaged."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def read_settings(evaluation_path):
    """model -> settings (class, N, M, lambda, distortion) from the JSON `evaluate` writes beside its CSV, or {}."""
    path = pathlib.Path(evaluation_path).with_suffix(".json")
    if not path.is_file():
        return {}
    models = json.loads(path.read_text(encoding="utf-8")).get("models", {})
    return {name: entry.get("settings", {}) for name, entry in models.items()}


def family(model, settings):
    """The curve a model belongs to: class and distortion from its settings, else its name without the setting."""
    entry = settings.get(model)
    if entry and "class" in entry:
        return f"{entry['class']} ({entry.get('distortion', '?')})"
    parts = str(model).rsplit("-", 1)
    # A last part with a digit is the setting (q3, lambda0.01), the rest names the family.
    return parts[0] if len(parts) == 2 and re.search(r"\d", parts[1]) else str(model)


# --- curves ------------------------------------------------------------------------------------------------


def model_curves(rows, settings, column):
    """family -> (bpp, mean `column`), one point per model averaged over its images (appendix 6.4)."""
    groups = {}
    for row in rows:
        groups.setdefault(family(row["model"], settings), []).append(row)
    return {name: rd.aggregate_by_parameter(group, "model", "bpp", column)[1:] for name, group in groups.items()}


def codec_curves(rows, column):
    """codec -> (bpp, mean `column`), one point per quality setting averaged over the images."""
    groups = {}
    for row in rows:
        groups.setdefault(row["codec"], []).append(row)
    return {name: rd.aggregate_by_parameter(group, "quality", "bpp", column)[1:] for name, group in groups.items()}


def published_curves(names, metric):
    """name -> (bpp, value) of the paper's published Kodak curves; MS-SSIM in dB as the paper plots it."""
    curves = {}
    for name in names:
        if name not in reference.available(metric):
            continue
        bpp, values = reference.load_curve(name, metric)
        curves[name] = (bpp, ms_ssim_db(values) if metric == "msssim" else values)
    return curves


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


def draw_rd(axes, ours, codecs, published, ylabel, published_colors=None):
    """One RD panel: published curves dashed without markers (grey unless `published_colors`), codecs hollow
    coloured squares, ours solid coloured circles, so measured points never look like the paper's data."""
    if published_colors is None:
        published_colors = plt.cm.Greys(np.linspace(0.45, 0.85, max(len(published), 1)))
    styles = ("--", "-.", ":", (0, (5, 1, 1, 1)))
    for i, (name, (bpp, values)) in enumerate(published.items()):
        axes.plot(bpp, values, linestyle=styles[i % len(styles)], color=published_colors[i], linewidth=1.3,
                  label=f"paper: {name}")
    colors = iter(plt.cm.tab10.colors)
    for name, (bpp, values) in codecs.items():
        axes.plot(bpp, values, "-s", color=next(colors), markerfacecolor="none", linewidth=1.2,
                  label=f"{name} (measured)")
    for name, (bpp, values) in ours.items():
        # Black marker edges keep ours apart even where a published curve happens to share the colour.
        axes.plot(bpp, values, "-o", color=next(colors), linewidth=2.2, markersize=7, markeredgecolor="black",
                  label=f"ours: {name}")
    axes.set_xlabel(RATE_LABEL)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    _limit_to_ours(axes, ours, codecs)
    axes.legend(fontsize=8, loc="lower right", framealpha=0.9)


def _limit_to_ours(axes, ours, codecs):
    """Zoom on the measured range (with margin) so that long published curves do not squash our points."""
    measured = list(ours.values()) + list(codecs.values())
    if not measured:
        return
    bpp = np.concatenate([b for b, _ in measured])
    values = np.concatenate([v for _, v in measured])
    axes.set_xlim(0, max(bpp.max() * 1.15, 0.5))
    span = max(values.max() - values.min(), 1.0)
    axes.set_ylim(values.min() - 0.3 * span, values.max() + 0.3 * span)


def figure5(evaluation_rows, baseline_rows=None, settings=None):
    """Figure 5: PSNR (top) and MS-SSIM in dB (bottom) against bpp, ours vs codecs vs the paper's curves."""
    if not evaluation_rows:
        raise MissingInput("figure 5 needs the evaluation CSV (--evaluation)")
    figure, panels = plt.subplots(2, 1, figsize=(7.5, 10))
    for axes, metric in zip(panels, ("psnr", "msssim")):
        column, label = METRICS[metric]
        draw_rd(axes, model_curves(evaluation_rows, settings or {}, column),
                codec_curves(baseline_rows, column) if baseline_rows else {},
                published_curves(FIGURE5_PUBLISHED[metric], metric), label)
    panels[0].set_title("Kodak, averaged over images (paper Figure 5)")
    figure.tight_layout()
    return figure


def figure7(evaluation_rows, settings=None):
    """Figure 7: side information (bpp of z_hat) against total bpp for the hyperprior models."""
    if not evaluation_rows:
        raise MissingInput("figure 7 needs the evaluation CSV (--evaluation)")
    curves = hyperprior_curves(evaluation_rows, settings or {})
    figure, axes = plt.subplots(figsize=(6.5, 4.5))
    for name, (bpp, bpp_z) in curves.items():
        axes.plot(bpp, bpp_z, "-o", linewidth=2, label=f"ours: {name}")
    axes.set_xlabel(f"total {RATE_LABEL} (y and z)")
    axes.set_ylabel("side information, bits per pixel (z)")
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=9)
    axes.set_title("Side information vs total rate (paper Figure 7)")
    figure.tight_layout()
    return figure


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

    @tf.function
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


# --- writing -----------------------------------------------------------------------------------------------


def save_figure(figure, output_dir, name):
    """Write NAME.png and NAME.pdf atomically: a temporary file in the same folder, then os.replace."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "pdf"):
        target = output_dir / f"{name}.{suffix}"
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{suffix}", dir=output_dir)
        try:
            with os.fdopen(handle, "wb") as stream:
                figure.savefig(stream, format=suffix, dpi=150)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
        paths.append(target)
    plt.close(figure)
    return paths


def load_optional(path, what):
    """Rows of the CSV at `path`, or None with a logged reason when it was not given or does not exist."""
    if not path:
        return None
    if not pathlib.Path(path).is_file():
        logging.warning("%s CSV not found: %s", what, path)
        return None
    return read_rows(path)


def make_figures(selected, output_dir, evaluation=None, baselines=None):
    """Draw and save the selected figures; returns name -> written paths, skipping those whose inputs are missing."""
    evaluation_rows = load_optional(evaluation, "evaluation")
    baseline_rows = load_optional(baselines, "baselines")
    settings = read_settings(evaluation) if evaluation_rows else {}
    builders = {
        "5": lambda: figure5(evaluation_rows, baseline_rows, settings),
        "7": lambda: figure7(evaluation_rows, settings),
        "8": figure8,
        "10": lambda: figure10(evaluation_rows, baseline_rows, settings),
        "11": lambda: figure11(evaluation_rows, baseline_rows, settings),
    }
    written = {}
    for number in selected:
        try:
            figure = builders[number]()
        except MissingInput as reason:
            logging.warning("skipping figure %s: %s", number, reason)
            continue
        written[number] = save_figure(figure, output_dir, f"figure{number}")
        logging.info("wrote figure %s: %s", number, ", ".join(map(str, written[number])))
    return written


# --- command line ------------------------------------------------------------------------------------------


def define_flags():
    """The command line's flags; defined on demand so that importing this module adds none to other programs."""
    flags.DEFINE_string("evaluation", None, "Per-image CSV of experiments.evaluate (its .json beside it is used "
                                            "for model settings when present).")
    flags.DEFINE_string("baselines", None, "Per-image CSV of experiments.baselines.")
    flags.DEFINE_string("output_dir", "figures", "Folder for figureN.png and figureN.pdf.")
    flags.DEFINE_list("figures", list(FIGURES), f"Figures to draw, from: {', '.join(FIGURES)}.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    options = flags.FLAGS
    unknown = [name for name in options.figures if name not in FIGURES]
    if unknown:
        raise app.UsageError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    make_figures(options.figures, options.output_dir, options.evaluation, options.baselines)


if __name__ == "__main__":
    define_flags()
    app.run(main)
