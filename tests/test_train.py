"""Training loop: determinism and exact resume, on a tiny synthetic dataset."""

import json

import pytest
import torch

from cifarlab import config as C
from cifarlab.data.loader import make_splits
from cifarlab.data.sources import load_npz
from cifarlab.errors import UserError
from cifarlab.runs import RunDir
from cifarlab.train import train

TINY = {
    "model": {"widths": [8, 16], "dense": [16], "dropout": [0.1, 0.1], "norm": "batch"},
    "optim": {"lr": 0.02, "nesterov": True, "l2": 0.0005},  # 0.05 learnt too unevenly across CPUs
    "augment": {"pipeline": ["flip", "translate"], "translate": 0.1},
    "schedule": {"name": "linear", "warmup": 0.5},
    "train": {"epochs": 2, "batch_size": 50, "precision": "fp32", "threads": 1},
    "data": {"val_size": 200},
}


@pytest.fixture
def splits(data_root):
    return make_splits(load_npz(data_root / "cifar10" / "cifar10.npz"), C.from_dict(TINY).data)


def run(cfg, splits, path, **kw):
    return train(cfg, splits, RunDir(path), progress=False, **kw)


class Killed(Exception):
    pass


def test_same_seed_same_numbers_and_learning_happens(splits, tmp_path):
    cfg = C.from_dict(TINY)
    a, b = run(cfg, splits, tmp_path / "a"), run(cfg, splits, tmp_path / "b")
    assert a["test_acc"] == b["test_acc"] and a["val_loss"] == b["val_loss"]
    assert a["test_acc"] > 0.3  # chance is 0.1; the synthetic classes differ by colour
    history = RunDir(tmp_path / "a").read_metrics()
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s"}
    assert C.load(tmp_path / "a" / "config.toml") == cfg
    assert len(a["per_class_test_acc"]) == 10


# elr keeps per-sample targets and co-teaching a second network: both travel in the checkpoint
@pytest.mark.parametrize("extra", [{}, {"loss": {"name": "elr"}},
                                   {"train": {**TINY["train"], "method": "coteaching", "forget_rate": 0.3,
                                              "forget_epochs": 1}},
                                   {"train": {**TINY["train"], "ema": 0.9}},
                                   {"model": {**TINY["model"], "stem": "whiten", "patch": 2}},
                                   {"train": {**TINY["train"], "lookahead": 4, "ema": 0.9}},
                                   {"optim": {**TINY["optim"], "name": "muon", "muon_lr": 0.1}}],
                         ids=["standard", "elr", "coteaching", "ema", "whiten", "lookahead", "muon"])
@pytest.mark.parametrize("crash_after", ["save_checkpoint", "write_metrics"])
def test_resume_after_a_kill_gives_the_same_numbers(splits, tmp_path, monkeypatch, crash_after, extra):
    cfg = C.from_dict({**TINY, **extra})
    straight = run(cfg, splits, tmp_path / "straight")

    original = getattr(RunDir, crash_after)
    calls = []

    def dies_on_epoch_2(self, *args):
        calls.append(1)
        original(self, *args)
        if crash_after == "save_checkpoint" or len(calls) == 2:
            raise Killed  # killed right after epoch 1's checkpoint / after epoch 2's metrics line
    monkeypatch.setattr(RunDir, crash_after, dies_on_epoch_2)
    with pytest.raises(Killed):
        run(cfg, splits, tmp_path / "resumed")
    monkeypatch.setattr(RunDir, crash_after, original)

    resumed = run(cfg, splits, tmp_path / "resumed", resume=True)
    for key in ("test_acc", "test_loss", "val_acc", "val_loss", "per_class_test_acc"):
        assert resumed[key] == straight[key], key
    drop = {"train_seconds", "images_per_s", "val_seconds", "elapsed"}
    clean = [{k: v for k, v in h.items() if k not in drop} for h in RunDir(tmp_path / "resumed").read_metrics()]
    assert clean == [{k: v for k, v in h.items() if k not in drop}
                     for h in RunDir(tmp_path / "straight").read_metrics()]


def test_existing_run_needs_resume_and_matching_config(splits, tmp_path):
    cfg = C.from_dict(TINY)
    run(cfg, splits, tmp_path / "r")
    with pytest.raises(UserError, match="--resume"):
        run(cfg, splits, tmp_path / "r")
    other = C.from_dict({**TINY, "optim": {**TINY["optim"], "lr": 0.01}})
    with pytest.raises(UserError, match="different settings"):
        run(other, splits, tmp_path / "r", resume=True)


