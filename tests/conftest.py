"""Shared fixtures: a tiny, learnable synthetic CIFAR-shaped dataset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# A local Ray instance starts its workers at nice 15: beside another xdist worker's tests they would
# train on what that worker leaves of the cores, and the Ray tests would take many times as long.
os.environ.setdefault("RAY_worker_niceness", "0")


def cli_env(**extra: str) -> dict:
    """Environment for `python -m cifarlab.cli` subprocesses: this checkout's package first."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def cli_command(*args) -> list[str]:
    return [sys.executable, "-m", "cifarlab.cli", *map(str, args)]

CLASSES = tuple(f"class{i}" for i in range(10))


def finished_metrics(**fields) -> dict:
    """What a finished run records (store.finish's `final`), with placeholder provenance and ten
    placeholder class names: tests that mark runs done without training pass the fields they read
    (val_acc, test_acc, wall_seconds...); a field no finished run records is a mistake, refused."""
    from cifarlab.results.store import RUN_METRICS
    final = {"git_commit": "x", "git_dirty": False, "python": "3", "torch": "t", "numpy": "n", "cifarlab": "c",
             "platform": "p", "machine": "m", "wall_seconds": 1.0, "images_per_s": 1.0, "val_acc": 0.5,
             "val_loss": 1.0, "test_acc": None, "test_loss": 1.0, "per_class_test_acc": [],
             "classes": [f"c{i}" for i in range(10)], "runtime": "cpu", "stopped": None}
    unknown = set(fields) - set(final) - set(RUN_METRICS) - {"epochs", "train_seconds", "plugins"}   # final.json has them too
    assert not unknown, f"finished_metrics: no finished run records {sorted(unknown)}"
    return {**final, **fields}


def synthetic_arrays(n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict:
    """Images whose mean colour depends on the class, plus noise: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 225, size=(10, 3))

    def images(labels):
        base = palette[labels][:, None, None, :]
        noise = rng.normal(0, 25, size=(len(labels), 32, 32, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8)

    train_labels = np.arange(n_train) % 10
    test_labels = np.arange(n_test) % 10
    return {"train_images": images(train_labels), "train_labels": train_labels.astype(np.uint8),
            "test_images": images(test_labels), "test_labels": test_labels.astype(np.uint8),
            "classes": np.array(CLASSES)}


@pytest.fixture
def registries():
    """The package's registries as they were before the test: a plug-in registered in this process
    (and its module) is gone afterwards, so other tests see only the package's own entries."""
    import sys as _sys
    from cifarlab.augment import AUGMENTS
    from cifarlab.data.datasets import DATASETS
    from cifarlab.losses import LOSSES
    from cifarlab.methods import METHODS
    from cifarlab.models import MODELS
    saved = [(r, dict(r._entries), dict(r._origin), dict(r._reads)) for r in (AUGMENTS, DATASETS, LOSSES, METHODS, MODELS)]
    modules = set(_sys.modules)
    yield
    for registry, entries, origin, reads in saved:
        for table, was in ((registry._entries, entries), (registry._origin, origin), (registry._reads, reads)):
            table.clear()
            table.update(was)
    for name in set(_sys.modules) - modules:
        if name.startswith("mylab"):
            del _sys.modules[name]


@pytest.fixture
def data_root(tmp_path):
    """A data root holding cifar10/cifar10.npz with 1,000 synthetic training images."""
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    np.savez_compressed(root / "cifar10" / "cifar10.npz", **synthetic_arrays(1000, 200))
    return root


@pytest.fixture(autouse=True)
def fresh_network_timings(monkeypatch):
    """Each test starts with no network timed (`study.status.MEASURED` keeps a process's timings, as
    a `study run` worker does): one test's timing, real or faked, never stands in for another's."""
    from cifarlab.study import status
    monkeypatch.setattr(status, "MEASURED", {})


def pytest_configure(config):
    """Under pytest-xdist (the README's `-n logical`): the cores are shared between the workers, so
    each worker's torch computes on its share of them in its own process (oversubscribed threads
    spin and slow every worker); the runs a test starts as a subprocess set their own threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        import torch

        from cifarlab.study.executors import default_cpus
        torch.set_num_threads(max(1, default_cpus() // workers))
