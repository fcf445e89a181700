"""Rate-distortion curves: aggregation over an image set (paper, appendix 6.4) and Bjøntegaard deltas.

A curve is a pair `(rates, distortions)` of equal-length 1-D sequences: rates in bits per pixel, distortions a
quality measure that grows with rate (PSNR in dB, MS-SSIM raw or in dB).

Aggregation (appendix 6.4). The paper aggregates its two kinds of plot differently:
- PSNR curves: "no interpolation was used, averaging rate and distortion measurements across equal values of
  lambda" -- the measurements averaged are the per-image bpp and the per-image PSNR in dB, i.e. the average
  PSNR, not the PSNR of the average MSE (`aggregate_by_parameter`; a codec's quality setting plays lambda's part).
- MS-SSIM curves: "we interpolate the RD curves for each image ... using cubic splines at a predefined set of bit
  rates, and then average across equal bit rates" (`aggregate_by_rate`).

Bjøntegaard deltas (G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves", ITU-T VCEG-M33,
2001). With a least-squares cubic p fitted through all points of each curve,
    BD-rate = exp( mean over [D_lo, D_hi] of (p_test(D) - p_anchor(D)) ) - 1,   p(D) ~ ln R,
    BD-PSNR = mean over [L_lo, L_hi] of (q_test(L) - q_anchor(L)),              q(L) ~ D, L = ln R,
where [D_lo, D_hi] ([L_lo, L_hi]) is the overlap of the two curves' quality (log-rate) ranges. Both are
independent of the logarithm's base: a least-squares fit is linear in its targets, so fitting log10 R gives
p / ln 10 and 10^(mean / ln 10) = exp(mean); for BD-PSNR a change of base rescales L, which leaves the mean of a
fitted polynomial over the matching interval unchanged. Fitting only the points inside the overlap, a variant
some tools use, does not reproduce the paper's figures (BPG 4:4:4: +8.4 % instead of +8.0 %).
"""
import collections
import math

import numpy as np

# Bjøntegaard's fit of log rate against quality (and back) is a cubic polynomial (VCEG-M33).
BJONTEGAARD_DEGREE = 3


def aggregate_by_parameter(records, parameter_key, rate_key, distortion_key):
    """Average rate and distortion over the records sharing a parameter value (PSNR plots, appendix 6.4).

    records: iterable of mappings, one per (image, setting), e.g. `{"lambda": 0.01, "bpp": .., "psnr": ..}`.
    Every parameter value must have the same number of records (the same image set), else averages at different
    settings would describe different images. Returns `(parameters, rates, distortions)` as arrays, sorted by
    mean rate, where rates[i] = mean of rate_key and distortions[i] = mean of distortion_key (e.g. mean PSNR in dB)
    over the records with parameter parameters[i].
    """
    groups = collections.defaultdict(list)
    for index, record in enumerate(records):
        try:
            point = (float(record[rate_key]), float(record[distortion_key]))
            groups[record[parameter_key]].append(point)
        except KeyError as missing:
            raise ValueError(f"record {index} has no field {missing}") from None
    if not groups:
        raise ValueError("no records to aggregate")
    counts = {parameter: len(points) for parameter, points in groups.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"unequal numbers of records per {parameter_key}: {counts}")
    means = {parameter: np.mean(points, axis=0) for parameter, points in groups.items()}
    for parameter, (rate, distortion) in means.items():
        if not (math.isfinite(rate) and math.isfinite(distortion)):
            raise ValueError(f"non-finite {rate_key} or {distortion_key} at {parameter_key}={parameter!r}")
    ordered = sorted(means, key=lambda parameter: means[parameter][0])
    return (
        np.asarray(ordered),
        np.array([means[p][0] for p in ordered]),
        np.array([means[p][1] for p in ordered]),
    )


def aggregate_by_rate(per_image_curves, rates):
    """Interpolate each image's curve at `rates` and average across images (MS-SSIM plots, appendix 6.4).

    per_image_curves: mapping image -> (rates, values), or a sequence of such pairs. The interpolant is the
    monotone piecewise-cubic Hermite interpolant (`pchip`), a C1 cubic spline chosen over the C2 natural spline:
    per-image RD points come at uneven spacing (lambda roughly doubles per step), where a C2 spline can overshoot
    and make quality fall with rate or exceed MS-SSIM = 1; pchip keeps each image's curve monotone and within its
    data, and an odd point only bends its two neighbouring intervals. Rates outside any image's measured range are
    refused rather than extrapolated. Returns `(rates, mean_values)`.
    """
    curves = per_image_curves.values() if hasattr(per_image_curves, "values") else per_image_curves
    curves = [_sorted_curve(curve, f"curve {i}") for i, curve in enumerate(curves)]
    if not curves:
        raise ValueError("no per-image curves to aggregate")
    rates = np.asarray(rates, dtype=np.float64)
    if rates.ndim != 1 or rates.size == 0 or not np.all(np.isfinite(rates)):
        raise ValueError("rates must be a non-empty 1-D sequence of finite numbers")
    lo = max(curve_rates[0] for curve_rates, _ in curves)
    hi = min(curve_rates[-1] for curve_rates, _ in curves)
    if rates.min() < lo or rates.max() > hi:
        raise ValueError(
            f"rates must lie in [{lo:g}, {hi:g}], the range every image's curve covers; "
            f"got [{rates.min():g}, {rates.max():g}]"
        )
    return rates, np.mean([pchip(x, y, rates) for x, y in curves], axis=0)


