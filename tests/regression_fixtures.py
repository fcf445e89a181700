"""How the files in `tests/fixtures/regression/` were written, once, by the code of the commit that added them.

They pin the `.tfh` format and the coder's stream format: `test_regression_files.py` checks that today's code
decodes them bit-exactly and writes exactly the same bytes again. NEVER regenerate them to make a test pass: a
failure there means that files written by an earlier tfhyper no longer decode as they did, which is the bug to fix.
New fixtures may be added beside them (to a new directory) when the format gains something; the old ones stay.

This module is not collected by pytest (its name does not start with ``test_``) and no test imports it. Running it
(`PYTHONPATH=. python tests/regression_fixtures.py DIRECTORY [KODAK_DIRECTORY]`) refuses to write into a directory
that exists.

What is there:

- `hyperprior.keras`, `factorized.keras`: a `ScaleHyperprior(8, 12)` and a `FactorizedPrior(8, 12)`, their density
  weights perturbed (so that channels differ), g_a's last layer scaled (so that y spans several symbols) and, in
  the hyperprior, h_s's last layer scaled and shifted (so that y uses several of the 64 scale tables), saved
  by `model.save` and then re-zipped with compressed members (the same member bytes; Keras reads either);
- `kodim23-48x80.png` (rows 200..247, columns 300..379 of Kodak's kodim23) and `synthetic-37x53.png` (smooth noise);
- `{model}-{image}.tfh`: the file each model wrote for each image, and `{model}-{image}.decoded.png` its decoding;
- `streams.npz`: raw `coder.encode` streams with their values, indexes, tables and lane count.
"""
import pathlib
import sys
import zipfile

import numpy as np

IMAGES = {"kodim23-48x80": ("kodim23", 200, 300, 48, 80), "synthetic-37x53": (37, 53)}
MODELS = {"hyperprior": ("ScaleHyperprior", 0, 40), "factorized": ("FactorizedPrior", 1, 16)}


def _perturbed(model, seed, latent_gain):
    """Channels that differ, y spanning several symbols and, in the hyperprior, sigma_hat several scales."""
    model.build()
    rng = np.random.default_rng(seed)
    for w in model.entropy_bottleneck.weights:
        w.assign(w.numpy() + rng.normal(scale=0.5, size=w.shape))
    for w in model.g_a.weights[-2:]:
        w.assign(w.numpy() * latent_gain)
    if hasattr(model, "h_s"):
        kernel, bias = model.h_s.weights[-2:]
        kernel.assign(kernel.numpy() * 4)
        bias.assign(bias.numpy() + rng.uniform(0, 2, bias.shape))
    model.update_tables()
    return model


def _synthetic_image(h, w, seed=23):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(h // 4, 1), max(w // 4, 1), 3)).astype(np.float32)
    smooth = tf.image.resize(coarse[None], (h, w)).numpy()[0]
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


def _images(kodak):
    from PIL import Image

    name, top, left, h, w = IMAGES["kodim23-48x80"]
    with Image.open(pathlib.Path(kodak) / f"{name}.png") as image:
        crop = np.asarray(image.convert("RGB"))[top : top + h, left : left + w].copy()
    return {"kodim23-48x80": crop, "synthetic-37x53": _synthetic_image(*IMAGES["synthetic-37x53"])}


def _streams():
    """Segments that exercise escapes (to the ends of int64), several precisions, lane counts and segment counts."""
    from tfhyper import coder

    rng = np.random.default_rng(2018)
    pmfs = [rng.random(int(rng.integers(2, 20))) ** rng.uniform(0.5, 6.0) for _ in range(5)]
    tables = coder.CodingTables.from_pmfs(pmfs, rng.integers(-10, 10, 5), [1e-3, 0.0, 0.05, 1e-9, 0.01], 12)
    first_indexes = rng.integers(0, 5, (10, 30))
    second_indexes = rng.integers(0, 5, 2000)
    first = tables.offsets[first_indexes] + rng.integers(0, 4, first_indexes.shape)
    second = tables.offsets[second_indexes] + rng.integers(-2, 6, second_indexes.shape)
    second[:6] = [2**40, -(2**40), 2**63 - 1, -(2**63), 1000, -1000]
    mixed = [(first.astype(np.int64), first_indexes, tables), (second.astype(np.int64), second_indexes, tables)]
    single = coder.CodingTables(cdf=[[0, 30000, 60000, 65536]], lengths=[3], offsets=[0])
    many = [(rng.integers(-1, 3, int(rng.integers(1, 4))),) for _ in range(150)]
    many = [(v[0], np.zeros(v[0].size, np.int64), single) for v in many]
    return {"mixed": (mixed, None), "mixed-4-lanes": (mixed, 4), "many-segments": (many, None)}


def _save_streams(path):
    """Per stream: its bytes, lane count (0: chosen by the coder), tables, and its segments' values and indexes
    concatenated, with each segment's shape in a row of ``shapes`` (-1 past a segment's dimensions)."""
    from tfhyper import coder

    arrays = {}
    for name, (segments, lanes) in _streams().items():
        arrays[f"{name}/bytes"] = np.frombuffer(coder.encode(segments, lanes=lanes), np.uint8)
        arrays[f"{name}/lanes"] = np.array(0 if lanes is None else lanes)
        arrays[f"{name}/shapes"] = np.array([list(v.shape) + [-1] * (2 - v.ndim) for v, _, _ in segments])
        arrays[f"{name}/values"] = np.concatenate([v.ravel() for v, _, _ in segments]).astype(np.int64)
        arrays[f"{name}/indexes"] = np.concatenate([i.ravel() for _, i, _ in segments]).astype(np.int64)
        for key, array in segments[0][2].to_dict().items():  # every segment of a stream shares its tables
            arrays[f"{name}/tables/{key}"] = array
    np.savez_compressed(path, **arrays)


def _deflated(path):
    """The same archive with its members compressed (Keras stores them raw; the y tables are 800 kB of int32)."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in members:
            archive.writestr(name, data)


def write_fixtures(directory, kodak):
    import keras

    import tfhyper
    from tfhyper.imageio import write_png

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True)  # never into an existing directory
    images = _images(kodak)
    for name, image in images.items():
        write_png(directory / f"{name}.png", image)
    for model_name, (cls, seed, latent_gain) in MODELS.items():
        keras.utils.set_random_seed(seed)
        model = _perturbed(getattr(tfhyper, cls)(8, 12, lmbda=0.01), seed, latent_gain)
        model.save(directory / f"{model_name}.keras")
        _deflated(directory / f"{model_name}.keras")
        model = tfhyper.load_model(directory / f"{model_name}.keras")
        for image_name, image in images.items():
            data = tfhyper.compress(model, image)
            (directory / f"{model_name}-{image_name}.tfh").write_bytes(data)
            write_png(directory / f"{model_name}-{image_name}.decoded.png", tfhyper.decompress(model, data))
    _save_streams(directory / "streams.npz")


if __name__ == "__main__":
    write_fixtures(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "../shared/data/kodak")
