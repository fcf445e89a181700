"""Rate-distortion aggregation (appendix 6.4), Bjøntegaard deltas, and the published reference curves."""
import copy
import math
import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfhyper import rd, reference
from tfhyper.losses import ms_ssim_db

HYPERPRIOR_MSE = "balle-2018-iclr-opt-mse"
HYPERPRIOR_MSSSIM = "balle-2018-iclr-opt-msssim"


# --- published curves --------------------------------------------------------------------------------------


def test_reference_data_equals_the_shared_copy(shared_dir):
    shared = sorted((shared_dir / "reference" / "kodak").glob("*.csv"))
    assert shared
    package = pathlib.Path(reference.__file__).parent / "kodak"
    assert sorted(p.name for p in package.glob("*.csv")) == [p.name for p in shared]
    for path in shared:
        assert (package / path.name).read_bytes() == path.read_bytes(), path.name


def test_load_curve_reads_the_file_values(shared_dir):
    bpp, psnr = reference.load_curve(HYPERPRIOR_MSE, "psnr")
    # First and last lines of the published file.
    assert (bpp[0], psnr[0]) == (0.115239, 27.106351)
    assert (bpp[-1], psnr[-1]) == (1.727503, 40.794920)
    text = (shared_dir / "reference" / "kodak" / f"{HYPERPRIOR_MSE}.psnr.csv").read_text()
    assert len(bpp) == len(text.strip().splitlines()) - 1
    bpp, ms_ssim = reference.load_curve("bpg444", "msssim")
    assert (bpp[0], ms_ssim[0]) == (0.023857, 0.783939)
    assert np.all((ms_ssim > 0) & (ms_ssim < 1))


def test_available_lists_names_per_metric(shared_dir):
    files = [p.name for p in (shared_dir / "reference" / "kodak").glob("*.csv")]
    assert reference.available("psnr") == sorted(f[: -len(".psnr.csv")] for f in files if f.endswith(".psnr.csv"))
    assert reference.available("msssim") == sorted(
        f[: -len(".msssim.csv")] for f in files if f.endswith(".msssim.csv")
    )
    assert set(reference.available()) == set(reference.available("psnr")) | set(reference.available("msssim"))
    assert "rippel2017" in reference.available("msssim") and "rippel2017" not in reference.available("psnr")


@pytest.mark.parametrize(
    "name, metric, message",
    [
        ("no-such-codec", "psnr", "no published psnr curve"),
        ("rippel2017", "psnr", "available"),
        ("bpg444", "ssim", "metric"),
    ],
)
def test_load_curve_rejects_unknown_names_and_metrics(name, metric, message):
    with pytest.raises(ValueError, match=message):
        reference.load_curve(name, metric)


# --- the paper's Bjøntegaard figures, from the published curves --------------------------------------------


@pytest.mark.parametrize(
    "anchor, published",
    [("bpg444", 8.0), ("webp", -30.3), ("jpeg420", -53.3), ("balle-2017-iclr-opt-mse", -18.4)],
)
def test_bd_rate_of_the_hyperprior_on_psnr_reproduces_the_published_figures(anchor, published):
    value = rd.bd_rate(reference.load_curve(anchor, "psnr"), reference.load_curve(HYPERPRIOR_MSE, "psnr"))
    # The published figures are rounded to 0.1 percentage points.
    assert value == pytest.approx(published, abs=0.05)


def test_bd_rate_of_the_hyperprior_on_ms_ssim_is_on_raw_ms_ssim():
    anchor = reference.load_curve("bpg444", "msssim")
    test = reference.load_curve(HYPERPRIOR_MSSSIM, "msssim")
    assert rd.bd_rate(anchor, test) == pytest.approx(-37.5, abs=0.05)
    # The same curves in dB do not give the published figure: it was computed on raw MS-SSIM.
    in_db = rd.bd_rate((anchor[0], ms_ssim_db(anchor[1])), (test[0], ms_ssim_db(test[1])))
    assert abs(in_db - (-37.5)) > 1.0


