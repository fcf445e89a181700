"""The range coder: table quantization, exact round trips, rate honesty, and robustness to bad streams."""
import heapq
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfhyper import coder, paper
from tfhyper.errors import BitstreamError

TAIL_MASS = paper.TAIL_MASS
# The scales of eq. 11's coding tables.
SCALES = np.exp(np.linspace(np.log(paper.SCALE_BOUND), np.log(paper.SCALE_TABLE_MAX), paper.SCALE_TABLE_SIZE))


def discretized_gaussian(scale, low, high):
    """P(k) = Phi((k + 1/2) / s) - Phi((k - 1/2) / s) for k in [low, high], from erfc (accurate in the tails)."""
    edges = (np.arange(low, high + 2) - 0.5) / (scale * math.sqrt(2.0))
    upper = np.array([0.5 * math.erfc(e) for e in edges])  # P(X > edge)
    return upper[:-1] - upper[1:]


def table_half_width(scale):
    """Smallest k >= 1 with P(|K| > k) <= TAIL_MASS for the discretized Gaussian K."""
    k = 1
    while math.erfc((k + 0.5) / (scale * math.sqrt(2.0))) > TAIL_MASS:
        k += 1
    return k


def gaussian_tables(scales, precision=16):
    halves = [table_half_width(s) for s in scales]
    pmfs = [discretized_gaussian(s, -h, h) for s, h in zip(scales, halves)]
    overflows = [math.erfc((h + 0.5) / (s * math.sqrt(2.0))) for s, h in zip(scales, halves)]
    return coder.CodingTables.from_pmfs(pmfs, [-h for h in halves], overflows, precision)


@pytest.fixture(scope="module")
def scale_tables():
    return gaussian_tables(SCALES)


def table_entropies(tables):
    """Expected cost in bits of a symbol drawn from each integer table itself (its entropy)."""
    f = np.diff(tables.cdf.astype(np.float64), axis=1) / 2.0**tables.precision
    return np.array([-(r[r > 0] * np.log2(r[r > 0])).sum() for r in f])


def round_trip(segments, **kwargs):
    data = coder.encode(segments, **kwargs)
    decoder = coder.Decoder(data)
    decoded = [decoder.decode(indexes, tables) for _, indexes, tables in segments]
    decoder.finish()
    return data, decoded


def assert_round_trip(segments, **kwargs):
    data, decoded = round_trip(segments, **kwargs)
    for (values, indexes, _), out in zip(segments, decoded):
        assert out.dtype == np.int64 and out.shape == np.shape(indexes)
        np.testing.assert_array_equal(out, values)
    return data


def random_tables(rng, count, max_symbols=30, precision=16):
    pmfs = [rng.random(int(rng.integers(1, max_symbols))) ** rng.uniform(0.5, 6.0) for _ in range(count)]
    offsets = rng.integers(-40, 40, count)
    overflows = rng.choice([0.0, 1e-9, 0.05], count)
    return coder.CodingTables.from_pmfs(pmfs, offsets, overflows, precision)


def sample_values(rng, tables, indexes):
    """Values drawn from each table's own frequencies (escape draws become the value just above the table)."""
    cdf = tables.cdf.astype(np.float64)
    out = np.empty(indexes.size, np.int64)
    for i, t in enumerate(indexes.ravel()):
        n = tables.lengths[t]
        s = rng.choice(n, p=np.diff(cdf[t, : n + 1]) / cdf[t, n])
        out[i] = tables.offsets[t] + s
    return out.reshape(indexes.shape)


# --- quantize_pmf ------------------------------------------------------------------------------------------------


def greedy_frequencies(q, total):
    """Independent optimum: start at 1 each, give every further unit to the largest gain q log2((f+1)/f)."""
    f = [1] * len(q)
    heap = [(-qi * math.log2(2.0), i) for i, qi in enumerate(q)]
    heapq.heapify(heap)
    for _ in range(total - len(q)):
        _, i = heapq.heappop(heap)
        f[i] += 1
        heapq.heappush(heap, (-q[i] * math.log2((f[i] + 1) / f[i]), i))
    return np.array(f)


def cross_entropy(q, f, total):
    return float(-(q * np.log2(f / total)).sum())


