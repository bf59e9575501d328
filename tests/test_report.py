"""Statistics helpers, study summaries, README/figures and CSV export, on a hand-filled database."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from cifarlab import config as C
from cifarlab.errors import UserError
from cifarlab.report import StudySpec, band_limits, summarize, write_report
from cifarlab.results.export import export_csv
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
    return cur.lastrowid


@pytest.fixture
def store(tmp_path):
    st = open_store(tmp_path / "r.db")
    for seed in (0, 1, 2):
        add_run(st, "base", seed, "hb", cfg("base", seed), test=BASE_TEST[seed])
        add_run(st, "flip", seed, "hf", cfg("flip", seed, augment={"pipeline": ["flip"]}), test=FLIP_TEST[seed])
    wide = cfg("wide", 0, model={"widths": [64, 128, 256]})
    add_run(st, "wide", 0, "hw", wide, test=0.75)
    add_run(st, "wide", 1, "hw", wide, status="running")
    add_run(st, "wide", 2, "hw", wide, status="failed", error="boom")
    # A superseded config of flip, newest by id: only the hash filter keeps it out.
    add_run(st, "flip", 0, "old", cfg("flip", 0, augment={"pipeline": ["flip", "translate"], "translate": 0.1}), test=0.10,
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
    assert (base["score_mean"], base["score_std"]) == pytest.approx((0.71, 0.01))
    assert (base["score_lo"], base["score_hi"]) == pytest.approx((0.71 - 4.303 * 0.01 / math.sqrt(3),
                                                                0.71 + 4.303 * 0.01 / math.sqrt(3)))
    assert (base["val_mean"], base["val_std"]) == pytest.approx((0.70, 0.01))
    assert base["wall_mean"] == pytest.approx(110.0) and base["images_per_s_mean"] == pytest.approx(520.0)
    assert base["target"] == 0.73 and base["config_diff"] == {}
    # flip - base per seed: 0.03, 0.04, 0.03 (the stale 0.10 row is ignored).
    half = 4.303 * math.sqrt(1 / 3) * 0.01 / math.sqrt(3)
    assert flip["score_mean"] == pytest.approx(2.23 / 3)
    assert (flip["diff_mean"], flip["diff_lo"], flip["diff_hi"], flip["diff_n"]) == pytest.approx(
        (0.1 / 3, 0.1 / 3 - half, 0.1 / 3 + half, 3))
    assert flip["config_diff"] == {"augment.pipeline": ([], ["flip"])}
    assert by["wide"]["n"] == 1 and math.isnan(by["wide"]["score_std"]) and by["wide"]["diff_n"] == 1
    assert by["ghost"]["n"] == 0 and by["ghost"]["config_diff"] is None


def test_without_hashes_newest_row_wins(store):
    spec = StudySpec(name="s", reference="base", experiments=("base", "flip"), targets={})
    flip = summarize(store, spec)[1]
    assert flip["score_mean"] == pytest.approx((0.10 + 0.76 + 0.74) / 3)


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
    assert ("| `base` | 3 | 71.00 ± 1.00 | [68.52, 73.48] | reference | 73.00 | 70.00 ± 1.00 | 61.00 ± 1.00 "
            "| 110 | 520 | — |") in text  # no class names recorded: no network to count
    assert "| `flip` | 3 | 74.33 ± 1.53 | [70.54, 78.13] | +3.33 [+1.90, +4.77] (n=3) | — |" in text
    assert "| `wide` | 1 | 75.00 | — | +5.00 [n<2] (n=1) | — | 74.00 | 60.00 | 100 | 500 |" in text
    assert "| `ghost` | 0 | — | — | — | — | — | — | — | — | — |" in text
    assert '- `augment.pipeline: [] -> ["flip"]`' in text
    assert "- `model.widths: [32, 64, 128] -> [64, 128, 256]`" in text
    assert "train.seed" not in text and "`name" not in text
    assert "- `flip`: random horizontal flips" in text
    assert "### `ghost`\n\n- (no runs recorded)" in text
    assert "![" in text and "(learning_curves.png)" in text and "(test_accuracy.png)" in text
    assert "- git commits: `abc123`\n" in text  # the stale row's commit is not counted
    assert "- torch versions: `2.13.0`" in text and "- machines: `box1`" in text
    assert "- runtimes (device, precision, layout, threads): `unrecorded`" in text
    # 3*110 + 3*110 + 100 s = 760 s
    assert ("- total training wall time of this study on `box1`: 0 h 13 min over 7 runs (0.21 process-hours"
            in text)
    assert "## Findings" not in text and "epochs to val" not in text
    assert "- run status: done 7, running 1, pending 0, failed 1" in text



def test_the_parameter_column_counts_each_experiments_network(store, tmp_path):
    store.conn.execute("UPDATE runs SET classes=?", (json.dumps([f"c{i}" for i in range(10)]),))
    text = write_report(store, SPEC, tmp_path, "cmd").read_text()
    assert "| 110 | 520 | 550,570 |" in text  # the tutorial's VGG
    wide = [line for line in text.splitlines() if line.startswith("| `wide` |")][0]
    # widths 64/128/256: 9*(3*64 + 64*64 + 64*128 + 128*128 + 128*256 + 256*256) + 64+64+128+128+256+256
    # conv weights and biases, then 256*16 -> 128 and 128 -> 10 dense layers
    convs = 9 * (3 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 256 * 256) + 2 * (64 + 128 + 256)
    assert wide.endswith(f"| {convs + 256 * 16 * 128 + 128 + 128 * 10 + 10:,} |")


def test_each_target_gets_its_distance_and_experiments_without_runs_none(store, tmp_path):
    spec = dataclasses.replace(SPEC, targets={"base": 0.73, "wide": 0.70, "ghost": 0.90})
    text = write_report(store, spec, tmp_path, "cmd").read_text()
    assert ("Against the published figures (mean test accuracy minus the target, in points): "
            "`base` -2.00 (n=3), `wide` +5.00 (n=1).\n") in text
    text = write_report(store, dataclasses.replace(SPEC, targets={}), tmp_path, "cmd").read_text()
    assert "Against the published figures" not in text


def test_runs_the_study_plans_but_the_database_lacks_count_as_not_started(store, tmp_path):
    # base, flip and wide have a row for each of seeds 0-2 (done, running or failed); ghost has none
    text = write_report(store, dataclasses.replace(SPEC, seeds=(0, 1, 2)), tmp_path, "cmd").read_text()
    assert "- run status: done 7, running 1, pending 0, failed 1, not started 3\n" in text
    text = write_report(store, dataclasses.replace(SPEC, seeds=(0, 1, 2, 3)), tmp_path, "cmd").read_text()
    assert "- run status: done 7, running 1, pending 0, failed 1, not started 7\n" in text


def test_a_study_not_complete_says_so_before_its_first_table_and_a_complete_one_does_not(store, tmp_path):
    text = write_report(store, dataclasses.replace(SPEC, seeds=(0, 1, 2)), tmp_path, "cmd").read_text()
    banner = "**Not complete**: 7 of 12 runs done. The tables and findings below cover the finished runs only"
    assert banner in text and text.index(banner) < text.index("## Results")
    complete = dataclasses.replace(SPEC, seeds=(0, 1, 2), experiments=("base", "flip"),
                                   hashes={"base": "hb", "flip": "hf"}, targets={})
    assert "Not complete" not in write_report(store, complete, tmp_path, "cmd").read_text()


def test_a_selection_study_reports_validation_accuracy_and_never_test(store, tmp_path):
    spec = dataclasses.replace(SPEC, selection=True, description="Chooses the flip setting.")
    text = write_report(store, spec, tmp_path, "cmd").read_text(encoding="utf-8")
    assert text.startswith("# Study `s`\n\nChooses the flip setting.\n") and "**A selection study**" in text
    # base: val = test - 0.01 per seed -> 70.00 ± 1.00; no separate val column
    assert "| experiment | n | validation acc mean ± std | 95% CI |" in text and "| val acc |" not in text
    assert "| `base` | 3 | 70.00 ± 1.00 | [67.52, 72.48] | reference | 73.00 | 61.00 ± 1.00 | 110 | 520 |" in text
    assert "71.00" not in text and "74.33" not in text  # no test mean anywhere
    assert (tmp_path / "validation_accuracy.png").exists() and not (tmp_path / "test_accuracy.png").exists()


def test_learning_curve_bands_stay_within_what_the_metric_can_take():
    mean, std = np.array([0.40, 0.85, 0.50]), np.array([0.50, 0.30, 0.10])
    low, high = band_limits(mean, std, "val_acc")
    assert low == pytest.approx([0.0, 0.55, 0.40]) and high == pytest.approx([0.90, 1.0, 0.60])
    low, high = band_limits(np.array([1.0]), np.array([2.0]), "train_loss")
    assert low == pytest.approx([0.0]) and high == pytest.approx([3.0])


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


# ----------------------------------------------------------------------------- groups and convergence

NOISY_TEST = {0: 0.72, 1: 0.70, 2: 0.73}
# Per seed, validation accuracy at epochs 1-3: seed 1 reaches 0.5 exactly at epoch 1, seed 2 never.
NOISY_VAL = {0: (0.40, 0.55, 0.60), 1: (0.50, 0.60, 0.70), 2: (0.30, 0.40, 0.45)}


@pytest.fixture
def grouped(store):
    for seed in (0, 1, 2):
        run_id = add_run(store, "noisy", seed, "hn", cfg("noisy", seed, optim={"lr": 0.02}), test=NOISY_TEST[seed])
        for epoch, val in enumerate(NOISY_VAL[seed], start=1):
            store.conn.execute("UPDATE epochs SET val_acc=? WHERE run_id=? AND epoch=?", (val, run_id, epoch))
    return store


GSPEC = StudySpec(name="s", reference="base", experiments=("base", "flip", "wide", "ghost", "noisy"), targets={},
                  hashes={"base": "hb", "flip": "hf", "wide": "hw", "ghost": "hg", "noisy": "hn"},
                  groups={"flip": "aug", "noisy": "noise", "wide": "size", "ghost": "empty", "base": "rev"},
                  questions={"aug": "Do flips help?", "noise": "Does a lower LR help?", "size": "Wider?",
                             "empty": "Ghost?", "rev": "Is flip better than no flip?"},
                  baselines={"aug": "base", "noise": "base", "size": "base", "rev": "flip"}, convergence=0.5)


def paired(a: dict, b: dict) -> tuple[float, float, float]:
    """Mean and 95% t-interval of a - b over seeds 0-2, computed here from the definition."""
    d = [a[s] - b[s] for s in (0, 1, 2)]
    mean = sum(d) / 3
    half = 4.303 * math.sqrt(sum((x - mean) ** 2 for x in d) / 2) / math.sqrt(3)
    return 100 * mean, 100 * (mean - half), 100 * (mean + half)


def finding_of(text: str, group: str) -> str:
    section = text.split(f"### `{group}`\n", 1)[1]
    return section.split("**Finding.** ", 1)[1].split("\n", 1)[0]


def test_group_table_lists_baseline_first_with_delta_against_it(grouped, tmp_path):
    text = write_report(grouped, GSPEC, tmp_path, "cmd").read_text(encoding="utf-8")
    assert text.index("## Results") < text.index("## Findings") < text.index("## Figures")
    order = [text.index(f"### `{g}`") for g in GSPEC.questions]
    assert order == sorted(order)
    aug = text.split("### `aug`\n", 1)[1].split("### `noise`", 1)[0]
    assert "**Question.** Do flips help?" in aug
    assert "| experiment | n | test acc mean ± std | 95% CI | Δ vs `base` (paired, 95% CI) | target | val acc " \
           "| train acc, last epoch | wall s/run | img/s | parameters | epochs to val ≥ 50% | s to val ≥ 50% |" in aug
    rows = [line for line in aug.splitlines() if line.startswith("| `")]
    # train acc: the last (3rd) epoch's, 0.6 + 0.01 * seed in the fixture
    assert rows == ["| `base` | 3 | 71.00 ± 1.00 | [68.52, 73.48] | reference | — | 70.00 ± 1.00 | 61.00 ± 1.00 "
                    "| 110 | 520 | — | 3.0 ± 0.0 | 15 ± 0 |",
                    "| `flip` | 3 | 74.33 ± 1.53 | [70.54, 78.13] | +3.33 [+1.90, +4.77] (n=3) | — "
                    "| 73.33 ± 1.53 | 61.00 ± 1.00 | 110 | 520 | — | 3.0 ± 0.0 | 15 ± 0 |"]
    rev = text.split("### `rev`\n", 1)[1]
    assert [line.split(" | ")[0] for line in rev.splitlines() if line.startswith("| `")] == ["| `flip`", "| `base`"]
    assert "| `base` | 3 | 71.00 ± 1.00 | [68.52, 73.48] | -3.33 [-4.77, -1.90] (n=3) |" in rev
    assert "![aug: test accuracy, mean over seeds, 95% CI](group_aug.png)" in aug and "(curves_aug.png)" in aug
    for group in (g for g in GSPEC.questions if g != "empty"):   # a group without a finished run draws none
        for name in (f"group_{group}.png", f"curves_{group}.png"):
            height, width = image.imread(tmp_path / name).shape[:2]
            assert width >= 400 and height >= 300, name


def test_finding_sentences_use_hand_computed_numbers(grouped, tmp_path):
    text = write_report(grouped, GSPEC, tmp_path, "cmd").read_text(encoding="utf-8")
    d, lo, hi = paired(FLIP_TEST, BASE_TEST)
    assert finding_of(text, "aug") == (
        f"Best in this group: `flip` at 74.33 ± 1.53 % (n=3); against the baseline `base` it differs by {d:+.2f} "
        f"points, paired 95% CI [{lo:+.2f}, {hi:+.2f}] over 3 common seeds, so the difference is "
        "distinguishable from seed noise at this n.")
    d, lo, hi = paired(NOISY_TEST, BASE_TEST)
    assert lo < 0 < hi
    assert finding_of(text, "noise") == (
        f"Best in this group: `noisy` at 71.67 ± 1.53 % (n=3); against the baseline `base` it differs by "
        f"{d:+.2f} points, paired 95% CI [{lo:+.2f}, {hi:+.2f}] over 3 common seeds, so the difference is not "
        "distinguishable from seed noise at this n.")
    assert finding_of(text, "size") == (
        "Best in this group: `wide` at 75.00 % (n=1); against the baseline `base` it differs by +5.00 points on "
        "1 common seed: too few seeds to say whether that is more than seed noise.")
    assert finding_of(text, "empty") == "No finished runs yet."
    d, lo, hi = paired(BASE_TEST, FLIP_TEST)
    assert finding_of(text, "rev") == (
        f"Best in this group: `flip` at 74.33 ± 1.53 % (n=3), the baseline itself; the runner-up `base` differs "
        f"from it by {d:+.2f} points, paired 95% CI [{lo:+.2f}, {hi:+.2f}] over 3 common seeds, so the difference is "
        "distinguishable from seed noise at this n.")


def test_a_finding_sorts_the_rest_of_a_group_by_whether_seed_noise_explains_their_difference():
    from cifarlab.report.markdown import finding

    def row(name, n, mean, diff_n=3, d=0.0, lo=-0.01, hi=0.01):
        return {"experiment": name, "n": n, "score_mean": mean, "score_std": 0.01, "diff_n": diff_n,
                "diff_mean": d, "diff_lo": lo, "diff_hi": hi}
    base, a = row("base", 3, 0.80), row("a", 3, 0.85, d=0.05, lo=0.03, hi=0.07)
    rest = [row("b", 3, 0.78, d=-0.02, lo=-0.03, hi=-0.01), row("c", 3, 0.81, d=0.01, lo=-0.01, hi=0.03),
            row("d", 1, 0.70, diff_n=1, d=-0.1), row("e", 0, float("nan"), diff_n=0)]
    text = finding([base, a, *rest])
    assert text.endswith(" The others against the baseline (points, paired 95% CI): distinguishable from seed "
                         "noise: `b` -2.00 [-3.00, -1.00]; not distinguishable: `c` +1.00 [-1.00, +3.00]; fewer "
                         "than 2 common seeds: `d`."), text
    assert "`a`" not in text.split("The others")[1]   # the best is said once, in the first sentence
    # the baseline best: its runner-up is in the first sentence, the rest in the second
    text = finding([row("base", 3, 0.90), row("x", 3, 0.85, d=-0.05, lo=-0.07, hi=-0.03),
                    row("y", 3, 0.84, d=-0.06, lo=-0.1, hi=0.0)])
    assert "the runner-up `x`" in text and text.endswith("not distinguishable: `y` -6.00 [-10.00, +0.00].")
    assert "The others" not in finding([base, a])   # a pair has no rest


def convergence_of(text: str, group: str) -> str:
    section = text.split(f"### `{group}`\n", 1)[1]
    return section.split("**Convergence.** ", 1)[1].split("\n", 1)[0]


def test_convergence_sentences(grouped, tmp_path):
    flip_ids = [r[0] for r in grouped.conn.execute("SELECT id FROM runs WHERE experiment='flip'")]
    for run_id in flip_ids:  # flip now crosses 50% at epoch 1 (5 s) in every seed; base at epoch 3 (15 s)
        grouped.conn.execute("UPDATE epochs SET val_acc=0.6 WHERE run_id=? AND epoch=1", (run_id,))
    text = write_report(grouped, GSPEC, tmp_path, "cmd").read_text(encoding="utf-8")
    assert convergence_of(text, "aug") == (
        "Fastest to val ≥ 50% in every seed: `flip`, 1.0 ± 0.0 epochs (5 ± 0 s); the baseline `base` takes "
        "3.0 ± 0.0 epochs (15 ± 0 s).")
    assert convergence_of(text, "rev") == (
        "Fastest to val ≥ 50% in every seed: `flip`, 1.0 ± 0.0 epochs (5 ± 0 s) (the baseline itself).")
    assert convergence_of(text, "noise") == (
        "Fastest to val ≥ 50% in every seed: `base`, 3.0 ± 0.0 epochs (15 ± 0 s) (the baseline itself). "
        "Not in every seed: `noisy` (2 of 3).")
    # a group without a finished run has no table, figures or convergence line (the next group follows)
    empty = text.split("### `empty`\n", 1)[1].split("### `", 1)[0]
    assert "**Convergence.**" not in empty and "| experiment |" not in empty and "![" not in empty
    assert "Its experiments, `ghost`, have no finished run: no table or figures yet." in empty
    assert "**Convergence.**" not in write_report(grouped, dataclasses.replace(GSPEC, convergence=None),
                                                  tmp_path / "off", "cmd").read_text(encoding="utf-8")


def test_convergence_epochs_and_seconds(grouped):
    by = {s["experiment"]: s for s in summarize(grouped, GSPEC)}
    noisy = by["noisy"]  # seed 0: epoch 2 (10 s), seed 1: epoch 1 (5 s), seed 2: never
    assert (noisy["threshold_reached"], noisy["threshold_never"]) == (2, 1)
    assert (noisy["epochs_to_threshold_mean"], noisy["epochs_to_threshold_std"]) == pytest.approx(
        (1.5, math.sqrt(0.5)))
    assert (noisy["seconds_to_threshold_mean"], noisy["seconds_to_threshold_std"]) == pytest.approx(
        (7.5, math.sqrt(12.5)))
    assert by["base"]["epochs_to_threshold_mean"] == 3 and by["base"]["seconds_to_threshold_mean"] == 15
    assert by["ghost"]["threshold_reached"] == 0 and by["ghost"]["threshold_never"] == 0
    assert "epochs_to_threshold_mean" not in summarize(grouped, SPEC)[0]


def test_convergence_columns(grouped, tmp_path):
    text = write_report(grouped, GSPEC, tmp_path, "cmd").read_text(encoding="utf-8")
    table = text.split("## Findings", 1)[0]
    assert "| 1.5 ± 0.7; 1 of 3 never reached | 8 ± 4 |" in table
    assert "| `wide` | 1 | 75.00 | — | +5.00 [n<2] (n=1) | — | 74.00 | 60.00 | 100 | 500 | — | 3.0 | 15 |" in table
    assert "| `ghost` | 0 | — | — | — | — | — | — | — | — | — | — | — |" in table
    never = StudySpec(name="s", reference="base", experiments=("base",), targets={}, hashes={"base": "hb"},
                      convergence=0.99)
    text = write_report(grouped, never, tmp_path / "never", "cmd").read_text(encoding="utf-8")
    assert "| epochs to val ≥ 99% | s to val ≥ 99% |" in text and "| never (3 of 3) | — |" in text


def test_group_spec_is_checked():
    with pytest.raises(UserError, match="undeclared group 'g'; declared: h"):
        StudySpec(name="s", reference="a", experiments=("a", "b"), targets={}, groups={"b": "g"},
                  questions={"h": "?"})
    with pytest.raises(UserError, match="baseline 'z'"):
        StudySpec(name="s", reference="a", experiments=("a", "b"), targets={}, groups={"b": "g"},
                  questions={"g": "?"}, baselines={"g": "z"})
    with pytest.raises(UserError, match="letters, digits"):
        StudySpec(name="s", reference="a", experiments=("a",), targets={}, groups={"a": "x/y"},
                  questions={"x/y": "?"})
    with pytest.raises(UserError, match="convergence"):
        StudySpec(name="s", reference="a", experiments=("a",), targets={}, convergence=80)
    with pytest.raises(UserError, match="`also` of group 'g' names z"):
        StudySpec(name="s", reference="a", experiments=("a", "b"), targets={}, groups={"b": "g"},
                  questions={"g": "?"}, also={"g": ("z",)})
    shared = StudySpec(name="s", reference="a", experiments=("a", "b", "c"), targets={}, groups={"b": "g", "c": "h"},
                       questions={"g": "?", "h": "?"}, baselines={"g": "a"}, also={"g": ("c",)})
    assert shared.members("g") == ["a", "b", "c"] and shared.members("h") == ["c"]  # c: its own group and g



def test_a_group_says_which_of_its_rows_it_borrows_from_other_groups(grouped, tmp_path):
    spec = dataclasses.replace(GSPEC, also={"aug": ("wide", "noisy")})
    text = write_report(grouped, spec, tmp_path, "cmd").read_text(encoding="utf-8")
    aug = text.split("### `aug`\n", 1)[1].split("### ", 1)[0]
    assert "| `wide` | 1 |" in aug and "| `noisy` | 3 |" in aug
    assert "Shown here from other groups: `wide` (group `size`), `noisy` (group `noise`).\n" in aug
    assert "Shown here from other groups" not in text.split("### `size`\n", 1)[1].split("### ", 1)[0]


def test_grouped_report_is_byte_for_byte_reproducible(grouped, tmp_path):
    write_report(grouped, GSPEC, tmp_path / "a", "cmd")
    write_report(grouped, GSPEC, tmp_path / "b", "cmd")
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b")) and len(names) == 3 + 2 * (len(GSPEC.questions) - 1)  # `empty` draws none
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_runs_that_ended_early_are_listed(store, tmp_path):
    store.conn.execute("UPDATE runs SET stopped='diverged: non-finite training loss at epoch 2 of 3' "
                       "WHERE experiment='base' AND seed=2")
    text = write_report(store, SPEC, tmp_path, "cmd").read_text(encoding="utf-8")
    assert ("Runs that ended early:\n\n- `base` seed 2: diverged: non-finite training loss at epoch 2 of 3; the "
            "statistics include it, with the accuracies of the model it ended with.") in text
    assert "| `base` | 3 | 71.00 ± 1.00 (median 71.00) |" in text  # still counted, and the median beside it
    store.conn.execute("UPDATE runs SET stopped=NULL")
    assert "Runs that ended early:" not in write_report(store, SPEC, tmp_path / "b", "cmd").read_text(encoding="utf-8")


def test_runs_that_never_left_chance_are_listed(store, tmp_path):
    ten = json.dumps([f"c{i}" for i in range(10)])
    store.conn.execute("UPDATE runs SET classes=?", (ten,))
    base1 = store.conn.execute("SELECT id FROM runs WHERE experiment='base' AND seed=1").fetchone()[0]
    store.conn.execute("UPDATE epochs SET val_acc=0.1 + 0.005 * epoch WHERE run_id=?", (base1,))  # best 0.115
    text = write_report(store, SPEC, tmp_path, "cmd").read_text(encoding="utf-8")
    assert ("Runs that never rose above chance: their best validation accuracy over all epochs stayed within 2 "
            "points of 1 / classes (the network diverged or died at the start); the mean and the interval include "
            "them, the median beside the mean describes the typical run:"
            "\n\n- `base` seed 1: best validation accuracy 11.50 %\n") in text
    assert text.count("best validation accuracy 1") == 1  # no other run is listed
    store.conn.execute("UPDATE epochs SET val_acc=0.125 WHERE run_id=?", (base1,))  # 2.5 points above chance
    assert "never rose" not in write_report(store, SPEC, tmp_path / "b", "cmd").read_text(encoding="utf-8")


def test_under_label_noise_chance_is_judged_on_the_clean_labels():
    from cifarlab.report.summary import at_chance
    runs = {0: {"id": 1, "classes": json.dumps([f"c{i}" for i in range(10)])}}
    epochs = {1: [{"epoch": 1, "val_acc": 0.106}, {"epoch": 2, "val_acc": 0.110}]}   # 80 % symmetric noise:
    assert at_chance(runs, epochs) == {0: pytest.approx(0.110)}                        # near chance on noisy labels
    assert at_chance(runs, epochs, {1: {1: 0.15, 2: 0.198}}) == {}   # it learned: 19.8 % on the clean labels
    assert at_chance(runs, epochs, {1: {2: 0.198}}) == {}            # an epoch without a clean record: its own
    assert at_chance(runs, epochs, {1: {1: 0.10, 2: 0.105}}) == {0: pytest.approx(0.105)}
    assert at_chance(runs, epochs, {1: {}}) == {0: pytest.approx(0.110)}   # no clean record: the labels were clean


def test_a_run_that_ends_at_chance_is_warned_of_by_the_reports_rule():
    from cifarlab.stats import chance_warning
    final = {"classes": [f"c{i}" for i in range(10)], "test_acc": 0.45}
    assert chance_warning(final, [{"val_acc": 0.10}, {"val_acc": 0.11}, {"val_acc": 0.115}]) == (
        "this run never rose above chance (best validation accuracy 11.5 % with 10 classes, chance 10.0 %): the "
        "network diverged or died at the start; a lower learning rate or a warm-up usually helps")
    assert chance_warning(final, [{"val_acc": 0.10}, {"val_acc": 0.125}]) is None     # 2.5 points above chance
    # a try-out of one or two epochs may only be too short, unless its loss is no longer finite
    assert chance_warning(final, [{"val_acc": 0.11, "train_loss": 2.27}]) == (
        "this run never rose above chance (best validation accuracy 11.0 % with 10 classes, chance 10.0 %) in 1 "
        "epoch(s), too few to tell a network that has not learned yet from one that diverged or died at the start: "
        "train longer, and if it stays at chance, a lower learning rate or a warm-up usually helps")
    assert "the network diverged or died at the start;" in chance_warning(final, [{"val_acc": 0.1, "train_loss": float("nan")}])
    # under label noise the clean labels count: 19.8 % on them is a network that learned
    assert chance_warning(final, [{"val_acc": 0.11, "val_acc_clean": 0.198}]) is None
    # no validation split: its test accuracy at the end, 45 %, is far above chance; 10.5 % is not
    assert chance_warning(final, [{"val_acc": None}]) is None
    assert "(test accuracy 10.5 % with 10 classes" in chance_warning({**final, "test_acc": 0.105}, [{"val_acc": None}])
    hidden = chance_warning({**final, "test_acc": 0.105}, [{"val_acc": None}], hide_test=True)   # run --hide-test
    assert "never rose above chance on the test set (its accuracy hidden" in hidden and "10.5" not in hidden
    # a study's workers, local and the Ray driver alike, print one line naming the run
    from cifarlab.results.store import RunKey
    from cifarlab.study.executors import chance_line
    key = RunKey("s", "lr1", 2, "abc")
    assert chance_line("demo", key, final, [{"val_acc": 0.115}]) == (
        "cifarlab: warning: demo/lr1 seed 2: " + chance_warning(final, [{"val_acc": 0.115}]))
    assert chance_line("demo", key, final, [{"val_acc": 0.6}]) is None


def test_a_run_without_a_validation_split_is_judged_at_chance_on_its_test_accuracy():
    from cifarlab.report.summary import at_chance
    classes = json.dumps([f"c{i}" for i in range(10)])
    runs = {0: {"id": 1, "classes": classes, "test_acc": 0.10}, 1: {"id": 2, "classes": classes, "test_acc": 0.46}}
    epochs = {1: [{"epoch": 1, "val_acc": None}], 2: [{"epoch": 1, "val_acc": None}]}   # data.val_size = 0
    on_test: set[int] = set()
    assert at_chance(runs, epochs, None, on_test) == {0: pytest.approx(0.10)} and on_test == {0, 1}


def test_a_bimodal_set_gets_its_median_and_an_interval_inside_0_to_100(store, tmp_path):
    """Seed 1 of `base` stalls at chance (10 %) beside seeds at 70 and 71 %: the t-interval of the
    mean would reach below 0 %; the report clips it and gives the median beside the mean."""
    store.conn.execute("UPDATE runs SET classes=?", (json.dumps([f"c{i}" for i in range(10)]),))
    base1 = store.conn.execute("SELECT id FROM runs WHERE experiment='base' AND seed=1").fetchone()[0]
    store.conn.execute("UPDATE runs SET test_acc=0.10 WHERE id=?", (base1,))
    store.conn.execute("UPDATE epochs SET val_acc=0.1 WHERE run_id=?", (base1,))
    by = {s["experiment"]: s for s in summarize(store, SPEC)}
    base = by["base"]
    # mean 0.5033, std 0.3493: the bare t-interval is [-0.364, 1.371]
    assert base["score_mean"] == pytest.approx((0.70 + 0.10 + 0.71) / 3)
    assert base["score_lo"] == 0.0 and base["score_hi"] == 1.0 and base["score_median"] == pytest.approx(0.70)
    row = next(line for line in write_report(store, SPEC, tmp_path, "cmd").read_text().splitlines()
               if line.startswith("| `base` |"))
    assert row.startswith("| `base` | 3 | 50.33 ± 34.93 (median 70.00) | [0.00, 100.00] | reference |")
    # flip - base: +3, +66, +3 points; the paired interval stays within +-100 points
    assert -1 <= by["flip"]["diff_lo"] and by["flip"]["diff_hi"] <= 1
    assert "(median" not in next(line for line in write_report(store, SPEC, tmp_path / "b", "cmd").read_text()
                                 .splitlines() if line.startswith("| `flip` |"))


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
    assert "current" not in runs[0]
    current = {(e, h, seed) for e, h in SPEC.hashes.items() for seed in range(3)}
    runs_path, _ = export_csv(store, tmp_path / "cur", "s", current=current)
    with runs_path.open(newline="") as f:
        marked = {(r["experiment"], r["seed"], r["config_hash"]): r["current"] for r in csv.DictReader(f)}
    assert marked[("flip", "0", "old")] == "0" and marked[("flip", "0", "hf")] == "1"
    assert sum(v == "1" for v in marked.values()) == 9  # all but the superseded flip row
    runs_path, _ = export_csv(store, tmp_path / "two", "s", current={c for c in current if c[2] < 2})
    with runs_path.open(newline="") as f:
        assert sum(r["current"] == "1" for r in csv.DictReader(f)) == 6   # seed 2 is not planned


def test_a_report_counts_only_the_seeds_its_study_plans(store):
    """Another study file of the same name may have added seeds to the database: a study of seeds 0
    and 1 counts those two (and a seed `more_seeds` added), not the rest."""
    two = dataclasses.replace(SPEC, seeds=(0, 1))
    by = {s["experiment"]: s for s in summarize(store, two)}
    assert by["base"]["seeds"] == [0, 1]
    added = dataclasses.replace(two, added={"base": (2,)})
    assert {s["experiment"]: s for s in summarize(store, added)}["base"]["seeds"] == [0, 1, 2]


# ----------------------------------------------------------------------------- replicates

def test_compare_pairs_runs_by_experiment_seed_and_config_only(store, tmp_path):
    from cifarlab.results.compare import compare
    other = open_store(tmp_path / "other.db")
    add_run(other, "base", 0, "hb", cfg("base", 0), test=0.71, machine="gpu1")     # +1 point
    add_run(other, "base", 1, "hb", cfg("base", 1), test=0.75, machine="gpu1")     # +3 points
    add_run(other, "flip", 0, "hf2", cfg("flip", 0), test=0.99, machine="gpu1")    # another config: no pair
    add_run(other, "flip", 1, "hf", cfg("flip", 1), status="running")              # not done: no pair
    text = compare(store, other, "s")
    assert "this:  " in text and "(box1)" in text and "(gpu1)" in text
    assert "base           0        70.00         71.00         +1.00" in text
    assert "base           1        72.00         75.00         +3.00" in text
    half = 12.706 * math.sqrt(2) / math.sqrt(2)  # t(1) * std / sqrt(n), std of (1, 3) = sqrt(2)
    assert (f"2 paired run(s): other - this = +2.00 ± 1.41 (std) points, 95% CI [{2 - half:+.2f}, {2 + half:+.2f}], "
            "median +2.00; "
            "6 done run(s) only in this, 1 only in other") in text
    assert "base           0        69.00         70.00" in compare(store, other, "s", metric="val")
    add_run(other, "base", 2, "hb", cfg("base", 2), test=0.10, machine="gpu1")     # a run stuck at chance there
    assert "3 paired run(s)" in compare(store, other, "s") and "median +1.00" in compare(store, other, "s")
    with pytest.raises(UserError, match="no done run of study 'nope' is in both databases"):
        compare(store, other, "nope")
    tuning, again = open_store(tmp_path / "t1.db"), open_store(tmp_path / "t2.db")   # runs without a test accuracy
    for db in (tuning, again):
        add_run(db, "base-tune", 0, "ht", cfg("base", 0), val_acc=0.5)
    with pytest.raises(UserError, match="1 are in both but have no test_acc .*: give --metric val"):
        compare(tuning, again, "s")
    assert "1 paired run(s)" in compare(tuning, again, "s", metric="val")


# ----------------------------------------------------------------------------- index

def test_the_results_index_regenerates_byte_for_byte_from_the_committed_databases(tmp_path, monkeypatch):
    from conftest import REPO

    from cifarlab.results.index import write_index
    monkeypatch.chdir(REPO)
    committed = (REPO / "results" / "README.md").read_text()
    out = write_index(Path("results"), Path("studies"), tmp_path / "README.md")
    assert out.read_bytes() == write_index(Path("results"), Path("studies"), out).read_bytes()
    # the page names its own command with the path it was written to; the committed one, results/README.md
    assert out.read_text().replace(str(tmp_path / "README.md"), "results/README.md") == committed
    rows = [line for line in committed.splitlines() if line.startswith("| `")]
    assert len(rows) == len(list((REPO / "results").glob("*/results.db")))
    basic = next(line for line in rows if "[basic](basic/README.md)" in line)
    assert "`aug-bn-only` 87.50 ± 0.19 %" in basic and "60 of 60" in basic and "48.3" in basic


def test_the_index_question_is_the_first_sentence_and_a_second_folder_of_a_study_is_named():
    from types import SimpleNamespace

    from cifarlab.results.index import first_sentence, study_label
    assert first_sentence("Squeeze-and-Excitation (Hu et al. 2018) here. Seed 0.") == \
        "Squeeze-and-Excitation (Hu et al. 2018) here."
    assert first_sentence("Rates `lr0.04` ... `lr0.64`, e.g. flips. 0.08 is the VGG's.") == \
        "Rates `lr0.04` ... `lr0.64`, e.g. flips."
    assert first_sentence("LR 0.08 at 15 epochs. Then more.") == "LR 0.08 at 15 epochs."
    assert first_sentence("Which is optimal. Another.") == "Which is optimal."          # not "al."
    assert first_sentence("Seed 0. studies/x.toml trains it.") == "Seed 0."              # a path starts one too
    assert first_sentence("A gain (cf. Fig. 2) here. Next.") == "A gain (cf. Fig. 2) here."
    assert first_sentence("no full stop") == "no full stop"
    assert first_sentence("word " * 100).endswith("…") and len(first_sentence("word " * 100)) == 220
    spec = SimpleNamespace(name="basic", selection=False)
    assert study_label(spec, "basic") == "`basic`"
    assert study_label(spec, "basic_h100") == "`basic`, in `basic_h100/`"
    assert study_label(SimpleNamespace(name="s", selection=True), "s") == "`s` (selection)"


def test_the_index_refuses_a_folder_without_databases(tmp_path):
    from cifarlab.results.index import write_index
    with pytest.raises(UserError, match="no results databases with a study file found under"):
        write_index(tmp_path, tmp_path, tmp_path / "README.md")


def test_label_noise_studies_get_the_memorisation_curve_and_accuracy_against_the_rate(tmp_path):
    st = open_store(tmp_path / "n.db")
    hashes = {}
    for exp, data in (("clean", {}), ("sym20", {"noise": "symmetric", "noise_rate": 0.2}),
                      ("sym40", {"noise": "symmetric", "noise_rate": 0.4})):
        hashes[exp] = f"h{exp}"
        for seed in (0, 1):
            rid = add_run(st, exp, seed, hashes[exp], cfg(exp, seed, data=data), test=0.8 - data.get("noise_rate", 0) / 2)
            for epoch in (1, 2, 3):
                if data:
                    st.conn.executemany("INSERT INTO epoch_metrics VALUES (?, ?, ?, ?)",
                                        [(rid, epoch, "flipped_acc_noisy", 0.1 * epoch),
                                         (rid, epoch, "flipped_acc_clean", 0.6 - 0.1 * epoch),
                                         (rid, epoch, "val_acc_clean", 0.5 + 0.05 * epoch)])
    spec = StudySpec(name="s", reference="clean", experiments=("clean", "sym20", "sym40"), targets={}, hashes=hashes)
    text = write_report(st, spec, tmp_path / "r", "cmd").read_text()
    assert "(memorisation.png)" in text and "(noise_rates.png)" in text and "hollow and dashed" not in text
    # the table shows the clean validation accuracy of the last epoch beside the noisy one
    assert "| val acc (noisy labels) | val acc (clean labels) |" in text
    row = {line.split(" | ")[0]: line.split(" | ") for line in text.splitlines() if line.startswith("| `")}
    assert row["| `sym40`"][7] == "65.00 ± 0.00" and row["| `clean`"][6:8] == ["79.00 ± 0.00"] * 2  # no noise: same
    assert "for an experiment without noise the two are the same" in text
    for name in ("memorisation.png", "noise_rates.png"):
        assert image.imread(tmp_path / "r" / name).shape[0] > 300
    plain = write_report(st, dataclasses.replace(spec, experiments=("clean",), hashes={"clean": "hclean"}),
                         tmp_path / "p", "cmd").read_text()
    assert "memorisation" not in plain and "noise_rates" not in plain and "By noise setting" not in plain
    assert "| ce | 80.00 ± 0.00 | 70.00 ± 0.00 | 60.00 ± 0.00 |" in text
    from cifarlab.report import noise_rows
    rows = {r["epoch"]: r for r in noise_rows(st, [3])}
    assert rows[2]["flipped_acc_noisy"] == pytest.approx(0.2) and rows[2]["val_acc_clean"] == pytest.approx(0.6)


def test_noise_reports_draw_memorisation_per_group_once_per_training_and_say_which_epoch_was_tested(tmp_path):
    st = open_store(tmp_path / "n.db")
    sym40 = {"noise": "symmetric", "noise_rate": 0.4}
    variants = {"ce-0": {}, "ce-20": {"data": {"noise": "symmetric", "noise_rate": 0.2}}, "ce-40": {"data": sym40},
                "gce-40": {"data": sym40, "loss": {"name": "gce"}},
                "stop-40": {"data": sym40, "train": {"seed": 0, "epochs": 3, "select": "best_val"}}}
    ids = {}
    for exp, sections in variants.items():
        for seed in (0, 1):
            sections = {**sections, "train": {"epochs": 3, **sections.get("train", {}), "seed": seed}}
            ids[exp, seed] = rid = add_run(st, exp, seed, f"h{exp}", cfg(exp, seed, **sections), test=0.7)
            for epoch in (1, 2, 3) if "data" in sections else ():
                st.conn.executemany("INSERT INTO epoch_metrics VALUES (?, ?, ?, ?)",
                                    [(rid, epoch, "flipped_acc_noisy", 0.1 * epoch),
                                     (rid, epoch, "flipped_acc_clean", 0.6 - 0.1 * epoch),
                                     (rid, epoch, "val_acc_clean", 0.5 + 0.01 * epoch)])
    # seed 0 peaked at epoch 2; seed 1 reaches its best at epochs 2 and 3 alike: the first is tested
    st.conn.execute("UPDATE epochs SET val_acc = 0.9 WHERE run_id = ? AND epoch = 2", (ids["stop-40", 0],))
    st.conn.execute("UPDATE epochs SET val_acc = 0.9 WHERE run_id = ? AND epoch IN (2, 3)", (ids["stop-40", 1],))
    spec = StudySpec(name="s", reference="ce-0", experiments=tuple(variants), targets={"ce-40": 0.8, "ce-20": 0.85},
                     hashes={e: f"h{e}" for e in variants}, notes={"stop-40": "early stopping"},
                     groups={"ce-0": "damage", "ce-20": "damage", "ce-40": "robust", "gce-40": "robust",
                             "stop-40": "robust"},
                     questions={"damage": "how much is lost?", "robust": "what helps?"}, baselines={"robust": "ce-40"})
    summary = {s["experiment"]: s for s in summarize(st, spec)}
    assert summary["stop-40"]["selected"] == {0: (2, 3), 1: (2, 3)}
    assert summary["ce-40"]["selected"] == {}  # tests its last epoch, as every `select = last` run does
    # the clean validation accuracy is that of the epoch tested
    assert summary["stop-40"]["val_clean_mean"] == pytest.approx(0.52) and summary["stop-40"]["val_clean_n"] == 2
    assert summary["ce-40"]["val_clean_mean"] == pytest.approx(0.53) and not summary["ce-0"]["noisy_labels"]
    st.conn.execute("UPDATE runs SET stopped = 'diverged: non-finite training loss at epoch 3 of 3' WHERE id = ?",
                    (ids["stop-40", 1],))
    assert next(s for s in summarize(st, spec) if s["experiment"] == "stop-40")["selected"] == {0: (2, 3)}
    st.conn.execute("UPDATE runs SET stopped = NULL WHERE id = ?", (ids["stop-40", 1],))
    text = write_report(st, spec, tmp_path / "r", "cmd").read_text()
    assert ("- `stop-40`: early stopping; epoch tested (first of best validation accuracy) 2 of 3, 2 of 3 "
            "(seeds 0, 1)") in text
    # the literature's layout: methods by noise setting, the published figures beneath their method
    section = text.split("## By noise setting and method", 1)[1].split("## Findings", 1)[0]
    table, memorised = section.split("Memorisation, in the same layout", 1)
    assert "mean ± std over 2 seeds" in table and "(symmetric: a flipped label is any other class)" in table
    assert [line for line in table.splitlines() if line.startswith("| ")] == [
        "| method | clean | symmetric 20 % | symmetric 40 % |",
        "| ce | 70.00 ± 0.00 | 70.00 ± 0.00 | 70.00 ± 0.00 |",
        "| ce: target | — | 85.00 | 80.00 |",
        "| gce | — | — | 70.00 ± 0.00 |",
        "| ce + early stopping | — | — | 70.00 ± 0.00 |"]
    # and how far each training memorised: the last epoch's agreement of the flipped samples with their
    # noisy labels; early stopping trains cross-entropy's run, so it has no row of its own
    assert [line for line in memorised.splitlines() if line.startswith("| ")] == [
        "| method | clean | symmetric 20 % | symmetric 40 % |",
        "| ce | — | 30.00 ± 0.00 | 30.00 ± 0.00 |",
        "| gce | — | — | 30.00 ± 0.00 |"]
    from cifarlab.report.markdown import noise_table
    from cifarlab.report.summary import counted_rows
    st.conn.execute("UPDATE runs SET config = (SELECT config FROM runs WHERE experiment = 'ce-40' LIMIT 1) "
                    "WHERE experiment = 'gce-40'")   # two experiments of one method and setting: no table
    assert noise_table(spec, summarize(st, spec), counted_rows(st, spec)) == []
    # cross-entropy at every noise setting, then the group with its methods; early stopping's training is ce-40's
    assert "(memorisation.png)" in text and "(memorisation_robust.png)" in text
    assert "memorisation_damage" not in text  # its noisy lines are all in memorisation.png
    assert "Not drawn, as their training is drawn: `stop-40`" in text
    assert (tmp_path / "r" / "memorisation_robust.png").exists()
    assert "hollow and dashed](noise_rates.png)" in text
    from cifarlab.report.figures import distinct_trainings
    configs = {e: C.from_dict(cfg(e, 0, **v)) for e, v in variants.items()}
    assert distinct_trainings(["ce-40", "stop-40", "gce-40"], configs) == ["ce-40", "gce-40"]
    assert distinct_trainings(["stop-40", "ce-40"], configs) == ["stop-40"]  # the first of twins is drawn


def test_the_noise_rate_figure_gives_each_method_one_line_per_noise_type_from_its_clean_point():
    from cifarlab.report.figures import noise_series

    def run(name, data=None, **sections):   # as a report reads them: recorded configs (a database's rows)
        return C.from_dict({"name": name, "data": data or {}, **sections}, recorded=True), {"experiment": name}

    sym = lambda r: {"noise": "symmetric", "noise_rate": r}  # noqa: E731
    configs = [run("ce0"), run("ce20", sym(0.2)), run("ce40", sym(0.4)),
               run("ce-asym40", {"noise": "asymmetric", "noise_rate": 0.4}),
               run("stop0", train={"select": "best_val"}), run("stop40", sym(0.4), train={"select": "best_val"}),
               run("gce40", sym(0.4), loss={"name": "gce"}), run("cot-clean", train={"method": "coteaching"}),
               run("cot40", sym(0.4), train={"method": "coteaching", "forget_rate": 0.4}),
               run("cot40-f20", sym(0.4), train={"method": "coteaching", "forget_rate": 0.2}),
               run("inette25", {"dataset": "imagenette", "label_column": "noisy_labels_25"}),
               run("elr40", sym(0.4), loss={"name": "elr"}),
               run("elr40-b9", sym(0.4), loss={"name": "elr", "elr_beta": 0.9, "elr_lambda": 1.0}),
               run("ce60", sym(0.6), loss={"sce_alpha": 0.5}),   # another loss's setting (recorded before it was refused): still ce
               (None, {"experiment": "gone"})]
    series = {k: [(rate, s["experiment"]) for rate, s in v] for k, v in noise_series(configs).items()}
    assert series == {
        ("symmetric", "ce"): [(0.0, "ce0"), (0.2, "ce20"), (0.4, "ce40"), (0.6, "ce60")],
        ("asymmetric", "ce"): [(0.0, "ce0"), (0.4, "ce-asym40")],
        ("symmetric", "ce + early stopping"): [(0.0, "stop0"), (0.4, "stop40")],  # not merged into ce's line
        ("symmetric", "gce"): [(0.4, "gce40")],
        ("symmetric", "ce + coteaching"): [(0.0, "cot-clean"), (0.4, "cot40")],
        ("symmetric", "ce + coteaching (forget 0.2)"): [(0.4, "cot40-f20")],   # another forget rule: its own line
        ("noisy_labels", "ce"): [(0.0, "ce0"), (0.25, "inette25")],
        ("symmetric", "elr"): [(0.4, "elr40")],
        ("symmetric", "elr (beta 0.9, lambda 1)"): [(0.4, "elr40-b9")],   # the loss's own settings: its own line
    }


def test_a_label_noise_study_headlines_its_best_variant_at_the_most_noise():
    """The best variant of a label-noise study is its clean one; the index also names the best at
    the highest rate two variants share, and the variant there that trains like the reference."""
    from types import SimpleNamespace

    from cifarlab.results.index import headline

    def row(name, mean, n=2, reference=False):
        return {"experiment": name, "n": n, "score_mean": mean / 100, "score_std": 0.01,
                "score_lo": (mean - 5) / 100, "score_hi": (mean + 5) / 100, "reference": reference}

    sym = lambda r: {"noise": "symmetric", "noise_rate": r}  # noqa: E731
    configs = {"ce0": C.from_dict({"name": "ce0"}), "ce80": C.from_dict({"name": "ce80", "data": sym(0.8)}),
               "sce80": C.from_dict({"name": "sce80", "data": sym(0.8), "loss": {"name": "sce"}}),
               "elr80": C.from_dict({"name": "elr80", "data": sym(0.8), "loss": {"name": "elr"}}),
               "gce90": C.from_dict({"name": "gce90", "data": sym(0.9), "loss": {"name": "gce"}}),
               "ce40": C.from_dict({"name": "ce40", "data": {"noise": "asymmetric", "noise_rate": 0.4}})}
    summary = [row("ce0", 91.0, reference=True), row("ce80", 44.0), row("sce80", 47.5), row("elr80", 46.0),
               row("gce90", 30.0), row("ce40", 85.0), row("ghost80", 99.0, n=0)]
    spec = SimpleNamespace(label="test")
    text = headline(spec, summary, configs)
    # 90 % has one variant only, so 80 % is the most noise compared; ghost80 has no runs
    assert text == ("best test: `ce0` 91.00 ± 1.00 % [86.00, 96.00] (n=2); at symmetric 80 %, the most noise: "
                    "best `sce80` 47.50 ± 1.00 % [42.50, 52.50] (n=2), the reference's method "
                    "`ce80` 44.00 ± 1.00 % [39.00, 49.00] (n=2)")
    summary[1] = row("ce80", 50.0)                       # cross-entropy is the best there: named once
    assert headline(spec, summary, configs).endswith("the most noise: best `ce80` 50.00 ± 1.00 % [45.00, 55.00] (n=2)")
    assert headline(spec, summary) == "best test: `ce0` 91.00 ± 1.00 % [86.00, 96.00] (n=2)"  # no configs: as before
    # the study plans two variants at 95 % that have no results yet: 80 % is the most noise of those with results
    planned = [*configs.values(), *(C.from_dict({"name": n, "data": sym(0.95)}) for n in ("ce95", "gce95"))]
    assert "; at symmetric 80 %, the most noise, of those with results so far: best `ce80`" in \
        headline(spec, summary, configs, planned)
    assert ", the most noise: best" in headline(spec, summary, configs, planned[:-1])   # one planned there: not compared
    clean = {"a": C.from_dict({"name": "a"}), "b": C.from_dict({"name": "b", "optim": {"lr": 0.1}})}
    assert "most noise" not in headline(spec, [row("a", 80.0, reference=True), row("b", 81.0)], clean)


def test_a_coteaching_reference_is_matched_at_the_most_noise_whatever_its_forget_rate():
    """A clean co-teaching reference forgets at 0.2 (its legend names the rate, its noise being 0);
    at 80 % noise the co-teaching variant forgets at 0.8, the noise rate: the same method."""
    from types import SimpleNamespace

    from cifarlab.results.index import headline

    def row(name, mean, reference=False):
        return {"experiment": name, "n": 1, "score_mean": mean / 100, "score_std": 0.0,
                "score_lo": None, "score_hi": None, "reference": reference}

    cot = lambda rate: {"method": "coteaching", "forget_rate": rate}  # noqa: E731
    sym80 = {"noise": "symmetric", "noise_rate": 0.8}
    configs = {"cot0": C.from_dict({"name": "cot0", "train": cot(0.2)}),
               "ce80": C.from_dict({"name": "ce80", "data": sym80}),
               "cot80": C.from_dict({"name": "cot80", "data": sym80, "train": cot(0.8)}),
               "cot80-f2": C.from_dict({"name": "cot80-f2", "data": sym80, "train": cot(0.2)})}
    summary = [row("cot0", 91.0, reference=True), row("ce80", 44.0), row("cot80", 20.0), row("cot80-f2", 30.0)]
    text = headline(SimpleNamespace(label="test"), summary, configs)
    # the forget rate equal to the reference's, 0.2, is the exact match
    assert text.endswith("best `ce80` 44.00 ± 0.00 % (n=1), the reference's method `cot80-f2` 30.00 ± 0.00 % (n=1)"), text
    text = headline(SimpleNamespace(label="test"), summary[:3], configs)
    assert text.endswith("best `ce80` 44.00 ± 0.00 % (n=1), the reference's method `cot80` 20.00 ± 0.00 % (n=1)"), text


def test_every_committed_study_report_regenerates_byte_for_byte_from_its_database(tmp_path):
    """The standard that committed databases keep regenerating their reports, for every study page
    (the index and the project report have tests of their own): each README.md equals what `cifarlab
    report` writes now from a copy of its database, but for the command line that names the copy.
    Pages made with --grids or --features (they read the data set) are left out."""
    import shutil
    import subprocess

    from conftest import REPO, cli_command, cli_env
    checked, differ = [], []
    for readme in sorted((REPO / "results").glob("*/README.md")):
        name = readme.parent.name
        study = REPO / "studies" / f"{name}.toml"
        command = next((line for line in readme.read_text().splitlines()
                        if line.startswith(f"cifarlab report studies/{name}.toml")), None)
        if not study.exists() or command is None or "--grids" in command or "--features" in command:
            continue
        db = tmp_path / name / "results.db"
        db.parent.mkdir()
        shutil.copy(readme.parent / "results.db", db)
        out = tmp_path / name / "page"
        r = subprocess.run(cli_command("report", study, "--db", db, "--out", out), cwd=REPO, env=cli_env(),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (name, r.stderr)
        mine, theirs = ([line for line in text.splitlines() if not line.startswith("cifarlab report ")]
                        for text in ((out / "README.md").read_text(), readme.read_text()))
        checked.append(name)
        if mine != theirs:
            differ.append(name)
    assert len(checked) >= 30 and not differ, f"regenerate these reports (scripts/snapshot_results.sh): {differ}"
