r"""A results report: our models and the codecs measured in the same run, with Bjøntegaard deltas.

    python -m experiments.report --evaluation=runs/cpu/results.csv --baselines=results/baselines.csv \
        --published --output=results/report.md

For every curve of our models ("family": class, distortion and capacity, as in `experiments.plotting`) the report
gives one row per model (means over the images of bpp from the real files, bpp of z, PSNR, MS-SSIM) and, for
each family (hyperpriors first), its BD-rate against every other curve: our other families, each codec, and with
--published the paper's own curves (`tfhyper.reference`, meaningful on Kodak only). BD-rates are computed on the
curves as the figures draw them (appendix 6.4 aggregation; `tfhyper.rd.bd_rate`): negative means fewer bits
than the anchor at equal quality. Beside each BD-rate is the Bjøntegaard delta quality (BD-PSNR, BD-MS-SSIM in
dB; `rd.bd_psnr`), the mean quality gain at equal rate over the rates both curves span: it exists also where the
quality ranges do not overlap. Where a curve has fewer than the four points Bjøntegaard's cubic fit needs
(three lambdas, say), the piecewise-cubic variant is used and marked "(piecewise)" (`rd.bd_rate_pchip`). A pair
whose quality ranges do not overlap is reported as n/a with the reason, and so is a curve whose quality does not
rise with its rate (or rises by less than `MIN_RISE_DB` between two points): a fit through a curve that turns back,
or is flat, is not a result.
"""
import datetime
import pathlib
import sys

import numpy as np
from absl import flags

from experiments import cli, plotting
from experiments.results import read_evaluations, read_rows
from tfhyper import rd
from tfhyper.imageio import atomic_write_bytes


def all_curves(evaluation_rows, settings, baseline_rows, metric, published=False):
    """label -> (bpp, value) for `metric` ("psnr" or "msssim"): ours, the codecs, and the paper's if asked."""
    column = plotting.METRICS[metric][0]
    ours = plotting.model_curves(evaluation_rows, settings, column)
    curves = {f"ours: {name}": curve for name, curve in ours.items()}
    if baseline_rows:
        curves.update({f"{name} (measured)": curve
                       for name, curve in plotting.codec_curves(baseline_rows, column).items()})
    if published:
        curves.update({f"paper: {name}": curve
                       for name, curve in plotting.published_curves(plotting.PUBLISHED[metric], metric).items()})
    return curves


def bd_rate_or_reason(anchor, test):
    """BD-rate in percent (a float) by Bjøntegaard's cubic fit; where a curve has fewer than the four points that
    needs, by piecewise-cubic interpolation (text ending "(piecewise)"); else the reason it cannot be computed.

    A curve whose quality does not rise with its rate (models far from convergence) is refused with that reason:
    it has no single rate at a given quality, and a cubic fitted through a curve that turns back gives a number
    (VCEG-M33's least squares is defined for any four points) that measures the fit, not the codecs.
    """
    return _single_point(anchor, test) or _turns_back(anchor, test) or _cubic_or_piecewise(
        anchor, test, rd.bd_rate, rd.bd_rate_pchip, "{:+.1f} % (piecewise)")


def bd_quality_or_reason(anchor, test):
    """Bjøntegaard delta quality (BD-PSNR, or BD-MS-SSIM in dB) in dB by the cubic fit, piecewise-cubic
    ("(piecewise)") for curves of fewer than four points, else the reason it cannot be computed.

    It averages over the rates both curves span, so it also compares curves whose quality ranges do not overlap
    (ours at CPU scale against the paper's). A curve that turns back is refused as for the BD-rate.
    """
    return _single_point(anchor, test) or _turns_back(anchor, test) or _cubic_or_piecewise(
        anchor, test, rd.bd_psnr, rd.bd_psnr_pchip, "{:+.2f} dB (piecewise)")


# A curve must rise by more than this between its points (dB of PSNR or of MS-SSIM; the precision the tables print).
# A rise below it is noise, and a fit through points of (nearly) one quality is steep enough to give any rate: in a
# main job of 2026-12-07 a factorized curve rose by 0.0009 dB of MS-SSIM from q2 to q3, and its cubic fit gave the
# hyperprior a BD-rate of +311.5 % where the points differ by a few percent (WORKSPACE_NOTES.md).
MIN_RISE_DB = 0.01


