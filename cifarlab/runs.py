"""A run directory: resolved config, per-epoch metrics, final metrics, checkpoint.

    runs/<name>/seed<k>/
        config.toml      the fully resolved experiment (loadable with `cifarlab run`)
        metrics.jsonl    one JSON object per finished epoch
        final.json       validation/test accuracy, per-class test accuracy, timings, provenance
        checkpoint.pt    model + optimizer state at the last finished epoch (+ checkpoint.pt.sha256)
        best.pt          the best-validation epoch's weights, under train.select = best_val (+ best.pt.sha256)
        model.pt         the tested weights, resolved config, normalisation statistics, class
                         names and image size (+ model.pt.sha256): what `cifarlab predict` reads

Every file is written to a temporary name and renamed into place, so a killed
process leaves either the old or the new file, never half of one; every torch file is checked
against its SHA-256 before it is read, and read with weights_only.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifarlab import config as C
from cifarlab.errors import UserError


MODEL_FILE = "model.pt"   # a finished run's tested weights and what prediction needs (train.save_model)


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_writable(folder: Path, option: str) -> list[Path]:
    """Make `folder` (and its parents) and write and remove a probe file in it, or raise one line
    naming the folder and the option that chose it, before any work is done or recorded. Returns
    the folders it made, outermost first (`remove_made` takes them back if the work cannot start)."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".cifarlab-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        remove_made(made)
        raise UserError(f"cannot write to {folder} ({e.strerror or e}); choose a writable folder with {option}") from None
    return made


