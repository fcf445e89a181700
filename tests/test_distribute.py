"""tf.distribute: a step on several replicas is the one-device step on the global batch; only the chief writes.

Replicas are two logical CPU devices (`tf.config.set_logical_device_configuration`), which must be set before
TensorFlow starts, so those tests run in a fresh process.
"""
import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from tfhyper import distribute

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs one model on the default strategy and a copy on a mirrored strategy over 2 CPU devices, from the same
# weights, on the same fixed global batch of 4 crops, and prints what both did as JSON. The uniform noise of
# eq. 4 is replaced by a fixed function of y, because each replica would draw its own noise: the test is about
# the distribution of the step, not about the noise.
MIRRORED = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from tfhyper import distribute, entropy_models
from tfhyper.training import RunConfig, build_model, build_optimizer

entropy_models.add_uniform_noise = lambda v: v + 0.4 * tf.sin(3.0 * v)
kind, optimizer_name, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
config = RunConfig(model=kind, quality=3, num_filters=8, latent_filters=8, clip_norm=1.0, learning_rate=1e-2)
x = np.random.default_rng(0).random((4, 64, 64, 3), dtype=np.float32)

def optimizer():
    if optimizer_name == "sgd":  # an update proportional to the gradient: its scale and clipping show in the weights
        return keras.optimizers.SGD(1e-3, global_clipnorm=config.clip_norm)
    return build_optimizer(config)

def trained(strategy, start):
    with strategy.scope():
        model = build_model(config)
        model.set_weights(start)
        model.compile(optimizer=optimizer())
    history = model.fit(tf.data.Dataset.from_tensors(x).repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    return model, {name: float(values[-1]) for name, values in history.history.items()}

keras.utils.set_random_seed(0)
start = build_model(config).get_weights()
probe = build_model(config)
probe.set_weights(start)
with tf.GradientTape() as tape:
    loss = tf.reduce_mean(probe.rate_distortion(tf.constant(x), training=True)["loss"])
norm = float(tf.linalg.global_norm([g for g in tape.gradient(loss, probe.trainable_variables) if g is not None]))
one, one_logs = trained(tf.distribute.get_strategy(), start)
mirrored = distribute.make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
two, two_logs = trained(mirrored, start)
worst = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12))
            for a, b in zip(one.get_weights(), two.get_weights()))
moved = max(float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), start))
print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "gradient_norm": norm, "worst_relative": worst,
                  "moved": moved, "one": one_logs, "two": two_logs}))
"""


def _mirrored(kind, optimizer, steps):
    result = subprocess.run([sys.executable, "-c", MIRRORED, kind, optimizer, str(steps)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind, optimizer, steps", [("hyperprior", "sgd", 1), ("factorized", "adam", 2)])
def test_a_mirrored_step_equals_the_one_device_step_on_the_global_batch(kind, optimizer, steps):
    outcome = _mirrored(kind, optimizer, steps)
    assert outcome["replicas"] == 2
    # Clipping is active (the unclipped gradient is longer than the norm of 1.0), so clipping each replica's
    # share instead of the whole would change the step, as would summing the replicas' mean losses.
    assert outcome["gradient_norm"] > 2.0
    assert outcome["moved"] > 0  # the step did change the weights
    assert outcome["worst_relative"] < 1e-5
    for metric in ("bpp", "mse", "loss"):
        np.testing.assert_allclose(outcome["two"][metric], outcome["one"][metric], rtol=1e-5)


def _strategy_of(task_type, task_id):
    return types.SimpleNamespace(cluster_resolver=types.SimpleNamespace(task_type=task_type, task_id=task_id))


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    ({"worker": ["a:1", "b:2"]}, "worker", 0, True),
    ({"worker": ["a:1", "b:2"]}, "worker", 1, False),
    ({"chief": ["c:3"], "worker": ["a:1"]}, "chief", 0, True),
    ({"chief": ["c:3"], "worker": ["a:1"]}, "worker", 0, False),
    ({"worker": ["a:1"], "evaluator": ["e:4"]}, "evaluator", 0, False),
])  # fmt: skip
def test_the_chief_is_the_chief_task_or_else_worker_0(monkeypatch, cluster, task_type, task_id, chief):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": task_id}}))
    assert distribute.is_chief(_strategy_of(task_type, task_id)) is chief


def test_one_process_without_a_cluster_is_the_chief(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief(_strategy_of(None, None))


def test_workers_draw_different_crops():
    seeds = {distribute.pipeline_seed(7, types.SimpleNamespace(input_pipeline_id=i)) for i in range(4)}
    assert len(seeds) == 4 and distribute.pipeline_seed(7, types.SimpleNamespace(input_pipeline_id=0)) == 7


def test_bad_strategies_are_refused_in_one_line(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.make_strategy("horovod")
    with pytest.raises(ValueError, match="only with the mirrored"):
        distribute.make_strategy("default", ["/gpu:0"])
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="cannot be split evenly over 2 replicas"):
        distribute.check_batch_size(5, types.SimpleNamespace(num_replicas_in_sync=2))


# --- two worker processes on this machine (MultiWorkerMirroredStrategy over TF_CONFIG) ---------------------------

# A worker of a 2-worker cluster: trains a tiny model in RUN_DIR, records every file it opens for writing there,
# and prints its weights' digest and those paths as JSON. SLOW_STEP seconds of sleep after each step leave the
# test time to kill a worker mid-run.
WORKER = r"""
import builtins, hashlib, json, os, sys, time
run_dir, steps, slow = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
written = []
_open = builtins.open
def recording_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and os.path.abspath(str(file)).startswith(os.path.abspath(run_dir)):
        written.append(str(file))
    return _open(file, mode, *args, **kwargs)
