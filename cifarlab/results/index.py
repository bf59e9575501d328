"""`cifarlab results index`: results/README.md, one table row per committed study, derived only
from the results databases under results/ and the study files under studies/; the same files give
the same page, byte for byte."""

from __future__ import annotations

import math
from pathlib import Path

from cifarlab.errors import UserError


def study_rows(results: Path, studies: Path) -> list[dict]:
    """One dict per (results folder, study in its database), in folder order."""
    from cifarlab.report import counted_rows, latest_done, present, summarize, unique
    from cifarlab.report.summary import experiment_config
    from cifarlab.results.store import open_store
    from cifarlab.study import load_study
    from cifarlab.study.plan import study_spec

    out = []
    for db in sorted(results.glob("*/results.db")):
        store = open_store(db, must_exist=True)
        try:
            for name in store.studies():
                path = studies / f"{name}.toml"
                if not path.is_file():
                    continue  # a study whose file is gone: its own report still stands
                loaded = load_study(path)
                spec = study_spec(loaded, store)
                summary, rows = summarize(store, spec), counted_rows(store, spec)
                used = [r for runs in latest_done(rows).values() for r in runs.values()]
                configs = {s["experiment"]: experiment_config(rows, s["experiment"]) for s in summary}
                out.append({"folder": db.parent.name, "study": spec, "path": path, "summary": summary,
                            "configs": configs, "planned": [v.config for v in loaded.variants],
                            "machines": unique(r["machine"] for r in used),
                            "hours": math.fsum(present(r["wall_seconds"] for r in used)) / 3600,
                            "runs": len(used)})
        finally:
            store.close()
    return out


# a full stop after these does not end a sentence ("Hu et al. 2018", "e.g. flips")
ABBREVIATIONS = frozenset({"al.", "e.g.", "i.e.", "vs.", "cf.", "approx.", "Fig.", "Eq."})


def first_sentence(text: str, limit: int = 220) -> str:
    """The text up to the first full stop that ends a sentence: one followed by a space and not the
    end of an ellipsis ("a ... b") or of a word in ABBREVIATIONS."""
    text = " ".join(text.split())
    sentence = text
    for i, char in enumerate(text[:-1]):
        if char != "." or text[i + 1] != " ":
            continue
        word = text[:i + 1].rsplit(" ", 1)[-1].lstrip("(")
        if word.endswith("..") or word in ABBREVIATIONS:
            continue
        sentence = text[:i + 1]
        break
    return sentence if len(sentence) <= limit else sentence[:limit - 1].rstrip() + "…"


def study_label(spec, folder: str) -> str:
    """The study's name, and the folder its database lies in where the two differ (one study run on
    two machines into two folders gives two rows, told apart here)."""
    kind = " (selection)" if spec.selection else ""
    where = "" if folder == spec.name else f", in `{folder}/`"
    return f"`{spec.name}`{kind}{where}"


def most_noise(done: list[dict], configs: dict) -> tuple[tuple[str, float], list[dict]] | None:
    """In a study that varies label noise: the noisiest setting (highest rate) that two or more
    variants with runs train on, and those variants; None in any other study."""
    from cifarlab.report.markdown import NOISE_KINDS
    from cifarlab.report.summary import noise_setting
    by: dict[tuple[str, float], list[dict]] = {}
    for s in done:
        if configs.get(s["experiment"]) is not None:
            by.setdefault(noise_setting(configs[s["experiment"]]), []).append(s)
    shared = [k for k, v in by.items() if len(v) > 1 and k[0] != "none"]
    if len(by) < 2 or not shared:
        return None
    # at one rate, the setting with more variants; then the first kind in the noise table's order
    setting = max(shared, key=lambda k: (k[1], len(by[k]), -list(NOISE_KINDS).index(k[0])))
    return setting, by[setting]


def noisier_pending(setting: tuple[str, float], planned: list) -> str:
    """", of those with results so far" where the study plans a noisier setting for two or more of its
    variants (`planned`: their configs) that the results do not compare yet; else ""."""
    from collections import Counter

    from cifarlab.report.summary import noise_setting
    counts = Counter(noise_setting(cfg) for cfg in planned)
    return ", of those with results so far" if any(k[1] > setting[1] and n > 1 for k, n in counts.items()) else ""


