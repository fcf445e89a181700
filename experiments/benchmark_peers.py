"""tfhyper and its peers on the same work, timed in the same run: ratios, not figures from another day.

    python -m experiments.benchmark_peers --peer_python=PEERS/bin/python
    python -m experiments.benchmark_peers --work=coder,codec          # some of the work only

The peers run in their own interpreter (`--peer_python`, default this one), through `experiments/peer_compressai.py`:
CompressAI 1.2.8 (PyTorch) for training steps and the codec, constriction for the entropy coder. They are never
dependencies of tfhyper; where one cannot be imported there, its rows say so and only tfhyper's figures print.

Work (each a line of figures and the tfhyper / peer ratio; below 1 is faster):
  train-paper  a training step of the scale hyperprior at the paper's setting (N=128, M=192, 8 x 256x256,
               float32), each side's default recipe (Adam, gradients clipped at norm 1.0; CompressAI's
               auxiliary quantile loss with its own Adam), the same batch held in memory
  train-cpu    the same at the cpu preset's size (N=32, M=48, 8 x 128x128)
  codec        compress and decompress of one image (--image) with the *same* weights: a seeded CompressAI
               ScaleHyperprior N=128, M=192 after `update(force=True)`, converted by `tfhyper.convert`; the file
               size against CompressAI's two strings (which carry no header). The weights are untrained, so z
               carries most of the rate, unlike in a trained model: the sizes compare the coders' framing and z's
               tables, and the times are dominated by the transforms and by coding z
  coder        the entropy coder alone on `experiments.benchmark_coder`'s synthetic latents (its flags; 1 bpp at kodim size):
               tfhyper's coder against constriction's ANS coder with a quantized Gaussian per symbol
A program that prints figures, not a test: wall-clock times depend on the machine and its load.
"""
import json
import pathlib
import platform
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

from experiments import benchmark_coder
from experiments.timing import median_seconds, time_training_steps
from tfhyper import paper

PEER_SCRIPT = pathlib.Path(__file__).with_name("peer_compressai.py")
WORK = ("train-paper", "train-cpu", "codec", "coder")
TRAIN_SIZES = {"train-paper": (128, 192, 256), "train-cpu": (32, 48, 128)}  # N, M, crop side; batch paper.BATCH_SIZE
LMBDA = paper.QUALITIES[3].lmbda_mse

FLAGS = flags.FLAGS
flags.DEFINE_string("peer_python", sys.executable, "Interpreter that has torch and compressai (and constriction).")
flags.DEFINE_list("work", list(WORK), f"What to time: {', '.join(WORK)}.")
flags.DEFINE_string("image", "../shared/data/kodak/kodim01.png", "Image of the codec comparison.")
flags.DEFINE_integer("warmup", 2, "Training steps run before timing.", lower_bound=1)
flags.DEFINE_integer("steps", 5, "Timed training steps (medians are reported).", lower_bound=1)
# --repeats (timed codec and coder runs) and the synthetic latents' --bpp, --width, --height, --num_filters,
# --latent_filters, --seed are experiments.benchmark_coder's flags, shared.


def peer_missing(modules):
    """Why the peer interpreter cannot import `modules`, or None when it can."""
    probe = subprocess.run([FLAGS.peer_python, "-c", f"import {', '.join(modules)}"], capture_output=True, text=True)
    if probe.returncode == 0:
        return None
    lines = (probe.stderr or probe.stdout or "failed").strip().splitlines()
    return lines[-1] if lines else "failed"


def run_peer(job, folder):
    path = pathlib.Path(folder) / "job.json"
    path.write_text(json.dumps(job))
    answer = subprocess.run([FLAGS.peer_python, str(PEER_SCRIPT), str(path)], capture_output=True, text=True)
    if answer.returncode != 0:
        raise RuntimeError(f"the peer failed: {answer.stderr.strip().splitlines()[-1:]}")
    return json.loads(answer.stdout.strip().splitlines()[-1])


def ratio_text(ours, theirs):
    return f"tfhyper/peer {ours / theirs:.2f}x"


def train_step(work, folder, peer):
    import keras
    import tensorflow as tf

    from tfhyper.data import dead_leaves
    from tfhyper.models import ScaleHyperprior
    from tfhyper.training import RunConfig, build_optimizer

    num_filters, latent_filters, side = TRAIN_SIZES[work]
    rng = np.random.default_rng(0)
    batch = np.stack([dead_leaves(side, rng) for _ in range(paper.BATCH_SIZE)]).astype(np.float32)
    model = ScaleHyperprior(num_filters, latent_filters, lmbda=LMBDA)
    model.compile(optimizer=build_optimizer(RunConfig()))
    ours = float(np.median(time_training_steps(model, tf.data.Dataset.from_tensors(batch).repeat(),
                                               FLAGS.warmup, FLAGS.steps)))
    keras.backend.clear_session()
    line = (f"{work}: N={num_filters} M={latent_filters} {paper.BATCH_SIZE}x{side}x{side} float32: "
            f"tfhyper {ours:.3f} s/step")
    if peer:
        np.save(pathlib.Path(folder) / "batch.npy", batch)
        theirs = run_peer({"work": "train", "batch": str(pathlib.Path(folder) / "batch.npy"), "lmbda": LMBDA,
                           "num_filters": num_filters, "latent_filters": latent_filters,
                           "warmup": FLAGS.warmup, "steps": FLAGS.steps}, folder)
        theirs_step = float(np.median(theirs["step_seconds"]))
        line += f", CompressAI {theirs_step:.3f} s/step ({theirs['threads']} threads): {ratio_text(ours, theirs_step)}"
    return line


