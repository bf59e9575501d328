"""Fair comparisons: per-arm tuning on validation, budgets, FLOPs, Holm, unstable variants."""

import dataclasses
import math
import re
import sqlite3
import subprocess

import numpy as np
import pytest

from cifarlab import config as C
from cifarlab.errors import ConfigError
from cifarlab.flops import flops_per_image
from cifarlab.report import fair as R
from cifarlab.report import write_report
from cifarlab.results import open_store
from cifarlab.results.store import RunKey
from cifarlab.stats import paired_p
from cifarlab.study import load_study
from cifarlab.study.plan import plan, study_spec
from conftest import cli_command, cli_env, finished_metrics

EXPERIMENT = """
name = "tiny"
[data]
subset = 1000
val_size = 200
[model]
widths = [8, 16]
dense = [16]
[optim]
lr = 0.05
[schedule]
name = "linear"
warmup = 0.5
[train]
epochs = 1
batch_size = 100
threads = 1
"""

TUNED = """
name = "fair"
experiment = "tiny.toml"
seeds = [0, 1]
tune = { "optim.lr" = [0.02, 0.05] }
tune_seeds = [0]
tune_extend = 1
budgets = [1, 2]
correction = "holm"

[groups.g]
question = "Does dropout help?"

[[variants]]
name = "base"
group = "g"
tune = {}

[[variants]]
name = "drop"
group = "g"
set = { "model.dropout" = [0.2, 0.2] }
"""


def write(tmp_path, study=TUNED, name="fair.toml"):
    (tmp_path / "tiny.toml").write_text(EXPERIMENT)
    (tmp_path / name).write_text(study)
    return tmp_path / name


def finish(store, key, cfg, val, test=0.5):
    """Record `key` as a done run with the given accuracies (no training)."""
    store.register(key, C.to_dict(cfg))
    row = store.claim(key.study, [key])
    store.finish(row["id"], finished_metrics(val_acc=val, test_acc=test if cfg.train.test else None), "nowhere", 1)


def test_budgets_stretch_the_schedule_and_expand_variants_and_groups(tmp_path):
    study = load_study(write(tmp_path))
    names = [v.name for v in study.variants]
    assert names == ["base-1ep", "drop-1ep", "base-2ep", "drop-2ep"]
    two = study.variants[2].config
    assert two.train.epochs == 2 and two.schedule.warmup == 1.0      # stretched, not truncated
    assert study.variants[0].config.schedule.warmup == 0.5
    assert set(study.questions) == {"g-1ep", "g-2ep"} and study.reference == "base-1ep"
    assert study.variants[3].group == "g-2ep" and study.variants[3].arm == "drop"


def test_the_shortest_budget_is_complete_over_every_seed_before_a_longer_one_starts(tmp_path):
    study = load_study(write(tmp_path, TUNED.replace('tune = { "optim.lr" = [0.02, 0.05] }\n', "")))
    order = [(k.experiment, k.seed) for _, _, k in study.runs()]
    assert order == [("base-1ep", 0), ("drop-1ep", 0), ("base-1ep", 1), ("drop-1ep", 1),
                     ("base-2ep", 0), ("drop-2ep", 0), ("base-2ep", 1), ("drop-2ep", 1)]


def test_tuning_runs_come_first_and_an_edge_choice_grows_the_grid(tmp_path):
    study = load_study(write(tmp_path))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    tuning = [k for k in p.runs if "-tune-" in k.experiment]
    assert [k.experiment for k in tuning] == ["drop-tune-lr0.02", "drop-tune-lr0.05"]
    assert all(not p.runs[k].train.test for k in tuning)          # tuning runs never read the test set
    assert p.undecided == ["drop"] and not any(k.experiment.startswith("drop-") and "-tune-" not in k.experiment
                                               for k in p.runs)
    for key in tuning:   # 0.05, the grid's largest value, wins: the grid grows by its ratio, to 0.125
        finish(store, key, p.runs[key], 0.6 if key.experiment.endswith("0.05") else 0.4)
    p = plan(study, store)
    assert [k.experiment for k in p.runs if "-tune-" in k.experiment][-1] == "drop-tune-lr0.125"
    assert p.undecided == ["drop"]
    grown = next(k for k in p.runs if k.experiment == "drop-tune-lr0.125")
    finish(store, grown, p.runs[grown], 0.55)
    p = plan(study, store)
    assert p.choices == {"drop": {"optim.lr": 0.05}}
    tests = [(k, c) for k, c in p.runs.items() if k.experiment.startswith("drop-") and "-tune-" not in k.experiment]
    assert len(tests) == 4 and all(c.optim.lr == 0.05 and c.train.test for _, c in tests)
    assert store.choices("fair")  # recorded, with its reason
    reason = next(iter(store.choices("fair").values()))[1]
    assert "grew past its edge to optim.lr = 0.125" in reason


GROUPED = """
name = "grouped"
experiment = "tiny.toml"
seeds = [0, 1]
tune_seeds = [0]
tune_extend = 0
order = "group"

[groups.first]
question = "Does A help?"

[groups.second]
question = "Does B help?"

[[variants]]
name = "a-base"
group = "first"
set = { "model.dense" = [12] }

[[variants]]
name = "b-base"
group = "second"
set = { "model.dense" = [14] }

[[variants]]
name = "b-tuned"
group = "second"
set = { "model.dense" = [10] }
tune = { "optim.lr" = [0.02, 0.03] }

[[variants]]
name = "a-tuned"
group = "first"
tune = { "optim.lr" = [0.02, 0.03] }
"""


def test_the_progress_bars_total_counts_an_undecided_arms_test_runs_and_holds_still_as_it_chooses(tmp_path):
    """`run_study`'s bar: the plan's runs and the test runs a tuning arm will add (4: drop at two budgets
    and two seeds), so its percentage does not go back when the arm decides; a grid grown at its edge
    adds its run; with --only, another variant's pending test runs are not counted."""
    from cifarlab.study.run import bar_total, plan_runs
    study = load_study(write(tmp_path))
    store = open_store(tmp_path / "r.db")
    p = plan_runs(study, store)
    assert bar_total(study, store, p) == len(p) + 4 == 2 + 4 + 4   # 2 tuning, base's 4, drop's 4 to come
    assert bar_total(study, store, plan_runs(study, store, ("base-1ep",)), ("base-1ep",)) == 2
    for key in [k for k in p if "-tune-" in k.experiment]:
        finish(store, key, p[key], 0.6 if key.experiment.endswith("0.02") else 0.4)   # 0.02: the grid's edge
    p = plan_runs(study, store)
    assert len(p) == 7 and bar_total(study, store, p) == 11   # the grid grew to 0.008: one run more
    grown = next(k for k in p if k.experiment == "drop-tune-lr0.008")
    finish(store, grown, p[grown], 0.5)
    p = plan_runs(study, store)
    assert len(p) == 11 and bar_total(study, store, p) == 11   # chosen: the 4 joined the plan, the total held


def test_order_group_claims_one_groups_tuning_and_test_runs_before_the_next_group(tmp_path):
    study = load_study(write(tmp_path, GROUPED))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)   # default order would put b-tuned's tuning runs before every test run
    assert [(k.experiment, k.seed) for k in p.runs] == [
        ("a-tuned-tune-lr0.02", 0), ("a-tuned-tune-lr0.03", 0), ("a-base", 0), ("a-base", 1),
        ("b-tuned-tune-lr0.02", 0), ("b-tuned-tune-lr0.03", 0), ("b-base", 0), ("b-base", 1)]
    for key in [k for k in p.runs if k.experiment.startswith("a-tuned-tune")]:
        finish(store, key, p.runs[key], 0.6 if key.experiment.endswith("0.02") else 0.4)
    order = [(k.experiment, k.seed) for k in plan(study, store).runs]   # a-tuned chose 0.02 (an edge: tune_extend 0)
    assert order.index(("a-tuned", 1)) < order.index(("b-tuned-tune-lr0.02", 0))   # the first group completes first
    from cifarlab.study.status import status_table
    shares = re.search(r'claimed group by group \(order = "group"\); share of the training left: '
                       r'first (\d+) %, second (\d+) %', status_table(study, store))
    # left in first: a-base's two runs and a-tuned's seed 1 (its seed 0 tests a tuning run's weights);
    # in second: b-tuned's two tuning runs and its seed 1, b-base's two runs
    assert shares and int(shares[1]) + int(shares[2]) in (99, 100, 101) and 30 < int(shares[1]) < 45
    seed_major = load_study(write(tmp_path, GROUPED.replace('order = "group"', ""), "seed.toml"))
    assert [k.experiment for k in plan(seed_major, None).runs][:4] == [
        "b-tuned-tune-lr0.02", "b-tuned-tune-lr0.03", "a-tuned-tune-lr0.02", "a-tuned-tune-lr0.03"]


