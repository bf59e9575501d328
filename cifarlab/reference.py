"""docs/REFERENCE.md, generated from the code: every config key (default, meaning, valid values) and
every registry's entries. `cifarlab list reference > docs/REFERENCE.md` writes it; tests/test_reference.py
fails when the committed page differs from what the code generates, so the page cannot drift."""

from __future__ import annotations

import dataclasses
import inspect

from cifarlab import config as C
from cifarlab.models import MODELS, build_model, count_parameters

HEADER = """# Reference: config keys and registries

Generated from the code by `cifarlab list reference > docs/REFERENCE.md` (the keys and their comments
in `cifarlab/schema.py`, the names and docs of each registry, a study file's keys from
`cifarlab/study/spec.py`); `tests/test_reference.py` fails when
this page and the code differ. Edit the code, then regenerate; never edit this page by hand.
`cifarlab list keys` prints the same keys in a terminal.
"""


def cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def entry_doc(entry: object) -> str:
    """The first paragraph of a registry entry's doc (an entry's `doc`, else its docstring), one line."""
    doc = getattr(entry, "doc", None) or inspect.getdoc(entry) or ""
    return cell(doc.split("\n\n")[0])


def keys_section() -> list[str]:
    lines, defaults = ["## Config keys", "",
                       "An experiment file sets a few of these under their section (`[optim]` then `lr = 0.1`); "
                       "`--set optim.lr=0.1` sets one on the command line. Values that differ from these "
                       "defaults make a run's config hash."], C.to_dict(C.ExperimentConfig())
    lines += ["", "### Top level (before any section)", "", "| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | `{cell(default)}` | {cell(meaning)} |" for key, default, meaning in C.TOP_LEVEL]
    for section, cls in C.SECTIONS.items():
        comments = C.key_comments(cls)
        lines += ["", f"### [{section}]", "", "| key | default | meaning | valid values |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            valid = C.choices(section, f.name)
            where = f" (`{C.REGISTERED[section, f.name].kind}` registry)" if (section, f.name) in C.REGISTERED else ""
            lines.append(f"| `{f.name}` | `{cell(C.toml_value(defaults[section][f.name]))}` | "
                         f"{cell(comments.get(f.name, ''))} | "
                         + (cell(', '.join(valid)) + where if valid else "") + " |")
    return lines


def models_section() -> list[str]:
    lines = ["## Models (`model.name`)", "",
             "Each name is a preset of the [model] keys; keys set beside it override the preset. "
             "Parameters for 10 classes at 32 px (`cifarlab list models`).", "",
             "| model | parameters | what it is |", "|---|---:|---|"]
    for name in MODELS.choices():
        n = count_parameters(build_model(C.from_dict({"model": {"name": name}}).model, 10))
        lines.append(f"| `{name}` | {n:,} | {entry_doc(MODELS.get(name))} |")
    return lines


def registries_section() -> list[str]:
    lines = ["## Registries", "",
             "The names each registry-valued key accepts, in registration order, with each entry's doc."]
    for (section, key), registry in C.REGISTERED.items():
        if registry is MODELS:
            continue
        lines += ["", f"### {registry.kind} (`{section}.{key}`)", "", "| name | what it does |", "|---|---|"]
        lines += [f"| `{name}` | {entry_doc(registry.get(name))} |" for name in registry.choices()]
    return lines


def study_section() -> list[str]:
    """A study file's keys: the example of `cifarlab.study.spec`'s docstring and the keys its loader
    takes (anything else is refused with the valid names)."""
    import textwrap

    from cifarlab.study import spec
    doc = inspect.getdoc(spec) or ""
    example = doc[doc.index("A study file"):doc.index("Fair comparisons")].split("\n", 1)[1]
    keys = lambda names: ", ".join(f"`{k}`" for k in names)   # noqa: E731
    return ["## Study files", "",
            "A study (`studies/NAME.toml`, [STUDIES.md](STUDIES.md)): a reference experiment, named variants and "
            "seeds, with optional groups that each ask one question (from the docstring of "
            "`cifarlab/study/spec.py`):", "", "```toml", textwrap.dedent(example).strip("\n"), "```", "",
            f"Keys of a study file: {keys(spec.STUDY_KEYS)}; of each `[[variants]]` entry: {keys(spec.VARIANT_KEYS)}; "
            f"of each `[groups.NAME]` table: {keys(spec.GROUP_KEYS)}; any other key is refused in one line naming "
            "the valid ones. The keys of fair comparisons (`tune`, `budgets`, `match`, `correction`, "
            "`more_seeds`, ...): [FAIR.md](FAIR.md)."]


def markdown() -> str:
    return "\n".join([HEADER, *keys_section(), "", *models_section(), "", *registries_section(), "",
                      *study_section()]) + "\n"
