"""The lossless pack format (cifarlab.data.pack): round trip, refusals, the verified cache, and the
packs of CIFAR-10 and CIFAR-100 in ../shared/data when they are at hand."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifarlab.data import datasets, pack, sources
from cifarlab.errors import DataError
from conftest import REPO, cli_command, cli_env, synthetic_arrays

CLASSES = np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
REAL = Path(os.environ.get("CIFARLAB_DATA") or REPO.parent / "shared" / "data")


def small_arrays() -> dict:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-9, 10, (12, 32, 32, 3)), axis=2)  # image-like: neighbours correlate
    arrays = {"train_images": (smooth[:7] % 256).astype(np.uint8),
              "test_images": rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),  # edge values too
              "train_labels": rng.integers(0, 10, 7).astype(np.uint8),
              "test_labels": rng.integers(0, 10, 5).astype(np.uint8), "classes": CLASSES}
    arrays["test_images"][0] = 255
    arrays["test_images"][1] = 0
    return arrays


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The user cache folder of these tests (never ~/.cache)."""
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "user-cache"))
    return tmp_path / "user-cache"


def packed(root: Path, name: str = "cifar10", parts: int = 2, arrays: dict | None = None) -> Path:
    pack.pack(arrays or small_arrays(), root / name, parts, log=lambda _: None)
    return root / name


def caches(*folders: Path) -> list[str]:
    return sorted(p.name for f in folders if f.exists() for p in f.iterdir() if ".cache-" in p.name)


def test_a_pack_decodes_to_identical_arrays_and_is_cached_beside_it(tmp_path, cache):
    arrays = small_arrays()
    folder = packed(tmp_path, parts=3)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "part0.xz", "part1.xz", "part2.xz"]
    for got in (pack.load_pack(folder, log=lambda _: None), pack.load_pack(folder)):  # decoded, then cached
        for key, want in arrays.items():
            assert got[key].dtype == want.dtype and np.array_equal(got[key], want), key
    assert caches(folder) == [pack.cache_name(folder)] and not cache.exists()


def test_load_dataset_reads_a_pack_after_an_npz(tmp_path, cache):
    packed(tmp_path)
    arr = datasets.load_dataset("cifar10", tmp_path, download=False)
    assert arr.classes == tuple(CLASSES) and arr.train_labels.dtype == np.int64
    assert np.array_equal(arr.train_images, small_arrays()["train_images"])
    assert sources.locate("cifar10", tmp_path) == ("pack", tmp_path / "cifar10")
    np.savez(tmp_path / "cifar10.npz", **synthetic_arrays(20, 10))     # an npz comes first
    assert sources.locate("cifar10", tmp_path) == ("npz", tmp_path / "cifar10.npz")