@given(
    pmf=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40),
    overflow=st.floats(0.0, 1.0),
    precision=st.integers(8, 16),
)
@settings(max_examples=150, deadline=None)
def test_quantize_pmf_invariants(pmf, overflow, precision):
    pmf = np.array(pmf)
    pmf.setflags(write=False)  # inputs are never modified
    if pmf.sum() + overflow == 0:
        with pytest.raises(ValueError):
            coder.quantize_pmf(pmf, overflow, precision)
        return
    f = coder.quantize_pmf(pmf, overflow, precision)
    assert f.dtype == np.int32 and f.shape == (len(pmf) + 1,)
    assert f.min() >= 1 and int(f.sum()) == 1 << precision


@pytest.mark.parametrize("seed", range(6))
def test_quantize_pmf_is_optimal(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    pmf = rng.random(n) ** rng.uniform(1.0, 10.0)
    overflow = float(rng.choice([0.0, 1e-6, 0.1]))
    q = np.append(pmf, overflow) / (pmf.sum() + overflow)
    total = 1 << 8
    f = coder.quantize_pmf(pmf, overflow, precision=8)
    best = greedy_frequencies(q, total)
    assert cross_entropy(q, f, total) == pytest.approx(cross_entropy(q, best, total), abs=1e-12)


def test_quantize_pmf_of_a_point_mass_leaves_one_unit_to_each_other_symbol():
    f = coder.quantize_pmf([0.0, 1.0, 0.0], 0.0, precision=10)
    np.testing.assert_array_equal(f, [1, 1021, 1, 1])


@pytest.mark.parametrize(
    "pmf, overflow, precision",
    [([-0.1, 1.0], 0.0, 16), ([np.nan], 0.0, 16), ([1.0], np.inf, 16), ([0.0, 0.0], 0.0, 16),
     ([[0.5, 0.5]], 0.0, 16), ([], 1.0, 16), ([1.0] * 256, 0.0, 8), ([1.0], 0.0, 7), ([1.0], 0.0, 17),
     ([1.0], 0.0, 12.0), ([1.0], 0.0, True)],
)
def test_quantize_pmf_rejects_bad_input(pmf, overflow, precision):
    with pytest.raises(ValueError):
        coder.quantize_pmf(pmf, overflow, precision)


def test_quantized_gaussian_tables_cost_close_to_the_exact_entropy(scale_tables):
    """Expected cost with the integer tables vs the entropy of the discretized Gaussian, both from erfc."""
    excess, entropy = [], []
    for t, s in enumerate(SCALES):
        h = table_half_width(s)
        wide = h + int(40 * s) + 40  # the mass beyond is below 1e-300
        p = discretized_gaussian(s, -wide, wide)
        exact = float(-(p[p > 0] * np.log2(p[p > 0])).sum())
        freqs = np.diff(scale_tables.cdf[t, : scale_tables.lengths[t] + 1]).astype(np.float64)
        inside = p[wide - h : wide + h + 1]
        cost = float((inside * -np.log2(freqs[:-1] / 2**16)).sum())
        # Escaped mass, charged an upper bound: the escape symbol plus 130 bits (any int64 overflow).
        cost += (1.0 - inside.sum()) * (-math.log2(freqs[-1] / 2**16) + 130)
        excess.append(cost - exact)
        entropy.append(exact)
    excess, entropy = np.array(excess), np.array(entropy)
    assert np.all(excess > 0)
    # Per scale: under 0.5 %, or (for the near-deterministic smallest scales) under 1e-4 bits per symbol.
    assert np.all((excess < 0.005 * entropy) | (excess < 1e-4))
    # Mixes: each scale equally often; and a low-rate mix, where small scales dominate the symbol count.
    low_rate = np.exp(-np.arange(SCALES.size) / 6.0)
    for weights in (np.ones(SCALES.size), low_rate):
        assert (weights * excess).sum() / (weights * entropy).sum() < 0.0025


# --- CodingTables ------------------------------------------------------------------------------------------------


def test_from_pmfs_builds_cumulative_tables():
    tables = coder.CodingTables.from_pmfs([[0.5, 0.5], [1.0]], offsets=[-1, 3], overflows=[0.0, 0.0], precision=8)
    assert tables.cdf.dtype == np.int32 and tables.cdf.shape == (2, 4)
    np.testing.assert_array_equal(tables.lengths, [3, 2])
    np.testing.assert_array_equal(tables.offsets, [-1, 3])
    np.testing.assert_array_equal(tables.cdf[0], [0, 128, 255, 256])
    np.testing.assert_array_equal(tables.cdf[1], [0, 255, 256, 256])


def test_tables_round_trip_through_dict_and_own_their_arrays():
    cdf = np.array([[0, 10, 65536, 65536], [0, 1, 2, 65536]], np.int64)
    tables = coder.CodingTables(cdf=cdf, lengths=[2, 3], offsets=[0, -1])
    cdf[0, 1] = 20  # the tables copied the array
    assert tables.cdf[0, 1] == 10
    with pytest.raises(ValueError):
        tables.cdf[0, 1] = 20
    again = coder.CodingTables.from_dict(tables.to_dict())
    for name in ("cdf", "lengths", "offsets"):
        np.testing.assert_array_equal(getattr(again, name), getattr(tables, name))
    assert again.precision == 16
    assert all(isinstance(v, np.ndarray) for v in tables.to_dict().values())


GOOD = dict(cdf=[[0, 10, 256, 256], [0, 1, 2, 256]], lengths=[2, 3], offsets=[0, -1], precision=8)


@pytest.mark.parametrize(
    "change",
    [
        dict(cdf=[[0, 10, 5, 256], [0, 1, 2, 256]]),  # not monotone
        dict(cdf=[[0, 10, 10, 256], [0, 1, 2, 256]]),  # a zero frequency
        dict(cdf=[[0, 10, 255, 256], [0, 1, 2, 256]]),  # does not reach 2**precision at its length
        dict(cdf=[[0, 10, 256, 255], [0, 1, 2, 256]]),  # padding changes
        dict(cdf=[[1, 10, 256, 256], [0, 1, 2, 256]]),  # does not start at 0
        dict(cdf=[[0, 10, 256, 256], [0, 1, 2, 256]], precision=16),  # wrong total for the precision
        dict(precision=7),
        dict(precision=17),
        dict(precision=8.0),
        dict(lengths=[1, 3]),
        dict(lengths=[2, 4]),
        dict(lengths=[2, 3, 3]),
        dict(offsets=[0]),
        dict(offsets=[0, 2**31 - 1]),  # the top value offsets + lengths - 2 exceeds int32
        dict(cdf=[[0.0, 10.0, 256.0, 256.0], [0.0, 1.0, 2.0, 256.0]]),
        dict(cdf=[[0, 10, 2**40, 2**40], [0, 1, 2, 2**40]]),
        dict(cdf=[0, 10, 256]),
        dict(cdf=np.zeros((0, 4), np.int32), lengths=np.zeros(0, np.int32), offsets=np.zeros(0, np.int32)),
    ],
)
def test_inconsistent_tables_are_rejected(change):
    with pytest.raises(ValueError):
        coder.CodingTables(**{**GOOD, **change})
    with pytest.raises(ValueError):
        coder.CodingTables.from_dict({**GOOD, **change})


@pytest.mark.parametrize("d", [{}, {"cdf": [[0, 1, 256]]}, {**GOOD, "precision": [8]}, [1, 2], None])
def test_from_dict_rejects_incomplete_input(d):
    with pytest.raises(ValueError):
        coder.CodingTables.from_dict(d)


@given(
    cdf=st.lists(st.lists(st.integers(-3, 300), min_size=3, max_size=5), min_size=1, max_size=3),
    lengths=st.lists(st.integers(-1, 5), min_size=1, max_size=3),
    offsets=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=3),
    precision=st.integers(6, 18),
)
@settings(max_examples=200, deadline=None)
def test_untrusted_tables_either_fail_validation_or_code(cdf, lengths, offsets, precision):
    width = min(len(row) for row in cdf)
    d = {"cdf": np.array([row[:width] for row in cdf]), "lengths": lengths, "offsets": offsets,
         "precision": np.array(precision)}
    try:
        tables = coder.CodingTables.from_dict(d)
    except ValueError:
        return
    indexes = np.arange(tables.cdf.shape[0]).repeat(3)
    values = tables.offsets[indexes].astype(np.int64) + np.tile([0, 1, -5], tables.cdf.shape[0])
    assert_round_trip([(values, indexes, tables)])