def test_order_group_claims_a_groups_baseline_with_it_and_tuning_runs_with_their_own_arm(tmp_path):
    """The first group's baseline is in no group, and arm `b-tune`'s tuning runs (b-tune-tune-...)
    start with arm `b`'s tuning prefix: each is still claimed with the group that needs it."""
    study = load_study(write(tmp_path, """
name = "grouped"
experiment = "tiny.toml"
seeds = [0]
tune_extend = 0
order = "group"

[groups.first]
question = "Does b-tune help over the shared reference?"
baseline = "ref"

[groups.second]
question = "Does b help?"

[[variants]]
name = "b"
group = "second"
tune = { "optim.lr" = [0.02, 0.03] }

[[variants]]
name = "ref"
set = { "model.dense" = [12] }

[[variants]]
name = "b-tune"
group = "first"
set = { "model.dense" = [10] }
tune = { "optim.lr" = [0.02, 0.03] }
"""))
    order = [k.experiment for k in plan(study, None).runs]
    assert order == ["b-tune-tune-lr0.02", "b-tune-tune-lr0.03", "ref", "b-tune-lr0.02", "b-tune-lr0.03"]


def test_a_recorded_choice_stands_when_later_runs_would_choose_otherwise(tmp_path):
    study = load_study(write(tmp_path, TUNED.replace("tune_extend = 1", "tune_extend = 0")))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    for key in [k for k in p.runs if "-tune-" in k.experiment]:
        finish(store, key, p.runs[key], 0.6 if key.experiment.endswith("0.02") else 0.4)
    assert plan(study, store).choices == {"drop": {"optim.lr": 0.02}}
    store.conn.execute("UPDATE runs SET val_acc = 0.9 WHERE experiment = 'drop-tune-lr0.05'")
    assert plan(study, store).choices == {"drop": {"optim.lr": 0.02}}


def test_a_tuned_study_trains_and_its_tuning_runs_never_read_the_test_set(tmp_path, data_root, monkeypatch):
    import cifarlab.train as T
    from cifarlab.study.run import DataCache, run_study
    study = load_study(write(tmp_path, TUNED.replace("tune_extend = 1", "tune_extend = 0")
                             .replace("seeds = [0, 1]", "seeds = [0]")))
    data = DataCache(str(data_root), False, False)
    evaluated = []   # (the run's train.test, whether the split evaluated is the test split)
    real = T.evaluate

    def spy(model, split, prep, rt, train_cfg, classes):
        test = any(split is s.test for s in data.splits.values())
        evaluated.append((train_cfg.test, test))
        return real(model, split, prep, rt, train_cfg, classes)
    monkeypatch.setattr(T, "evaluate", spy)
    store = open_store(tmp_path / "r.db")
    assert run_study(study, store, data, tmp_path / "runs", progress=False) == 2 + 4
    assert (False, True) not in evaluated and (True, True) in evaluated
    rows = {r["experiment"]: r for r in store.runs("fair")}
    assert rows["drop-tune-lr0.02"]["test_acc"] is None and rows["drop-1ep"]["test_acc"] is not None
    # the arm's run at the tuning length and seed tests the chosen tuning run's weights, not a retraining
    import json
    lr = plan(study, store).tuning["drop"].choice["optim.lr"]
    chosen = next(r for name, r in rows.items()
                  if name.startswith("drop-tune") and json.loads(r["config"])["optim"]["lr"] == lr)
    final = json.loads((tmp_path / "runs" / "fair" / "drop-1ep").glob("seed0-*").__next__()
                       .joinpath("final.json").read_text())
    assert final["trained_by"] == chosen["run_dir"] and rows["drop-1ep"]["val_acc"] == chosen["val_acc"]
    assert "trained_by" not in json.loads(next((tmp_path / "runs" / "fair" / "drop-2ep").glob("seed0-*"))
                                          .joinpath("final.json").read_text())
    flops = store.run_metrics([rows["drop-2ep"]["id"]])[rows["drop-2ep"]["id"]]
    train_size = len(next(iter(data.splits.values())).train)   # 799: the last batch of an epoch is short
    assert flops["images_seen"] == 2 * train_size and flops["train_flops"] > 0
    readme = write_report(store, study_spec(study, store), tmp_path / "report", "cmd").read_text()
    assert "## Tuning" in readme and "**(chosen)**" in readme and "## Across budgets" in readme
    assert "Margin over the runner-up" in readme and "fewer than 3 seeds of `drop-1ep` at the tuning length" in readme
    assert "Holm" in readme and "## Compute" in readme and (tmp_path / "report" / "budgets_g.png").exists()
    assert "| change of Δ, 2ep − 1ep | conclusion |" in readme
    # the compute table's FLOP column is in the unit that shows this tiny study's counts (not 0.000 PFLOP)
    compute = readme[readme.index("## Compute"):]
    assert "| training GFLOP | wall time (s) |" in compute.splitlines()[4], compute[:600]
    row = next(line for line in compute.splitlines() if line.startswith("| `drop-2ep` |"))
    assert float(row.split("|")[4].replace(",", "")) > 1, row
    tuned = [r for name, r in rows.items() if "-tune-" in name]   # what choosing the settings cost, beside the rest
    assert f"- the tuning runs (validation only, not counted above) on `{tuned[0]['machine']}`: " in readme
    assert f"over {len(tuned)} runs (" in readme and "% of it choosing the arms' settings" in readme
    assert (tmp_path / "report" / "train_loss_g-2ep.png").exists() and "train_loss_g-1ep.png" in readme
    from cifarlab.report.fair import steps_per_epoch   # the loss figure's top axis: steps, the last batch short
    batch = json.loads(rows["drop-2ep"]["config"])["train"]["batch_size"]
    both = [{"experiment": name, "run_ids": [rows[name]["id"]]} for name in ("drop-1ep", "drop-2ep")]
    assert steps_per_epoch(store, both) == math.ceil(train_size / batch) and "top axis: optimizer steps" in readme
    assert (tmp_path / "report" / "tuning.png").exists() and "(tuning.png)" in readme   # one numeric key: a figure


def test_only_a_tuned_studys_validation_only_runs_keep_their_weights_for_a_later_test_run(tmp_path):
    """A tuning run trains with the shared folder (its arm's test run at the same seed and length
    may take its weights); a study without `tune` has no such later run, so its runs without a test
    set (a selection study's) write only to their own folders unless a sibling shares with them."""
    from cifarlab.study.plan import shares
    study = load_study(write(tmp_path))
    p = plan(study, open_store(tmp_path / "r.db"))
    key, cfg = next((k, c) for k, c in p.runs.items() if "-tune-" in k.experiment)
    assert not cfg.train.test
    assert shares(key, cfg, {}, tuned=True) and not shares(key, cfg, {}, tuned=False)
    assert shares(key, cfg, {key: set()}, tuned=False)   # a sibling (`sharing`) shares in any study
    tested = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, test=True))
    assert not shares(key, tested, {}, tuned=True)


def test_an_untuned_studys_runs_without_a_test_set_leave_no_shared_weights(tmp_path, data_root):
    """A study without `tune` whose runs read no test set trains each run in its own folder: no
    later run takes a shared copy of its weights (only a tuned arm's test run does), so none is written."""
    from cifarlab.study.run import DataCache, run_study
    study = load_study(write(tmp_path, 'name = "pick"\nexperiment = "tiny.toml"\nseeds = [0]\n'
                                       'set = { "train.test" = false }\n[[variants]]\nname = "a"\n\n'
                                       '[[variants]]\nname = "b"\nset = { "optim.lr" = 0.02 }\n', "pick.toml"))
    assert not study.tuned and not any(v.config.train.test for v in study.variants)
    data = DataCache(str(data_root), False, False)
    assert run_study(study, open_store(tmp_path / "r.db"), data, tmp_path / "runs", progress=False) == 2
    shared = tmp_path / "runs" / "pick" / "_shared"
    assert not shared.exists() or not any(shared.iterdir())


def test_status_of_a_fresh_tuned_study_counts_no_epochs_for_test_runs_that_take_a_tuning_runs_weights(tmp_path):
    """drop's test run at seed 0 and 1 epoch (the tuning seed and length) will test the chosen tuning
    run's weights, whichever value wins; the grid holds no untuned value, so no sibling shows it."""
    from cifarlab.study.status import status_table
    study = load_study(write(tmp_path, TUNED.replace("[0.02, 0.05]", "[0.02, 0.03]")
                             .replace("tune_extend = 1", "tune_extend = 0")))
    # tuning 2 runs x 1 epoch; base 2 seeds x (1 + 2) epochs; drop the same less seed 0's 1 epoch
    status = status_table(study, open_store(":memory:"))
    assert "0 of 10 runs done; no finished run to time by: 13 epochs" in status
    assert "tuning drop: 0 of 2 tuning runs done\n" in status + "\n"   # a fixed grid (arm of 2 budgets)
    store = open_store(tmp_path / "r.db")   # once drop has chosen, its seed-0 1-epoch run still adds no epochs
    p = plan(study, store)
    for key in [k for k in p.runs if "-tune-" in k.experiment]:
        finish(store, key, p.runs[key], 0.6 if key.experiment.endswith("0.02") else 0.4)
    assert plan(study, store).choices == {"drop": {"optim.lr": 0.02}}
    store.conn.execute("UPDATE runs SET wall_seconds = 3600")   # an hour per epoch: the hours left are the epochs
    assert "about 11.0 h left" in status_table(study, store)   # 13 less the two tuning epochs