def test_corrupt_checkpoint_is_refused(splits, tmp_path):
    cfg = C.from_dict(TINY)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        run(cfg, splits, tmp_path / "r", resume=True)


def test_a_checkpoint_is_verified_before_it_is_read_and_a_kill_between_its_two_writes_loses_nothing(tmp_path, capsys):
    """checkpoint.pt and best.pt keep a SHA-256 list beside them (the file's and the one it replaces):
    a changed byte is refused in one line before torch.load; the file left by a process killed after
    the checksum's write and before the file's still verifies; one from before checksums (none beside
    it) is read with weights_only and a warning."""
    from cifarlab.runs import atomic_write, save_checked
    run = RunDir(tmp_path / "r")
    run.save_checkpoint({"config_hash": "h", "seed": 0, "w": torch.ones(3)})
    assert run.load_checkpoint("h", 0)["w"].sum() == 3
    first = run.checkpoint_path.read_bytes()
    save_checked(run.checkpoint_path, {"config_hash": "h", "seed": 0, "w": torch.zeros(3)})
    atomic_write(run.checkpoint_path, first)   # as if killed before the new file replaced the old
    assert run.load_checkpoint("h", 0)["w"].sum() == 3
    damaged = bytearray(first)
    damaged[-40] ^= 1   # inside the tensor data: torch.load alone would not notice
    run.checkpoint_path.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match=r"checkpoint .*checkpoint.pt does not match its checksum in "
                                        r"checkpoint.pt.sha256: it changed after the run wrote it; delete it"):
        run.load_checkpoint("h", 0)
    run.save_best({"w": torch.ones(2)}, 4)
    assert run.load_best()["epoch"] == 4
    (tmp_path / "r" / "best.pt.sha256").unlink()   # a run from before checksums
    assert run.load_best()["epoch"] == 4 and "has no best.pt.sha256" in capsys.readouterr().err


def test_final_json_has_provenance(splits, tmp_path):
    run(C.from_dict(TINY), splits, tmp_path / "r")
    final = json.loads((tmp_path / "r" / "final.json").read_text())
    assert {"git_commit", "torch", "machine", "config_hash", "wall_seconds"} <= set(final)
    assert final["runtime"].startswith("cpu") and torch.__version__ == final["torch"]


def test_a_diverged_run_stops_and_says_so(splits, tmp_path):
    # No BatchNorm and an absurd learning rate: the loss turns non-finite in the first epochs.
    cfg = C.from_dict({**TINY, "model": {**TINY["model"], "norm": "none"}, "optim": {"lr": 1e6},
                       "schedule": {"name": "constant", "warmup": 0.0}, "train": {**TINY["train"], "epochs": 4}})
    final = run(cfg, splits, tmp_path / "r")
    history = RunDir(tmp_path / "r").read_metrics()
    assert final["epochs"] == len(history) < 4
    assert final["stopped"] == f"diverged: non-finite training loss at epoch {len(history)} of 4"
    # NaN weights give NaN logits, whose argmax is the first class for every image: the test
    # accuracy is that class's share (a tenth here), and only that class scores
    assert final["test_acc"] == pytest.approx(0.1)
    assert sorted(final["per_class_test_acc"]) == [0.0] * 9 + [1.0]
    from cifarlab.stats import chance_warning   # `run` and `study run` say so when it ends
    assert "this run never rose above chance (best validation accuracy " in chance_warning(final, history)
    from cifarlab.predict import load_run   # it saved no model: predict and export say why
    with pytest.raises(UserError, match=r"holds no usable model.pt \(the run stopped \(diverged: non-finite"):
        load_run(tmp_path / "r")
    # Resuming it trains nothing more; a healthy run has no `stopped`.
    assert run(cfg, splits, tmp_path / "r", resume=True)["epochs"] == len(history)
    assert len(RunDir(tmp_path / "r").read_metrics()) == len(history)
    assert run(C.from_dict(TINY), splits, tmp_path / "ok")["stopped"] is None


