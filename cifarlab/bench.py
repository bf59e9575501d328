"""`cifarlab bench throughput`: training images/s of the default path vs plain PyTorch.

Both configurations run in the same process, in alternating rounds, so drift of a
shared machine hits both alike; the median round is reported. "Plain" is what a
straightforward loop gets: fp32, eager, NCHW, glibc's default allocator behaviour.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch

from cifarlab import config as C
from cifarlab import runtime
from cifarlab.data.loader import Split, Splits
from cifarlab.train import Session, build_session, train_step

PLAIN = {"precision": "fp32", "channels_last": "off"}


def synthetic_splits(batch_size: int, num_classes: int = 10) -> Splits:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, 32, 32, 3), dtype=torch.uint8, generator=gen).permute(0, 3, 1, 2)
    split = Split(images, torch.randint(0, num_classes, (batch_size,), generator=gen))
    classes = tuple(str(i) for i in range(num_classes))
    return Splits(split, None, split, classes, (125.3, 123.0, 113.9), (63.0, 62.1, 66.7))


def time_steps(s: Session, split: Split, steps: int, keep_memory: bool) -> float:
    """Images/s over `steps` training steps (after two untimed ones)."""
    if s.rt.device.type == "cpu":
        runtime.keep_freed_memory(keep_memory)
    gen = torch.Generator(device=s.rt.device).manual_seed(0)
    images, labels = split.images.to(s.rt.device), split.labels.to(s.rt.device)
    for _ in range(2):
        train_step(s, images, labels, gen)
    sync(s.rt.device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(s, images, labels, gen)
    sync(s.rt.device)
    return steps * len(labels) / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(experiment: str | None, batch_size: int | None, steps: int, rounds: int) -> dict[str, float]:
    cfg = C.load(experiment) if experiment else C.ExperimentConfig(name="tutorial-net")
    bs = batch_size or cfg.train.batch_size
    splits = synthetic_splits(bs)
    plain_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **PLAIN))
    sessions = {"default": build_session(cfg, splits), "plain fp32 eager NCHW": build_session(plain_cfg, splits)}
    rates: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            rates[name].append(time_steps(s, splits.train, steps, keep_memory=name == "default"))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    print(f"model {cfg.model.name} ({cfg.name}), batch {bs}, {steps} steps x {rounds} rounds, "
          f"torch {torch.__version__}")
    for name, s in sessions.items():
        print(f"  {name:24s} {medians[name]:8.0f} img/s   [{s.rt.describe()}]")
    ratio = medians["default"] / medians["plain fp32 eager NCHW"]
    print(f"  ratio default / plain: {ratio:.2f}x")
    runtime.keep_freed_memory(True)
    return {**medians, "ratio": ratio}