def row(name, scores, at_chance=None):
    xs = list(scores.values())
    mean = float(np.mean(xs))
    return {"experiment": name, "n": len(xs), "score_by_seed": dict(scores), "score_mean": mean,
            "score_std": float(np.std(xs, ddof=1)), "score_median": float(np.median(xs)), "score_lo": mean - 0.01, "score_hi": mean + 0.01,
            "at_chance": at_chance or {}, "diff_mean": 0.0, "diff_lo": float("nan"), "diff_hi": float("nan"),
            "diff_n": 0}


def test_holm_turns_borderline_differences_into_not_distinguishable():
    base = row("base", {0: 0.80, 1: 0.81, 2: 0.79, 3: 0.80})
    a = row("a", {0: 0.811, 1: 0.813, 2: 0.802, 3: 0.806})
    b = row("b", {0: 0.810, 1: 0.813, 2: 0.802, 3: 0.805})
    for s in (a, b):   # each alone: p below 0.05, the uncorrected CI excludes 0 ...
        assert 0.025 < paired_p(s["score_by_seed"], base["score_by_seed"]) < 0.05
        assert R.excludes(R.versus(s, base))
    text = R.finding_holm([R.versus(s, base) for s in (base, a, b)])
    assert "distinguishable after Holm" not in text   # ... but neither after Holm's correction over 2 comparisons
    assert "not distinguishable: `a`" in text and "`b`" in text and "seeds would resolve" in text


def test_a_variant_with_seeds_at_chance_is_unstable_not_a_difference():
    base = row("base", {0: 0.80, 1: 0.81, 2: 0.79})
    split = row("split", {0: 0.10, 1: 0.82, 2: 0.10}, at_chance={0: 0.1, 2: 0.1})
    text = R.finding_holm([R.versus(s, base) for s in (base, split)])
    # named with its accuracy, mean and median (a bimodal set), so that a reader sees what it reached
    assert "unstable, not compared: `split` (2 of 3 seeds at chance; 34.00 ± 41.57 %, median 10.00 %)" in text
    assert "not distinguishable" not in text


def test_a_finding_that_flips_between_budgets_is_reported_as_flipping():
    def cell(mean, lo, hi):
        return {"n": 3, "diff_mean": mean, "diff_lo": lo, "diff_hi": hi, "at_chance": {}}
    assert R.verdict([("12ep", cell(-0.012, -0.02, -0.004)), ("48ep", cell(0.004, 0.001, 0.007))], False) \
        .startswith("**flips**")
    assert R.verdict([("12ep", cell(-0.012, -0.02, -0.004)), ("48ep", cell(-0.001, -0.005, 0.003))], False) \
        == "worse, distinguishable only at 12ep"
    assert R.verdict([("a", cell(0.01, 0.005, 0.02)), ("b", cell(0.02, 0.01, 0.03))], False) \
        == "holds at every budget (better)"
    assert R.verdict([("a", cell(0.01, -0.005, 0.02)), ("b", cell(-0.02, -0.04, 0.01))], False) \
        == "not distinguishable at any budget (its sign changes)"


def test_flops_match_the_counter_by_hand_on_a_known_network():
    cfg = C.from_dict({"model": {"widths": [8, 16], "dense": [16]}})
    convs = [(3, 8, 32), (8, 8, 32), (8, 16, 16), (16, 16, 16)]   # (in, out, side) of the VGG's 3x3 convs
    forward = sum(2 * i * o * 9 * s * s for i, o, s in convs) + 2 * (16 * 8 * 8) * 16 + 2 * 16 * 10
    first = 2 * 3 * 8 * 9 * 32 * 32   # the image needs no gradient: the first conv's input gradient is skipped
    assert flops_per_image(cfg.model, 10, 32) == 3 * forward - first


def test_match_flops_gives_the_cheaper_arm_more_epochs(tmp_path):
    study = load_study(write(tmp_path, """
experiment = "tiny.toml"
seeds = [0]
match = "flops"
[[variants]]
name = "big"
[[variants]]
name = "small"
set = { "model.widths" = [4, 8] }
"""))
    big, small = study.variants
    ratio = flops_per_image(big.config.model, 10, 32) / flops_per_image(small.config.model, 10, 32)
    assert small.config.train.epochs == pytest.approx(round(ratio, 2)) and big.config.train.epochs == 1


