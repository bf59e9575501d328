"""Evaluation: loss, accuracy and per-class accuracy of a model on a split."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.schema import TrainConfig
from cifarlab.data.loader import Split
from cifarlab.runtime import Runtime


class Preprocess:
    """uint8 images -> float model input: [0,1] scaling or per-channel standardisation."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], standard: bool, rt: Runtime):
        shape = (1, len(mean), 1, 1)
        self.mean = torch.tensor(mean if standard else (0.0,) * len(mean), device=rt.device).view(shape)
        self.scale = 1 / torch.tensor(std if standard else (255.0,) * len(std), device=rt.device).view(shape)
        self.channels_last = rt.channels_last

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) * self.scale
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`x` moved by (dy, dx) pixels (|dy|, |dx| <= 1); the uncovered border reflects the image."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def predict(model: nn.Module, x: torch.Tensor, tta: str) -> torch.Tensor:
    """Logits under the test-time augmentation `tta`: none (the image alone), flip (the mean of the
    image's and its mirror's logits, 2 passes) or flip-translate (the mean over the image and its
    mirror, each as it is and shifted 1 px down-right and up-left with reflected borders, 6 passes;
    airbench's translate TTA, there weighted, here a plain mean)."""
    if tta == "none":
        return model(x).float()
    views = [x, x.flip(3)]
    if tta == "flip-translate":
        views += [shift(v, d, d) for v in views[:2] for d in (1, -1)]
    return sum(model(v).float() for v in views) / len(views)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, prep: Preprocess, rt: Runtime, cfg: TrainConfig,
             num_classes: int) -> dict:
    """{"loss", "acc", "top5", "per_class_acc"} over the whole split, in eval mode; top5: the
    fraction whose label is among the 5 highest logits (all of them when there are fewer classes).
    A split with clean labels beside its noisy ones (`split.clean`) adds "acc_clean", the accuracy
    against those, from the same forward passes."""
    was_training = model.training
    model.eval()
    # every sum stays on the device and is read once, after the loop (no per-batch synchronisation);
    # the loss sums in float64, as Python floats of each batch's loss did
    loss_sum = torch.zeros((), dtype=torch.float64, device=rt.device)
    correct = torch.zeros(num_classes, dtype=torch.long, device=rt.device)
    top5, correct_clean = (torch.zeros((), dtype=torch.long, device=rt.device) for _ in range(2))
    clean = split.clean.split(cfg.eval_batch_size) if split.clean is not None else None
    for i, batch in enumerate(split.batches(cfg.eval_batch_size)):
        with rt.autocast():
            logits = predict(model, prep(batch.images.to(rt.device, non_blocking=True)), cfg.tta)
        labels = batch.labels.to(rt.device)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        guess = logits.argmax(1)
        hits = guess == labels
        correct += torch.bincount(labels[hits], minlength=num_classes)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top5 += (top == labels[:, None]).any(1).sum()
        if clean is not None:
            correct_clean += (guess == clean[i].to(rt.device)).sum()
    model.train(was_training)
    correct = correct.cpu()
    totals = torch.bincount(split.labels, minlength=num_classes).clamp(min=1)
    out = {
        "loss": loss_sum.item() / len(split),
        "acc": correct.sum().item() / len(split),
        "top5": top5.item() / len(split),
        "per_class_acc": (correct / totals).tolist(),
    }
    if clean is not None:
        out["acc_clean"] = correct_clean.item() / len(split)
    return out
