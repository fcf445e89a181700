"""What this machine computes natively, for choices whose speed depends on it (the transforms' dtype policy).

bfloat16 halves the memory traffic of the transforms, but only pays where the processor multiplies bfloat16
itself: x86 CPUs with AVX512_BF16 or AMX-BF16 (oneDNN uses them), NVIDIA GPUs from compute capability 8.0
(Ampere). Elsewhere every bfloat16 operation is emulated through float32: on an AVX2-only CPU a training step at
the paper's setting took 47.9 s in `mixed_bfloat16` against 4.6 s in float32 (WORKSPACE_NOTES.md).
"""
import functools
import pathlib

BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
BFLOAT16_GPU_CAPABILITY = (8, 0)


@functools.lru_cache(maxsize=None)
def cpu_flags():
    """The CPU's feature flags as Linux reports them (/proc/cpuinfo), or None where they cannot be read."""
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def gpu_capabilities():
    """Compute capabilities (major, minor) of the GPUs TensorFlow sees."""
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability:
            capabilities.append(tuple(capability))
    return capabilities


def native_bfloat16():
    """(True, what computes it) where bfloat16 is native here, else (False, why not)."""
    gpus = gpu_capabilities()
    if gpus:
        if all(capability >= BFLOAT16_GPU_CAPABILITY for capability in gpus):
            return True, f"GPU compute capability {min(gpus)[0]}.{min(gpus)[1]}"
        return False, (f"a GPU of compute capability {min(gpus)[0]}.{min(gpus)[1]} emulates bfloat16 "
                       f"(native from {BFLOAT16_GPU_CAPABILITY[0]}.{BFLOAT16_GPU_CAPABILITY[1]})")
    flags = cpu_flags()
    if flags is None:
        return False, "the CPU's features cannot be read here, so bfloat16 is taken as emulated"
    native = [flag for flag in BFLOAT16_CPU_FLAGS if flag in flags]
    if native:
        return True, f"CPU with {' and '.join(native)}"
    return False, f"this CPU has neither {' nor '.join(BFLOAT16_CPU_FLAGS)}, so bfloat16 is emulated through float32"


def precision_warning(precision):
    """A one-line warning when `precision` computes in bfloat16 on hardware that emulates it, else None."""
    if "bfloat16" not in precision:
        return None
    native, reason = native_bfloat16()
    if native:
        return None
    return f"{precision} will be much slower than float32 here: {reason}"
