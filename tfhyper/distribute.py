"""Training on several devices and machines: the `tf.distribute` strategy of a run, and what it changes.

    strategy = make_strategy("mirrored")          # all local GPUs (or the devices named)
    with strategy.scope():
        model = build_model(config)               # variables mirrored on every replica
        model.compile(optimizer=build_optimizer(config))

Batches are global: `RunConfig.batch_size` crops per optimizer step in all, split evenly over the replicas, so
that the paper's "batches of 8" (section 4.1) mean one step over 8 crops whatever the number of devices, and a
step on 2 devices computes the same update as on one.

What a strategy changes and where it is handled:
- the loss of eq. 10 is a mean over the global batch: each replica divides its own mean by the number of replicas
  and the gradients are summed (`cross_replica_gradients`), so the sum is the gradient of the global mean;
- gradient clipping bounds the norm of that global gradient, not each replica's share of it;
- each worker draws its own crops (`pipeline_seed`), and only the chief writes the run directory (`is_chief`).
"""
import functools
import json
import os

import tensorflow as tf

STRATEGIES = {
    "default": "one device (the first GPU if any, else the CPU)",
    "mirrored": "synchronous data parallelism over the local GPUs, or over --devices",
    "multi_worker": "synchronous data parallelism over the machines and GPUs of TF_CONFIG",
    "tpu": "a TPU (TPUClusterResolver)",
}
# Seed offset between workers' crop streams, so that two workers never draw the same crops.
WORKER_SEED_STRIDE = 1_000_003


def device_names(text):
    """Device names of a comma-separated list ("/gpu:0,/gpu:1"), or None for an empty one."""
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    return names or None


def make_strategy(name="default", devices=None):
    """The `tf.distribute.Strategy` called `name` (one of STRATEGIES).

    devices: for "mirrored", the device names to mirror over (e.g. ["/gpu:0", "/gpu:1"]); default all local GPUs.
    "multi_worker" reads the cluster from the TF_CONFIG environment variable and must be made before any other
    TensorFlow operation of the process.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if devices and name != "mirrored":
        raise ValueError(f"devices are chosen only with the mirrored strategy, not {name}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("the multi_worker strategy needs the cluster in the TF_CONFIG environment variable")
        return _multi_worker()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


@functools.cache
def _multi_worker():
    # One per process: its collectives are configured once, at the start, for every run the process trains.
    return tf.distribute.MultiWorkerMirroredStrategy()


def pin_gpu(index):
    """Makes GPU `index` the only GPU this process sees (before any TensorFlow operation), so that one worker per
    GPU can share a sweep."""
    gpus = tf.config.list_physical_devices("GPU")
    if index >= len(gpus):
        raise ValueError(f"no GPU {index}: this machine has {len(gpus)} GPU{'s' if len(gpus) != 1 else ''}")
    tf.config.set_visible_devices([gpus[index]], "GPU")


def task(strategy=None):
    """(task type, task index) of this process in its cluster: ("worker", 0) without one."""
    resolver = getattr(strategy or tf.distribute.get_strategy(), "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "worker", 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy=None):
    """Whether this process writes the run: the "chief" task, or worker 0 of a cluster without one."""
    task_type, index = task(strategy)
    if task_type == "chief":
        return True
    if task_type != "worker":
        return False
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return index == 0 and "chief" not in cluster


def pipeline_seed(seed, context):
    """The crop seed of one input pipeline (`tf.distribute.InputContext`; one per worker): `seed` on the first,
    another stream on each other, so that two workers never draw the same crops."""
    return seed + WORKER_SEED_STRIDE * context.input_pipeline_id


def check_batch_size(batch_size, strategy):
    """Refuses a global batch that the replicas cannot share evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"--batch_size={batch_size} crops per step cannot be split evenly over {replicas} replicas")


def replica_share(loss):
    """`loss` (a mean over this replica's crops) divided by the number of replicas: summed over replicas, the mean
    over the global batch."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / replicas if replicas > 1 else loss


def cross_replica_gradients(optimizer, gradients):
    """Gradients to hand to `optimizer.apply_gradients` in a replica context, so that the update is the one-device
    update on the global batch, clipping included.

    Keras' optimizer clips each replica's gradients before it sums them over the replicas, which bounds every
    share instead of the whole (with 2 replicas a clipped step could be up to twice `global_clipnorm`). Here the
    shares are summed first (the gradient of the global mean loss, see `replica_share`), clipped to the global
    norm, and handed back divided by the number of replicas: the optimizer's own sum restores the clipped
    gradient, and its own clipping finds a norm of at most clip / replicas and leaves it alone.
    """
    context = tf.distribute.get_replica_context()
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if context is None or replicas == 1:
        return gradients
    present = [i for i, g in enumerate(gradients) if g is not None]  # a variable the loss does not reach has None
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
    clip_norm = getattr(optimizer, "global_clipnorm", None)
    if clip_norm:
        scale = getattr(optimizer, "loss_scale_factor", None) or 1.0
        total, _ = tf.clip_by_global_norm(total, clip_norm * scale)
    shares = list(gradients)
    for i, g in zip(present, total):
        shares[i] = g / replicas
    return shares


def step_logs(values):
    """A training step's logs {name: scalar}, in the form Keras can average over the workers of a cluster.

    Keras averages a step's outputs over the workers of a multi-worker strategy along axis 0, which a scalar lacks
    (it fails to trace the step); given one axis of one element, the average is a scalar again. Elsewhere the logs
    pass unchanged.
    """
    strategy = tf.distribute.get_strategy()
    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()):
        return values
    return {name: tf.reshape(value, [1]) for name, value in values.items()}
