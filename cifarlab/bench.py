"""Benchmarks.

`cifarlab bench throughput`: training images/s and CPU time per step of the default path vs
plain PyTorch.

Both configurations run in the same process, in alternating rounds, so drift of a
shared machine hits both alike; the median round is reported. "Plain" is what a
straightforward loop gets: fp32, eager, NCHW, glibc's default allocator behaviour.

`cifarlab bench tta`: time-to-accuracy of a fixed-schedule recipe over several seeds.
`cifarlab bench augment`: cost of an experiment's augmentation pipeline per epoch.
`cifarlab bench profile`: where a training step's time goes, operator by operator.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import torch

from cifarlab import config as C
from cifarlab import runtime
from cifarlab.data.batch import Batch
from cifarlab.data.loader import Split, Splits
from cifarlab.errors import UserError
from cifarlab.runs import RunDir
from cifarlab.train import Session, build_session, train_step

PLAIN = {"precision": "fp32", "channels_last": "off"}


def synthetic_splits(batch_size: int, num_classes: int = 10, side: int = 32) -> Splits:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, side, side, 3), dtype=torch.uint8, generator=gen).permute(0, 3, 1, 2)
    split = Split(images, torch.randint(0, num_classes, (batch_size,), generator=gen))
    classes = tuple(str(i) for i in range(num_classes))
    return Splits(split, None, split, classes, (125.3, 123.0, 113.9), (63.0, 62.1, 66.7))


def time_steps(s: Session, split: Split, steps: int, keep_memory: bool, epoch: int = 0) -> tuple[float, float]:
    """(images/s of wall time, CPU ms of this process per step) over `steps` training steps of
    `epoch` (a two-phase method's phase), after two untimed ones. On a shared machine wall time
    counts the other processes' turns; CPU time (all of this process's threads) does not, so it
    compares configurations fairly."""
    if s.rt.device.type == "cpu":
        runtime.keep_freed_memory(keep_memory)
    gen = torch.Generator(device=s.rt.device).manual_seed(0)
    batch = whole_batch(split, s.rt.device)
    for _ in range(2):
        train_step(s, batch, gen, epoch)
    sync(s.rt.device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step(s, batch, gen, epoch)
    sync(s.rt.device)
    cpu_ms = (time.process_time() - cpu_start) / steps * 1e3
    return steps * len(batch) / (time.perf_counter() - start), cpu_ms


def seconds_per_image(cfg: C.ExperimentConfig, steps: int = 5, threads: int = 1) -> float:
    """Wall seconds per training image of `cfg`'s training step (augmentation, then its method's
    forward, loss, backward and update) on a synthetic batch of its batch size, image size and
    classes, with `threads` threads, over `steps` steps after two untimed ones; a two-phase method's
    phases weighted by their share of its epochs. What `study status --measure` turns into hours:
    an epoch's validation pass and data handling are not in it."""
    from cifarlab.flops import classes_of, size_of
    from cifarlab.methods import pretrain_epochs, total_epochs
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads))
    splits = synthetic_splits(cfg.train.batch_size, classes_of(cfg), size_of(cfg))
    s = build_session(cfg, splits)
    first, total = pretrain_epochs(cfg), total_epochs(cfg)
    phases = [(0, first / total), (first, 1 - first / total)] if first else [(0, 1.0)]
    return sum(share / time_steps(s, splits.train, steps, keep_memory=True, epoch=epoch)[0]
               for epoch, share in phases if share > 0)


