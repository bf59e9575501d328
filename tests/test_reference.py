"""Lists in the docs come from the code: docs/REFERENCE.md is generated from the schema and the
registries and must equal what the code generates now; a key's comment that lists its values lists
exactly the valid ones; the README and docs name only registered models and existing pages."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from cifarlab import config as C
from conftest import REPO, cli_command, cli_env


def test_the_committed_reference_is_what_the_code_generates():
    # In a fresh process: what another test registered (a plug-in's model) is not the package's.
    r = subprocess.run(cli_command("list", "reference"), env=cli_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert (REPO / "docs" / "REFERENCE.md").read_text() == r.stdout, (
        "docs/REFERENCE.md differs from the code: regenerate it with `cifarlab list reference > docs/REFERENCE.md`")


def not_values(comment: str, valid: list[str]) -> list[str]:
    """The alternatives of a comment's `a | b (what b does) | c` list that start with no valid value
    (the first may have words before its value: "optimizer: sgd | adam")."""
    parts = [re.findall(r"[\w.-]+", part) for part in comment.split(" | ")]
    bad = [] if any(word in valid for word in parts[0]) else [parts[0][-1]]
    return bad + [words[0] for words in parts[1:] if words[0] not in valid]


@pytest.fixture(scope="module")
def package_choices() -> dict[str, list[str]]:
    """Each key's valid values as the package alone registers them (a fresh process: no plug-in)."""
    code = ("import json; from cifarlab import config as C; print(json.dumps({f'{s}.{f.name}': C.choices(s, f.name) "
            "for s, cls in C.SECTIONS.items() for f in C.dataclasses.fields(cls)}))")
    r = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("section, key", [(s, f.name) for s, cls in C.SECTIONS.items()
                                          for f in C.dataclasses.fields(cls) if C.choices(s, f.name)])
def test_a_comment_that_lists_a_keys_values_lists_the_valid_ones(section, key, package_choices):
    comment = C.key_comments(C.SECTIONS[section])[key]
    if " | " not in comment:
        return   # it names no values: `list keys` and REFERENCE.md print them from the code
    valid = package_choices[f"{section}.{key}"]
    missing = [v for v in valid if not re.search(rf"(?<![\w-]){re.escape(v)}(?![\w-])", comment)]
    assert not missing, f"{section}.{key}'s comment in cifarlab/schema.py lacks {missing}: {comment!r}"
    unknown = not_values(comment, valid)
    assert not unknown, f"{section}.{key}'s comment lists {unknown}, which are not valid values: {comment!r}"


def test_the_comment_check_catches_a_stale_list():
    schedules = ["constant", "step", "linear"]
    assert not_values("schedule: constant | step | onecycle | linear", schedules) == ["onecycle"]
    assert not_values("none | conv (3x3 conv, norm) | patch (conv)", ["none", "conv", "patchify"]) == ["patch"]
    assert not_values("unit: pixels/255 in [0,1] | standard: per-channel", ["unit", "standard"]) == []
    assert not_values("optimizer: sgd | adam", ["adam"]) == ["sgd"]


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_docs_name_registered_models_and_link_pages_that_exist(page):
    from cifarlab.models import MODELS
    text = page.read_text()
    named = set(re.findall(r"model\.name\s*=\s*\"?([A-Za-z0-9_]+)", text))
    named -= set(re.findall(r"register_model\(\"([A-Za-z0-9_]+)", text))   # a plug-in the page itself writes
    assert named <= set(MODELS.names()), f"{page.name} names unknown models {named - set(MODELS.names())}"
    for target in re.findall(r"\]\(((?:\.\./)?(?:docs/)?[A-Za-z_]+\.md)(?:#[^)]*)?\)", text):
        exists = (page.parent / target).exists()
        assert exists, f"{page.name} links {target}, which does not exist"


def test_the_readmes_example_experiment_and_study_load(tmp_path):
    """The README's TOML examples, placed where its text puts them (experiments/mine/, studies/)."""
    import shutil

    from cifarlab.study import load_study
    text = (REPO / "README.md").read_text()
    experiment, study = re.findall(r"```toml\n(.*?)```", text, re.S)
    for folder in ("fast", "tutorial"):
        shutil.copytree(REPO / "experiments" / folder, tmp_path / "experiments" / folder)
    (tmp_path / "experiments" / "mine").mkdir()
    (tmp_path / "experiments" / "mine" / "mine.toml").write_text(experiment)
    cfg = C.load(tmp_path / "experiments" / "mine" / "mine.toml", ["optim.lr=0.05"])
    assert cfg.name == "mine" and cfg.augment.pipeline == ("flip", "translate", "cutout")
    assert cfg.model.norm == "batch" and cfg.optim.lr == 0.05   # the vgg_bn preset, then --set
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "mine.toml").write_text(study)
    assert [v.name for v in load_study(tmp_path / "studies" / "mine.toml").variants] == ["baseline", "cutout"]


def test_the_references_example_study_loads(tmp_path):
    """REFERENCE.md's study file (the docstring of cifarlab/study/spec.py), placed in studies/ beside
    the experiments it names, is a study the loader takes."""
    import shutil

    from cifarlab.study import load_study
    text = (REPO / "docs" / "REFERENCE.md").read_text()
    example, = re.findall(r"## Study files\n.*?```toml\n(.*?)```", text, re.S)
    shutil.copytree(REPO / "experiments", tmp_path / "experiments")
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "example.toml").write_text(example)
    study = load_study(tmp_path / "studies" / "example.toml")
    assert study.name == "regularization" and study.questions == {"dropout": "Does dropout beat no regularization?"}
