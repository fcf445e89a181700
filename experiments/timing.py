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
