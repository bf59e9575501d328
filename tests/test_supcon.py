"""The supervised contrastive loss L_out against a direct, slow implementation of Eq. 2."""

import math

import pytest
import torch

from cifarlab.losses import supcon_loss


def slow_l_out(z: torch.Tensor, labels, t: float) -> torch.Tensor:
    """Eq. 2 of Khosla et al., written out: a loop over anchors and their positives."""
    n, v, _ = z.shape
    views = [z[i, k] for i in range(n) for k in range(v)]
    cls = [(i if labels is None else int(labels[i])) for i in range(n) for _ in range(v)]
    total = 0.0
    for i, zi in enumerate(views):
        denominator = sum(torch.exp(zi @ views[a] / t) for a in range(len(views)) if a != i)
        positives = [p for p in range(len(views)) if p != i and cls[p] == cls[i]]
        total = total + -sum(torch.log(torch.exp(zi @ views[p] / t) / denominator) for p in positives) / len(positives)
    return total / len(views)


def embeddings(n, v=2, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, d, generator=g)
    return torch.nn.functional.normalize(z, dim=-1).requires_grad_()


@pytest.mark.parametrize("labels", [torch.tensor([0, 1, 0, 2, 1, 3]),      # classes 2 and 3 appear once
                                    torch.tensor([4, 4, 4, 4, 4, 4]),      # one class: everything positive
                                    None])                                   # SimCLR
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_l_out_equals_the_equation_in_value_and_gradient(labels, t):
    z = embeddings(6)
    fast = supcon_loss(z, labels, t)
    (g_fast,) = torch.autograd.grad(fast, z)
    z2 = z.detach().clone().requires_grad_()
    slow = slow_l_out(z2, labels, t)
    (g_slow,) = torch.autograd.grad(slow, z2)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.allclose(g_fast, g_slow, atol=1e-5)


def test_an_anchor_with_a_single_positive_and_a_class_seen_once():
    """Two identical views of two orthogonal images of different classes: each anchor's only positive
    is its other view (score 1/t) against two negatives (score 0), so L_out is SimCLR's NT-Xent,
    -log(e^(1/t) / (e^(1/t) + 2))."""
    z = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    t = 0.5
    want = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert supcon_loss(z, torch.tensor([0, 1]), t).item() == pytest.approx(want)
    assert supcon_loss(z, None, t).item() == pytest.approx(want)
    # same class for both images: each anchor now has 3 positives, and pulling them together costs less
    assert supcon_loss(z, torch.tensor([0, 0]), t).item() != pytest.approx(want)


TINY = {"model": {"widths": [8, 16], "dense": [], "head": "gap", "norm": "batch"},
        "augment": {"pipeline": ["flip", "resized_crop", "photometric", "grayscale"]},
        "optim": {"lr": 0.05}, "schedule": {"name": "linear", "warmup": 0.5},
        "train": {"method": "supcon", "epochs": 2, "batch_size": 50, "precision": "fp32", "threads": 1},
        "supcon": {"probe_epochs": 2, "probe_hidden": 16, "projection": 8}, "data": {"val_size": 200}}


@pytest.fixture
def splits(data_root):
    from cifarlab import config as C
    from cifarlab.data.loader import make_splits
    from cifarlab.data.sources import load_npz
    return make_splits(load_npz(data_root / "cifar10" / "cifar10.npz"), C.from_dict(TINY).data)


def test_a_supcon_run_pretrains_then_probes_and_resumes_in_either_phase(splits, tmp_path, monkeypatch):
    from cifarlab import config as C
    from cifarlab.runs import RunDir
    from cifarlab.train import train
    cfg = C.from_dict(TINY)
    straight = train(cfg, splits, RunDir(tmp_path / "straight"), progress=False)
    history = RunDir(tmp_path / "straight").read_metrics()
    assert [h.get("phase") for h in history] == ["pretrain", "pretrain", "probe", "probe"]
    assert all("val_acc" not in h and h["train_acc"] is None for h in history[:2])
    assert all(h["val_acc"] is not None and h["train_acc"] is not None for h in history[2:])
    assert straight["epochs"] == 4 and 0 < straight["test_acc"]
    for crash_epoch in (1, 3):                       # in the middle of pre-training, in the middle of the probe
        original, calls = RunDir.save_checkpoint, []

        def dies(self, state, original=original, calls=calls, at=crash_epoch):
            original(self, state)
            calls.append(1)
            if len(calls) == at:
                raise KeyboardInterrupt
        monkeypatch.setattr(RunDir, "save_checkpoint", dies)
        with pytest.raises(KeyboardInterrupt):
            train(cfg, splits, RunDir(tmp_path / f"r{crash_epoch}"), progress=False)
        monkeypatch.setattr(RunDir, "save_checkpoint", original)
        resumed = train(cfg, splits, RunDir(tmp_path / f"r{crash_epoch}"), resume=True, progress=False)
        for key in ("test_acc", "test_loss", "val_acc", "val_loss"):
            assert resumed[key] == straight[key], (crash_epoch, key)