# --- Bjøntegaard deltas against closed forms ---------------------------------------------------------------


def _log_rate_curve(quality, log_rate):
    return np.exp(log_rate(quality)), quality


def test_bd_rate_of_exact_cubics_equals_the_closed_form_integral():
    # ln R_anchor = 0.1 D - 3 and ln R_test = ln R_anchor + k (D - 35)^2: the cubic fits are exact, and the
    # mean of k (D - 35)^2 over [30, 40] is k * 25 / 3.
    k = -0.01
    anchor = _log_rate_curve(np.linspace(30, 40, 6), lambda d: 0.1 * d - 3)
    test = _log_rate_curve(np.linspace(30, 40, 5), lambda d: 0.1 * d - 3 + k * (d - 35) ** 2)
    assert rd.bd_rate(anchor, test) == pytest.approx(100 * (math.exp(k * 25 / 3) - 1), rel=1e-9)
    assert rd.bd_rate(test, anchor) == pytest.approx(100 * (math.exp(-k * 25 / 3) - 1), rel=1e-9)


def test_bd_rate_integrates_over_the_overlap_only():
    # The test curve extends past the anchor on both sides; only [30, 40] counts.
    k = 0.002
    anchor = _log_rate_curve(np.linspace(30, 40, 6), lambda d: 0.1 * d - 3)
    test = _log_rate_curve(np.linspace(25, 48, 9), lambda d: 0.1 * d - 3 + k * (d - 30) ** 3)
    # mean over [30, 40] of k (D - 30)^3 = k * 10^4 / 4 / 10.
    assert rd.bd_rate(anchor, test) == pytest.approx(100 * (math.exp(k * 250) - 1), rel=1e-9)


def test_bd_psnr_of_exact_cubics_equals_the_closed_form_integral():
    # D_anchor = 5 ln R + 30 and D_test = D_anchor + 0.5 + 0.2 (ln R)^2 over ln R in [-2, 1] (test) and
    # [-1, 2] (anchor): overlap [-1, 1], where the mean of 0.2 L^2 is 0.2 / 3.
    anchor_l, test_l = np.linspace(-1, 2, 7), np.linspace(-2, 1, 5)
    anchor = (np.exp(anchor_l), 5 * anchor_l + 30)
    test = (np.exp(test_l), 5 * test_l + 30.5 + 0.2 * test_l**2)
    assert rd.bd_psnr(anchor, test) == pytest.approx(0.5 + 0.2 / 3, rel=1e-9)


def test_bd_sign_convention_more_rate_is_positive_higher_quality_is_positive():
    anchor = reference.load_curve("bpg444", "psnr")
    hyperprior = reference.load_curve(HYPERPRIOR_MSE, "psnr")
    # The hyperprior needs more rate than BPG 4:4:4 at equal PSNR, so it also has lower PSNR at equal rate.
    assert rd.bd_rate(anchor, hyperprior) > 0 > rd.bd_psnr(anchor, hyperprior)
    assert rd.bd_rate(hyperprior, anchor) < 0 < rd.bd_psnr(hyperprior, anchor)


