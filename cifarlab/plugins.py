"""Plug-ins: a user's module registers models, losses, augmentations and training methods in the
same registries the package's own use, without editing the package (docs/EXTENDING.md).

A plug-in is any importable module, named in an experiment (`plugins = ["mylab.models"]`, a
top-level key) or on the command line (`--plugin mylab.models`); it is imported before the config
is resolved, so its names are valid values of `model.name`, `loss.name`, `augment.pipeline`,
`train.method` and `data.dataset`. Its own settings go in `model.options` / `loss.options` (a TOML
table), which the config hash covers like any other key.

    from cifarlab.plugins import register_model, register_loss

    @register_model("tiny_mlp", "a two-layer MLP", dense=(64,))
    def tiny_mlp(cfg, num_classes, image_size):       # cfg: the resolved [model] keys
        ...                                            # an nn.Module: float N x 3 x S x S -> logits

    @register_loss("hinge", option_names=("margin",))
    def hinge(cfg, num_classes):                       # cfg: the [loss] keys; cfg.options: its own
        return lambda logits, batch: ...               # (logits, Batch) -> scalar loss
"""

from __future__ import annotations

from typing import Callable

from cifarlab.augment.pipeline import register as _register_augmentation
from cifarlab.data.datasets import DATASETS, Dataset
from cifarlab.losses import LOSSES
from cifarlab.methods import Pretraining, method, one_view
from cifarlab.models import preset

__all__ = ["register_model", "register_loss", "register_augmentation", "register_method", "register_dataset"]


def register_model(name: str, doc: str = "", *, option_names: tuple[str, ...] | None = None, **keys) -> Callable:
    """Decorator: `build(cfg: ModelConfig, num_classes, image_size) -> nn.Module` becomes model `name`;
    `keys` are [model] keys it sets by default (as a preset's; the experiment's own keys override
    them); `option_names`: the keys of `model.options` it reads (another, a typo, is refused in one
    line; None accepts any). For `train.method = "supcon"` the module also needs `features(x)` and
    `feature_dim`."""
    def add(build: Callable) -> Callable:
        preset(name, doc or (build.__doc__ or name).strip().splitlines()[0], build=build, origin=build.__module__,
               option_names=option_names, **keys)
        return build
    return add


def register_loss(name: str, *, option_names: tuple[str, ...] | None = None) -> Callable:
    """Decorator: `build(cfg: LossConfig, num_classes) -> loss(logits, batch)` becomes loss `name`. A
    builder that also takes `num_samples` is given the training split's size and keeps per-sample
    state (`cifarlab.losses.EarlyLearningRegularized`): runs on several processes refuse it.
    `option_names`: the keys of `loss.options` it reads; a config that gives it another (a typo) is
    refused in one line, a study's grid over one included (None accepts any). Its docstring's first
    line is its description in `cifarlab list losses`."""
    return lambda build: LOSSES.register(name, build.__module__, option_names=option_names)(build)


def register_augmentation(name: str, doc: str = "", mixes: bool = False, per_epoch: bool = False) -> Callable:
    """Decorator: `build(cfg: AugmentConfig, image_size, num_classes) -> step(batch, generator)`
    becomes augmentation `name` (an entry of augment.pipeline)."""
    return _register_augmentation(name, doc or name, mixes, per_epoch, plugin=True)


def register_method(name: str, networks: int = 1, views: Callable | None = None,
                    pretraining: Pretraining | None = None, *, label: str = "", keys: tuple[str, ...] = (),
                    check: Callable | None = None, splits: bool = False, legend: Callable | None = None) -> Callable:
    """Decorator: `step(session, views, epoch) -> (loss, logits, labels)` becomes train.method `name`
    (see `cifarlab.methods.standard` for the contract; `cifarlab.methods.coteaching` for one with
    `networks=2`: the session then holds `peer` and `peer_opt`). `views(session, epoch)`: augmented
    views of each image the step takes (default one). `pretraining`: a method of two phases
    (`cifarlab.methods.Pretraining`; `cifarlab.methods.SUPCON` is the example). `keys`: dotted config
    keys only this method reads (another method's config must leave them at their defaults); `check(cfg)`:
    its own config rules, raising `cifarlab.errors.ConfigError` in one line; `label`: its name in prose;
    `splits`: its step is correct on each process's share of a batch with the gradients averaged
    (`cifarlab.methods.update` averages them), so it may train on several processes (default: refused
    there); `legend(cfg, noise_rate)`: its settings in a noise figure's legend ("" for none)."""
    return method(name, networks, views or one_view, pretraining, label, keys, check, splits, legend, plugin=True)


def register_dataset(name: str, doc: str = "", *, train_images: int, classes: int, side: int = 32,
                     coarse_classes: int = 0) -> Callable:
    """Decorator: `load(root: Path, image_size: int) -> cifarlab.data.arrays.Arrays` becomes
    data.dataset `name`: uint8 N x S x S x 3 RGB images and int64 labels of its training and test
    sets (`root`: the data root, --data-dir / $CIFARLAB_DATA; `image_size`: data.image_size, 0 for
    the dataset's own side; at another size it returns images of that side, or raises a DataError
    if it cannot: plans count FLOPs at that side). `train_images` (before the validation split),
    `classes` and `side` (the image side at image_size 0) are what a plan needs before any image is
    read: FLOPs, `cifarlab show`, `study status`. `coarse_classes` > 0: the dataset has superclasses
    (data.labels = 'coarse'); its Arrays then carry `train_coarse_labels`, `test_coarse_labels` and
    `coarse_classes` (their names)."""
    def add(load: Callable) -> Callable:
        text = doc or (load.__doc__ or name).strip().splitlines()[0]
        DATASETS.register(name, load.__module__)(Dataset(
            text, lambda root, size, column, download, progress: load(root, size),
            lambda root: f"{name}: a plug-in dataset ({text})",
            train_images=train_images, classes=classes, side=side, coarse_classes=coarse_classes))
        return load
    return add
