"""What the figures and the report share: our results as rate-distortion curves, and how a panel of them is drawn.

A curve ("family") is every model sharing class, distortion and capacity (`family`); its points are aggregated
over the images as in appendix 6.4 (`aggregate`). `experiments.figures`, `experiments.image_figures` and
`experiments.report` build their curves here, so that a figure and a report table always show the same numbers.
"""
import io
import math
import pathlib
import re

import matplotlib

matplotlib.use("Agg")  # files only; no display is available or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from tfhyper import paper, rd, reference  # noqa: E402
from tfhyper.imageio import atomic_write_bytes  # noqa: E402
from tfhyper.losses import ms_ssim_db  # noqa: E402

# The paper's own curves that Figure 5 and the report compare ours with (PSNR: the squared-error models, MS-SSIM:
# those trained for it).
PUBLISHED = {
    "psnr": ("balle-2018-iclr-opt-mse", "balle-2017-iclr-opt-mse", "bpg444", "jpeg420", "webp"),
    "msssim": ("balle-2018-iclr-opt-msssim", "balle-2017-iclr-opt-msssim", "bpg444", "jpeg420", "webp"),
}
# metric -> (CSV column of the per-image rows, axis label).
METRICS = {"psnr": ("psnr", "PSNR (dB)"), "msssim": ("ms_ssim_db", "MS-SSIM (dB)")}
RATE_LABEL = "bits per pixel"
# Our curves' colours: strong and apart from the tab10 colours the codecs take, whatever their number.
OUR_COLORS = ["black", "#e7298a", "#7570b3", "#66a61e", "#a6761d"]


class MissingInput(Exception):
    """A figure cannot be drawn from the inputs given; the message says which one is missing."""



# --- curves ------------------------------------------------------------------------------------------------


def family(model, settings):
    """The curve a model belongs to: class and distortion from its settings, else its name without the setting.

    Models whose N is not the paper's N for their lambda (scaled as in the sweep's presets) form curves of
    their own, labelled with the scale: "FactorizedPrior (mse, N x0.125)". Figure 9 compares such curves. Settings
    may name the curve instead ("curve"): models fine-tuned from one base run keep its N and M at every lambda, so
    the paper's N per lambda would split them.
    """
    entry = settings.get(model)
    if entry and entry.get("curve"):  # named where it was trained (models fine-tuned from one base run)
        return entry["curve"]
    if entry and "class" in entry:
        scale = capacity(entry)
        suffix = "" if scale in (None, 1.0) else f", N x{scale:g}"
        return f"{entry['class']} ({entry.get('distortion', '?')}{suffix})"
    parts = str(model).rsplit("-", 1)
    # A last part with a digit is the setting (q3, lambda0.01), the rest names the family.
    return parts[0] if len(parts) == 2 and re.search(r"\d", parts[1]) else str(model)


def capacity(entry):
    """N of a model relative to the paper's N at its lambda (Figure 4, section 4.1), or None if not a paper lambda."""
    if "lambda" not in entry or "N" not in entry:
        return None
    for quality in paper.QUALITIES.values():
        if math.isclose(quality.lmbda(entry.get("distortion", "mse")), entry["lambda"], rel_tol=1e-3):
            return entry["N"] / quality.num_filters
    return None



def model_curves(rows, settings, column):
    """family -> (bpp, mean `column`): one point per model averaged over its images, or, for MS-SSIM, averaged
    over the images at equal rates (appendix 6.4, `aggregate`)."""
    groups = {}
    for row in rows:
        groups.setdefault(family(row["model"], settings), []).append(row)
    return {name: aggregate(group, "model", column) for name, group in groups.items()}


def codec_curves(rows, column):
    """codec -> (bpp, mean `column`), aggregated over the images as `model_curves` does, per quality setting."""
    groups = {}
    for row in rows:
        groups.setdefault(row["codec"], []).append(row)
    return {name: aggregate(group, "quality", column) for name, group in groups.items()}


RATE_POINTS = 12  # rates at which the MS-SSIM curves of single images are interpolated and averaged


def aggregate(rows, setting, column):
    """One curve over an image set, as in appendix 6.4.

    PSNR (any column but MS-SSIM): rate and metric averaged over the images at each `setting` (lambda or codec
    quality). MS-SSIM: every image's curve interpolated at RATE_POINTS rates evenly spaced over the range all
    images cover, then averaged at equal rates (`rd.aggregate_by_rate`, on MS-SSIM in dB, the scale plotted).
    Where that is impossible (fewer than two settings, images whose rate ranges do not overlap, two settings at
    the same rate on an image), MS-SSIM falls back to averaging at equal settings, logged once per curve.
    """
    if column.startswith("ms_ssim") and len({row["image"] for row in rows}) > 1:  # one image: its own points
        per_image = {}
        for row in rows:
            per_image.setdefault(row["image"], []).append((row["bpp"], row[column]))
        curves = {image: tuple(map(np.asarray, zip(*sorted(points)))) for image, points in per_image.items()}
        lo = max(rates[0] for rates, _ in curves.values())
        hi = min(rates[-1] for rates, _ in curves.values())
        # An image whose quality falls as its rate rises (a model far from convergence) has no curve to
        # interpolate along; its points are then averaged at equal settings like PSNR's.
        rising = all(rd.quality_rises(curve) for curve in curves.values())
        try:
            if rising and all(len(rates) >= 2 for rates, _ in curves.values()) and lo < hi:
                return rd.aggregate_by_rate(curves, np.linspace(lo, hi, RATE_POINTS))
            reason = "quality does not rise with rate on every image" if not rising else \
                "the images' rate ranges do not overlap"
        except ValueError as error:  # e.g. two settings at the same rate on one image
            reason = str(error)
        logging.info("MS-SSIM averaged at equal settings (%s): %s", rows[0].get(setting), reason)
    return rd.aggregate_by_parameter(rows, setting, "bpp", column)[1:]


def published_curves(names, metric):
    """name -> (bpp, value) of the paper's published Kodak curves; MS-SSIM in dB as the paper plots it."""
    curves = {}
    for name in names:
        if name not in reference.available(metric):
            continue
        bpp, values = reference.load_curve(name, metric)
        curves[name] = (bpp, ms_ssim_db(values) if metric == "msssim" else values)
    return curves



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
    ours_colors = iter(OUR_COLORS * 3)
    for name, (bpp, values) in codecs.items():
        axes.plot(bpp, values, "-s", color=next(colors), markerfacecolor="none", linewidth=1.2,
                  label=f"{name} (measured)")
    for name, (bpp, values) in ours.items():
        # Black marker edges keep ours apart even where a published curve happens to share the colour.
        axes.plot(bpp, values, "-o", color=next(ours_colors), linewidth=2.2, markersize=7, markeredgecolor="black",
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



def save_figure(figure, output_dir, name):
    """Write NAME.png and NAME.pdf atomically (`atomic_write_bytes`), replacing earlier ones."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in ("png", "pdf"):
        rendered = io.BytesIO()
        figure.savefig(rendered, format=suffix, dpi=150)
        target = output_dir / f"{name}.{suffix}"
        atomic_write_bytes(target, rendered.getvalue(), force=True)
        paths.append(target)
    plt.close(figure)
    return paths

