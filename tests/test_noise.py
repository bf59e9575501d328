"""Label noise: rates, maps, seeds, the test set untouched, the memorisation metrics, bad input."""

import json

import numpy as np
import pytest

from cifarlab import config as C
from cifarlab.data.loader import make_splits
from cifarlab.data.noise import corrupt, transition_matrix
from cifarlab.data.sources import Arrays
from cifarlab.errors import ConfigError

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def labels(n=20000, k=10):
    return np.arange(n) % k


@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "asymmetric"])
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_the_drawn_flip_rate_matches_the_requested_one(kind, rate):
    y = labels()
    noise = corrupt(y, kind, rate, 0, CIFAR10, "cifar10")
    # asymmetric flips only the 5 mapped classes: half the samples here
    expected = rate * (0.5 if kind == "asymmetric" else 1.0)
    sampling_error = 4 * np.sqrt(expected * (1 - expected) / len(y))
    assert abs(noise.actual_rate - expected) < sampling_error
    assert np.allclose(noise.transition.sum(1), 1)
    # the empirical transition matrix matches T within sampling error
    counts = np.zeros((10, 10))
    np.add.at(counts, (noise.clean, noise.labels), 1)
    assert np.abs(counts / counts.sum(1, keepdims=True) - noise.transition).max() < 0.05


def test_symmetric_noise_never_draws_the_true_class_and_spreads_evenly():
    noise = corrupt(labels(), "symmetric", 0.6, 1, CIFAR10, "cifar10")
    t = transition_matrix("symmetric", 0.6, CIFAR10, "cifar10")
    assert np.allclose(np.diag(t), 0.4) and np.allclose(t[0, 1:], 0.6 / 9)
    flipped_to = noise.labels[noise.flipped & (noise.clean == 0)]
    assert 0 not in flipped_to and set(flipped_to) == set(range(1, 10))


def test_asymmetric_noise_maps_exactly_the_listed_classes():
    noise = corrupt(labels(), "asymmetric", 0.4, 2, CIFAR10, "cifar10")
    moved = {(CIFAR10[c], CIFAR10[n]) for c, n in zip(noise.clean[noise.flipped], noise.labels[noise.flipped])}
    assert moved == {("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"), ("dog", "cat")}
    for name in ("airplane", "automobile", "frog", "horse", "ship"):
        assert not noise.flipped[noise.clean == CIFAR10.index(name)].any()


def test_pairflip_moves_each_class_to_the_next():
    noise = corrupt(labels(), "pairflip", 0.3, 0, CIFAR10, "cifar10")
    assert ((noise.clean[noise.flipped] + 1) % 10 == noise.labels[noise.flipped]).all()


def arrays():
    rng = np.random.default_rng(0)
    y = np.arange(2000) % 10
    return Arrays(rng.integers(0, 256, (2000, 32, 32, 3), dtype=np.uint8), y,
                  rng.integers(0, 256, (500, 32, 32, 3), dtype=np.uint8), np.arange(500) % 10, CIFAR10)


def test_one_noise_seed_gives_the_same_labels_whatever_the_training_seed_and_the_test_set_is_clean():
    a = arrays()
    cfgs = [C.from_dict({"data": {"noise": "symmetric", "noise_rate": 0.4, "val_size": 200},
                         "train": {"seed": s}}).data for s in (0, 1)]
    s0, s1 = make_splits(a, cfgs[0]), make_splits(a, cfgs[1])
    assert (s0.train.labels == s1.train.labels).all() and (s0.val.labels == s1.val.labels).all()
    assert (s0.test.labels.numpy() == a.test_labels).all() and s0.test.clean is None
    assert (s0.train.clean != s0.train.labels).float().mean().item() == pytest.approx(0.4, abs=0.05)
    assert s0.val.clean is not None and (s0.val.clean != s0.val.labels).any()      # the user's validation is noisy
    other = make_splits(a, C.from_dict({"data": {"noise": "symmetric", "noise_rate": 0.4, "val_size": 200,
                                                 "noise_seed": 1}}).data)
    assert not (other.train.labels == s0.train.labels).all()
    assert s0.noise["type"] == "symmetric" and len(s0.noise["transition"]) == 10
    assert make_splits(a, C.from_dict({"data": {"val_size": 200}}).data).noise is None