def whole_batch(split: Split, device: torch.device) -> Batch:
    """The whole (small, synthetic) split as one batch on `device`."""
    return next(split.to(device).batches(len(split)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# name -> (TrainConfig overrides, keep freed memory); the first is the default path, the last plain.
# The precision entry is the one that differs from the default: where `precision = "auto"`
# trains in bf16 (native bf16 CPUs, CUDA) it times fp32, elsewhere forced bf16.
ABLATIONS: dict[str, tuple[dict, bool]] = {
    "default": ({}, True),
    "- channels_last": ({"channels_last": "off"}, True),
    "- allocator retention": ({}, False),
    "+ bf16 autocast (forced)": ({"precision": "bf16"}, True),
    "- bf16 autocast (fp32)": ({"precision": "fp32"}, True),
    "plain fp32 eager NCHW": (PLAIN, False),
}


COMPILED = "+ torch.compile"  # the default path with the model compiled (bench only: training runs eager)


def ablation_names(default_is_bf16: bool) -> list[str]:
    skip = "+ bf16 autocast (forced)" if default_is_bf16 else "- bf16 autocast (fp32)"
    return [n for n in ABLATIONS if n != skip]


def throughput(experiment: str | None, batch_size: int | None, steps: int, rounds: int,
               ablate: bool = False, threads: int = 0, compiled: bool = False) -> dict[str, float]:
    """Median images/s (wall) and CPU ms per step of each configuration, measured in
    alternating rounds; prints a table. threads=0 keeps PyTorch's default. compiled: also the
    default path with its model under torch.compile, which compiles in the untimed first steps
    (where it cannot compile, e.g. no C++ compiler, one line says why and the rest is timed)."""
    cfg = C.load(experiment) if experiment else C.ExperimentConfig(name="tutorial-net")
    bs = batch_size or cfg.train.batch_size
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=threads or cfg.train.threads))
    splits = synthetic_splits(bs)
    sessions = {"default": build_session(cfg, splits)}
    names = ablation_names(sessions["default"].rt.amp_dtype is not None) if ablate else ["default", "plain fp32 eager NCHW"]
    sessions |= {n: build_session(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **ABLATIONS[n][0])),
                                  splits) for n in names[1:]}
    if compiled and (s := compiled_session(cfg, splits)) is not None:
        sessions[COMPILED] = s
        names.append(COMPILED)
    rates: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for n, s in sessions.items():
            rate, cpu_ms = time_steps(s, splits.train, steps, keep_memory=ABLATIONS.get(n, ({}, True))[1])
            rates[n].append(rate)
            cpu[n].append(cpu_ms)
    runtime.keep_freed_memory(True)
    medians = {n: statistics.median(r) for n, r in rates.items()}
    cpu_medians = {n: statistics.median(c) for n, c in cpu.items()}
    plain = medians["plain fp32 eager NCHW"]
    print(f"model {cfg.model.name} ({cfg.name}), batch {bs}, {steps} steps x {rounds} rounds, torch {torch.__version__}")
    for n, s in sessions.items():
        print(f"  {n:26s} {medians[n]:8.0f} img/s  {medians[n] / plain:5.2f}x plain  "
              f"{cpu_medians[n]:8.1f} CPU ms/step   [{s.rt.describe()}]")
    print(f"  ratio default / plain: {medians['default'] / plain:.2f}x (wall), "
          f"{cpu_medians['plain fp32 eager NCHW'] / cpu_medians['default']:.2f}x (CPU time)")
    if COMPILED in medians:
        print(f"  ratio compiled / default: {medians[COMPILED] / medians['default']:.2f}x (wall), "
              f"{cpu_medians['default'] / cpu_medians[COMPILED]:.2f}x (CPU time)")
    return {**medians, "ratio": medians["default"] / plain}