def test_best_val_selection_tests_the_epoch_of_best_validation_accuracy(splits, tmp_path):
    cfg = C.from_dict({**TINY, "train": {**TINY["train"], "epochs": 3, "select": "best_val"}})
    final = run(cfg, splits, tmp_path / "r")
    history = RunDir(tmp_path / "r").read_metrics()
    best = max(range(len(history)), key=lambda i: (history[i]["val_acc"], -i))
    assert final["selected_epoch"] == best + 1 and final["val_acc"] == history[best]["val_acc"]
    # the weights tested are that epoch's: a last-epoch run of the same seed tests other weights
    # unless the last epoch was the best one
    last = run(C.from_dict({**TINY, "train": {**TINY["train"], "epochs": 3}}), splits, tmp_path / "l")
    assert last["selected_epoch"] == 3
    assert torch.load(tmp_path / "r" / "best.pt", weights_only=True)["epoch"] == final["selected_epoch"]
    # the same seed trains the same weights: the tests agree exactly when the last epoch was the best
    assert (final["test_loss"] == last["test_loss"]) == (best == 2)
    with pytest.raises(UserError, match="train.select = 'best_val' chooses an epoch on the validation split"):
        C.from_dict({**TINY, "data": {"val_size": 0}, "train": {**TINY["train"], "select": "best_val"}})


def test_runs_that_differ_only_in_select_share_one_training_with_straight_runs_numbers(splits, tmp_path):
    from cifarlab.results.store import RunKey
    from cifarlab.study.run import sharing
    from cifarlab.config import selection_hash
    from cifarlab.train import trained_path
    keys = {"epochs": 4, "batch_size": 50}
    last = C.from_dict({**TINY, "optim": {**TINY["optim"], "lr": 0.2}, "train": {**TINY["train"], **keys}})
    best = C.from_dict({**TINY, "optim": {**TINY["optim"], "lr": 0.2},
                        "train": {**TINY["train"], **keys, "select": "best_val"}})
    assert selection_hash(last) == selection_hash(best) and C.config_hash(last) != C.config_hash(best)
    straight = {"last": run(last, splits, tmp_path / "s-last"), "best": run(best, splits, tmp_path / "s-best")}
    assert straight["best"]["selected_epoch"] < 4        # this config's best epoch is not its last:
    assert straight["best"]["test_loss"] != straight["last"]["test_loss"]   # the two test other weights
    for first, then in (("last", "best"), ("best", "last")):
        shared, cfgs = tmp_path / f"shared-{first}", {"last": last, "best": best}
        own = run(cfgs[first], splits, tmp_path / f"{first}-first", shared=shared)
        assert "trained_by" not in own and trained_path(shared, last).exists()
        seen = []
        taken = run(cfgs[then], splits, tmp_path / f"{then}-then", shared=shared, on_epoch=seen.append)
        assert taken["trained_by"] == str(tmp_path / f"{first}-first")
        for key in ("test_acc", "test_loss", "val_acc", "selected_epoch", "epochs"):
            assert taken[key] == straight[then][key], (first, key)
        assert seen == RunDir(tmp_path / f"{first}-first").read_metrics() == RunDir(tmp_path / f"{then}-then").read_metrics()
    # a shared file of this key that another network wrote: one line, nothing trained on it
    from cifarlab.runs import save_verified
    save_verified(trained_path(tmp_path / "odd", last), {"key": selection_hash(last), "seed": 0,
                                                         "last": {"w": torch.zeros(1)}})
    with pytest.raises(UserError, match="does not fit this model"):
        run(best, splits, tmp_path / "odd-run", shared=tmp_path / "odd")
    # a study shares only between runs of one seed that differ only there (a validation split needed)
    plan = {RunKey("s", "a", 0, "h1"): last, RunKey("s", "b", 0, "h2"): best, RunKey("s", "c", 1, "h1"): last,
            RunKey("s", "d", 0, "h3"): C.from_dict({**TINY, "loss": {"label_smoothing": 0.1}})}
    a, b, c, d = plan
    assert sharing(plan) == {a: {b}, b: {a}}
    # a run whose sibling trains now is claimed last, so that it finds the sibling's work
    from cifarlab.results.store import open_store
    from cifarlab.study.run import claim_order
    store = open_store(tmp_path / "r.db")
    for key, cfg in plan.items():
        store.register(key, C.to_dict(cfg))
    assert claim_order(plan, sharing(plan), store) == [a, b, c, d]
    assert store.claim("s", [a])["experiment"] == "a"
    assert claim_order(plan, sharing(plan), store) == [a, c, d, b]