def _turns_back(anchor, test):
    """The reason a delta is refused when a curve's quality does not rise with its rate, else None."""
    for curve, name in ((anchor, "anchor"), (test, "test")):
        if not rd.quality_rises(curve):
            return f"n/a: the {name}'s quality does not rise with its rate (a fit through a curve that turns back " \
                   "is not a result)"
        if not rd.quality_rises(curve, MIN_RISE_DB):
            return f"n/a: the {name}'s quality rises by less than {MIN_RISE_DB:g} dB between two of its points (a " \
                   "fit through a flat curve is not a result)"
    return None


def _cubic_or_piecewise(anchor, test, cubic, piecewise, piecewise_format):
    """cubic(anchor, test) as a float; where a curve has too few points for it, piecewise(...) formatted as text;
    else the reason neither can be computed ("n/a: ...")."""
    try:
        return cubic(anchor, test)
    except ValueError as error:
        if "cubic fit needs" not in str(error):
            return f"n/a: {error}"
    try:
        return piecewise_format.format(piecewise(anchor, test))
    except ValueError as error:
        return f"n/a: {error}"


def _single_point(anchor, test):
    """The reason a delta is missing when a curve is a single point (one model, one codec setting), else None."""
    for curve, name in ((anchor, "anchor"), (test, "test")):
        if len(curve[0]) < 2:
            return f"n/a: the {name} is a single point (a curve needs two models or more)"
    return None


def bd_rates(curves, tests, delta=bd_rate_or_reason):
    """{test: {anchor: delta(anchor, test)}} for each test label against every other curve (BD-rate or reason,
    or with delta=bd_quality_or_reason the quality delta)."""
    return {test: {anchor: delta(curves[anchor], curves[test]) for anchor in curves if anchor != test}
            for test in tests}