builtins.open = recording_open
import keras
from tfhyper.training import RunConfig, WorkerLost, train

class Slow(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        time.sleep(slow)

config = RunConfig(strategy="multi_worker", num_filters=8, latent_filters=8, steps=steps, checkpoint_every=5,
                   batch_size=4, patch_size=64)
try:
    model, _ = train(config, run_dir, verbose=0, extra_callbacks=[Slow()])
except WorkerLost as error:
    print(f"error: {error}", file=sys.stderr, flush=True)
    os._exit(3)
digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
print(json.dumps({"digest": digest, "steps": int(model.optimizer.iterations.numpy()), "written": written,
                  "pid": os.getpid()}), flush=True)
os._exit(0)
"""
HANG_GUARD_S = 400  # far beyond a healthy run (seconds); a run past it hangs


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start_workers(run_dir, steps, slow):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        environment = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                              "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER, str(run_dir), str(steps), str(slow)], cwd=REPO,
                                        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def _finish(workers):
    outputs = []
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            pytest.fail("a multi-worker run hangs")
        outputs.append((worker.returncode, out, err))
    return outputs


def _report(output):
    returncode, out, err = output
    assert returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_workers_train_in_step_and_only_the_chief_writes(tmp_path):
    run_dir = tmp_path / "run"
    chief, other = (_report(output) for output in _finish(_start_workers(run_dir, steps=20, slow=0.0)))
    assert chief["steps"] == other["steps"] == 20
    assert chief["digest"] == other["digest"]  # the same weights on both workers
    assert (run_dir / "model.keras").exists() and json.loads((run_dir / "progress.json").read_text())["steps_done"] == 20
    assert chief["written"] and other["written"] == []  # the Python side: run.json, checkpoints, progress, model
    events = list((run_dir / "logs").rglob("events.out.tfevents.*"))  # TensorBoard's files are named by process
    assert events and all(f".{chief['pid']}." in path.name for path in events)


def test_a_lost_worker_stops_the_run_which_then_resumes(tmp_path):
    run_dir = tmp_path / "run"
    workers = _start_workers(run_dir, steps=40, slow=0.3)
    deadline = time.monotonic() + HANG_GUARD_S
    progress = run_dir / "progress.json"
    while not (progress.exists() and json.loads(progress.read_text())["steps_done"] >= 10):
        if time.monotonic() > deadline or workers[0].poll() is not None:
            for w in workers:
                w.kill()
            pytest.fail(f"no checkpoint at step 10: {workers[0].communicate()[1][-2000:]}")
        time.sleep(0.2)
    workers[1].kill()  # the other worker dies mid-run
    (returncode, _, err), _ = _finish(workers)
    assert returncode == 3 and "a worker of the cluster stopped" in err, err[-3000:]
    stopped_at = json.loads(progress.read_text())["steps_done"]
    assert 10 <= stopped_at < 40
    chief, other = (_report(output) for output in _finish(_start_workers(run_dir, steps=40, slow=0.0)))
    assert chief["steps"] == other["steps"] == 40 and chief["digest"] == other["digest"]
