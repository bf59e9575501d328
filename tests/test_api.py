"""The Python API, predict, export round trips and plug-ins (issue #46 items 2-4)."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cifarlab import api
from cifarlab import config as C
from cifarlab.errors import ConfigError, UserError
from cifarlab.schema import ExperimentConfig, ModelConfig
from conftest import CLASSES, REPO, cli_command, cli_env, finished_metrics, synthetic_arrays

TINY = {"data": {"subset": 400, "val_size": 100},
        "model": {"widths": [8, 16], "dense": [16], "norm": "batch"},
        "optim": {"lr": 0.05}, "train": {"epochs": 1, "batch_size": 50, "threads": 1}}


@pytest.fixture
def trained(tmp_path, data_root, monkeypatch):
    cfg = api.config({"name": "tiny", **TINY}, {"data.normalize": "standard"})
    monkeypatch.setenv("CIFARLAB_DATA", str(data_root))   # no data_dir: the data root comes from the environment
    return api.train(cfg, out=tmp_path / "run", download=False)


def test_config_applies_presets_however_it_is_built():
    assert api.config(model="resnet18").model.widths == (64, 128, 256, 512)
    assert api.config({"model": {"name": "resnet18"}}).model.block == "basic"
    assert api.config(None, ["model.name=resnet18", "optim.lr=0.2"]).optim.lr == 0.2
    assert api.config(None, "optim.lr=0.2").optim.lr == 0.2   # one override as a string, not its characters
    with pytest.raises(ConfigError, match="preset whose keys"):
        api.config(ExperimentConfig(model=ModelConfig(name="resnet18")))
    with pytest.raises(ConfigError, match="preset whose keys"):
        C.resolve(ExperimentConfig(model=ModelConfig(name="resnet18")))
    built = api.config(model="resnet18")
    assert api.config(built) == built and C.config_hash(api.config()) == C.config_hash(ExperimentConfig())


def test_training_again_into_a_run_says_how_in_python_before_the_data_loads(trained, tmp_path):
    """A notebook cell run again, as it was or with a value changed: the error names resume=True and
    out=, not the command line's flags, and says which settings changed (resuming those is refused
    too); both before any data is read (here there is none)."""
    cfg = api.config({"name": "tiny", **TINY}, {"data.normalize": "standard"})
    nowhere = tmp_path / "no-data"
    with pytest.raises(UserError, match=r"already holds a run; pass resume=True to continue it, or out="):
        api.train(cfg, out=trained.run_dir, data_dir=nowhere, download=False)
    with pytest.raises(UserError, match=r"already holds a run of other settings \(optim.lr: 0.05 -> 0.1\); "
                                        r"give this one its own directory \(out="):
        api.train(api.config(cfg, {"optim.lr": 0.1}), out=trained.run_dir, data_dir=nowhere, download=False)


def test_resuming_a_finished_run_returns_its_result_and_rewrites_nothing(trained, tmp_path):
    """resume=True on a finished run of the same settings: its recorded result, no data read, no file
    rewritten. A directory whose final.json is older than its epochs (the run started over there and
    was interrupted) is not finished: it resumes."""
    from cifarlab.runs import RunDir
    cfg = api.config({"name": "tiny", **TINY}, {"data.normalize": "standard"})
    files = {p.name: p.read_bytes() for p in trained.run_dir.iterdir() if p.is_file()}
    again = api.train(cfg, out=trained.run_dir, resume=True, data_dir=tmp_path / "no-data", download=False)
    assert again == trained and files == {p.name: p.read_bytes() for p in trained.run_dir.iterdir() if p.is_file()}
    run = RunDir(trained.run_dir)
    assert run.finished(cfg) is not None and run.finished(api.config(cfg, {"optim.lr": 0.1})) is None
    assert run.finished(api.config(cfg, {"train.seed": 1})) is None
    (trained.run_dir / "metrics.jsonl").write_text("")   # started over, interrupted before its first epoch
    assert run.finished(cfg) is None


def test_train_returns_a_typed_result_and_the_run_predicts_without_its_data(trained, data_root):
    assert trained.epochs == 1 and 0 <= trained.test_acc <= 1 and trained.run_dir.joinpath("model.pt").exists()
    run = api.load_run(trained.run_dir)
    assert run.classes == CLASSES and run.image_size == 32 and run.config.data.normalize == "standard"
    test = synthetic_arrays()["test_images"][:40]              # N x H x W x 3 uint8, as the data packs hold
    pred = run.predict(test)
    assert pred.probabilities.shape == (40, 10) and np.allclose(pred.probabilities.sum(1), 1, atol=1e-5)
    nchw = torch.from_numpy(test).permute(0, 3, 1, 2)
    assert np.array_equal(run.predict(nchw).labels, pred.labels)              # either layout
    assert np.array_equal(run.predict(test[0]).labels, pred.labels[:1])       # one image
    assert np.array_equal(run.predict(list(test[:3])).labels, pred.labels[:3])  # a list of images
    banner = np.zeros((3, 120, 3), np.uint8)
    banner[..., 0] = 255   # a red image 3 pixels tall: NumPy is channels-last whatever its shape
    assert run.inputs(banner)[0].mean(dim=(1, 2)).tolist() == [255.0, 0.0, 0.0]
    with pytest.raises(UserError, match=r"N x H x W x C \(a NumPy array: channels last\) with C = 3.*got shape \(2, 32, 32\)"):
        run.predict(np.zeros((2, 32, 32), np.uint8))   # grey images without a channel axis
    with pytest.raises(UserError, match=r"got shape \(32, 32\) \(a grey image: give it 3 channels"):
        run.predict(np.zeros((32, 32), np.uint8))
    with pytest.raises(UserError, match=r"must be uint8 .*; got ndarray of float32$"):   # NumPy's dtype, not torch's
        run.predict(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(UserError, match=r"N x C x H x W \(a torch tensor: channels first\)"):
        run.predict(torch.from_numpy(test))   # a torch tensor is channels-first
    top = pred.top(3)
    assert len(top) == 40 and len(top[0]) == 3 and top[0][0][0] == CLASSES[pred.labels[0]]
    # the test accuracy the run recorded is what the saved model predicts on the same images
    arrays = synthetic_arrays()
    acc = (run.predict(arrays["test_images"]).labels == arrays["test_labels"]).mean()
    assert acc == pytest.approx(trained.test_acc, abs=1e-6)
    big = torch.nn.functional.interpolate(nchw.float(), size=64).round().to(torch.uint8)
    assert run.predict(big).probabilities.shape == (40, 10)                  # resized to the model's size
    with pytest.raises(UserError, match="uint8"):
        run.predict(test.astype(np.float32))
    with pytest.raises(UserError, match="tta 'mirror' is invalid; valid: none, flip, flip-translate"):
        run.predict(test, tta="mirror")


def test_a_tampered_or_missing_model_is_one_line(trained, tmp_path):
    import hashlib
    import pickle
    model, check = trained.run_dir / "model.pt", trained.run_dir / "model.pt.sha256"
    model.write_bytes(b"not a model")
    with pytest.raises(UserError, match="it does not match its checksum: it changed after the run wrote it"):
        api.load_run(trained.run_dir)
    model.write_bytes(pickle.dumps(Path("x")))   # verifies, but is no file of tensors
    check.write_text(hashlib.sha256(model.read_bytes()).hexdigest() + "\n")
    with pytest.raises(UserError, match=r"it verifies but does not load as tensors only \(weights_only\)"):
        api.load_run(trained.run_dir)
    check.unlink()
    with pytest.raises(UserError, match="model.pt.sha256 is missing: it cannot be verified"):
        api.load_run(trained.run_dir)
    with pytest.raises(UserError, match="does not exist"):
        api.load_run(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"model.pt is a file; give the finished run's directory that holds it \("):
        api.load_run(model)
    with pytest.raises(UserError, match=r"final.json is a file; give the finished run's directory that holds it \("):
        api.load_run(trained.run_dir / "final.json")
    (tmp_path / "m.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match=r"is a file; .*\(a .safetensors export loads with load_safetensors"):
        api.load_run(tmp_path / "m.safetensors")
    (tmp_path / "m.torchscript.pt").write_bytes(b"")   # an export: which of them a run loads from
    with pytest.raises(UserError, match=r"is a file; .* a .safetensors file is read as it is; TorchScript and ONNX"):
        api.load_run(tmp_path / "m.torchscript.pt")


def test_exports_give_the_models_outputs(trained, tmp_path):
    run = api.load_run(trained.run_dir)
    x = torch.from_numpy(synthetic_arrays()["test_images"][:16]).permute(0, 3, 1, 2).contiguous()
    want = run.logits(x, tta="none")
    scripted = torch.jit.load(str(api.export(run, "torchscript", tmp_path / "m.pt", tta="none")))
    assert torch.allclose(scripted(x), want, atol=1e-4)
    # by default the file computes what the run's test did: its test-time augmentation is inside
    assert torch.allclose(torch.jit.load(str(api.export(run, "torchscript", tmp_path / "own.pt")))(x), run.logits(x),
                          atol=1e-4)
    for tta in ("flip", "flip-translate"):
        assert not torch.allclose(run.logits(x, tta=tta), want, atol=1e-4)   # the views change the logits here
        scripted = torch.jit.load(str(api.export(run, "torchscript", tmp_path / f"{tta}.pt", tta=tta)))
        assert torch.allclose(scripted(x), run.logits(x, tta=tta), atol=1e-4)
    pytest.importorskip("safetensors")
    from cifarlab.predict import load_safetensors
    back = load_safetensors(api.export(run, "safetensors", tmp_path / "m.safetensors"))
    assert back.classes == run.classes and torch.allclose(back.logits(x, tta="none"), want, atol=1e-5)
    back = load_safetensors(api.export(run, "safetensors", tmp_path / "flip.safetensors", tta="flip"))
    assert back.config.train.tta == "flip" and torch.allclose(back.logits(x), run.logits(x, tta="flip"), atol=1e-5)


def test_predict_and_export_on_the_command_line(trained, tmp_path):
    from PIL import Image
    paths = []
    for i, image in enumerate(synthetic_arrays()["test_images"][:2]):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(image).resize((48, 48)).save(paths[-1])
    r = subprocess.run(cli_command("predict", trained.run_dir, *paths, "--top-k", "2"), env=cli_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2 and all(line.count("class") == 2 for line in r.stdout.splitlines())
    assert "Warning" not in r.stderr, r.stderr   # Pillow's read-only arrays are copied, not warned about
    out = tmp_path / "exported.pt"
    r = subprocess.run(cli_command("export", trained.run_dir, "--format", "torchscript", "--out", out),
                       env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and out.exists(), r.stderr
    # without --out the file goes beside the run's own model.pt, which stays usable
    r = subprocess.run(cli_command("export", trained.run_dir, "--format", "torchscript"),
                       env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (trained.run_dir / "model.torchscript.pt").exists(), r.stderr
    assert api.load_run(trained.run_dir).classes == CLASSES
    predicted = subprocess.run(cli_command("predict", trained.run_dir, *paths), env=cli_env(), capture_output=True,
                               text=True, timeout=300).stdout
    r = subprocess.run(cli_command("export", trained.run_dir, "--format", "safetensors", "--out", tmp_path / "m.safetensors"),
                       env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr   # an exported safetensors file predicts as its run does
    r = subprocess.run(cli_command("predict", tmp_path / "m.safetensors", *paths), env=cli_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout == predicted, r.stderr
    for args, message in [(("predict", trained.run_dir, tmp_path / "none.png"), "does not exist"),
                          (("predict", tmp_path / "norun", paths[0]), "does not exist"),
                          (("predict", tmp_path / "norun", tmp_path / "none.png"),   # the run first, its own hint
                           f"run directory {tmp_path / 'norun'} does not exist; give a finished run's directory "
                           "(runs/<name>/seed<k>, a study's runs/<study>/<variant>/seed<k>-<hash>"),
                          (("export", trained.run_dir, "--format", "tflite"), "valid: torchscript"),
                          (("export", trained.run_dir, "--format", "torchscript", "--out", tmp_path / "no" / "m.pt"),
                           "does not exist"),
                          (("export", trained.run_dir, "--format", "torchscript", "--out", trained.run_dir / "model.pt"),
                           "is the run's own model.pt"),
                          (("predict", trained.run_dir / "model.pt", paths[0]), f"give the finished run's directory "
                           f"that holds it ({trained.run_dir})")]:
        r = subprocess.run(cli_command(*args), env=cli_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "no").exists()


PLUGIN = '''
import torch
from torch import nn
from cifarlab.plugins import register_loss, register_model


@register_model("tiny_mlp", "a one-hidden-layer MLP", dense=(32,))
def tiny_mlp(cfg, num_classes, image_size):
    hidden = cfg.options.get("hidden", cfg.dense[0])
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


@register_loss("scaled_ce", option_names=("scale",))
def scaled_ce(cfg, num_classes):
    scale = cfg.options.get("scale", 1.0)
    return lambda logits, batch: scale * nn.functional.cross_entropy(logits, batch.labels)
'''


def write_plugin(tmp_path):
    pkg = tmp_path / "plugs" / "mylab"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(PLUGIN)
    return tmp_path / "plugs"


def test_a_plugin_model_and_loss_train_from_the_command_line(tmp_path, data_root):
    path = write_plugin(tmp_path)
    (tmp_path / "exp.toml").write_text(textwrap.dedent('''
        name = "plug"
        plugins = ["mylab.models"]
        [data]
        subset = 400
        val_size = 100
        [model]
        name = "tiny_mlp"
        options = { hidden = 24 }
        [loss]
        name = "scaled_ce"
        options = { scale = 0.5 }
        [train]
        epochs = 1
        batch_size = 50
        threads = 1
    '''))
    env = cli_env(PYTHONPATH=f"{path}:{cli_env()['PYTHONPATH']}")
    r = subprocess.run(cli_command("run", tmp_path / "exp.toml", "--out", tmp_path / "run", "--data-dir", data_root,
                                   "--no-download", "--no-progress"), env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'plugins = ["mylab.models"]' in (tmp_path / "run" / "config.toml").read_text()
    # the same model with --plugin instead of the key; the saved model loads back in a fresh process
    (tmp_path / "exp2.toml").write_text((tmp_path / "exp.toml").read_text().replace('plugins = ["mylab.models"]\n', ""))
    r = subprocess.run(cli_command("--plugin", "mylab.models", "run", tmp_path / "exp2.toml", "--out", tmp_path / "run2",
                                   "--data-dir", data_root, "--no-download", "--no-progress"),
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'plugins = ["mylab.models"]' in (tmp_path / "run2" / "config.toml").read_text()   # --plugin is recorded
    for run in ("run", "run2"):   # so either run loads in a process that names no plug-in
        check = ("import numpy as np; from cifarlab import api; run = api.load_run(r'%s'); "
                 "print(run.predict(np.zeros((2, 32, 32, 3), np.uint8)).probabilities.shape)" % (tmp_path / run))
        r = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "(2, 10)" in r.stdout, r.stderr
    r = subprocess.run(cli_command("run", tmp_path / "exp2.toml", "--data-dir", data_root), env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "tiny_mlp" in r.stderr and len(r.stderr.splitlines()) == 1   # without the plug-in
    r = subprocess.run(cli_command("run", tmp_path / "exp2.toml", "--plugin", "mylab.nothing"), env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "cannot be imported" in r.stderr
    (path / "mylab" / "broken.py").write_text("def broken(:\n")   # a plug-in's own error: one line, not a traceback
    r = subprocess.run(cli_command("run", tmp_path / "exp2.toml", "--plugin", "mylab.broken"), env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "plug-in module 'mylab.broken' failed while importing at line 1 (SyntaxError" in r.stderr


def test_a_run_trained_with_a_plugin_loss_predicts_where_the_plugin_is_not_installed(
        tmp_path, data_root, monkeypatch, registries):
    """Rebuilding a trained network needs its model and method, not its loss: a run trained with a
    plug-in loss loads, predicts and exports (its recorded config whole) in a process without the
    plug-in; one trained with a plug-in model is one line naming the plug-in that cannot be imported."""
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path)))
    for name, model in (("loss", {"widths": [8, 16], "dense": [16]}), ("model", {"name": "tiny_mlp"})):
        cfg = api.config({"name": "plug", "plugins": ["mylab.models"], "model": model, "loss": {"name": "scaled_ce"},
                          "data": {"subset": 400, "val_size": 100}, "train": {"epochs": 1, "batch_size": 50,
                                                                              "threads": 1}})
        api.train(cfg, out=tmp_path / name, data_dir=data_root, download=False, progress=False)
    check = textwrap.dedent(f"""
        import numpy as np
        from cifarlab import api
        from cifarlab.errors import ConfigError
        images = np.zeros((2, 32, 32, 3), np.uint8)
        run = api.load_run(r'{tmp_path / "loss"}')
        print("run", run.config.loss.name, run.predict(images).probabilities.shape)
        try:
            back = api.load_safetensors(api.export(run, "safetensors", r'{tmp_path / "loss.safetensors"}'))
            print("safetensors", back.config.loss.name, back.predict(images).probabilities.shape)
        except ImportError:
            print("safetensors not installed")
        try:
            api.load_run(r'{tmp_path / "model"}')
        except ConfigError as e:
            print("refused:", e)
    """)
    r = subprocess.run([sys.executable, "-c", check], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "run scaled_ce (2, 10)" in r.stdout and ("safetensors scaled_ce (2, 10)" in r.stdout or
                                                     "safetensors not installed" in r.stdout), r.stdout
    assert "refused: model.name = 'tiny_mlp' is invalid" in r.stdout, r.stdout
    assert "plug-ins that could not be imported here: " in r.stdout and "'mylab.models' cannot be imported" in r.stdout


RELOADABLE = """
import torch.nn as nn
from cifarlab.plugins import register_model


