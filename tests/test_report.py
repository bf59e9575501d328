"""Statistics helpers, study summaries, README/figures and CSV export, on a hand-filled database."""

from __future__ import annotations

import csv
import json
import math

import pytest
from matplotlib import image

from cifarlab import config as C
from cifarlab.errors import UserError
from cifarlab.report import StudySpec, export_csv, summarize, write_report
from cifarlab.results.store import open_store
from cifarlab.stats import ci95, mean_std, paired_diff, t_quantile_975

# ----------------------------------------------------------------------------- stats


def test_mean_std_known_values():
    assert mean_std([1, 2, 3, 4]) == pytest.approx((2.5, 1.2909944487))
    mean, std = mean_std([5.0])
    assert mean == 5.0 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([]))


def test_t_quantile_table_interpolation_and_limit():
    assert t_quantile_975(1) == 12.706
    assert t_quantile_975(2) == 4.303
    assert t_quantile_975(30) == 2.042
    assert t_quantile_975(50) == pytest.approx(2.0086, abs=5e-4)  # exact value 2.0086
    assert t_quantile_975(120) == 1.980
    assert t_quantile_975(1000) == 1.960
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_ci95_and_paired_diff_known_values():
    assert ci95([1, 2, 3, 4]) == pytest.approx((2.5 - 2.0539, 2.5 + 2.0539), abs=1e-4)  # 3.182*1.29099/2
    assert all(math.isnan(v) for v in ci95([1.0]))
    # Common seeds 0, 1, 2: differences 1, 1, 3; seed 5 has no partner.
    mean, lo, hi, n = paired_diff({0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.0, 1: 1.0, 2: 1.0, 5: 9.0})
    half = 4.303 * math.sqrt(4 / 3) / math.sqrt(3)
    assert n == 3
    assert (mean, lo, hi) == pytest.approx((5 / 3, 5 / 3 - half, 5 / 3 + half))
    assert paired_diff({0: 1.0}, {1: 1.0})[3] == 0


# ----------------------------------------------------------------------------- database fixture

BASE_TEST = {0: 0.70, 1: 0.72, 2: 0.71}
FLIP_TEST = {0: 0.73, 1: 0.76, 2: 0.74}


def cfg(name: str, seed: int, **sections) -> dict:
    return C.to_dict(C.from_dict({"name": name, "train": {"seed": seed, "epochs": 3}, **sections}))


def add_run(store, exp, seed, h, config, status="done", test=None, **extra):
    values = {"study": "s", "experiment": exp, "seed": seed, "config_hash": h, "config": json.dumps(config),
              "status": status, "created": 0.0, "test_acc": test, **extra}
    if status == "done":
        values.update({"git_commit": "abc123", "git_dirty": 0, "machine": "box1", "wall_seconds": 100.0 + 10 * seed,
                       "images_per_s": 500.0 + 20 * seed, "val_acc": test - 0.01 if test else None,
                       "versions": json.dumps({"torch": "2.13.0", "python": "3.11.9"}), **extra})
    cols = ", ".join(values)
    cur = store.conn.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(values))})",
                             tuple(values.values()))
    for epoch in (1, 2, 3) if status == "done" else ():
        store.conn.execute("INSERT INTO epochs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (cur.lastrowid, epoch, 2.0 / epoch + seed * 0.01, 0.3 + 0.1 * epoch + seed * 0.01,
                            2.1 / epoch, 0.28 + 0.1 * epoch, 0.01, 5.0))


@pytest.fixture
def store(tmp_path):
    st = open_store(tmp_path / "r.db")
    for seed in (0, 1, 2):
        add_run(st, "base", seed, "hb", cfg("base", seed), test=BASE_TEST[seed])
        add_run(st, "flip", seed, "hf", cfg("flip", seed, augment={"flip": True}), test=FLIP_TEST[seed])
    wide = cfg("wide", 0, model={"widths": [64, 128, 256]})
    add_run(st, "wide", 0, "hw", wide, test=0.75)
    add_run(st, "wide", 1, "hw", wide, status="running")
    add_run(st, "wide", 2, "hw", wide, status="failed", error="boom")
    # A superseded config of flip, newest by id: only the hash filter keeps it out.
    add_run(st, "flip", 0, "old", cfg("flip", 0, augment={"flip": True, "translate": 0.1}), test=0.10,
            git_commit="def456", git_dirty=1)
    yield st
    st.close()


SPEC = StudySpec(name="s", reference="base", experiments=("base", "flip", "wide", "ghost"),
                 targets={"base": 0.73}, hashes={"base": "hb", "flip": "hf", "wide": "hw", "ghost": "hg"},
                 notes={"flip": "random horizontal flips"})


# ----------------------------------------------------------------------------- summary

