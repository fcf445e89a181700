"""Integer coding tables: their cost against the continuous likelihoods of eq. 11 and eq. 30."""
import math

import numpy as np
import pytest

from tfhyper.densities import scale_table
from tfhyper.entropy_models import (
    EntropyBottleneck,
    _discrete_gaussian_pmf,
    _expected_code_length,
    factorized_tables,
    gaussian_tables,
    scale_thresholds,
)


@pytest.fixture(scope="module")
def tables():
    scales = scale_table()
    y_tables = gaussian_tables(scales)
    return scales, y_tables, scale_thresholds(scales, y_tables)


def entropy_bits(sigma):
    """Exact entropy of eq. 11's pmf at sigma, in bits (closed form evaluated with math.erfc)."""
    half = int(math.ceil(sigma * 12)) + 2
    support = np.arange(-half, half + 1)
    p = _discrete_gaussian_pmf(sigma, support)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()), support


def test_thresholds_lie_between_neighbouring_scales(tables):
    scales, _, thresholds = tables
    assert np.all(np.diff(thresholds) > 0)
    assert np.all(thresholds > scales[:-1]) and np.all(thresholds < scales[1:])


@pytest.mark.parametrize("largest", [1.0, 64.0])
def test_table_cost_is_within_a_quarter_percent_of_eq_11(tables, largest):
    # Small scales (most elements of y in trained models) are where table choice matters most.
    scales, y_tables, thresholds = tables
    rng = np.random.default_rng(0)
    sigmas = np.exp(rng.uniform(math.log(0.11), math.log(largest), 300))
    coded = rounded_up = exact = 0.0
    for sigma in sigmas:
        h, support = entropy_bits(sigma)
        exact += h
        coded += _expected_code_length(sigma, y_tables, int(np.searchsorted(thresholds, sigma)), support)
        rounded_up += _expected_code_length(sigma, y_tables, int(np.searchsorted(scales[:-1], sigma)), support)
    assert coded / exact - 1 < 0.0025
    # Choosing the table by expected cost beats the references' "smallest scale >= sigma".
    assert coded < rounded_up


def test_factorized_tables_cost_within_half_a_percent_of_eq_30():
    bottleneck = EntropyBottleneck(6)
    bottleneck.build()
    rng = np.random.default_rng(1)
    for w in bottleneck.weights:
        w.assign(w.numpy() + rng.normal(scale=0.5, size=w.shape))
    tables, medians = factorized_tables(bottleneck)
    for c in range(6):
        length = int(tables.lengths[c]) - 1
        symbols = tables.offsets[c] + np.arange(length)
        values = (medians[c] + symbols).astype(np.float32)
        grid = np.zeros((1, length, 1, 6), np.float32) + values[None, :, None, None]
        p = bottleneck.density.likelihood(grid).numpy()[0, :, 0, c].astype(np.float64)
        freqs = np.diff(tables.cdf[c, : length + 1].astype(np.float64))
        cost = -(p * np.log2(freqs / 2**16)).sum()
        exact = -(p[p > 0] * np.log2(p[p > 0])).sum()
        assert cost <= exact * 1.005 + 1e-3, (c, cost, exact)