@register_model("reloadable", "a linear model")
def reloadable(cfg, num_classes, image_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, num_classes))
"""


def test_a_reloaded_plugin_replaces_its_names_and_a_builtin_or_another_modules_name_is_refused(
        tmp_path, monkeypatch, registries):
    """A notebook that edits its plug-in and reloads it gets the new definition (it was refused as
    registered twice); a plug-in taking a built-in name, or another plug-in's, is one line saying so;
    a plug-in whose own import is missing names that import, not the plug-in, as not installed."""
    import importlib

    from cifarlab.config import import_plugin
    from cifarlab.models import MODELS
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "nets.py").write_text(RELOADABLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    nets = importlib.import_module("mylab.nets")
    first = MODELS.get("reloadable")
    importlib.reload(nets)
    assert MODELS.get("reloadable") is not first and MODELS.get("reloadable").build is nets.reloadable
    (tmp_path / "mylab" / "clash.py").write_text("from cifarlab.plugins import register_loss\n\n\n"
                                                 "@register_loss('ce')\ndef ce(cfg, num_classes):\n    return None\n")
    with pytest.raises(ConfigError, match=r"plug-in module 'mylab.clash' failed while importing \(ValueError: loss "
                                          r"'ce' is built in; register the plug-in's under another name\)"):
        import_plugin("mylab.clash", "--plugin")
    (tmp_path / "mylab" / "other.py").write_text(RELOADABLE)
    with pytest.raises(ConfigError, match=r"model 'reloadable' registered twice \(by mylab.nets and by mylab.other\)"):
        import_plugin("mylab.other", "--plugin")
    (tmp_path / "mylab" / "needs.py").write_text("import nonexistent_dep_xyz\n")
    with pytest.raises(ConfigError, match="plug-in module 'mylab.needs' imports 'nonexistent_dep_xyz', which is not installed"):
        import_plugin("mylab.needs", "--plugin")
    with pytest.raises(ConfigError, match=r"cannot be imported .* give the module's dotted name \(e.g. 'mylab.nets'\)"):
        import_plugin("mylab/nets.py", "--plugin")
    (tmp_path / "run").mkdir()   # a run read back where its plug-in is not on the path: the file is named
    (tmp_path / "run" / "config.toml").write_text('plugins = ["mylab.elsewhere"]\n')
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'run' / 'config.toml'}: plugins: plug-in module 'mylab.elsewhere' "
                                          "cannot be imported"):
        C.load_file_or_run(tmp_path / "run")


def test_a_plugin_model_trains_through_the_api(tmp_path, data_root, monkeypatch, registries):
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path)))
    cfg = api.config({"name": "plug", **TINY, "model": {"name": "tiny_mlp"}}, plugins=["mylab.models"])
    assert cfg.plugins == ("mylab.models",)   # recorded: the run's config.toml names it
    result = api.train(cfg, out=tmp_path / "run", data_dir=data_root, download=False)
    assert result.epochs == 1 and api.load_run(result.run_dir).network[1].out_features == 32
    import hashlib   # which plug-in code trained it (the config hash leaves plug-ins out)
    source = (tmp_path / "plugs" / "mylab" / "models.py").read_bytes()
    assert result.final["plugins"] == {"mylab.models": hashlib.sha256(source).hexdigest()[:16]}


def test_a_plugins_declared_options_are_checked_and_a_study_tunes_them(tmp_path, monkeypatch, registries):
    """A loss that declares the options it reads (`option_names`) has a typo in them refused in one line,
    in a config and in a study's grid; a grid over `loss.options.NAME` is a tuned key like any other;
    a model that declares nothing takes any option (as before the declaration existed)."""
    from cifarlab.study import load_study
    from cifarlab.study.plan import plan
    from cifarlab.results import open_store
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path)))
    base = {"name": "plug", **TINY, "loss": {"name": "scaled_ce", "options": {"scale": 0.5}}}
    assert api.config(base, plugins=["mylab.models"]).loss.options == {"scale": 0.5}
    with pytest.raises(ConfigError, match=r"^loss.options.scal: loss 'scaled_ce' does not read an option 'scal' "
                                          r"\(its options: scale; a variant that switches loss.name sets "
                                          r"loss.options = \{\} too\); did you mean 'scale'\?$"):
        api.config({**base, "loss": {"name": "scaled_ce", "options": {"scal": 0.5}}}, plugins=["mylab.models"])
    assert api.config({**base, "model": {"name": "tiny_mlp", "options": {"anything": 1}}},
                      plugins=["mylab.models"]).model.options == {"anything": 1}
    from cifarlab.plugins import register_model
    register_model("declared_mlp", option_names=("hidden",))(lambda cfg, num_classes, image_size: None)
    with pytest.raises(ConfigError, match=r"^model.options.hiden: model 'declared_mlp' does not read an option "
                                          r"'hiden' \(its options: hidden; a variant that switches model.name sets "
                                          r"model.options = \{\} too\); did you mean 'hidden'\?$"):
        api.config({**base, "model": {"name": "declared_mlp", "options": {"hiden": 8}}}, plugins=["mylab.models"])
    with pytest.raises(TypeError, match=r"option_names are tuples of names, e.g. \('gamma',\), not the string 'hidden'"):
        register_model("stringy", option_names="hidden")(lambda cfg, num_classes, image_size: None)
    (tmp_path / "exp.toml").write_text(C.to_toml(api.config(base, plugins=["mylab.models"])))
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\nexperiment = "exp.toml"\nseeds = [0]\n\n[[variants]]\nname = "ce"\n'
                     'set = { "loss.name" = "ce", "loss.options" = {} }\n\n[[variants]]\nname = "scaled"\n'
                     'tune = { "loss.options.scale" = [0.5, 2.0] }\n')
    p = plan(load_study(study), open_store(tmp_path / "r.db"))
    tuning = {k.experiment: c.loss.options for k, c in p.runs.items() if "-tune-" in k.experiment}
    assert tuning == {"scaled-tune-scale0.5": {"scale": 0.5}, "scaled-tune-scale2": {"scale": 2.0}}
    study.write_text(study.read_text().replace('"loss.options.scale"', '"loss.options.scal"'))
    with pytest.raises(ConfigError, match=r"loss.options.scal: loss 'scaled_ce' does not read an option 'scal'"):
        plan(load_study(study), open_store(tmp_path / "r2.db"))


DATASET_PLUGIN = '''
import numpy as np
from cifarlab.data.arrays import Arrays
from cifarlab.plugins import register_dataset


@register_dataset("stripes", "vertical (class 0) or horizontal (class 1) stripes", train_images=300, classes=2,
                  side=16)
def stripes(root, image_size):
    rng = np.random.default_rng(0)
    def make(n):
        labels = rng.integers(0, 2, n)
        side = image_size or 16
        wave = (np.arange(side) % 4 < 2).astype(np.uint8) * 200
        images = np.where(labels[:, None, None, None] == 0, wave[None, None, :, None], wave[None, :, None, None])
        images = np.broadcast_to(images, (n, side, side, 3)).copy()
        return images + rng.integers(0, 40, images.shape, dtype=np.uint8), labels.astype(np.int64)
    train, test = make(300), make(100)
    return Arrays(train[0], train[1], test[0], test[1], ("vertical", "horizontal"))
'''


def test_a_plugin_dataset_trains_and_is_planned_from_its_registry_entry(tmp_path, monkeypatch, registries):
    from cifarlab.flops import flops_per_image, planned
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "data.py").write_text(DATASET_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = api.config({"name": "stripes", "data": {"dataset": "stripes", "val_size": 50},
                      "model": {"widths": [8, 16], "dense": [16]}, "optim": {"lr": 0.05},
                      "train": {"epochs": 4, "batch_size": 25, "threads": 1}}, plugins=["mylab.data"])
    plan = planned(cfg)   # before any image is read: 250 training images at 16 px, 2 classes
    assert plan["train_flops"] == 4 * 250 * flops_per_image(cfg.model, 2, 16)
    result = api.train(cfg, out=tmp_path / "run", data_dir=tmp_path, download=False)
    final = json.loads((result.run_dir / "final.json").read_text())
    assert final["train_flops"] == plan["train_flops"] and final["classes"] == ["vertical", "horizontal"]
    assert final["test_acc"] > 0.9   # stripes are easy: a network that learnt nothing scores about half
    small = api.config(C.to_dict(cfg), {"data.image_size": 8})   # a plug-in loads at the size asked for
    assert planned(small)["train_flops"] == 4 * 250 * flops_per_image(cfg.model, 2, 8)
    from cifarlab.data.datasets import DATASETS, Dataset   # registered without the plug-in helper: no classes
    DATASETS.register("bare")(Dataset("bare", lambda *a: None, lambda root: "bare", train_images=100))
    with pytest.raises(ConfigError, match="'bare' declares no classes"):
        planned(api.config(None, {"data.dataset": "bare"}))
    DATASETS.register("sizeless")(Dataset("sizeless", lambda *a: None, lambda root: "sizeless", classes=3))
    with pytest.raises(ConfigError, match="'sizeless' declares no train_images"):
        planned(api.config(None, {"data.dataset": "sizeless"}))
    subset = api.config(None, {"data.dataset": "sizeless", "data.subset": 600, "data.val_size": 100})
    assert planned(subset)["train_flops"] == subset.train.epochs * 500 * flops_per_image(subset.model, 3, 32)


def test_a_plugin_dataset_with_superclasses_trains_on_them_and_one_without_refuses_them(tmp_path, registries):
    import numpy as np
    from cifarlab.data.arrays import Arrays
    from cifarlab.flops import planned
    from cifarlab.plugins import register_dataset

    @register_dataset("shades", "four grey levels in two superclasses (dark, light)", train_images=200, classes=4,
                      side=8, coarse_classes=2)
    def shades(root, image_size):
        rng = np.random.default_rng(0)
        def make(n):
            fine = rng.integers(0, 4, n)
            images = np.broadcast_to((fine * 60 + 20).astype(np.uint8)[:, None, None, None], (n, 8, 8, 3)).copy()
            return images, fine.astype(np.int64), (fine // 2).astype(np.int64)
        (xa, ya, ca), (xb, yb, cb) = make(200), make(80)
        return Arrays(xa, ya, xb, yb, ("a", "b", "c", "d"), ca, cb, ("dark", "light"))

    base = {"data": {"dataset": "shades", "val_size": 40}, "model": {"widths": [4, 8], "dense": [8]},
            "train": {"epochs": 1, "batch_size": 40, "threads": 1}}
    coarse = api.config(base, {"data.labels": "coarse"})
    assert planned(coarse)["train_flops"] < planned(api.config(base))["train_flops"]   # a 2-way head, not 4
    result = api.train(coarse, out=tmp_path / "run", data_dir=tmp_path, download=False)
    assert json.loads((result.run_dir / "final.json").read_text())["classes"] == ["dark", "light"]
    from cifarlab.errors import DataError
    register_dataset("flat", "declares superclasses, returns none", train_images=200, classes=4, side=8,
                     coarse_classes=2)(lambda root, size: dataclasses.replace(shades(root, size), train_coarse_labels=None,
                                                                             test_coarse_labels=None, coarse_classes=None))
    with pytest.raises(DataError, match="flat has no coarse labels: its loader returned Arrays without"):
        api.train(api.config(base, {"data.dataset": "flat", "data.labels": "coarse"}), out=tmp_path / "flat",
                  data_dir=tmp_path, download=False)
    with pytest.raises(ConfigError, match=r"data.labels = 'coarse' needs a dataset with superclasses "
                                          r"\(data.dataset = 'cifar100' or 'flat' or 'shades'\), got data.dataset = 'cifar10'"):
        api.config(None, {"data.labels": "coarse"})


def test_options_are_hashed_only_when_set():
    base = api.config()
    assert C.config_hash(api.config(None, {"model.options": {}})) == C.config_hash(base)
    recorded = C.from_dict({"model": {"options": {"depth": 3}}}, recorded=True)   # (vgg declares no options)
    assert C.config_hash(recorded) != C.config_hash(base)
    with pytest.raises(ConfigError, match="table of keys"):
        api.config(None, {"model.options": 3})


def test_import_cifarlab_api_needs_no_extras():
    code = ("import sys; import cifarlab.api; "
            "bad = [m for m in ('ray', 'tensorboard', 'safetensors', 'onnx', 'PIL') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_api_pages_example_runs(tmp_path, data_root, monkeypatch):
    """docs/API.md's worked example, on the synthetic data root, in a scratch folder."""
    import re
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    code = re.search(r"```python\n(.*?)```", (repo / "docs" / "API.md").read_text(), re.S).group(1)
    code = code.replace('DATA = "../shared/data"', f'DATA = r"{data_root}"')
    code = code.replace('"experiments/tutorial/baseline.toml"', repr(str(repo / "experiments/tutorial/baseline.toml")))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/API.md", "exec"), {})
    assert (tmp_path / "runs/api-example/seed0/model.torchscript.pt").exists()