@pytest.mark.parametrize("keys, message", [
    ({"supcon": {"temperature": 0.0}}, "supcon.temperature = 0.0 must be > 0"),
    ({"supcon": {"projection": 0}}, "supcon.projection = 0 must be > 0"),
    ({"train": {"method": "supcon", "batch_size": 1}}, "supcon contrasts the images of a batch, it needs at least 2"),
    ({"train": {"method": "supcon", "epochs": 2.5}}, "supcon's phases end at epoch boundaries"),
])
def test_bad_supcon_settings_are_one_line(keys, message):
    from cifarlab import config as C
    from cifarlab.errors import ConfigError
    with pytest.raises(ConfigError, match=message):
        C.from_dict(keys)


def test_a_supcon_study_report_draws_the_pretraining_loss_and_with_features_each_variants_projection(data_root,
                                                                                                   tmp_path):
    import subprocess

    from matplotlib.image import imread

    from conftest import cli_command, cli_env

    from cifarlab import config as C
    (tmp_path / "supcon.toml").write_text(C.to_toml(C.from_dict({**TINY, "name": "tiny-supcon"})))
    (tmp_path / "study.toml").write_text('''name = "tiny-supcon"
experiment = "supcon.toml"
seeds = [0]
[[variants]]
name = "supcon"
[[variants]]
name = "ce"
set = { "train.method" = "standard", "train.epochs" = 4 }
''')

    def cli(*args):
        return subprocess.run(cli_command(*args), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                              timeout=600)
    r = cli("study", "run", "study.toml", "--db", "r.db", "--data-dir", data_root, "--no-progress")
    assert r.returncode == 0, r.stderr
    r = cli("report", "study.toml", "--db", "r.db", "--out", "plain")
    assert r.returncode == 0, r.stderr
    readme = (tmp_path / "plain" / "README.md").read_text()
    assert "(pretraining_loss.png)" in readme and "## Features" not in readme
    assert imread(tmp_path / "plain" / "pretraining_loss.png").shape[1] >= 400
    # compute per phase: each phase's epochs and the seconds they took, read from the database
    import sqlite3
    conn = sqlite3.connect(tmp_path / "r.db")
    spent = dict(conn.execute("SELECT r.experiment || (e.epoch > 2 AND r.experiment = 'supcon'), SUM(e.seconds) "
                              "FROM epochs e JOIN runs r ON r.id = e.run_id GROUP BY 1"))
    conn.close()
    pre, probe, ce = spent["supcon0"], spent["supcon1"], spent["ce0"]
    assert (f"| `supcon` | SupCon pre-training (L_out) | 2 | {pre:,.0f} | MLP probe (frozen encoder) | 2 | "
            f"{probe:,.0f} | {pre + probe:,.0f} |") in readme
    assert f"| `ce` | cross-entropy, end to end | 4 | {ce:,.0f} | — | — | — | {ce:,.0f} |" in readme

    r = cli("report", "study.toml", "--db", "r.db", "--out", "rep", "--features", "--data-dir", data_root)
    assert r.returncode == 0, r.stderr
    readme = (tmp_path / "rep" / "README.md").read_text()
    assert "## Features" in readme and "(features.png)" in readme and "Not drawn" not in readme
    assert f"--features --data-dir {data_root}" in readme  # the command that regenerates the page
    height, width = imread(tmp_path / "rep" / "features.png").shape[:2]
    assert width > 1.6 * height  # two panels side by side: the SupCon encoder and the CE network

    import shutil
    shutil.rmtree(tmp_path / "runs" / "tiny-supcon" / "ce")
    r = cli("report", "study.toml", "--db", "r.db", "--out", "rep", "--features", "--data-dir", data_root)
    assert r.returncode == 0, r.stderr
    assert "Not drawn (no run directory with a checkpoint on the machine that wrote this page): `ce`." in \
        (tmp_path / "rep" / "README.md").read_text()
    shutil.rmtree(tmp_path / "runs")
    r = cli("report", "study.toml", "--db", "r.db", "--out", "rep", "--features", "--data-dir", data_root)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--features: no variant of tiny-supcon" in r.stderr


