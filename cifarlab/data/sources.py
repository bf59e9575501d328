"""Find, fetch, verify and parse CIFAR-10 / CIFAR-100 into plain numpy arrays.

Search order in `load_cifar`: a prepared `.npz`, a lossless pack (`cifarlab.data.pack`,
decoded once into a verified cache), an already extracted official folder, the official
`.tar.gz` archive (MD5-checked), and finally a download of that archive. Every file of an
official folder, extracted here or elsewhere, is checked against its official MD5 before it is
unpickled.

CIFAR-100's 20 superclasses (coarse labels) come with the official format, and beside an npz
or a pack as `coarse.npz` (`train_coarse_labels`, `test_coarse_labels`, `coarse_classes`);
`select_labels(arrays, "coarse")` swaps them in.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarlab.data import pack
from cifarlab.data.arrays import Arrays, few
from cifarlab.data.fetch import extract_verified, file_digests, one_line, resolve_data_dir, try_download
from cifarlab.errors import DataError

NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "classes")
IMAGE_SHAPE = (32, 32, 3)


LABELS = ("fine", "coarse")
COARSE_FILE = "coarse.npz"
COARSE_KEYS = ("train_coarse_labels", "test_coarse_labels", "coarse_classes")


def select_labels(arrays: Arrays, labels: str, source: str = "the data") -> Arrays:
    """`arrays` with its labels and classes replaced by the coarse ones for labels="coarse"."""
    if labels not in LABELS:
        raise DataError(f"labels = {labels!r} is invalid; valid: {', '.join(LABELS)}")
    if labels == "fine":
        return arrays
    if arrays.coarse_classes is None and source != "cifar100":   # a plug-in's loader returned none
        raise DataError(f"{source} has no coarse labels: its loader returned Arrays without "
                        f"{', '.join(COARSE_KEYS)}; a dataset registered with coarse_classes must return them")
    if arrays.coarse_classes is None:
        raise DataError(f"{source} has no coarse labels: put {COARSE_FILE} (keys {', '.join(COARSE_KEYS)}) "
                        "beside the CIFAR-100 npz or pack, or use the official archive")
    return dataclasses.replace(arrays, train_labels=arrays.train_coarse_labels,
                               test_labels=arrays.test_coarse_labels, classes=arrays.coarse_classes)


@dataclass(frozen=True)
class Official:
    """Where the official python-format archive lives and how it is laid out."""

    url: str
    md5: str
    archive_name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    classes_file: str
    classes_key: bytes
    title: str
    coarse_label_key: bytes | None = None
    coarse_classes_key: bytes | None = None
    file_md5: tuple[tuple[str, str], ...] = ()   # (file in the folder, its official MD5)


OFFICIAL = {
    "cifar10": Official(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        archive_name="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        classes_file="batches.meta",
        classes_key=b"label_names",
        title="CIFAR-10",
        file_md5=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                  ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                  ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                  ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                  ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                  ("test_batch", "40351d587109b95175f43aff81a1287e"),
                  ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888")),
    ),
    "cifar100": Official(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        archive_name="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        classes_file="meta",
        classes_key=b"fine_label_names",
        title="CIFAR-100",
        coarse_label_key=b"coarse_labels",
        coarse_classes_key=b"coarse_label_names",
        file_md5=(("train", "16019d7e3df5f24257cddd939b257f8d"),
                  ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
                  ("meta", "7973b15100ade9c7d40fb424638fde48")),
    ),
}

# The upstream site publishes only MD5. Once a SHA-256 has been recorded from a
# verified archive (see the `<archive>.sha256` file written next to it), pin it
# here as name -> hex digest so the stronger hash is checked too.
KNOWN_SHA256: dict[str, str] = {}

# Errors that np.load / zip / pickle raise on damaged files.
_CORRUPT = (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error, KeyError,
            pickle.UnpicklingError, TypeError, AttributeError, IndexError)


def _spec(name: str) -> Official:
    if name not in OFFICIAL:
        raise DataError(f"{name!r} is not an official CIFAR archive; valid: {', '.join(OFFICIAL)}")
    return OFFICIAL[name]


def candidates(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Every place `load_dataset` looks, in order, as (kind, path)."""
    spec, root = _spec(name), resolve_data_dir(data_dir)
    return [("npz", root / name / f"{name}.npz"), ("npz", root / f"{name}.npz"), ("pack", root / name),
            ("official folder", root / spec.folder), ("official archive", root / spec.archive_name)]


