"""The command line end to end: a real run, and one-line errors with exit code 2."""

import dataclasses
import json
import subprocess

import pytest

from conftest import REPO, cli_command, cli_env

TINY = ["--set", "model.widths=[8, 16]", "--set", "model.dense=[16]", "--set", "train.epochs=1",
        "--set", "train.batch_size=100", "--set", "data.val_size=100", "--set", "train.threads=1"]


def cli(*args, cwd):
    return subprocess.run(cli_command(*args), cwd=cwd, env=cli_env(CIFARLAB_DATA=""),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def repo_experiment():
    return REPO / "experiments" / "tutorial" / "baseline.toml"


def test_run_on_a_1000_image_subset(tmp_path, data_root, repo_experiment):
    r = cli("run", repo_experiment, *TINY, "--data-dir", data_root, "--no-progress", "--out", tmp_path / "r",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    final = json.loads((tmp_path / "r" / "final.json").read_text())
    printed = {k: float(r.stdout.split(f"{k} ")[1].split()[0]) for k in ("val", "test")}
    assert printed == {"val": round(final["val_acc"], 4), "test": round(final["test_acc"], 4)}
    from cifarlab.flops import amount
    assert f"{amount(final['train_flops'])} at " in r.stdout and final["images_seen"] > 0
    assert {p.name for p in (tmp_path / "r").iterdir()} >= {"config.toml", "metrics.jsonl", "final.json",
                                                             "checkpoint.pt"}
    recorded = {name: (tmp_path / "r" / name).read_bytes() for name in ("final.json", "model.pt")}
    again = cli("run", repo_experiment, *TINY, "--data-dir", tmp_path / "no-data", "--no-progress", "--out",
                tmp_path / "r", "--resume", cwd=tmp_path)
    # Resuming a finished run of the same settings trains and tests nothing again (no data read) and
    # reports what it recorded, rewriting nothing.
    assert again.returncode == 0, again.stderr
    assert again.stdout == r.stdout and "holds a finished run of these settings (final.json): nothing to resume" \
        in again.stderr
    assert recorded == {name: (tmp_path / "r" / name).read_bytes() for name in recorded}
    # A probe that feeds a choice shows validation only; final.json keeps test for `study adopt`.
    hidden = cli("run", repo_experiment, *TINY, "--data-dir", data_root, "--no-progress", "--out",
                 tmp_path / "r", "--resume", "--hide-test", cwd=tmp_path)
    assert hidden.returncode == 0, hidden.stderr
    assert "val 0." in hidden.stdout and "test 0." not in hidden.stdout
    assert hidden.stdout.split("val")[1].split("(")[0].strip() == r.stdout.split("val")[1].split("test")[0].strip()


def corrupt(root):
    path = root / "cifar10" / "cifar10.npz"
    path.write_bytes(path.read_bytes()[:5000])


def bad_checksum(root):
    (root / "cifar10" / "cifar10.npz").unlink()
    (root / "cifar-10-python.tar.gz").write_bytes(b"definitely not the official archive")


@pytest.mark.parametrize("args, prepare, message", [
    (["--set", "optim.lrr=1"], None, "unknown key optim.lrr; valid keys of [optim]"),
    (["--set", "optim.lr=fast"], None, "optim.lr must be float"),
    (["--set", "optim.lr=-0.1"], None, "optim.lr = -0.1 must be > 0"),
    (["--seed", "-1"], None, "train.seed = -1 must be >= 0"),
    (["--set", "model.name=resnet999"], None, "model.name = 'resnet999' is invalid; valid: airbench, preact_resnet18, resnet18, resnet9, vgg"),
    (["--set", "model.norm=batchy"], None, "model.norm = 'batchy' is invalid; valid: none, batch, group"),
    (["--set", "model.stem=big"], None, "model.stem = 'big' is invalid; valid: none, conv, patchify"),
    (["--set", "model.block=wide"], None, "model.block = 'wide' is invalid; valid: plain, basic, preact"),
    (["--set", "model.norm=group", "--set", "model.groups=3"], None, "model.groups = 3 does not divide the width(s) [8, 16]"),
    (["--set", "model.stem=patchify", "--set", "model.patch=5"], None, "model.patch = 5 does not divide the image size 32"),
    (["--set", "model.se=16"], None, "model.se = 16 (the reduction ratio) is larger than the width 8"),
    ([], "missing", "CIFAR-10 not found: tried"),
    ([], corrupt, "corrupt or truncated"),
    ([], bad_checksum, "MD5"),
    (["--bogus"], None, "unrecognized arguments: --bogus"),
    (["--set", "data.val_size=0", "--hide-test"], None, "--hide-test needs a validation split"),
    (["--set", "data.labels=coarse"], None, "data.labels = 'coarse' needs a dataset with superclasses (data.dataset = 'cifar100'), got data.dataset = 'cifar10'"),
    (["--set", "data.labels=super"], None, "data.labels = 'super' is invalid; valid: fine, coarse"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, data_root, repo_experiment, args, prepare, message):
    root = data_root
    if prepare == "missing":
        root = tmp_path / "empty"
        root.mkdir()
    elif prepare is not None:
        prepare(data_root)
    r = cli("run", repo_experiment, *TINY, *args, "--data-dir", root, "--no-download", "--no-progress",
            "--out", tmp_path / "r", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("cifarlab: error: "), r.stderr
    assert message.lower() in r.stderr.lower(), r.stderr
    assert "Traceback" not in r.stderr


def test_missing_experiment_file(tmp_path):
    r = cli("run", tmp_path / "nope.toml", cwd=tmp_path)
    assert r.returncode == 2 and "experiment file not found" in r.stderr
    r = cli("run", tmp_path, cwd=tmp_path)
    assert r.returncode == 2 and "is a directory; an experiment is a TOML file, e.g. " in r.stderr


def test_study_adopt_arguments_are_checked_before_any_database_is_made(tmp_path):
    study = REPO / "studies" / "basic.toml"
    for args, message in [(["run", study, "--from-db", "other.db"], "study run takes no --from-db"),
                          (["adopt", study], "needs at least one RUN_DIR (a finished `cifarlab run` directory) "
                                             "or --from-db OTHER_DB"),
                          (["adopt", study, "--from-db", "missing.db"], "results database not found: missing.db; give as "
                                                                     "--from-db a database")]:
        r = cli("study", *args, "--db", "made.db", cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "made.db").exists()


def test_list_losses_describes_each(tmp_path):
    r = cli("list", "losses", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert rows["gce"] == "Generalized cross-entropy" and rows["elr"] == "Early-learning regularization"
    assert rows["ce"] == "Cross-entropy, mean over the batch, with label smoothing"


def test_list_models(tmp_path):
    r = cli("list", "models", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[1:]}
    assert rows["vgg"] == "550,570" and rows["resnet18"] == "11,173,962"



def test_bench_tta_reports_seeds_and_threshold_times(tmp_path, data_root, repo_experiment):
    r = cli("bench", "tta", repo_experiment, *TINY, "--seeds", "2", "--thresholds", "0.0,0.999",
            "--data-dir", data_root, "--out", tmp_path / "b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("  seed ") == 2 and "val>=0%: " in r.stdout and "val>=100%: never" in r.stdout
    assert "2 seeds, test acc" in r.stdout
    # run again with one more seed: the two finished runs are read, not trained again
    finals = sorted((tmp_path / "b").rglob("final.json"))
    stamps = [f.stat().st_mtime_ns for f in finals]
    again = cli("bench", "tta", repo_experiment, *TINY, "--seeds", "3", "--thresholds", "0.0,0.999",
                "--data-dir", data_root, "--out", tmp_path / "b", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [f.stat().st_mtime_ns for f in finals] == stamps and len(list((tmp_path / "b").rglob("final.json"))) == 3
    assert again.stdout.splitlines()[:2] == r.stdout.splitlines()[:2]  # the same rows, read back


def test_bench_throughput_smoke(tmp_path):
    r = cli("bench", "throughput", "--steps", "1", "--rounds", "1", "--batch-size", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ratio default / plain" in r.stdout and "plain fp32 eager NCHW" in r.stdout
    assert "CPU ms/step" in r.stdout and "1 threads" in cli(
        "bench", "throughput", "--steps", "1", "--rounds", "1", "--batch-size", "8", "--threads", "1", cwd=tmp_path).stdout


def test_bench_ablate_times_the_precision_the_default_does_not_use(tmp_path):
    r = cli("bench", "throughput", "--ablate", "--steps", "1", "--rounds", "1", "--batch-size", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    default = next(line for line in r.stdout.splitlines() if line.strip().startswith("default "))
    other = "- bf16 autocast (fp32)" if "bfloat16" in default else "+ bf16 autocast (forced)"
    assert other in r.stdout and r.stdout.count("bf16 autocast (") == 1, r.stdout


def test_bench_compile_times_the_compiled_model_beside_the_eager_one(tmp_path):
    r = cli("bench", "throughput", "--compile", "--steps", "1", "--rounds", "1", "--batch-size", "4",
            "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    compiled = [line for line in r.stdout.splitlines() if "+ torch.compile" in line]
    # either timed beside the eager default (a ratio line follows) or one line saying why not
    assert len(compiled) == 1, r.stdout
    assert ("img/s" in compiled[0]) == ("ratio compiled / default" in r.stdout), r.stdout
    assert "img/s" in compiled[0] or "could not compile here" in compiled[0], r.stdout


@pytest.mark.parametrize("flag, value, message", [
    ("--steps", "0", "--steps must be >= 1, got 0"), ("--rounds", "-2", "--rounds must be >= 1, got -2"),
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"), ("--threads", "-1", "--threads must be >= 0")])
def test_bench_throughput_rejects_bad_counts(tmp_path, flag, value, message):
    r = cli("bench", "throughput", flag, value, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_bench_profile_lists_the_convolutions_by_shape(tmp_path):
    r = cli("bench", "profile", "--steps", "1", "--batch-size", "4", "--threads", "1", "--rows", "40", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "img/s unprofiled" in r.stdout and "convolution_backward" in r.stdout
    assert "[[4, 32, 32, 32]" in r.stdout  # input shapes tell the first block's layers apart
    bad = cli("bench", "profile", "--steps", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--steps must be >= 1, got 0" in bad.stderr


def test_show_augment_writes_a_grid_and_bench_augment_times_each_step(tmp_path, data_root, repo_experiment):
    from matplotlib.image import imread
    pipeline = '--set=augment.pipeline=["flip", "affine", "cutmix"]'
    r = cli("show", "augment", repo_experiment, pipeline, "--set", "data.val_size=100", "--data-dir", data_root,
            "--out", tmp_path / "g.png",
            "--images", "3", "--draws", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert imread(tmp_path / "g.png").shape[0] > 200          # 3 rows of images
    r = cli("bench", "augment", repo_experiment, pipeline, "--set", "model.widths=[8, 16]", "--steps", "1",
            "--images", "512", "--rounds", "1", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("flip", "affine", "cutmix", "whole pipeline", "training steps without augmentation"):
        assert name in r.stdout
    assert ", 1 threads]" in r.stdout                         # --threads reaches the timed process
    bad = cli("bench", "augment", repo_experiment, "--threads", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "--threads must be >= 0" in bad.stderr
    assert "% of the training time" in r.stdout
    bad = cli("show", "augment", repo_experiment, "--set", "data.val_size=100", "--data-dir", data_root, cwd=tmp_path)
    assert bad.returncode == 2 and "has no augmentation to show" in bad.stderr


def test_show_noise_prints_the_drawn_flip_rates_and_draws_the_transition_matrices(tmp_path, data_root,
                                                                                  repo_experiment):
    from matplotlib.image import imread
    r = cli("show", "noise", repo_experiment, "--set", "data.noise=pairflip", "--set", "data.noise_rate=0.4",
            "--set", "data.val_size=100", "--data-dir", data_root, "--out", tmp_path / "n.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "pairflip noise at data.noise_rate = 0.4" in r.stdout and "the test labels never change" in r.stdout
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[3:13]}
    assert rows["class0"][3] == "class1" and rows["class9"][3] == "class0"     # each class to the next
    assert all(20 < float(row[2]) < 60 for row in rows.values())               # about 40 % of 100 images each
    assert imread(tmp_path / "n.png").shape[1] > 600          # asked for and drawn, side by side
    clean = cli("show", "noise", repo_experiment, "--set", "data.val_size=100", "--data-dir", data_root, cwd=tmp_path)
    assert clean.returncode == 2 and "these labels carry no noise" in clean.stderr
    assert len(clean.stderr.strip().splitlines()) == 1


def test_show_noise_counts_every_flipped_label_of_the_training_and_validation_splits():
    import dataclasses

    import numpy as np

    from cifarlab import config as C
    from cifarlab.data.loader import make_splits
    from cifarlab.data.sources import Arrays
    from cifarlab.show import drawn_transition, noise_text
    rng = np.random.default_rng(0)
    classes = tuple(f"c{i}" for i in range(4))
    arrays = Arrays(rng.integers(0, 256, (400, 8, 8, 3), dtype=np.uint8), np.arange(400) % 4,
                    rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), np.arange(40) % 4, classes)
    cfg = C.from_dict({"name": "tiny", "data": {"noise": "pairflip", "noise_rate": 0.3, "val_size": 40}})
    splits = make_splits(arrays, cfg.data)
    flipped = sum(int((s.clean != s.labels).sum()) for s in (splits.train, splits.val))
    t, counts = drawn_transition(splits)
    assert counts.tolist() == [100, 100, 100, 100] and np.allclose(t.sum(axis=1), 1)
    assert round(float(((1 - np.diag(t)) * counts).sum())) == flipped == splits.noise["flipped"]
    assert np.count_nonzero(t - np.diag(np.diag(t))) == 4          # pair-flip: each class to the next only
    assert f"drawn: {flipped} of 400 training and validation labels" in noise_text(cfg, splits)
    # a class without images (a subset can leave one out) gets a dash, not a division by zero
    arrays = dataclasses.replace(arrays, train_labels=np.arange(400) % 3)
    lines = noise_text(cfg, make_splits(arrays, cfg.data)).splitlines()
    assert lines[-1].split() == ["c3", "0", "-", "-"] and lines[-2].split()[:2] == ["c2", "133"]


def test_an_output_folder_that_cannot_be_written_is_one_line_and_leaves_the_database(tmp_path, data_root,
                                                                                     repo_experiment):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")       # a folder below a file cannot be made, even by root
    study = REPO / "studies" / "fast_baseline.toml"
    db = tmp_path / "r.db"
    db.write_bytes((REPO / "results" / "fast_baseline" / "results.db").read_bytes())
    from cifarlab.results import open_store
    open_store(db).close()                   # at this cifarlab's schema: a later open changes no byte
    before = db.read_bytes()
    for args, option in [(["run", repo_experiment, *TINY, "--data-dir", data_root, "--out", blocked / "r"], "--out"),
                         (["report", study, "--db", db, "--out", blocked / "rep"], "--out"),
                         (["results", "export", "--db", db, "--out", blocked / "csv"], "--out"),
                         (["study", "run", study, "--db", db, "--runs-dir", blocked / "runs", "--data-dir", data_root],
                          "--runs-dir")]:
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"cifarlab: error: cannot write to {blocked}") and option in r.stderr, r.stderr
    assert db.read_bytes() == before


def test_resume_with_changed_settings_names_the_keys(tmp_path, data_root, repo_experiment):
    r = cli("run", repo_experiment, *TINY, "--data-dir", data_root, "--no-progress", "--out", tmp_path / "r",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    again = cli("run", repo_experiment, *TINY, "--set", "optim.lr=0.01", "--set", "train.epochs=2", "--data-dir",
                data_root, "--no-progress", "--out", tmp_path / "r", "--resume", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "belongs to different settings (optim.lr: 0.001 -> 0.01, train.epochs: 1.0 -> 2.0)" in again.stderr
    assert "start a new run with the new train.epochs" in again.stderr
    # the same run again without --resume is refused before the data is loaded
    twice = cli("run", repo_experiment, *TINY, "--data-dir", tmp_path / "nothing-here", "--out", tmp_path / "r",
                cwd=tmp_path)
    assert twice.returncode == 2 and "already holds a run; pass --resume" in twice.stderr
    other = cli("run", repo_experiment, *TINY, "--set", "optim.lr=0.01", "--data-dir", tmp_path / "nothing-here",
                "--out", tmp_path / "r", cwd=tmp_path)   # another config into the same directory
    assert other.returncode == 2 and "already holds a run of other settings (optim.lr: 0.001 -> 0.01); give this " \
        "one its own directory (--out DIR, or --set name=NAME)" in other.stderr
    # a run directory stands for its config and itself: resuming a finished run has nothing left to train
    resumed = cli("run", tmp_path / "r", "--resume", "--data-dir", data_root, "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0 and f"-> {tmp_path / 'r'}" in resumed.stdout, resumed.stderr
    assert "nothing rewritten; to train longer" in resumed.stderr
    import importlib.util
    if importlib.util.find_spec("tensorboard"):   # the [tensorboard] extra (in [test])
        logged = cli("run", tmp_path / "r", "--resume", "--set", "train.tensorboard=true", "--data-dir", data_root,
                     "--no-progress", cwd=tmp_path)   # turned on later: the finished run's epochs are copied there
        assert logged.returncode == 0 and "nothing rewritten (its recorded epochs copied to TensorBoard)" in logged.stderr
        assert list((tmp_path / "r").glob("events.out.tfevents.*"))
    seeds = cli("run", repo_experiment, "--seed", "1", "--set", "train.seed=2", cwd=tmp_path)
    assert seeds.returncode == 2 and "the seed is given twice, --seed 1 and --set train.seed=2; give it once" in seeds.stderr


def test_a_subset_says_which_key_to_set(tmp_path, data_root, repo_experiment):
    r = cli("run", repo_experiment, "--set", "data.subset=500", "--data-dir", data_root, "--out", tmp_path / "r",
            cwd=tmp_path)
    assert r.returncode == 2
    assert "data.val_size = 5000 must be smaller than the 500 training images of data.subset = 500; " \
           "set data.val_size too, e.g. 50" in r.stderr


def test_list_keys_says_what_each_key_means(tmp_path):
    r = cli("list", "keys", cwd=tmp_path)
    assert r.returncode == 0
    lines = [line for line in r.stdout.splitlines() if line.startswith("  ")]
    assert all(" # " in line for line in lines)
    assert any(line.split()[0] == "label_smoothing" and "Szegedy" in line for line in lines)


def test_report_grids_draw_each_variants_augmentation(tmp_path, data_root):
    study = tmp_path / "aug.toml"
    study.write_text(f'''name = "aug"
experiment = "{REPO / 'experiments' / 'tutorial' / 'baseline.toml'}"
seeds = [0]
set = {{ "data.val_size" = 100 }}
[[variants]]
name = "flip"
set = {{ "augment.pipeline" = ["flip"] }}
[[variants]]
name = "cutout"
set = {{ "augment.pipeline" = ["flip", "cutout"] }}
''')
    db = tmp_path / "r.db"
    from cifarlab.results import open_store
    from cifarlab.study import load_study, plan_runs
    store = open_store(db)
    plan_runs(load_study(study), store)   # registered, none trained: a report of a study that has not run yet
    store.close()
    r = cli("report", study, "--db", db, "--out", tmp_path / "rep", "--grids", "--data-dir", data_root, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "rep" / "README.md").read_text()
    assert "## Augmentations" in text and "(augment_flip.png)" in text and "(augment_cutout.png)" in text
    assert f"--grids --data-dir {data_root}" in text
    assert (tmp_path / "rep" / "augment_cutout.png").stat().st_size > 10_000


def test_show_features_projects_trained_runs_and_refuses_what_is_not_a_run(tmp_path, data_root, repo_experiment):
    from matplotlib.image import imread
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"r{seed}")
        r = cli("run", repo_experiment, *TINY, "--seed", str(seed), "--data-dir", data_root, "--out", runs[-1],
                "--no-progress", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    r = cli("show", "features", *runs, "--images", "150", "--data-dir", data_root, "--out", tmp_path / "f.png",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert imread(tmp_path / "f.png").shape[1] > 2 * imread(tmp_path / "f.png").shape[0] * 0.8  # two panels
    r = cli("show", "features", tmp_path, "--data-dir", data_root, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is not a run directory" in r.stderr


def test_pca_finds_the_two_directions_of_largest_variance():
    import torch
    from cifarlab.show import pca_2d
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
    coords = torch.randn(500, 16, generator=g) * torch.tensor([10.0, 5.0] + [0.1] * 14)
    z, share = pca_2d(coords @ basis.T + 3.0)
    assert share > 0.99
    for k in (0, 1):  # component k is the k-th generating direction, up to sign and sampling error
        corr = torch.corrcoef(torch.stack([z[:, k], coords[:, k]]))[0, 1]
        assert abs(corr) > 0.99, (k, corr)


def test_bench_peak_prints_both_precisions_and_refuses_bad_sizes(tmp_path):
    r = cli("bench", "peak", "--size", "64", "--seconds", "0.05", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "bfloat16" in r.stdout and "float32" in r.stdout and "TFLOP/s" in r.stdout
    bad = cli("bench", "peak", "--size", "8", cwd=tmp_path)
    assert bad.returncode == 2 and "--size" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_bench_peak_times_bf16_only_where_the_cpu_has_its_instructions(monkeypatch, capsys):
    import torch

    from cifarlab import bench, runtime
    monkeypatch.setattr(bench, "splits_device", lambda: torch.device("cpu"))   # a CPU's rule, on a GPU host too
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)   # peak sets it; the test process keeps its own
    for native in (True, False):
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda info=None, native=native: native)
        rates = bench.peak(size=64, seconds=0.01, threads=1)
        out = capsys.readouterr().out
        assert sorted(rates) == (["bfloat16", "float32"] if native else ["float32"])
        assert ("bfloat16 not timed (no bf16 instructions on this CPU" in out) is (not native), out


def test_show_flops_prints_the_counted_flops_of_a_config(tmp_path, repo_experiment):
    from cifarlab import config as C
    from cifarlab.flops import flops_per_image
    r = cli("show", "flops", repo_experiment, "--set", "train.epochs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = C.load(repo_experiment, ["train.epochs=2"])
    per = flops_per_image(cfg.model, 10, 32)
    assert f"{per / 1e6:,.1f} MFLOP per training image" in r.stdout
    images = 50000 - cfg.data.val_size
    from cifarlab.flops import amount
    assert f"{amount(per * images * 2)} of training" in r.stdout


def test_show_config_prints_the_resolved_config_and_the_keys_two_configs_differ_in(tmp_path, repo_experiment):
    """One config: its resolved TOML, loadable again as the same config. Two (experiment files or run
    directories): only the keys that differ, first -> second, with --set applied to the first."""
    from cifarlab import config as C
    r = cli("show", "config", repo_experiment, "--set", "optim.lr=0.123", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (tmp_path / "resolved.toml").write_text(r.stdout)
    assert C.load(tmp_path / "resolved.toml") == C.load(repo_experiment, ["optim.lr=0.123"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()   # a run directory holds the config it trained with
    (run_dir / "config.toml").write_text(C.to_toml(C.load(repo_experiment, ["train.epochs=3", "model.norm=batch"])))
    r = cli("show", "config", repo_experiment, run_dir, "--set", "optim.lr=0.123", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    base = C.load(repo_experiment)
    assert [line.split()[0] for line in lines[:-1]] == ["model.norm", "optim.lr", "train.epochs"]
    assert lines[1].split()[1:] == ["0.123", "->", C.toml_value(base.optim.lr)]
    assert lines[-1] == f"3 key(s) differ between {repo_experiment} (with --set optim.lr=0.123) and {run_dir}"
    same = cli("show", "config", repo_experiment, repo_experiment, cwd=tmp_path)
    assert same.returncode == 0 and same.stdout.strip() == f"no key differs between {repo_experiment} and {repo_experiment}"
    study = tmp_path / "s.toml"   # a study's variants, as declared (budgets x the reference's 100 epochs, no tuned choice)
    study.write_text(f'experiment = "{repo_experiment}"\nseeds = [0]\nbudgets = [1, 2]\n[[variants]]\nname = "a"\n'
                     '[[variants]]\nname = "b"\nset = { "optim.lr" = 0.5 }\n')
    r = cli("show", "config", f"{study}:a-100ep", f"{study}:b-100ep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"optim.lr  {C.toml_value(base.optim.lr)} -> 0.5",
                                     f"1 key(s) differ between {study}:a-100ep and {study}:b-100ep"]
    threads = cli("show", "config", repo_experiment, repo_experiment, "--set", "train.threads=3", cwd=tmp_path)
    assert threads.stdout.splitlines() == ["train.threads  3 -> 0   # how it runs only",
                                           f"1 key(s) differ between {repo_experiment} (with --set train.threads=3) and "
                                           f"{repo_experiment} (1 of them only how it runs, not what it computes)"]
    plugged = C.from_dict({"name": "p"})
    assert C.diff_lines(dataclasses.replace(plugged, plugins=("mylab.models",)), plugged, "a", "b") == [
        'plugins  ["mylab.models"] -> []   # how it runs only', "1 key(s) differ between a and b (1 of them only how "
        "it runs, not what it computes)"]
    longer = cli("show", "config", f"{study}:a-100ep", f"{study}:a-200ep", cwd=tmp_path)
    assert "train.epochs" in longer.stdout and "optim.lr" not in longer.stdout   # the schedule stretched
    tuned = tmp_path / "t.toml"   # an arm that tunes its rate: the note says the value shown is not the one it trains at
    tuned.write_text(study.read_text().replace("seeds = [0]", 'seeds = [0]\ntune = { "optim.lr" = [0.1, 0.2] }')
                     .replace('set = { "optim.lr" = 0.5 }', 'set = { "model.dense" = [32] }\ntune = {}'))
    r = cli("show", "config", f"{tuned}:a-100ep", f"{tuned}:b-100ep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == ("# a-100ep tunes optim.lr on validation: shown at the untuned value; its test "
                                         "runs train at the choice its results database records (`study status`, "
                                         "the report's Tuning section)")
    assert "b-100ep tunes" not in r.stdout
    for bad, said in [((f"{study}:c",), "has no variant 'c'; its variants: a-100ep, b-100ep, a-200ep, b-200ep"),
                      ((f"{study}:a-10ep",), "did you mean 'a-100ep'?"),
                      ((tmp_path,), "is not a run directory (no config.toml)"),
                      ((run_dir, "--set", "optim.lr=1"), "--set applies to an experiment file"),
                      ((repo_experiment, "--set", "optim.lrr=1"), "did you mean optim.lr?")]:
        r = cli("show", "config", *bad, cwd=tmp_path)
        assert r.returncode == 2 and said in r.stderr and r.stdout == ""
