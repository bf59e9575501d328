"""Where and how tensors are computed: device, threads, precision, memory layout."""

from __future__ import annotations

import contextlib
import ctypes
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from cifarlab.config import TrainConfig
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


def cpu_has_native_bf16() -> bool:
    """bf16 pays off on CPUs with AVX512-BF16 or AMX; elsewhere oneDNN emulates it, ~10x slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