def test_a_noisy_run_records_the_memorisation_curve(tmp_path, data_root):
    from cifarlab.data.sources import load_npz
    from cifarlab.results import open_store
    from cifarlab.results.store import RunKey
    from cifarlab.runs import RunDir
    from cifarlab.train import train
    cfg = C.from_dict({"model": {"widths": [8, 16], "dense": [16]}, "train": {"epochs": 2, "batch_size": 100,
                       "threads": 1, "precision": "fp32"}, "optim": {"lr": 0.02},
                       "data": {"val_size": 200, "noise": "symmetric", "noise_rate": 0.4}})
    splits = make_splits(load_npz(data_root / "cifar10" / "cifar10.npz"), cfg.data)
    store = open_store(tmp_path / "r.db")
    key = RunKey("s", "x", 0, C.config_hash(cfg))
    store.register(key, C.to_dict(cfg))
    row = store.claim("s", [key])
    final = train(cfg, splits, RunDir(tmp_path / "run"), progress=False,
                  on_epoch=lambda r: store.record_epoch(row["id"], r))
    store.finish(row["id"], final, str(tmp_path / "run"), final["epochs"])
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for h in history:
        assert 0 <= h["flipped_acc_noisy"] <= 1 and 0 <= h["flipped_acc_clean"] <= 1 and "val_acc_clean" in h
        # a flipped sample's noisy and clean labels differ: it cannot match both
        assert h["flipped_acc_noisy"] + h["flipped_acc_clean"] <= 1 + 1e-9
    assert final["noise"]["actual_rate"] == pytest.approx(0.4, abs=0.06) and final["val_acc_clean"] is not None
    names = {name for _, name, _ in store.epoch_metrics(row["id"])}
    assert {"val_acc_clean", "flipped_acc_noisy", "flipped_acc_clean"} <= names
    assert store.run_metrics([row["id"]])[row["id"]]["val_acc_clean"] == final["val_acc_clean"]


def test_one_pass_gives_the_accuracy_against_the_noisy_and_the_clean_labels():
    """evaluate's accuracy against a split's clean labels (`acc_clean`, read in the same forward
    passes as the noisy ones) equals a second pass with the clean labels as the split's own."""
    import torch
    from cifarlab import runtime
    from cifarlab.data.loader import Split
    from cifarlab.evaluate import Preprocess, evaluate
    torch.manual_seed(0)
    cfg = C.from_dict({"train": {"eval_batch_size": 32, "threads": 1, "precision": "fp32"}})
    rt = runtime.setup(cfg.train)
    images = torch.randint(0, 256, (70, 3, 8, 8), dtype=torch.uint8)   # two full batches and a short one
    noisy, clean = torch.randint(0, 10, (70,)), torch.randint(0, 10, (70,))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    prep = Preprocess((0.5,) * 3, (0.25,) * 3, False, rt)
    both = evaluate(model, Split(images, noisy, clean), prep, rt, cfg.train, 10)
    alone = {name: evaluate(model, Split(images, labels), prep, rt, cfg.train, 10)
             for name, labels in (("noisy", noisy), ("clean", clean))}
    assert "acc_clean" not in alone["noisy"] and both["acc"] == alone["noisy"]["acc"]
    assert both["acc_clean"] == alone["clean"]["acc"] and both["acc"] != both["acc_clean"]


def test_a_best_val_run_records_the_validation_numbers_of_the_epoch_it_tested(tmp_path, data_root):
    from cifarlab.data.sources import load_npz
    from cifarlab.runs import RunDir
    from cifarlab.train import train
    cfg = C.from_dict({"model": {"widths": [8, 16], "dense": [16]}, "train": {"epochs": 2, "batch_size": 100,
                       "threads": 1, "precision": "fp32", "select": "best_val"}, "optim": {"lr": 0.02},
                       "data": {"val_size": 200, "noise": "symmetric", "noise_rate": 0.4}})
    splits = make_splits(load_npz(data_root / "cifar10" / "cifar10.npz"), cfg.data)
    final = train(cfg, splits, RunDir(tmp_path / "run"), progress=False)
    history = RunDir(tmp_path / "run").read_metrics()
    # this seed's best noisy-validation epoch is its first: the last epoch's numbers would differ
    assert final["selected_epoch"] == 1 and history[0]["val_acc_clean"] != history[1]["val_acc_clean"]
    for key in ("val_acc", "val_loss", "val_acc_clean"):
        assert final[key] == history[0][key], key


@pytest.mark.parametrize("data, message", [
    ({"noise": "symmetric", "noise_rate": 1.0}, r"data.noise_rate = 1.0 must lie in \[0, 1\)"),
    ({"noise": "symmetric", "noise_rate": -0.1}, r"data.noise_rate = -0.1 must lie in \[0, 1\)"),
    ({"noise": "uniform", "noise_rate": 0.2}, "data.noise = 'uniform' is invalid; valid: none, symmetric"),
    ({"noise": "asymmetric", "noise_rate": 0.2, "dataset": "cifar100"}, "has a standard map for cifar10 only"),
    ({"noise": "symmetric"}, "set both"),
    ({"noise_rate": 0.2}, "set both"),
])
def test_bad_noise_settings_are_one_line(data, message):
    with pytest.raises(ConfigError, match=message) as err:
        C.from_dict({"data": data})
    assert "\n" not in str(err.value)


