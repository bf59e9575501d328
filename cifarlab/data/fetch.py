"""Fetch and verify dataset archives: an atomic download with a progress bar, an MD5 check (and a
pinned SHA-256 where one is known), and a safe extraction (no member may land outside its folder).
Shared by every dataset that comes as an official archive (`sources` for CIFAR, `imagefolder` for
Imagenette)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from cifarlab.errors import DataError

log = logging.getLogger(__name__)


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data root: `data_dir` if given, else $CIFARLAB_DATA, else ./data."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get("CIFARLAB_DATA") or "data"
    return Path(data_dir).expanduser().absolute()


def try_download(url: str, archive: Path, progress: bool) -> str:
    """Download the archive; return why it failed ("" on success)."""
    try:
        download(url, archive, progress=progress)
    except DataError as exc:
        return str(exc)
    return ""


def download(url: str, dest: Path, *, progress: bool = True) -> Path:
    """Fetch `url` to `dest` atomically (via `<dest>.part`), with a progress bar."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=60) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=not progress) as bar:
                got = _copy(resp, out, bar)
        if total is not None and got != total:
            raise OSError(f"got {got} of {total} bytes")
        os.replace(part, dest)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise DataError(f"download from {url} failed ({one_line(exc)})") from exc
    finally:
        # Never leave a half-written file that a later run could mistake for data.
        part.unlink(missing_ok=True)
    return dest


def _copy(src, out, bar) -> int:
    got = 0
    while chunk := src.read(1 << 20):
        out.write(chunk)
        got += len(chunk)
        bar.update(len(chunk))
    return got


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def file_digests(path: Path, *algorithms: str) -> tuple[str, ...]:
    """The hex digests of a file's bytes, one per hashlib algorithm name, in one read."""
    digests = [hashlib.new(name) for name in algorithms]
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for digest in digests:
                digest.update(chunk)
    return tuple(digest.hexdigest() for digest in digests)


def extract_verified(archive: Path, md5_expected: str, url: str, folder: str, dest: Path,
                     pinned: str | None = None, hint: str = "") -> Path:
    """Check `archive`'s MD5 (and a pinned SHA-256), extract it safely into dest/folder (aside, then
    renamed, so an interrupted run leaves no half folder), return that folder."""
    md5, sha = file_digests(archive, "md5", "sha256")
    redo = f"delete it and re-run to download it again, or replace it with the file from {url}"
    if md5 != md5_expected:
        raise DataError(f"{archive} failed verification: expected md5 {md5_expected}, got {md5}; {redo}")
    if pinned and sha != pinned:
        raise DataError(f"{archive} failed verification: expected sha256 {pinned}, got {sha}; {redo}")
    log.info("verified %s: md5 %s, sha256 %s", archive, md5, sha)
    _record_sha256(archive, sha)
    target = dest / folder
    if target.exists():
        raise DataError(f"{target} already exists; delete it to extract {archive} again" + (f", {hint}" if hint else ""))
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=dest))
    try:
        _safe_extract(archive, tmp, redo)
        if not (tmp / folder).is_dir():
            raise DataError(f"{archive} has no {folder}/ folder inside; {redo}")
        os.replace(tmp / folder, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _record_sha256(archive: Path, sha: str) -> None:
    try:
        archive.with_name(archive.name + ".sha256").write_text(f"{sha}  {archive.name}\n")
    except OSError as exc:
        log.warning("could not record sha256 next to %s (%s)", archive, one_line(exc))


def _safe_extract(archive: Path, dest: Path, redo: str) -> None:
    base = dest.resolve()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                where = (base / member.name).resolve()
                if where != base and base not in where.parents:
                    raise DataError(f"refusing to extract {member.name!r} from {archive}: "
                                    f"it points outside {dest}; {redo}")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive} is corrupt or truncated ({one_line(exc)}); {redo}") from exc