# --- round trips -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_round_trip_random_tables_segments_and_lanes(seed):
    rng = np.random.default_rng(seed)
    segments = []
    for _ in range(int(rng.integers(1, 4))):
        tables = random_tables(rng, int(rng.integers(1, 5)), precision=int(rng.integers(8, 17)))
        count = int(rng.choice([1, 2, 5, 64, 700, 3000]))
        indexes = rng.integers(0, tables.cdf.shape[0], count)
        segments.append((sample_values(rng, tables, indexes), indexes, tables))
    for lanes in (None, 1, 8, 512):
        assert_round_trip(segments, lanes=lanes)


FAR = [2**30, -(2**30), 2**31 - 1, -(2**31), 2**62 + 12345, -(2**63), 2**63 - 1, 1, -1, 1000]


@pytest.mark.parametrize("lanes", [None, 1, 4, 64])
def test_far_out_values_escape_and_round_trip(lanes):
    rng = np.random.default_rng(1)
    tables = random_tables(rng, 3)
    indexes = rng.integers(0, 3, 400)
    values = sample_values(rng, tables, indexes)
    escaped = rng.random(400) < 0.2
    values[escaped] = rng.choice(FAR, escaped.sum())
    assert_round_trip([(values, indexes, tables)], lanes=lanes)


