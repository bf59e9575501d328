"""CIFAR-100 end to end: a small synthetic archive in the official format, a run with a 100-way
head recording top-1 and top-5, a study report with its top-5 column, and the refusals."""

import dataclasses
import hashlib
import json
import pickle
import tarfile

import numpy as np

from cifarlab import cli
from cifarlab.data import sources

SMALL = ["--set", "model.widths=[8, 16]", "--set", "model.dense=[16]", "--set", "train.epochs=1",
         "--set", "train.batch_size=100", "--set", "data.val_size=100", "--set", "train.threads=1",
         "--no-progress", "--no-download"]
TINY = [*SMALL, "--set", "data.dataset=cifar100"]


def official_cifar100(root, monkeypatch, n_train=600, n_test=200):
    """root/cifar-100-python.tar.gz in the official layout, with OFFICIAL's MD5s patched to it and its files."""
    rng = np.random.default_rng(0)
    palette = rng.integers(20, 235, size=(100, 3))

    def split(n):
        fine = np.arange(n) % 100
        pixels = np.clip(palette[fine][:, :, None] + rng.normal(0, 20, (n, 3, 1024)), 0, 255).astype(np.uint8)
        return {b"data": pixels.reshape(n, 3072), b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist()}

    build = root / "build" / "cifar-100-python"
    build.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        (build / name).write_bytes(pickle.dumps(split(n), protocol=2))
    (build / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                               b"coarse_label_names": [f"super{i}".encode() for i in range(20)]},
                                              protocol=2))
    data = root / "data"
    data.mkdir()
    archive = data / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(build, arcname="cifar-100-python")
    files = tuple((fname, hashlib.md5((build / fname).read_bytes()).hexdigest()) for fname in ("train", "test", "meta"))
    spec = dataclasses.replace(sources.OFFICIAL["cifar100"], md5=hashlib.md5(archive.read_bytes()).hexdigest(),
                               file_md5=files)
    monkeypatch.setitem(sources.OFFICIAL, "cifar100", spec)
    return data


def test_cifar100_end_to_end(tmp_path, monkeypatch, capsys):
    data = official_cifar100(tmp_path, monkeypatch)
    experiment = cli_experiment()
    out = tmp_path / "run"
    assert cli.main(["run", experiment, *TINY, "--data-dir", str(data), "--out", str(out)]) == 0
    final = json.loads((out / "final.json").read_text())
    assert len(final["classes"]) == 100 and final["classes"][0] == "fine0"
    assert len(final["per_class_test_acc"]) == 100
    assert 0 < final["test_top5"] <= 1 and final["test_top5"] >= final["test_acc"]
    assert final["val_top5"] >= final["val_acc"]
    # a 100-way checkpoint resumed as a 10-class (CIFAR-10) run is refused in one line
    np.savez(data / "cifar10.npz", **_cifar10_like())
    capsys.readouterr()
    assert cli.main(["run", experiment, *SMALL, "--data-dir", str(data), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "belongs to different settings" in err
    # coarse labels: the superclasses of the official format, a 20-way head
    coarse = tmp_path / "coarse"
    assert cli.main(["run", experiment, *TINY, "--set", "data.labels=coarse", "--data-dir", str(data),
                     "--out", str(coarse)]) == 0
    assert json.loads((coarse / "final.json").read_text())["classes"][:2] == ["super0", "super1"]


def _cifar10_like():
    from conftest import synthetic_arrays
    return synthetic_arrays(300, 100)


def cli_experiment():
    from conftest import REPO
    return str(REPO / "experiments" / "fast" / "baseline.toml")


def test_cifar100_missing_everywhere_names_every_place_tried(tmp_path, capsys):
    assert cli.main(["run", cli_experiment(), *TINY, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cifarlab: error: CIFAR-100 not found: tried ")
    for place in ("cifar100/cifar100.npz", "cifar100.npz", "cifar-100-python", "cifar-100-python.tar.gz"):
        assert str(tmp_path / place) in err
    assert "Put cifar-100-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz)" in err


def test_a_cifar100_study_report_shows_top5(tmp_path, monkeypatch):
    data = official_cifar100(tmp_path, monkeypatch)
    study = tmp_path / "c100.toml"
    study.write_text(f'''name = "c100"
experiment = "{cli_experiment()}"
seeds = [0]
set = {{ "data.dataset" = "cifar100", "model.widths" = [8, 16], "model.dense" = [16], "train.epochs" = 1, \
"train.batch_size" = 100, "data.val_size" = 100 }}
[[variants]]
name = "base"
''')
    db = tmp_path / "r.db"
    assert cli.main(["study", "run", str(study), "--db", str(db), "--runs-dir", str(tmp_path / "runs"),
                     "--data-dir", str(data), "--no-download", "--no-progress", "--threads", "1"]) == 0
    assert cli.main(["report", str(study), "--db", str(db), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "README.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| experiment |"))
    assert "| test top-5 acc |" in header
    row = next(line for line in text.splitlines() if line.startswith("| `base` |"))
    top1, top5 = (float(row.split(" | ")[i].split()[0]) for i in (2, 3))   # "mean (median m)" when at chance
    assert top5 >= top1 > 0
