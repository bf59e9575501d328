"""TensorBoard event files of a run (`train.tensorboard = true`): the scalars metrics.jsonl already
holds, one event file set per run directory, so `tensorboard --logdir runs/` shows a study's runs
side by side (each named by its path: study/variant/seed-hash).

Scalars, each at its epoch: loss/{train,val}, accuracy/{train,val} (and val_top5, val_clean and the
memorisation pair flipped_noisy / flipped_clean under label noise), lr, images_per_s. A resumed
run drops the events of epochs after its checkpoint (they are trained again), like metrics.jsonl.
"""

from __future__ import annotations

from pathlib import Path

from cifarlab.errors import UserError

INSTALL = 'pip install -e ".[tensorboard]"'

# metrics.jsonl key -> TensorBoard tag
TAGS = {
    "train_loss": "loss/train", "val_loss": "loss/val",
    "train_acc": "accuracy/train", "val_acc": "accuracy/val", "val_top5": "accuracy/val_top5",
    "val_acc_clean": "accuracy/val_clean", "flipped_acc_noisy": "memorisation/flipped_noisy",
    "flipped_acc_clean": "memorisation/flipped_clean",
    "lr": "lr", "images_per_s": "speed/images_per_s",
}


def check_available() -> None:
    """One line naming the install command when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(f"train.tensorboard = true needs the tensorboard package, which is not installed: "
                        f"{INSTALL}") from None


class EventLog:
    def __init__(self, folder: Path, first_epoch: int):
        check_available()
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: a resumed run's events from epoch `first_epoch` on are superseded
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=first_epoch if first_epoch > 1 else None)

    def epoch(self, row: dict) -> None:
        for key, tag in TAGS.items():
            value = row.get(key)
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
