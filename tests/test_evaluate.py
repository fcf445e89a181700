"""Evaluation of trained models: rates from the real files, distortions against independent computations."""
import csv
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import KODAK_CROP_SIDE as SIDE
import tensorflow as tf
from PIL import Image

import tfhyper
from experiments import evaluate, inputs, results
from tfhyper import losses
from tfhyper.training import RunConfig, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture(scope="module")
def crops_dir(crops, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for name, image in crops.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def run_dirs(shared_dir, tmp_path_factory):
    """Two tiny finished runs (N = M = 8), trained just enough to reconstruct something image-like."""
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for kind in ("hyperprior", "factorized"):
        config = RunConfig(model=kind, num_filters=8, latent_filters=8, steps=20, checkpoint_every=20, batch_size=4,
                           patch_size=64, learning_rate=1e-3, data=str(shared_dir / "data/train/bsds500"))
        train(config, root / kind, verbose=0)
        runs[kind] = root / kind
    return runs


@pytest.fixture(scope="module")
def models(run_dirs):
    return {kind: tfhyper.load_model(path / "model.keras") for kind, path in run_dirs.items()}


@pytest.fixture(scope="module")
def rows(models, crops):
    return evaluate.evaluate_models(models, crops, progress=False)


# --- independent computations ------------------------------------------------------------------------------


def _psnr_numpy(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def _ms_ssim_tf(a, b):
    return float(tf.image.ssim_multiscale(tf.constant(a[None], tf.float32), tf.constant(b[None], tf.float32), 255.0)[0])


def _likelihood_bits(model, image):
    """-log2 of the model's float likelihoods of the quantized latents (eq. 2), per latent: no integer tables."""
    _, likelihoods = model(tf.constant(image[None], tf.float32) / 255.0, training=False)
    return {name: float(losses.bits_from_likelihoods(value)[0]) for name, value in likelihoods.items()}


# --- measurements ------------------------------------------------------------------------------------------


def test_rows_come_from_the_real_files(models, crops, rows):
    assert [(row["model"], row["image"]) for row in rows] == [(m, i) for m in models for i in crops]
    assert all(list(row) == list(evaluate.COLUMNS) for row in rows)
    for row in rows:
        model, image = models[row["model"]], crops[row["image"]]
        data = tfhyper.compress(model, image)
        assert (row["height"], row["width"], row["bytes"]) == (SIDE, SIDE, len(data))
        assert row["bpp"] == 8 * len(data) / SIDE**2
        assert row["encode_s"] > 0 and row["decode_s"] > 0


def test_distortions_match_independent_computations(models, crops, rows):
    for row in rows:
        image = crops[row["image"]]
        decoded = tfhyper.decompress(models[row["model"]], tfhyper.compress(models[row["model"]], image))
        assert row["psnr"] == pytest.approx(_psnr_numpy(image, decoded), abs=1e-9)
        reference = _ms_ssim_tf(image, decoded)
        # tf.image.ssim_multiscale clips each scale's term at 0, tfhyper floors it at 1e-6: they agree when every
        # term is positive, which a non-zero reference shows.
        assert reference > 0
        assert row["ms_ssim"] == pytest.approx(reference, abs=1e-5)
        assert row["ms_ssim_db"] == pytest.approx(-10 * np.log10(1 - reference), rel=1e-4)
        assert 5 < row["psnr"] < 30  # barely trained, but a reconstruction rather than noise


def test_y_and_z_share_the_file_in_proportion_to_their_code_lengths(models, crops, rows):
    for row in rows:
        model, image = models[row["model"]], crops[row["image"]]
        assert row["bpp_y"] + row["bpp_z"] == pytest.approx(row["bpp"], rel=1e-12)
        # The container (header, section lengths, checksum) and the coder's end cost more than nothing.
        assert row["bpp_estimated"] < row["bpp"]
        bits = _likelihood_bits(model, image)
        # Scaling the split back to the estimate gives each latent's ideal code length. Where a latent is coded
        # with the factorized density (z, and the factorized prior's y), the float density predicts it up to the
        # tables' 16-bit quantization: its tables span all but 1e-9 of the mass, so escapes are negligible. The
        # hyperprior's y is not compared: with a barely trained h_s many y fall outside their Gaussian table and
        # are escaped, which costs a few bits where the float likelihood charges its floor, -log2(1e-9) = 30 bits.
        # It is covered by the sum above once z is right.
        estimated = {name: row[f"bpp_{name}"] / row["bpp"] * row["bpp_estimated"] * SIDE**2 for name in ("y", "z")}
        if isinstance(model, tfhyper.ScaleHyperprior):
            assert row["bpp_z"] > 0 and row["bpp_y"] > 0
            assert estimated["z"] == pytest.approx(bits["z"], rel=1e-2)
        else:
            assert row["bpp_z"] == 0 and row["bpp_y"] == row["bpp"]
            assert estimated["y"] == pytest.approx(bits["y"], rel=1e-2)


def test_aggregates_are_means_per_model_with_its_settings(models, rows):
    summary = evaluate.summarize(rows, models)
    assert list(summary) == list(models)
    for name, model in models.items():
        settings = summary[name]["settings"]
        assert settings == {
            "kind": {"ScaleHyperprior": "hyperprior", "FactorizedPrior": "factorized"}[type(model).__name__],
            "class": type(model).__name__, "N": 8, "M": 8, "lambda": model.lmbda, "distortion": "mse",
            "fingerprint": model.fingerprint().hex(),
        }  # fmt: skip
        mine = [row for row in rows if row["model"] == name]
        assert summary[name]["aggregate"]["images"] == 2
        for column in evaluate.AGGREGATED_COLUMNS:
            assert summary[name]["aggregate"][column] == pytest.approx(np.mean([r[column] for r in mine]), rel=1e-12)


@pytest.mark.parametrize(
    "images, message",
    [
        ({"small": np.zeros((160, 200, 3), np.uint8)}, "at least 161"),
        ({"float": np.zeros((192, 192, 3), np.float32)}, "uint8"),
        ({}, "no images"),
    ],
)
def test_bad_images_are_one_clear_error(models, images, message):
    with pytest.raises(ValueError, match=message):
        evaluate.evaluate_models(models, images, progress=False)


def test_bad_models_are_one_clear_error(crops, run_dirs, tmp_path):
    with pytest.raises(ValueError, match="no models"):
        evaluate.evaluate_models({}, crops, progress=False)
    with pytest.raises(ValueError, match="not a tfhyper model"):
        evaluate.evaluate_models({"x": object()}, crops, progress=False)
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(ValueError, match="has no model.keras"):
        inputs.load_models([tmp_path / "unfinished"])
    (tmp_path / "junk.keras").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.keras is not a saved tfhyper model"):
        inputs.load_models([tmp_path / "junk.keras"])
    with pytest.raises(ValueError, match="two models are named 'model'"):
        inputs.load_models([run_dirs["hyperprior"] / "model.keras", run_dirs["factorized"] / "model.keras"])


# --- the Kodak set -----------------------------------------------------------------------------------------


def test_the_md5_manifest_matches_the_kodak_files(shared_dir):
    kodak = shared_dir / "data" / "kodak"
    assert sorted(p.name for p in kodak.glob("*.png")) == sorted(evaluate.KODAK_MD5)
    for name, md5 in evaluate.KODAK_MD5.items():
        assert hashlib.md5((kodak / name).read_bytes()).hexdigest() == md5
    # Published with the set, independently of the files here.
    assert evaluate.KODAK_MD5["kodim01.png"] == "02abfa3bf18ae21ed932bfcdb15a1fa9"
    assert evaluate.KODAK_MD5["kodim23.png"] == "1d3955f7cbf7eef0b49c2cb3e136d31f"


def _serve_from(folder, log):
    """A stand-in for the network: the bytes of the same-named file in `folder`."""

    def fetch(url):
        assert url.startswith(evaluate.KODAK_URL)
        log.append(url)
        return (folder / url.rsplit("/", 1)[1]).read_bytes()

    return fetch


def test_download_checks_and_caches_every_file(shared_dir, tmp_path):
    fetched = []
    cache = evaluate.download_kodak(tmp_path / "cache", _serve_from(shared_dir / "data/kodak", fetched), progress=False)
    assert len(fetched) == 24 and sorted(p.name for p in cache.iterdir()) == sorted(evaluate.KODAK_MD5)
    assert (cache / "kodim07.png").read_bytes() == (shared_dir / "data/kodak/kodim07.png").read_bytes()

    def offline(url):
        raise AssertionError("a cached file was downloaded again")

    assert evaluate.download_kodak(tmp_path / "cache", offline, progress=False) == cache


def test_download_keeps_no_file_that_fails_its_md5(shared_dir, tmp_path):
    def corrupt(url):
        data = bytearray((shared_dir / "data/kodak" / url.rsplit("/", 1)[1]).read_bytes())
        data[1000] ^= 1
        return bytes(data)

    with pytest.raises(ValueError, match="downloaded kodim01.png has md5 .* it was not kept"):
        evaluate.download_kodak(tmp_path, corrupt, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_does_not_replace_a_foreign_cached_file(shared_dir, tmp_path):
    (tmp_path / "kodim01.png").write_bytes(b"mine")
    with pytest.raises(ValueError, match="is not the Kodak image kodim01.png"):
        evaluate.download_kodak(tmp_path, _serve_from(shared_dir / "data/kodak", []), progress=False)
    assert (tmp_path / "kodim01.png").read_bytes() == b"mine"


def test_offline_download_is_one_clear_error(monkeypatch, tmp_path):
    import urllib.error

    def no_network(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(evaluate.urllib.request, "urlopen", no_network)
    with pytest.raises(OSError, match=r"cannot download .*kodim01.png \(Name or service not known\); give an image"):
        evaluate.download_kodak(tmp_path, progress=False)


def test_image_folders_take_precedence_over_the_download(crops_dir, monkeypatch, tmp_path):
    downloads = []
    monkeypatch.setattr(evaluate, "download_kodak", lambda cache, progress: downloads.append(cache) or crops_dir)
    assert list(evaluate.resolve_images(crops_dir, tmp_path / "absent")) == ["kodim05", "kodim23"]
    assert list(evaluate.resolve_images(None, crops_dir, limit=1)) == ["kodim05"]
    assert downloads == []
    evaluate.resolve_images(None, None, tmp_path / "cache")
    assert downloads == [tmp_path / "cache"]


# --- command line ------------------------------------------------------------------------------------------


def _run_cli(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", *arguments],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cli_writes_rows_and_settings_and_keeps_existing_results(models, crops, crops_dir, run_dirs, tmp_path):
    output = tmp_path / "results" / "evaluate.csv"
    arguments = [f"--models={run_dirs['hyperprior']},{run_dirs['factorized'] / 'model.keras'}",
                 f"--images={crops_dir}", f"--output={output}"]
    result = _run_cli(*arguments)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "hyperprior" in result.stdout and "bpp_z" in result.stdout
    with open(output, newline="", encoding="utf-8") as stream:
        written = list(csv.DictReader(stream))
    assert list(written[0]) == list(evaluate.COLUMNS)
    names = {"hyperprior": models["hyperprior"], "model": models["factorized"]}
    assert [(row["model"], row["image"]) for row in written] == [(m, i) for m in names for i in crops]
    for row in written:
        data = tfhyper.compress(names[row["model"]], crops[row["image"]])
        assert int(row["bytes"]) == len(data) and float(row["bpp"]) == 8 * len(data) / SIDE**2
    document = json.loads(results.json_path(output).read_text())
    assert document["images"] == ["kodim05", "kodim23"]
    assert document["models"]["hyperprior"]["settings"]["class"] == "ScaleHyperprior"
    assert document["models"]["model"]["settings"]["class"] == "FactorizedPrior"
    assert document["models"]["model"]["settings"]["lambda"] == models["factorized"].lmbda
    assert sorted(os.listdir(output.parent)) == ["evaluate.csv", "evaluate.json"]

    before = output.read_bytes()
    again = _run_cli(*arguments)
    assert again.returncode != 0
    assert again.stderr.strip().splitlines()[-1] == f"evaluate: {output} exists; pass --overwrite to replace it"
    assert output.read_bytes() == before


def test_cli_prints_help_and_reports_a_missing_model_in_one_line(crops_dir, tmp_path):
    from absl import flags

    assert not flags.FLAGS.flags_by_module_dict().get(evaluate.__name__)
    result = _run_cli("--help")
    assert all(flag in result.stdout for flag in ("--models", "--images", "--kodak", "--output", "--limit"))
    missing = tmp_path / "absent.keras"
    result = _run_cli(f"--models={missing}", f"--images={crops_dir}", f"--output={tmp_path / 'out.csv'}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == f"evaluate: model {missing} not found"
    assert not (tmp_path / "out.csv").exists()
