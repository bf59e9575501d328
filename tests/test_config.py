import pytest

from cifarlab import config as C
from cifarlab.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_are_the_tutorial_baseline():
    cfg = C.ExperimentConfig()
    assert cfg.model.widths == (32, 64, 128) and cfg.optim.lr == 0.001 and cfg.train.batch_size == 64


def test_extends_and_overrides(tmp_path):
    write(tmp_path / "base.toml", 'name = "base"\n[optim]\nlr = 0.1\nmomentum = 0.5\n')
    child = write(tmp_path / "child.toml", 'extends = "base.toml"\n[optim]\nlr = 0.2\n')
    cfg = C.load(child, ["train.epochs=3", "optim.name=adam", "model.widths=[8, 16]"])
    assert cfg.name == "child"  # a child is its own experiment
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.name) == (0.2, 0.5, "adam")
    assert cfg.train.epochs == 3.0 and isinstance(cfg.train.epochs, float)
    assert cfg.model.widths == (8, 16)


def test_resolved_toml_round_trips(tmp_path):
    cfg = C.load(write(tmp_path / "e.toml", "[model]\nnorm = \"batch\"\ndropout = [0.2, 0.3, 0.4]\n"))
    again = C.load(write(tmp_path / "resolved.toml", C.to_toml(cfg)))
    assert again == cfg and C.config_hash(again) == C.config_hash(cfg)


def test_hash_and_diff_see_one_key():
    a, b = C.ExperimentConfig(), C.from_dict({"optim": {"lr": 0.5}})
    assert C.config_hash(a) != C.config_hash(b)
    assert C.diff(a, b) == {"optim.lr": (0.001, 0.5)}


@pytest.mark.parametrize("raw, message", [
    ({"optim": {"lrr": 0.1}}, "unknown key optim.lrr; valid keys of [optim]: name, lr,"),
    ({"optimizer": {}}, "unknown config section 'optimizer'; valid: name, data,"),
    ({"nmae": "x"}, "did you mean 'name'?"),
    ({"epochs": 1}, "'epochs' is a key of [train], not a section: write it under that section's header "
                    "(on the command line: --set train.epochs=...)"),   # a key above every [section] header
    ({"train": {"lr": 0.1}}, "unknown key train.lr; valid keys of [train]: "),
    ({"train": {"lr": 0.1}}, "; did you mean optim.lr?"),   # the key exists in another section
    ({"augment": {"pipeline": "[flip,cutot]"}}, """a list is TOML, quoted for the shell: --set 'augment.pipeline=["flip", "cutot"]'"""),
    ({"augment": {"pipeline": "flip"}}, """a list is TOML, quoted for the shell: --set 'augment.pipeline=["flip"]'"""),
    ({"model": {"name": "tiny_mlp"}}, "a plug-in's? import its module: --plugin MODULE"),
    ({"optim": {"name": "lion"}}, "optim.name = 'lion' is invalid; valid: "),
    ({"optim": {"lr": "fast"}}, "optim.lr must be float, got str"),
    ({"train": {"batch_size": 6.5}}, "train.batch_size must be int"),
    ({"model": {"dropout_before_bn": 1}}, "model.dropout_before_bn must be bool"),
    ({"optim": {"lr": -0.01}}, "optim.lr = -0.01 must be > 0"),
    ({"data": {"normalize": "zscore"}}, "valid: unit, standard"),
    ({"model": {"dropout": [0.2]}}, "one rate per block"),
    ({"model": {"dropout": [0.2, 0.3, 1.5]}}, "[0, 1)"),
    ({"augment": {"translate": 3}}, "augment.translate = 3.0 must be below 1"),
    ({"schedule": {"restart_mult": 0.5}}, "schedule.restart_mult = 0.5 must be >= 1"),
    ({"name": "../elsewhere"}, "experiment name '../elsewhere' is not a valid name"),
    ({"optim": {"muon_lr": 0.1}}, "optim.muon_lr is Muon's; set optim.name = 'muon'"),
    ({"optim": {"name": "adam", "muon_momentum": 0.9}}, "optim.muon_momentum is Muon's"),
    ({"train": {"epochs": float("inf")}}, "train.epochs must be a finite number, got inf"),
    ({"optim": {"lr": float("nan")}}, "optim.lr must be a finite number, got nan"),
    ({"train": {"seed": 10**20}}, "train.seed = 100000000000000000000 is too large for a seed: give one in [0, 4294967295]"),
    ({"data": {"noise_seed": 2**32}}, "data.noise_seed = 4294967296 is too large for a seed"),
    ({"loss": {"gce_q": 0.4}}, "loss.gce_q = 0.4 is read by loss 'gce' only, and this config's loss is 'ce': set "
                               "loss.name = 'gce' or leave loss.gce_q at 0.7"),   # another loss's key: unread
    ({"loss": {"name": "gce", "elr_lambda": 1.0}}, "loss.elr_lambda = 1.0 is read by loss 'elr' only"),
    ({"loss": {"options": {"gamma": 2}}}, "loss.options.gamma: loss 'ce' does not read an option 'gamma' "
                                          "(it reads no options; a variant that switches loss.name sets "
                                          "loss.options = {} too)"),
    ({"model": {"name": "resnet18", "options": {"depth": 2}}}, "model.options.depth: model 'resnet18' does not read"),
])
def test_bad_configs_name_the_problem(raw, message):
    with pytest.raises(ConfigError) as e:
        C.from_dict(raw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_override_and_extends_cycle(tmp_path):
    with pytest.raises(ConfigError, match="section.key=value"):
        C.parse_override("lr0.1")
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        C.load(tmp_path / "a.toml")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "mine.toml", 'extends = "../fast/baseline.toml"\n')   # a missing parent names its child
    with pytest.raises(ConfigError, match=r"mine.toml: extends = '../fast/baseline.toml', but .*fast/baseline.toml "
                                          r"does not exist \(the path is relative to this file's folder\)"):
        C.load(tmp_path / "sub" / "mine.toml")
    with pytest.raises(ConfigError) as e:   # a kind no plug-in registers gets no plug-in hint
        C.from_dict({"optim": {"name": "lion"}})
    assert "plug-in" not in str(e.value)