def model_table(rows, settings):
    """Markdown table, one row per model: settings and means over its images."""
    lines = ["| model | curve | N | M | lambda | bpp (file) | bpp of z | PSNR (dB) | MS-SSIM | MS-SSIM (dB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    for name, own in by_model.items():
        entry = settings.get(name, {})
        mean = {key: sum(row[key] for row in own) / len(own) for key in ("bpp", "bpp_z", "psnr", "ms_ssim",
                                                                         "ms_ssim_db")}
        lines.append(f"| {name} | {plotting.family(name, settings)} | {entry.get('N', '')} | {entry.get('M', '')} | "
                     f"{entry.get('lambda', '')} | {mean['bpp']:.4f} | {mean['bpp_z']:.4f} | {mean['psnr']:.2f} | "
                     f"{mean['ms_ssim']:.4f} | {mean['ms_ssim_db']:.2f} |")
    return "\n".join(lines)


def codec_table(rows):
    """Markdown table, one row per codec: its settings' range of mean bpp, PSNR and MS-SSIM (dB)."""
    lines = ["| codec | settings | bpp | PSNR (dB) | MS-SSIM (dB) |", "|---|---:|---|---|---|"]
    msssim_curves = plotting.codec_curves(rows, "ms_ssim_db")
    for name, (bpp, psnr) in plotting.codec_curves(rows, "psnr").items():
        msssim = msssim_curves[name][1]
        lines.append(f"| {name} | {len(bpp)} | {bpp.min():.3f} - {bpp.max():.3f} | {psnr.min():.2f} - "
                     f"{psnr.max():.2f} | {msssim.min():.2f} - {msssim.max():.2f} |")
    return "\n".join(lines)


def equal_rate_table(evaluation_rows, settings, baseline_rows, column="psnr"):
    """Markdown table: each model's mean quality minus each codec's at the same mean rate (in dB).

    The codec's curve (one point per quality setting, appendix 6.4) is interpolated linearly in log rate; a
    model outside the codec's rate range gets "-". Unlike a BD-rate this needs no curve of ours, so it also
    reads models whose curves are not yet monotone.
    """
    codecs = plotting.codec_curves(baseline_rows, column)
    lines = ["| model | " + " | ".join(codecs) + " |", "|---|" + "---:|" * len(codecs)]
    by_model = {}
    for row in evaluation_rows:
        by_model.setdefault(row["model"], []).append(row)
    for name, own in by_model.items():
        bpp = np.mean([row["bpp"] for row in own])
        value = np.mean([row[column] for row in own])
        cells = []
        for rates, values in codecs.values():
            order = np.argsort(rates)
            inside = rates.min() <= bpp <= rates.max()
            cells.append(f"{value - np.interp(np.log(bpp), np.log(rates[order]), values[order]):+.2f}"
                         if inside else "-")
        lines.append(f"| {name} ({bpp:.3f} bpp) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bd_table(evaluation_rows, settings, baseline_rows, published=False):
    """Markdown tables of the BD-rates and BD-quality of each of our curves (hyperpriors first) against all other
    curves, PSNR and MS-SSIM. Returns (text, results): results["psnr"] and ["msssim"] hold BD-rates,
    ["psnr_delta"] and ["msssim_delta"] the quality deltas, each as {test: {anchor: value or reason}}."""
    tables = {metric: all_curves(evaluation_rows, settings, baseline_rows, metric, published)
              for metric in ("psnr", "msssim")}
    tests = [label for label in tables["psnr"] if label.startswith("ours:") and "Hyperprior" in label]
    if not tests:  # without settings, a hyperprior is a curve whose rows code z
        coded_z = {plotting.family(row["model"], settings) for row in evaluation_rows if row["bpp_z"] > 0}
        tests = [f"ours: {name}" for name in sorted(coded_z)]
    # Then our other curves (the factorized prior against the codecs and the paper's own factorized model).
    tests += [label for label in tables["psnr"] if label.startswith("ours:") and label not in tests]
    results = {metric: bd_rates(curves, tests) for metric, curves in tables.items()}
    results.update({f"{metric}_delta": bd_rates(curves, tests, bd_quality_or_reason)
                    for metric, curves in tables.items()})
    columns = ("psnr", "psnr_delta", "msssim", "msssim_delta")
    lines = []
    for test in tests:
        lines += [f"Bjøntegaard deltas of **{test[6:]}** (BD-rate negative: fewer bits at equal quality; "
                  "BD-quality positive: higher quality at equal rate)", "",
                  "| anchor | BD-rate, PSNR | BD-PSNR | BD-rate, MS-SSIM (dB) | BD-MS-SSIM |",
                  "|---|---:|---:|---:|---:|"]
        for anchor in dict.fromkeys([*results["psnr"][test], *results["msssim"][test]]):
            cells = [_cell(results[column][test].get(anchor), column.endswith("_delta")) for column in columns]
            lines.append(f"| {anchor} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines), results


def _cell(value, decibels=False):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.2f} dB" if decibels else f"{value:+.1f} %"
    return value


def markdown_report(evaluation_rows, settings, baseline_rows=None, published=False, title="Results", notes=()):
    """The whole report as Markdown text."""
    parts = [f"# {title}", "", f"Written {datetime.date.today().isoformat()}.", *notes, "",
             "## Our models (means over the images; bpp from the real .tfh files, header included)", "",
             model_table(evaluation_rows, settings), ""]
    if baseline_rows:
        parts += ["## Codecs measured in the same run (range over their quality settings)", "",
                  codec_table(baseline_rows), ""]
        parts += ["## Quality against each codec at the same rate (dB; positive: ours is better)", "",
                  "PSNR:", "", equal_rate_table(evaluation_rows, settings, baseline_rows, "psnr"), "",
                  "MS-SSIM (dB):", "", equal_rate_table(evaluation_rows, settings, baseline_rows, "ms_ssim_db"), ""]
    parts += ["## Bjøntegaard deltas (appendix 6.4 aggregation, cubic fits in log rate)", "",
              bd_table(evaluation_rows, settings, baseline_rows, published)[0]]
    return "\n".join(parts)


# --- command line ------------------------------------------------------------------------------------------


def define_flags():
    flags.DEFINE_list("evaluation", None, "Per-image CSVs of experiments.evaluate or experiments.sweep.")
    flags.DEFINE_string("baselines", None, "Per-image CSV of experiments.baselines (same images).")
    flags.DEFINE_bool("published", False, "Also compare with the paper's published Kodak curves (Kodak only).")
    flags.DEFINE_string("output", None, "Markdown file to write (printed only when not given).")
    flags.DEFINE_bool("force", False, "Replace an existing --output.")
    flags.DEFINE_string("title", "Results", "Title of the report.")
    flags.mark_flag_as_required("evaluation")


def main(options):
    """Print the report, and write it to --output when given."""
    missing = [path for path in [*options.evaluation, options.baselines] if path and not pathlib.Path(path).is_file()]
    if missing:
        sys.exit(f"report: not found: {', '.join(missing)}")
    rows, settings = read_evaluations(options.evaluation)
    baseline_rows = read_rows(options.baselines) if options.baselines else None
    text = markdown_report(rows, settings, baseline_rows, options.published, options.title)
    print(text)
    if options.output:
        try:
            atomic_write_bytes(options.output, text.encode("utf-8"), force=options.force)
        except (OSError, ValueError) as error:
            sys.exit(f"report: {error}")


if __name__ == "__main__":
    cli.run(main, define_flags)