class NotWeights:
    """An object a full unpickler would build; weights_only refuses it."""


def test_a_verified_file_is_unpickled_only_when_its_checksum_matches_and_as_weights_only(tmp_path, monkeypatch):
    from cifarlab.runs import load_verified, save_verified
    path = tmp_path / "state.pt"
    assert load_verified(path) is None                                  # nothing there
    save_verified(path, {"w": torch.arange(3.0), "epoch": 2})
    state = load_verified(path)
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.arange(3.0))
    check = path.with_name("state.pt.sha256")
    good = check.read_text()
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or {})
    check.write_text("0" * 64 + "\n")                                  # a checksum that differs
    assert load_verified(path) is None
    check.unlink()                                                      # no checksum at all
    assert load_verified(path) is None
    assert loads == []                                                  # neither was unpickled
    monkeypatch.undo()
    check.write_text(good)
    save_verified(path, {"obj": NotWeights()})                         # verifies, but is no plain state
    assert load_verified(path) is None


def test_a_checkpoint_of_another_layout_is_refused_in_one_line(splits, tmp_path):
    cfg = C.from_dict(TINY)
    run(cfg, splits, tmp_path / "r")
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    state["model"] = {f"old.{k}": v for k, v in state["model"].items()}   # keys of an older network layout
    RunDir(tmp_path / "r").save_checkpoint(state)
    with pytest.raises(UserError, match="does not fit this model") as err:
        run(cfg, splits, tmp_path / "r", resume=True)
    assert "\n" not in str(err.value)


def read_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_events_hold_the_metrics_and_survive_a_resume(splits, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    cfg = C.from_dict({**TINY, "train": {**TINY["train"], "tensorboard": True}})
    assert C.config_hash(cfg) == C.config_hash(C.from_dict(TINY))  # how a run logs, not what it computes
    run(cfg, splits, tmp_path / "a")
    history = RunDir(tmp_path / "a").read_metrics()
    scalars = read_scalars(tmp_path / "a")
    for key, tag in (("train_loss", "loss/train"), ("val_acc", "accuracy/val"), ("lr", "lr")):
        assert [s for s, _ in scalars[tag]] == [1, 2]
        assert [v for _, v in scalars[tag]] == pytest.approx([h[key] for h in history], rel=1e-6)

    # killed after epoch 2's metrics line but before its checkpoint: epoch 2 is trained again,
    # and its first events give way to the second's
    original, calls = RunDir.write_metrics, []

    def dies_after_epoch_2(self, *args):
        calls.append(1)
        original(self, *args)
        if len(calls) == 2:
            raise Killed
    monkeypatch.setattr(RunDir, "write_metrics", dies_after_epoch_2)
    with pytest.raises(Killed):
        run(cfg, splits, tmp_path / "b")
    monkeypatch.setattr(RunDir, "write_metrics", original)
    run(cfg, splits, tmp_path / "b", resume=True)
    resumed = read_scalars(tmp_path / "b")
    assert [s for s, _ in resumed["loss/train"]] == [1, 2]
    assert [v for _, v in resumed["loss/train"]] == pytest.approx([v for _, v in scalars["loss/train"]], rel=1e-6)


def test_tensorboard_events_of_a_run_started_over_in_a_folder_give_way_to_the_new_ones(tmp_path):
    """A folder holding events of a run that ended before its first checkpoint: the new run's events
    supersede them (purge from step 1), so the folder shows the new run only."""
    pytest.importorskip("tensorboard")
    from cifarlab.tensorboard import EventLog
    old = EventLog(tmp_path, [])
    for epoch in (1, 2, 3):
        old.epoch({"epoch": epoch, "train_loss": 9.0})
    old.close()
    new = EventLog(tmp_path, [])
    new.epoch({"epoch": 1, "train_loss": 1.0})
    new.close()
    assert read_scalars(tmp_path)["loss/train"] == [(1, 1.0)]


def test_tensorboard_without_the_package_is_one_line(monkeypatch):
    import sys
    from cifarlab.tensorboard import check_available
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(UserError, match=r'needs the tensorboard package.*pip install -e "\.\[tensorboard\]"') as err:
        check_available()
    assert "\n" not in str(err.value)


def test_weight_average_follows_its_formula_and_copies_the_buffers():
    from cifarlab.optim import WeightAverage
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = WeightAverage(net, 0.5)
    expected = [p.detach().clone() for p in net.parameters()]
    for step in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        net(torch.randn(5, 3))                         # moves BatchNorm's running statistics
        d = min(0.5, (1 + step) / (10 + step))         # 0.1, 0.18..., then the decay itself
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, net.parameters())]
        ema.update(net, step)
    for e, a in zip(expected, ema.module.parameters()):
        assert torch.allclose(a, e) and not a.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(ema.module.buffers(), net.buffers()))