@pytest.mark.parametrize("extra, message", [
    ('tune = { "optim.nosuch" = [1, 2] }', "not a config key"),
    ('tune = { "data.val_size" = [1000, 5000] }', "validation split"),
    ('tune = { "optim.lr" = [] }', "non-empty list"),
    ('tune = { "optim.lr" = [0.1, 0.2] }\ntune_epochs = 0', "tune_epochs"),
    ('tune = { "optim.lr" = [0.1] }', "has one value, 0.1: the arm would choose nothing"),
    ("budgets = [1, 0]", "numbers > 0"),
    ('match = "flops"\nset = { "train.method" = "coteaching" }', "match = \"flops\""),
    ('correction = "bonferroni"', "correction"),
    ('order = "arm"', "`order` must be one of seed, group"),
    ('order = "group"', "declares no [groups.NAME]"),
    ('tune = { "optim.lr" = [0.1, 0.2] }\nset = { "data.val_size" = 0 }', "validation split"),
    ("more_seeds = { below = 0.5 }", "must be a table more_seeds = { below = POINTS, seeds = [S, ...] }"),
    ("more_seeds = { below = 0, seeds = [3] }", "more_seeds.below must be points"),
    ("more_seeds = { below = 0.5, seeds = [0, 3] }", "not among the study's seeds [0]"),
    ("more_seeds = { below = 0.5, seeds = [3] }", "more_seeds compares each group's variants"),
    ('tune_seed = [0]', "unknown key 'tune_seed' in "),
    ('tune_seed = [0]', "did you mean 'tune_seeds'?"),
])
def test_bad_fair_keys_are_one_line(tmp_path, extra, message):
    path = write(tmp_path, f'experiment = "tiny.toml"\nseeds = [0]\n{extra}\n[[variants]]\nname = "a"\n')
    with pytest.raises(ConfigError) as e:
        load_study(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_tune_key_exits_2_before_a_database_exists(tmp_path):
    path = write(tmp_path, 'experiment = "tiny.toml"\nseeds = [0]\ntune = { "optim.lrr" = [1] }\n[[variants]]\nname = "a"\n')
    out = subprocess.run(cli_command("study", "run", path, "--db", tmp_path / "r.db"), cwd=tmp_path, env=cli_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "optim.lrr" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "did you mean optim.lr?" in out.stderr
    assert not (tmp_path / "r.db").exists()


def test_group_seeds_replace_the_study_seeds_for_their_variants(tmp_path):
    study = load_study(write(tmp_path, """
experiment = "tiny.toml"
seeds = [0, 1, 2]
[groups.small]
question = "?"
seeds = [0, 1, 2, 3, 4]
[[variants]]
name = "a"
group = "small"
[[variants]]
name = "b"
group = "small"
seeds = [7]
[[variants]]
name = "c"
"""))
    by = {}
    for v, _, key in study.runs():
        by.setdefault(v.name, []).append(key.seed)
    assert by == {"a": [0, 1, 2, 3, 4], "b": [7], "c": [0, 1, 2]}


def test_migration_10_adds_the_tune_choices_table(tmp_path):
    db = tmp_path / "old.db"
    store = open_store(db)
    store.conn.execute("DROP TABLE tune_choices")
    store.conn.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    store.close()
    store = open_store(db)
    assert store.record_choice("s", "a", "h", {"optim.lr": 0.1}, "why") == ({"optim.lr": 0.1}, "why")
    assert store.record_choice("s", "a", "h", {"optim.lr": 0.2}, "later") == ({"optim.lr": 0.1}, "why")
    assert sqlite3.connect(db).execute("SELECT value FROM meta").fetchone()[0] == "10"


def test_a_study_without_the_new_keys_plans_as_before(tmp_path):
    path = write(tmp_path, 'experiment = "tiny.toml"\nseeds = [0, 1]\n[[variants]]\nname = "a"\n[[variants]]\nname = "b"\n')
    study = load_study(path)
    assert not study.budgets and not study.tuned and not study.spec().fair
    assert list(plan(study, None).runs) == [key for _, _, key in study.runs()]
    assert [k.experiment for k in plan(study, None).runs] == ["a", "b", "a", "b"]
    assert dataclasses.replace(study.variants[0]).config.train.epochs == 1
    assert RunKey("x", "a", 0, "h").seed == 0


def final_metrics(cfg, val):
    return finished_metrics(val_acc=val, test_acc=0.5 if cfg.train.test else None, epochs=1, train_seconds=1.0)


@pytest.mark.parametrize("grid, best", [('"optim.weight_decay" = [0.0, 0.0005]', 0.0),   # -0.0005: past 0
                                        ('"train.ema" = [0.99, 0.999]', 0.999),          # 1.008: not a decay
                                        ('"train.batch_size" = [50, 100]', 100)])        # 200, 400: fine
def test_a_grid_grows_only_to_values_the_config_accepts(tmp_path, grid, best):
    study = load_study(write(tmp_path, f'experiment = "tiny.toml"\nseeds = [0]\ntune = {{ {grid} }}\n'
                                       '[[variants]]\nname = "a"\n'))
    store = open_store(tmp_path / "r.db")
    key = grid.split('"')[1]
    for _ in range(3):   # finish every planned tuning run, the best value always winning
        p = plan(study, store)
        for k, c in p.runs.items():
            if "-tune-" in k.experiment and store.status_of(k) != "done":
                value = fair_value(c, key)
                finish(store, k, c, 0.6 if value == best else 0.7 if value == 200 else 0.5)
    p = plan(study, store)
    grew = [k.experiment for k in p.runs if "-tune-" in k.experiment]
    if best == 100:   # 200 wins, at the new edge: the grid grows once more, to 400, which loses
        assert len(grew) == 4 and p.choices == {"a": {key: 200}}
    else:
        assert len(grew) == 2 and p.choices == {"a": {key: best}}
        assert "still at the grid's edge" in store.choices(study.name)[next(iter(store.choices(study.name)))][1]
        from cifarlab.study.status import tuning_lines   # `study status` says so too, not only the report
        line, = tuning_lines(study, store)   # (0 of 2 steps: the values past the edge are not valid)
        assert line == f"tuning a: chose {key} = {best:g}; still at the grid's edge in {key} after 0 of 2 step(s): " \
                       "the best value may lie beyond"


def fair_value(cfg, key):
    section, leaf = key.split(".")
    return getattr(getattr(cfg, section), leaf)


class NoData:
    """A study's data cache for runs that never read it (training is replaced)."""
    def get(self, cfg):
        return None


def test_a_worker_whose_plan_is_stale_trains_the_test_runs_of_an_arm_decided_meanwhile(tmp_path, monkeypatch):
    """A worker that found nothing to claim while the last tuning run finished elsewhere plans again
    before leaving: the arm's test runs are there now."""
    import cifarlab.study.executors as E
    import cifarlab.study.run as RUN
    from cifarlab.study.executors import RunResult
    study = load_study(write(tmp_path, TUNED.replace("tune_extend = 1", "tune_extend = 0")))
    store = open_store(tmp_path / "r.db")
    stale = plan(study, store).runs   # the tuning runs only: every arm still tunes
    for k, c in stale.items():        # ... then another worker finishes the tuning runs
        if "-tune-" in k.experiment:
            finish(store, k, c, 0.6 if c.optim.lr == 0.02 else 0.5)
    calls = []
    real = RUN.plan_runs

    def plan_runs(study, store, only=()):
        calls.append(1)
        return dict(stale) if len(calls) == 1 else real(study, store, only)
    monkeypatch.setattr(RUN, "plan_runs", plan_runs)
    monkeypatch.setattr(E, "train_one", lambda key, cfg, splits, path, **kw: RunResult(
        key, final_metrics(cfg, 0.5), [], str(path), "here"))

    assert RUN.run_study(study, store, NoData(), tmp_path / "runs", progress=False) == 2 * 4   # base's and drop's
    assert plan(study, store).choices == {"drop": {"optim.lr": 0.02}}


def test_images_seen_counts_each_epochs_short_last_batch_once():
    from types import SimpleNamespace
    from cifarlab.train import images_in
    s = SimpleNamespace(steps_per_epoch=3, cfg=SimpleNamespace(train=SimpleNamespace(batch_size=300)))
    assert images_in(s, 3, 800) == 800            # 300 + 300 + 200, not 900
    assert images_in(s, 7, 800) == 2 * 800 + 300   # two epochs, then one step of the third


def test_a_budget_where_a_variant_is_unstable_says_so():
    def cell(mean, lo, hi, at_chance=None):
        return {"n": 3, "diff_mean": mean, "diff_lo": lo, "diff_hi": hi, "at_chance": at_chance or {}}
    text = R.verdict([("12ep", cell(-0.3, -0.9, 0.1, {0: 0.1})), ("48ep", cell(0.01, 0.005, 0.02))], False)
    assert text == "unstable at 12ep; at the other budget(s): holds at every budget (better)"


def test_an_epoch_valued_choice_is_stretched_with_the_schedule_at_every_budget(tmp_path):
    study = load_study(write(tmp_path, 'experiment = "tiny.toml"\nseeds = [0]\nbudgets = [1, 4]\ntune_extend = 0\n'
                                       'tune = { "schedule.warmup" = [0.25, 0.5, 0.75] }\n[[variants]]\nname = "a"\n'
                                       '[[variants]]\nname = "b"\ntune = {}\n'))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    for k, c in p.runs.items():
        if "-tune-" in k.experiment:
            finish(store, k, c, 0.6 if c.schedule.warmup == 0.5 else 0.5)
    warmups = {k.experiment: c.schedule.warmup for k, c in plan(study, store).runs.items() if "-tune-" not in k.experiment}
    assert warmups == {"a-1ep": 0.5, "b-1ep": 0.5, "a-4ep": 2.0, "b-4ep": 2.0}   # chosen at 1 epoch, stretched x4


@pytest.mark.parametrize("val_std, seeds, said", [
    (0.002, (0,), "1.8 of that, between one and two: suggestive, not resolved"),   # 0.5 / (0.2 x √2)
    (0.001, (0,), "3.5 of that, more than two: clear of the noise"),
    (0.004, (0,), "0.9 of that, less than one: a choice on 1 seed cannot tell the two apart"),
    (0.0045, (0, 1), "1.1 of that"),                                                 # 0.5 / (0.45 x √(2/2))
])
def test_a_tuning_choice_is_set_beside_the_seed_to_seed_noise_of_its_arm(val_std, seeds, said):
    """The margin of the chosen setting over the runner-up, in units of the noise of a difference of
    two settings' means over the tuning seeds, the noise read from the arm's runs at the tuning length."""
    from cifarlab.report.fair import margin
    t = {"chosen": "optim.lr = 0.1", "seeds": seeds, "twin": "a-5ep",
         "scores": [("optim.lr = 0.05", 0.800, 1), ("optim.lr = 0.1", 0.810, 1), ("optim.lr = 0.2", 0.805, 1)]}
    text = margin(t, {"a-5ep": {"experiment": "a-5ep", "n": 3, "val_std": val_std}})
    assert text.startswith("Margin over the runner-up (optim.lr = 0.2): 0.50 points") and said in text
    assert "not known yet" in margin(t, {"a-5ep": {"experiment": "a-5ep", "n": 1, "val_std": float("nan")}})
    assert "fewer than 3 seeds" in margin(t, {"a-5ep": {"experiment": "a-5ep", "n": 2, "val_std": val_std}})
    assert "no test variant trains at the tuning length" in margin({**t, "twin": None}, {})
    assert margin({**t, "chosen": None}, {}) is None


def test_a_tuning_margin_is_the_recorded_choices_lead_even_on_a_tie_or_when_another_now_scores_higher():
    from cifarlab.report.fair import margin_numbers
    noise = {"a-5ep": {"experiment": "a-5ep", "n": 3, "val_std": 0.002}}
    tie = {"chosen": "lr = 0.1", "seeds": (0,), "twin": "a-5ep", "scores": [("lr = 0.1", 0.81, 1), ("lr = 0.2", 0.81, 1)]}
    m = margin_numbers(tie, noise)
    assert m["runner"] == "lr = 0.2" and m["lead"] == 0 and m["verdict"] == "within the noise"
    stale = {**tie, "scores": [("lr = 0.1", 0.80, 1), ("lr = 0.2", 0.81, 1), ("lr = 0.4", 0.70, 1)]}
    m = margin_numbers(stale, noise)
    assert m["runner"] == "lr = 0.2" and m["lead"] == pytest.approx(-1.0) and m["verdict"] == "within the noise"


def test_the_papers_choices_reference_counts_arms_by_how_clear_their_choice_is(tmp_path):
    """`{{choices STUDY}}`: the tuned arms counted by their choice's margin against the seed noise
    read from the arm's runs at the tuning length; before those runs exist it says why not."""
    from cifarlab.report.paper import PaperError, Renderer, Results
    studies = tmp_path / "studies"
    studies.mkdir()
    path = write(studies, TUNED.replace("tune_extend = 1", "tune_extend = 0").replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    (tmp_path / "results" / "fair").mkdir(parents=True)
    store = open_store(tmp_path / "results" / "fair" / "results.db")
    study = load_study(path)
    p = plan(study, store)
    for key in [k for k in p.runs if "-tune-" in k.experiment]:
        finish(store, key, p.runs[key], 0.60 if key.experiment.endswith("0.02") else 0.59)
    renderer = Renderer(Results(tmp_path / "results", studies), tmp_path / "docs")
    with pytest.raises(PaperError, match="no tuned arm has a choice and 3 seeds"):
        renderer.choices("fair")
    p = plan(study, store)
    for key in [k for k in p.runs if k.experiment == "drop-1ep"]:
        finish(store, key, p.runs[key], {0: 0.60, 1: 0.64, 2: 0.62}[key.seed])   # std 2.0 points: noise 2.83, lead 1.0
    store.close()
    renderer = Renderer(Results(tmp_path / "results", studies), tmp_path / "docs")
    assert renderer.choices("fair") == ("of 1 choices made on 1 tuning seed(s), 1 within the noise (`drop`); 1 still "
                                        "at its grid's edge, the best value possibly beyond (`drop`)")   # no growth allowed
    # `{{runs STUDY}}` of a tuned study counts its test runs and says so: its tuning runs are not in it
    assert re.fullmatch(r"3 of \d+ test runs", renderer.study("runs", "fair"))
    # and its report, not complete, says how many of each are done before its first table
    from cifarlab.study.plan import study_spec
    store = open_store(tmp_path / "results" / "fair" / "results.db")
    spec = study_spec(study, store)
    readme = write_report(store, spec, tmp_path / "report", "cmd").read_text()
    store.close()
    planned = sum(len(spec.planned(e)) for e in spec.experiments)
    tuning = sum(t["runs"] for t in spec.tuning.values())
    assert f"**Not complete**: 3 of {planned} test runs done, and {tuning} of {tuning} tuning runs so far" in readme


MORE_SEEDS = """
experiment = "tiny.toml"
seeds = [0, 1]
budgets = [1, 2]
more_seeds = { below = 0.5, seeds = [2, 3] }

[groups.g]
question = "Do a and b differ from base?"
baseline = "base"

[[variants]]
name = "base"
group = "g"

[[variants]]
name = "close"
group = "g"
set = { "optim.lr" = 0.04 }

[[variants]]
name = "far"
group = "g"
set = { "optim.lr" = 0.03 }

[[variants]]
name = "alone"
set = { "optim.lr" = 0.02 }
"""


def test_more_seeds_go_to_a_comparison_whose_validation_difference_is_small_once_its_seeds_finish(tmp_path):
    """`more_seeds`: at each budget, a member whose mean validation difference from its group's
    baseline is under `below` points, once both have finished every planned seed, trains the extra
    seeds, and so does the baseline; they are claimed after every other planned run; the report's
    spec plans them; a difference just above the bar, or an unfinished seed, adds nothing."""
    study = load_study(write(tmp_path, MORE_SEEDS))
    store = open_store(tmp_path / "r.db")
    val = {"base": 0.600, "close": 0.604, "far": 0.610, "alone": 0.5}   # close: +0.4 points, far: +1.0
    p = plan(study, store)
    assert p.extra == {} and {k.seed for k in p.runs} == {0, 1}
    for key in [k for k in p.runs if k.experiment.endswith("-1ep") and k.experiment != "close-1ep"]:
        finish(store, key, p.runs[key], val[key.experiment[:-4]])
    first = next(k for k in p.runs if k.experiment == "close-1ep")
    finish(store, first, p.runs[first], 0.604)
    assert plan(study, store).extra == {}   # close-1ep's seed 1 not finished: nothing decided yet
    second = next(k for k in p.runs if k.experiment == "close-1ep" and k.seed == 1)
    finish(store, second, p.runs[second], 0.604)
    p = plan(study, store)
    assert p.extra == {"close-1ep": (2, 3), "base-1ep": (2, 3)}
    added = [(k.experiment, k.seed) for k in p.runs if k.seed >= 2]
    assert added == [("base-1ep", 2), ("close-1ep", 2), ("base-1ep", 3), ("close-1ep", 3)]
    assert list(p.runs)[-4:] == [k for k in p.runs if k.seed >= 2]   # after the 2-epoch budget's runs
    spec = study_spec(study, store)
    assert spec.planned("close-1ep") == (0, 1, 2, 3) and spec.planned("far-1ep") == (0, 1)
    assert spec.planned("close-2ep") == (0, 1)   # each budget decides for itself
    from cifarlab.study.status import status_table
    said = status_table(study, store)
    assert "more_seeds: seed(s) 2, 3 where a validation difference from the group's baseline is under 0.5 points; " \
           "added to base-1ep, close-1ep; it may add up to 6 more run(s), 12 epochs" in said   # far-1ep is decided; the 2-epoch group (3 x 2 x 2) is not
    assert "not in the estimate above" in said
    from cifarlab.report.markdown import more_seeds_said
    said = " ".join(more_seeds_said(spec))
    assert "under 0.5 points also trains seed(s) 2, 3" in said and "Added so far to: `base-1ep` (a baseline); `close-1ep` (validation +0.40 points against `base-1ep` over " \
        "seeds 0, 1)." in said
    store.conn.execute("UPDATE runs SET val_acc = 0.606 WHERE experiment = 'close-1ep'")   # +0.6: above the bar
    assert plan(study, store).extra == {}


def test_the_most_more_seeds_may_still_add_counts_undecided_comparisons_and_hours_only_at_a_known_rate(tmp_path):
    """`study status`'s ceiling: every comparison whose member or baseline has planned seeds
    unfinished could still fall under the bar; its member and baseline would each train the rule's
    seeds. Without a measured rate it says runs and epochs, no hours."""
    from cifarlab.study.status import more_seeds_ceiling
    study = load_study(write(tmp_path, MORE_SEEDS))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    # nothing finished: base, close and far at both budgets could each add seeds 2 and 3
    assert more_seeds_ceiling(study, store, p) == (12, 3 * 2 * 1 + 3 * 2 * 2, None)   # variants x seeds x epochs
    runs, epochs, seconds = more_seeds_ceiling(study, store, p, rate=lambda name: 10.0)
    assert (runs, epochs, seconds) == (12, 18.0, 180.0)
    for key in [k for k in p.runs if k.experiment.endswith("-1ep")]:
        finish(store, key, p.runs[key], 0.6 if key.experiment != "far-1ep" else 0.7)
    p = plan(study, store)   # the 1-epoch group is decided: close-1ep and base-1ep added, far-1ep not
    assert p.extra == {"close-1ep": (2, 3), "base-1ep": (2, 3)}
    assert more_seeds_ceiling(study, store, p) == (6, 12.0, None)


def test_status_times_what_more_seeds_may_add_to_a_baseline_whose_runs_are_all_done(tmp_path):
    """A baseline done at a budget whose member is not may still train the rule's seeds: `study
    status` times them at its training method's rate on this machine (it raised KeyError where none
    of the baseline's runs was this machine's: only variants with runs left had a method on record)."""
    from cifarlab.study.status import status_table
    study = load_study(write(tmp_path, MORE_SEEDS))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    for key in [k for k in p.runs if k.experiment == "base-1ep"]:
        finish(store, key, p.runs[key], 0.6)   # on machine "m"
    far = next(k for k in p.runs if k.experiment == "far-1ep")
    finish(store, far, p.runs[far], 0.6)
    store.conn.execute("UPDATE runs SET machine = 'here' WHERE experiment = 'far-1ep'")
    said = status_table(study, store, machine="here")   # base-1ep's runs are not this machine's
    assert "it may add up to 12 more run(s), 18 epochs, about 18 s with 1 worker(s)" in said, said


def test_more_seeds_takes_a_groups_first_member_as_its_default_baseline_and_closes_its_group_under_group_order(tmp_path):
    """Under `order = "group"` a group's added seeds are claimed when its planned runs are done, before
    the next group's runs: the first question's answer does not wait for the whole study."""
    text = (MORE_SEEDS.replace('baseline = "base"\n', "").replace("budgets = [1, 2]\n", "")
            + '\n[groups.h]\nquestion = "?"\n\n[[variants]]\nname = "later"\ngroup = "h"\n'
              'set = { "optim.lr" = 0.01 }\n')
    study = load_study(write(tmp_path, text.replace("seeds = [0, 1]\n", 'seeds = [0, 1]\norder = "group"\n')))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    val = {"base": 0.600, "close": 0.604, "far": 0.610}
    for key in [k for k in p.runs if k.experiment in val]:
        finish(store, key, p.runs[key], val[key.experiment])
    p = plan(study, store)
    assert p.extra == {"close": (2, 3), "base": (2, 3)}
    order = [(k.experiment, k.seed) for k in p.runs]
    assert order[-8:] == [("base", 2), ("close", 2), ("base", 3), ("close", 3),
                          ("later", 0), ("later", 1), ("alone", 0), ("alone", 1)]   # `alone`: in no group
    (tmp_path / "seed").mkdir()
    seed_major = load_study(write(tmp_path / "seed", text))   # the same study without group order: they stay last
    order = [(k.experiment, k.seed) for k in plan(seed_major, store).runs]
    assert order.index(("later", 1)) < order.index(("base", 2)) and order[-4:] == [
        ("base", 2), ("close", 2), ("base", 3), ("close", 3)]


def test_more_seeds_refuses_a_study_without_a_validation_split_and_adds_no_seed_a_variant_plans_anyway(tmp_path):
    with pytest.raises(ConfigError, match="holds out no validation split"):
        load_study(write(tmp_path, MORE_SEEDS.replace('set = { "optim.lr" = 0.02 }',
                                                      'set = { "optim.lr" = 0.02, "data.val_size" = 0 }')))
    study = load_study(write(tmp_path, MORE_SEEDS.replace("budgets = [1, 2]\n", "").replace(
        'name = "close"\ngroup = "g"\n', 'name = "close"\ngroup = "g"\nseeds = [0, 1, 2]\n')))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    val = {"base": 0.600, "close": 0.604, "far": 0.610}
    for key in [k for k in p.runs if k.experiment in val]:
        finish(store, key, p.runs[key], val[key.experiment])
    assert plan(study, store).extra == {"close": (3,), "base": (2, 3)}


def test_a_study_run_trains_the_seeds_more_seeds_adds_as_soon_as_they_are_decided(tmp_path, data_root):
    """An untuned study with `more_seeds`: the one process that trains the first seeds plans again
    after each run, so it trains the added seeds too, in the same call."""
    from cifarlab.study.run import DataCache, run_study
    study = load_study(write(tmp_path, 'name = "more"\nexperiment = "tiny.toml"\nseeds = [0]\n'
                                       'more_seeds = { below = 100, seeds = [1] }\n[groups.g]\nquestion = "?"\n'
                                       '[[variants]]\nname = "a"\ngroup = "g"\n\n[[variants]]\nname = "b"\n'
                                       'group = "g"\nset = { "optim.lr" = 0.02 }\n', "more.toml"))
    store = open_store(tmp_path / "r.db")
    assert run_study(study, store, DataCache(str(data_root), False, False), tmp_path / "runs", progress=False) == 4
    assert sorted((r["experiment"], r["seed"]) for r in store.runs("more")) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_a_group_may_opt_out_of_more_seeds_and_only_with_false(tmp_path):
    text = MORE_SEEDS.replace('baseline = "base"\n', 'baseline = "base"\nmore_seeds = false\n')
    study = load_study(write(tmp_path, text))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    val = {"base": 0.600, "close": 0.604, "far": 0.610, "alone": 0.5}
    for key in [k for k in p.runs if k.experiment.endswith("-1ep")]:
        finish(store, key, p.runs[key], val[key.experiment[:-4]])
    assert study.without_more_seeds == {"g-1ep", "g-2ep"} and plan(study, store).extra == {}
    with pytest.raises(ConfigError, match="can only be false"):
        load_study(write(tmp_path, MORE_SEEDS.replace('baseline = "base"\n', 'baseline = "base"\nmore_seeds = true\n')))
    with pytest.raises(ConfigError, match="the study sets no more_seeds"):
        load_study(write(tmp_path, text.replace("more_seeds = { below = 0.5, seeds = [2, 3] }\n", "")))


def test_the_change_of_a_comparison_across_budgets_is_paired_over_the_seeds_all_four_runs_share():
    """(arm − baseline at the last budget) − (arm − baseline at the first), seed by seed; a seed that
    one of the four lacks is left out; a † where the interval excludes 0 (uncorrected)."""
    from cifarlab.report.fair import change_cell
    from cifarlab.stats import paired_diff

    def row(scores):
        return {"n": len(scores), "score_by_seed": scores}
    arm = {"5ep": row({0: 0.80, 1: 0.81, 2: 0.82}), "20ep": row({0: 0.90, 1: 0.92, 2: 0.93, 3: 0.5})}
    base = {"5ep": row({0: 0.78, 1: 0.78, 2: 0.79}), "20ep": row({0: 0.89, 1: 0.90, 2: 0.90, 3: 0.9})}
    last = {s: arm["20ep"]["score_by_seed"][s] - base["20ep"]["score_by_seed"][s] for s in (0, 1, 2)}
    first = {s: arm["5ep"]["score_by_seed"][s] - base["5ep"]["score_by_seed"][s] for s in (0, 1, 2)}
    mean, lo, hi, n = paired_diff(last, first)
    said = change_cell(arm, base, "5ep", "20ep")
    assert said.startswith(f"{100 * mean:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]") and said.endswith("(n=3)")
    assert ("†" in said) == (lo > 0 or hi < 0) and "*" not in said   # uncorrected: not Holm's *
    assert change_cell(arm, {"5ep": base["5ep"]}, "5ep", "20ep") == "—"   # a budget the baseline lacks
    one = {"5ep": row({0: 0.80}), "20ep": row({0: 0.90, 1: 0.9})}   # one seed shared by all four: no interval
    assert change_cell(one, base, "5ep", "20ep") == f"{100 * ((0.90 - 0.89) - (0.80 - 0.78)):+.2f} [n<2]"
    none = {"5ep": row({5: 0.80}), "20ep": row({5: 0.90})}   # no seed shared with the baseline
    assert change_cell(none, base, "5ep", "20ep") == "—"


def test_steps_per_epoch_is_said_only_where_every_arm_takes_the_same_steps(monkeypatch):
    """The loss figure's top axis counts optimizer steps only where every row's runs take the same
    number per epoch (images seen / epochs / batch, the last batch short); otherwise, or where no run
    records its images, there is no axis (None)."""
    from types import SimpleNamespace
    from cifarlab.report import summary

    batch = {"a": 100, "b": 100, "c": 50}
    monkeypatch.setattr(summary, "experiment_config",
                        lambda runs, name: SimpleNamespace(train=SimpleNamespace(batch_size=batch[name])))

    class Store:   # 3 epochs of 950 images per run: 10 steps per epoch at batch 100, 19 at batch 50
        def __init__(self, seen):
            self.seen = seen

        def runs(self):
            return []

        def run_metrics(self, ids):
            return {i: {"images_seen": self.seen} for i in ids if self.seen is not None}

        def epochs(self, ids):
            return [{"run_id": i} for i in ids for _ in range(3)]

    rows = {name: {"experiment": name, "run_ids": [i]} for i, name in enumerate(batch)}
    assert R.steps_per_epoch(Store(3 * 950), [rows["a"], rows["b"]]) == 10
    assert R.steps_per_epoch(Store(3 * 950), [rows["a"], rows["c"]]) is None   # 10 against 19
    assert R.steps_per_epoch(Store(None), [rows["a"], rows["b"]]) is None      # nothing recorded
    assert R.steps_per_epoch(Store(3 * 950), [{"experiment": "a", "run_ids": []}]) is None   # no finished run


def test_the_shared_weights_a_study_still_wants_are_its_unfinished_runs_and_its_undecided_arms_tuning_runs(tmp_path):
    """What scripts/inflight.sh carries to the next session: a tuning run's weights while its arm may
    still choose it, the chosen one's until its test run has taken them, nothing once all is done."""
    from pathlib import Path

    from cifarlab.study.plan import shared_wanted
    from cifarlab.train import trained_path
    study = load_study(write(tmp_path))
    store = open_store(tmp_path / "r.db")

    def name(cfg):
        return trained_path(Path(), cfg).name

    def tuning():
        return {values["optim.lr"]: cfg for values, _, cfg in plan(study, store).tuning["drop"].runs}

    assert {name(cfg) for cfg in tuning().values()} <= shared_wanted(study, store)   # undecided: any may win
    while plan(study, store).tuning["drop"].choice is None:
        for values, key, cfg in plan(study, store).tuning["drop"].runs:
            if store.status_of(key) != "done":
                finish(store, key, cfg, val=0.6 if values["optim.lr"] == 0.05 else 0.4)
        if plan(study, store).tuning["drop"].choice is None:   # the grid grew past 0.05: the finished
            done = {lr: c for lr, c in tuning().items() if lr in (0.02, 0.05)}   # runs may still win
            assert len(done) == 2 and {name(c) for c in done.values()} <= shared_wanted(study, store)
    assert plan(study, store).tuning["drop"].choice == {"optim.lr": 0.05}
    wanted = shared_wanted(study, store)
    assert name(tuning()[0.05]) in wanted and not {name(c) for lr, c in tuning().items() if lr != 0.05} & wanted
    while pending := [(k, c) for k, c in plan(study, store).runs.items() if store.status_of(k) != "done"]:
        for key, cfg in pending:
            finish(store, key, cfg, val=0.5)
    assert shared_wanted(study, store) == set()


def test_status_measure_costs_the_steps_left_at_each_networks_rate_timed_once_per_network(tmp_path, monkeypatch):
    """`study status --measure`: the tuning grid's runs share their network's timing (rates do not
    change a step's time); each epoch left costs its images at that network's rate."""
    from cifarlab import bench
    from cifarlab.study.status import status_table
    study = load_study(write(tmp_path))
    store = open_store(tmp_path / "r.db")
    real = status_table(study, store, workers=2, measure=1)   # timed for real: tiny networks, one step
    line = next(row for row in real.splitlines() if row.startswith("measured here now"))
    rates = re.findall(r"([\w.-]+) ([\d,]+) \(([\d,]+) s per epoch\)", line)
    assert [name for name, _, _ in rates] == ["drop-tune-lr0.02", "base-1ep"] and all(int(r.replace(",", "")) > 0 for _, r, _ in rates)
    timed = []
    from cifarlab.study import status
    monkeypatch.setattr(status, "MEASURED", {})   # each network is timed once per process: as a fresh process
    monkeypatch.setattr(bench, "seconds_per_image", lambda cfg, steps, threads: timed.append(cfg.name) or 3600 / 800)
    out = status_table(study, store, workers=2, measure=1)   # 800 training images an epoch: an hour each
    epochs = float(re.search(r"([\d.]+) epochs and about", out).group(1))
    assert f"about {epochs:.1f} process-hours of training steps left, {epochs / 2:.1f} h with 2 worker(s)" in out
    assert len(timed) == 2 and "training images/s: drop-tune-lr0.02 0 (3,600 s per epoch), base-1ep 0 (3,600 s per epoch)" in out
    assert "finished run(s) on this machine" not in out   # none: nothing to compare the steps with
    key = next(k for k in plan(study, store).runs if k.experiment == "base-1ep")
    finish(store, key, plan(study, store).runs[key], 0.6)   # 1 epoch in 1.0 s on machine "m"
    store.conn.execute("UPDATE runs SET wall_seconds = 3600 * 1.5, machine = 'here'")   # 1.5 h an epoch
    store.conn.commit()
    out = status_table(study, store, workers=2, measure=1, machine="here")
    left = [k for k in plan(study, store).runs if k.experiment == "base-1ep" and store.status_of(k) != "done"]
    assert left and (f"; the {len(left)} run(s) left of variants with finished runs on this machine take "
                     f"{1.5 * len(left):,.1f} process-hours at those runs' rate, 1.50x their measured steps' time"
                     in out), out   # base-1ep's runs left, 1 epoch each; the other variants are not compared


def test_status_measure_times_each_optimizer_apart_and_costs_a_two_phase_run_for_both_phases(tmp_path, monkeypatch):
    """An optimizer or a method changes a step's time, a rate does not; a SupCon run's epochs left
    count its probe's epochs too (the timing averages the two phases)."""
    from cifarlab import bench
    from cifarlab.study.status import speed_key, status_table
    study = load_study(write(tmp_path, 'name = "opt"\nexperiment = "tiny.toml"\nseeds = [0]\n'
                                       '[[variants]]\nname = "sgd"\n\n'
                                       '[[variants]]\nname = "sgd-fast"\nset = { "optim.lr" = 0.2 }\n\n'
                                       '[[variants]]\nname = "adam"\nset = { "optim.name" = "adam", "optim.lr" = 0.001 }\n\n'
                                       '[[variants]]\nname = "supcon"\nset = { "train.method" = "supcon", '
                                       '"train.epochs" = 3, "supcon.probe_epochs" = 2 }\n', "opt.toml"))
    cfg = {v.name: v.config for v in study.variants}
    assert speed_key(cfg["sgd"]) == speed_key(cfg["sgd-fast"]) != speed_key(cfg["adam"])
    timed = []
    monkeypatch.setattr(bench, "seconds_per_image",
                        lambda c, steps, threads: timed.append(c.name) or 3600 / 800)   # an epoch of 800 images: 1 h
    out = status_table(study, open_store(tmp_path / "r.db"), measure=1)
    assert len(timed) == 3   # sgd and sgd-fast share a timing
    # sgd, sgd-fast, adam: 1 epoch each; supcon: 3 epochs of pre-training and 2 of its probe
    assert "about 8.0 process-hours of training steps left" in out, out


def test_a_losses_own_keys_are_constants_of_its_timing_and_the_loss_is_not():
    """Runs that differ in a registered loss's own keys (`LOSSES.keys_of`) share one timing; another
    loss keys its own."""
    from cifarlab import api
    from cifarlab.study.status import speed_key
    gce = [api.config({"loss": {"name": "gce", "gce_q": q}}) for q in (0.4, 0.9)]
    elr = [api.config({"loss": {"name": "elr", "elr_lambda": lam, "elr_beta": b}}) for lam, b in ((1, 0.7), (3, 0.9))]
    assert speed_key(gce[0]) == speed_key(gce[1]) != speed_key(api.config({}))
    assert speed_key(elr[0]) == speed_key(elr[1]) != speed_key(gce[0])


def test_status_measure_refuses_a_step_count_under_one(tmp_path):
    path = write(tmp_path)
    out = subprocess.run(cli_command("study", "status", "--measure", str(path), "--db", str(tmp_path / "r.db"),
                                     "--measure-steps", "0"), capture_output=True, text=True, env=cli_env())
    assert out.returncode == 2 and "--measure-steps must be >= 1 (timed steps per network), got 0" in out.stderr
    assert not (tmp_path / "r.db").exists()


def test_until_claims_only_the_runs_expected_to_end_in_time(tmp_path, capsys):
    """`study run --until`: a run fits when its estimate (the finished runs' seconds per epoch times
    the epochs it has left) with the margin ends before the deadline; with no finished run to time
    by, nothing that trains fits; a worker with nothing that fits claims nothing and stops."""
    import time

    from cifarlab.study.run import MARGIN, fitting, run_study
    from cifarlab.study.status import seconds_left
    study = load_study(write(tmp_path, MORE_SEEDS.replace("more_seeds = { below = 0.5, seeds = [2, 3] }\n", "")
                             + '\n[[variants]]\nname = "pick"\nset = { "train.select" = "best_val" }\n'))   # base's training
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    assert seconds_left(study, store, None) is None   # nothing finished: nothing times the rest
    order = [k for k in p.runs]
    assert fitting(order, None, 1e9) == ([], len(order))
    first = next(k for k in p.runs if k.experiment == "base-1ep")
    finish(store, first, p.runs[first], 0.6)   # 1 epoch in 1.0 s
    left = seconds_left(study, store, None)
    assert first not in left and {round(left[k], 6) for k in left} == {0.0, 1.0, 2.0}   # 1- and 2-epoch runs
    picks = {k.seed: left[k] for k in left if k.experiment == "pick-1ep"}
    assert picks == {0: 0.0, 1: 1.0}   # seed 0 takes base's finished training; seed 1's sibling is not done
    # ... where its files are here: on a fresh checkout the shared folder is empty and it trains
    from cifarlab.study.run import claim_order
    from cifarlab.study.plan import sharing
    from cifarlab.train import trained_path
    shared = tmp_path / "runs" / study.name / "_shared"
    pick0 = next(k for k in left if k.experiment == "pick-1ep" and k.seed == 0)
    assert seconds_left(study, store, None, shared=shared)[pick0] == 1.0
    from cifarlab.study.status import tally
    work = lambda where: {k for *_, k in tally(study, store, shared=where)[3]}   # noqa: E731
    assert pick0 not in work(None) and pick0 in work(shared)   # `study status` counts its epoch too
    assert claim_order(p.runs, sharing(p.runs), store, shared)[0] != pick0
    shared.mkdir(parents=True)
    trained_path(shared, p.runs[pick0]).write_bytes(b"weights")
    assert seconds_left(study, store, None, shared=shared)[pick0] == 0.0
    assert pick0 not in work(shared)
    assert claim_order(p.runs, sharing(p.runs), store, shared)[0] == pick0   # a test pass now: first
    trained_path(shared, p.runs[pick0]).unlink()
    rest = [k for k in order if k != first]
    one = [k for k in rest if k.experiment.endswith("-1ep")]
    assert fitting(rest, left, 1.0 * MARGIN[0] + MARGIN[1] + 0.01) == (one, len(rest) - len(one))
    assert fitting(rest, left, 1e9) == (rest, 0)
    assert run_study(study, store, None, tmp_path / "runs", progress=False, until=time.time() + 30,
                     estimate=lambda keys: seconds_left(study, store, None, keys=keys)) == 0
    assert "none expected to end before --until" in (out := capsys.readouterr().out)
    assert "(the shortest needs about 1 min with the margin)" in out   # pick seed 0: 0 s + 60 s of margin
    assert all(store.status_of(k) == "pending" for k in rest)   # nothing claimed


def test_until_times_the_networks_here_where_the_finished_runs_ran_elsewhere(tmp_path, monkeypatch):
    """A slow CPU timed by a fast one's finished runs claimed runs it could not finish (co-teaching
    at 1,800 s on the Xeon took 4 h on the Zen 3): with a worker's threads, where no finished run ran
    on this machine, each network is also timed here and the larger estimate counts; a machine with
    finished runs of its own is timed by them alone, as before."""
    from cifarlab import bench
    from cifarlab.flops import images_per_epoch
    from cifarlab.study import status
    study = load_study(write(tmp_path, MORE_SEEDS.replace("more_seeds = { below = 0.5, seeds = [2, 3] }\n", "")))
    store = open_store(tmp_path / "r.db")
    p = plan(study, store)
    timed = []
    monkeypatch.setattr(bench, "seconds_per_image", lambda cfg, steps, threads: timed.append(threads) or 0.01)
    monkeypatch.setattr(status, "MEASURED", {})
    two = next(k for k in p.runs if k.experiment == "base-2ep")
    slow = 2 * 0.01 * images_per_epoch(p.runs[two])   # two epochs at the measured 0.01 s per image
    # nothing finished, no machine rate beside it: only the measurement times the study (it was None)
    assert status.seconds_left(study, store, "here", threads=1)[two] == pytest.approx(slow)
    assert timed == [1] and status.seconds_left(study, store, "here") is None   # one network: timed once
    first = next(k for k in p.runs if k.experiment == "base-1ep")
    finish(store, first, p.runs[first], 0.6)   # 1 epoch in 1.0 s on machine "m"
    assert status.seconds_left(study, store, "here")[two] == pytest.approx(2.0)       # as before: m's runs
    assert status.seconds_left(study, store, "here", threads=1)[two] == pytest.approx(max(2.0, slow))
    timed.clear()
    assert status.seconds_left(study, store, "m", threads=1)[two] == pytest.approx(2.0)   # its own runs
    assert timed == []
    # only the runs a claim could take are estimated (and timed): `keys`
    assert list(status.seconds_left(study, store, "here", threads=1, keys=[two])) == [two]


def test_until_reads_a_database_not_yet_written_in_memory(tmp_path):
    """`study run --until` on a study with no database yet: `none_fit` reads an empty store in memory
    and gives the stopping line only when no run fits and nothing is adopted; the file stays unwritten."""
    import time

    from cifarlab.results.store import empty_store
    from cifarlab.study.run import none_fit
    study = load_study(write(tmp_path, MORE_SEEDS))
    blank = empty_store(tmp_path / "new" / "results.db")
    line = none_fit(study, blank, time.time() + 3600, lambda keys: None)
    assert line.startswith(f"{study.name}: ") and "so none under --until" in line
    everything = lambda keys: {k: 1.0 for k in plan(study, blank).runs}   # noqa: E731
    assert none_fit(study, blank, time.time() + 3600, everything) is None   # a run fits: the database is made
    assert "none expected to end before --until" in none_fit(study, blank, time.time() + 30, everything)
    assert none_fit(study, blank, time.time() + 30, lambda keys: None, adopt=lambda: ["base seed 0: adopted"]) is None
    assert not (tmp_path / "new").exists()


def test_adopting_a_tuned_studys_database_takes_every_stage_in_one_call(tmp_path):
    """`study adopt --from-db`: the adopted tuning runs decide the arms, whose test runs then join the
    plan and are adopted by the same call (they used to wait for a second and a third call)."""
    from cifarlab.study.adopt import adopt_database
    study = load_study(write(tmp_path))
    source = open_store(tmp_path / "source.db")
    while True:   # the source database: every run of every stage done
        p = plan(study, source)
        todo = [k for k in p.runs if source.status_of(k) != "done"]
        if not todo:
            break
        for key in todo:
            finish(source, key, p.runs[key], 0.6 if key.experiment.endswith("0.05") else 0.4)
    store = open_store(tmp_path / "r.db")
    lines = adopt_database(study, store, source)
    p = plan(study, store)
    assert p.undecided == [] and all(store.status_of(k) == "done" for k in p.runs), lines
    assert len(lines) == len(p.runs) and all("adopted from" in line for line in lines)


def test_a_variant_that_sets_a_key_it_tunes_is_refused(tmp_path):
    bad = TUNED.replace('set = { "model.dropout" = [0.2, 0.2] }', 'set = { "model.dropout" = [0.2, 0.2], "optim.lr" = 0.3 }')
    with pytest.raises(ConfigError, match=r"\(drop\): set gives optim.lr, which this variant tunes"):
        load_study(write(tmp_path, bad))
    load_study(write(tmp_path, bad.replace('"optim.lr" = 0.3 }', '"optim.lr" = 0.3 }\ntune = {}')))   # untuned: fine


def test_a_flop_column_takes_the_unit_of_its_largest_count():
    from cifarlab.report.fair import flop_unit
    assert flop_unit(2.2e14) == ("PFLOP", 1e15) and flop_unit(0.0) == ("PFLOP", 1e15)
    assert flop_unit(9.9e13) == ("TFLOP", 1e12) and flop_unit(5e10) == ("GFLOP", 1e9)


def test_a_study_run_asked_to_stop_claims_nothing_more(tmp_path):
    """A stopping signal whose KeyboardInterrupt some code swallowed between runs (errors.STOP_ASKED,
    set by the command line's handler) stops `study run` before its next claim, not after another run."""
    from cifarlab.errors import STOP_ASKED
    from cifarlab.study.run import run_study
    study = load_study(write(tmp_path))
    store = open_store(tmp_path / "r.db")
    STOP_ASKED[0] = True
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(study, store, None, tmp_path / "runs", progress=False)
    finally:
        STOP_ASKED[0] = False
    assert not store.runs(study.name) or all(r["status"] == "pending" for r in store.runs(study.name))


def test_a_second_stop_while_the_claim_is_given_back_leaves_no_run_marked_running(tmp_path, monkeypatch):
    """A second stopping signal that lands while the first one's cleanup gives the claim back (a
    second Ctrl-C, the parent's SIGTERM after the terminal's SIGINT) is noted, not raised there."""
    import signal

    import cifarlab.study.executors as E
    from cifarlab import cli
    from cifarlab.errors import STOP_ASKED, STOPPED_BY
    from cifarlab.study.run import run_study
    study = load_study(write(tmp_path))
    store = open_store(tmp_path / "r.db")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(E, "train_one", stopped)
    release = store.release

    def second_stop_meanwhile(run_id):
        cli.interrupt(signal.SIGTERM, None)
        release(run_id)
    monkeypatch.setattr(store, "release", second_stop_meanwhile)

    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(study, store, NoData(), tmp_path / "runs", progress=False)
        assert STOP_ASKED[0] and STOPPED_BY[0] == signal.SIGTERM   # noted all the same
    finally:
        STOP_ASKED[0], STOPPED_BY[0] = False, signal.SIGINT
    runs = store.runs(study.name)
    assert runs and all(r["status"] == "pending" for r in runs)


def test_a_stop_noted_before_workers_start_or_a_ray_round_starts_neither(tmp_path, monkeypatch):
    """With a stop noted (errors.STOP_ASKED, a KeyboardInterrupt some code swallowed), `study run
    --workers N` spawns no worker and the Ray driver starts no round; the Ray driver's own handler
    notes a stop it defers, so one that arrives as a round ends still stops the next."""
    import os
    import signal
    import subprocess

    import cifarlab.study.executors as E
    from cifarlab.errors import STOP_ASKED, STOPPED_BY
    from cifarlab.study.run import drive_ray

    def never(*args, **kwargs):
        raise AssertionError("started after a stop was noted")
    monkeypatch.setattr(subprocess, "Popen", never)
    monkeypatch.setattr(E, "run_ray", never)
    study = load_study(write(tmp_path))
    store = open_store(tmp_path / "r.db")
    try:
        STOP_ASKED[0] = True
        with pytest.raises(KeyboardInterrupt):
            E.spawn_workers("s.toml", str(tmp_path / "r.db"), str(tmp_path / "runs"), 2, 1, (), None, False, "s")
        with pytest.raises(KeyboardInterrupt):
            drive_ray(None, study, store, tmp_path / "runs", data_dir=None, download=False)
        STOP_ASKED[0] = False
        with E.DeferredInterrupt() as deferred:
            assert signal.getsignal(signal.SIGTERM) == deferred.note   # else the signal below ends pytest
            os.kill(os.getpid(), signal.SIGTERM)   # handled in this (the main) thread before kill returns
            assert STOP_ASKED[0] and STOPPED_BY[0] == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):
                deferred.check()
    finally:
        STOP_ASKED[0], STOPPED_BY[0] = False, signal.SIGINT


def test_a_missing_experiment_file_is_blamed_on_the_key_that_names_it(tmp_path):
    path = write(tmp_path, TUNED.replace('experiment = "tiny.toml"', 'experiment = "tinny.toml"'))
    with pytest.raises(ConfigError, match=rf"^{path}: experiment = 'tinny.toml', but .*tinny.toml does not exist"):
        load_study(path)   # the study's own key, not its first variant's
    path = write(tmp_path, TUNED.replace('name = "drop"', 'name = "drop"\nextends = "other.toml"'))
    with pytest.raises(ConfigError, match=rf"^{path} variant 2 \(drop\): extends = 'other.toml', but "):
        load_study(path)


def test_an_edge_choice_of_a_grid_that_does_not_grow_says_so():
    from cifarlab.study.plan import ArmTuning, reason
    t = ArmTuning("a", ("optim.lr",), 1.0, (0,), "h", scores=[({"optim.lr": 0.1}, 0.5, 1), ({"optim.lr": 0.2}, 0.4, 1)])
    grid = {"optim.lr": [0.1, 0.2]}
    assert reason(t, {"optim.lr": 0.1}, grid, {"optim.lr": 0}, 0).endswith(
        "; still at the grid's edge in optim.lr (tune_extend = 0: the grid does not grow): the best value may lie beyond")
    assert reason(t, {"optim.lr": 0.1}, grid, {"optim.lr": 2}, 2).endswith(
        "; still at the grid's edge in optim.lr after 2 of 2 step(s): the best value may lie beyond")


def test_a_reason_recorded_in_the_old_wording_reads_in_the_new():
    """noise_methods recorded its edge choices as 'after 0 of 0 step(s)' (its grids do not grow):
    the plan, and so the report, reads them in the current words; the database keeps its text."""
    from pathlib import Path

    from cifarlab.results.store import copy_store
    from cifarlab.study.plan import NO_GROWTH
    repo = Path(__file__).resolve().parents[1]
    store = copy_store(repo / "results" / "noise_methods" / "results.db")
    assert any("after 0 of 0 step(s)" in reason for _, reason in store.choices("noise_methods").values())
    p = plan(load_study(repo / "studies" / "noise_methods.toml"), store)
    assert f"still at the grid's edge in loss.sce_alpha {NO_GROWTH}" in p.tuning["sce-sym40"].reason
    assert not any("after 0 of 0" in t.reason for t in p.tuning.values())


def test_process_time_below_a_tenth_of_an_hour_is_not_zero_hours():
    from cifarlab.study.status import process_span
    assert process_span(8 * 3600) == "8.0 process-hours" and process_span(300) == "5 process-minutes"
    assert process_span(40) == "40 process-seconds"
