"""MLflow tracking of a run (`train.mlflow = true`), for labs that already look there: the run's
resolved config as parameters, each epoch's metrics.jsonl scalars at their epoch, the final
accuracies, FLOPs and wall time, and config.toml / final.json as artifacts. The tracking store is
MLflow's own choice of `MLFLOW_TRACKING_URI`, else a local file store `mlruns/` in the working
folder (no server: `mlflow ui` reads it). The experiment is the run's name (a study's: its study);
needs the [mlflow] extra. metrics.jsonl and final.json stay the record; MLflow is a copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from cifarlab.errors import UserError

INSTALL = 'pip install -e ".[mlflow]"'
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "val_acc_clean", "flipped_acc_noisy",
           "flipped_acc_clean", "lr", "images_per_s")
FINAL = ("val_acc", "test_acc", "test_top5", "wall_seconds", "train_seconds", "images_per_s", "train_flops")


def check_available() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError(f"train.mlflow = true needs the mlflow package, which is not installed: {INSTALL}") from None


def flat(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and prefix == "":
            out.update(flat(v, f"{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def use_store(mlflow) -> None:
    """MLflow's own tracking URI where set, else a local file store mlruns/ (no server, no database)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(Path("mlruns").resolve().as_uri())


def logged(run_dir: Path, experiment: str) -> bool:
    """Whether MLflow already holds a finished run of `run_dir` in `experiment` (a finished run copied
    there once is not copied again)."""
    check_available()
    import mlflow
    use_store(mlflow)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return False
    where = str(run_dir)
    if "'" not in where:   # the store filters; a quote in the path it cannot escape, so compared here
        return bool(mlflow.search_runs([found.experiment_id], filter_string=f"tags.`cifarlab.run_dir` = '{where}' "
                                       "and attributes.status = 'FINISHED'", max_results=1, output_format="list"))
    runs = mlflow.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              output_format="list")
    return any(r.data.tags.get("cifarlab.run_dir") == where for r in runs)


class MlflowLog:
    def __init__(self, run_dir: Path, config: dict, experiment: str, run_name: str):
        check_available()
        import mlflow
        use_store(mlflow)
        mlflow.set_experiment(experiment)
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=run_name)
        mlflow.log_params(flat(config))
        mlflow.set_tag("cifarlab.run_dir", str(run_dir))

    def epoch(self, row: dict) -> None:
        values = {k: float(row[k]) for k in METRICS if isinstance(row.get(k), (int, float))}
        if values:
            self.mlflow.log_metrics(values, step=int(row["epoch"]))

    def close(self, final: dict | None, run_dir: Path) -> None:
        if final is not None:
            self.mlflow.log_metrics({f"final_{k}": float(final[k]) for k in FINAL
                                     if isinstance(final.get(k), (int, float))})
            for name in ("config.toml", "final.json"):
                if (run_dir / name).exists():
                    self.mlflow.log_artifact(str(run_dir / name))
        self.mlflow.end_run("FINISHED" if final is not None and not final.get("stopped") else "FAILED")

    def abort(self, err: BaseException) -> None:
        """The run ended by an exception: KILLED for an interruption, FAILED otherwise, so that the
        store shows no run left "RUNNING" and the process (a study worker) can start the next one."""
        self.mlflow.end_run("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
