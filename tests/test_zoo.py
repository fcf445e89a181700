"""tfhyper.zoo: the catalogue, downloads into the cache (against a local HTTP server), bundled models, `zoo:NAME`.

No test reaches the network: CompressAI's files are stood in for by the PyTorch fixtures in ../shared/fixtures,
served from 127.0.0.1 with their full SHA-256.
"""
import hashlib
import http.server
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import types

import keras
import numpy as np
import pytest
from PIL import Image

import tfhyper
import tfhyper.imageio
from test_notebook import NOTEBOOK, centre_crop, outputs, this_python, with_parameters  # noqa: F401 (a fixture)
from tfhyper import __main__ as command_line
from tfhyper import paper, zoo
from tfhyper.models import ScaleHyperprior

REPO = pathlib.Path(__file__).resolve().parents[1]
HYPERPRIOR_CHECKPOINT = "compressai_hyperprior_n32_m48.pth.tar"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test starts with an empty cache of its own."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("TFHYPER_CACHE", str(directory))
    return directory


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# -- a local HTTP server -------------------------------------------------------------------------------------------


@pytest.fixture
def server():
    """Serves `files` (name -> body, or (body, declared length) to cut a download short); counts requests."""
    state = types.SimpleNamespace(files={}, requests=[])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            name = self.path.lstrip("/")
            state.requests.append(name)
            if name not in state.files:
                self.send_error(404)
                return
            body, declared = state.files[name] if isinstance(state.files[name], tuple) else (state.files[name], None)
            self.send_response(200)
            self.send_header("Content-Length", str(declared or len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True  # a declared length beyond the body: the client sees the connection end

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def closed_port_url():
    """A URL nothing listens at: connecting fails at once, as offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/bmshj2018-hyperprior-1-7eb97409.pth.tar"


def files_in(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- downloads -----------------------------------------------------------------------------------------------------


def test_download_verifies_and_moves_into_place(server, cache):
    body = bytes(range(256)) * 5000
    server.files["model.pth.tar"] = body
    destination = cache / "models" / "model.pth.tar"
    zoo.download(f"{server.url}/model.pth.tar", destination, sha256(body), progress=False)
    assert destination.read_bytes() == body
    assert files_in(destination.parent) == ["model.pth.tar"]  # no temporary file left


def test_hash_mismatch_is_refused_and_nothing_is_kept(server, cache):
    server.files["model.pth.tar"] = b"not the published file"
    destination = cache / "models" / "model.pth.tar"
    url = f"{server.url}/model.pth.tar"
    with pytest.raises(zoo.DownloadError) as error:
        zoo.download(url, destination, sha256(b"the published file"), progress=False)
    message = str(error.value)
    assert "\n" not in message and url in message and str(destination) in message and "SHA-256" in message
    assert files_in(destination.parent) == []


def test_published_prefix_is_what_is_checked(server, cache):
    body = b"weights" * 1000
    server.files["m.pth.tar"] = body
    destination = cache / "models" / "m.pth.tar"
    zoo.download(f"{server.url}/m.pth.tar", destination, sha256(body)[:8], progress=False)
    assert destination.read_bytes() == body
    with pytest.raises(zoo.DownloadError):
        zoo.download(f"{server.url}/m.pth.tar", cache / "other.pth.tar", "0" * 8 if sha256(body)[0] != "0" else "1" * 8,
                     progress=False)
    with pytest.raises(zoo.DownloadError):  # fewer than 8 digits verify nothing
        zoo.download(f"{server.url}/m.pth.tar", cache / "short.pth.tar", sha256(body)[:4], progress=False)


def test_interrupted_download_leaves_no_finished_looking_file(server, cache):
    body = b"x" * 100000
    server.files["model.pth.tar"] = (body[:30000], len(body))  # the connection ends after 30 kB of 100 kB
    destination = cache / "models" / "model.pth.tar"
    with pytest.raises(zoo.DownloadError) as error:
        zoo.download(f"{server.url}/model.pth.tar", destination, sha256(body), progress=False)
    message = str(error.value)
    assert "\n" not in message and str(destination) in message
    assert "30000 of 100000 bytes" in message or "IncompleteRead" in message  # Python versions differ in which
    assert files_in(destination.parent) == []


def test_download_stopped_by_the_user_leaves_nothing(cache, monkeypatch):
    def stream_then_interrupt(url, out, progress, timeout):
        out.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "_stream_to", stream_then_interrupt)
    destination = cache / "models" / "model.pth.tar"
    with pytest.raises(KeyboardInterrupt):
        zoo.download("http://127.0.0.1:1/model.pth.tar", destination, "0" * 64, progress=False)
    assert files_in(destination.parent) == []


def test_offline_error_names_the_url_and_where_to_put_the_file(cache):
    url = closed_port_url()
    destination = cache / "models" / "bmshj2018-hyperprior-1-7eb97409.pth.tar"
    with pytest.raises(zoo.DownloadError) as error:
        zoo.download(url, destination, "7eb97409", progress=False, timeout=10)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"cannot download {url}") and str(destination) in message
    assert files_in(destination.parent) == []


def test_missing_file_on_the_server_is_one_line(server, cache):
    with pytest.raises(zoo.DownloadError, match="404") as error:
        zoo.download(f"{server.url}/absent.pth.tar", cache / "absent.pth.tar", "0" * 64, progress=False)
    assert "\n" not in str(error.value)


# -- a CompressAI model through the whole path: download, verify, read without torch, convert, cache ---------------


def served_entry(server, shared_dir, name="test-hyperprior-mse-4"):
    body = (shared_dir / "fixtures" / HYPERPRIOR_CHECKPOINT).read_bytes()
    server.files[HYPERPRIOR_CHECKPOINT] = body
    q = paper.QUALITIES[4]
    return zoo.ZooModel(name=name, kind="hyperprior", distortion="mse", quality=4, num_filters=32, latent_filters=48,
                        lmbda=q.lmbda_mse, url=f"{server.url}/{HYPERPRIOR_CHECKPOINT}", sha256=sha256(body))


def test_zoo_model_is_downloaded_once_converted_and_reproduces_compressai(server, shared_dir, cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    entry = served_entry(server, shared_dir)
    model = zoo.load(entry, progress=False)
    assert type(model) is ScaleHyperprior and (model.num_filters, model.latent_filters) == (32, 48)
    assert model.lmbda == paper.QUALITIES[4].lmbda_mse and model.distortion == "mse"
    with np.load(shared_dir / "fixtures" / "compressai_hyperprior_n32_m48.npz") as fixture:
        x, y, x_hat = fixture["x"], fixture["y"], fixture["x_hat"]
    scale = np.max(np.abs(y))  # the tolerances of test_convert
    assert np.all(np.abs(model.analysis(x).numpy() - y) <= 1e-4 * (np.abs(y) + scale))
    reconstruction, _ = model(x, training=False)
    np.testing.assert_allclose(reconstruction.numpy(), x_hat, rtol=0, atol=1e-3)

    assert server.requests == [HYPERPRIOR_CHECKPOINT]
    again = zoo.load(entry, progress=False)
    assert server.requests == [HYPERPRIOR_CHECKPOINT]  # served from the cache
    assert again.fingerprint() == model.fingerprint()
    models = cache / "models"
    assert files_in(models) == sorted([HYPERPRIOR_CHECKPOINT, f"{entry.name}.keras", f"{entry.name}.json"])
    record = json.loads((models / f"{entry.name}.json").read_text())
    assert record["fingerprint"] == model.fingerprint().hex()
    assert zoo.find_by_fingerprint(model.fingerprint()) == models / f"{entry.name}.keras"
    assert zoo.find_by_fingerprint(b"\0\0\0\0") is None


def test_cached_checkpoint_is_verified_before_it_is_read(server, shared_dir, cache):
    entry = served_entry(server, shared_dir)
    placed = zoo.checkpoint_path(entry)
    placed.parent.mkdir(parents=True)
    placed.write_bytes((shared_dir / "fixtures" / "hostile_pickle.pth.tar").read_bytes())  # not the published file
    with pytest.raises(zoo.ZooError) as error:
        zoo.load(entry, progress=False)
    assert "\n" not in str(error.value) and str(placed) in str(error.value) and entry.url in str(error.value)
    assert placed.exists() and server.requests == []  # refused, neither read nor replaced


def test_a_manually_downloaded_file_is_used(server, shared_dir, cache):
    entry = served_entry(server, shared_dir)
    placed = zoo.checkpoint_path(entry)
    placed.parent.mkdir(parents=True)
    shutil.copyfile(shared_dir / "fixtures" / HYPERPRIOR_CHECKPOINT, placed)
    assert zoo.status(entry) == "downloaded"
    zoo.load(entry, progress=False)
    assert server.requests == [] and zoo.status(entry) == "cached"


# -- the catalogue -------------------------------------------------------------------------------------------------


def test_the_papers_32_models_with_compressai_urls():
    entries = zoo.compressai_models()
    assert len({e.name for e in entries}) == 32
    catalogue = zoo.catalogue()
    # As CompressAI's compressai/zoo/image.py publishes them.
    expected = {
        "bmshj2018-hyperprior-mse-1": "bmshj2018-hyperprior-1-7eb97409.pth.tar",
        "bmshj2018-hyperprior-mse-8": "bmshj2018-hyperprior-8-a583f0cf.pth.tar",
        "bmshj2018-hyperprior-ms-ssim-3": "bmshj2018-hyperprior-ms-ssim-3-92dd7878.pth.tar",
        "bmshj2018-factorized-mse-6": "bmshj2018-factorized-prior-6-9b02ea3a.pth.tar",
        "bmshj2018-factorized-ms-ssim-8": "bmshj2018-factorized-ms-ssim-8-8811bd14.pth.tar",
    }
    for name, file in expected.items():
        assert catalogue[name].url == f"https://compressai.s3.amazonaws.com/models/v1/{file}"
    for entry in entries:
        assert entry.url.endswith(f"-{entry.quality}-{entry.sha256}.pth.tar") and len(entry.sha256) == 8
        assert (entry.num_filters, entry.latent_filters) == ((128, 192) if entry.quality <= 5 else (192, 320))
    assert catalogue["bmshj2018-hyperprior-ms-ssim-2"].lmbda == 4.58
    assert catalogue["bmshj2018-factorized-mse-3"].kind == "factorized"


def test_published_kodak_results_are_carried():
    # CompressAI's results/image/kodak/compressai-bmshj2018-hyperprior_mse_cpu.json, quality 1 and 8.
    first = zoo.catalogue()["bmshj2018-hyperprior-mse-1"].kodak
    last = zoo.catalogue()["bmshj2018-hyperprior-mse-8"].kodak
    assert first["bpp"] == pytest.approx(0.1313, abs=1e-4) and first["psnr_db"] == pytest.approx(27.58, abs=0.01)
    assert last["bpp"] == pytest.approx(1.6602, abs=1e-4) and last["psnr_db"] == pytest.approx(40.56, abs=0.01)
    for entry in zoo.compressai_models():
        assert 0.05 < entry.kodak["bpp"] < 2.5 and 0.9 < entry.kodak["ms_ssim"] < 1


def test_unknown_names_are_one_line():
    with pytest.raises(zoo.ZooError) as error:
        zoo.get("bmshj2018-hyperprior-mse-9")
    assert "\n" not in str(error.value) and "bmshj2018-hyperprior-mse-Q" in str(error.value)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("TFHYPER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "tfhyper"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "tfhyper"
    monkeypatch.setenv("TFHYPER_CACHE", str(tmp_path / "mine"))
    assert zoo.cache_dir() == tmp_path / "mine"


def test_choose_model_and_quality():
    default = zoo.default_name()
    assert zoo.choose() == f"zoo:{default}"
    assert zoo.choose("runs/x/model.keras") == "runs/x/model.keras"
    assert zoo.choose(None, 8) == "zoo:bmshj2018-hyperprior-mse-8"  # none bundled: CompressAI's
    assert zoo.choose(None, 6) == "zoo:tfhyper-cpu256-hyperprior-mse-6"  # bundled
    assert zoo.choose("zoo:bmshj2018-factorized-ms-ssim", 2) == "zoo:bmshj2018-factorized-ms-ssim-2"
    assert zoo.choose("bmshj2018-factorized-ms-ssim", 2) == "zoo:bmshj2018-factorized-ms-ssim-2"
    bundled = zoo.get(default)
    if (bundled.kind, bundled.distortion) == ("hyperprior", "mse"):
        assert zoo.choose(None, bundled.quality) == f"zoo:{default}"
    for model, quality in ((None, 9), ("model.keras", 3)):
        with pytest.raises(zoo.ZooError):
            zoo.choose(model, quality)


# -- bundled models ------------------------------------------------------------------------------------------------


def test_bundled_models_match_their_manifest_entries():
    bundled = zoo.bundled_models()
    assert bundled and zoo.default_name() in {e.name for e in bundled}
    for entry in bundled:
        model = zoo.load(entry.name)
        assert type(model).__name__ == {"hyperprior": "ScaleHyperprior", "factorized": "FactorizedPrior"}[entry.kind]
        assert (model.num_filters, model.latent_filters) == (entry.num_filters, entry.latent_filters)
        assert model.lmbda == pytest.approx(entry.lmbda) and model.distortion == entry.distortion
        assert entry.fingerprint == model.fingerprint().hex()
        assert zoo.find_by_fingerprint(model.fingerprint()) == zoo.bundled_dir() / entry.file
        assert (zoo.bundled_dir() / entry.file).stat().st_size < 20e6  # part of every install


def test_zoo_is_reachable_from_the_package():
    code = "import tfhyper, sys; tfhyper.zoo.catalogue(); print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "False", result.stderr  # the catalogue needs no TensorFlow


def test_zoo_names_are_accepted_by_evaluate():
    from experiments import inputs  # how evaluate and figures load --models

    name = zoo.default_name()
    models = inputs.load_models([f"zoo:{name}"])
    assert list(models) == [name] and models[name].fingerprint().hex() == zoo.get(name).fingerprint
    with pytest.raises(ValueError, match="no zoo model"):
        inputs.load_models(["zoo:no-such-model"])


def test_a_zoo_model_fine_tunes_to_another_lambda_and_reloads(tmp_path):
    model = zoo.load(zoo.default_name())
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.lmbda = paper.QUALITIES[1].lmbda_mse
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    images = np.random.default_rng(0).random((2, 64, 64, 3)).astype(np.float32)
    history = model.fit(images, epochs=1, batch_size=2, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert any(not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights))
    model.save(tmp_path / "tuned.keras")
    reloaded = tfhyper.load_model(tmp_path / "tuned.keras")
    assert reloaded.lmbda == paper.QUALITIES[1].lmbda_mse and reloaded.fingerprint() == model.fingerprint()
    np.testing.assert_array_equal(reloaded(images, training=False)[0].numpy(), model(images, training=False)[0].numpy())


# -- the command line ----------------------------------------------------------------------------------------------


def run_main(argv, capsys):
    status = command_line.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_zoo_command_lists_the_catalogue(capsys):
    status, out, err = run_main(["zoo"], capsys)
    assert status == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines()[1:-1]]
    assert len(names) == 32 + len(zoo.bundled_models())
    assert set(names) == set(zoo.catalogue())
    line = next(line for line in out.splitlines() if line.startswith("bmshj2018-hyperprior-mse-1 "))
    assert line.split()[1:4] == ["128", "192", "0.0018"] and "0.131" in line and "27.58" in line
    assert all(zoo.default_name() not in l or "bundled" in l for l in out.splitlines())


def kodak_crop(shared_dir, name, side=96):
    with Image.open(shared_dir / "data" / "kodak" / f"{name}.png") as image:
        return np.asarray(image.convert("RGB"))[:side, :side].copy()


def test_many_inputs_and_folders_with_an_output_dir(shared_dir, tmp_path, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("kodim01", "kodim02"):
        Image.fromarray(kodak_crop(shared_dir, name)).save(inputs / f"{name}.png")
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    status, out, err = run_main(["compress", inputs, "--output_dir", tmp_path / "tfh"], capsys)
    assert status == 0 and err == "", err
    assert files_in(tmp_path / "tfh") == ["kodim01.tfh", "kodim02.tfh"] and out.count("->") == 2
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before  # inputs never modified
    files = sorted((tmp_path / "tfh").iterdir())
    status, _, err = run_main(["decompress", *files, "--output_dir", tmp_path / "png"], capsys)
    assert status == 0 and err == "", err
    model = zoo.load(zoo.default_name())
    for file in files:
        decoded = np.asarray(Image.open(tmp_path / "png" / f"{file.stem}.png"))
        np.testing.assert_array_equal(decoded, tfhyper.decompress(model, file.read_bytes()))
    # Existing outputs are refused before any work; a folder without --output_dir is one line.
    status, _, err = run_main(["compress", inputs, "--output_dir", tmp_path / "tfh"], capsys)
    assert status == 1 and err.count("\n") == 1 and "--force" in err
    status, _, err = run_main(["compress", inputs, tmp_path / "x.tfh"], capsys)
    assert status == 1 and err.count("\n") == 1 and "--output_dir" in err


def test_decompress_without_a_model_refuses_a_file_of_an_unknown_model(shared_dir, tmp_path, capsys):
    other = ScaleHyperprior(16, 24)
    other.build()
    other.update_tables()
    tfh = tmp_path / "other.tfh"
    tfh.write_bytes(tfhyper.compress(other, kodak_crop(shared_dir, "kodim03", 64)))
    status, _, err = run_main(["decompress", tfh, tmp_path / "out.png"], capsys)
    assert status == 1 and err.count("\n") == 1 and other.fingerprint().hex() in err and "--model" in err
    assert not (tmp_path / "out.png").exists()


def test_fresh_install_round_trip_of_a_kodak_image_with_no_model_argument(shared_dir, tmp_path):
    """As on a fresh install without network: an empty cache, only the bundled default model."""
    env = {**os.environ, "TFHYPER_CACHE": str(tmp_path / "empty-cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    source = shared_dir / "data" / "kodak" / "kodim23.png"
    tfh, png = tmp_path / "kodim23.tfh", tmp_path / "kodim23.png"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tfhyper", *map(str, args)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)

    assert cli("compress", source, tfh).returncode == 0
    result = cli("decompress", tfh, png)
    assert result.returncode == 0, result.stderr
    model = zoo.load(zoo.default_name())
    decoded = np.asarray(Image.open(png))
    assert decoded.shape == (512, 768, 3)
    np.testing.assert_array_equal(decoded, tfhyper.decompress(model, tfh.read_bytes()))
    assert not (tmp_path / "empty-cache").exists()  # nothing was downloaded


def test_the_notebook_takes_a_zoo_name(shared_dir, this_python):
    import nbformat
    from nbclient import NotebookClient

    name = zoo.default_name()
    image_path = shared_dir / "data" / "kodak" / "kodim05.png"
    crop = 64
    expected_bytes = len(tfhyper.compress(zoo.load(name), centre_crop(tfhyper.imageio.read_image(image_path), crop)))
    notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4), MODEL_PATH=f"zoo:{name}",
                               IMAGE_PATH=str(image_path), CROP=crop)
    NotebookClient(notebook, kernel_name="python3", timeout=300, startup_timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = "".join(out.text for out in outputs(notebook, "stream") if out.name == "stdout")
    assert f"file size: {expected_bytes} bytes" in text and "ScaleHyperprior (N = 32, M = 48)" in text