def test_the_extending_pages_plugin_trains(tmp_path, data_root, monkeypatch, registries):
    """docs/EXTENDING.md's model, loss and augmentation, as one plug-in module, train one epoch."""
    import re
    from pathlib import Path
    page = (Path(__file__).resolve().parents[1] / "docs" / "EXTENDING.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    pkg = tmp_path / "docplug" / "mylab_doc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("\n\n".join(blocks))
    monkeypatch.syspath_prepend(str(tmp_path / "docplug"))
    toml = re.search(r"```toml\n(.*?)```", page, re.S).group(1)
    raw = __import__("tomllib").loads(toml.replace("mylab.models", "mylab_doc.models"))
    raw.pop("extends")
    cfg = api.config({**raw, **{k: v for k, v in TINY.items() if k != "model"}},
                     {"augment.pipeline": ["invert"], "model.options": {"hidden": 32, "depth": 2}})
    result = api.train(cfg, out=tmp_path / "run", data_dir=data_root, download=False)
    assert result.epochs == 1 and result.stopped is None
    assert api.load_run(result.run_dir).config.loss.options == {"gamma": 2.0}


def test_onnx_export_where_onnx_is_installed(trained, tmp_path):
    onnx = pytest.importorskip("onnx")
    run = api.load_run(trained.run_dir)
    model = onnx.load(str(api.export(run, "onnx", tmp_path / "m.onnx")))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["images"] and [o.name for o in model.graph.output] == ["logits"]
    meta = {p.key: p.value for p in model.metadata_props}   # what TorchScript's cifarlab.json carries
    assert json.loads(meta["classes"]) == list(run.classes) and meta["tta"] == run.config.train.tta
    assert json.loads(meta["mean"]) == list(run.mean) and meta["image_size"] == str(run.image_size)


def test_export_takes_a_run_directory_and_writes_beside_its_model_by_default(trained, tmp_path):
    """`api.export` as `cifarlab export`: a run directory is loaded for it, and `out` defaults to
    model.<suffix> in that directory."""
    written = api.export(trained.run_dir, "torchscript")
    try:
        assert written == trained.run_dir / "model.torchscript.pt" and written.stat().st_size > 0
    finally:
        written.unlink()
    with pytest.raises(UserError, match="format 'tflite' is invalid"):
        api.export(trained.run_dir, "tflite")
    with pytest.raises(UserError, match="does not exist; give a file `cifarlab export --format safetensors` wrote"):
        api.load_safetensors(tmp_path / "none.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a header" * 8)
    with pytest.raises(UserError, match="is not a safetensors file"):
        api.load_safetensors(tmp_path / "bad.safetensors")


def test_a_plugin_method_with_two_networks_gets_its_peer(tmp_path, data_root, registries):
    from cifarlab.methods import standard, update
    from cifarlab.plugins import register_method
    seen = []

    @register_method("both", networks=2)
    def both(s, views, epoch):
        """Each network trains on the whole batch."""
        (x, batch), = views
        seen.append(s.peer is not None and s.peer_opt is not None)
        peer_loss = s.loss(s.peer(x).float(), batch)
        update(s, s.peer_opt, peer_loss, s.peer)
        return standard(s, views, epoch)

    cfg = api.config({"name": "both", **TINY}, {"train.method": "both"})
    result = api.train(cfg, out=tmp_path / "run", data_dir=data_root, download=False)
    assert result.epochs == 1 and seen and all(seen)
    one = api.train(api.config({"name": "one", **TINY}), out=tmp_path / "one", data_dir=data_root, download=False)
    assert result.train_flops == 2 * one.train_flops      # two networks: twice the FLOPs


def test_a_run_logs_to_a_local_mlflow_store_without_a_server(tmp_path, data_root, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")   # what the sink sets; here so it does not leak
    cfg = api.config({"name": "tracked", **TINY}, {"train.epochs": 2, "train.mlflow": True})
    result = api.train(cfg, out=tmp_path / "run", data_dir=data_root, download=False)
    assert C.config_hash(cfg) == C.config_hash(api.config({"name": "tracked", **TINY}, {"train.epochs": 2}))
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["optim.lr"] == "0.05"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1, 2]
    assert run.data.metrics["final_test_acc"] == pytest.approx(result.test_acc)


def test_a_finished_run_resumed_with_tracking_turned_on_copies_its_record(trained, tmp_path, monkeypatch):
    """train.tensorboard / train.mlflow are outside the config hash: turned on at the resume of a
    finished run, they receive its recorded epochs and final metrics, and no other file changes."""
    import shutil
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from cifarlab.runs import RunDir
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "copy"
    shutil.copytree(trained.run_dir, out)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    cfg = api.config({"name": "tiny", **TINY}, {"data.normalize": "standard", "train.tensorboard": True,
                                                "train.mlflow": True})
    for _ in range(2):   # twice: copied once, not twice (no second MLflow run, no second event file)
        again = api.train(cfg, out=out, resume=True, data_dir=tmp_path / "no-data", download=False)
    assert again.test_acc == trained.test_acc
    assert files == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name in files}
    history = RunDir(out).read_metrics()
    events = EventAccumulator(str(out))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("accuracy/val")] == \
        [(h["epoch"], pytest.approx(h["val_acc"], rel=1e-6)) for h in history]
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and len(list(out.glob("events.out.tfevents.*"))) == 1
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_acc")] == [h["epoch"] for h in history]
    assert runs[0].data.metrics["final_test_acc"] == pytest.approx(trained.test_acc)


