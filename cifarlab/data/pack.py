"""The project's lossless pack format for CIFAR-sized datasets, and its verified cache.

A pack is a folder holding `manifest.json` and xz parts. The images (train then test, uint8
32x32 RGB) are stored as prediction residuals: the median edge detector of LOCO-I / JPEG-LS on
each channel, then red and blue minus green (mod 256), cut into contiguous parts of about
50 MB. The manifest records the SHA-256 of every part and of every array's bytes, the labels and
class names, and where each part starts and stops. CIFAR-10 packs to 103 MB instead of 170 MB.

Decoding takes seconds, so a pack is decoded once into an uncompressed npz cache, written only
after every array matched its SHA-256, and read from then on (each read re-checks the hashes,
so a truncated or stale cache is rebuilt, never trusted). The cache lies beside the pack when
that folder is writable, else in `$CIFARLAB_CACHE`, else `~/.cache/cifarlab`.

    cifarlab data pack cifar10.npz packs/cifar10 --parts 2
    cifarlab data unpack packs/cifar10 cifar10.npz
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cifarlab.errors import DataError

IMAGES = ("train_images", "test_images")
SMALL = ("train_labels", "test_labels", "classes")
KEYS = (*IMAGES, *SMALL)
MANIFEST = "manifest.json"
SIDE = 32


def sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's bytes (C order), as the manifest records it."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left, upper and upper-left neighbour of every pixel (0 outside the image), N C H W."""
    left, up, corner = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    left[..., :, 1:] = x[..., :, :-1]
    up[..., 1:, :] = x[..., :-1, :]
    corner[..., 1:, 1:] = x[..., :-1, :-1]
    return left, up, corner


def _med(left, up, corner):
    """Median edge detector: min/max of left and up at an edge, else the planar guess."""
    hi, lo = np.maximum(left, up), np.minimum(left, up)
    return np.where(corner >= hi, lo, np.where(corner <= lo, hi, left + up - corner))


def encode(images: np.ndarray) -> bytes:
    """uint8 N H W 3 images -> residual bytes (N 3 H W order)."""
    x = images.transpose(0, 3, 1, 2).astype(np.int16)
    residual = (x - _med(*_neighbours(x))) % 256
    residual[:, 0] = (residual[:, 0] - residual[:, 1]) % 256     # red minus green
    residual[:, 2] = (residual[:, 2] - residual[:, 1]) % 256     # blue minus green
    return residual.astype(np.uint8).tobytes()


def decode(data: bytes, count: int) -> np.ndarray:
    """Residual bytes of `count` images -> uint8 N H W 3 (the inverse of `encode`)."""
    residual = np.frombuffer(data, np.uint8).reshape(count, 3, SIDE, SIDE).astype(np.int16)
    residual[:, 0] = (residual[:, 0] + residual[:, 1]) % 256
    residual[:, 2] = (residual[:, 2] + residual[:, 1]) % 256
    x = np.zeros_like(residual)
    zero = np.zeros(residual.shape[:2], np.int16)
    for i in range(SIDE):                    # raster order: each prediction uses decoded pixels
        for j in range(SIDE):
            left = x[:, :, i, j - 1] if j else zero
            up = x[:, :, i - 1, j] if i else zero
            corner = x[:, :, i - 1, j - 1] if i and j else zero
            x[:, :, i, j] = (residual[:, :, i, j] + _med(left, up, corner)) % 256
    return x.astype(np.uint8).transpose(0, 2, 3, 1).copy()


# ----------------------------------------------------------------------------- writing

def pack(arrays: dict[str, np.ndarray], out: Path, parts: int = 2, *, log=print) -> Path:
    """Write `arrays` (the npz keys) as a pack in `out`; returns the manifest's path."""
    if parts < 1:
        raise DataError(f"--parts must be >= 1, got {parts}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"sha256": {k: sha256(arrays[k]) for k in KEYS},
                "small": {k: np.asarray(arrays[k]).tolist() for k in SMALL}, "parts": []}
    everything = np.concatenate([arrays[k] for k in IMAGES])
    bounds = np.linspace(0, len(everything), parts + 1).astype(int)
    for n, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        name = f"part{n}.xz"
        blob = lzma.compress(encode(everything[start:stop]), preset=9 | lzma.PRESET_EXTREME)
        _write_atomic(out / name, blob)
        manifest["parts"].append({"file": name, "start": int(start), "stop": int(stop),
                                  "sha256": hashlib.sha256(blob).hexdigest()})
        log(f"{out / name}: images {start}-{stop}, {len(blob):,} bytes")
    manifest["counts"] = {k: len(arrays[k]) for k in IMAGES}
    _write_atomic(out / MANIFEST, json.dumps(manifest).encode())
    return out / MANIFEST


