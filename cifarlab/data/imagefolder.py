"""Imagenette (fastai/imagenette): JPEG folders in the imagenette2 layout with noisy_imagenette.csv,
decoded once into a uint8 array at a chosen side and cached.

Search order under the data root: `imagenette/` (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG and
noisy_imagenette.csv, as on the development machines), an extracted official `imagenette2-160/`,
the official `imagenette2-160.tgz` (MD5-checked, extracted safely), then a download of it.

Each image is converted to RGB (grayscale ones are replicated), resized so that its shorter side is
`size` pixels (bilinear, with PIL's antialiasing), and centre-cropped to size x size. The CSV's
`is_valid` rows are the official validation set, used here as the test set (read once, at the end);
its `noisy_labels_0` column gives their labels. The training images take their labels from the
chosen column (`noisy_labels_0`, `_1`, `_5`, `_25` or `_50`: the published label noise), and keep
the clean ones beside them for the noise metrics.
"""

from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

import numpy as np

from cifarlab.data import pack
from cifarlab.data.arrays import Arrays, few
from cifarlab.data.fetch import extract_verified, try_download
from cifarlab.errors import DataError

URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz"
MD5 = "e793b78cc4c9e9a4ccc0c1155377a412"
ARCHIVE, EXTRACTED, FOLDER, CSV_NAME = "imagenette2-160.tgz", "imagenette2-160", "imagenette", "noisy_imagenette.csv"
LABEL_COLUMNS = ("noisy_labels_0", "noisy_labels_1", "noisy_labels_5", "noisy_labels_25", "noisy_labels_50")
CLASSES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
           "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
           "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
           "n03888257": "parachute"}


def candidates(root: Path) -> list[tuple[str, Path]]:
    return [("folder", root / FOLDER), ("official folder", root / EXTRACTED), ("official archive", root / ARCHIVE)]


def locate(root: Path) -> tuple[str, Path] | None:
    for kind, path in candidates(root):
        if (path / CSV_NAME).is_file() if kind != "official archive" else path.is_file():
            return kind, path
    return None


def read_csv(folder: Path, column: str) -> list[dict]:
    path = folder / CSV_NAME
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    needed = ("path", "noisy_labels_0", "is_valid", column)
    missing = [c for c in needed if not rows or c not in rows[0]]
    if missing:
        raise DataError(f"{path} has no column {missing[0]!r}; valid label columns: {', '.join(LABEL_COLUMNS)}")
    for row in rows:
        for col in ("noisy_labels_0", column):
            if row[col] not in CLASSES:
                raise DataError(f"{path}: {row['path']} has the label {row[col]!r} in {col}, not one of "
                                f"Imagenette's 10 classes ({', '.join(sorted(CLASSES))})")
        if not (folder / row["path"]).is_file():
            raise DataError(f"{path} lists {row['path']}, which is not in {folder}; use the CSV of this copy "
                            "or restore the file")
    return rows


def decode(path: Path, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size)), np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable image ({type(exc).__name__}: {exc}); restore it from the "
                        "official archive or delete the folder to download it again") from None


def load(root: Path, size: int, column: str, *, download: bool = True, progress: bool = True) -> Arrays:
    """The Imagenette arrays (see module doc), from a verified cache when there is one."""
    found = locate(root)
    reason = "downloading was disabled"
    if found is None and download:
        reason = try_download(URL, root / ARCHIVE, progress)
        found = ("official archive", root / ARCHIVE) if (root / ARCHIVE).is_file() else None
    if found is None:
        tried = ", ".join(str(p) for _, p in candidates(root))
        raise DataError(f"Imagenette not found: tried {tried}; {reason}. Put {ARCHIVE} (from {URL}) in {root}, "
                        "or point --data-dir / $CIFARLAB_DATA at a folder holding imagenette/")
    kind, folder = found
    if kind == "official archive":
        folder = extract_verified(folder, MD5, URL, EXTRACTED, root)
    rows = read_csv(folder, column)
    key = hashlib.sha256((folder / CSV_NAME).read_bytes()).hexdigest()[:16]
    name = f"imagenette-{size}px-{key}.npz"
    for d in pack.cache_dirs(folder):
        cached = read_cache(d / name, len(rows), size)
        if cached is not None:
            return to_arrays(cached, rows, column)
    start = time.perf_counter()
    images = np.stack([decode(folder / r["path"], size) for r in rows])
    where = pack.write_npz_cache({"images": images}, pack.cache_dirs(folder), name)
    print(f"cifarlab: decoded {len(rows):,} Imagenette JPEGs at {size} px in {time.perf_counter() - start:.1f} s; "
          + (f"cached in {where}" if where else "no writable cache folder"), flush=True)
    return to_arrays(images, rows, column)


def read_cache(path: Path, count: int, size: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return images if images.shape == (count, size, size, 3) and images.dtype == np.uint8 else None


def to_arrays(images: np.ndarray, rows: list[dict], column: str) -> Arrays:
    wnids = sorted(CLASSES)
    index = {w: i for i, w in enumerate(wnids)}
    test = np.array([r["is_valid"].strip().lower() in ("true", "1") for r in rows])
    clean = np.array([index[r["noisy_labels_0"]] for r in rows])
    chosen = np.array([index[r[column]] for r in rows])
    return Arrays(train_images=np.ascontiguousarray(images[~test]), train_labels=chosen[~test],
                  test_images=np.ascontiguousarray(images[test]), test_labels=clean[test],
                  classes=tuple(CLASSES[w] for w in wnids), train_clean_labels=clean[~test])


def describe(root: Path) -> str:
    """One line for `cifarlab data list`: where Imagenette was found (or every place tried), its image
    counts and label columns. Decodes no JPEG."""
    found = locate(root)
    if found is None:
        tried = ", ".join(str(p) for _, p in candidates(root))
        return f"imagenette: not found; tried {tried}; a run downloads {URL}"
    kind, path = found
    if kind == "official archive":
        return f"imagenette: official archive {path} (MD5-checked and extracted on first use)"
    rows = read_csv(path, "noisy_labels_0")
    valid = sum(r["is_valid"].strip().lower() in ("true", "1") for r in rows)
    return (f"imagenette: {kind} {path}: {len(rows) - valid:,} train + {valid:,} val JPEGs, 10 classes "
            f"({few(CLASSES.values())}); label columns {', '.join(LABEL_COLUMNS)}; "
            "decoded once per data.image_size into a cache")