def pchip(x, y, x_new):
    """Monotone piecewise-cubic Hermite interpolation of the points (x, y) at x_new (x strictly increasing).

    Interior slopes are the weighted harmonic mean of the neighbouring secants (Fritsch & Butland 1984), zero where
    the secants change sign, so monotone data give a monotone interpolant (Fritsch & Carlson 1980); end slopes use
    the shape-preserving three-point formula (C. Moler, "Numerical Computing with MATLAB", 2004, section 3.4).
    With two points the interpolant is the straight line.
    """
    x, y, x_new = (np.asarray(v, dtype=np.float64) for v in (x, y, x_new))
    h = np.diff(x)
    secant = np.diff(y) / h
    slope = _pchip_slopes(h, secant)
    k = np.clip(np.searchsorted(x, x_new, side="right") - 1, 0, len(h) - 1)
    t = (x_new - x[k]) / h[k]
    # Cubic Hermite basis on [x_k, x_k+1].
    h00 = (1 + 2 * t) * (1 - t) ** 2
    h10 = t * (1 - t) ** 2
    h01 = t * t * (3 - 2 * t)
    h11 = t * t * (t - 1)
    return h00 * y[k] + h10 * h[k] * slope[k] + h01 * y[k + 1] + h11 * h[k] * slope[k + 1]


def _pchip_slopes(h, secant):
    if len(h) == 1:
        return np.array([secant[0], secant[0]])
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same_sign = secant[:-1] * secant[1:] > 0
    # (w1 + w2) / (w1 / s0 + w2 / s1), multiplied out so that a tiny secant cannot overflow; only same-sign
    # entries, whose denominator is non-zero, are kept.
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) * secant[:-1] * secant[1:] / (w1 * secant[1:] + w2 * secant[:-1])
    interior = np.where(same_sign, harmonic, 0.0)
    first = _pchip_end_slope(h[0], h[1], secant[0], secant[1])
    last = _pchip_end_slope(h[-1], h[-2], secant[-1], secant[-2])
    return np.concatenate([[first], interior, [last]])


def _pchip_end_slope(h0, h1, secant0, secant1):
    slope = ((2 * h0 + h1) * secant0 - h0 * secant1) / (h0 + h1)
    if np.sign(slope) != np.sign(secant0):
        return 0.0
    # Limit the slope so the end interval does not overshoot where the data turn.
    if np.sign(secant0) != np.sign(secant1) and abs(slope) > 3 * abs(secant0):
        return 3 * secant0
    return slope


def bd_rate(anchor, test):
    """Bjøntegaard delta rate of `test` against `anchor`, in percent (VCEG-M33; see the module docstring).

    The average relative rate change at equal quality over the overlapping quality range: negative means `test`
    needs less rate than `anchor` (is better). The paper's hyperprior needs 8.0 % more rate than BPG 4:4:4 on PSNR,
    so `bd_rate(bpg444, hyperprior)` is +8.0. Quality is whatever the curves hold; the paper's -37.5 % against BPG
    on MS-SSIM is on raw MS-SSIM (on MS-SSIM in dB the same curves give -41.2 %).
    """
    anchor_rates, anchor_quality = _curve(anchor, "anchor")
    test_rates, test_quality = _curve(test, "test")
    lo, hi = _overlap(anchor_quality, test_quality, "quality")
    gap = _fitted_mean(test_quality, np.log(test_rates), lo, hi) - _fitted_mean(
        anchor_quality, np.log(anchor_rates), lo, hi
    )
    return 100.0 * math.expm1(gap)


def bd_rate_pchip(anchor, test):
    """Bjøntegaard delta rate with piecewise-cubic interpolation instead of one least-squares cubic, in percent.

    The variant used in video coding when curves have few points (JVET's BD-rate tools, after VCEG-AL22): each
    curve's log rate is interpolated through its points as a monotone function of quality (`pchip`), and the mean
    difference over the overlapping quality range is integrated (`_pchip_mean_gap`). It needs only two points
    per curve, but each curve's quality must rise with its rate (a curve that turns back has no single rate per
    quality). Negative: `test` needs less rate.
    """
    curves = []
    for curve, name in ((anchor, "anchor"), (test, "test")):
        rates, quality = _sorted_curve(curve, name)
        if not quality_rises((rates, quality)):
            raise ValueError(f"{name}: quality must rise with rate for a piecewise BD-rate")
        curves.append((quality, np.log(rates)))
    return 100.0 * math.expm1(_pchip_mean_gap(*curves, "quality"))


