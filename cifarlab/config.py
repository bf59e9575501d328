"""Experiment configuration: reading, overriding, resolving and saving the keys of `cifarlab.schema`.

An experiment is a TOML file of a few overrides of the defaults in `cifarlab.schema`. It may name
another file with `extends = "other.toml"` (path relative to the file); the CLI adds
`--set section.key=value`. Reading a config resolves it: a model preset (`model.name`) supplies
the [model] keys the file leaves out, and every key whose value names a registry entry
(`REGISTERED`) is checked by that registry. Unknown keys, wrong types and invalid values raise
`ConfigError` with the list of valid keys or values (and the closest one to a misspelling).

Layering: `schema` (the keys, no registry) <- the registries (data.datasets, augment, models,
losses, optim, methods), which build from the keys <- this module, which asks them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from cifarlab.augment import AUGMENTS
from cifarlab.data.datasets import DATASETS
from cifarlab.errors import ConfigError, did_you_mean
from cifarlab.losses import LOSSES
from cifarlab.methods import METHODS
from cifarlab.models import MODELS
from cifarlab.models.layers import ACTIVATIONS, BLOCKS, NORMS, STEMS
from cifarlab.optim import OPTIMIZERS, SCHEDULES
from cifarlab.registry import Registry
from cifarlab.schema import (  # noqa: F401  (the keys, re-exported: `from cifarlab.config import ModelConfig`)
    BELOW_ONE,
    Options,
    CHOICES,
    NAME,
    NON_NEGATIVE,
    NOT_HASHED,
    POOLING_BLOCKS,
    POSITIVE,
    PROBABILITY,
    SECTIONS,
    AugmentConfig,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    SupConConfig,
    TrainConfig,
    check_name,
    validate,
)

# Keys whose values are registry names: the registry is the list of valid values (`cifarlab list`).
REGISTERED: dict[tuple[str, str], Registry] = {
    ("data", "dataset"): DATASETS,
    ("augment", "pipeline"): AUGMENTS,   # each entry of the list
    ("model", "name"): MODELS,
    ("model", "stem"): STEMS,
    ("model", "block"): BLOCKS,
    ("model", "norm"): NORMS,
    ("model", "activation"): ACTIVATIONS,
    ("optim", "name"): OPTIMIZERS,
    ("schedule", "name"): SCHEDULES,
    ("loss", "name"): LOSSES,
    ("train", "method"): METHODS,
}


# Keys that were renamed: (section, old) -> (new section, new key, how an old value maps to the new
# one). A results database stores resolved configs, so its migrations (cifarlab/results/store.py,
# versions 6 and 8) apply the same map; an experiment file that still uses an old key gets one line
# naming the new one. augment.flip (a bool) became an entry of augment.pipeline (see `upgrade_renamed`).
RENAMED = {("model", "batchnorm"): ("model", "norm", lambda v: "batch" if v else "none"),
           ("model", "pool"): ("model", "downsample", lambda v: v),
           ("train", "label_smoothing"): ("loss", "label_smoothing", lambda v: v)}


def upgrade_renamed(raw: dict) -> dict:
    """A resolved config dict written before the renames in RENAMED (and before augment.pipeline),
    with the new keys."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for (section, old), (new_section, new, convert) in RENAMED.items():
        if isinstance(out.get(section), dict) and old in out[section]:
            out.setdefault(new_section, {})[new] = convert(out[section].pop(old))
    aug = out.get("augment")
    if isinstance(aug, dict) and "flip" in aug and "pipeline" not in aug:
        # before the pipeline, flip and translate ran in that (registry) order when enabled
        aug["pipeline"] = ["flip"] * bool(aug.pop("flip")) + ["translate"] * bool(aug.get("translate", 0) > 0)
    return out


# ----------------------------------------------------------------------------- loading

