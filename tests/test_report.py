"""experiments.report: BD-rate tables of our curves against the codecs and the paper."""
import math

import pytest

from experiments import report
from tests.test_figures import IMAGES


def _rows(scale, z):
    """Four models whose rates are `scale` times a common curve: BD-rate between two such sets is known."""
    rows = []
    for q, (bpp, psnr) in enumerate(((0.2, 27.0), (0.4, 30.0), (0.8, 33.0), (1.6, 36.0)), start=1):
        for offset, image in enumerate(IMAGES):
            rows.append({"model": f"{'hyperprior' if z else 'factorized'}-mse-q{q}", "image": image,
                         "bpp": scale * bpp * (1 + 0.1 * offset), "bpp_z": 0.01 * z, "psnr": psnr + offset,
                         "ms_ssim": 0.9, "ms_ssim_db": psnr / 2 + offset})
    return rows


def test_bd_rate_table_of_a_curve_with_known_rate_ratio():
    rows = _rows(0.8, True) + _rows(1.0, False)
    codec = [{**row, "codec": "jpeg420", "quality": row["model"][-1]} for row in _rows(2.0, False)]
    _, results = report.bd_table(rows, {}, codec)
    psnr = results["psnr"]["ours: hyperprior-mse"]
    assert psnr["ours: factorized-mse"] == pytest.approx(-20.0, abs=1e-6)
    assert psnr["jpeg420 (measured)"] == pytest.approx(-60.0, abs=1e-6)
    assert results["msssim"]["ours: hyperprior-mse"]["ours: factorized-mse"] == pytest.approx(-20.0, abs=1e-6)
    # Quality is 3 dB per doubling of rate (1.5 for MS-SSIM in dB), so 0.8 x the rate is 3 log2(1.25) dB better.
    gain = 3 * math.log2(1.25)
    assert results["psnr_delta"]["ours: hyperprior-mse"]["ours: factorized-mse"] == pytest.approx(gain, abs=1e-9)
    assert results["psnr_delta"]["ours: hyperprior-mse"]["jpeg420 (measured)"] == pytest.approx(
        3 * math.log2(2.5), abs=1e-9)
    # The factorized prior gets its own table: the same pair seen from the other side, and the codecs.
    assert results["psnr"]["ours: factorized-mse"]["ours: hyperprior-mse"] == pytest.approx(25.0, abs=1e-6)
    assert results["psnr"]["ours: factorized-mse"]["jpeg420 (measured)"] == pytest.approx(-50.0, abs=1e-6)


def test_report_lists_models_codecs_and_says_why_a_delta_is_missing():
    rows = _rows(0.8, True)
    far = [{**row, "codec": "webp", "quality": row["model"][-1], "psnr": row["psnr"] + 50} for row in _rows(1, False)]
    text = report.markdown_report(rows, {}, far, published=True, title="T")
    assert "| hyperprior-mse-q4 | hyperprior-mse |" in text and "| webp | 4 |" in text
    assert "| webp (measured) | n/a: " in text and "overlap" in text
    # Rates overlap where qualities do not: BD-PSNR is defined. The codec is 50 dB better at its own rates, which
    # are 1.25 x ours: 3 dB per doubling, so at equal rate ours is 50 - 3 log2(1.25) dB behind.
    behind = f"{3 * math.log2(1.25) - 50:+.2f} dB"
    assert f"| webp (measured) | n/a: the curves' quality ranges do not overlap | {behind} |" in text
    # The paper's curve is an anchor when asked for.
    assert "| paper: balle-2018-iclr-opt-mse |" in text


def test_three_point_curves_get_the_piecewise_bd_rate():
    rows = [row for row in _rows(0.8, True) + _rows(1.0, False) if not row["model"].endswith("q4")]
    _, results = report.bd_table(rows, {}, None)
    assert results["psnr"]["ours: hyperprior-mse"]["ours: factorized-mse"] == "-20.0 % (piecewise)"
    assert results["psnr_delta"]["ours: hyperprior-mse"]["ours: factorized-mse"] == (
        f"{3 * math.log2(1.25):+.2f} dB (piecewise)")


def test_quality_at_equal_rate_against_a_codec():
    """A codec curve through (0.2, 25) and (0.8, 31) dB is 28 dB at 0.4 bpp (linear in log rate)."""
    codec = [{"codec": "c", "quality": q, "image": "a", "bpp": bpp, "psnr": psnr, "ms_ssim_db": 10.0}
             for q, (bpp, psnr) in enumerate(((0.2, 25.0), (0.8, 31.0)))]
    ours = [{"model": "m", "image": "a", "bpp": 0.4, "psnr": 29.5, "ms_ssim_db": 12.0},
            {"model": "far", "image": "a", "bpp": 2.0, "psnr": 40.0, "ms_ssim_db": 12.0}]
    table = report.equal_rate_table(ours, {}, codec, "psnr")
    assert "| m (0.400 bpp) | +1.50 |" in table and "| far (2.000 bpp) | - |" in table


def test_curves_that_turn_back_get_a_reason_not_a_number():
    rising = ([0.1, 0.2, 0.4, 0.8], [25.0, 27.0, 29.0, 31.0])
    turning = ([0.1, 0.3, 0.4, 0.8], [25.0, 24.0, 29.0, 31.0])
    reason = "n/a: the test's quality does not rise with its rate (a fit through a curve that turns back is not a result)"
    assert report.bd_rate_or_reason(rising, turning) == reason
    assert report.bd_quality_or_reason(rising, turning) == reason
    assert report.bd_rate_or_reason(turning, rising) == reason.replace("test's", "anchor's")
    # Three points (the piecewise variant) are refused alike.
    assert report.bd_rate_or_reason(rising, ([0.1, 0.3, 0.4], [25.0, 24.0, 29.0])) == reason
    # Rising curves keep their numbers.
    assert isinstance(report.bd_rate_or_reason(rising, rising), float)
    assert isinstance(report.bd_quality_or_reason(rising, rising), float)


def test_a_curve_flat_between_two_points_gets_a_reason_not_a_number():
    """A rise under the printed precision (0.01 dB) is noise: fitted through, it gives a BD-rate of hundreds of
    percent between curves a few percent apart (0.0009 dB in a main job gave +311.5 %)."""
    anchor = ([0.25, 0.28, 0.30, 0.325], [5.43, 5.5826, 5.5835, 5.68])  # rises, by 0.0009 dB from its 2nd point
    test = ([0.21, 0.27, 0.31, 0.35], [5.30, 5.52, 5.65, 5.70])
    reason = "n/a: the anchor's quality rises by less than 0.01 dB between two of its points (a fit through a flat " \
             "curve is not a result)"
    assert report.bd_rate_or_reason(anchor, test) == reason
    assert report.bd_quality_or_reason(anchor, test) == reason
    # The same curve rising by 0.02 dB at that point keeps its number, and it is the modest one the points show.
    anchor[1][2] = anchor[1][1] + 0.02
    assert abs(report.bd_rate_or_reason(anchor, test)) < 25.0


def test_a_single_model_is_a_point_not_a_curve():
    point = ([0.3], [27.0])
    rising = ([0.1, 0.2, 0.4, 0.8], [25.0, 27.0, 29.0, 31.0])
    reason = "n/a: the test is a single point (a curve needs two models or more)"
    assert report.bd_rate_or_reason(rising, point) == reason
    assert report.bd_quality_or_reason(rising, point) == reason
    assert report.bd_rate_or_reason(point, rising) == reason.replace("test", "anchor")