def test_with_ema_the_averaged_weights_are_validated_tested_and_shown(splits, tmp_path):
    from cifarlab.evaluate import evaluate
    from cifarlab.show import trained_session
    plain = run(C.from_dict(TINY), splits, tmp_path / "plain")
    cfg = C.from_dict({**TINY, "train": {**TINY["train"], "ema": 0.9}})
    averaged = run(cfg, splits, tmp_path / "ema")
    assert averaged["test_loss"] != plain["test_loss"]
    _, session = trained_session(tmp_path / "ema", splits)   # the checkpoint's averaged network
    test = evaluate(session.model, splits.test, session.prep, session.rt, cfg.train, splits.num_classes)
    assert test["loss"] == pytest.approx(averaged["test_loss"], rel=1e-6) and test["acc"] == averaged["test_acc"]
    # the trained (not averaged) weights of the same run score differently
    state = RunDir(tmp_path / "ema").load_checkpoint(C.config_hash(cfg), 0, cfg)
    session.model.load_state_dict(state["model"])
    raw = evaluate(session.model, splits.test, session.prep, session.rt, cfg.train, splits.num_classes)
    assert raw["loss"] != pytest.approx(averaged["test_loss"], rel=1e-6)


def test_lookahead_steps_the_slow_weights_alpha_of_the_way_every_k_steps_and_at_each_epochs_end():
    from cifarlab.optim import Lookahead
    net = torch.nn.Linear(3, 2)
    look = Lookahead(k=3, alpha=0.25)
    look.start(net)
    slow = [p.detach().clone() for p in net.parameters()]
    for i in range(7):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)                       # an optimizer step
        fast = [p.detach().clone() for p in net.parameters()]
        look.after_step(net, i, last=i == 6)
        if i in (2, 5, 6):                        # every 3rd step, and the epoch's last
            slow = [s + 0.25 * (f - s) for s, f in zip(slow, fast)]
            assert all(torch.allclose(p, s) for p, s in zip(net.parameters(), slow))
        else:
            assert all(torch.equal(p, f) for p, f in zip(net.parameters(), fast))


def test_cubic_lookahead_ramp_pulls_harder_towards_the_slow_weights_as_training_ends():
    from cifarlab.optim import Lookahead
    look = Lookahead(k=5, alpha=0.2, ramp="cubic", total_steps=100)
    assert look.alpha_at(0) == pytest.approx(1 - 0.8 * 0.01 ** 3)       # almost plain training at first
    assert look.alpha_at(49) == pytest.approx(1 - 0.8 * 0.125)          # half way: (1/2)^3 of the pull
    assert look.alpha_at(99) == pytest.approx(0.2) and look.alpha_at(150) == pytest.approx(0.2)
    assert Lookahead(k=5, alpha=0.2).alpha_at(0) == 0.2                 # no ramp: alpha fixed
    net = torch.nn.Linear(3, 2)
    look.start(net)
    slow = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    look.after_step(net, 4, last=False, step=49)                        # a cycle ends at global step 49
    assert all(torch.allclose(p, s + 0.9) for p, s in zip(net.parameters(), slow))


def test_lookahead_with_alpha_1_is_plain_training_and_with_alpha_half_is_not(splits, tmp_path):
    plain = run(C.from_dict(TINY), splits, tmp_path / "plain")
    one = run(C.from_dict({**TINY, "train": {**TINY["train"], "lookahead": 3, "lookahead_alpha": 1.0}}), splits,
              tmp_path / "one")
    half = run(C.from_dict({**TINY, "train": {**TINY["train"], "lookahead": 3}}), splits, tmp_path / "half")
    assert one["test_loss"] == plain["test_loss"] and one["val_loss"] == plain["val_loss"]
    assert half["test_loss"] != plain["test_loss"] and half["test_acc"] > 0.3
    ramp = run(C.from_dict({**TINY, "train": {**TINY["train"], "lookahead": 3, "lookahead_ramp": "cubic"}}), splits,
               tmp_path / "ramp")
    assert ramp["test_loss"] not in (plain["test_loss"], half["test_loss"]) and ramp["test_acc"] > 0.3


