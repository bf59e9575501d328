"""Dataset sources: locate, download, verify and parse CIFAR into numpy arrays."""

from cifarlab.data.sources import (
    DATASETS,
    KNOWN_SHA256,
    OFFICIAL,
    Arrays,
    Official,
    download,
    load_dataset,
    load_npz,
    load_official,
    resolve_data_dir,
    verify_and_extract,
)

__all__ = [
    "DATASETS",
    "KNOWN_SHA256",
    "OFFICIAL",
    "Arrays",
    "Official",
    "download",
    "load_dataset",
    "load_npz",
    "load_official",
    "resolve_data_dir",
    "verify_and_extract",
]