def locate(name: str, data_dir: str | os.PathLike | None = None) -> tuple[str, Path] | None:
    """The first source present under the data root, as (kind, path), or None."""
    for kind, path in candidates(name, data_dir):
        present = {"npz": path.is_file, "pack": lambda: pack.is_pack(path), "official folder": path.is_dir,
                   "official archive": path.is_file}[kind]()
        if present:
            return kind, path
    return None


def load_cifar(name: str, data_dir: str | os.PathLike | None = None, *,
               download: bool = True, progress: bool = True) -> Arrays:
    """Load CIFAR `name` from the first source found under the data root (see module doc)."""
    spec, root = _spec(name), resolve_data_dir(data_dir)
    found = locate(name, root)
    if found is None and root.parent != root and locate(name, root.parent) is not None:
        raise DataError(f"{spec.title} is not under the data root {root} but under its parent: the data root is "
                        f"the folder that holds {name}/, so give --data-dir (or $CIFARLAB_DATA) {root.parent}")
    reason = "downloading was disabled"
    archive = root / spec.archive_name
    if found is None and download:
        reason = try_download(spec.url, archive, progress)
        found = ("official archive", archive) if archive.is_file() else None
    if found is None:
        tried = ", ".join(str(p) for _, p in candidates(name, root))
        raise DataError(
            f"{spec.title} not found: tried {tried}; {reason}. Put {spec.archive_name} "
            f"(from {spec.url}) or {name}.npz in {root}, or point --data-dir / "
            f"$CIFARLAB_DATA at a folder holding one.")
    kind, path = found
    if kind == "npz":
        return load_npz(path)
    if kind == "pack":
        return load_packed(path)
    if kind == "official folder":
        return load_official(path, name)
    return load_official(verify_and_extract(path, name, root), name)


def verify_and_extract(archive: Path, name: str, dest: Path) -> Path:
    """Check the archive's MD5 (and pinned SHA-256), extract it safely, return the folder."""
    spec = _spec(name)
    return extract_verified(Path(archive), spec.md5, spec.url, spec.folder, Path(dest), KNOWN_SHA256.get(name),
                            hint="or load it with load_official")


