"""TensorBoard event files of a run (`train.tensorboard = true`): the scalars metrics.jsonl already
holds, one event file set per run directory, so `tensorboard --logdir runs/` shows a study's runs
side by side (each named by its path: study/variant/seed-hash).

Scalars, each at its epoch: loss/{train,val}, accuracy/{train,val} (and val_top5, val_clean and the
memorisation pair flipped_noisy / flipped_clean under label noise), lr, images_per_s. A resumed
run writes its recorded epochs again over its earlier events (epochs after its checkpoint are
trained again, as in metrics.jsonl), and a finished run resumed with tensorboard turned on writes
them without training (`copy_record` in cifarlab.train).
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
    def __init__(self, folder: Path, recorded: list[dict]):
        """`recorded`: the epochs metrics.jsonl already holds (a resumed or finished run). Every event
        written earlier in the folder is superseded (purge_step 1: a run started over there included)
        and these are written again, so the events hold exactly metrics.jsonl's epochs, however often
        the run was resumed or tensorboard turned on."""
        check_available()
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=1)
        for row in recorded:
            self.epoch(row)

    def epoch(self, row: dict) -> None:
        for key, tag in TAGS.items():
            value = row.get(key)
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