def compiled_session(cfg: C.ExperimentConfig, splits: Splits) -> Session | None:
    """The default path's session with its model compiled in place (nn.Module.compile: parameters and
    state dict unchanged), compiled by one step here; None, with one printed line, where it cannot."""
    s = build_session(cfg, splits)
    s.model.compile()
    gen = torch.Generator(device=s.rt.device).manual_seed(0)
    try:
        train_step(s, whole_batch(splits.train, s.rt.device), gen)
    except Exception as e:  # inductor's failures (no compiler, unsupported op) are long: keep the first line
        print(f"  {COMPILED}: could not compile here: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
        return None
    return s


def profile(experiment: str | None, batch_size: int | None, steps: int, threads: int, rows: int) -> str:
    """torch.profiler table of the default training path: the operators with the most self time,
    split by input shape (so one layer's convolution is told from another's); returns the table."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    cfg = C.load(experiment) if experiment else C.ExperimentConfig(name="tutorial-net")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, threads=threads, batch_size=batch_size or cfg.train.batch_size))
    splits = synthetic_splits(cfg.train.batch_size)
    s = build_session(cfg, splits)
    rate, _ = time_steps(s, splits.train, steps, keep_memory=True)  # warms up, and a rate to print
    gen = torch.Generator(device=s.rt.device).manual_seed(0)
    batch = whole_batch(splits.train, s.rt.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.rt.device.type == "cuda" else [])
    with torch_profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            train_step(s, batch, gen)
        sync(s.rt.device)
    table = prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows)
    header = (f"model {cfg.model.name} ({cfg.name}), batch {cfg.train.batch_size}, {steps} steps, "
              f"{rate:.0f} img/s unprofiled  [{s.rt.describe()}]")
    print(header, table, sep="\n")
    return table


def crossing_times(history: list[dict], thresholds: list[float]) -> dict[float, float | None]:
    """Wall seconds at the end of the first epoch whose validation accuracy reached each threshold."""
    out: dict[float, float | None] = {}
    for t in thresholds:
        out[t] = next((h["elapsed"] for h in history if h.get("val_acc") is not None and h["val_acc"] >= t), None)
    return out


def time_to_accuracy(cfg: C.ExperimentConfig, splits: Splits, seeds: int, thresholds: list[float],
                     out_root: Path, progress: bool) -> list[dict]:
    """Train `seeds` runs of a fixed schedule; per seed: wall time, test accuracy, threshold times.
    A seed whose run directory already holds a finished run of this config (same config hash) is
    read, not trained again, so an interrupted bench continues where it stopped."""
    from cifarlab.train import train
    rows = []
    for seed in range(seeds):
        seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
        run = RunDir(out_root / cfg.name / f"seed{seed}")
        final = run.read_final()
        if final is None or final.get("config_hash") != C.config_hash(seeded) or final.get("seed") != seed:
            final = train(seeded, splits, run, progress=progress)
        rows.append({"seed": seed, "wall_seconds": final["wall_seconds"], "test_acc": final["test_acc"],
                     "train_flops": final.get("train_flops"), "train_seconds": final.get("train_seconds"),
                     "val_acc": final["val_acc"], "crossed": crossing_times(run.read_metrics(), thresholds)})
        print(format_tta_row(rows[-1], thresholds), flush=True)
    wall, acc = [r["wall_seconds"] for r in rows], [r["test_acc"] for r in rows]
    print(f"{cfg.name}: {len(rows)} seeds, test acc {100 * statistics.mean(acc):.2f} +- "
          f"{100 * (statistics.stdev(acc) if len(acc) > 1 else 0):.2f} %, wall {statistics.mean(wall):.1f} +- "
          f"{statistics.stdev(wall) if len(wall) > 1 else 0:.1f} s per run  [{runtime.machine_name(splits_device())}]")
    return rows


def splits_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def format_tta_row(row: dict, thresholds: list[float]) -> str:
    from cifarlab.flops import amount
    cross = ("(no validation split: no threshold timed)" if row.get("val_acc") is None else   # data.val_size = 0
             "  ".join(f"val>={100 * t:.0f}%: " + (f"{s:.1f} s" if s is not None else "never")
                       for t, s in row["crossed"].items()))
    flops = (f"{amount(row['train_flops'])} at {row['train_flops'] / row['train_seconds'] / 1e12:.2f} TFLOP/s  "
             if row.get("train_flops") and row.get("train_seconds") else "")
    return (f"  seed {row['seed']}: test {100 * row['test_acc']:.2f} %  wall {row['wall_seconds']:.1f} s  "
            f"{flops}{cross}")


def augment_cost(cfg: C.ExperimentConfig, images: int = 45_000, rounds: int = 3, steps: int = 5) -> dict[str, float]:
    """Seconds per epoch of `images` images that each augmentation of the experiment's pipeline
    takes (alone, on the experiment's batch size), the whole pipeline, and one epoch's training
    steps without augmentation (timed on `steps` steps), on the CPU with the experiment's threads;
    prints each with its share of the epoch."""
    from cifarlab.augment import Pipeline
    if not cfg.augment.pipeline:
        raise UserError(f"{cfg.name} enables no augmentation: augment.pipeline is empty")
    bs = cfg.train.batch_size
    splits = synthetic_splits(bs)
    batch = whole_batch(splits.train, torch.device("cpu"))
    plain = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, pipeline=(), translate=0.0),
                                train=dataclasses.replace(cfg.train, device="cpu"))
    session = build_session(plain, splits)
    rate, _ = time_steps(session, splits.train, steps, keep_memory=True)
    epoch = images / rate
    parts = {name: (name,) for name in cfg.augment.pipeline}
    parts["whole pipeline"] = tuple(cfg.augment.pipeline)
    out = {}
    for label, names in parts.items():
        pipeline = Pipeline(dataclasses.replace(cfg.augment, pipeline=names))
        times = []
        for r in range(rounds):
            gen = torch.Generator().manual_seed(r)
            start = time.perf_counter()
            for _ in range(0, images, bs):
                pipeline(batch, gen)
            times.append(time.perf_counter() - start)
        out[label] = statistics.median(times)
    print(f"{cfg.name}: batch {bs}, {images} images per epoch, median of {rounds} "
          f"[{session.rt.describe()}]")
    print(f"  training steps without augmentation  {epoch:8.2f} s per epoch")
    for label, seconds in out.items():
        print(f"  {label:36s} {seconds:8.2f} s per epoch  {100 * seconds / epoch:5.1f} % of the training time  "
              f"({1e6 * seconds / images:.1f} us/image)")
    return {**out, "epoch": epoch}


def peak(size: int = 2048, seconds: float = 3.0, threads: int = 0) -> dict[str, float]:
    """TFLOP/s of square matrix products (2 n^3 FLOPs each) in bf16 and fp32, repeated for `seconds`
    after a warm-up: the rate this device's fastest kernel reaches, which a training run's achieved
    TFLOP/s (final.json's train_flops / train_seconds) can be read against."""
    if threads:
        torch.set_num_threads(threads)
    device = splits_device()
    out = {}
    emulated = device.type == "cpu" and not runtime.cpu_has_native_bf16()
    # a CPU without bf16 instructions emulates it at a few GFLOP/s (about a minute per product on
    # the AVX2 Zen 3) and precision "auto" trains in fp32 there: only fp32 is timed
    for dtype in (torch.float32,) if emulated else (torch.bfloat16, torch.float32):
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            count += 1
            if device.type == "cuda":
                torch.cuda.synchronize()
        out[str(dtype).removeprefix("torch.")] = 2 * size ** 3 * count / (time.perf_counter() - start) / 1e12
    print(f"peak matmul, {size} x {size}, {torch.get_num_threads()} thread(s) "
          f"[{runtime.machine_name(device)}]: " + ("bfloat16 not timed (no bf16 instructions on this CPU: "
                                                  "emulated, and runs train in fp32 here), " if emulated else "")
          + ", ".join(f"{k} {v:.3f} TFLOP/s" for k, v in out.items()))
    return out
