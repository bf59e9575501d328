"""Report panels that need more than the results database: the augmentation grids (images drawn
through each variant's pipeline) and the run directories a feature-projection figure reads."""

from __future__ import annotations

from pathlib import Path

from cifarlab.errors import UserError


def feature_panels(study, store) -> tuple[list[Path], object, list[str]]:
    """The run directory of each variant's lowest done seed where it is on this machine, the config
    whose data they share, and the variants without one."""
    from cifarlab.report import counted_rows, latest_done
    from cifarlab.study.plan import study_spec
    done = latest_done(counted_rows(store, study_spec(study, store)))
    dirs, names, missing = [], [], []
    for v in study.variants:
        seeds = done.get(v.name, {})
        row = seeds[min(seeds)] if seeds else None
        path = Path(row["run_dir"]) if row is not None and row["run_dir"] else None
        if path is not None and (path / "checkpoint.pt").exists() and (path / "config.toml").exists():
            dirs.append(path)
            names.append(v.name)
        else:
            missing.append(v.name)
    if not dirs:
        raise UserError(f"--features: no variant of {study.name} has a done run whose directory (with its "
                        "checkpoint) is on this machine; run the report where the study trained")
    sources = {(v.config.data.dataset, v.config.data.image_size) for v in study.variants if v.name in names}
    if len(sources) > 1:
        raise UserError(f"--features: the variants train on different data ({sorted(sources)}); "
                        "one projection figure needs one test set")
    return dirs, next(v.config for v in study.variants if v.name == names[0]), missing


def augment_grids(study, out: Path, data_dir: str | None, download: bool) -> dict[str, str]:
    """variant -> grid file for each variant, when the study's variants differ in augmentation."""
    from cifarlab.data import load_dataset
    from cifarlab.data.loader import make_splits
    from cifarlab.show import augment_grid
    pipelines = {v.name: v.config.augment for v in study.variants}
    if len(set(pipelines.values())) < 2:
        return {}
    first = study.variants[0].config
    arrays = load_dataset(first.data.dataset, data_dir, download=download, progress=False,
                          image_size=first.data.image_size, label_column=first.data.label_column)
    splits = make_splits(arrays, first.data)
    grids = {}
    for v in study.variants:
        if v.config.augment.pipeline:
            grids[v.name] = f"augment_{v.name}.png"
            augment_grid(v.config, splits, out / grids[v.name], images=4, draws=4)
    return grids