@pytest.mark.parametrize("keys, message", [
    ({"train": {"ema": 1.0}}, "train.ema = 1.0 must lie in [0, 1)"),
    ({"train": {"lookahead": -1}}, "train.lookahead = -1 is the number of optimizer steps"),
    ({"train": {"lookahead": 5, "lookahead_ramp": "linear"}}, "train.lookahead_ramp = 'linear' is invalid; valid: none, cubic"),
    ({"schedule": {"warmup_start": 1.0}}, "schedule.warmup_start = 1.0 must lie in [0, 1)"),
    ({"model": {"norm_momentum": 0.0}}, "model.norm_momentum = 0.0 is the weight of each batch"),
    ({"train": {"lookahead": 5, "lookahead_alpha": 0.0}}, "train.lookahead_alpha = 0.0 must lie in (0, 1]"),
    ({"train": {"lookahead": 5, "lookahead_alpha": 1.5}}, "train.lookahead_alpha = 1.5 must lie in (0, 1]"),
    ({"train": {"lookahead": 5, "method": "supcon"}}, "train.lookahead steps one network's weights back"),
    ({"train": {"ema": 0.9, "method": "coteaching"}}, "train.ema averages one network's weights"),
    ({"train": {"lookahead": 5, "method": "coteaching"}}, "train.lookahead steps one network's weights back"),
    ({"train": {"ema": 0.9, "method": "supcon"}}, "train.ema averages one network's weights"),
])
def test_bad_ema_and_lookahead_are_one_line(keys, message):
    from cifarlab.errors import ConfigError
    import re
    with pytest.raises(ConfigError, match=re.escape(message)):
        C.from_dict(keys)


def test_a_whitening_stem_is_fitted_to_the_training_images_and_never_trained(splits, tmp_path):
    from cifarlab.train import build_session
    cfg = C.from_dict({**TINY, "model": {**TINY["model"], "stem": "whiten", "patch": 2}})
    fitted = build_session(cfg, splits).model.stem[0].conv
    final = run(cfg, splits, tmp_path / "w")
    state = RunDir(tmp_path / "w").load_checkpoint(C.config_hash(cfg), 0, cfg)["model"]
    assert torch.equal(state["stem.0.conv.weight"], fitted.weight)          # frozen through training
    assert not torch.equal(state["stem.0.conv.bias"], fitted.bias)          # the bias trains
    assert final["test_acc"] > 0.3


def test_whiten_init_fits_the_first_conv_of_every_network_to_the_training_images_then_trains_it(splits, tmp_path):
    from cifarlab.models.layers import first_conv, whiten_conv_
    from cifarlab.train import WHITEN_SAMPLES, build_session
    cfg = C.from_dict({**TINY, "model": {**TINY["model"], "whiten_init": True},
                       "train": {**TINY["train"], "method": "coteaching", "forget_rate": 0.2, "forget_epochs": 1}})
    s = build_session(cfg, splits)
    expected = torch.nn.Conv2d(3, first_conv(s.model).out_channels, 3)
    whiten_conv_(expected, s.prep(splits.train.images[:WHITEN_SAMPLES]))
    for net in (s.model, s.peer):                        # co-teaching's second network too
        assert torch.allclose(first_conv(net).weight, expected.weight, atol=1e-6)
    plain = build_session(C.from_dict(TINY), splits).model
    assert not torch.allclose(first_conv(plain).weight, expected.weight, atol=1e-3)
    final = run(cfg, splits, tmp_path / "w")
    state = RunDir(tmp_path / "w").load_checkpoint(C.config_hash(cfg), 0, cfg)["model"]
    name = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    assert not torch.equal(state[name], first_conv(s.model).weight)   # it trains, unlike a whitening stem
    assert final["test_acc"] > 0.3