@settings(max_examples=40, deadline=None)
@given(
    factor=st.floats(0.2, 5.0),
    shift=st.floats(-3.0, 3.0),
    name=st.sampled_from(["bpg444", "webp", "jpeg420", HYPERPRIOR_MSE, "balle-2017-iclr-opt-mse"]),
)
def test_scaled_rates_and_shifted_quality_give_exact_deltas(factor, shift, name):
    rates, psnr = reference.load_curve(name, "psnr")
    assert rd.bd_rate((rates, psnr), (factor * rates, psnr)) == pytest.approx(100 * (factor - 1), abs=1e-7)
    assert rd.bd_psnr((rates, psnr), (rates, psnr + shift)) == pytest.approx(shift, abs=1e-7)
    assert rd.bd_rate((rates, psnr), (rates, psnr)) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_does_not_depend_on_the_log_base():
    anchor = reference.load_curve("webp", "psnr")
    test = reference.load_curve(HYPERPRIOR_MSE, "psnr")
    # Bjøntegaard's original in log10, written out with numpy's polyfit.
    lo, hi = max(anchor[1].min(), test[1].min()), min(anchor[1].max(), test[1].max())

    def mean_log10_rate(rates, psnr):
        integral = np.polyint(np.polyfit(psnr, np.log10(rates), 3))
        return (np.polyval(integral, hi) - np.polyval(integral, lo)) / (hi - lo)

    expected = 100 * (10 ** (mean_log10_rate(*test) - mean_log10_rate(*anchor)) - 1)
    assert rd.bd_rate(anchor, test) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "anchor, test, message",
    [
        (([1, 2, 3, 4], [30, 31, 32, 33]), ([1, 2, 3, 4], [40, 41, 42, 43]), "do not overlap"),
        (([1, 2, 3], [30, 31, 32]), ([1, 2, 3, 4], [30, 31, 32, 33]), "at least 4"),
        (([0, 1, 2, 3], [30, 31, 32, 33]), ([1, 2, 3, 4], [30, 31, 32, 33]), "positive"),
        (([1, 2, 3, 4], [30, 31, np.nan, 33]), ([1, 2, 3, 4], [30, 31, 32, 33]), "finite"),
        (([1, 2, 3, 4], [30, 31, 32]), ([1, 2, 3, 4], [30, 31, 32, 33]), "equal length"),
        ("bpg444", ([1, 2, 3, 4], [30, 31, 32, 33]), "pair"),
    ],
)
def test_bd_rate_rejects_bad_curves(anchor, test, message):
    with pytest.raises(ValueError, match=message):
        rd.bd_rate(anchor, test)


# --- aggregation over equal parameter (PSNR plots) ---------------------------------------------------------


def _psnr(mse):
    return 10 * math.log10(255**2 / mse)


def test_aggregate_by_parameter_averages_psnr_not_mse():
    records = [
        {"lambda": 0.01, "image": "a", "bpp": 0.2, "psnr": _psnr(1.0)},
        {"lambda": 0.01, "image": "b", "bpp": 0.4, "psnr": _psnr(100.0)},
        {"lambda": 0.001, "image": "a", "bpp": 0.1, "psnr": 30.0},
        {"lambda": 0.001, "image": "b", "bpp": 0.05, "psnr": 25.0},
    ]
    original = copy.deepcopy(records)
    parameters, rates, psnr = rd.aggregate_by_parameter(records, "lambda", "bpp", "psnr")
    assert records == original
    assert parameters.tolist() == [0.001, 0.01]
    np.testing.assert_allclose(rates, [0.075, 0.3], rtol=1e-12)
    # Mean PSNR = 10 log10(255^2) - 10 (log10 1 + log10 100) / 2 = 48.1308 - 10; the PSNR of the mean MSE
    # (50.5) would be 31.0976.
    np.testing.assert_allclose(psnr, [27.5, 20 * math.log10(255) - 10], rtol=1e-12)
    assert abs(psnr[1] - _psnr(50.5)) > 5


def test_aggregate_by_parameter_sorts_by_mean_rate_and_accepts_any_parameter_type():
    records = [{"q": q, "r": r, "d": d} for q, r, d in [("low", 0.5, 30), ("high", 2.0, 40), ("mid", 1.0, 35)]]
    parameters, rates, distortions = rd.aggregate_by_parameter(iter(records), "q", "r", "d")
    assert parameters.tolist() == ["low", "mid", "high"]
    assert rates.tolist() == [0.5, 1.0, 2.0] and distortions.tolist() == [30, 35, 40]