def load_npz(path: str | os.PathLike) -> Arrays:
    """Load a prepared `.npz` (keys: NPZ_KEYS; uint8 NHWC images, str classes)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist" if not path.exists() else f"{path} is not a file; give an .npz file")
    fix = "delete it or replace it with a valid npz (keys " + ", ".join(NPZ_KEYS) + ")"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path} lacks key(s) {', '.join(missing)}; {fix}")
            data = {k: z[k] for k in NPZ_KEYS}
    except _CORRUPT as exc:
        raise DataError(f"{path} is corrupt or truncated ({one_line(exc)}); {fix}") from exc
    classes = data.pop("classes")
    _check_names(classes, f"{path}: classes", fix)
    return _validated(str(path), fix, classes=tuple(str(c) for c in classes), **data,
                      **_coarse_beside(path.parent))


def load_packed(folder: str | os.PathLike) -> Arrays:
    """Load a lossless pack (see `cifarlab.data.pack`), with `coarse.npz` beside it if present."""
    folder = Path(folder)
    data = pack.load_pack(folder)
    classes = data.pop("classes")
    fix = "replace the pack folder with a complete copy"
    return _validated(str(folder), fix, classes=tuple(str(c) for c in classes), **data, **_coarse_beside(folder))


def _check_names(names: np.ndarray, where: str, fix: str) -> None:
    if names.ndim != 1 or names.dtype.kind != "U":
        raise DataError(f"{where} must be a 1-D str array, got {names.dtype} {names.shape}; {fix}")


def _coarse_beside(folder: Path) -> dict:
    """The coarse-label fields from `folder/coarse.npz`, or {} when there is none."""
    path = folder / COARSE_FILE
    if not path.is_file():
        return {}
    fix = f"delete it or replace it with a valid {COARSE_FILE} (keys {', '.join(COARSE_KEYS)})"
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in COARSE_KEYS}
    except _CORRUPT as exc:
        raise DataError(f"{path} is corrupt or lacks a key ({one_line(exc)}); {fix}") from exc
    _check_names(data["coarse_classes"], f"{path}: coarse_classes", fix)
    return {**data, "coarse_classes": tuple(str(c) for c in data["coarse_classes"])}


def _validated(source: str, fix: str, **fields) -> Arrays:
    """Check dtypes/shapes/label range and normalise to contiguous uint8 / int64."""
    n_classes = len(fields["classes"])
    for split in ("train", "test"):
        images, labels = fields[f"{split}_images"], np.asarray(fields[f"{split}_labels"])
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{source}: {split}_images must be uint8 (N, 32, 32, 3), got "
                            f"{images.dtype} {images.shape}; {fix}")
        if labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
            raise DataError(f"{source}: {split}_labels must be {len(images)} integers, got "
                            f"{labels.dtype} {labels.shape}; {fix}")
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise DataError(f"{source}: {split}_labels must lie in 0..{n_classes - 1}, got "
                            f"{labels.min()}..{labels.max()}; {fix}")
        fields[f"{split}_images"] = np.ascontiguousarray(images)
        fields[f"{split}_labels"] = labels.astype(np.int64)
        if fields.get("coarse_classes") is not None:
            coarse = np.asarray(fields[f"{split}_coarse_labels"])
            n_coarse = len(fields["coarse_classes"])
            if coarse.dtype.kind not in "iu" or coarse.shape != labels.shape or \
                    (coarse.size and (coarse.min() < 0 or coarse.max() >= n_coarse)):
                raise DataError(f"{source}: {split}_coarse_labels must be {len(labels)} integers in "
                                f"0..{n_coarse - 1}, got {coarse.dtype} {coarse.shape}; {fix}")
            fields[f"{split}_coarse_labels"] = coarse.astype(np.int64)
    return Arrays(**fields)


class _CifarUnpickler(pickle.Unpickler):
    """Admits only the globals that CIFAR batch files need to rebuild numpy arrays."""

    def __init__(self, file, source: Path):
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        raise DataError(f"refusing to unpickle {module}.{name} from {self.source}: CIFAR "
                        f"files only hold numpy arrays, lists and bytes; use the official "
                        f"archive or an npz instead")


def _latin1_encode(text: str, encoding: str = "utf-8"):
    # Python 3 pickles bytes under protocol 2 as _codecs.encode(str, "latin1");
    # allow exactly that, not arbitrary codecs.
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode(..., {encoding!r})")
    return text.encode("latin1")


# Taken from ndarray's own pickle recipe, so no private numpy module is imported.
_RECONSTRUCT = np.ndarray(0).__reduce__()[0]
_ALLOWED = {
    # Files written under numpy 1.x (the official ones) and 2.x name it differently.
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


def _unpickle(path: Path, fix: str) -> dict:
    if not path.is_file():
        raise DataError(f"{path} is missing; {fix}")
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except _CORRUPT as exc:
        raise DataError(f"{path} is corrupt or truncated ({one_line(exc)}); {fix}") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict; {fix}")
    return obj


def _get(batch: dict, key: bytes, path: Path, fix: str):
    # The official files have bytes keys (pickled by Python 2); tolerate str keys too.
    for k in (key, key.decode()):
        if k in batch:
            return batch[k]
    raise DataError(f"{path} lacks key {key.decode()!r}; {fix}")


def _read_split(folder: Path, files: tuple[str, ...], label_key: bytes, fix: str, coarse_key: bytes | None = None):
    images, labels, coarse = [], [], []
    for fname in files:
        path = folder / fname
        batch = _unpickle(path, fix)
        data = np.asarray(_get(batch, b"data", path, fix))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{path}: data must be uint8 (N, 3072), got {data.dtype} "
                            f"{data.shape}; {fix}")
        # Rows are flattened CHW planes (all R, then G, then B); we want NHWC.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(_get(batch, label_key, path, fix)))
        if coarse_key is not None:
            coarse.append(np.asarray(_get(batch, coarse_key, path, fix)))
    return np.concatenate(images), np.concatenate(labels), (np.concatenate(coarse) if coarse else None)


def check_official_files(folder: Path, spec: Official, fix: str) -> None:
    """Refuse an official folder whose files are not the published ones (the MD5s upstream's
    archive holds, as torchvision also records them): modified data belongs in an npz."""
    for fname, want in spec.file_md5:
        path = folder / fname
        if not path.is_file():
            raise DataError(f"{path} is missing; {fix}")
        (got,) = file_digests(path, "md5")
        if got != want:
            raise DataError(f"{path} is not the official {spec.title} file (MD5 {got}, the official one's is {want}); "
                            f"{fix}, or, for data changed on purpose, save it as an npz (docs/DATA.md)")


def load_official(extracted_dir: Path, name: str) -> Arrays:
    """Parse an extracted official folder (cifar-10-batches-py / cifar-100-python), each file
    checked against its official MD5 first."""
    spec, folder = _spec(name), Path(extracted_dir)
    fix = (f"delete {folder} and re-run to extract it again from {spec.archive_name} "
           f"(from {spec.url})")
    check_official_files(folder, spec, fix)
    train_x, train_y, train_c = _read_split(folder, spec.train_files, spec.label_key, fix, spec.coarse_label_key)
    test_x, test_y, test_c = _read_split(folder, spec.test_files, spec.label_key, fix, spec.coarse_label_key)
    meta_path = folder / spec.classes_file
    meta = _unpickle(meta_path, fix)
    coarse = {}
    if spec.coarse_classes_key is not None:
        coarse = {"train_coarse_labels": train_c, "test_coarse_labels": test_c,
                  "coarse_classes": _names(_get(meta, spec.coarse_classes_key, meta_path, fix), meta_path, fix)}
    return _validated(str(folder), fix, train_images=train_x, train_labels=train_y,
                      test_images=test_x, test_labels=test_y,
                      classes=_names(_get(meta, spec.classes_key, meta_path, fix), meta_path, fix), **coarse)


def _names(names, meta_path: Path, fix: str) -> tuple[str, ...]:
    if not isinstance(names, list) or not all(isinstance(c, (bytes, str)) for c in names):
        raise DataError(f"{meta_path}: class names must be a list of strings; {fix}")
    return tuple(c.decode() if isinstance(c, bytes) else c for c in names)


# ----------------------------------------------------------------------------- listing

def describe_cifar(name: str, data_dir: str | os.PathLike | None = None) -> str:
    """One line for `cifarlab data list`: where `name` was found (or every place tried), its sizes,
    classes, coarse labels and, for a pack, whether its cache is valid. Decodes no pack (an npz or an
    extracted official folder is read to count it)."""
    spec, root = _spec(name), resolve_data_dir(data_dir)
    found = locate(name, root)
    if found is None:
        tried = ", ".join(str(p) for _, p in candidates(name, root))
        return f"{name}: not found; tried {tried}; a run downloads {spec.url} to {root / spec.archive_name}"
    kind, path = found
    if kind == "official archive":
        return f"{name}: official archive {path} (MD5-checked and extracted on first use)"
    if kind == "pack":
        manifest = pack.read_manifest(path)
        counts, classes = manifest["counts"], manifest["small"]["classes"]
        sizes = f"{counts['train_images']:,} train + {counts['test_images']:,} test"
        extra = f"; cache {pack.find_cache(path)[1]}"
        coarse = _coarse_beside(path)
    else:
        arrays = load_npz(path) if kind == "npz" else load_official(path, name)
        sizes = f"{len(arrays.train_labels):,} train + {len(arrays.test_labels):,} test"
        classes, extra = arrays.classes, ""
        coarse = {"coarse_classes": arrays.coarse_classes} if arrays.coarse_classes else {}
    named = f"{len(classes)} classes ({few(classes)})"
    if coarse:
        named += f", {len(coarse['coarse_classes'])} coarse ({few(coarse['coarse_classes'])})"
    return f"{name}: {kind} {path}: {sizes}, {named}{extra}"
