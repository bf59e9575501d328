"""Tests for cifarlab.data.sources using tiny fake archives in the official layout."""

import dataclasses
import hashlib
import io
import os
import pickle
import re
import shlex
import tarfile

import numpy as np
import pytest

from cifarlab.data import datasets, sources
from cifarlab.errors import DataError, UserError

N_TRAIN, N_TEST = 10, 5


def _batch(n, label_key, seed, n_classes):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 200, size=(n, 3072), dtype=np.uint8)
    # Marks R plane, pixel (row 0, col 1) of image 0; flattened CHW index 1.
    data[0, 1] = 250
    labels = [int(x) for x in rng.integers(0, n_classes, size=n)]
    batch = {b"batch_label": b"fake", b"data": data, label_key: labels}
    if n_classes == 100:  # CIFAR-100's files also carry the superclass of each image
        batch[b"coarse_labels"] = [label // 5 for label in labels]
    return batch


def _write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _make_folder(root, name):
    """Write a fake extracted official folder; return (folder, first train batch)."""
    spec = sources.OFFICIAL[name]
    n_classes = 10 if name == "cifar10" else 100
    folder = root / spec.folder
    folder.mkdir(parents=True)
    batches = {}
    for i, fname in enumerate(spec.train_files + spec.test_files):
        n = N_TEST if fname in spec.test_files else N_TRAIN
        batches[fname] = _batch(n, spec.label_key, i, n_classes)
        _write_pickle(folder / fname, batches[fname])
    names = [f"class{i}".encode() for i in range(n_classes)]
    meta = {spec.classes_key: names, b"num_vis": 3072}
    if spec.coarse_classes_key:
        meta[spec.coarse_classes_key] = [f"super{i}".encode() for i in range(20)]
    _write_pickle(folder / spec.classes_file, meta)
    return folder, batches[spec.train_files[0]]


def _trust(folder, name, monkeypatch):
    """Patch OFFICIAL[name]'s per-file MD5s to the fake folder's files (as they are now)."""
    spec = sources.OFFICIAL[name]
    md5s = tuple((fname, hashlib.md5((folder / fname).read_bytes()).hexdigest()) for fname, _ in spec.file_md5)
    monkeypatch.setitem(sources.OFFICIAL, name, dataclasses.replace(spec, file_md5=md5s))


def _make_archive(tmp_path, name, monkeypatch, url=None):
    """Build <src>/<archive>.tar.gz and patch OFFICIAL[name] to its md5 (and url) and its files'."""
    src = tmp_path / "src"
    folder, first = _make_folder(src / "build", name)
    _trust(folder, name, monkeypatch)
    archive = src / sources.OFFICIAL[name].archive_name
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    spec = dataclasses.replace(sources.OFFICIAL[name], md5=md5, url=url or archive.as_uri())
    monkeypatch.setitem(sources.OFFICIAL, name, spec)
    return archive, first


def _root_with_archive(tmp_path, name, monkeypatch):
    archive, first = _make_archive(tmp_path, name, monkeypatch)
    root = tmp_path / "root"
    root.mkdir()
    (root / archive.name).write_bytes(archive.read_bytes())
    return root, first


@pytest.mark.parametrize("name,n_classes", [("cifar10", 10), ("cifar100", 100)])
def test_archive_is_verified_extracted_and_parsed(tmp_path, monkeypatch, name, n_classes):
    root, first = _root_with_archive(tmp_path, name, monkeypatch)
    spec = sources.OFFICIAL[name]
    arr = datasets.load_dataset(name, root, download=False)
    n_train = N_TRAIN * len(spec.train_files)
    assert arr.train_images.shape == (n_train, 32, 32, 3)
    assert arr.test_images.shape == (N_TEST, 32, 32, 3)
    assert arr.train_images.dtype == np.uint8 and arr.train_images.flags.c_contiguous
    assert arr.train_labels.dtype == np.int64 and arr.train_labels.shape == (n_train,)
    assert arr.test_labels.shape == (N_TEST,)
    assert arr.train_images[0, 0, 1, 0] == 250
    # Green plane starts at flat index 1024, blue at 2048.
    assert arr.train_images[0, 0, 0, 1] == first[b"data"][0, 1024]
    assert arr.train_images[0, 0, 0, 2] == first[b"data"][0, 2048]
    assert arr.train_labels[:N_TRAIN].tolist() == first[spec.label_key]
    assert arr.classes == tuple(f"class{i}" for i in range(n_classes))
    if name == "cifar100":  # the official format's superclasses, swapped in by labels="coarse"
        coarse = sources.select_labels(arr, "coarse")
        assert coarse.classes == tuple(f"super{i}" for i in range(20))
        assert coarse.train_labels.tolist() == (arr.train_labels // 5).tolist()
        assert coarse.test_labels.tolist() == (arr.test_labels // 5).tolist()
    else:
        assert arr.coarse_classes is None
        with pytest.raises(DataError, match="has no coarse labels"):
            sources.select_labels(arr, "coarse")
    assert (root / spec.folder).is_dir()
    assert (root / (spec.archive_name + ".sha256")).read_text().split()[0] == \
        hashlib.sha256((root / spec.archive_name).read_bytes()).hexdigest()
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []


def test_wrong_checksum_is_refused_before_extracting(tmp_path, monkeypatch):
    root, _ = _root_with_archive(tmp_path, "cifar10", monkeypatch)
    spec = dataclasses.replace(sources.OFFICIAL["cifar10"], md5="0" * 32)
    monkeypatch.setitem(sources.OFFICIAL, "cifar10", spec)
    with pytest.raises(DataError, match=r"expected md5 0{32}, got [0-9a-f]{32}") as err:
        datasets.load_dataset("cifar10", root, download=False)
    assert spec.archive_name in str(err.value)
    assert sorted(p.name for p in root.iterdir()) == [spec.archive_name]


def test_archive_member_escaping_dest_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    spec = dataclasses.replace(sources.OFFICIAL["cifar10"],
                               md5=hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setitem(sources.OFFICIAL, "cifar10", spec)
    with pytest.raises(DataError, match="refusing to extract"):
        sources.verify_and_extract(archive, "cifar10", root)
    assert not (tmp_path / "escaped.txt").exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    folder, _ = _make_folder(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    _write_pickle(folder / "data_batch_2", {b"data": _Evil(marker), b"labels": []})
    _trust(folder, "cifar10", monkeypatch)   # past the MD5 check: the unpickler is the second guard
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        sources.load_official(folder, "cifar10")
    assert not marker.exists()


def test_unpickler_refuses_builtins(tmp_path, monkeypatch):
    folder, _ = _make_folder(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": eval}, protocol=2))
    _trust(folder, "cifar10", monkeypatch)
    with pytest.raises(DataError, match=r"refusing to unpickle (__builtin__|builtins)\.eval"):
        sources.load_official(folder, "cifar10")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_an_official_folder_whose_files_are_not_the_official_ones_is_refused_before_unpickling(tmp_path, name):
    folder, _ = _make_folder(tmp_path / "root", name)   # fake files: not the published MD5s
    marker = tmp_path / "pwned"
    spec = sources.OFFICIAL[name]
    _write_pickle(folder / spec.train_files[0], {b"data": _Evil(marker), b"labels": []})
    with pytest.raises(DataError) as err:
        datasets.load_dataset(name, tmp_path / "root", download=False)
    msg, first, want = str(err.value), spec.file_md5[0][0], spec.file_md5[0][1]
    assert "\n" not in msg and msg.startswith(f"{folder / first} is not the official {spec.title} file (MD5 ")
    assert f"the official one's is {want}); delete {folder} and re-run" in msg and "save it as an npz" in msg
    assert not marker.exists()


def test_a_missing_file_of_an_official_folder_is_named(tmp_path, monkeypatch):
    folder, _ = _make_folder(tmp_path, "cifar10")
    _trust(folder, "cifar10", monkeypatch)
    assert sources.load_official(folder, "cifar10").train_images.shape == (5 * N_TRAIN, 32, 32, 3)
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError, match=rf"^{folder / 'batches.meta'} is missing; delete {folder} and re-run"):
        sources.load_official(folder, "cifar10")


def test_the_official_file_list_covers_every_file_read():
    for spec in sources.OFFICIAL.values():
        names = [fname for fname, _ in spec.file_md5]
        assert sorted(names) == sorted({*spec.train_files, *spec.test_files, spec.classes_file})
        assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for _, md5 in spec.file_md5)


def test_download_from_file_url(tmp_path, monkeypatch):
    archive, _ = _make_archive(tmp_path, "cifar10", monkeypatch)
    root = tmp_path / "empty-root"
    arr = datasets.load_dataset("cifar10", root, progress=False)
    assert arr.train_images.shape == (5 * N_TRAIN, 32, 32, 3)
    assert (root / archive.name).read_bytes() == archive.read_bytes()
    assert not list(root.glob("*.part"))


def test_failed_download_names_every_path_tried(tmp_path, monkeypatch):
    missing = (tmp_path / "nowhere" / "cifar-10-python.tar.gz").as_uri()
    spec = dataclasses.replace(sources.OFFICIAL["cifar10"], url=missing)
    monkeypatch.setitem(sources.OFFICIAL, "cifar10", spec)
    root = tmp_path / "root"
    with pytest.raises(DataError) as err:
        datasets.load_dataset("cifar10", root, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("CIFAR-10 not found")
    for path in (root / "cifar10" / "cifar10.npz", root / "cifar10.npz",
                 root / "cifar-10-batches-py", root / "cifar-10-python.tar.gz"):
        assert str(path) in msg
    assert f"download from {missing} failed (URLError" in msg
    assert not list(root.glob("*.part"))


def test_a_data_root_one_level_too_deep_names_its_parent(tmp_path, monkeypatch):
    root, _ = _root_with_archive(tmp_path, "cifar10", monkeypatch)
    (root / "cifar10").mkdir(exist_ok=True)
    with pytest.raises(DataError) as err:   # --data-dir ROOT/cifar10 instead of ROOT: nothing downloaded there
        datasets.load_dataset("cifar10", root / "cifar10", progress=False)
    assert f"give --data-dir (or $CIFARLAB_DATA) {root}" in str(err.value) and "\n" not in str(err.value)
    assert list((root / "cifar10").iterdir()) == []


def test_download_disabled_says_so(tmp_path):
    with pytest.raises(DataError, match="downloading was disabled") as err:
        datasets.load_dataset("cifar100", tmp_path, download=False)
    assert "cifar-100-python.tar.gz" in str(err.value)


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'mnist'; valid: cifar10, cifar100, imagenette"):
        datasets.load_dataset("mnist", tmp_path)
    with pytest.raises(UserError, match="; did you mean 'cifar100'[?]"):
        datasets.load_dataset("cifar-100", tmp_path)


def _npz_fields(**overrides):
    fields = dict(
        train_images=np.full((4, 32, 32, 3), 7, np.uint8),
        train_labels=np.array([0, 1, 2, 1], np.uint8),
        test_images=np.zeros((2, 32, 32, 3), np.uint8),
        test_labels=np.array([2, 0]),
        classes=np.array(["a", "b", "c"]),
    )
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


@pytest.mark.parametrize("sub", [True, False])
def test_npz_is_found_and_loaded(tmp_path, sub):
    path = tmp_path / "cifar10" / "cifar10.npz" if sub else tmp_path / "cifar10.npz"
    path.parent.mkdir(exist_ok=True)
    np.savez(path, **_npz_fields())
    arr = datasets.load_dataset("cifar10", tmp_path, download=False)
    assert arr.classes == ("a", "b", "c")
    assert arr.train_labels.dtype == np.int64 and arr.train_labels.tolist() == [0, 1, 2, 1]
    assert arr.train_images.shape == (4, 32, 32, 3) and arr.train_images[3, 31, 31, 2] == 7


def test_truncated_npz_is_refused(tmp_path):
    path = tmp_path / "cifar10.npz"
    np.savez_compressed(path, **_npz_fields())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated.*delete it or replace it"):
        sources.load_npz(path)


def test_npz_missing_key_is_refused(tmp_path):
    path = tmp_path / "cifar10.npz"
    np.savez(path, **_npz_fields(test_labels=None))
    with pytest.raises(DataError, match="lacks key.*test_labels"):
        sources.load_npz(path)


@pytest.mark.parametrize("bad,match", [
    (dict(train_images=np.zeros((4, 32, 32, 1), np.uint8)), "train_images must be"),
    (dict(test_labels=np.array([0, 3])), r"must lie in 0\.\.2"),
    (dict(train_labels=np.array([0, 1])), "train_labels must be 4 integers"),
])
def test_npz_bad_contents_are_refused(tmp_path, bad, match):
    path = tmp_path / "x.npz"
    np.savez(path, **_npz_fields(**bad))
    with pytest.raises(DataError, match=match):
        sources.load_npz(path)


def test_resolve_data_dir_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFARLAB_DATA", raising=False)
    assert sources.resolve_data_dir(None) == tmp_path / "data"
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "env"))
    assert sources.resolve_data_dir(None) == tmp_path / "env"
    assert sources.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert sources.resolve_data_dir("rel") == tmp_path / "rel"


