"""What the runtime reads off the CPU (its name in provenance, whether bf16 is native), and how it
picks the device and the autocast dtype."""

from __future__ import annotations

from cifarlab.runtime import cpu_has_native_bf16, cpu_name, cpuinfo

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2

processor\t: 1
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx fma avx2
"""
ZEN5 = ZEN3.replace("family\t: 25", "family\t: 26").replace("model\t\t: 1", "model\t\t: 2") \
    .replace("avx2", "avx2 avx512f avx512_bf16")


def test_two_cpus_with_the_same_model_name_get_different_names():
    assert cpu_name(cpuinfo(ZEN3)) == "AMD EPYC (family 25, model 1, AVX2)"
    assert cpu_name(cpuinfo(ZEN5)) == "AMD EPYC (family 26, model 2, AVX512-BF16)"
    assert cpu_name(cpuinfo("model name\t: Some CPU\nflags\t: sse2")) == "Some CPU"


def test_native_bf16_is_read_from_the_flags_of_the_first_processor():
    assert not cpu_has_native_bf16(cpuinfo(ZEN3)) and cpu_has_native_bf16(cpuinfo(ZEN5))
    assert not cpu_has_native_bf16(cpuinfo("model name\t: x\nflags\t: avx512_bf16x"))
    assert cpuinfo("") == {} and not cpu_has_native_bf16({})


# ------------------------------------------------------------------ the CUDA path, as far as a CPU can test it

def test_device_and_autocast_choice_with_and_without_a_gpu(monkeypatch):
    """auto takes the GPU when there is one, and bf16 autocast on it whatever the CPU; fp32 and
    cpu are honoured; asking for cuda without one is one line naming what is valid."""
    import pytest
    import torch

    import cifarlab.runtime as R
    from cifarlab.errors import ConfigError
    from cifarlab.schema import TrainConfig
    monkeypatch.setattr(R, "keep_freed_memory", lambda keep=True: None)
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda info=None: False)   # an AVX2 host
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = R.setup(TrainConfig())
    assert cpu.device.type == "cpu" and cpu.amp_dtype is None
    with pytest.raises(ConfigError, match="no CUDA device is available; valid here: auto, cpu"):
        R.setup(TrainConfig(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for device in ("auto", "cuda"):
        gpu = R.setup(TrainConfig(device=device))
        assert gpu.device.type == "cuda" and gpu.amp_dtype is torch.bfloat16
    assert R.setup(TrainConfig(precision="fp32")).amp_dtype is None
    assert R.setup(TrainConfig(device="cpu")).device.type == "cpu"