def test_gce_and_sce_against_their_formulas():
    import torch

    from cifarlab.data.batch import Batch
    from cifarlab.losses import build_loss
    torch.manual_seed(0)
    logits = torch.randn(6, 10, requires_grad=True)
    y = torch.arange(6)
    batch = Batch(torch.zeros(6, 3, 2, 2, dtype=torch.uint8), y, y)
    p = torch.softmax(logits, 1)[torch.arange(6), y]
    gce = build_loss(C.from_dict({"loss": {"name": "gce", "gce_q": 0.7}}).loss, 10)(logits, batch)
    assert torch.allclose(gce, ((1 - p ** 0.7) / 0.7).mean())
    sce = build_loss(C.from_dict({"loss": {"name": "sce", "sce_alpha": 0.1, "sce_beta": 1.0}}).loss, 10)(logits, batch)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(sce, 0.1 * ce + 1.0 * (4 * (1 - p)).mean())   # RCE with log 0 = -4
    (gce + sce).backward()
    assert torch.isfinite(logits.grad).all()
    # q -> 0 gives cross-entropy back
    tiny = build_loss(C.from_dict({"loss": {"name": "gce", "gce_q": 1e-4}}).loss, 10)(logits, batch)
    assert torch.allclose(tiny, ce, atol=1e-3)
    with pytest.raises(ConfigError, match=r"loss.gce_q = 0.0 must lie in \(0, 1\]"):
        C.from_dict({"loss": {"name": "gce", "gce_q": 0.0}})


def test_elr_against_its_formula_and_its_per_sample_targets():
    import torch

    from cifarlab.data.batch import Batch
    from cifarlab.losses import build_loss
    cfg = C.from_dict({"loss": {"name": "elr", "elr_beta": 0.7, "elr_lambda": 3.0}}).loss
    elr = build_loss(cfg, 10, num_samples=20)
    torch.manual_seed(0)
    logits = torch.randn(4, 10, requires_grad=True)
    idx = torch.tensor([3, 7, 11, 19])
    batch = Batch(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([1, 2, 3, 4]), idx)
    value = elr(logits, batch)
    p = torch.softmax(logits, 1).clamp(1e-4, 1 - 1e-4)
    t = 0.3 * (p / p.sum(1, keepdim=True)).detach()           # from zero targets: (1 - beta) p
    want = torch.nn.functional.cross_entropy(logits, batch.labels) + 3.0 * torch.log(1 - (t * p).sum(1)).mean()
    assert torch.allclose(value, want)
    assert torch.allclose(elr.targets[idx], t) and (elr.targets[[0, 1, 2]] == 0).all()   # other samples untouched
    value.backward()
    assert torch.isfinite(logits.grad).all()
    again = build_loss(cfg, 10, num_samples=20)
    again.load_state_dict(elr.state_dict())
    assert torch.equal(again.targets, elr.targets)


def test_coteaching_ramps_its_forget_rate_and_trains_two_networks(tmp_path, data_root):
    import torch

    from cifarlab.data.sources import load_npz
    from cifarlab.methods import forget_rate
    from cifarlab.train import build_session, train_step
    cfg = C.from_dict({"model": {"widths": [8, 16], "dense": [16]}, "data": {"val_size": 200},
                       "train": {"method": "coteaching", "forget_rate": 0.4, "forget_epochs": 4, "threads": 1,
                                 "precision": "fp32", "batch_size": 100}, "optim": {"lr": 0.02}})
    s = build_session(cfg, make_splits(load_npz(data_root / "cifar10" / "cifar10.npz"), cfg.data))
    assert [forget_rate(s, e) for e in (0, 2, 4, 9)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    first = [p.detach().clone() for p in s.model.parameters()]
    peer = [p.detach().clone() for p in s.peer.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(first, peer))     # two initialisations
    batch = next(make_splits(load_npz(data_root / "cifar10" / "cifar10.npz"), cfg.data).train.batches(100))
    train_step(s, batch, torch.Generator().manual_seed(0), epoch=4)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(first, s.model.parameters()))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(peer, s.peer.parameters()))
    with pytest.raises(ConfigError, match="train.forget_rate is co-teaching's"):
        C.from_dict({"train": {"forget_rate": 0.2}})