def quality_rises(curve, min_rise=0.0):
    """True when the curve's quality (second sequence) rises with its rate (first), taken in rate order, by more
    than `min_rise` at every point: the condition for one rate per quality, which the piecewise BD-rate and the
    per-image interpolation at equal rates need (models far from convergence can break it)."""
    rates, quality = (np.asarray(v, dtype=np.float64) for v in curve)
    return bool(np.all(np.diff(quality[np.argsort(rates, kind="stable")]) > min_rise))


def bd_psnr_pchip(anchor, test):
    """Bjøntegaard delta quality (BD-PSNR for PSNR curves) with piecewise-cubic interpolation, for curves with
    fewer than four points: the mean over the overlapping log-rate range of the difference between the curves'
    qualities, each interpolated through its points by `pchip` in log rate. Positive: `test` is better."""
    curves = []
    for curve, name in ((anchor, "anchor"), (test, "test")):
        rates, quality = _sorted_curve(curve, name)
        curves.append((np.log(rates), quality))
    return _pchip_mean_gap(*curves, "rate")


def _pchip_mean_gap(anchor, test, what):
    """Mean of pchip(test) - pchip(anchor) over the overlap of their x ranges; Simpson's rule on 2048 intervals
    (well below 0.01 percentage points or 0.001 dB of error)."""
    lo, hi = _overlap(anchor[0], test[0], what)
    grid = np.linspace(lo, hi, 2049)
    difference = pchip(*test, grid) - pchip(*anchor, grid)
    weights = np.ones_like(grid)
    weights[1:-1:2], weights[2:-1:2] = 4, 2
    return float(np.sum(weights * difference) / (3 * (len(grid) - 1)))


def bd_psnr(anchor, test):
    """Bjøntegaard delta quality of `test` against `anchor` (BD-PSNR in dB for PSNR curves; VCEG-M33).

    The average quality difference at equal rate over the overlapping log-rate range, in the quality's own unit:
    positive means `test` reaches higher quality than `anchor` at the same rate (is better).
    """
    anchor_rates, anchor_quality = _curve(anchor, "anchor")
    test_rates, test_quality = _curve(test, "test")
    anchor_log_rates, test_log_rates = np.log(anchor_rates), np.log(test_rates)
    lo, hi = _overlap(anchor_log_rates, test_log_rates, "rate")
    return _fitted_mean(test_log_rates, test_quality, lo, hi) - _fitted_mean(
        anchor_log_rates, anchor_quality, lo, hi
    )


def _fitted_mean(x, y, lo, hi):
    """Mean over [lo, hi] of the least-squares cubic through (x, y)."""
    # Polynomial.fit works in a scaled domain: a cubic in raw PSNR (~40^3) is badly conditioned.
    cubic = np.polynomial.Polynomial.fit(x, y, deg=BJONTEGAARD_DEGREE)
    integral = cubic.integ()
    return float((integral(hi) - integral(lo)) / (hi - lo))


def _overlap(a, b, what):
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not hi > lo:
        raise ValueError(f"the curves' {what} ranges do not overlap")
    return lo, hi


def _curve(curve, name):
    """A validated curve as two float64 arrays, rates positive, enough distinct points for a cubic fit."""
    try:
        rates, quality = (np.asarray(v, dtype=np.float64) for v in curve)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (rates, distortions) of numeric sequences") from None
    if rates.ndim != 1 or rates.shape != quality.shape:
        raise ValueError(f"{name}: rates and distortions must be 1-D of equal length")
    if not (np.all(np.isfinite(rates)) and np.all(np.isfinite(quality))):
        raise ValueError(f"{name}: rates and distortions must be finite")
    if np.any(rates <= 0):
        raise ValueError(f"{name}: rates must be positive (the fit is in log rate)")
    needed = BJONTEGAARD_DEGREE + 1
    if min(len(np.unique(rates)), len(np.unique(quality))) < needed:
        raise ValueError(f"{name}: a cubic fit needs at least {needed} distinct points, got {len(rates)}")
    return rates, quality


def _sorted_curve(curve, name):
    """A per-image curve sorted by rate, with distinct finite rates and finite values."""
    try:
        rates, values = (np.asarray(v, dtype=np.float64) for v in curve)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (rates, values) of numeric sequences") from None
    if rates.ndim != 1 or rates.shape != values.shape or rates.size < 2:
        raise ValueError(f"{name}: rates and values must be 1-D of equal length, at least 2 points")
    if not (np.all(np.isfinite(rates)) and np.all(np.isfinite(values))):
        raise ValueError(f"{name}: rates and values must be finite")
    order = np.argsort(rates, kind="stable")
    rates, values = rates[order], values[order]
    if np.any(np.diff(rates) <= 0):
        raise ValueError(f"{name}: rates must be distinct")
    return rates, values