def test_escaped_values_beyond_int64_are_rejected():
    """Decoded with tables shifted up by 1000, an escape that reached 2**63 - 1 would overflow int64."""
    cdf = [[0, 30000, 60000, 65536]]
    values, indexes = np.array([2**63 - 1, 1, -(2**63)]), np.zeros(3, np.int64)
    data = coder.encode([(values, indexes, coder.CodingTables(cdf=cdf, lengths=[3], offsets=[0]))])
    for offset in (1000, -1000):
        with pytest.raises(BitstreamError, match="int64"):
            coder.Decoder(data).decode(indexes, coder.CodingTables(cdf=cdf, lengths=[3], offsets=[offset]))


def test_every_value_escaping_round_trips_and_costs_what_is_estimated():
    rng = np.random.default_rng(2)
    tables = random_tables(rng, 4)
    indexes = rng.integers(0, 4, 3000)
    values = rng.choice([-1, 1], 3000) * rng.integers(2**20, 2**40, 3000)
    data = assert_round_trip([(values, indexes, tables)])
    estimate = coder.estimate_bits(values, indexes, tables) / 8
    # The escape payloads cost exactly their estimate: one extra bit per escape would already add 375 bytes.
    assert estimate < len(data) <= estimate + 32


def test_table_with_one_symbol_and_the_escape():
    tables = coder.CodingTables(cdf=[[0, 65000, 65536], [0, 1, 65536]], lengths=[2, 2], offsets=[7, -3])
    rng = np.random.default_rng(9)
    indexes = rng.integers(0, 2, 500)
    values = np.where(indexes == 0, 7, -3)
    outside = rng.random(500) < 0.3
    values[outside] = rng.choice([8, 6, -4, -2, 2**40, 0], outside.sum())
    for lanes in (None, 1, 16):
        assert_round_trip([(values, indexes, tables)], lanes=lanes)


def test_single_symbols_and_empty_segments(scale_tables):
    empty = (np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64), scale_tables)
    one = (np.array([5]), np.array([20]), scale_tables)
    for segments in ([], [empty], [one], [empty, one], [one, empty], [empty, one, empty, one], [one] * 20):
        assert_round_trip(segments)


def test_second_segment_tables_chosen_from_decoded_first_segment(scale_tables):
    """As in the hyperprior: the indexes of y come from the decoded z."""
    rng = np.random.default_rng(3)
    z_tables = random_tables(rng, 8)
    z_indexes = np.repeat(np.arange(8), 40).reshape(10, 32)
    z = sample_values(rng, z_tables, z_indexes)

    def y_indexes_from(z):  # (60, 32)
        return np.clip(np.abs(np.repeat(z, 6, axis=0)) * 9, 0, SCALES.size - 1)

    y = np.round(rng.standard_normal((60, 32)) * SCALES[y_indexes_from(z)]).astype(np.int64)
    data = coder.encode([(z, z_indexes, z_tables), (y, y_indexes_from(z), scale_tables)])
    decoder = coder.Decoder(data)
    z_decoded = decoder.decode(z_indexes, z_tables)
    y_decoded = decoder.decode(y_indexes_from(z_decoded), scale_tables)
    decoder.finish()
    np.testing.assert_array_equal(z_decoded, z)
    np.testing.assert_array_equal(y_decoded, y)


def test_encoding_is_deterministic_and_leaves_inputs_alone(scale_tables):
    rng = np.random.default_rng(4)
    indexes = rng.integers(0, SCALES.size, 5000)
    values = np.round(rng.standard_normal(5000) * SCALES[indexes]).astype(np.int64)
    kept = values.copy(), indexes.copy()
    values.setflags(write=False)
    indexes.setflags(write=False)
    first = coder.encode([(values, indexes, scale_tables)])
    assert coder.encode([(values, indexes, scale_tables)]) == first
    np.testing.assert_array_equal(values, kept[0])
    np.testing.assert_array_equal(indexes, kept[1])