def _write_atomic(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- reading

def is_pack(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    fix = "replace the pack folder with a complete copy"
    try:
        manifest = json.loads(path.read_text())
        parts, counts = manifest["parts"], manifest["counts"]
        [(p["file"], p["start"], p["stop"], p["sha256"]) for p in parts]
        [manifest["sha256"][k] for k in KEYS]
        [manifest["small"][k] for k in SMALL]
        [counts[k] for k in IMAGES]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a valid pack manifest ({type(exc).__name__}: {exc}); {fix}") from None
    return manifest


def manifest_id(folder: Path) -> str:
    """Short SHA-256 of the manifest's bytes: names the cache, so a new pack never meets an old cache."""
    return hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest()[:16]


def unpack(folder: Path) -> dict[str, np.ndarray]:
    """Decode a pack into its arrays, after checking every part's and every array's SHA-256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    missing = [p["file"] for p in manifest["parts"] if not (folder / p["file"]).is_file()]
    if missing:
        raise DataError(f"{folder / missing[0]} is missing (the manifest lists "
                        f"{', '.join(p['file'] for p in manifest['parts'])}); copy every part of the pack")
    pieces = []
    for part in manifest["parts"]:
        path = folder / part["file"]
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != part["sha256"]:
            raise DataError(f"{path}: SHA-256 differs from {folder / MANIFEST}; the part is damaged, copy it again")
        try:
            pieces.append(decode(lzma.decompress(blob), part["stop"] - part["start"]))
        except (lzma.LZMAError, ValueError) as exc:
            raise DataError(f"{path} does not decode ({exc}); copy it again") from None
    everything = np.concatenate(pieces)
    n_train = manifest["counts"]["train_images"]
    small = manifest["small"]
    arrays = {"train_images": everything[:n_train], "test_images": everything[n_train:],
              "train_labels": np.array(small["train_labels"], np.uint8),
              "test_labels": np.array(small["test_labels"], np.uint8),
              "classes": np.array(small["classes"])}
    for key, array in arrays.items():
        if sha256(array) != manifest["sha256"][key]:
            raise DataError(f"{folder / MANIFEST}: the decoded {key} does not match its SHA-256; "
                            "the manifest or a part is damaged, copy the pack again")
    return arrays


def cache_dirs(folder: Path) -> list[Path]:
    """Where a pack's cache may lie, in order: beside the pack (unless that folder is read-only),
    $CIFARLAB_CACHE, ~/.cache/cifarlab."""
    user = Path(os.environ.get("CIFARLAB_CACHE") or Path.home() / ".cache" / "cifarlab").expanduser()
    return [Path(folder), user] if _writable(Path(folder)) else [user]


def _writable(folder: Path) -> bool:
    # A folder without write bits is read-only here even for root, who could write it anyway:
    # a shared, read-only data copy stays as it was laid out.
    try:
        return bool(folder.stat().st_mode & 0o222) and os.access(folder, os.W_OK)
    except OSError:
        return False


def cache_name(folder: Path) -> str:
    return f"{Path(folder).name}.cache-{manifest_id(folder)}.npz"


def read_cache(path: Path, manifest: dict) -> dict[str, np.ndarray] | None:
    """The cached arrays if `path` holds every array with the manifest's SHA-256, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    if any(sha256(arrays[k]) != manifest["sha256"][k] for k in KEYS):
        return None
    return arrays


def valid_cache(folder: Path) -> tuple[Path | None, dict[str, np.ndarray] | None, list[Path]]:
    """(path, arrays) of the first cache of the pack that matches its manifest, or (None, None), and
    the cache files found that do not match."""
    manifest, name = read_manifest(folder), cache_name(folder)
    invalid = []
    for d in cache_dirs(folder):
        path = d / name
        if path.is_file():
            arrays = read_cache(path, manifest)
            if arrays is not None:
                return path, arrays, invalid
            invalid.append(path)
    return None, None, invalid


def find_cache(folder: Path) -> tuple[Path | None, str]:
    """(the valid cache's path or None, a word on its state) for `cifarlab data list`."""
    path, _, invalid = valid_cache(folder)
    if path is not None:
        return path, f"valid ({path})"
    return None, (f"invalid, rebuilt on next use ({', '.join(map(str, invalid))})" if invalid
                  else "none yet (decoded on first use)")


def load_pack(folder: Path, *, log=None) -> dict[str, np.ndarray]:
    """The pack's arrays: from a valid cache, else decoded, verified and cached for next time."""
    folder = Path(folder)
    _, arrays, _ = valid_cache(folder)
    if arrays is not None:
        return arrays
    start = time.perf_counter()
    arrays = unpack(folder)
    where = write_npz_cache(arrays, cache_dirs(folder), cache_name(folder))
    note = f"cached in {where}" if where else "no writable cache folder; it will be decoded again next time"
    (log or _stderr)(f"cifarlab: decoded the pack {folder} in {time.perf_counter() - start:.1f} s; {note}")
    return arrays


def write_npz_cache(arrays: dict[str, np.ndarray], dirs: list[Path], name: str) -> Path | None:
    """Write `arrays` as dirs[i]/name in the first folder that takes it (atomically); its path or None."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=d)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, d / name)
            return d / name
        except OSError:
            Path(tmp).unlink(missing_ok=True)
    return None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