def headline(spec, summary: list[dict], configs: dict | None = None, planned: list | None = None) -> str:
    """The variant with the best mean and the reference; in a label-noise study (`configs` give
    each variant's), also the best variant at the most noise, beside the one that trains like the
    reference there, since the best overall is then the clean one."""
    from cifarlab.report import interval, pm
    from cifarlab.report.figures import noise_method
    from cifarlab.report.summary import setting_name
    configs = configs or {}
    done = [s for s in summary if s["n"]]
    if not done:
        return "no runs yet"
    best = max(done, key=lambda s: s["score_mean"])
    ref = next((s for s in done if s["reference"]), None)
    def cell(s):
        ci = f" {interval(s['score_lo'], s['score_hi'])}" if s["n"] > 1 else ""
        return f"`{s['experiment']}` {pm(s['score_mean'], s['score_std'])} %{ci} (n={s['n']})"
    text = f"best {spec.label}: {cell(best)}"
    if ref is not None and ref is not best:
        text += f"; reference {cell(ref)}"
    noisiest = most_noise(done, configs)
    if noisiest is None:
        return text
    setting, there = noisiest
    top = max(there, key=lambda s: s["score_mean"])
    text += f"; at {setting_name(setting)}, the most noise{noisier_pending(setting, planned or [])}: best {cell(top)}"
    ref_cfg = configs.get(ref["experiment"]) if ref is not None else None
    if ref_cfg is not None:
        # the same method, or failing that the same but for co-teaching's forget rate (a clean
        # co-teaching reference's legend names its rate, one at the most noise may not)
        like_ref = [s for s in there if noise_method(configs[s["experiment"]]) == noise_method(ref_cfg)] or \
            [s for s in there if noise_method(configs[s["experiment"]], False) == noise_method(ref_cfg, False)]
        if like_ref and like_ref[0] is not top:
            text += f", the reference's method {cell(like_ref[0])}"
    return text


def write_index(results: Path, studies: Path, out: Path) -> Path:
    rows = study_rows(results, studies)
    if not rows:
        raise UserError(f"no results databases with a study file found under {results}/*/results.db "
                        f"(study files looked for in {studies})")
    lines = ["# Results", "",
             "Every study committed to this repository, one row each, generated from the results databases "
             "(`results/*/results.db`) and the study files (`studies/*.toml`); regenerate this page with:", "",
             "```", f"cifarlab results index --out {out}", "```", "",
             "Each study's own report (linked) has its findings, figures, config differences and provenance. "
             "A selection study chooses settings and reads validation accuracy only; every other study reads "
             "the test set once, at the end of each run. The headline is the variant with the best mean "
             "(with its 95% t-interval over seeds, clipped to 0-100 %) and the study's reference; in a "
             "label-noise study also the best variant at the most noise (of the settings with results so "
             "far, where a noisier one the study plans has none yet) and, beside it, the one that "
             "trains like the reference.", "",
             "| study | question | variants | runs | headline | ran on | process-hours | report and command |",
             "|---|---|---:|---:|---|---|---:|---|"]
    for r in rows:
        spec = r["study"]
        command = (f"`cifarlab report {r['path'].as_posix()} --db {results.as_posix()}/{r['folder']}/results.db "
                   f"--out {results.as_posix()}/{r['folder']}`")
        planned = sum(len(spec.planned(e)) for e in spec.experiments)
        lines.append(" | ".join([
            f"| {study_label(spec, r['folder'])}", first_sentence(spec.description) or "—", str(len(spec.experiments)),
            f"{r['runs']} of {planned}", headline(spec, r["summary"], r["configs"], r["planned"]),
            ", ".join(f"`{m}`" for m in r["machines"]) or "—", f"{r['hours']:.1f}",
            f"[{r['folder']}]({r['folder']}/README.md): {command} |"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out