def test_values_and_indexes_accept_any_integer_dtype(scale_tables):
    values = np.array([[0, 1], [2, -1]], np.int8)
    indexes = np.array([[10, 20], [30, 40]], np.uint16)
    data = coder.encode([(values, indexes, scale_tables)])
    decoder = coder.Decoder(data)
    np.testing.assert_array_equal(decoder.decode(indexes, scale_tables), values)
    decoder.finish()


@pytest.mark.parametrize(
    "segment",
    [
        (np.array([1.5]), np.array([0])),
        (np.array([1]), np.array([SCALES.size])),
        (np.array([1]), np.array([-1])),
        (np.array([1, 2]), np.array([0])),
        (np.array([True]), np.array([0])),
        (np.array([2**64 - 1], np.uint64), np.array([0])),
    ],
)
def test_encode_rejects_bad_segments(scale_tables, segment):
    with pytest.raises(ValueError):
        coder.encode([(*segment, scale_tables)])


@pytest.mark.parametrize("lanes", [0, 3, 1024, 2.0, True])
def test_encode_rejects_bad_lane_counts(scale_tables, lanes):
    with pytest.raises(ValueError):
        coder.encode([(np.array([1]), np.array([0]), scale_tables)], lanes=lanes)


@given(
    costs=st.lists(st.integers(0, 1 << 30), max_size=3000),
    lanes_log2=st.integers(0, 9),
)
@settings(max_examples=100, deadline=None)
def test_retiring_schedule_only_ever_drops_lanes(costs, lanes_log2):
    """What the decoder relies on: every symbol once, never more lanes than before, retiring at most doubles steps."""
    lanes = 1 << lanes_log2
    widths = coder.lanes.retiring_widths(np.array(costs, np.int64), lanes)
    assert widths.sum() == len(costs)
    assert np.all(widths >= 1) and np.all(widths <= lanes) and np.all(np.diff(widths) <= 0)
    assert widths.size <= 2 * -(-len(costs) // lanes) + lanes


def test_last_segment_without_information_is_coded_sparse(scale_tables):
    """A last segment of near-certain zeros cannot feed retiring lanes: version 2 codes it as its (no) exceptions,
    the lanes retire into the segment before it, and the stream is within 12 bytes of the ideal, where version 1
    pays for the lanes' windows."""
    rng = np.random.default_rng(10)
    z_tables = random_tables(rng, 16)
    z_indexes = rng.integers(0, 16, 3000)
    z = sample_values(rng, z_tables, z_indexes)
    y_indexes, y = np.zeros(100_000, np.int64), np.zeros(100_000, np.int64)  # scale 0.11: 1e-4 bits each
    segments = [(z, z_indexes, z_tables), (y, y_indexes, scale_tables)]
    data = assert_round_trip(segments)
    estimate = sum(coder.estimate_bits(*segment) for segment in segments) / 8
    assert coder.stream_version(data) == 2 and len(data) - estimate <= 12
    old = assert_round_trip(segments, sparse=False)
    lanes = 1 << (old[0] >> 4)
    assert coder.stream_version(old) == 1 and len(old) - estimate <= 4 * lanes + 8  # at worst every lane's window
    assert len(data) < len(old)


def _near_modes(rng, tables, size, exceptions):
    """`size` values of random tables, all at their tables' modes but `exceptions` of them (some far outside)."""
    code = tables._coding
    indexes = rng.integers(0, tables.lengths.size, size)
    values = np.where(code.has_mode[indexes], code.mode_values[indexes], 0)
    at = rng.choice(size, exceptions, replace=False)
    values[at] = values[at] + rng.choice([1, -1, 2, 2**40, -(2**50)], exceptions)
    return values, indexes, tables


@pytest.mark.parametrize("lanes", [None, 1, 4, 64])
@pytest.mark.parametrize("order", ["sparse last", "sparse first", "between", "all sparse", "with empty"])
def test_sparse_segments_round_trip_wherever_they_stand(order, lanes):
    rng = np.random.default_rng(hash(order) % 1000)
    tables = random_tables(rng, 12)
    full = (sample_values(rng, tables, idx := rng.integers(0, 12, 2000)), idx, tables)
    sparse_a, sparse_b = _near_modes(rng, tables, 20000, 40), _near_modes(rng, tables, 16384, 0)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), tables)
    segments = {"sparse last": [full, sparse_a], "sparse first": [sparse_a, full],
                "between": [full, sparse_a, full, sparse_b], "all sparse": [sparse_a, sparse_b],
                "with empty": [empty, full, sparse_b, empty, sparse_a, empty]}[order]
    data = assert_round_trip(segments, lanes=lanes)
    assert coder.stream_version(data) == 2
    # The same without sparse coding is version 1, and the sparse stream is never larger by more than a few bytes.
    assert len(data) <= len(coder.encode(segments, lanes=lanes, sparse=False)) + 4


