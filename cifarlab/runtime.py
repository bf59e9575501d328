"""Where and how tensors are computed: device, threads, precision, memory layout."""

from __future__ import annotations

import contextlib
import ctypes
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from cifarlab.schema import TrainConfig
from cifarlab.errors import ConfigError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None   # autocast dtype, None = fp32
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        precision = "fp32" if self.amp_dtype is None else str(self.amp_dtype).replace("torch.", "")
        return f"{self.device.type} ({machine_name(self.device)}), {precision}, " \
               f"{'channels_last' if self.channels_last else 'NCHW'}, {torch.get_num_threads()} threads"


def cpuinfo(text: str | None = None) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_has_native_bf16(info: dict[str, str] | None = None) -> bool:
    """bf16 pays off on CPUs with AVX512-BF16 or AMX; elsewhere oneDNN emulates it, ~10x slower."""
    flags = set((cpuinfo() if info is None else info).get("flags", "").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_name(info: dict[str, str]) -> str:
    """Model name, family/model and widest vector extension: virtual machines often report only
    "AMD EPYC", which tells an AVX2-only Zen 3 from an AVX512-BF16 Zen 5 no better than nothing."""
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    isa = ("AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else
           "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "")
    details = ([f"family {info['cpu family']}, model {info['model']}"] if "cpu family" in info and "model" in info
               else []) + ([isa] if isa else [])
    return f"{name} ({', '.join(details)})" if details else name


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name(cpuinfo())


def keep_freed_memory(keep: bool = True) -> None:
    """Stop glibc from returning big freed buffers to the OS after every step.

    Each training step frees and reallocates the same activation buffers. glibc maps
    blocks above its mmap threshold (dynamic, at most 32 MiB) freshly each time, so every
    step pays page faults for them. `cifarlab bench throughput --ablate` shows what keeping
    them (1 GiB thresholds) buys on a machine. keep=False restores thresholds equal to glibc's
    dynamic ceiling (32 MiB mmap, 64 MiB trim), the best its default heuristic reaches.
    """
    if platform.system() != "Linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30 if keep else 32 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30 if keep else 64 << 20)


def setup(cfg: TrainConfig) -> Runtime:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA device is available; valid here: auto, cpu")
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cpu":
        keep_freed_memory()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (device.type == "cuda" or cpu_has_native_bf16()))
    return Runtime(device, torch.bfloat16 if bf16 else None, cfg.channels_last != "off")