def test_summary_matches_hand_computed_numbers(store):
    by = {s["experiment"]: s for s in summarize(store, SPEC)}
    assert [s["experiment"] for s in summarize(store, SPEC)] == list(SPEC.experiments)
    base, flip = by["base"], by["flip"]
    assert base["n"] == 3 and base["seeds"] == [0, 1, 2]
    assert (base["test_mean"], base["test_std"]) == pytest.approx((0.71, 0.01))
    assert (base["test_lo"], base["test_hi"]) == pytest.approx((0.71 - 4.303 * 0.01 / math.sqrt(3),
                                                                0.71 + 4.303 * 0.01 / math.sqrt(3)))
    assert (base["val_mean"], base["val_std"]) == pytest.approx((0.70, 0.01))
    assert base["wall_mean"] == pytest.approx(110.0) and base["images_per_s_mean"] == pytest.approx(520.0)
    assert base["target"] == 0.73 and base["config_diff"] == {}
    # flip - base per seed: 0.03, 0.04, 0.03 (the stale 0.10 row is ignored).
    half = 4.303 * math.sqrt(1 / 3) * 0.01 / math.sqrt(3)
    assert flip["test_mean"] == pytest.approx(2.23 / 3)
    assert (flip["diff_mean"], flip["diff_lo"], flip["diff_hi"], flip["diff_n"]) == pytest.approx(
        (0.1 / 3, 0.1 / 3 - half, 0.1 / 3 + half, 3))
    assert flip["config_diff"] == {"augment.flip": (False, True)}
    assert by["wide"]["n"] == 1 and math.isnan(by["wide"]["test_std"]) and by["wide"]["diff_n"] == 1
    assert by["ghost"]["n"] == 0 and by["ghost"]["config_diff"] is None


def test_without_hashes_newest_row_wins(store):
    spec = StudySpec(name="s", reference="base", experiments=("base", "flip"), targets={})
    flip = summarize(store, spec)[1]
    assert flip["test_mean"] == pytest.approx((0.10 + 0.76 + 0.74) / 3)


def test_spec_is_checked():
    with pytest.raises(UserError, match="reference"):
        StudySpec(name="s", reference="nope", experiments=("a",), targets={})
    with pytest.raises(UserError, match="targets"):
        StudySpec(name="s", reference="a", experiments=("a",), targets={"b": 0.5})
    with pytest.raises(UserError, match="hash"):
        StudySpec(name="s", reference="a", experiments=("a", "b"), targets={}, hashes={"a": "x"})


# ----------------------------------------------------------------------------- README and figures

def test_readme_table_config_diff_and_provenance(store, tmp_path):
    readme = write_report(store, SPEC, tmp_path / "out", "cifarlab report s")
    text = readme.read_text(encoding="utf-8")
    assert readme == tmp_path / "out" / "README.md"
    assert "cifarlab report s" in text and "read from the results database" in text
    assert "| `base` | 3 | 71.00 ± 1.00 | [68.52, 73.48] | reference | 73.00 | 70.00 ± 1.00 | 110 | 520 |" in text
    assert "| `flip` | 3 | 74.33 ± 1.53 | [70.54, 78.13] | +3.33 [+1.90, +4.77] (n=3) | — |" in text
    assert "| `wide` | 1 | 75.00 | — | +5.00 [n<2] (n=1) | — | 74.00 | 100 | 500 |" in text
    assert "| `ghost` | 0 | — | — | — | — | — | — | — |" in text
    assert "- `augment.flip: false -> true`" in text
    assert "- `model.widths: [32, 64, 128] -> [64, 128, 256]`" in text
    assert "train.seed" not in text and "`name" not in text
    assert "- `flip`: random horizontal flips" in text
    assert "### `ghost`\n\n- (no runs recorded)" in text
    assert "![" in text and "(learning_curves.png)" in text and "(test_accuracy.png)" in text
    assert "- git commits: `abc123`\n" in text  # the stale row's commit is not counted
    assert "- torch versions: `2.13.0`" in text and "- machines: `box1`" in text
    # 3*110 + 3*110 + 100 s = 760 s
    assert ("- total training wall time of this study on `box1`: 0 h 13 min over 7 runs (0.21 machine-hours"
            in text)
    assert "## Findings" not in text and "epochs to val" not in text
    assert "- run status: done 7, running 1, pending 0, failed 1" in text


def test_figures_open_and_are_large_enough(store, tmp_path):
    write_report(store, SPEC, tmp_path, "cmd")
    for name in ("learning_curves.png", "test_accuracy.png"):
        height, width = image.imread(tmp_path / name).shape[:2]
        assert width >= 400 and height >= 300, name


def test_report_is_byte_for_byte_reproducible(store, tmp_path):
    files = ("README.md", "learning_curves.png", "test_accuracy.png")
    write_report(store, SPEC, tmp_path / "a", "cmd")
    write_report(store, SPEC, tmp_path / "b", "cmd")
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


# ----------------------------------------------------------------------------- CSV

def test_export_csv_rows_and_columns(store, tmp_path):
    runs_path, epochs_path = export_csv(store, tmp_path, "s")
    with runs_path.open(newline="") as f:
        runs = list(csv.DictReader(f))
    with epochs_path.open(newline="") as f:
        epochs = list(csv.DictReader(f))
    assert len(runs) == 10 and len(epochs) == 8 * 3  # 8 done runs, 3 epochs each
    assert {"version_torch", "version_python", "config", "per_class_test_acc"} <= set(runs[0])
    assert "versions" not in runs[0]
    assert runs[0]["version_torch"] == "2.13.0" and json.loads(runs[0]["config"])["name"] == "base"
    assert [(r["experiment"], r["seed"]) for r in runs][:3] == [("base", "0"), ("base", "1"), ("base", "2")]
    assert list(epochs[0])[:6] == ["study", "experiment", "seed", "config_hash", "run_id", "epoch"]
    with pytest.raises(UserError, match="no runs"):
        export_csv(store, tmp_path, "other")