def test_segments_with_many_exceptions_stay_version_1(scale_tables):
    """Sparse coding pays only where values outnumber exceptions by far: these streams are version 1, unchanged."""
    rng = np.random.default_rng(4)
    tables = random_tables(rng, 8)
    busy = _near_modes(rng, tables, 16384, 256)  # one exception in 64 values: not sparse
    small = _near_modes(rng, tables, 16383, 0)  # no exception, but too few values to be worth it
    assert coder.stream_version(assert_round_trip([small])) == 1
    assert coder.stream_version(assert_round_trip([busy])) == 1
    assert coder.encode([busy]) == coder.encode([busy], sparse=False)


def test_the_decoder_refuses_more_exceptions_than_an_encoder_lists(monkeypatch):
    """A crafted sparse segment cannot make the decoder code symbol by symbol, nor list a value its table's mode."""
    from tfhyper.coder import encoder, sparse

    rng = np.random.default_rng(5)
    tables = random_tables(rng, 8)
    busy = _near_modes(rng, tables, 16384, 300)
    monkeypatch.setattr(encoder, "worth_it", lambda size, count: True)  # an encoder listing too many
    data = coder.encode([busy])
    assert coder.stream_version(data) == 2
    with pytest.raises(BitstreamError, match="declares 300 exceptions"):
        coder.Decoder(data).decode(busy[1], tables)
    quiet = _near_modes(rng, tables, 16384, 0)
    listed_mode = np.array([0, 17])  # positions of values equal to their modes, listed anyway
    monkeypatch.setattr(encoder, "exceptions", lambda values, indexes, code: listed_mode)
    with pytest.raises(BitstreamError, match="lists its exceptions wrongly"):
        coder.Decoder(coder.encode([quiet])).decode(quiet[1], tables)


