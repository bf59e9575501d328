"""What one training step consumes: a `Batch` of uint8 images, their labels, their indices in the
training split, and (after MixUp or CutMix) soft targets.

Transforms are `(Batch, generator) -> Batch`. Pixel transforms change `images` only; mixing
transforms also set `targets`, a (N, classes) float tensor whose rows sum to 1. `index` finds each
sample's row in the training split, whatever the order of the epoch: label-noise metrics (the clean
label of a flipped sample) and per-sample methods use it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Batch:
    images: torch.Tensor                  # uint8 (N, C, H, W), channels-last memory
    labels: torch.Tensor                  # int64 (N,): the labels as given (noisy ones, under label noise)
    index: torch.Tensor                   # int64 (N,): positions in the split the batch was drawn from
    targets: torch.Tensor | None = None   # float (N, classes), rows summing to 1; None: one-hot of labels

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: torch.Tensor) -> "Batch":
        """The samples at positions `idx` of this batch."""
        return Batch(self.images[idx], self.labels[idx], self.index[idx],
                     None if self.targets is None else self.targets[idx])

    def with_images(self, images: torch.Tensor) -> "Batch":
        return replace(self, images=images)

    def soft_targets(self, num_classes: int) -> torch.Tensor:
        """The targets as probabilities: the mixed ones, else the labels one-hot."""
        if self.targets is not None:
            return self.targets
        return torch.nn.functional.one_hot(self.labels, num_classes).float()

    @property
    def dominant(self) -> torch.Tensor:
        """The label that weighs most in each target (the label itself when nothing was mixed):
        what training accuracy is measured against under MixUp and CutMix."""
        return self.labels if self.targets is None else self.targets.argmax(1)
