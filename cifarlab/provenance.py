"""Where a result came from: code version, libraries, machine."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import cifarlab


@functools.cache
def git_state(cwd: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout holding this package, or (None, None) outside git.

    Cached: read once per process, when its first run starts, because the modules a
    process runs are the ones it imported then, whatever the checkout holds later.
    """
    where = cwd or Path(cifarlab.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def plugin_hashes(modules: tuple[str, ...]) -> dict[str, str | None]:
    """SHA-256 (first 16 hex digits) of each imported plug-in module's source file as it is when the
    run starts (a notebook's edit not yet reloaded counts as the new file): the config hash leaves
    plug-ins out, so this is what says which code a run trained with (None for a module without a
    file, a namespace package say)."""
    import hashlib
    out: dict[str, str | None] = {}
    for name in modules:
        path = getattr(sys.modules.get(name), "__file__", None)
        out[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path and Path(path).is_file() else None
    return out


def provenance(machine: str, plugins: tuple[str, ...] = ()) -> dict:
    """Code version, libraries, machine; with `plugins`, their source files' hashes (`plugin_hashes`)."""
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "cifarlab": cifarlab.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": machine,
        **({"plugins": plugin_hashes(plugins)} if plugins else {}),
    }