def test_shipped_experiments_load():
    from pathlib import Path
    files = sorted(Path(__file__).resolve().parents[1].glob("experiments/**/*.toml"))
    assert files
    for f in files:
        C.load(f)


def test_hash_ignores_keys_left_at_their_default():
    # A key added later with a behaviour-preserving default must not orphan old results.
    short = C.from_dict({"optim": {"lr": 0.02}})
    explicit = C.from_dict({"optim": {"lr": 0.02}, "train": {"tta": "none", "seed": 7}})
    assert C.config_hash(short) == C.config_hash(explicit)
    assert C.config_hash(short) != C.config_hash(C.from_dict({"optim": {"lr": 0.02}, "train": {"tta": "flip"}}))


def test_hash_ignores_how_a_run_executes():
    short = C.from_dict({"optim": {"lr": 0.02}})
    executed = C.from_dict({"optim": {"lr": 0.02},
                            "train": {"threads": 1, "checkpoint_every": 5, "eval_batch_size": 250}})
    assert C.config_hash(short) == C.config_hash(executed)
    assert C.config_hash(short) != C.config_hash(C.from_dict({"optim": {"lr": 0.03}, "train": {"threads": 1}}))


def test_the_name_is_an_override_too(tmp_path):
    """`--set name=NAME`: a second config of one file gets its own runs/<name>/ (list keys lists name)."""
    (tmp_path / "mine.toml").write_text("[optim]\nlr = 0.1\n")
    assert C.load(tmp_path / "mine.toml").name == "mine"
    assert C.load(tmp_path / "mine.toml", ["name=mine-flip"]).name == "mine-flip"
    with pytest.raises(ConfigError, match=r"must look like section.key=value, e.g. optim.lr=0.01 \(or name=NAME\)"):
        C.load(tmp_path / "mine.toml", ["lr=0.1"])


def test_a_recorded_config_is_read_back_under_rules_added_since():
    """A run that trained with another loss's key set (accepted then) still loads for predict, resume
    and its report: `recorded` skips the rules on which keys an entry reads; a new config is refused."""
    raw = {"loss": {"gce_q": 0.4}, "model": {"options": {"depth": 2}}}
    assert C.from_dict(raw, recorded=True).loss.gce_q == 0.4
    with pytest.raises(ConfigError, match="loss.gce_q = 0.4 is read by loss 'gce' only"):
        C.from_dict(raw)


def test_a_recorded_config_needs_only_its_named_sections_and_a_missing_method_names_the_failed_plugin():
    """A recorded config whose plug-in cannot be imported here still loads where only its loss came
    from the plug-in (predict needs the model and the method, `needs`); where its method came from
    the plug-in, the one line names the method and the plug-in that failed to import. A new config
    refuses the missing plug-in at once."""
    raw = {"plugins": ["nolab_xyz.methods"], "model": {"name": "vgg"}, "loss": {"name": "nolab_loss"}}
    cfg = C.from_dict(raw, recorded=True, needs=("model", "train"))
    assert cfg.loss.name == "nolab_loss" and cfg.plugins == ("nolab_xyz.methods",)   # kept as recorded
    with pytest.raises(ConfigError, match=r"train.method = 'peer_swap' is invalid; valid: .*the config's plug-ins "
                                          r"that could not be imported here: plugins: plug-in module "
                                          r"'nolab_xyz.methods' cannot be imported"):
        C.from_dict({**raw, "train": {"method": "peer_swap"}}, recorded=True, needs=("model", "train"))
    with pytest.raises(ConfigError, match="plug-in module 'nolab_xyz.methods' cannot be imported"):
        C.from_dict(raw)