def remove_made(made: list[Path]) -> None:
    """Remove the folders `ensure_writable` made, innermost first, where they are still empty: a run
    refused after them (its data missing) leaves nothing behind."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:   # something was written there meanwhile: it stays
            return


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def for_config(cls, cfg: C.ExperimentConfig, root: str | Path = "runs") -> "RunDir":
        return cls(Path(root) / cfg.name / f"seed{cfg.train.seed}")

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.pt"

    def write_config(self, cfg: C.ExperimentConfig) -> None:
        atomic_write(self.path / "config.toml", C.to_toml(cfg).encode())

    def write_metrics(self, history: list[dict]) -> None:
        atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())

    def read_metrics(self) -> list[dict]:
        p = self.path / "metrics.jsonl"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def write_final(self, final: dict) -> None:
        atomic_write(self.path / "final.json", (json.dumps(final, indent=2) + "\n").encode())

    def read_final(self) -> dict | None:
        p = self.path / "final.json"
        return json.loads(p.read_text()) if p.exists() else None

    def finished(self, cfg: C.ExperimentConfig) -> dict | None:
        """final.json where this directory holds a finished run of `cfg` (its settings and seed), the
        epochs it records being the ones trained since (a run started over in the directory and
        interrupted leaves an older final.json: not finished); None otherwise."""
        final = self.read_final()
        if final is None or (final.get("config_hash"), final.get("seed")) != (C.config_hash(cfg), cfg.train.seed):
            return None
        return final if self.complete(final) else None

    def complete(self, final: dict) -> bool:
        """Whether `final` (this directory's final.json) records the epochs trained here since: a run
        started over in the directory and interrupted leaves an older final.json."""
        return len(self.read_metrics()) == final.get("epochs")

    @property
    def best_path(self) -> Path:
        return self.path / "best.pt"

    def save_best(self, weights: dict[str, Any], epoch: int) -> None:
        """The weights of the epoch with the best validation accuracy so far (train.select = best_val)."""
        save_checked(self.best_path, {"model": weights, "epoch": epoch})

    def load_best(self) -> dict[str, Any]:
        return load_checked(self.best_path, "delete the run to start it over")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        save_checked(self.checkpoint_path, state)

    def load_checkpoint(self, config_hash: str, seed: int,
                        cfg: C.ExperimentConfig | None = None) -> dict[str, Any] | None:
        """The saved state, or None if there is none; refuses a checkpoint of other settings, and one
        that no longer matches its checksum or is unreadable (`load_checked`)."""
        if not self.checkpoint_path.exists():
            return None
        state = load_checked(self.checkpoint_path, "delete it to start the run over", "checkpoint ")
        if state.get("config_hash") != config_hash or state.get("seed") != seed:
            other = self.differences(cfg)
            raise UserError(f"checkpoint {self.checkpoint_path} belongs to different settings{other}; use another "
                            "run directory (--out; in Python out=) or delete the old run" + (
                                " (to train a finished run longer, start a new run with the new train.epochs: "
                                "the schedule depends on the total length)" if "train.epochs:" in other else ""))
        return state

    def held(self, cfg: C.ExperimentConfig, resume: str, elsewhere: str) -> UserError:
        """The error for training `cfg` into a directory that holds a run without resuming it, in the
        caller's words: `resume` how to continue it (`--resume`, `resume=True`), `elsewhere` how to
        give a run its own directory (`--out DIR, or --set name=NAME`; `out=...`)."""
        other = self.differences(cfg)
        if other:   # settings changed since: resuming would be refused too
            return UserError(f"{self.path} already holds a run of other settings{other}; give this one its own "
                             f"directory ({elsewhere})")
        return UserError(f"{self.path} already holds a run; {resume} to continue it, or {elsewhere} for a new one")

    def differences(self, cfg: C.ExperimentConfig | None) -> str:
        """' (keys: a: old -> new, ...)' between the run's config.toml and `cfg`, or ''."""
        if cfg is None or not (self.path / "config.toml").exists():
            return ""
        try:
            old = C.load_resolved(self.path / "config.toml")
        except UserError:
            return ""
        changed = [f"{k}: {C.toml_value(a)} -> {C.toml_value(b)}" for k, (a, b) in C.diff(old, cfg).items()
                   if (tuple(k.split(".")) not in C.NOT_HASHED) or k == "train.seed"]
        return f" ({', '.join(changed)})" if changed else ""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checked(path: Path, state: dict[str, Any]) -> None:
    """`state` as a torch file written atomically, with `<file>.sha256` beside it listing the new
    file's SHA-256 and the file's it replaces, written first: a process killed between the two writes
    leaves the old file, still listed, so a checkpoint written each epoch is never refused for it."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    check = path.with_name(path.name + ".sha256")
    keep = []
    if path.exists() and check.exists():   # the file now there, if it verifies: the kill window's fallback
        now = sha256_of(path.read_bytes())
        keep = [now] if now in check.read_text().split() else []
    atomic_write(check, ("\n".join([sha256_of(data)] + keep) + "\n").encode())
    atomic_write(path, data)


def load_checked(path: Path, remedy: str, what: str = "") -> dict[str, Any]:
    """A file `save_checked` wrote, verified before it is unpickled (its SHA-256 must be one
    `<file>.sha256` lists) and read as tensors and plain containers only (weights_only); one line
    otherwise, ending with `remedy`. A file without the checksum file (written by a cifarlab from
    before 2026-12-06, which kept none beside checkpoints) is read with weights_only alone, with a warning."""
    check = path.with_name(path.name + ".sha256")
    try:
        data = path.read_bytes()
        sums = check.read_text().split() if check.exists() else None
    except OSError as e:
        raise UserError(f"{what}{path} is unreadable ({e.strerror or e}); {remedy}") from None
    if sums is None:
        print(f"cifarlab: warning: {what}{path} has no {check.name} (written before checkpoints kept a checksum): "
              "read as tensors only (weights_only), unverified", file=sys.stderr)
    elif sha256_of(data) not in sums:
        raise UserError(f"{what}{path} does not match its checksum in {check.name}: it changed after the run wrote "
                        f"it; {remedy}")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (any unreadable file is the same user problem)
        raise UserError(f"{what}{path} is unreadable ({type(e).__name__}); {remedy}") from None


def save_verified(path: Path, state: dict[str, Any]) -> None:
    """`state` as a torch file with its SHA-256 beside it (`<file>.sha256`), both written atomically,
    the checksum last: a reader finds a matching pair or none."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write(path, data)
    atomic_write(path.with_name(path.name + ".sha256"), (sha256_of(data) + "\n").encode())


def load_verified(path: Path) -> dict[str, Any] | None:
    """The state `save_verified` wrote, or None when the file is missing, its checksum is missing or
    differs (never unpickled then), or it does not load as plain tensors and containers."""
    check = path.with_name(path.name + ".sha256")
    try:
        data, want = path.read_bytes(), check.read_text().strip()
    except OSError:
        return None
    if sha256_of(data) != want:
        return None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (a file that verifies but does not load is treated as absent)
        return None