def test_an_interrupted_copy_of_a_record_is_made_again_at_the_next_resume(trained, tmp_path, monkeypatch):
    """An interruption while a finished run's record is copied to MLflow ends that MLflow run KILLED
    and reaches the caller; the next resume copies it whole (only a FINISHED copy counts), and the
    one after copies nothing. The run folder's name holds a quote (the store's filter cannot escape
    it: it matched nothing, and the record was copied at every resume)."""
    import shutil
    mlflow = pytest.importorskip("mlflow")
    from cifarlab import tracking
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "lab's copy"
    shutil.copytree(trained.run_dir, out)
    cfg = api.config({"name": "tiny", **TINY}, {"data.normalize": "standard", "train.mlflow": True})
    real = tracking.MlflowLog.epoch

    def interrupted(self, row):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking.MlflowLog, "epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, out=out, resume=True, data_dir=tmp_path / "no-data", download=False)
    monkeypatch.setattr(tracking.MlflowLog, "epoch", real)
    for _ in range(2):
        api.train(cfg, out=out, resume=True, data_dir=tmp_path / "no-data", download=False)
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    (done,) = [r for r in runs if r.info.status == "FINISHED"]
    assert done.data.tags["cifarlab.run_dir"] == str(out)
    assert [m.step for m in client.get_metric_history(done.info.run_id, "val_acc")] == \
        [h["epoch"] for h in trained.history]