def load(path: str | Path, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """Read an experiment file (following `extends`), apply `section.key=value` overrides."""
    raw = read_toml_chain(Path(path))
    for item in overrides:
        set_dotted(raw, *parse_override(item))
    raw.setdefault("name", Path(path).stem)
    return from_dict(raw, path)


def load_resolved(path: str | Path) -> ExperimentConfig:
    """A run directory's config.toml, written by this cifarlab or by one before a key was renamed."""
    return from_dict(upgrade_renamed(read_toml(Path(path), "run config", "runs/fast-baseline/seed0/config.toml")), path,
                     recorded=True)


def with_overrides(cfg: ExperimentConfig, overrides: typing.Sequence[str]) -> ExperimentConfig:
    """`cfg` with `section.key=value` overrides applied, checked as a file's would be."""
    raw = to_dict(cfg)
    for item in overrides:
        set_dotted(raw, *parse_override(item))
    return from_dict(raw)


def load_file_or_run(path: str | Path, overrides: typing.Sequence[str] = ()) -> ExperimentConfig:
    """The resolved config of an experiment file (with `overrides`), or of a run directory: the
    config.toml it trained with."""
    if Path(path).is_dir():
        if overrides:
            raise ConfigError(f"--set applies to an experiment file, not to the run directory {path}")
        if not (Path(path) / "config.toml").exists():
            raise ConfigError(f"{path} is not a run directory (no config.toml); give an experiment file or a run directory")
        return load_resolved(Path(path) / "config.toml")
    return load(path, overrides)


def read_toml(path: Path, kind: str, example: str) -> dict:
    """The table in the TOML file at `path`, or a one-line ConfigError naming the `kind` of file
    expected ("experiment", "study") and an `example` of one."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{kind} file not found: {path}") from None
    except IsADirectoryError:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(f"{path} is a directory; {article} {kind} is a TOML file, e.g. {example}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def read_toml_chain(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"`extends` cycle: {' -> '.join(str(p) for p in (*seen, path))}")
    raw = read_toml(path, "experiment", "experiments/fast/baseline.toml")
    if "variants" in raw and "experiment" in raw:   # a study file where an experiment was expected
        names = [v.get("name", "?") for v in raw["variants"] if isinstance(v, dict)]
        raise ConfigError(f"{path} is a study file (experiment and [[variants]]), not an experiment: run it with "
                          f"`cifarlab study run {path.name}`, or name one variant as {path.name}:VARIANT where a "
                          f"command takes one (`show config`); its variants: {', '.join(map(str, names))}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: `extends` must be a file path string")
    if not (path.parent / parent).exists():
        raise ConfigError(f"{path}: extends = {parent!r}, but {(path.parent / parent).resolve()} does not exist "
                          "(the path is relative to this file's folder)")
    base = read_toml_chain(path.parent / parent, (*seen, path))
    base.pop("name", None)  # a child is its own experiment
    return merge(base, raw)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or ("." not in key and key.strip() != "name"):
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. optim.lr=0.01 (or name=NAME)")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # bare words such as sgd or cifar100
    return key.strip(), value


def set_dotted(raw: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {p!r} is not a section")
    node[leaf] = value


def from_dict(raw: dict, source: str | Path | None = None, recorded: bool = False,
              needs: typing.Collection[str] | None = None) -> ExperimentConfig:
    """The config of a table of sections of keys: presets applied, registry names checked, then
    the schema's range checks and rules (on construction). `source`: the file it was read from,
    named in a plug-in's import error (a run read back without its plug-in on the path).
    `recorded`: a config a run already trained with (its config.toml, model.pt, a database row),
    accepted when the run began: the rules on which keys an entry reads (`check_readers`), added
    since, do not refuse it. `needs` (with `recorded`): the only sections whose registry names must
    resolve (a trained network needs its model and method, not its loss or augmentations), so a
    plug-in that cannot be imported here refuses the config only where a needed name is missing;
    the config keeps every recorded value."""
    raw = dict(raw)
    kwargs: dict[str, Any] = {"name": coerce(raw.pop("name", "experiment"), str, "name")}
    lenient = recorded and needs is not None
    missing: list[ConfigError] = []   # plug-ins that failed to import, where `needs` lets that pass
    if "plugins" in raw:   # imported first: their registry entries may be named below
        kwargs["plugins"] = coerce(raw.pop("plugins"), tuple[str, ...], "plugins")
        for name in kwargs["plugins"]:
            try:
                import_plugin(name, f"{source}: plugins" if source else "plugins")
            except ConfigError as e:
                if not lenient:
                    raise
                missing.append(e)
    if SESSION_PLUGINS:   # --plugin's modules go into every config this process builds, so its runs' config.toml reloads
        kwargs["plugins"] = tuple(dict.fromkeys(kwargs.get("plugins", ()) + SESSION_PLUGINS))
    for section, value in raw.items():
        if section not in SECTIONS:
            owners = sections_with(str(section))
            if owners and not isinstance(value, dict):   # `epochs = 1` above any [section] header
                raise ConfigError(f"{section!r} is a key of {' and '.join(f'[{o}]' for o in owners)}, not a section: "
                                  f"write it under that section's header (on the command line: --set "
                                  f"{owners[0]}.{section}=...)")
            raise ConfigError(f"unknown config section {section!r}; valid: name, {', '.join(SECTIONS)}, plugins"
                              + did_you_mean(str(section), ["name", *SECTIONS, "plugins"]))
        if not isinstance(value, dict):
            raise ConfigError(f"{section!r} must be a table of keys")
        try:
            kwargs[section] = build_section(SECTIONS[section], section, value)
        except ConfigError as e:   # a model preset's name a plug-in that failed to import would have registered
            if missing and section in (needs or ()):
                raise with_missing(e, missing) from None
            raise
    try:
        check_names({k: v for k, v in kwargs.items() if k in needs} if lenient else kwargs)
    except ConfigError as e:
        if missing:   # a needed name a plug-in that failed to import would have registered, likely
            raise with_missing(e, missing) from None
        raise
    cfg = check_method(ExperimentConfig(**kwargs))
    return cfg if recorded else check_readers(cfg)


def with_missing(error: ConfigError, missing: list[ConfigError]) -> ConfigError:
    """`error` (a name a needed section lacks) with the config's plug-ins that could not be imported
    here, each as its own import error says, for the reader to see which one registers it."""
    return ConfigError(f"{error}; the config's plug-ins that could not be imported here: "
                       + "; ".join(str(m) for m in missing))


def check_names(sections: dict[str, Any]) -> None:
    """Every registry name among `sections` ({section: its dataclass}) is registered; else one line
    naming the key, the valid names and the closest one. Coarse labels need a registered dataset
    with superclasses."""
    for (section, key), registry in REGISTERED.items():
        if section not in sections:
            continue
        value = getattr(sections[section], key)
        if isinstance(value, tuple):   # a list of names (augment.pipeline)
            for name in value:
                if name not in registry:
                    raise ConfigError(f"{section}.{key}: {name!r} is invalid; valid: "
                                      f"{', '.join(registry.names())}" + unknown_hint(str(name), registry.names(), registry.kind))
        elif value not in registry:
            raise ConfigError(f"{section}.{key} = {value!r} is invalid; valid: {', '.join(registry.choices())}"
                              + unknown_hint(str(value), registry.choices(), registry.kind))
    data = sections.get("data")
    if data is not None and data.labels == "coarse" and not DATASETS.get(data.dataset).coarse_classes:
        coarse = [n for n in DATASETS.names() if DATASETS.get(n).coarse_classes]
        raise ConfigError(f"data.labels = 'coarse' needs a dataset with superclasses (data.dataset = "
                          f"{' or '.join(map(repr, coarse))}), got data.dataset = {data.dataset!r}; valid for it: 'fine'")


PLUGGABLE = ("model", "loss", "augmentation", "method", "dataset")   # the kinds a plug-in registers


def unknown_hint(name: str, valid, kind: str) -> str:
    """The closest valid name, or else, for a kind plug-ins register, where a plug-in's name comes
    from (a run trained with `--plugin` before plug-ins were recorded in its config needs the flag)."""
    return did_you_mean(name, valid) or ("; a plug-in's? import its module: --plugin MODULE, or plugins = "
                                         "[\"MODULE\"] in the experiment (docs/EXTENDING.md)" if kind in PLUGGABLE else "")


def changed_key(cfg: ExperimentConfig, key: str) -> tuple[Any, Any] | None:
    """(value, default) of dotted `key` where `cfg` moves it from its default, else None."""
    section, attr = key.split(".")
    value, default = getattr(getattr(cfg, section), attr), getattr(SECTIONS[section](), attr)
    return None if value == default else (value, default)


def check_method(cfg: ExperimentConfig) -> ExperimentConfig:
    """The training method's rules, as its registry entry declares them: keys another method owns
    stay at their defaults, weight averaging and Lookahead need a method of one network and one
    phase, and the method's own check. No method is named here."""
    this = METHODS.get(cfg.train.method)
    for name in METHODS.names():
        other = METHODS.get(name)
        for key in () if other is this else other.keys:
            if changed := changed_key(cfg, key):
                raise ConfigError(f"{key} is {other.label}'s; set train.method = {name!r} or leave it at {changed[1]}")
    for key, what in (("lookahead", "steps one network's weights back"), ("ema", "averages one network's weights")):
        if getattr(cfg.train, key) and not this.single:
            raise ConfigError(f"train.{key} {what}; train.method = {cfg.train.method!r} trains more than one "
                              f"(or a probe): leave train.{key} at 0 or use a method of one network")
    if this.check is not None:
        this.check(cfg)
    return cfg


def check_readers(cfg: ExperimentConfig) -> ExperimentConfig:
    """A loss's own keys (`loss.gce_q`: GCE's) stay at their defaults under another loss, and a model's
    or loss's `options` hold only the keys its registry entry says it reads (where it says): a
    typo or another loss's setting would otherwise train at the default unnoticed."""
    this = cfg.loss.name
    for name in LOSSES.names():
        for key in () if name == this else LOSSES.keys_of(name):
            if changed := changed_key(cfg, key):
                value, default = changed
                raise ConfigError(f"{key} = {value} is read by loss {name!r} only, and this config's loss is "
                                  f"{this!r}: set loss.name = {name!r} or leave {key} at {default}")
    for section, registry in (("model", MODELS), ("loss", LOSSES)):
        entry, given = getattr(cfg, section).name, getattr(cfg, section).options
        known = registry.options_of(entry)
        unread = [k for k in given if known is not None and k not in known]
        if unread:
            reads = f"its options: {', '.join(known)}" if known else "it reads no options"
            raise ConfigError(f"{section}.options.{unread[0]}: {section} {entry!r} does not read an option "
                              f"{unread[0]!r} ({reads}; a variant that switches {section}.name sets "
                              f"{section}.options = {{}} too)" + did_you_mean(unread[0], known or []))
    return cfg


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg`, once every registry name in it is checked and its model preset is known to be applied
    (for a config built in Python, not read)."""
    for name in cfg.plugins:
        import_plugin(name, "plugins")
    check_names({section: getattr(cfg, section) for section in SECTIONS})
    check_readers(check_method(cfg))
    check_preset(cfg.model)
    return cfg


def check_preset(model: ModelConfig) -> None:
    """A ModelConfig built in Python whose `name` is a preset but which keeps the dataclass default of
    every key the preset changes (the preset was never applied) is one line, not a silently
    different network: presets apply when a config is read (TOML, a dict, `cifarlab.api.config`)."""
    keys = MODELS.get(model.name).keys
    default = ModelConfig()
    changed = [k for k, v in keys.items() if coerce(v, typing.get_type_hints(ModelConfig)[k], k) != getattr(default, k)]
    if changed and all(getattr(model, k) == getattr(default, k) for k in changed):
        raise ConfigError(f"model.name = {model.name!r} is a preset whose keys ({', '.join(changed)}) this config "
                          "does not carry: a ModelConfig built in Python keeps its defaults; build the config with "
                          f"cifarlab.api.config(model={model.name!r}) or read it from a TOML file")


SESSION_PLUGINS: tuple[str, ...] = ()   # the command line's --plugin modules (`use_plugins`)


def use_plugins(names: typing.Sequence[str], where: str = "--plugin") -> None:
    """Import the command line's plug-ins and record them: every config built afterwards in this
    process names them in its `plugins` (not hashed), so a run's config.toml, model.pt and stored
    config load again without the flag."""
    global SESSION_PLUGINS
    for name in names:
        import_plugin(name, where)
    SESSION_PLUGINS = tuple(dict.fromkeys(names))   # this command's: a later in-process command sets its own


def import_plugin(name: str, where: str) -> None:
    """Import a plug-in module (it registers models, losses, augmentations or methods); one line if
    it cannot be imported or fails while it is (a syntax error, a name registered twice)."""
    import importlib
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: a plug-in is a module name such as 'mylab.models'; got {name!r}")
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and e.name != name and not name.startswith(e.name + "."):   # found: a module it imports is missing
            raise ConfigError(f"{where}: plug-in module {name!r} imports {e.name!r}, which is not installed "
                              f"({e}); install it (pip install ...) or put it on PYTHONPATH") from None
        hint = (f"; give the module's dotted name (e.g. {name[:-3].replace('/', '.')!r}), not a file path"
                if name.endswith(".py") or "/" in name else "")
        raise ConfigError(f"{where}: plug-in module {name!r} cannot be imported ({e}); put its package on "
                          f"PYTHONPATH (e.g. PYTHONPATH=. from the folder that holds it) or install it{hint}") from None
    except Exception as e:   # the plug-in's own error: one line naming the module, not a traceback
        first = (str(e).splitlines() or [""])[0][:300]
        at = f" at line {e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
        raise ConfigError(f"{where}: plug-in module {name!r} failed while importing{at} "
                          f"({type(e).__name__}: {first})") from None


def build_section(cls: type, section: str, values: dict) -> Any:
    hints = typing.get_type_hints(cls)
    if section == "model" and "name" in values:  # a model preset supplies the keys not set here
        name = coerce(values["name"], str, "model.name")
        if name not in MODELS:
            raise ConfigError(f"model.name = {name!r} is invalid; valid: {', '.join(MODELS.names())}"
                              + unknown_hint(name, MODELS.names(), MODELS.kind))
        values = {**MODELS.get(name).keys, **values}
    out = {}
    for key, value in values.items():
        if (section, key) in RENAMED:
            new_section, new, convert = RENAMED[section, key]
            raise ConfigError(f"{section}.{key} was renamed: write {new_section}.{new} = {toml_value(convert(value))} "
                              f"instead of {section}.{key} = {toml_value(value)}")
        if (section, key) == ("augment", "flip"):
            raise ConfigError('augment.flip was replaced by augment.pipeline, the augmentations in order: write '
                              'augment.pipeline = ["flip", "translate"] (flip, then translate if augment.translate > 0)')
        if key not in hints:
            raise ConfigError(f"unknown key {section}.{key}; valid keys of [{section}]: {', '.join(hints)}"
                              + (did_you_mean(str(key), hints, lambda k: f"{section}.{k}") or elsewhere(section, str(key))))
        out[key] = coerce(value, hints[key], f"{section}.{key}")
    return cls(**out)


def sections_with(key: str) -> list[str]:
    """The sections that have a key of this name."""
    return [section for section, cls in SECTIONS.items() if key in typing.get_type_hints(cls)]


def elsewhere(section: str, key: str) -> str:
    """"; did you mean optim.lr?" for a key that exists, under that name, in another section."""
    found = [f"{other}.{key}" for other in sections_with(key) if other != section]
    return f"; did you mean {' or '.join(found)}?" if found else ""


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field's type; ints are accepted where floats are expected."""
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list of {item.__name__}, got {value!r}"
                              + (f"; on the command line a list is TOML, quoted for the shell: --set '{where}="
                                 f"{toml_value([w.strip() for w in value.strip().strip('[]').split(',') if w.strip()])}'"
                                 if isinstance(value, str) and item is str else ""))
        return tuple(coerce(v, item, where) for v in value)
    if hint is Options:   # a plug-in's own keys: a table of plain values
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where} must be a table of keys, e.g. {where} = {{ depth = 3 }}; got {value!r}")
        bad = [k for k, v in value.items() if not isinstance(v, (bool, int, float, str, list))]
        if bad:
            raise ConfigError(f"{where}.{bad[0]} must be a number, string, boolean or list; got {value[bad[0]]!r}")
        return Options(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)   # 1e400 as an int (TOML's 10**400) is inf as a float: refused below
    if isinstance(value, bool) != (hint is bool) or not isinstance(value, hint):
        raise ConfigError(f"{where} must be {hint.__name__}, got {type(value).__name__} {value!r}")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    return value


# ----------------------------------------------------------------------------- saving

def to_dict(cfg: ExperimentConfig) -> dict:
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v
    out: dict[str, Any] = {"name": cfg.name}
    if cfg.plugins:   # only when used: configs without plug-ins keep their stored form
        out["plugins"] = list(cfg.plugins)
    for section in SECTIONS:
        out[section] = {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, section)).items()}
    return out


def config_hash(cfg: ExperimentConfig) -> str:
    """Identity of an experiment's settings: a hash of the values that differ from the defaults.

    Hashing only non-default values keeps results valid when a new key is added (with a
    default that keeps the old behaviour), which is how the config grows. Changing an
    existing default therefore changes what old hashes mean: add a key instead. The name
    and the seed are left out, so the seeds of one experiment share a hash and renaming a
    variant keeps its results. So are the keys in NOT_HASHED, which say how a run executes,
    not what it computes.
    """
    d, default = to_dict(cfg), to_dict(ExperimentConfig())
    changed = {f"{section}.{k}": v for section in SECTIONS for k, v in d[section].items()
               if v != default[section][k] and (section, k) not in NOT_HASHED}
    return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:16]


def selection_hash(cfg: ExperimentConfig) -> str:
    """The identity of a run's training without its choice of weights to test (`train.select`) or
    whether it tests them (`train.test`): runs that differ only there train the same network step for
    step (a fair study's tuning run at the value it chose and that arm's run of the same seed and
    length: the test run tests the tuning run's weights, once)."""
    return config_hash(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, select="last", test=True)))


def to_toml(cfg: ExperimentConfig) -> str:
    """The fully resolved config as TOML: diffable, and loadable again with `load`."""
    lines = [f"name = {json.dumps(cfg.name)}"] + ([f"plugins = {toml_value(list(cfg.plugins))}"] if cfg.plugins else [])
    for section, values in to_dict(cfg).items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }" if v else "{}"
    return json.dumps(v)  # ints, floats and strings print the same in TOML


def diff(a: ExperimentConfig, b: ExperimentConfig) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ, as {"section.key": (a_value, b_value)}."""
    da, db = to_dict(a), to_dict(b)
    out = {}
    for section in SECTIONS:
        for k, v in da[section].items():
            if db[section][k] != v:
                out[f"{section}.{k}"] = (v, db[section][k])
    return out


def diff_lines(a: ExperimentConfig, b: ExperimentConfig, a_name: str, b_name: str) -> list[str]:
    """`section.key  a -> b` for each key whose value differs (TOML values), then a count line; a key
    outside a run's identity that only says how it executes (`NOT_HASHED` but the seed) is marked so."""
    changed = diff(a, b)
    if a.plugins != b.plugins:   # top-level, outside the hash: the modules each config imports
        changed["plugins"] = (list(a.plugins), list(b.plugins))
    width = max((len(k) for k in changed), default=0)
    # keys that say how a run executes (threads, checkpointing, logging), not what it computes: the
    # same run either way (the seed, also outside the hash, changes what is computed)
    how = [k for k in changed if (tuple(k.split(".")) in NOT_HASHED and k != "train.seed") or k == "plugins"]
    lines = [f"{key:<{width}}  {toml_value(x)} -> {toml_value(y)}" + ("   # how it runs only" if key in how else "")
             for key, (x, y) in changed.items()]
    said = f" ({len(how)} of them only how it runs, not what it computes)" if how else ""
    return lines + [f"{len(changed)} key(s) differ between {a_name} and {b_name}{said}" if changed
                    else f"no key differs between {a_name} and {b_name}"]


def key_comments(cls: type) -> dict[str, str]:
    """Each field's comment in `cifarlab.schema` (its meaning, unit and choices), continuation lines joined."""
    import inspect
    out: dict[str, str] = {}
    last = None
    for line in inspect.getsource(cls).splitlines()[1:]:
        field_match = re.match(r"\s+(\w+): [^=]+=[^#]*#\s?(.*)", line)
        more = re.match(r"\s+#\s?(.*)", line)
        if field_match:
            last = field_match.group(1)
            out[last] = field_match.group(2).strip()
        elif more and last is not None:
            out[last] += " " + more.group(1).strip()
        elif line.strip():
            last = None
    return out


def choices(section: str, key: str) -> list[str] | None:
    """The valid values of a key with a fixed set of them, from its registry or `schema.CHOICES`."""
    if (section, key) in REGISTERED:
        return REGISTERED[section, key].choices()
    return list(CHOICES[section, key]) if (section, key) in CHOICES else None


TOP_LEVEL = (   # the keys outside any section: (key, default, meaning), for `list keys` and docs/REFERENCE.md
    ("name", '"experiment"', "the experiment's name (an experiment file's default: its file name): runs go to "
     "runs/<name>/seed<k>, and reports label it so; not in the config hash"),
    ("extends", "(none)", "an experiment file only: the path, relative to this file's folder, of another "
     "experiment file whose keys this one starts from (its own keys override them; its name is not taken)"),
    ("plugins", "[]", "modules imported before the config is read (docs/EXTENDING.md): the models, losses, "
     "augmentations, methods and datasets they register become valid names; not in the config hash"),
)


def describe_keys() -> str:
    """Every key with its default and what it means, for `cifarlab list keys`; a key with a fixed
    set of values also lists them (a registry's names as registered now)."""
    lines, defaults = ["(top level)"], to_dict(ExperimentConfig())
    lines += [f"  {f'{key} = {default}':<28} # {meaning}" for key, default, meaning in TOP_LEVEL]
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}]")
        comments = key_comments(cls)
        for f in dataclasses.fields(cls):
            setting = f"{f.name} = {toml_value(defaults[section][f.name])}"
            lines.append(f"  {setting:<28} # {comments[f.name]}" if f.name in comments else f"  {setting}")
            valid = choices(section, f.name)
            if valid:
                lines.append(f"  {'':<28} #   one of: {', '.join(valid)}")
    return "\n".join(lines)

