"""Speed and rate overhead of the range coder on latents the size of a Kodak image's (768x512).

    python -m experiments.benchmark_coder --bpp=1.0 --repeats=7
    python -m experiments.benchmark_coder --bpp=0.1

Synthetic data shaped like the scale hyperprior's (figure 4, N=128, M=192): y has (H/16, W/16, M) symbols, each coded
with one of the 64 Gaussian tables of eq. 11 (scales from 0.11 to 256), z has (H/64, W/64, N) symbols with one table
per channel. Scale indexes are drawn around a level chosen so that the ideal cost is the requested bits per pixel;
values are drawn from the table's discretized Gaussian. Prints medians over the repeats: symbols per second for
encode and decode, and the bytes written against `estimate_bits`.

A program that prints figures, not a test: wall-clock time depends on the machine and its load.
"""
import math
import time

import numpy as np
from absl import app, flags

from tfhyper import coder, paper
from tfhyper.coder import header

FLAGS = flags.FLAGS
flags.DEFINE_float("bpp", 1.0, "Target ideal rate in bits per pixel.")
flags.DEFINE_integer("width", 768, "Image width in pixels.")
flags.DEFINE_integer("height", 512, "Image height in pixels.")
flags.DEFINE_integer("num_filters", 128, "N of figure 4 (channels of z).")
flags.DEFINE_integer("latent_filters", 192, "M of figure 4 (channels of y).")
flags.DEFINE_integer("repeats", 7, "Timed encode/decode runs; medians are reported.")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic latents.")

# Spread of the synthetic scale indexes around their level, in table steps.
INDEX_SPREAD = 12.0
# Range of the synthetic per-channel scales of z: side information of about 0.015 bpp, a small share of the rate.
Z_SCALES = (0.05, 1.0)


def discretized_gaussian(scale, half_width):
    """P(k) = Phi((k + 1/2) / s) - Phi((k - 1/2) / s) for k in [-h, h] (eq. 11 at mean 0), and the mass outside."""
    edges = (np.arange(-half_width, half_width + 2) - 0.5) / (scale * math.sqrt(2.0))
    upper_tail = np.array([0.5 * math.erfc(e) for e in edges])  # 1 - Phi, accurate in the tail
    pmf = upper_tail[:-1] - upper_tail[1:]
    return pmf, 2.0 * upper_tail[-1]


def gaussian_quantile(tail_mass):
    """k with P(|X| > k) = tail_mass for a standard normal X (bisection on erfc)."""
    lo, hi = 0.0, 40.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erfc(mid / math.sqrt(2.0)) > tail_mass else (lo, mid)
    return hi


def gaussian_tables(scales, tail_mass=paper.TAIL_MASS):
    """One coding table per scale, symmetric around 0, leaving ``tail_mass`` outside (to the escape)."""
    reach = gaussian_quantile(tail_mass)
    pmfs, offsets, overflows = [], [], []
    for s in scales:
        half = max(1, math.ceil(reach * s))
        pmf, overflow = discretized_gaussian(s, half)
        pmfs.append(pmf)
        offsets.append(-half)
        overflows.append(overflow)
    return coder.CodingTables.from_pmfs(pmfs, offsets, overflows)


def expected_bits(tables):
    """Entropy in bits of each integer table (the expected ideal cost of a symbol drawn from it)."""
    freqs = np.diff(tables.cdf.astype(np.float64), axis=1) / 2.0**tables.precision
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nansum(np.where(freqs > 0, -freqs * np.log2(freqs), 0.0), axis=1)


def scale_indexes(count, level, rng):
    return np.clip(np.round(level + INDEX_SPREAD * rng.standard_normal(count)), 0, paper.SCALE_TABLE_SIZE - 1)


def level_for_bits(target_bits, count, table_bits, seed):
    """The index level whose synthetic indexes give ``target_bits`` in expectation (bisection)."""
    lo, hi = -4 * INDEX_SPREAD, paper.SCALE_TABLE_SIZE + 4 * INDEX_SPREAD
    for _ in range(40):
        mid = (lo + hi) / 2
        bits = table_bits[scale_indexes(count, mid, np.random.default_rng(seed)).astype(int)].sum()
        lo, hi = (mid, hi) if bits < target_bits else (lo, mid)
    return (lo + hi) / 2


def synthetic_latents(bpp, width, height, num_filters, latent_filters, seed):
    """Segments (z, then y) of one image's latents, as `coder.encode` takes them."""
    return synthetic_latents_and_scales(bpp, width, height, num_filters, latent_filters, seed)[0]


