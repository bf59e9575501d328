"""Dataset registry: `data.dataset` -> how to find, fetch and read it into `Arrays`.

Each entry is a source module's loader and its one-line description for `cifarlab data list`:
CIFAR-10 and CIFAR-100 from `sources` (npz, lossless pack, official folder or archive), Imagenette
from `imagefolder` (JPEG folders decoded once into a cache). A new dataset is a new entry here, or
a plug-in's `cifarlab.plugins.register_dataset`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cifarlab.data import imagefolder, sources
from cifarlab.data.arrays import Arrays
from cifarlab.data.fetch import resolve_data_dir
from cifarlab.registry import Registry


@dataclass(frozen=True)
class Dataset:
    doc: str
    # (data root, image side (0: the dataset's own), label column, download?, progress?) -> the arrays
    load: Callable[[Path, int, str, bool, bool], Arrays]
    describe: Callable[[Path], str]   # where it was found under the data root, its sizes and classes
    # what a plan needs before any image is read (FLOPs, parameters, `study status`):
    train_images: int = 0   # training images before the validation split (0: unknown; a plan then needs data.subset)
    classes: int = 0        # 0: unknown (a plan refuses it)
    side: int = 32          # the image side at data.image_size = 0
    coarse_classes: int = 0  # classes at data.labels = 'coarse' (0: the dataset has no superclasses)

    def num_classes(self, labels: str = "fine") -> int:
        return self.coarse_classes if labels == "coarse" and self.coarse_classes else self.classes


DATASETS: Registry = Registry("dataset")


def _cifar(name: str, doc: str, classes: int, coarse: int = 0) -> None:
    DATASETS.register(name)(Dataset(
        doc, lambda root, size, column, download, progress: sources.load_cifar(name, root, download=download,
                                                                              progress=progress),
        lambda root: sources.describe_cifar(name, root), train_images=50000, classes=classes, coarse_classes=coarse))


_cifar("cifar10", "CIFAR-10: 50,000 training and 10,000 test images of 32 px, 10 classes", 10)
_cifar("cifar100", "CIFAR-100: 50,000 training and 10,000 test images of 32 px, 100 classes (20 superclasses "
       "with data.labels = 'coarse')", 100, coarse=20)
DATASETS.register("imagenette")(Dataset(
    "Imagenette (imagenette2-160): 9,469 training and 3,925 test JPEGs of 10 ImageNet classes, decoded at "
    "data.image_size px; noisy label columns (data.label_column)",
    lambda root, size, column, download, progress: imagefolder.load(root, size or 64, column, download=download,
                                                                    progress=progress),
    imagefolder.describe, train_images=9469, classes=10, side=64))


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = True,
                 progress: bool = True, image_size: int = 0, label_column: str = "noisy_labels_0") -> Arrays:
    """The arrays of dataset `name` from the data root (`data_dir`, else $CIFARLAB_DATA, else ./data);
    `image_size` and `label_column` are Imagenette's (0: 64 px)."""
    return DATASETS.get(name).load(resolve_data_dir(data_dir), image_size, label_column, download, progress)


def describe(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """One line for `cifarlab data list` (decodes no pack and no JPEG)."""
    return DATASETS.get(name).describe(resolve_data_dir(data_dir))