def test_a_failed_run_ends_its_mlflow_run_and_the_next_one_starts(tmp_path, data_root, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from cifarlab import train as T
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    real = T.run_epoch

    def breaks_in_epoch_2(s, splits, train_split, epoch, bar):
        if epoch == 1:
            raise RuntimeError("a disk filled up")
        return real(s, splits, train_split, epoch, bar)

    monkeypatch.setattr(T, "run_epoch", breaks_in_epoch_2)
    cfg = api.config({"name": "tracked", **TINY}, {"train.epochs": 2, "train.mlflow": True})
    with pytest.raises(RuntimeError, match="disk filled"):
        api.train(cfg, out=tmp_path / "broken", data_dir=data_root, download=False)
    monkeypatch.setattr(T, "run_epoch", real)
    api.train(cfg, out=tmp_path / "next", data_dir=data_root, download=False)   # a worker's next run
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("tracked").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def test_a_plugin_methods_own_keys_and_rules_are_checked_with_every_config(registries):
    """A method declares the config keys only it reads and its own rules in its registry entry; the
    config checks them by asking the registry (it names no method)."""
    from cifarlab.errors import ConfigError
    from cifarlab.methods import standard
    from cifarlab.plugins import register_method

    def even_batch(cfg):
        if cfg.train.batch_size % 2:
            raise ConfigError(f"train.batch_size = {cfg.train.batch_size}: pairs needs an even batch")

    register_method("pairs", label="pair training", keys=("model.dropout_before_bn",), check=even_batch)(standard)
    assert api.config({"name": "p", **TINY}, {"train.method": "pairs", "model.dropout_before_bn": True}
                      ).train.method == "pairs"
    with pytest.raises(ConfigError, match="model.dropout_before_bn is pair training's; set train.method = 'pairs' or "
                                          "leave it at False"):
        api.config({"name": "p", **TINY}, {"model.dropout_before_bn": True})
    with pytest.raises(ConfigError, match="pairs needs an even batch"):
        api.config({"name": "p", **TINY}, {"train.method": "pairs", "train.batch_size": 7})
    with pytest.raises(ConfigError, match="use a method of one network"):
        api.config({"name": "p", **TINY}, {"train.method": "coteaching", "train.ema": 0.99})


def test_a_plugin_says_whether_it_may_train_on_several_processes_and_its_legend(registries):
    """Several processes train a method only where its entry says its step splits a batch, and a loss
    only where its builder keeps no per-sample state (it takes no `num_samples`); a method's legend
    hook is what the noise figures and tables append to its name."""
    from cifarlab.distributed import World
    from cifarlab.errors import ConfigError
    from cifarlab.losses import LOSSES, per_sample
    from cifarlab.methods import check_processes, standard
    from cifarlab.plugins import register_loss, register_method
    from cifarlab.report.figures import noise_method

    register_method("halves", splits=True, legend=lambda cfg, rate: f"halves at {rate:g}")(standard)
    register_method("wholes")(standard)
    register_loss("remembering")(lambda cfg, num_classes, num_samples=0: LOSSES.get("ce")(cfg, num_classes))
    two = World(0, 2)
    check_processes(api.config({"name": "p", **TINY}, {"train.method": "halves"}), two)
    with pytest.raises(ConfigError, match="supports train.method = 'standard' or 'halves'.*got method 'wholes'"):
        check_processes(api.config({"name": "p", **TINY}, {"train.method": "wholes"}), two)
    assert per_sample("remembering") and per_sample("elr") and not per_sample("ce")
    with pytest.raises(ConfigError, match="loss 'remembering'"):
        check_processes(api.config({"name": "p", **TINY}, {"loss.name": "remembering"}), two)
    check_processes(api.config({"name": "p", **TINY}, {"train.method": "wholes"}), World(0, 1))
    noisy = api.config({"name": "p", **TINY}, {"train.method": "halves", "data.noise": "symmetric", "data.noise_rate": 0.4})
    assert noise_method(noisy) == "ce + halves (halves at 0.4)"
    assert noise_method(noisy, forget=False) == "ce + halves"
    cot = api.config({"name": "p", **TINY}, {"train.method": "coteaching", "data.noise": "symmetric", "data.noise_rate": 0.4,
                                             "train.forget_rate": 0.2})
    assert noise_method(cot) == "ce + coteaching (forget 0.2)"
    assert noise_method(api.config({"name": "p", **TINY}, {"train.method": "coteaching", "data.noise": "symmetric", "data.noise_rate": 0.4,
                                                           "train.forget_rate": 0.4})) == "ce + coteaching"


def test_summary_gives_a_studys_arms_as_its_report_counts_them(tmp_path, monkeypatch):
    """api.summary on the committed basic study: each arm's seeds, mean, interval and paired difference
    from the reference, recomputed here from the database's finished runs."""
    import shutil
    import sqlite3
    import statistics
    db = tmp_path / "basic.db"
    shutil.copy(REPO / "results" / "basic" / "results.db", db)
    monkeypatch.chdir(REPO)            # a bare study name is looked up in studies/
    arms = api.summary("basic", db)
    assert [a.experiment for a in arms][:3] == ["baseline", "dropout", "weight-decay"]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    done = conn.execute("SELECT experiment, seed, test_acc FROM runs WHERE study = 'basic' AND status = 'done'").fetchall()
    conn.close()
    ref = next(a for a in arms if a.experiment == "baseline")
    assert ref.metric == "test_acc" and ref.versus == "baseline" and ref.diff is None and ref.n == 3
    for arm in arms:
        assert arm.n == len(arm.scores) and arm.registered >= arm.n
        assert all((arm.experiment, seed, acc) in done for seed, acc in arm.scores.items())
        if arm.n >= 2:
            assert arm.mean == pytest.approx(statistics.mean(arm.scores.values()))
            assert arm.std == pytest.approx(statistics.stdev(arm.scores.values()))
            assert arm.ci95[0] < arm.mean < arm.ci95[1]
        if arm is not ref and arm.diff_n:
            common = sorted(set(arm.scores) & set(ref.scores))
            assert arm.diff_n == len(common)
            assert arm.diff == pytest.approx(statistics.mean(arm.scores[s] - ref.scores[s] for s in common))
    with pytest.raises(UserError, match=r"^results database not found: .*nowhere.db; give as db a database"):
        api.summary("basic", tmp_path / "nowhere.db")
    with pytest.raises(UserError, match=r"basic.db holds no run of study noise_elr_select \(it holds basic\); give "):
        api.summary("noise_elr_select", db)
    before = db.read_bytes()
    api.summary("basic", db)
    assert db.read_bytes() == before   # read in a copy: nothing written
    selection = tmp_path / "select.db"
    shutil.copy(REPO / "results" / "noise_elr_select" / "results.db", selection)
    arms = {a.experiment: a for a in api.summary("noise_elr_select", selection)}
    assert {a.metric for a in arms.values()} == {"val_acc"} and arms["elr-l3"].n == 1    # a selection study: validation
    assert arms["elr-l3"].std is None and arms["elr-l3"].ci95 == (None, None)            # one seed: no spread


def test_a_results_history_is_its_metrics(trained):
    history = trained.history
    assert [h["epoch"] for h in history] == list(range(1, trained.epochs + 1))
    assert history[trained.final["selected_epoch"] - 1]["val_acc"] == pytest.approx(trained.val_acc)


def test_a_finished_runs_plugin_hashes_reach_its_database_row(tmp_path):
    from cifarlab.results import open_store
    from cifarlab.results.store import RunKey
    store = open_store(tmp_path / "r.db")
    for seed, plugins in ((0, {"mylab.models": "0123456789abcdef"}), (1, None)):
        key = RunKey("s", "a", seed, "h")
        store.register(key, C.to_dict(api.config({"name": "a", **TINY})))
        row = store.claim("s", [key])
        final = finished_metrics(**({"plugins": plugins} if plugins else {}))
        store.finish(row["id"], final, "nowhere", 1)
    versions = {r["seed"]: json.loads(r["versions"]) for r in store.runs("s")}
    assert versions[0]["plugins"] == {"mylab.models": "0123456789abcdef"} and "plugins" not in versions[1]
    import csv
    from cifarlab.results.export import export_csv
    runs_csv = export_csv(store, tmp_path, "s")[0]
    rows = {int(r["seed"]): r for r in csv.DictReader(runs_csv.open())}
    assert json.loads(rows[0]["version_plugins"]) == {"mylab.models": "0123456789abcdef"} and rows[1]["version_plugins"] == ""


def test_compare_pairs_seeds_as_a_report_does_and_refuses_what_it_cannot_pair():
    """api.compare: each side's mean, std and t-interval, the mean paired difference over the seeds
    both have with its t-interval and p-value (the t quantile for 2 degrees of freedom is 4.303),
    the seeds a difference of that size and spread needs; bad input is one line each."""
    def result(seed, test, val=0.5):
        return api.TrainResult(Path(f"runs/x/seed{seed}"), "x", seed, "h", val, test, 1, 1.0, 1.0, 1, None, {})

    runs = [result(0, 0.80), result(1, 0.82), result(2, 0.81), result(3, 0.90)]   # seed 3 has no pair
    c = api.compare(runs, {0: 0.78, 1: 0.79, 2: 0.80})
    assert c.n == (4, 3) and c.diff_n == 3 and c.mean[1] == pytest.approx(0.79)
    assert c.diff == pytest.approx(0.02) and c.std[1] == pytest.approx(0.01)
    half = 4.303 * 0.01 / 3 ** 0.5   # differences 0.02, 0.03, 0.01: std 0.01
    assert c.diff_ci95 == (pytest.approx(0.02 - half, abs=1e-4), pytest.approx(0.02 + half, abs=1e-4))
    assert 0.05 < c.p < 0.1 and c.seeds_needed == 5
    assert "difference +2.00 points" in str(c) and "over 3 paired seed(s)" in str(c)
    diverged = dataclasses.replace(result(1, 0.10), stopped="diverged")
    assert "(n=2, seed(s) 1 stopped early)" in str(api.compare([result(0, 0.8), diverged], runs[:2]))
    one = api.compare(result(0, 0.80), {0: 0.78})   # one run, not in a list
    assert one.n == (1, 1) and one.diff == pytest.approx(0.02) and one.diff_n == 1
    apart = api.compare({0: 0.8}, {1: 0.7})
    assert apart.diff is None and apart.p is None and "no seed in common" in str(apart)
    assert api.compare(runs[:2], [result(0, 0.7, val=0.4), result(1, 0.7, val=0.45)], "val_acc").diff == \
        pytest.approx(0.075)
    for args, message in [((runs, runs, "acc"), "compare(metric='acc') is invalid; valid: 'val_acc', 'test_acc'"),
                          (([runs[0], runs[0]], runs), "runs holds seed 0 twice"),
                          ((runs, []), "reference is empty"),
                          ((runs, [result(0, None)]), "reference's seed 0 has test_acc None, not a finite accuracy"),
                          ((runs, {0: float("nan")}), "reference's seed 0 has test_acc nan, not a finite accuracy"),
                          ((runs, [0.8]), "reference holds a float; give the results of api.train")]:
        with pytest.raises(UserError, match=re.escape(message)):
            api.compare(*args)


def fake_run(folder: Path, seed: int, test: float, val: float = 0.5, config_hash: str = "abc", epochs: int = 2,
             lines: int | None = None) -> Path:
    """A finished run directory as `train` leaves it, as far as load_result reads it."""
    folder.mkdir(parents=True)
    (folder / "final.json").write_text(json.dumps({"name": "x", "seed": seed, "config_hash": config_hash,
                                                   "epochs": epochs, "val_acc": val, "test_acc": test,
                                                   "wall_seconds": 1.0, "images_per_s": 1.0, "train_flops": 1,
                                                   "stopped": None}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1}) + "\n"
                                                  for e in range(epochs if lines is None else lines)))
    return folder


