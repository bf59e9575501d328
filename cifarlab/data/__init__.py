"""Datasets: locate, download, verify and parse them into numpy arrays (`datasets` is the registry
of `data.dataset` names; `sources` reads CIFAR, `imagefolder` Imagenette), then split, corrupt and
batch them (`split`, `noise`, `loader`, `batch`)."""

from cifarlab.data.arrays import Arrays
from cifarlab.data.datasets import DATASETS, describe, load_dataset
from cifarlab.data.fetch import download, resolve_data_dir
from cifarlab.data.sources import (
    KNOWN_SHA256,
    OFFICIAL,
    Official,
    load_npz,
    load_official,
    verify_and_extract,
)

__all__ = [
    "DATASETS",
    "KNOWN_SHA256",
    "OFFICIAL",
    "Arrays",
    "Official",
    "describe",
    "download",
    "load_dataset",
    "load_npz",
    "load_official",
    "resolve_data_dir",
    "verify_and_extract",
]
