"""The side-by-side benchmark without its peers: it says what it skipped and still prints tfhyper's figures."""
import subprocess
import sys

import pytest

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _run(*flags):
    return subprocess.run([sys.executable, "-m", "experiments.benchmark_peers", *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_without_peers_it_names_what_it_skipped_and_times_tfhyper(tmp_path):
    bare = tmp_path / "bare-python"  # an interpreter that can import neither torch nor constriction
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S -I \"$@\"\n")
    bare.chmod(0o755)
    done = _run(f"--peer_python={bare}", "--work=coder", "--repeats=1", "--bpp=0.5", "--width=128", "--height=128",
                "--num_filters=8", "--latent_filters=12")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CompressAI: skipped, ModuleNotFoundError: No module named 'torch'" in done.stdout
    assert "constriction: skipped" in done.stdout
    coder_line = next(line for line in done.stdout.splitlines() if line.startswith("coder:"))
    assert "tfhyper" in coder_line and "constriction" not in coder_line and "NOT EXACT" not in coder_line


def test_unknown_work_is_a_usage_error():
    done = _run("--work=coder,teleport")
    assert done.returncode != 0
    assert "unknown --work teleport" in done.stderr


def test_peer_coder_round_trips_when_constriction_is_here(tmp_path):
    pytest.importorskip("constriction")
    import numpy as np

    sys.path.insert(0, str(ROOT / "experiments"))
    import peer_compressai

    rng = np.random.default_rng(0)
    scales = rng.uniform(0.2, 8.0, 500)
    np.savez(tmp_path / "l.npz", z=np.zeros(0, np.int64), z_scales=np.zeros(0),
             y=np.round(rng.standard_normal(500) * scales).astype(np.int64), y_scales=scales)
    answer = peer_compressai.coder({"latents": str(tmp_path / "l.npz"), "repeats": 1})
    assert answer["exact"] and answer["symbols"] == 500