def test_compare_on_the_command_line_reads_finished_run_folders_and_refuses_what_it_cannot_pair(tmp_path, capsys):
    """`cifarlab compare RUN... --reference RUN...`: run directories or folders of them, paired by seed
    as api.compare pairs them; a folder without finished runs, a run started over and not finished,
    and a side mixing two settings are one line each, exit 2."""
    from cifarlab import cli
    for seed, (a, b) in enumerate([(0.80, 0.78), (0.82, 0.79), (0.81, 0.80)]):
        fake_run(tmp_path / "drop" / f"seed{seed}", seed, a, config_hash="d")
        fake_run(tmp_path / "base" / f"seed{seed}", seed, b, config_hash="b")
    r = subprocess.run(cli_command("compare", tmp_path / "drop", "--reference", *sorted((tmp_path / "base").iterdir())),
                       env=cli_env(), capture_output=True, text=True, timeout=300)   # the installed command, once
    assert r.returncode == 0, r.stderr
    assert "runs: x, seed(s) 0, 1, 2" in r.stdout and "difference +2.00 points [-0.48, 4.48] over 3 paired" in r.stdout
    assert "needs at 80 % power: about 5" in r.stdout
    fake_run(tmp_path / "empty" / "notes", 0, 0.5).joinpath("final.json").unlink()
    fake_run(tmp_path / "again", 0, 0.5, lines=1)
    fake_run(tmp_path / "mixed" / "seed3", 3, 0.5, config_hash="other")
    fake_run(tmp_path / "torn", 0, 0.5).joinpath("final.json").write_text("{")
    for args, message in [((tmp_path / "empty", "--reference", tmp_path / "base"),
                           f"RUN {tmp_path / 'empty'}: no finished run in it or in its folders"),
                          ((tmp_path / "again", "--reference", tmp_path / "base"),
                           "its final.json is older than its training"),
                          ((tmp_path / "drop", tmp_path / "mixed" / "seed3", "--reference", tmp_path / "base"),
                           "compare(): runs mixes settings"),
                          ((tmp_path / "torn", "--reference", tmp_path / "base"),
                           f"{tmp_path / 'torn'} holds no finished run (no readable final.json)"),
                          ((tmp_path / "nowhere", "--reference", tmp_path / "base"),
                           f"run directory {tmp_path / 'nowhere'} does not exist")]:
        assert cli.main(["compare", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