def test_runs_that_differ_only_in_their_probe_share_one_pretraining_with_a_straight_runs_numbers(splits, tmp_path):
    import json

    from cifarlab import config as C
    from cifarlab.runs import RunDir
    from cifarlab.train import pretrained_path, pretraining_hash, train
    mlp = C.from_dict(TINY)
    linear = C.from_dict({**TINY, "supcon": {**TINY["supcon"], "probe": "linear", "probe_lr": 0.05}})
    assert pretraining_hash(mlp) == pretraining_hash(linear) != pretraining_hash(
        C.from_dict({**TINY, "supcon": {**TINY["supcon"], "temperature": 0.5}}))
    straight = train(linear, splits, RunDir(tmp_path / "straight"), progress=False)
    shared = tmp_path / "_pretrained"
    first = train(mlp, splits, RunDir(tmp_path / "mlp"), progress=False, shared=shared)
    assert "pretrained_by" not in first and pretrained_path(shared, mlp).exists()
    seen = []
    taken = train(linear, splits, RunDir(tmp_path / "linear"), progress=False, shared=shared, on_epoch=seen.append)
    assert taken["pretrained_by"] == str(tmp_path / "mlp")
    for key in ("test_acc", "test_loss", "val_acc", "val_loss", "epochs"):
        assert taken[key] == straight[key], key       # the same numbers as pre-training itself
    rows = RunDir(tmp_path / "linear").read_metrics()
    assert [r["phase"] for r in rows] == ["pretrain", "pretrain", "probe", "probe"] == [r["phase"] for r in seen]
    assert rows[:2] == RunDir(tmp_path / "mlp").read_metrics()[:2]
    assert taken["wall_seconds"] > rows[1]["elapsed"]   # its compute counts the pre-training it took
    # a shared file whose checksum does not match is never loaded: the run pre-trains itself
    path = pretrained_path(shared, linear)
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    again = train(linear, splits, RunDir(tmp_path / "again"), progress=False, shared=shared)
    assert "pretrained_by" not in again and again["test_acc"] == straight["test_acc"]
    assert json.loads((tmp_path / "again" / "final.json").read_text())["epochs"] == 4


def test_a_plugin_method_with_two_phases_trains_like_supcon_under_its_own_name(splits, tmp_path, registries):
    """The loop, the FLOP count and the planner read a method's phases from its registry entry
    (`methods.Pretraining`): SupCon's entry registered again under another name trains the same run."""
    import dataclasses

    from cifarlab import config as C
    from cifarlab.flops import planned
    from cifarlab.methods import SUPCON, supcon, supcon_views
    from cifarlab.plugins import register_method
    from cifarlab.results.store import RunKey
    from cifarlab.runs import RunDir
    from cifarlab.study.plan import sharing
    from cifarlab.train import train
    register_method("contrast-then-probe", views=supcon_views, pretraining=SUPCON)(supcon)
    cfg = C.from_dict({**TINY, "train": {**TINY["train"], "epochs": 1}, "supcon": {**TINY["supcon"], "probe_epochs": 1}})
    mine = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, method="contrast-then-probe"))
    theirs, ours = (train(c, splits, RunDir(tmp_path / c.train.method), progress=False) for c in (cfg, mine))
    assert [h.get("phase") for h in RunDir(tmp_path / "contrast-then-probe").read_metrics()] == ["pretrain", "probe"]
    for key in ("test_acc", "val_acc", "train_flops", "images_seen"):
        assert ours[key] == theirs[key], key
    assert planned(mine)["train_flops"] == planned(cfg)["train_flops"] != 2 * planned(cfg)["images"] * \
        planned(cfg)["flops_per_image"]   # its own FLOP model, not one training step per image
    other_probe = dataclasses.replace(mine, supcon=dataclasses.replace(mine.supcon, probe="linear"))
    keys = [RunKey("s", n, 0, C.config_hash(c)) for n, c in (("a", mine), ("b", other_probe))]
    assert sharing(dict(zip(keys, (mine, other_probe))))[keys[0]] == {keys[1]}   # one pre-training shared