@pytest.mark.parametrize(
    "records, message",
    [
        ([], "no records"),
        ([{"q": 1, "r": 1.0}], "no field 'd'"),
        ([{"q": 1, "r": 1.0, "d": 30}, {"q": 1, "r": 1.0, "d": 31}, {"q": 2, "r": 2.0, "d": 40}], "unequal"),
        ([{"q": 1, "r": 1.0, "d": math.inf}], "non-finite"),
    ],
)
def test_aggregate_by_parameter_rejects_bad_records(records, message):
    with pytest.raises(ValueError, match=message):
        rd.aggregate_by_parameter(records, "q", "r", "d")


# --- aggregation over equal rate (MS-SSIM plots) -----------------------------------------------------------


def test_pchip_matches_hand_computed_values():
    # x = 0, 1, 2, y = 0, 1, 1: secants 1 and 0, so the middle slope is 0; the end slopes are (3 * 1 - 0) / 2 = 1.5
    # and (3 * 0 - 1) / 2 = -0.5, which disagrees in sign with its secant and becomes 0. At x = 0.5 the Hermite
    # cubic is 0.125 * 1.5 + 0.5 * 1 = 0.6875; on [1, 2] it is flat.
    np.testing.assert_allclose(rd.pchip([0, 1, 2], [0, 1, 1], [0.0, 0.5, 1.0, 1.5, 2.0]), [0, 0.6875, 1, 1, 1])
    # Two points: the straight line.
    np.testing.assert_allclose(rd.pchip([1, 3], [2, 6], [1, 2, 2.5, 3]), [2, 4, 5, 6])


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(0.01, 2.0), st.floats(0.0, 3.0)), min_size=1, max_size=8),
    probes=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
)
def test_pchip_interpolates_the_points_and_keeps_monotone_data_monotone(steps, probes):
    x = np.cumsum([0.0] + [dx for dx, _ in steps])
    y = np.cumsum([0.0] + [dy for _, dy in steps])
    np.testing.assert_allclose(rd.pchip(x, y, x), y, atol=1e-9)
    x_new = np.sort(x[0] + np.asarray(probes) * (x[-1] - x[0]))
    y_new = rd.pchip(x, y, x_new)
    assert np.all(np.diff(y_new) >= -1e-9)
    assert y_new.min() >= y[0] - 1e-9 and y_new.max() <= y[-1] + 1e-9


def test_pchip_reproduces_straight_lines():
    x = np.array([0.1, 0.25, 0.6, 1.0, 1.9])
    np.testing.assert_allclose(rd.pchip(x, 3 * x + 1, np.linspace(0.1, 1.9, 37)), 3 * np.linspace(0.1, 1.9, 37) + 1)


def test_aggregate_by_rate_averages_interpolated_values():
    # Straight-line curves at different sample rates: pchip is exact, so the average is the average of lines.
    curves = {
        "a": ([0.1, 0.3, 0.9, 1.5], [0.90, 0.92, 0.98, 1.04]),  # 0.1 r + 0.89
        "b": ([1.2, 0.05, 0.6], [0.95, 0.835, 0.89]),  # 0.1 r + 0.83, unsorted
    }
    original = copy.deepcopy(curves)
    rates, values = rd.aggregate_by_rate(curves, [0.1, 0.5, 1.2])
    assert curves == original
    np.testing.assert_allclose(rates, [0.1, 0.5, 1.2])
    np.testing.assert_allclose(values, 0.1 * np.array([0.1, 0.5, 1.2]) + 0.86, rtol=1e-12)
    # A sequence of curves gives the same.
    np.testing.assert_allclose(rd.aggregate_by_rate(list(curves.values()), [0.1, 0.5, 1.2])[1], values)