def test_sparse_streams_cut_or_flipped_fail_or_decode_the_same():
    rng = np.random.default_rng(6)
    tables = random_tables(rng, 6)
    segments = [(sample_values(rng, tables, idx := rng.integers(0, 6, 300)), idx, tables),
                _near_modes(rng, tables, 16384, 5)]
    data = assert_round_trip(segments)
    assert coder.stream_version(data) == 2

    def decoded(stream):
        decoder = coder.Decoder(stream)
        out = [decoder.decode(indexes, t) for _, indexes, t in segments]
        decoder.finish()
        return out

    for cut in range(1, len(data)):
        with pytest.raises(BitstreamError):
            decoded(data[:-cut])
    with pytest.raises(BitstreamError):
        decoded(data + b"\x01")
    for bit in range(8 * len(data)):
        corrupted = bytearray(data)
        corrupted[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            out = decoded(bytes(corrupted))
        except BitstreamError:
            continue
        for values, (expected, _, _) in zip(out, segments):
            np.testing.assert_array_equal(values, expected)


def test_propagate_carries_matches_integer_addition():
    """Digits with carries (256 = 255 + 1) against Python's big integers; long runs of 255 included."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 60))
        digits = rng.choice([0, 1, 254, 255, 255, 255, 256], n) if rng.random() < 0.7 else rng.integers(0, 257, n)
        digits[0] = min(digits[0], 254)  # the coder never carries out of a lane's first byte
        value = sum(int(d) << (8 * (n - 1 - i)) for i, d in enumerate(digits))
        if value >= 1 << (8 * n):
            continue
        out = coder.encoder.propagate_carries(digits.astype(np.int64))
        assert bytes(out.astype(np.uint8)) == value.to_bytes(n, "big")


# --- rate ---------------------------------------------------------------------------------------------------------


def test_estimate_bits_is_the_sum_of_table_costs():
    tables = coder.CodingTables(cdf=[[0, 2**15, 2**15 + 2**14, 2**16 - 1, 2**16]], lengths=[4], offsets=[-1])
    values, indexes = np.array([-1, 0, 1, 0, -1]), np.zeros(5, np.int64)
    assert coder.estimate_bits(values, indexes, tables) == pytest.approx(1 + 2 + (16 - math.log2(2**14 - 1)) + 2 + 1)
    # An escape costs its symbol (16 bits here) and a universal code of the overflow, about 2 log2(overflow).
    for overflow in (0, 1, 100, 2**30, 2**62):
        cost = coder.estimate_bits(np.array([2 + overflow]), np.zeros(1, np.int64), tables) - 16
        bound = math.log2(overflow + 1)
        assert bound + 1 <= cost <= 2 * bound + 3


def test_precision_of_the_tables_is_honoured():
    tables = coder.CodingTables(cdf=[[0, 64, 192, 256]], lengths=[3], offsets=[0], precision=8)
    values, indexes = np.array([0, 1, 1, 0]), np.zeros(4, np.int64)
    assert coder.estimate_bits(values, indexes, tables) == pytest.approx(2 + 1 + 1 + 2)
    assert_round_trip([(values, indexes, tables)])


def test_bytes_stay_close_to_the_estimate(scale_tables):
    """A moderately sized stream: the coder adds about half a bit per lane and a byte or two."""
    rng = np.random.default_rng(6)
    indexes = np.minimum(rng.geometric(0.05, 60000) - 1, 63)
    values = np.round(rng.standard_normal(60000) * SCALES[indexes]).astype(np.int64)
    data = assert_round_trip([(values, indexes, scale_tables)])
    estimate = coder.estimate_bits(values, indexes, scale_tables) / 8
    assert len(data) - estimate <= 0.002 * estimate + 4


def latent_indexes(rng, tables, count, bits):
    """Scale indexes round(level + 12 N(0, 1)) clipped to the tables, with the level giving ``bits`` expected."""
    entropies = table_entropies(tables)
    edges = np.arange(tables.cdf.shape[0] + 1) - 0.5

    def probabilities(level):
        below = np.array([0.5 * math.erfc(-(e - level) / (12 * math.sqrt(2.0))) for e in edges])
        below[0], below[-1] = 0.0, 1.0
        return np.diff(below)

    lo, hi = -60.0, 120.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count * probabilities(mid) @ entropies < bits else (lo, mid)
    return rng.choice(tables.cdf.shape[0], count, p=probabilities(lo))


@pytest.mark.parametrize("bpp, budget", [(0.1, 20), (1.0, 120)])
def test_kodak_sized_latents_meet_the_rate_budget(scale_tables, bpp, budget):
    """768x512 image, hyperprior latents: z (8, 12, 128) with a table per channel, y (32, 48, 192) per scale.

    The whole file must stay within 1 % (0.1 bpp) or 0.3 % (1 bpp) of the estimate with a 25-byte container header,
    which leaves the coder 20 and 120 bytes.
    """
    rng = np.random.default_rng(7)
    z_scales = np.exp(rng.uniform(np.log(0.05), np.log(1.0), 128))
    z_tables = gaussian_tables(z_scales)
    z_indexes = np.broadcast_to(np.arange(128), (8, 12, 128))
    z = np.round(rng.standard_normal(z_indexes.shape) * z_scales).astype(np.int64)
    z_bits = coder.estimate_bits(z, z_indexes, z_tables)
    y_indexes = latent_indexes(rng, scale_tables, 32 * 48 * 192, bpp * 768 * 512 - z_bits).reshape(32, 48, 192)
    y = np.round(rng.standard_normal(y_indexes.shape) * SCALES[y_indexes]).astype(np.int64)
    segments = [(z, z_indexes, z_tables), (y, y_indexes, scale_tables)]
    data = assert_round_trip(segments)
    estimate = (z_bits + coder.estimate_bits(y, y_indexes, scale_tables)) / 8
    assert abs(8 * estimate / (768 * 512) - bpp) < 0.1 * bpp
    assert len(data) - estimate <= budget
    assert 1 << (data[0] >> 4) >= 64  # enough interleaved lanes for speed


# --- bad streams -------------------------------------------------------------------------------------------------


def small_streams():
    rng = np.random.default_rng(8)
    tables = random_tables(rng, 3, max_symbols=12)
    indexes = [rng.integers(0, 3, 40), rng.integers(0, 3, (6, 5))]
    values = [sample_values(rng, tables, i) for i in indexes]
    values[1][0, 0] = 2**33  # an escape
    segments = [(v, i, tables) for v, i in zip(values, indexes)]
    return segments, [coder.encode(segments, lanes=lanes) for lanes in (1, 4, 64, None)]


SEGMENTS, STREAMS = small_streams()


def decode_all(data):
    decoder = coder.Decoder(data)
    for _, indexes, tables in SEGMENTS:
        out = decoder.decode(indexes, tables)
        assert out.shape == indexes.shape and out.dtype == np.int64
    decoder.finish()


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_raise_only_bitstream_errors(data):
    try:
        decode_all(data)
    except BitstreamError:
        pass


@given(
    stream=st.sampled_from(STREAMS),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    tail=st.binary(max_size=4),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_or_truncated_streams_raise_only_bitstream_errors(stream, flips, cut, tail):
    data = bytearray(stream)
    for at, bit in flips:
        data[at % len(data)] ^= 1 << bit
    if cut is not None:
        data = data[: cut % len(data)]
    try:
        decode_all(bytes(data + tail))
    except BitstreamError:
        pass


def test_intact_streams_decode():
    for data in STREAMS:
        decode_all(data)


@pytest.mark.parametrize("data", STREAMS)
def test_truncation_and_extra_bytes_are_detected(data):
    for cut in range(1, len(data)):
        with pytest.raises(BitstreamError):
            decode_all(data[:-cut])
    with pytest.raises(BitstreamError):
        decode_all(data + b"\x01")
    with pytest.raises(BitstreamError):
        decode_all(data + bytes(8))


def test_every_bit_flip_is_detected_or_harmless():
    """The last lane's window checks the decoded values: a flip either fails or changes nothing decoded."""
    data = STREAMS[2]
    for bit in range(8 * len(data)):
        corrupted = bytearray(data)
        corrupted[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            decoder = coder.Decoder(bytes(corrupted))
            decoded = [decoder.decode(indexes, tables) for _, indexes, tables in SEGMENTS]
            decoder.finish()
        except BitstreamError:
            continue
        for out, (values, _, _) in zip(decoded, SEGMENTS):
            np.testing.assert_array_equal(out, values)


def test_decoder_enforces_the_segment_count():
    data = STREAMS[0]
    decoder = coder.Decoder(data)
    decoder.decode(SEGMENTS[0][1], SEGMENTS[0][2])
    with pytest.raises(BitstreamError):
        decoder.finish()
    decoder = coder.Decoder(data)
    for _, indexes, tables in SEGMENTS:
        decoder.decode(indexes, tables)
    with pytest.raises(BitstreamError):
        decoder.decode(SEGMENTS[0][1], SEGMENTS[0][2])


def test_decoder_header_bounds_and_input_type():
    with pytest.raises(BitstreamError):
        coder.Decoder(b"")
    with pytest.raises(BitstreamError):
        coder.Decoder(bytes([0xA1]))  # 2**10 lanes
    with pytest.raises(BitstreamError):
        coder.Decoder(bytes([0x0F, 0x80]))  # segment count cut short
    with pytest.raises(TypeError):
        coder.Decoder("not bytes")
    decoder = coder.Decoder(bytearray(STREAMS[1]))  # any bytes-like object
    for _, indexes, tables in SEGMENTS:
        decoder.decode(indexes, tables)
    decoder.finish()


@pytest.mark.parametrize(
    "extended, message",
    [
        (b"\x80\x00", "overlong encoding"),  # 15 + 0 in two bytes: the encoder writes one
        (b"\x81\x80\x00", "overlong encoding"),
        (b"\xff\xff\xff\xff\x1f", "exceeds 32 bits"),
        (b"\xf1\xff\xff\x07", "16777216 segments"),  # 2**24, one more than `encode` writes
    ],
)
def test_segment_count_is_a_minimal_varint_within_the_encoders_limit(extended, message):
    """The header's extended count is read by the container's varint reader, which refuses what no encoder writes."""
    with pytest.raises(BitstreamError, match=message):
        coder.Decoder(bytes([0x0F]) + extended + bytes(8))


def test_many_segments_use_the_extended_count():
    tables = coder.CodingTables(cdf=[[0, 30000, 65536]], lengths=[2], offsets=[0])
    segments = [(np.array([k % 2]), np.array([0]), tables) for k in range(300)]
    data = assert_round_trip(segments)
    assert data[0] & 0x0F == 15
