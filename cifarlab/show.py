"""`cifarlab show`: what a config does to the data (augmentation draws, label noise) and what trained runs learned (features)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from cifarlab import config as C
from cifarlab.augment import build_pipeline
from cifarlab.data.batch import Batch
from cifarlab.data.loader import Splits
from cifarlab.errors import UserError


def save_figure(fig, out: Path) -> None:
    """`out` in the format its suffix names (PNG, PDF, SVG, JPEG, ...); PNG, PDF and SVG without the
    Software/date metadata, so the same data gives the same bytes (JPEG takes no metadata)."""
    fixed = {"Software": None} if out.suffix.lower() == ".png" else {"Creator": None} if out.suffix.lower() in (
        ".pdf", ".svg") else None
    fig.savefig(out, dpi=110, metadata=fixed)


def first_of_each_class(splits: Splits, count: int) -> torch.Tensor:
    """Indices of the first training image of each of the first `count` classes (fewer if absent)."""
    labels = splits.train.labels
    found = [int(torch.nonzero(labels == c)[0]) for c in range(splits.num_classes) if (labels == c).any()]
    return torch.tensor(found[:count])


def augment_grid(cfg: C.ExperimentConfig, splits: Splits, out: Path, images: int = 6, draws: int = 5,
                 seed: int = 0) -> Path:
    """A PNG grid: one row per image (one per class), the original first, then `draws` augmented
    draws of the pipeline (each draw a different generator seed; MixUp and CutMix mix the shown
    images with each other). The title lists the pipeline in order."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipeline = build_pipeline(cfg.augment, splits.image_size, splits.num_classes)
    if pipeline is None:
        raise UserError(f"{cfg.name} has no augmentation to show: augment.pipeline is empty")
    idx = first_of_each_class(splits, images)
    batch = Batch(splits.train.images[idx], splits.train.labels[idx], idx)
    columns = [batch.images] + [pipeline(batch, torch.Generator().manual_seed(seed + d), 0, cfg.train.epochs).images
                                for d in range(draws)]
    fig, axes = plt.subplots(len(idx), draws + 1, figsize=(1.2 * (draws + 1), 1.2 * len(idx) + 0.5), squeeze=False)
    for col, imgs in enumerate(columns):
        for row in range(len(idx)):
            ax = axes[row][col]
            ax.imshow(np.ascontiguousarray(imgs[row].permute(1, 2, 0).numpy()), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("original" if col == 0 else f"draw {col}", fontsize=7)
            if col == 0:
                ax.set_ylabel(splits.classes[int(batch.labels[row])], fontsize=7)
    fig.suptitle(f"{cfg.name}: " + " -> ".join(cfg.augment.pipeline), fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out)
    plt.close(fig)
    return out


def trained_session(run_dir: Path, splits: Splits):
    """The network a finished (or interrupted) run directory's checkpoint holds, in eval mode; the
    checkpoint is read with weights_only and must carry the config hash of the run's config.toml."""
    from cifarlab.runs import RunDir
    from cifarlab.train import build_session
    run = RunDir(run_dir)
    config_path = run.path / "config.toml"
    if not config_path.exists() or not run.checkpoint_path.exists():
        raise UserError(f"{run.path} is not a run directory with a checkpoint (config.toml and checkpoint.pt); "
                        "give the directory of a run `cifarlab run` or `study run` trained")
    cfg = C.load_resolved(config_path)
    state = run.load_checkpoint(C.config_hash(cfg), cfg.train.seed, cfg)
    session = build_session(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu")), splits)
    try:
        session.model.load_state_dict(state["model"])
        if session.ema is not None:  # the network the run evaluated and tested: its averaged weights
            session.ema.load_state_dict(state["ema"])
            session.model = session.ema.module
    except (RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint {run.checkpoint_path} does not fit its config ({str(e).splitlines()[0]})") from None
    session.model.eval()
    return cfg, session


def encoder_features(model: torch.nn.Module, images: torch.Tensor, prep, batch: int = 500) -> torch.Tensor:
    """`features(x)` of a network (for SupCon: its encoder's), in fp32, in batches."""
    encoder = getattr(model, "encoder", model)
    if not hasattr(encoder, "features"):
        raise UserError("this network exposes no features(x); every registered model does")
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(encoder.features(prep(images[i:i + batch])).float())
    return torch.cat(out)


def pca_2d(features: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The first two principal components of the (centred) features, and the share of the variance
    they explain."""
    centred = features - features.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T, float((s[:2] ** 2).sum() / (s ** 2).sum())


def features_figure(run_dirs: list[Path], splits: Splits, out: Path, images: int = 2000) -> Path:
    """One panel per run: the test images' features projected on their first two principal
    components (PCA, computed per run), coloured by class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(images, len(splits.test))
    idx = torch.arange(len(splits.test))[:n]
    fig, axes = plt.subplots(1, len(run_dirs), figsize=(4.2 * len(run_dirs), 4.2), squeeze=False)
    for ax, run_dir in zip(axes[0], run_dirs):
        cfg, session = trained_session(run_dir, splits)
        z, share = pca_2d(encoder_features(session.model, splits.test.images[idx], session.prep))
        labels = splits.test.labels[idx].numpy()
        points = ax.scatter(z[:, 0].numpy(), z[:, 1].numpy(), c=labels, cmap="tab10" if splits.num_classes <= 10
                            else "nipy_spectral", s=4, alpha=0.7, linewidths=0)
        ax.set_title(f"{run_dir.parent.name}/{run_dir.name} ({cfg.train.method})\n"
                     f"PCA of {n} test images' features: {100 * share:.0f} % of the variance", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if splits.num_classes <= 10:
        handles = [plt.Line2D([], [], marker="o", linestyle="", color=points.cmap(points.norm(c)), label=name)
                   for c, name in enumerate(splits.classes)]
        fig.legend(handles=handles, loc="lower center", ncol=min(10, splits.num_classes), fontsize=7, frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    else:
        fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out)
    plt.close(fig)
    return out


def drawn_transition(splits: Splits) -> tuple[np.ndarray, np.ndarray]:
    """(T, counts) of the labels a run trains and chooses with (training and validation splits):
    T[i, j] the share of clean class i labelled j, counts[i] the images of clean class i."""
    parts = [s for s in (splits.train, splits.val) if s is not None]
    if all(s.clean is None for s in parts):
        raise UserError("these labels carry no noise: set data.noise and data.noise_rate (or, for Imagenette, "
                        "data.label_column = noisy_labels_1, _5, _25 or _50) to see it")
    clean = torch.cat([s.labels if s.clean is None else s.clean for s in parts]).numpy()
    noisy = torch.cat([s.labels for s in parts]).numpy()
    k = splits.num_classes
    joint = np.zeros((k, k))
    np.add.at(joint, (clean, noisy), 1)
    counts = joint.sum(axis=1)
    return np.divide(joint, counts[:, None], out=np.zeros_like(joint), where=counts[:, None] > 0), counts


def noise_text(cfg: C.ExperimentConfig, splits: Splits, drawn: tuple | None = None) -> str:
    """What the label noise of a config does: type, rate asked for and drawn, per class
    (`drawn_transition`'s (T, counts), computed here unless given)."""
    t, counts = drawn or drawn_transition(splits)
    kept = np.diag(t)
    flipped = float(((1 - kept) * counts).sum())
    asked = (f"{cfg.data.noise} noise at data.noise_rate = {cfg.data.noise_rate} (data.noise_seed = "
             f"{cfg.data.noise_seed})" if cfg.data.noise != "none" else f"the labels of column {cfg.data.label_column}")
    lines = [f"{cfg.name}: {asked}",
             f"drawn: {int(round(flipped)):,} of {int(counts.sum()):,} training and validation labels differ from "
             f"the dataset's ({100 * flipped / counts.sum():.2f} %); the test labels never change",
             f"{'class':<14} {'images':>7} {'flipped %':>9}  most often labelled instead"]
    for i, name in enumerate(splits.classes):
        if not counts[i]:
            lines.append(f"{name:<14} {0:>7} {'-':>9}  -")
            continue
        off = t[i].copy()
        off[i] = 0
        other = f"{splits.classes[int(off.argmax())]} ({100 * off.max():.1f} %)" if off.max() > 0 else "-"
        lines.append(f"{name:<14} {int(counts[i]):>7} {100 * (1 - kept[i]):>9.2f}  {other}")
    return "\n".join(lines)


def noise_figure(cfg: C.ExperimentConfig, splits: Splits, out: Path, drawn: np.ndarray | None = None) -> Path:
    """Heat maps of the transition matrix asked for (drawn noise) and the one drawn (`drawn_transition`'s,
    computed here unless given), in %."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = drawn_transition(splits)[0] if drawn is None else drawn
    maps = [("drawn (training + validation labels)", drawn)]
    if splits.noise and "transition" in splits.noise:
        maps.insert(0, (f"asked: {cfg.data.noise}, rate {cfg.data.noise_rate}", np.asarray(splits.noise["transition"])))
    k = splits.num_classes
    side = min(0.45 * k, 9.0)   # CIFAR-100's 100 classes: the same 9 inches, cells unlabelled
    fig, axes = plt.subplots(1, len(maps), figsize=(side * len(maps) + 2, side + 1.5), squeeze=False)
    for ax, (title, t) in zip(axes[0], maps):
        ax.imshow(100 * t, cmap="Blues", vmin=0, vmax=100)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if t[i, j] >= 0.0005:
                        ax.text(j, i, f"{100 * t[i, j]:.0f}" if t[i, j] >= 0.01 else "<1", ha="center", va="center",
                                fontsize=6, color="white" if t[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), splits.classes if k <= 20 else [], rotation=90, fontsize=6)
        ax.set_yticks(range(k), splits.classes if k <= 20 else [], fontsize=6)
        ax.set_xlabel("label given (noisy)")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"{cfg.name}: P(label | class), %", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out)
    plt.close(fig)
    return out