@pytest.mark.parametrize(
    "curves, rates, message",
    [
        ({"a": ([0.1, 1.0], [0.9, 0.99]), "b": ([0.2, 2.0], [0.9, 0.99])}, [0.15, 0.5], r"\[0.2, 1\]"),
        ({}, [0.5], "no per-image curves"),
        ({"a": ([0.1, 0.1, 1.0], [0.9, 0.91, 0.99])}, [0.5], "distinct"),
        ({"a": ([0.1], [0.9])}, [0.1], "at least 2"),
        ({"a": ([0.1, 1.0], [0.9, 0.99])}, [], "non-empty"),
    ],
)
def test_aggregate_by_rate_rejects_bad_input(curves, rates, message):
    with pytest.raises(ValueError, match=message):
        rd.aggregate_by_rate(curves, rates)


def test_piecewise_bd_rate_on_three_point_curves():
    """Three points are too few for the cubic fit; the piecewise variant gives the exact ratio of rates."""
    quality = [26.0, 29.0, 33.0]
    anchor = ([0.2, 0.45, 1.1], quality)
    test = ([0.16, 0.36, 0.88], quality)  # 0.8 x the anchor's rate at every quality
    with pytest.raises(ValueError, match="cubic fit needs at least 4"):
        rd.bd_rate(anchor, test)
    assert rd.bd_rate_pchip(anchor, test) == pytest.approx(-20.0, abs=1e-9)
    assert rd.bd_rate_pchip(test, anchor) == pytest.approx(25.0, abs=1e-9)
    with pytest.raises(ValueError, match="rise with rate"):
        rd.bd_rate_pchip(anchor, ([0.1, 0.2, 0.3], [27.0, 26.0, 30.0]))


def test_piecewise_bd_rate_is_close_to_the_cubic_on_the_published_curves():
    """On the paper's dense curves both methods agree to a fraction of a percentage point."""
    anchor = reference.load_curve("bpg444", "psnr")
    test = reference.load_curve("balle-2018-iclr-opt-mse", "psnr")
    assert rd.bd_rate_pchip(anchor, test) == pytest.approx(rd.bd_rate(anchor, test), abs=0.5)


def test_piecewise_bd_psnr_of_curves_linear_in_log_rate_is_their_offset():
    """pchip reproduces a line exactly, so curves a + b log(rate) that differ by 0.7 dB are 0.7 dB apart over
    the rates they share, whatever their points; a curve that turns back still has a quality at every rate."""
    def line(rates, offset):
        return rates, [30.0 + offset + 4.0 * np.log(r) for r in rates]

    anchor = line([0.1, 0.3, 0.9], 0.0)
    test = line([0.15, 0.5, 1.5, 2.0], 0.7)
    assert rd.bd_psnr_pchip(anchor, test) == pytest.approx(0.7, abs=1e-12)
    assert rd.bd_psnr_pchip(test, anchor) == pytest.approx(-0.7, abs=1e-12)
    # A curve whose quality falls and rises again still has one quality per rate.
    assert np.isfinite(rd.bd_psnr_pchip(anchor, ([0.1, 0.2, 0.3], [25.0, 24.0, 26.0])))
    with pytest.raises(ValueError, match="rate ranges do not overlap"):
        rd.bd_psnr_pchip(anchor, line([1.0, 2.0], 0.0))


def test_piecewise_bd_psnr_of_smooth_concave_curves_matches_the_closed_form():
    """Curves shaped like the published ones (concave in log rate), sampled as densely as BPG's (52 points) and
    as the paper's (20): the gap g - f = 0.5 + 0.1 x has the mean 0.5 + 0.1 (lo + hi) / 2 over [lo, hi]."""
    def f(x):
        return 30.0 + 5.0 * x - 0.3 * x**2

    anchor_x = np.linspace(np.log(0.024), np.log(9.8), 52)
    test_x = np.linspace(np.log(0.1), np.log(1.5), 20)
    anchor = (np.exp(anchor_x), f(anchor_x))
    test = (np.exp(test_x), f(test_x) + 0.5 + 0.1 * test_x)
    expected = 0.5 + 0.1 * (test_x[0] + test_x[-1]) / 2
    assert rd.bd_psnr_pchip(anchor, test) == pytest.approx(expected, abs=1e-4)