def test_fixed_norm_scales_stay_at_one_and_biases_learn_at_bias_lr_times_the_rate(splits, tmp_path):
    from cifarlab.train import build_session, set_learning_rates
    cfg = C.from_dict({**TINY, "model": {**TINY["model"], "norm_scale": False}, "optim": {**TINY["optim"], "bias_lr": 8}})
    s = build_session(cfg, splits)
    lr = set_learning_rates(s, 30, 0)
    kernels, others = s.opt.param_groups
    assert kernels["lr"] == lr and others["lr"] == pytest.approx(8 * lr) and lr > 0
    run(cfg, splits, tmp_path / "r")
    state = RunDir(tmp_path / "r").load_checkpoint(C.config_hash(cfg), 0, cfg)["model"]
    scales = [v for k, v in state.items() if k.endswith(".weight") and v.ndim == 1]
    shifts = [v for k, v in state.items() if k.endswith(".bias") and v.ndim == 1 and "stages" in k]
    assert scales and all(torch.equal(v, torch.ones_like(v)) for v in scales)   # BatchNorm's scales untrained
    assert any(v.abs().max() > 0 for v in shifts)                               # its shifts trained


def test_orthogonalise_brings_every_singular_value_near_one_on_both_sides():
    """A conv filter bank's gradient shape (out x in * 9), either way round: the singular values,
    spread over 2-3x in the gradient and tiny after the Frobenius normalisation, all end near 1."""
    from cifarlab.optim import orthogonalise
    torch.manual_seed(0)
    for shape in [(64, 576), (600, 64), (256, 2304)]:
        g = torch.randn(shape) * torch.linspace(0.5, 2.0, shape[1])
        before, after = torch.linalg.svdvals(g / g.norm()), torch.linalg.svdvals(orthogonalise(g))
        assert before.max() < 0.3 and before.max() / before.min() > 2
        assert orthogonalise(g).shape == g.shape and 0.6 < after.min() and after.max() < 1.25, (shape, after)


def test_muon_steps_filters_along_the_orthogonalised_momentum_and_the_rest_as_sgd():
    from cifarlab.optim import build_optimizer, orthogonalise
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 2))
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 2))
    twin.load_state_dict(net.state_dict())
    cfg = C.from_dict({"optim": {"name": "muon", "lr": 0.1, "momentum": 0.85, "nesterov": True, "weight_decay": 1e-3,
                                 "muon_lr": 0.24, "muon_momentum": 0.6}}).optim
    muon = build_optimizer(net, cfg)
    sgd = torch.optim.SGD([{"params": [twin[2].weight], "weight_decay": 1e-3}, {"params": [twin[0].bias, twin[2].bias]}],
                          lr=0.1, momentum=0.85, nesterov=True)
    kinds = sorted((g["orthogonal"], len(g["params"])) for g in muon.param_groups)
    assert kinds == [(False, 1), (False, 2), (True, 1)]                 # filters | head kernel | biases
    x = torch.randn(5, 3, 6, 6)
    buf = torch.zeros_like(net[0].weight)
    for step in range(3):
        before = net[0].weight.detach().clone()
        for model, opt in ((net, muon), (twin, sgd)):
            opt.zero_grad()
            model(x).square().mean().backward()
        g = net[0].weight.grad.clone()
        buf = g if step == 0 else 0.6 * buf + g
        muon.step(), sgd.step()
        scaled = before * 8 ** 0.5 / before.norm()
        expected = scaled - 0.24 * orthogonalise((g + 0.6 * buf).reshape(8, -1)).view_as(before)
        assert torch.allclose(net[0].weight, expected, atol=1e-6)
        for mine, theirs in ((net[2].weight, twin[2].weight), (net[0].bias, twin[0].bias), (net[2].bias, twin[2].bias)):
            assert torch.allclose(mine, theirs, atol=1e-7)
        with torch.no_grad():
            twin[0].weight.copy_(net[0].weight)                           # the twin's filters follow Muon's


def test_a_run_with_muon_learns_and_checkpoints_its_optimizer_state(splits, tmp_path):
    cfg = C.from_dict({**TINY, "optim": {**TINY["optim"], "name": "muon", "muon_lr": 0.1}})
    final = run(cfg, splits, tmp_path / "m")
    assert final["test_acc"] > 0.3
    state = RunDir(tmp_path / "m").load_checkpoint(C.config_hash(cfg), 0, cfg)["optimizer"]
    assert any(g["orthogonal"] for g in state["param_groups"]) and state["state"]