def assert_refused(folder: Path, cache: Path, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        pack.load_pack(folder)
    assert "\n" not in str(err.value)
    assert caches(folder, cache) == []


def test_a_part_with_one_flipped_byte_is_refused_naming_it(tmp_path, cache):
    part = packed(tmp_path) / "part1.xz"
    blob = bytearray(part.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    part.write_bytes(bytes(blob))
    assert_refused(part.parent, cache, r"part1\.xz: SHA-256 differs from .*manifest\.json")


def test_a_missing_part_is_refused_naming_it(tmp_path, cache):
    folder = packed(tmp_path)
    (folder / "part0.xz").unlink()
    assert_refused(folder, cache, r"part0\.xz is missing \(the manifest lists part0\.xz, part1\.xz\)")


def test_a_manifest_whose_hash_does_not_match_is_refused(tmp_path, cache):
    manifest_file = packed(tmp_path) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["small"]["test_labels"][0] = (manifest["small"]["test_labels"][0] + 1) % 10
    manifest_file.write_text(json.dumps(manifest))
    assert_refused(manifest_file.parent, cache, r"manifest\.json: the decoded test_labels does not match")


def test_a_manifest_that_is_not_json_is_refused(tmp_path, cache):
    manifest_file = packed(tmp_path) / "manifest.json"
    manifest_file.write_text("{not json")
    assert_refused(manifest_file.parent, cache, r"manifest\.json is not a valid pack manifest")


@pytest.mark.parametrize("damage", ["truncated", "stale"])
def test_a_truncated_or_stale_cache_is_detected_and_rebuilt(tmp_path, cache, damage):
    folder = packed(tmp_path)
    pack.load_pack(folder, log=lambda _: None)
    path = folder / pack.cache_name(folder)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # the right name, other arrays in it (an older decode, a copy from elsewhere)
        np.savez(path, **{**small_arrays(), "train_images": np.zeros((7, 32, 32, 3), np.uint8)})
    assert pack.find_cache(folder)[0] is None and "invalid" in pack.find_cache(folder)[1]
    messages = []
    got = pack.load_pack(folder, log=messages.append)
    assert len(messages) == 1 and "decoded the pack" in messages[0]           # decoded again, said once
    assert np.array_equal(got["train_images"], small_arrays()["train_images"])
    assert pack.find_cache(folder)[0] == path


def test_a_new_pack_never_meets_the_old_cache(tmp_path, cache):
    folder = packed(tmp_path)
    pack.load_pack(folder, log=lambda _: None)
    other = {**small_arrays(), "train_labels": np.zeros(7, np.uint8)}
    packed(tmp_path, arrays=other)                                           # the pack replaced in place
    assert pack.load_pack(folder, log=lambda _: None)["train_labels"].tolist() == [0] * 7


def test_a_read_only_pack_is_cached_in_the_user_cache(tmp_path, cache):
    folder = packed(tmp_path)
    folder.chmod(0o555)
    try:
        pack.load_pack(folder, log=lambda _: None)
        assert caches(folder) == [] and caches(cache) == [pack.cache_name(folder)]
        assert pack.find_cache(folder)[0] == cache / pack.cache_name(folder)
    finally:
        folder.chmod(0o755)


def test_cli_pack_unpack_and_list(tmp_path):
    np.savez(tmp_path / "in.npz", **small_arrays())
    env = cli_env(CIFARLAB_CACHE=str(tmp_path / "user-cache"))
    run = lambda *a: subprocess.run(cli_command(*a), env=env, capture_output=True, text=True, timeout=120)
    r = run("data", "pack", tmp_path / "in.npz", tmp_path / "root" / "cifar10", "--parts", "2")
    assert r.returncode == 0, r.stderr
    r = run("data", "unpack", tmp_path / "root" / "cifar10", tmp_path / "out.npz")
    assert r.returncode == 0 and "all 5 arrays match their SHA-256" in r.stdout, r.stderr
    with np.load(tmp_path / "out.npz") as got:
        assert all(np.array_equal(got[k], v) for k, v in small_arrays().items())
    r = run("data", "list", "--data-dir", tmp_path / "root")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1].startswith(f"cifar10: pack {tmp_path / 'root' / 'cifar10'}: 7 train + 5 test, 10 classes")
    assert lines[1].endswith("cache none yet (decoded on first use)")
    assert lines[2].startswith("cifar100: not found; tried ") and "cifar-100-python.tar.gz" in lines[2]
    bad = run("data", "pack", tmp_path / "in.npz", tmp_path / "x", "--parts", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "cifarlab: error: --parts must be >= 1, got 0"
    # the old script is a thin entry point to the same commands
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "device_data.py"), "unpack",
                        tmp_path / "root" / "cifar10", tmp_path / "again.npz"], capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "again.npz").is_file(), r.stderr


def test_coarse_labels_beside_a_cifar100_pack(tmp_path, cache):
    arrays = {**synthetic_arrays(40, 20), "classes": np.array([f"fine{i}" for i in range(100)])}
    arrays["train_labels"] = (np.arange(40) % 100).astype(np.uint8)
    folder = packed(tmp_path, "cifar100", arrays=arrays)
    np.savez(folder / "coarse.npz", train_coarse_labels=(arrays["train_labels"] // 5).astype(np.uint8),
             test_coarse_labels=(arrays["test_labels"] // 5).astype(np.uint8),
             coarse_classes=np.array([f"super{i}" for i in range(20)]))
    arr = datasets.load_dataset("cifar100", tmp_path, download=False)
    coarse = sources.select_labels(arr, "coarse")
    assert len(arr.classes) == 100 and coarse.classes[:2] == ("super0", "super1")
    assert coarse.train_labels.tolist() == (arr.train_labels // 5).tolist()
    np.savez(folder / "coarse.npz", train_coarse_labels=np.full(40, 20, np.uint8),
             test_coarse_labels=np.zeros(20, np.uint8), coarse_classes=np.array([f"s{i}" for i in range(20)]))
    with pytest.raises(DataError, match=r"train_coarse_labels must be 40 integers in 0\.\.19"):
        datasets.load_dataset("cifar100", tmp_path, download=False)


@pytest.mark.parametrize("name,n_classes,first,mean", [
    ("cifar10", 10, "airplane", (125.31, 122.95, 113.87)),
    ("cifar100", 100, "apple", (129.30, 124.07, 112.43)),
])
def test_the_real_packs(name, n_classes, first, mean):
    if not pack.is_pack(REAL / name):
        pytest.skip(f"{REAL / name} holds no pack")
    arr = datasets.load_dataset(name, REAL, download=False)
    assert arr.train_images.shape == (50000, 32, 32, 3) and arr.test_images.shape == (10000, 32, 32, 3)
    assert len(arr.classes) == n_classes and arr.classes[0] == first
    assert np.bincount(arr.train_labels).tolist() == [50000 // n_classes] * n_classes
    # the published per-channel means of the training images
    assert np.allclose(arr.train_images.mean(axis=(0, 1, 2)), mean, atol=0.01)
    if name == "cifar100":
        coarse = sources.select_labels(arr, "coarse")
        assert len(coarse.classes) == 20 and coarse.classes[0] == "aquatic_mammals"
        assert np.bincount(coarse.test_labels).tolist() == [500] * 20
