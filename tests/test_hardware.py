"""Detection of native bfloat16, and the warning before a run that would emulate it."""
import pytest

from tfhyper import hardware

AVX2_ONLY = frozenset("fpu sse sse2 avx avx2 fma f16c".split())
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.fixture
def machine(monkeypatch):
    def make(cpu, gpus=()):
        monkeypatch.setattr(hardware, "cpu_flags", lambda: cpu)
        monkeypatch.setattr(hardware, "gpu_capabilities", lambda: list(gpus))
    return make


def test_avx2_only_cpu_emulates_bfloat16_and_warns(machine):
    machine(AVX2_ONLY)
    native, reason = hardware.native_bfloat16()
    assert not native and "neither avx512_bf16 nor amx_bf16" in reason
    warning = hardware.precision_warning("mixed_bfloat16")
    assert warning.startswith("mixed_bfloat16 will be much slower than float32 here")
    assert hardware.precision_warning("float32") is None


def test_cpu_with_bf16_instructions_is_native(machine):
    machine(SAPPHIRE_RAPIDS)
    assert hardware.native_bfloat16() == (True, "CPU with avx512_bf16 and amx_bf16")
    assert hardware.precision_warning("mixed_bfloat16") is None


def test_gpus_decide_by_compute_capability(machine):
    machine(AVX2_ONLY, gpus=[(9, 0)])
    assert hardware.native_bfloat16()[0]
    machine(SAPPHIRE_RAPIDS, gpus=[(9, 0), (7, 5)])
    native, reason = hardware.native_bfloat16()
    assert not native and "7.5 emulates bfloat16" in reason


def test_unknown_cpu_is_taken_as_emulating(machine):
    machine(None)
    assert not hardware.native_bfloat16()[0]


def test_cpu_flags_of_this_machine_are_read():
    flags = hardware.cpu_flags()
    # Linux on x86 (where the tests run) lists SSE2 for every 64-bit CPU.
    assert flags is None or "sse2" in flags
