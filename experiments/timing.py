"""Wall-clock timing for the benchmark programs (never for tests: a test does not depend on the machine's speed)."""
import time

import numpy as np


def median_seconds(work, repeats):
    """Median wall-clock seconds of `work()` over `repeats` runs, after one untimed run (graph tracing, allocator)."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def time_training_steps(model, batches, warmup, steps):
    """Per-step wall-clock seconds of `model.fit` on `batches` (one Keras train_step each, under the strategy the
    model was made in), after `warmup` steps of tracing and allocation."""
    import keras

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimes()
    model.fit(batches, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[timer])
    return np.array(timer.times[warmup:])
