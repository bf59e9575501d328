"""Imagenette as JPEG folders: a tiny imagenette2 tree the test builds (with a grayscale JPEG),
labels from the CSV's columns, the cache, and one-line refusals."""

import csv

import numpy as np
import pytest
from PIL import Image

from cifarlab import config as C
from cifarlab.data import datasets, imagefolder, sources
from cifarlab.data.loader import make_splits
from cifarlab.errors import ConfigError, DataError

WNIDS = sorted(imagefolder.CLASSES)


def tree(root, per_class=3, size=(40, 30)):
    """root/imagenette/{train,val}/<wnid>/*.JPEG and noisy_imagenette.csv; the first image grayscale."""
    folder = root / "imagenette"
    rows, rng = [], np.random.default_rng(0)
    for split in ("train", "val"):
        for c, wnid in enumerate(WNIDS):
            (folder / split / wnid).mkdir(parents=True)
            for i in range(per_class):
                rel = f"{split}/{wnid}/{wnid}_{i}.JPEG"
                pixels = np.full((size[1], size[0], 3), 20 * c, np.uint8) + rng.integers(0, 10, (size[1], size[0], 3),
                                                                                          dtype=np.uint8)
                im = Image.fromarray(pixels)
                (im.convert("L") if not rows else im).save(folder / rel, quality=90)
                noisy = WNIDS[(c + 1) % 10] if split == "train" and i == 0 else wnid
                rows.append({"path": rel, "noisy_labels_0": wnid, "noisy_labels_1": wnid, "noisy_labels_5": wnid,
                             "noisy_labels_25": noisy, "noisy_labels_50": noisy,
                             "is_valid": "True" if split == "val" else "False"})
    with open(folder / "noisy_imagenette.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder


def test_a_tiny_tree_loads_at_the_chosen_side_with_its_label_columns(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    folder = tree(tmp_path)
    a = datasets.load_dataset("imagenette", tmp_path, download=False, image_size=24)
    assert a.train_images.shape == (30, 24, 24, 3) and a.test_images.shape == (30, 24, 24, 3)
    assert a.classes[0] == "tench" and len(a.classes) == 10
    gray = a.train_images[0]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()   # replicated to RGB
    assert "decoded 60 Imagenette JPEGs at 24 px" in capsys.readouterr().out
    again = datasets.load_dataset("imagenette", tmp_path, download=False, image_size=24)  # from the cache
    assert np.array_equal(again.train_images, a.train_images) and "decoded" not in capsys.readouterr().out
    noisy = datasets.load_dataset("imagenette", tmp_path, download=False, image_size=24, label_column="noisy_labels_50")
    assert (noisy.train_labels != a.train_labels).sum() == 10 and np.array_equal(noisy.test_labels, a.test_labels)
    cfg = C.from_dict({"data": {"dataset": "imagenette", "image_size": 24, "label_column": "noisy_labels_50",
                                "val_size": 10}}).data
    splits = make_splits(noisy, cfg)
    assert splits.image_size == 24 and splits.noise["flipped"] == 10
    assert (splits.train.clean is not None) and splits.test.clean is None
    assert str(folder) in datasets.describe("imagenette", tmp_path)


def test_a_corrupt_jpeg_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    folder = tree(tmp_path, per_class=1)
    bad = folder / "train" / WNIDS[3] / f"{WNIDS[3]}_0.JPEG"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=f"{bad} is not a readable image"):
        datasets.load_dataset("imagenette", tmp_path, download=False, image_size=16)


def test_csv_problems_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    folder = tree(tmp_path, per_class=1)
    (folder / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG").unlink()
    with pytest.raises(DataError, match=f"lists train/{WNIDS[0]}/{WNIDS[0]}_0.JPEG, which is not in"):
        datasets.load_dataset("imagenette", tmp_path, download=False, image_size=16)
    text = (folder / "noisy_imagenette.csv").read_text().replace("noisy_labels_25", "noisy_labels_xx")
    (folder / "noisy_imagenette.csv").write_text(text)
    with pytest.raises(DataError, match="has no column 'noisy_labels_25'"):
        imagefolder.read_csv(folder, "noisy_labels_25")


def test_missing_everywhere_names_every_place_and_the_official_archive(tmp_path):
    with pytest.raises(DataError, match="Imagenette not found: tried .*imagenette2-160.tgz.*fast-ai-imageclas"):
        datasets.load_dataset("imagenette", tmp_path, download=False)


def test_imagenette_keys_are_checked():
    with pytest.raises(ConfigError, match="data.label_column = 'noisy_labels_7' is invalid"):
        C.from_dict({"data": {"dataset": "imagenette", "label_column": "noisy_labels_7"}})
    with pytest.raises(ConfigError, match="data.image_size and data.label_column are Imagenette's"):
        C.from_dict({"data": {"image_size": 64}})


def test_a_csv_label_outside_imagenettes_classes_is_named(tmp_path):
    folder = tree(tmp_path, per_class=1)
    with open(folder / "noisy_imagenette.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["noisy_labels_0"] = "n99999999"
    with open(folder / "noisy_imagenette.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(DataError, match="has the label 'n99999999' in noisy_labels_0, not one of"):
        imagefolder.read_csv(folder, "noisy_labels_0")