def codec(folder, peer):
    import tfhyper
    from tfhyper.convert import from_compressai
    from tfhyper.imageio import read_image

    if not peer:
        return "codec: needs CompressAI for the shared weights (see experiments.benchmark_codec for tfhyper alone)"
    image = read_image(FLAGS.image)
    np.save(pathlib.Path(folder) / "image.npy", image)
    weights = pathlib.Path(folder) / "weights.npz"
    theirs = run_peer({"work": "codec", "image": str(pathlib.Path(folder) / "image.npy"), "num_filters": 128,
                       "latent_filters": 192, "seed": 0, "repeats": FLAGS.repeats, "weights": str(weights)}, folder)
    with np.load(weights) as arrays:
        model = from_compressai(dict(arrays))
    data = tfhyper.compress(model, image)
    compress_s = median_seconds(lambda: tfhyper.compress(model, image), FLAGS.repeats)
    decompress_s = median_seconds(lambda: tfhyper.decompress(model, data), FLAGS.repeats)
    pixels = image.shape[0] * image.shape[1]
    return (f"codec: {pathlib.Path(FLAGS.image).name}, the same N=128 M=192 weights: compress tfhyper {compress_s:.3f} s, "
            f"CompressAI {theirs['compress_seconds']:.3f} s ({ratio_text(compress_s, theirs['compress_seconds'])}); "
            f"decompress tfhyper {decompress_s:.3f} s, CompressAI {theirs['decompress_seconds']:.3f} s "
            f"({ratio_text(decompress_s, theirs['decompress_seconds'])}); size tfhyper {len(data)} bytes "
            f"({8 * len(data) / pixels:.4f} bpp, header included), CompressAI {theirs['bytes']} bytes "
            f"(strings only): {len(data) - theirs['bytes']:+d} bytes")


def coder(folder, peer):
    segments, scales = benchmark_coder.synthetic_latents_and_scales(
        FLAGS.bpp, FLAGS.width, FLAGS.height, FLAGS.num_filters, FLAGS.latent_filters, FLAGS.seed)
    symbols = sum(values.size for values, _, _ in segments)
    encode_s, decode_s, data, exact = benchmark_coder.time_coding(segments, FLAGS.repeats)
    ours = (symbols / encode_s[0] / 1e6, symbols / decode_s[0] / 1e6)
    line = (f"coder: {symbols} symbols at {FLAGS.bpp:g} bpp: tfhyper {len(data)} bytes, encode {ours[0]:.2f} / decode "
            f"{ours[1]:.2f} M symbols/s{'' if exact else ' (NOT EXACT)'}")
    if peer:
        latents = pathlib.Path(folder) / "latents.npz"
        np.savez(latents, z=segments[0][0], y=segments[1][0], z_scales=scales["z"], y_scales=scales["y"])
        theirs = run_peer({"work": "coder", "latents": str(latents), "repeats": FLAGS.repeats}, folder)
        rates = (symbols / theirs["encode_seconds"] / 1e6, symbols / theirs["decode_seconds"] / 1e6)
        line += (f"; constriction {theirs['bytes']} bytes, encode {rates[0]:.2f} / decode {rates[1]:.2f} M symbols/s"
                 f"{'' if theirs['exact'] else ' (NOT EXACT)'}: tfhyper's speed / constriction's: encode "
                 f"{ours[0] / rates[0]:.2f}x, decode {ours[1] / rates[1]:.2f}x (above 1 is faster)")
    return line


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.work) - set(WORK))
    if unknown:
        raise app.UsageError(f"unknown --work {', '.join(unknown)}; choose from {', '.join(WORK)}")
    compressai = peer_missing(["torch", "compressai"])
    constriction = peer_missing(["constriction"])
    for name, why in (("CompressAI", compressai), ("constriction", constriction)):
        print(f"{name}: {'skipped, ' + why if why else 'timed with ' + FLAGS.peer_python}")
    print(f"machine: {platform.processor() or platform.machine()}, {benchmark_cpu_text()}")
    with tempfile.TemporaryDirectory() as folder:
        for work in FLAGS.work:
            if work in TRAIN_SIZES:
                print(train_step(work, folder, compressai is None), flush=True)
            elif work == "codec":
                print(codec(folder, compressai is None), flush=True)
            else:
                print(coder(folder, constriction is None), flush=True)


def benchmark_cpu_text():
    from tfhyper.hardware import cpu_flags

    flags_here = cpu_flags() or frozenset()
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags_here]
    return f"CPU flags {' '.join(shown) or 'unknown'}"


if __name__ == "__main__":
    app.run(main)
