"""What a study's processes share between runs: each dataset loaded and split once, and where each
run's directory lies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cifarlab import config as C
from cifarlab.results.store import RunKey


class DataCache:
    """Load each dataset once and split it once per data config, for all runs of a process."""

    def __init__(self, data_dir: str | None, download: bool, progress: bool):
        self.data_dir, self.download, self.progress = data_dir, download, progress
        self.arrays: dict[str, Any] = {}
        self.splits: dict[C.DataConfig, Any] = {}

    def get(self, cfg: C.DataConfig) -> Any:
        from cifarlab.data import load_dataset
        from cifarlab.data.loader import make_splits
        source = (cfg.dataset, cfg.image_size, cfg.label_column)
        if source not in self.arrays:
            self.arrays[source] = load_dataset(cfg.dataset, self.data_dir, download=self.download,
                                               progress=self.progress, image_size=cfg.image_size,
                                               label_column=cfg.label_column)
        if cfg not in self.splits:
            self.splits[cfg] = make_splits(self.arrays[source], cfg)
        return self.splits[cfg]


def run_dir_for(runs_root: Path, key: RunKey) -> Path:
    return runs_root / key.study / key.experiment / f"seed{key.seed}-{key.config_hash}"


def resume_dir(claimed_before: str | None, run_dir: Path) -> Path | None:
    """Where an interrupted claim of this run left its checkpoint, when that is not `run_dir` (an
    earlier `study run` under another --runs-dir) and `run_dir` holds none: the run resumes there
    rather than start again. `claimed_before`: the directory the database recorded at that claim."""
    if not claimed_before:
        return None
    from cifarlab.runs import RunDir
    earlier = Path(claimed_before)
    if earlier.resolve() == run_dir.resolve() or RunDir(run_dir).checkpoint_path.is_file():
        return None
    return earlier if RunDir(earlier).checkpoint_path.is_file() else None
