"""scripts/device_data.py: CIFAR-10 in xz parts for a machine that takes little data per call."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_data.py"
spec = importlib.util.spec_from_file_location("device_data", SCRIPT)
dd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dd)

CLASSES = np.array(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])


def small_npz(path: Path) -> dict:
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.integers(-9, 10, (12, 32, 32, 3)), axis=2)  # image-like: neighbours correlate
    arrays = {"train_images": (smooth[:7] % 256).astype(np.uint8),
              "test_images": rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),  # edge values too
              "train_labels": rng.integers(0, 10, 7).astype(np.uint8),
              "test_labels": rng.integers(0, 10, 5).astype(np.uint8), "classes": CLASSES}
    arrays["test_images"][0] = 255
    arrays["test_images"][1] = 0
    np.savez_compressed(path, **arrays)
    return arrays


def test_pack_then_unpack_gives_back_every_array_bit_for_bit(tmp_path):
    arrays = small_npz(tmp_path / "in.npz")
    dd.pack(tmp_path / "in.npz", tmp_path / "parts", parts=3)
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["manifest.json", "part0.xz", "part1.xz", "part2.xz"]
    dd.unpack(tmp_path / "parts", tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz", allow_pickle=False) as got:
        for key, want in arrays.items():
            assert got[key].dtype == want.dtype and np.array_equal(got[key], want), key


def packed(tmp_path: Path) -> Path:
    small_npz(tmp_path / "in.npz")
    dd.pack(tmp_path / "in.npz", tmp_path / "parts", parts=2)
    return tmp_path / "parts"


def assert_refused(folder: Path, message: str) -> None:
    out = folder.parent / "out.npz"
    with pytest.raises(SystemExit, match=message):
        dd.unpack(folder, out)
    assert not out.exists()


def test_a_damaged_part_is_refused(tmp_path):
    part = packed(tmp_path) / "part1.xz"
    part.write_bytes(part.read_bytes()[:-1] + b"\0")
    assert_refused(part.parent, "part1.xz: SHA-256 differs")


def test_a_decoded_array_that_differs_from_its_recorded_hash_writes_nothing(tmp_path):
    manifest_file = packed(tmp_path) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["small"]["test_labels"][0] = (manifest["small"]["test_labels"][0] + 1) % 10
    manifest_file.write_text(json.dumps(manifest))
    assert_refused(manifest_file.parent, "test_labels: SHA-256 of the decoded array differs")


def test_a_missing_part_is_named(tmp_path):
    folder = packed(tmp_path)
    (folder / "part1.xz").unlink()
    assert_refused(folder, "missing part1.xz; carry every part")


def test_parts_below_one_is_a_one_line_error(tmp_path):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, str(SCRIPT), "pack", str(tmp_path / "in.npz"), str(tmp_path / "out"),
                        "--parts", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--parts must be >= 1, got 0" in r.stderr and "Traceback" not in r.stderr
