"""Batched data augmentation on the training device, per-image random parameters.

`augment.pipeline` lists the augmentations in the order they run; each is a registry entry
`(AugmentConfig, image_size) -> Step`, a step being `(Batch, generator) -> Batch`. Pixel steps
(`image.py`, `photometric.py`, `erase.py`) work on the uint8 images (a quarter of float32's memory
traffic) and return uint8; mixing steps (`mix.py`) also set the batch's soft targets. Every random
draw comes from the epoch's generator, so a resumed run draws what a straight one would.

    cifarlab list augmentations
    cifarlab show augment EXPERIMENT.toml --out grid.png    # what a pipeline does to a few images
"""

from cifarlab.augment.pipeline import AUGMENTS, Entry, Pipeline, Step, build_pipeline, register, uniform
from cifarlab.augment import erase, image, mix, photometric  # noqa: F401  (register their entries)

__all__ = ["AUGMENTS", "Entry", "Pipeline", "Step", "build_pipeline", "register", "uniform"]