def synthetic_latents_and_scales(bpp, width, height, num_filters, latent_filters, seed):
    """The segments of `synthetic_latents`, and {"z": ..., "y": ...}: the Gaussian scale each symbol was drawn with
    (its table's), for coders that take a distribution per symbol."""
    rng = np.random.default_rng(seed)
    scales = np.exp(np.linspace(np.log(paper.SCALE_BOUND), np.log(paper.SCALE_TABLE_MAX), paper.SCALE_TABLE_SIZE))
    y_tables = gaussian_tables(scales)
    z_scales = np.exp(rng.uniform(np.log(Z_SCALES[0]), np.log(Z_SCALES[1]), num_filters))
    z_tables = gaussian_tables(z_scales)
    z_shape = (height // paper.Z_DOWNSAMPLING, width // paper.Z_DOWNSAMPLING, num_filters)
    z_index = np.broadcast_to(np.arange(num_filters), z_shape)
    z = np.round(rng.standard_normal(z_shape) * z_scales).astype(np.int64)
    z_bits = coder.estimate_bits(z, z_index, z_tables)
    y_shape = (height // paper.Y_DOWNSAMPLING, width // paper.Y_DOWNSAMPLING, latent_filters)
    y_count = int(np.prod(y_shape))
    level = level_for_bits(bpp * width * height - z_bits, y_count, expected_bits(y_tables), seed + 1)
    y_index = scale_indexes(y_count, level, rng).astype(np.int64).reshape(y_shape)
    y = np.round(rng.standard_normal(y_shape) * scales[y_index]).astype(np.int64)
    return [(z, z_index, z_tables), (y, y_index, y_tables)], {"z": z_scales[z_index], "y": scales[y_index]}


def timed(function):
    """The result of ``function()`` and its (wall-clock, CPU) seconds; on a shared machine CPU time is the steadier."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, np.array([time.perf_counter() - wall, time.process_time() - cpu])


def decode_all(data, segments):
    decoder = coder.Decoder(data)
    decoded = [decoder.decode(indexes, tables) for _, indexes, tables in segments]
    decoder.finish()
    return decoded


def time_coding(segments, repeats):
    """Median (wall, CPU) seconds of encode and decode over ``repeats`` runs, the bytes, and whether all were exact."""
    encode_times, decode_times, exact = [], [], True
    for _ in range(repeats):
        data, seconds = timed(lambda: coder.encode(segments))
        encode_times.append(seconds)
        decoded, seconds = timed(lambda: decode_all(data, segments))
        decode_times.append(seconds)
        exact &= all(np.array_equal(d, v) for d, (v, _, _) in zip(decoded, segments))
    return np.median(encode_times, axis=0), np.median(decode_times, axis=0), data, exact


def main(argv):
    del argv
    segments = synthetic_latents(
        FLAGS.bpp, FLAGS.width, FLAGS.height, FLAGS.num_filters, FLAGS.latent_filters, FLAGS.seed
    )
    symbols = sum(v.size for v, _, _ in segments)
    estimate = sum(coder.estimate_bits(*s) for s in segments) / 8
    encode_s, decode_s, data, exact = time_coding(segments, FLAGS.repeats)
    lanes = 1 << header.read(data)[0].lanes_log2
    print(
        f"{FLAGS.width}x{FLAGS.height} latents: {symbols} symbols ({segments[0][0].size} z, {segments[1][0].size} y), "
        f"{lanes} lanes, {'exact' if exact else 'NOT EXACT'} round trip"
    )
    print(
        f"rate: {len(data)} bytes = {8 * len(data) / (FLAGS.width * FLAGS.height):.4f} bpp; "
        f"estimate {estimate:.1f} bytes; overhead {len(data) - estimate:.1f} bytes "
        f"({100 * (len(data) / estimate - 1):.3f} %)"
    )
    for name, column in (("wall-clock", 0), ("CPU time", 1)):
        print(
            f"speed, {name} (median of {FLAGS.repeats}): "
            f"encode {symbols / encode_s[column] / 1e6:.2f} M symbols/s ({1e3 * encode_s[column]:.1f} ms), "
            f"decode {symbols / decode_s[column] / 1e6:.2f} M symbols/s ({1e3 * decode_s[column]:.1f} ms)"
        )


if __name__ == "__main__":
    app.run(main)
