"""Command line: wires config files to data, training, benchmarks and reports.

    cifarlab run EXPERIMENT.toml [--set section.key=value ...] [--seed N] [--resume]
    cifarlab study run|status STUDY.toml [--db results/cifarlab.db] [--workers N]
    cifarlab study run STUDY.toml --executor ray [--address auto|HOST:PORT] [--threads N] [--gpus-per-run G]
    cifarlab study adopt STUDY.toml RUN_DIR ... | --from-db OTHER.db [--db results/cifarlab.db]
    cifarlab report STUDY.toml|NAME [--out reports/<name>]
    cifarlab results export --format csv [--study NAME] [--out DIR]
    cifarlab bench throughput|profile [--experiment E.toml] [--batch-size N] [--steps N]
    cifarlab data list|pack|unpack
    cifarlab show augment EXPERIMENT.toml [--out grid.png]
    cifarlab show noise EXPERIMENT.toml --set data.noise=asymmetric --set data.noise_rate=0.4 [--out noise.png]
    cifarlab list models|optimizers|schedules|augmentations|losses|methods|datasets|keys|reference
    cifarlab paper [--src docs/REPORT.src.md] [--out docs/REPORT.md] [--html docs/REPORT.html]
    cifarlab predict RUN_DIR IMAGE ... [--top-k 3]
    cifarlab export RUN_DIR --format torchscript|safetensors|onnx --out FILE
    any command: --plugin MODULE (a plug-in that registers models, losses, augmentations, methods)

Bad input prints one line `cifarlab: error: ...` and exits with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import signal
import sys
from pathlib import Path

from cifarlab.errors import FINISHING, STOP_ASKED, STOPPED_BY, UserError, finishing
from cifarlab.schema import CHOICES

TTA_CHOICES = CHOICES[("train", "tta")]   # --tta of predict and export: train.tta's values


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other input error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data root (default: $CIFARLAB_DATA, else ./data)")
    p.add_argument("--no-download", action="store_true", help="never download the official archive")


def add_db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="results/cifarlab.db", help="results database (SQLite; default %(default)s; "
                   "by convention a study keeps its own, results/STUDY/results.db)")


def add_config_args(p: argparse.ArgumentParser, what: str = "experiment TOML file, e.g. experiments/fast/baseline.toml") -> None:
    p.add_argument("experiment", help=what)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.01 (repeatable)")


def build_parser() -> Parser:
    from cifarlab import __version__
    parser = Parser(prog="cifarlab", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"cifarlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="train one experiment and print its validation and test accuracy")
    add_config_args(run, "experiment TOML file, e.g. experiments/fast/baseline.toml, or a run directory (its "
                         "config.toml, and the directory itself unless --out: `run RUN_DIR --resume`)")
    run.add_argument("--seed", type=int, help="shortcut for --set train.seed=N")
    run.add_argument("--out", help="run directory (default: runs/<name>/seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--threads", type=int, help="shortcut for --set train.threads=N (not part of the config hash)")
    run.add_argument("--hide-test", action="store_true",
                     help="print validation accuracy only, for a run that feeds a choice (final.json still "
                          "records the test accuracy, so `study adopt` can use the run)")
    add_data_args(run)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=Parser)
    tp = bench_sub.add_parser("throughput", help="training images/s: default path vs plain fp32 eager NCHW")
    tp.add_argument("--experiment", default=None, help="experiment whose model is timed (default: tutorial net)")
    tp.add_argument("--batch-size", type=int, default=None, help="default: the experiment's batch size")
    tp.add_argument("--steps", type=int, default=30, help="timed steps per configuration and round")
    tp.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    tp.add_argument("--ablate", action="store_true", help="also time the default path minus one technique at a time")
    tp.add_argument("--threads", type=int, default=0, help="CPU threads (default: the experiment's, else PyTorch's)")
    tp.add_argument("--compile", action="store_true",
                    help="also time the default path with the model under torch.compile (inductor; the first "
                         "steps compile, untimed); training itself runs eager")

    study = sub.add_parser("study", help="run a study (variants x seeds), show its progress, or adopt "
                                         "finished runs made with `cifarlab run` or kept in another database")
    study_sub = study.add_subparsers(dest="action", required=True, parser_class=Parser)
    srun = study_sub.add_parser("run", help="train the study's missing runs (finished ones are skipped, "
                                            "interrupted ones resumed), then print its status")
    sstatus = study_sub.add_parser("status", help="each variant's runs done / running / pending / failed, and the "
                                                  "time left")
    sadopt = study_sub.add_parser("adopt", help="record finished runs made elsewhere (`cifarlab run` directories "
                                                "or another database's runs) as the study runs they equal")
    for p in (srun, sstatus, sadopt):
        p.add_argument("study", help="study TOML file, e.g. studies/basic.toml")
        add_db_arg(p)
    sadopt.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                        help="finished run directories whose config and seed equal one of the study's runs")
    sadopt.add_argument("--from-db", metavar="OTHER_DB",
                        help="the done runs of this results database whose config and seed equal runs of the "
                             "study (a variant two studies share is trained once)")
    for p in (srun, sadopt):
        p.add_argument("--runs-dir", default="runs", help="where run directories and checkpoints go")
    srun.add_argument("--only", action="append", default=[], metavar="VARIANT",
                      help="run only this variant (repeatable)")
    srun.add_argument("--workers", type=int, default=1,
                      help="training processes sharing the study (default 1); each gets cores/N threads")
    sstatus.add_argument("--workers", type=int, default=1,
                         help="the processes that will train the rest: the time-left estimate is shared by N")
    sstatus.add_argument("--measure", action="store_true",
                         help="also time training steps of each network left, one thread, here and now, and "
                              "cost the rest at those rates (pause other processes first)")
    sstatus.add_argument("--measure-steps", type=int, default=5, metavar="STEPS",
                         help="timed steps per network for --measure (default 5, after 2 untimed)")
    srun.add_argument("--threads", type=int, default=0,
                      help="CPU threads per process (default: PyTorch's, or cores/N with --workers)")
    srun.add_argument("--executor", choices=("local", "ray"), default="local",
                      help="who trains the runs: local (this machine's processes, the default) or ray (one Ray "
                           "task per run, on a Ray cluster or a local Ray instance; extra [ray])")
    srun.add_argument("--address", metavar="auto|HOST:PORT",
                      help="ray: the cluster to join (auto: the one this machine belongs to); default: start a "
                           "local Ray instance on this machine's cores")
    srun.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G",
                      help="ray: GPUs each run's task reserves (default 0; with --threads N it reserves N CPUs, "
                           "default 1)")
    srun.add_argument("--no-progress", action="store_true", help="no progress bars")
    srun.add_argument("--adopt-done-elsewhere", action="store_true",
                      help="before each run, adopt the runs that another results database beside this one "
                           "(results/*/results.db) holds done with the same config and seed, instead of "
                           "training them again (as `study adopt` does; local executor)")
    srun.add_argument("--until", metavar="HH:MM|YYYY-MM-DDTHH:MM",
                      help="claim only runs expected to finish by then (local time; the finished runs' rates "
                           "of `study status`, with a margin), then stop: for a session or cluster job that "
                           "ends at a known time, so nothing is left half-trained")
    srun.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # set by --workers N
    add_data_args(srun)
    # Accepted and unused (hidden), so that one set of options serves every action in a script.
    for p in (sstatus, sadopt):
        p.add_argument("--data-dir", help=argparse.SUPPRESS)
        p.add_argument("--no-download", action="store_true", help=argparse.SUPPRESS)
        p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    sstatus.add_argument("--runs-dir", default="runs", help=argparse.SUPPRESS)
    # What an action lacks reads as its default, so that cmd_study reads one namespace.
    defaults = {"run_dirs": [], "from_db": None, "runs_dir": "runs", "only": [], "workers": 1, "threads": 0,
                "measure": False, "measure_steps": 5, "executor": "local", "address": None, "gpus_per_run": 0.0,
                "no_progress": False, "worker": False, "adopt_done_elsewhere": False, "data_dir": None,
                "no_download": False, "until": None}
    for p in (srun, sstatus, sadopt):
        p.set_defaults(**{k: v for k, v in defaults.items() if not any(a.dest == k for a in p._actions)})

    report = sub.add_parser("report", help="write reports/<study>/README.md and figures from the database")
    report.add_argument("study", help="study TOML file, or a name under studies/")
    add_db_arg(report)
    report.add_argument("--out", help="output folder (default: reports/<study name>)")
    report.add_argument("--features", action="store_true",
                        help="also project each variant's test features (its lowest seed's run directory, where "
                             "this machine has it under --runs-dir's paths) on two principal components; needs "
                             "the data")
    report.add_argument("--grids", action="store_true",
                        help="also draw each variant's augmentation (a grid of training images and augmented "
                             "draws) where the variants' pipelines differ; needs the data")
    add_data_args(report)

    results = sub.add_parser("results", help="export the results database, or compare it with another")
    results.add_argument("action", choices=["export", "compare", "index"],
                         help="export: CSV files; compare: pair its done runs with --against's, run for run; "
                              "index: results/README.md, a table of every study under results/")
    results.add_argument("--format", choices=["csv"], default="csv")
    results.add_argument("--study", help="only this study, by name or TOML file; a file adds a `current` column "
                                         "(1: counted by its report, 0: a superseded config) (default: all)")
    results.add_argument("--out", help="export: output folder (default results/export); index: the README to write "
                                        "(default results/README.md)")
    results.add_argument("--against", metavar="DB", help="compare: the other database (e.g. a replicate on a GPU)")
    results.add_argument("--metric", choices=["test", "val"],
                         help="compare: which accuracy (default: test; val for a selection study's file)")
    add_db_arg(results)

    tta = bench_sub.add_parser("tta", help="time-to-accuracy of a recipe: wall time, test accuracy, "
                                           "when validation accuracy crossed thresholds")
    add_config_args(tta)
    tta.add_argument("--seeds", type=int, default=3, help="runs, with seeds 0..N-1")
    tta.add_argument("--thresholds", default="0.73,0.88,0.94", help="validation accuracies to time, comma-separated")
    tta.add_argument("--out", default="runs/bench", help="where the runs go")
    tta.add_argument("--progress", action="store_true", help="show the per-run progress bar")
    add_data_args(tta)

    prof = bench_sub.add_parser("profile", help="where a training step's time goes, operator by operator")
    prof.add_argument("--experiment", default=None, help="experiment whose model is profiled (default: tutorial net)")
    prof.add_argument("--batch-size", type=int, default=None, help="default: the experiment's batch size")
    prof.add_argument("--steps", type=int, default=5, help="profiled steps (after as many timed ones)")
    prof.add_argument("--threads", type=int, default=0, help="CPU threads (default: PyTorch's)")
    prof.add_argument("--rows", type=int, default=25, help="operators listed")

    peak = bench_sub.add_parser("peak", help="the matrix-multiply rate this CPU or GPU reaches (TFLOP/s, bf16 and "
                                             "fp32): the ceiling a training run's TFLOP/s compares with")
    peak.add_argument("--size", type=int, default=2048, help="side of the square matrices multiplied")
    peak.add_argument("--seconds", type=float, default=3.0, help="time spent per precision")
    peak.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    aug = bench_sub.add_parser("augment", help="seconds per epoch each augmentation of an experiment's pipeline "
                                                "takes, beside an epoch's training time")
    add_config_args(aug)
    aug.add_argument("--steps", type=int, default=5, help="training steps timed for the epoch's training time")
    aug.add_argument("--images", type=int, default=45_000, help="images per epoch (default 45,000: CIFAR's training split)")
    aug.add_argument("--rounds", type=int, default=3, help="timed rounds; the median is reported")
    aug.add_argument("--threads", type=int, default=0,
                     help="CPU threads (shortcut for --set train.threads=N; default: the experiment's, else PyTorch's)")

    data = sub.add_parser("data", help="the datasets found under the data root; pack or unpack the lossless format")
    data_sub = data.add_subparsers(dest="data", required=True, parser_class=Parser)
    add_data_args(data_sub.add_parser("list", help="each dataset: where it was found (or every place tried), "
                                                   "its sizes and classes, whether its cache is valid"))
    pk = data_sub.add_parser("pack", help="write an npz (keys train_images, train_labels, test_images, "
                                          "test_labels, classes) as a lossless pack folder")
    pk.add_argument("npz", help="input .npz")
    pk.add_argument("out", help="pack folder to write (manifest.json + parts)")
    pk.add_argument("--parts", type=int, default=2, help="number of xz parts (default 2)")
    up = data_sub.add_parser("unpack", help="decode a pack folder to an npz, written only if every SHA-256 matches")
    up.add_argument("folder", help="pack folder (manifest.json + parts)")
    up.add_argument("npz", help="output .npz")

    show = sub.add_parser("show", help="what a config does: its resolved keys and differences, FLOPs, "
                          "pictures of its augmentations, noise and features")
    show_sub = show.add_subparsers(dest="show", required=True, parser_class=Parser)
    grid = show_sub.add_parser("augment", help="a grid of a few training images and augmented draws of each")
    add_config_args(grid)
    grid.add_argument("--out", default="augment.png", help="image file to write: PNG, or the format its suffix names (pdf, svg, jpg) (default augment.png)")
    grid.add_argument("--images", type=int, default=6, help="images, one per class (default 6)")
    grid.add_argument("--draws", type=int, default=5, help="augmented draws per image (default 5)")
    add_data_args(grid)
    noise = show_sub.add_parser("noise", help="the label noise of a config: flip rate drawn, per class, and "
                                "the transition matrix asked for and drawn (a heat map)")
    add_config_args(noise)
    noise.add_argument("--out", default="noise.png", help="image file to write: PNG, or the format its suffix names (default noise.png)")
    add_data_args(noise)
    flops = show_sub.add_parser("flops", help="a config's training compute before it runs: parameters, FLOPs "
                                "per training image (forward + backward) and per run")
    add_config_args(flops)
    conf = show_sub.add_parser("config", help="the resolved config an experiment file (or a run directory) "
                               "trains with, as TOML; with a second one, only the keys whose values differ")
    conf.add_argument("experiment", help="experiment TOML file, a run directory (its config.toml), or "
                      "STUDY.toml:VARIANT (as the study declares it, before any tuned choice)")
    conf.add_argument("other", nargs="?", help="a second one of those to compare with")
    conf.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a key of the first config, e.g. --set optim.lr=0.01 (repeatable)")
    feats = show_sub.add_parser("features", help="test images' features of trained runs, projected by PCA, "
                                "coloured by class (e.g. a SupCon and a cross-entropy encoder side by side)")
    feats.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories with a checkpoint")
    feats.add_argument("--out", default="features.png", help="image file to write: PNG, or the format its suffix names (default features.png)")
    feats.add_argument("--images", type=int, default=2000, help="test images projected (default 2000)")
    add_data_args(feats)

    paper = sub.add_parser("paper", help="write the project report (docs/REPORT.md and a single-file HTML) from "
                                         "its hand-written source, every number read from the results databases")
    paper.add_argument("--src", default="docs/REPORT.src.md", help="the source: Markdown with references "
                       "(docs/PAPER.md)")
    paper.add_argument("--out", default="docs/REPORT.md", help="the Markdown report to write")
    paper.add_argument("--html", default=None, help="the HTML report to write, figures embedded (default: --out "
                                                    "with the suffix .html, docs/REPORT.html for the default --out)")
    paper.add_argument("--results", default="results", help="folder of the studies' results (STUDY/results.db)")
    paper.add_argument("--studies", default="studies", help="folder of the study files")

    lst = sub.add_parser("list", help="list registry entries or config keys; `reference` prints docs/REFERENCE.md")
    lst.add_argument("what", choices=["models", "optimizers", "schedules", "augmentations", "losses", "methods",
                                      "datasets", "keys", "reference"])
    pred = sub.add_parser("predict", help="the top classes of image files (PNG, JPEG) under a finished run's model")
    pred.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's directory (it holds model.pt), or a "
                      "file `cifarlab export --format safetensors` wrote")
    pred.add_argument("images", metavar="IMAGE", nargs="+", help="image files; resized to the model's input size")
    pred.add_argument("--top-k", type=int, default=3, help="classes printed per image (default 3)")
    pred.add_argument("--tta", choices=TTA_CHOICES,
                      help="test-time augmentation (default: the run's train.tta)")
    cmp = sub.add_parser("compare", help="finished runs of one setting against another's, paired by seed: each "
                         "side's mean, std and 95 %% interval, the paired difference with its interval and p")
    cmp.add_argument("runs", metavar="RUN", nargs="+", help="finished run directories of one setting at several "
                     "seeds, or a folder holding them (runs/<name>: its seed* directories)")
    cmp.add_argument("--reference", metavar="RUN", nargs="+", required=True,
                     help="the other setting's run directories, or a folder holding them")
    cmp.add_argument("--metric", choices=["val_acc", "test_acc"], default="test_acc",
                     help="what to compare (default test_acc; choose settings on val_acc)")
    exp = sub.add_parser("export", help="write a finished run's model as TorchScript or ONNX (uint8 images in, "
                         "logits out, preprocessing inside) or its weights and metadata as safetensors")
    exp.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's directory (it holds model.pt)")
    exp.add_argument("--format", required=True, help="torchscript | safetensors | onnx (onnx, safetensors: "
                     "pip install 'cifarlab[export]')")
    exp.add_argument("--out", help="the file to write (default: RUN_DIR/model.torchscript.pt, "
                     "RUN_DIR/model.safetensors or RUN_DIR/model.onnx)")
    exp.add_argument("--tta", choices=TTA_CHOICES,
                     help="test-time augmentation inside the exported model (default: the run's train.tta, "
                          "so it computes what the run's test did)")
    add_plugin_option(parser)
    return parser


PLUGIN_HELP = ("import MODULE first (a plug-in: it registers models, losses, augmentations, methods or "
               "datasets; its dotted name, e.g. mylab.models, on PYTHONPATH; docs/EXTENDING.md); repeatable")


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    """--plugin MODULE on every command, before or after it (`cifarlab --plugin m run ...` or
    `cifarlab run ... --plugin m`)."""
    parser.add_argument("--plugin", action="append", default=None, metavar="MODULE", dest="plugins_first",
                        help=PLUGIN_HELP)
    stack = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    while stack:
        for child in stack.pop().choices.values():
            subs = [a for a in child._actions if isinstance(a, argparse._SubParsersAction)]
            if subs:
                stack += subs
            else:
                child.add_argument("--plugin", action="append", default=None, metavar="MODULE", dest="plugins",
                                   help=PLUGIN_HELP)


def load_plugins(args: argparse.Namespace) -> None:
    """Import the --plugin modules (and those a parent process passed on in CIFARLAB_PLUGINS, so a
    study's workers know the same names), record them in the configs built from here on
    (`config.use_plugins`), and pass them on to the processes this one starts."""
    from cifarlab.config import use_plugins
    inherited = [n for n in os.environ.get("CIFARLAB_PLUGINS", "").split(",") if n]
    names = list(dict.fromkeys(inherited + (getattr(args, "plugins_first", None) or [])
                               + (getattr(args, "plugins", None) or [])))
    use_plugins(names)   # and every config built from here on names them: its run reloads without --plugin
    if names:
        os.environ["CIFARLAB_PLUGINS"] = ",".join(names)


def flops_rate(final: dict) -> str:
    """"1.234 PFLOP at 0.31 TFLOP/s": the run's training FLOPs and the rate its training achieved."""
    flops, seconds = final.get("train_flops"), final.get("train_seconds")
    if not flops or not seconds:
        return "FLOPs unrecorded"
    from cifarlab.flops import amount
    return f"{amount(flops)} at {flops / seconds / 1e12:.2f} TFLOP/s"


def cmd_run(args: argparse.Namespace) -> int:
    from cifarlab import config as C
    from cifarlab.runs import RunDir, ensure_writable, remove_made
    from cifarlab.train import train

    if Path(args.experiment).is_dir() and (Path(args.experiment) / "config.toml").exists():
        # a run directory: its config, and (without --out) the directory itself: `run RUN_DIR --resume`
        args.out = args.out or args.experiment
        args.experiment = str(Path(args.experiment) / "config.toml")
    if args.threads is not None:
        args.overrides.append(f"train.threads={args.threads}")
    seeded = [o for o in args.overrides if o.partition("=")[0].strip() == "train.seed"]
    if args.seed is not None and seeded and C.parse_override(seeded[-1])[1] != args.seed:
        raise UserError(f"the seed is given twice, --seed {args.seed} and --set {seeded[-1]}; give it once")
    # everything that can be refused without the data is checked before it loads
    cfg = C.load(args.experiment, list(args.overrides) + ([f"train.seed={args.seed}"] if args.seed is not None else []))
    if cfg.train.device == "cuda":   # before the run directory is made
        from cifarlab.runtime import setup
        setup(cfg.train)
    warn_schedule(cfg)
    if cfg.train.mlflow:   # a missing extra is refused before the run directory exists
        from cifarlab.tracking import check_available
        check_available()
    if args.hide_test and cfg.data.val_size == 0:
        raise UserError("--hide-test needs a validation split to choose on: data.val_size is 0; set it > 0")
    from cifarlab.distributed import from_env
    world = from_env()  # under torchrun: rank 0 alone writes and prints
    run = RunDir(Path(args.out)) if args.out else RunDir.for_config(cfg)
    if run.checkpoint_path.exists() and not args.resume:
        raise run.held(cfg, "pass --resume", "--out DIR, or --set name=NAME")
    final = run.finished(cfg) if args.resume else None
    if final is not None:   # nothing left to train
        if world.writes:
            from cifarlab.train import copy_record
            copied = copy_record(cfg, run, final)
            print(f"{run.path} holds a finished run of these settings (final.json): nothing to resume, nothing "
                  "rewritten" + (f" (its recorded epochs copied to {' and '.join(copied)})" if copied else "")
                  + "; to train longer, start a new run with the new train.epochs", file=sys.stderr)
            print_result(cfg, final, run, args.hide_test)
        return 0
    if args.resume and not run.checkpoint_path.exists():
        raise UserError(f"--resume: {run.path} holds no checkpoint to continue"
                        + (" (it is not a run directory)" if run.path.exists() else " (it does not exist)")
                        + "; give --out the run's directory, or leave out --resume to start a new run")
    made = ensure_writable(run.path, "--out") if world.writes else []
    try:
        cfg, splits = load_experiment(args, args.seed, progress=not args.no_progress and world.writes)
        try:
            final = train(cfg, splits, run, resume=args.resume, progress=not args.no_progress)
        finally:
            from cifarlab.distributed import shutdown
            shutdown(world)
    except BaseException:   # refused before anything was written (no data, say): no empty folder left
        remove_made(made)   # (only folders this command made, only while empty)
        raise
    if world.writes:
        print_result(cfg, final, run, args.hide_test)
    return 0


def print_result(cfg, final: dict, run, hide_test: bool) -> None:
    """`cifarlab run`'s result line (and its warnings) from a finished run's final metrics."""
    val = f"val {final['val_acc']:.4f}  " if final["val_acc"] is not None else ""
    test = "" if hide_test or final["test_acc"] is None else f"test {final['test_acc']:.4f}  "
    whole = float(cfg.train.epochs).is_integer() or final.get("steps") is None
    length = (f"{final['epochs']} epoch" + ("" if final["epochs"] == 1 else "s") if whole
              else f"{cfg.train.epochs:g} epochs: {final['steps']} step(s)")   # a fraction ends mid-epoch
    print(f"{cfg.name} seed {cfg.train.seed}: {val}{test}"
          f"({length}, {final['wall_seconds']:.1f} s, {final['images_per_s']:.0f} img/s, "
          f"{flops_rate(final)})  -> {run.path}")
    if final.get("stopped"):
        print(f"stopped early: {final['stopped']}")
    from cifarlab.stats import chance_warning
    warning = chance_warning(final, run.read_metrics(), hide_test)
    if warning:
        print(f"cifarlab: warning: {warning}", file=sys.stderr)


def warn_schedule(cfg, where: str = "") -> None:
    from cifarlab.optim import end_of_schedule_warning
    message = end_of_schedule_warning(cfg.schedule, cfg.train.epochs)
    if message:
        print(f"cifarlab: warning: {where}{message}", file=sys.stderr)


def warn_study(study) -> None:
    for variant in study.variants:
        warn_schedule(variant.config, f"variant {variant.name}: ")


def cmd_study(args: argparse.Namespace) -> int:
    from cifarlab.results import open_store
    from cifarlab.study import (DataCache, adopt_database, adopt_run, find_study, load_study, plan_runs, run_study,
                                status_table)
    from cifarlab.study.adopt import adopt_elsewhere

    check_db_path(args.db, create=args.action != "status")
    if args.from_db:
        check_db_path(args.from_db, "--from-db")
    if args.workers < 1 or args.threads < 0:
        raise UserError(f"--workers must be >= 1 and --threads >= 0, got {args.workers} and {args.threads}")
    if args.measure_steps < 1:
        raise UserError(f"--measure-steps must be >= 1 (timed steps per network), got {args.measure_steps}")
    if args.action == "adopt" and not args.run_dirs and not args.from_db:
        raise UserError("study adopt needs at least one RUN_DIR (a finished `cifarlab run` directory) "
                        "or --from-db OTHER_DB (another results database)")
    if args.executor == "ray" and args.workers != 1:
        raise UserError("--executor ray is for `study run` without --workers (Ray places the runs: each reserves "
                        "--threads CPUs and --gpus-per-run GPUs)")
    if args.executor == "ray" and args.adopt_done_elsewhere:
        raise UserError("--adopt-done-elsewhere works with the local executor; with --executor ray, adopt first: "
                        "cifarlab study adopt STUDY.toml --from-db OTHER.db")
    if args.executor == "local" and (args.address or args.gpus_per_run):
        raise UserError("--address and --gpus-per-run are for --executor ray")
    if args.gpus_per_run < 0:
        raise UserError(f"--gpus-per-run must be >= 0, got {args.gpus_per_run}")
    until = parse_until(args.until) if args.until else None
    if until is not None and args.executor == "ray":
        raise UserError("--until works with --executor local only (a Ray cluster has no session end to stop by); drop --until or use --executor local")
    if until is not None:   # its workers, and a later study of a queue, read one fixed time
        import datetime as dt
        args.until = dt.datetime.fromtimestamp(until).isoformat(timespec="minutes")
    study = load_study(find_study(args.study))
    if args.action == "run" and not args.worker:  # the parent warns once, not every worker
        warn_study(study)
    check_only(study, args.only)
    if until is not None and not args.worker:   # a time of day already past today means tomorrow's: say so
        import datetime as dt
        day = "today" if dt.date.fromtimestamp(until) == dt.date.today() else f"{dt.date.fromtimestamp(until):%A}"
        print(f"until {args.until.replace('T', ' ')} ({day}, local time): claims only runs expected to end by then")
    made = [d for d in (Path(args.runs_dir) / study.name, Path(args.runs_dir)) if not d.exists()]
    if args.action in ("run", "adopt"):  # before the database is opened or a run registered
        from cifarlab.runs import ensure_writable
        ensure_writable(Path(args.runs_dir) / study.name, "--runs-dir")
    if args.executor == "ray":  # a missing Ray or a cluster that does not answer leaves the database untouched
        from cifarlab.study.executors import check_resources, connect, default_cpus
        if not args.address:  # a local instance has this machine's cores and GPUs: refused before it starts
            import torch
            check_resources({"CPU": default_cpus(), "GPU": torch.cuda.device_count()}, args.threads or 1,
                            args.gpus_per_run, local=True)
        ray = connect(args.address, cpus=None if args.address else default_cpus())
        try:
            return run_on_ray(args, study, ray)
        finally:
            ray.shutdown()
    source = open_store(args.from_db, must_exist=True, option="--from-db") if args.from_db else None
    if args.action == "status":
        from cifarlab.study.status import status_report
        print(status_report(study, args.db, args.workers, args.study, args.measure_steps if args.measure else 0,
                            Path(args.runs_dir)))
        return 0
    if args.action == "run" and until is not None and not Path(args.db).exists():
        from cifarlab.results.store import empty_store
        from cifarlab.study.run import none_fit
        blank = empty_store(args.db)   # nothing fits and nothing to adopt: the database is not created
        line = none_fit(study, blank, until, estimator(study, blank, args.db, Path(args.runs_dir), run_threads(args)),
                        tuple(args.only),
                        (lambda: adopt_elsewhere(study, blank)) if args.adopt_done_elsewhere else None)
        if line:
            print(f"{line}; {args.db} not created")
            return 0
    existed = Path(args.db).exists()
    store = open_store(args.db)
    if args.action == "adopt":
        try:
            for path in args.run_dirs:
                print(adopt_run(study, store, Path(args.runs_dir), Path(path)))
            if source is not None:
                print("\n".join(adopt_database(study, store, source)))
        except UserError:
            if not existed:   # a refusal leaves no new database behind, nor the empty folders made for it
                store.close()
                for leftover in (Path(args.db), Path(f"{args.db}-wal"), Path(f"{args.db}-shm")):
                    leftover.unlink(missing_ok=True)
                for folder in made:
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise
        return 0
    if not args.worker and not args.adopt_done_elsewhere:   # with it, they are adopted, not warned of
        from cifarlab.study.adopt import elsewhere_note
        note = elsewhere_note(study, store, Path(args.db), args.study, args.db)
        if note:
            print(f"cifarlab: warning: {note}", file=sys.stderr)
    if args.workers > 1:
        plan_runs(study, store, tuple(args.only))  # a bad --only fails here, once, not in every worker
        return run_workers(args, study.name)
    data = DataCache(args.data_dir, not args.no_download, not args.no_progress)
    finished = run_study(study, store, data, Path(args.runs_dir), progress=not args.no_progress,
                         only=tuple(args.only), threads=args.threads,
                         adopt=(lambda: adopt_elsewhere(study, store)) if args.adopt_done_elsewhere else None,
                         until=until, estimate=until and estimator(study, store, args.db, Path(args.runs_dir),
                                                                   run_threads(args)))
    print(f"study {study.name}: {finished} run(s) finished by this process")
    if not args.worker:   # a worker's parent prints the table once, when every worker is done
        print(status_table(study, store))
    return 0


def run_threads(args: argparse.Namespace) -> int:
    """The threads each run of `study run` trains with: --threads; else with --workers N the cores
    shared among them (`executors.worker_threads`); else PyTorch's default, which a run keeps."""
    import torch

    from cifarlab.study.executors import worker_threads
    return worker_threads(args.threads, args.workers) if args.threads or args.workers > 1 else torch.get_num_threads()


def estimator(study, store, db: str, runs_dir: Path, threads: int | None = None):
    """`study run --until`'s estimate: the seconds each run of the study still needs on this machine
    (one that takes a finished sibling's training counts nothing only where its files are here);
    where no finished run of the study ran here, each network is also timed here with the threads a
    run will have (`status.seconds_left`)."""
    import torch

    from cifarlab.runtime import machine_name
    from cifarlab.study.status import seconds_left, sibling_databases
    machine = machine_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    shared = runs_dir / study.name / "_shared"
    return lambda keys=None: seconds_left(study, store, machine, sibling_databases(db), shared, threads, keys)


def parse_until(text: str) -> float:
    """`--until`: HH:MM (the next such time: today, or tomorrow once it has passed today) or
    YYYY-MM-DDTHH:MM, local time, as a UNIX time; one line if it is not one of those or has passed."""
    import datetime as dt
    now = dt.datetime.now()
    try:
        if len(text) <= 5:
            when = dt.datetime.combine(now.date(), dt.time.fromisoformat(text.zfill(5)))
            when += dt.timedelta(days=1) if when <= now else dt.timedelta()
        else:
            when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--until {text!r} is not a time; give HH:MM or YYYY-MM-DDTHH:MM, local time") from None
    if when.tzinfo is not None:
        when = when.astimezone().replace(tzinfo=None)
    if when <= now:
        raise UserError(f"--until {text} has passed (it is {now:%Y-%m-%d %H:%M} here); give a later time")
    return when.timestamp()


def check_db_path(db: str, option: str = "--db", create: bool = False) -> None:
    """One line for a database path that is a folder, or (`create`: a command that may make the
    database) whose folder does not exist: cifarlab makes no folders for a database."""
    path = Path(db)
    if path.is_dir():
        raise UserError(f"{option} {db} is a folder; give the database file, e.g. {path / 'results.db'}")
    if create and not path.exists() and not path.parent.is_dir():
        raise UserError(f"{option} {db}: the folder {path.parent} does not exist; create it first "
                        f"(mkdir -p {path.parent}) or give a database in an existing folder")


def check_only(study, only: list[str]) -> None:
    """--only names variants of the study, checked before a database is opened."""
    from cifarlab.errors import did_you_mean
    names = [v.name for v in study.variants]
    for name in only:
        if name not in names:
            raise UserError(f"--only {name!r} is not a variant of {study.name}; valid: {', '.join(names)}"
                            + did_you_mean(name, names))


def run_on_ray(args: argparse.Namespace, study, ray) -> int:
    """`study run --executor ray`: this process is the driver; each run is one Ray task."""
    from cifarlab.results import open_store
    from cifarlab.study import status_table
    from cifarlab.study.executors import check_resources
    from cifarlab.study.run import drive_ray

    cpus = args.threads or 1
    if args.address:
        check_resources(ray.cluster_resources(), cpus, args.gpus_per_run, local=False)
    store = open_store(args.db)
    print(f"study {study.name}: Ray executor, each run {cpus} CPU(s) and {args.gpus_per_run:g} GPU(s)", flush=True)
    finished, failed = drive_ray(ray, study, store, Path(args.runs_dir), only=tuple(args.only),
                                 data_dir=args.data_dir, download=not args.no_download, cpus_per_run=cpus,
                                 gpus_per_run=args.gpus_per_run)
    print(f"study {study.name}: {finished} run(s) finished on Ray" + (f", {failed} failed" if failed else ""))
    print(status_table(study, store))
    return 1 if failed else 0


def run_workers(args: argparse.Namespace, name: str) -> int:
    """`study run --workers N` (`cifarlab.study.executors.spawn_workers`)."""
    from cifarlab.study.executors import spawn_workers
    code = spawn_workers(args.study, args.db, args.runs_dir, args.workers, args.threads, tuple(args.only),
                         args.data_dir, not args.no_download, name, args.adopt_done_elsewhere, args.until)
    from cifarlab.results import open_store
    from cifarlab.study import find_study, load_study
    from cifarlab.study.status import status_table
    print(status_table(load_study(find_study(args.study)), open_store(args.db), args.workers))
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from cifarlab.report import write_report
    from cifarlab.report.panels import augment_grids, feature_panels
    from cifarlab.results import open_store
    from cifarlab.study import find_study, load_study

    path = find_study(args.study)
    study = load_study(path)
    out = Path(args.out) if args.out else Path("reports") / study.name
    from cifarlab.results.store import require_database, require_runs
    from cifarlab.runs import ensure_writable
    check_db_path(args.db)
    require_database(args.db)       # neither a missing database, one without the study's runs, nor an
    require_runs(open_store(args.db, must_exist=True), study.name, args.db,   # unwritable folder leaves a trace
                 f"run `cifarlab study run {path} --db {args.db}` first, or give the database it wrote")
    ensure_writable(out, "--out")
    command = f"cifarlab report {path} --db {args.db}" + (f" --out {args.out}" if args.out else "")
    grids = {}
    if args.grids:
        grids = augment_grids(study, out, args.data_dir, not args.no_download)
        command += " --grids" + (f" --data-dir {args.data_dir}" if args.data_dir else "")
    store = open_store(args.db, must_exist=True)
    features = None
    if args.features:
        from cifarlab.show import features_figure
        dirs, first, missing = feature_panels(study, store)
        features = {"file": "features.png", "missing": missing}
        features_figure(dirs, splits_for(first, args, False), out / features["file"])
        command += " --features" + (f" --data-dir {args.data_dir}" if args.data_dir and not args.grids else "")
    from cifarlab.study.plan import current_runs, plan, study_spec
    p = plan(study, store)   # once, for the report and the note below
    readme = write_report(store, study_spec(study, store, p), out, command, grids, features)
    print(f"wrote {readme}")
    current = current_runs(study, store, p)
    rows = [r for r in store.runs(study.name) if (r["experiment"], r["config_hash"], r["seed"]) in current]
    if not any(r["status"] == "done" for r in rows):   # a study just started, or only superseded runs done
        print(f"cifarlab: note: none of the {len(rows)} run(s) the study file plans now in {args.db} has finished yet, "
              f"so the report holds no result; `cifarlab study status {path} --db {args.db}` shows their progress",
              file=sys.stderr)
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from cifarlab.results.export import export_csv
    from cifarlab.results import open_store

    takes = {"export": ("--out",), "compare": ("--against", "--metric"), "index": ("--out",)}
    given = [opt for opt, value in (("--out", args.out), ("--against", args.against), ("--metric", args.metric))
             if value is not None]
    for opt in given:
        if opt not in takes[args.action]:
            users = " and ".join(a for a, opts in takes.items() if opt in opts)
            raise UserError(f"results {args.action} takes no {opt} (it is for results {users})")
    if args.action == "index":
        from cifarlab.results.index import write_index
        out = Path(args.out or Path("results") / "README.md")
        print(f"wrote {write_index(out.parent, Path('studies'), out)}")
        return 0
    check_db_path(args.db)
    if args.against:
        check_db_path(args.against, "--against")
    name, current, selection = args.study, None, False
    if args.study is not None and args.study.endswith(".toml"):  # a study file: mark its current configs
        from cifarlab.study import find_study, load_study

        from cifarlab.study.plan import current_runs
        study = load_study(find_study(args.study))
        name, selection = study.name, study.selection
        current = current_runs(study, open_store(args.db, must_exist=True))
    if args.action == "compare":
        from cifarlab.results.compare import compare

        if not args.against:
            raise UserError("results compare needs --against DB: the database to pair this one's runs with")
        if selection and args.metric == "test":
            raise UserError(f"{args.study} is a selection study, compared on validation only; use --metric val")
        against = open_store(args.against, must_exist=True, option="--against")
        print(compare(open_store(args.db, must_exist=True), against, name, args.metric or ("val" if selection else "test")))
        return 0
    from cifarlab.results.store import require_database, require_runs
    from cifarlab.runs import ensure_writable
    require_database(args.db)
    require_runs(open_store(args.db, must_exist=True), name, args.db,
                 "give the database `cifarlab study run` wrote" + (" for that study" if name else ""))
    out = Path(args.out or Path("results") / "export")
    ensure_writable(out, "--out")
    for path in export_csv(open_store(args.db, must_exist=True), out, name, current):
        print(f"wrote {path}")
    return 0


def load_experiment(args: argparse.Namespace, seed: int | None = None, progress: bool = True):
    """Config from the experiment file and --set overrides, plus its data splits (loaded once)."""
    from cifarlab import config as C

    overrides = list(args.overrides) + ([f"train.seed={seed}"] if seed is not None else [])
    cfg = C.load(args.experiment, overrides)
    return cfg, splits_for(cfg, args, progress)


def splits_for(cfg, args: argparse.Namespace, progress: bool):
    """The data splits of a config, from --data-dir / --no-download."""
    from cifarlab.data import load_dataset
    from cifarlab.data.loader import make_splits
    arrays = load_dataset(cfg.data.dataset, args.data_dir, download=not args.no_download,
                          progress=progress, image_size=cfg.data.image_size, label_column=cfg.data.label_column)
    return make_splits(arrays, cfg.data)


def check_counts(args: argparse.Namespace, *at_least_one: str) -> None:
    """The bench commands' numeric flags: these must be >= 1 (when given), --threads >= 0."""
    for name in at_least_one:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: PyTorch's default), got {args.threads}")


def cmd_bench(args: argparse.Namespace) -> int:
    from cifarlab import bench
    if args.bench == "throughput":
        check_counts(args, "steps", "rounds", "batch_size")
        bench.throughput(args.experiment, args.batch_size, args.steps, args.rounds, args.ablate, args.threads,
                         args.compile)
        return 0
    if args.bench == "profile":
        check_counts(args, "steps", "rows", "batch_size")
        bench.profile(args.experiment, args.batch_size, args.steps, args.threads, args.rows)
        return 0
    if args.bench == "peak":
        if args.size < 16 or args.seconds <= 0 or args.threads < 0:
            raise UserError(f"--size must be >= 16, --seconds > 0 and --threads >= 0, got {args.size}, "
                            f"{args.seconds} and {args.threads}")
        bench.peak(args.size, args.seconds, args.threads)
        return 0
    if args.bench == "augment":
        from cifarlab import config as C
        check_counts(args, "steps", "images", "rounds")
        overrides = args.overrides + ([f"train.threads={args.threads}"] if args.threads else [])
        bench.augment_cost(C.load(args.experiment, overrides), args.images, args.rounds, args.steps)
        return 0
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    try:
        thresholds = [float(t) for t in args.thresholds.split(",") if t.strip()]
    except ValueError:
        thresholds = []
    if not thresholds or not all(0 <= t <= 1 for t in thresholds):
        raise UserError(f"--thresholds must be comma-separated accuracies in [0, 1] (0.94, not 94), got "
                        f"{args.thresholds!r}")
    cfg, splits = load_experiment(args, progress=args.progress)
    bench.time_to_accuracy(cfg, splits, args.seeds, thresholds, Path(args.out), args.progress)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    import numpy as np

    from cifarlab.data import DATASETS, describe, pack, resolve_data_dir, sources
    if args.data == "list":
        print(f"data root: {resolve_data_dir(args.data_dir)}")
        for name in DATASETS.choices():
            print(describe(name, args.data_dir))
        return 0
    if args.data == "pack":
        arrays = sources.load_npz(args.npz)
        plain = {"train_images": arrays.train_images, "train_labels": arrays.train_labels.astype(np.uint8),
                 "test_images": arrays.test_images, "test_labels": arrays.test_labels.astype(np.uint8),
                 "classes": np.array(arrays.classes)}
        if len(arrays.classes) > 256:
            raise UserError(f"{args.npz}: a pack stores labels as uint8, at most 256 classes; it has {len(arrays.classes)}")
        print(f"wrote {pack.pack(plain, Path(args.out), args.parts)}")
        return 0
    arrays = pack.unpack(Path(args.folder))
    out = Path(args.npz)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"{out}: all {len(arrays)} arrays match their SHA-256")
    return 0


def list_models() -> str:
    """Each model preset with its parameter count (10 classes, 32 px) and what it is."""
    from cifarlab import config as C
    from cifarlab.models import MODELS, build_model, count_parameters
    lines = [f"{'model':<16} {'parameters':>11}  (10 classes, 32 px)"]
    for name in MODELS.names():
        n = count_parameters(build_model(C.from_dict({"model": {"name": name}}).model, 10))
        lines.append(f"{name:<16} {n:>11,}  {MODELS.get(name).doc}")
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    from cifarlab.show import augment_grid
    if args.show == "features":
        return show_features(args)
    if args.show == "config":
        return show_config(args)
    if args.show == "flops":
        from cifarlab import config as C
        from cifarlab.flops import amount, classes_of, planned, size_of
        from cifarlab.models import build_model, count_parameters
        cfg = C.load(args.experiment, args.overrides)
        p = planned(cfg)
        print(f"{cfg.name}: {count_parameters(build_model(cfg.model, classes_of(cfg), size_of(cfg))):,} parameters, "
              f"{p['flops_per_image'] / 1e6:,.1f} MFLOP per training image (forward + backward), "
              f"{p['images_per_epoch']:,} images x {cfg.train.epochs:g} epochs"
              + second_phase_text(cfg)
              + f": {amount(p['train_flops'])} of training")
        return 0
    if args.show == "noise":
        from cifarlab.show import drawn_transition, noise_figure, noise_text
        cfg, splits = load_experiment(args, progress=False)
        drawn = drawn_transition(splits)
        print(noise_text(cfg, splits, drawn))
        print(f"wrote {noise_figure(cfg, splits, Path(args.out), drawn[0])}")
        return 0
    for name in ("images", "draws"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    cfg, splits = load_experiment(args, progress=False)
    print(f"wrote {augment_grid(cfg, splits, Path(args.out), args.images, args.draws)}")
    return 0


def show_config(args: argparse.Namespace) -> int:
    """`cifarlab show config A [B]`: A's resolved config as TOML, or the keys where A and B differ."""
    from cifarlab import config as C
    first = config_named(args.experiment, args.overrides)
    notes = [n for n in (tuned_note(args.experiment), tuned_note(args.other)) if n]
    if args.other is None:
        print(C.to_toml(first), end="")
    else:
        named = f"{args.experiment} (with --set {' '.join(args.overrides)})" if args.overrides else args.experiment
        print("\n".join(C.diff_lines(first, config_named(args.other), named, args.other)))
    for note in notes:
        print(f"# {note}")
    return 0


def tuned_note(name: str | None) -> str | None:
    """For STUDY.toml:VARIANT of an arm that chooses keys on validation: which, and where the choice is."""
    study_file, sep, variant = (name or "").rpartition(":")
    if not (sep and study_file.endswith(".toml")):
        return None
    from cifarlab.study.spec import study_variant
    tune = study_variant(study_file, variant).tune
    if tune is None:
        return None
    return (f"{variant} tunes {', '.join(tune.keys)} on validation: shown at the untuned value; its test "
            "runs train at the choice its results database records (`study status`, the report's Tuning section)")


def config_named(name: str, overrides=()):
    """An experiment file, a run directory, or STUDY.toml:VARIANT (the variant as its study declares
    it, budgets expanded, before any tuned choice)."""
    from cifarlab import config as C
    study_file, sep, variant = name.rpartition(":")
    if not (sep and study_file.endswith(".toml")):
        return C.load_file_or_run(name, overrides)
    from cifarlab.study.spec import variant_config
    return C.with_overrides(variant_config(study_file, variant), overrides)


def show_features(args: argparse.Namespace) -> int:
    from cifarlab import config as C
    from cifarlab.show import features_figure
    if args.images < 2:
        raise UserError(f"--images must be >= 2 (a projection needs points), got {args.images}")
    first = Path(args.run_dirs[0]) / "config.toml"
    if not first.exists():
        raise UserError(f"{args.run_dirs[0]} is not a run directory (no config.toml)")
    cfg = C.load_resolved(first)  # the data of the first run; the others must use the same dataset
    for d in args.run_dirs[1:]:
        other = Path(d) / "config.toml"
        if other.exists() and C.load_resolved(other).data != cfg.data:
            raise UserError(f"{d} was trained on other data settings than {args.run_dirs[0]}; "
                            "project runs of one dataset and split together")
    out = features_figure([Path(d) for d in args.run_dirs], splits_for(cfg, args, False), Path(args.out),
                          args.images)
    print(f"wrote {out}")
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from cifarlab.report.paper import write_paper
    html = Path(args.html) if args.html else Path(args.out).with_suffix(".html")   # beside --out, never over the committed one
    for path in write_paper(Path(args.src), Path(args.out), html, Path(args.results), Path(args.studies)):
        print(f"wrote {path}")
    return 0


def second_phase_text(cfg) -> str:
    """What `show flops` adds for a method of two phases or several networks (its registry entry says)."""
    from cifarlab.methods import METHODS, pretrain_epochs, total_epochs
    if pretrain_epochs(cfg):
        return f" (+ {total_epochs(cfg) - cfg.train.epochs:g} epochs of its second phase)"
    networks = METHODS.get(cfg.train.method).networks
    return f" ({networks} networks)" if networks > 1 else ""


def cmd_list(args: argparse.Namespace) -> int:
    from cifarlab import augment, config, losses, methods, models, optim
    from cifarlab.data import DATASETS
    if args.what == "models":
        print(list_models())
        return 0
    if args.what == "reference":
        from cifarlab.reference import markdown
        print(markdown(), end="")
        return 0
    if args.what == "augmentations":
        print("\n".join(f"{n:<14} {augment.AUGMENTS.get(n).doc}" for n in augment.AUGMENTS.names()))
        return 0
    if args.what == "losses":   # each with its docstring's first sentence and the options it reads
        for n in losses.LOSSES.names():
            doc = re.split(r": |; | \(|\. ", " ".join((losses.LOSSES.get(n).__doc__ or n).split()))[0]
            options = losses.LOSSES.options_of(n)
            print(f"{n:<14} {doc}" + (f" (options: {', '.join(options)})" if options else ""))
        return 0
    registries = {"models": models.MODELS, "optimizers": optim.OPTIMIZERS, "schedules": optim.SCHEDULES,
                  "losses": losses.LOSSES, "methods": methods.METHODS, "datasets": DATASETS}
    print(config.describe_keys() if args.what == "keys" else "\n".join(registries[args.what].names()))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cifarlab.predict import load_run, read_images, require_run_dir
    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    exported = Path(args.run_dir).is_file() and Path(args.run_dir).suffix == ".safetensors"
    if not exported:
        require_run_dir(args.run_dir)      # the run first (the first argument), then every image file,
    images = read_images(args.images)      # all before the model loads
    if exported:
        from cifarlab.predict import load_safetensors
        run = load_safetensors(args.run_dir)
    else:
        run = load_run(args.run_dir)
    k = min(args.top_k, len(run.classes))
    for path, image in zip(args.images, images):
        top = run.predict(image, tta=args.tta).top(k)[0]
        print(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in top))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from cifarlab import api

    def results(paths: list[str], option: str) -> list:
        found = []
        for given in map(Path, paths):
            held = [] if not given.is_dir() or (given / "final.json").exists() else \
                sorted(p for p in given.iterdir() if (p / "final.json").exists())
            if given.is_dir() and not (given / "final.json").exists() and not held:
                raise UserError(f"{option} {given}: no finished run in it or in its folders (each holds a "
                                "final.json); give run directories, e.g. runs/<name>/seed0")
            found += [api.load_result(p) for p in held or [given]]
        return found

    runs, reference = results(args.runs, "RUN"), results(args.reference, "--reference")
    c = api.compare(runs, reference, args.metric)
    for label, side in (("runs", runs), ("reference", reference)):
        print(f"{label}: {side[0].name}, seed(s) {', '.join(str(r.seed) for r in sorted(side, key=lambda r: r.seed))}")
    print(c)
    if c.seeds_needed is not None:
        print(f"paired seeds a difference of this size and spread needs at 80 % power: about {c.seeds_needed}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cifarlab.predict import check_export, export, load_run, suffix
    out = Path(args.out) if args.out else Path(args.run_dir) / f"model.{suffix(args.format)}"
    check_export(args.format, out, Path(args.run_dir))   # before the model loads: nothing written on a refusal
    run = load_run(args.run_dir)
    written = export(run, args.format, out, args.tta)
    tta = args.tta or run.config.train.tta
    print(f"wrote {written} ({args.format}: {run.config.name}, {len(run.classes)} classes, "
          f"{run.image_size} x {run.image_size} uint8 input, test-time augmentation {tta})")
    return 0


COMMANDS = {"predict": cmd_predict, "export": cmd_export, "compare": cmd_compare, "run": cmd_run, "study": cmd_study, "report": cmd_report, "results": cmd_results,
            "bench": cmd_bench, "data": cmd_data, "show": cmd_show, "list": cmd_list, "paper": cmd_paper}


KEY_VALUE = re.compile(r"[A-Za-z_]\w*\.\w+=.*")
STUDY_OPTIONS = {"run": ("--only", "--workers", "--threads", "--executor", "--address", "--gpus-per-run", "--until"),
                 "status": ("--workers",), "adopt": ("--from-db",)}


def take_extra(args: argparse.Namespace, extra: list[str]) -> None:
    """Arguments the command's parser did not take: RUN_DIRs after an option (`study adopt S.toml
    --db D dir`), else one line saying which command takes them, or that KEY=VALUE wants --set."""
    if args.command == "study" and args.action == "adopt" and not any(e.startswith("-") for e in extra):
        args.run_dirs += extra
        return
    if args.command == "study":
        option = next((e.split("=")[0] for e in extra if e.startswith("-")), None)
        if option is None:
            raise UserError(f"study {args.action} takes no run directories ({extra[0]!r}); only `study adopt` does")
        owners = [action for action, options in STUDY_OPTIONS.items() if option in options]
        if owners:
            raise UserError(f"study {args.action} takes no {option}; only "
                            + " or ".join(f"`study {o}`" for o in owners) + " does")
    override = next((e for e in extra if KEY_VALUE.fullmatch(e)), None)
    if override is not None and hasattr(args, "overrides"):
        raise UserError(f"unrecognized argument {override!r}: to override a config key, write --set {override}")
    command = " ".join(str(getattr(args, a)) for a in ("command", "action") if getattr(args, a, None))
    raise UserError(f"unrecognized arguments: {' '.join(extra)} (see `cifarlab {command} --help`)")


def check_experiment_arg(args: argparse.Namespace) -> None:
    """A KEY=VALUE given where the experiment file goes: say so, not "file not found"."""
    experiment = getattr(args, "experiment", None)
    if experiment and KEY_VALUE.fullmatch(experiment) and not Path(experiment).exists():
        raise UserError(f"{experiment!r} is a config override, not an experiment file: give the experiment file "
                        f"first, then --set {experiment}")


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM and SIGINT while a command runs: KeyboardInterrupt (finished epochs kept, study claims
    given back), noted in STOP_ASKED so that one swallowed where it landed is raised again at the
    next training step; during the cleanup a stop started (`errors.finishing`) only noted."""
    STOPPED_BY[0] = signum
    STOP_ASKED[0] = True
    if FINISHING[0]:
        return
    raise KeyboardInterrupt


def deliver_again(previous, unraisable) -> None:
    """`sys.unraisablehook` while a command runs: an interrupt raised where Python cannot propagate it
    (a SIGTERM or Ctrl-C landing in a weakref callback of an import, or in a `__del__`) would be
    printed as a traceback and dropped, the process training on; the signal is delivered again, to
    land in the code that runs next. Anything else goes to the `previous` hook."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):   # sent here, it would be handled here, in the hook
        import threading
        again = threading.Timer(0.05, signal.pthread_kill, (threading.main_thread().ident, STOPPED_BY[0]))
        again.daemon = True
        AGAIN.append(again)
        again.start()
    else:
        previous(unraisable)


AGAIN: list = []   # the timers `deliver_again` started: cancelled when the command returns


def main(argv: list[str] | None = None) -> int:
    """The command line: `cifarlab ...` (argv: its arguments, else sys.argv's); returns the exit code."""
    STOPPED_BY[0] = signal.SIGINT   # an earlier in-process command's SIGTERM does not name this one's Ctrl-C
    STOP_ASKED[0] = False
    previous = sys.unraisablehook
    sys.unraisablehook = functools.partial(deliver_again, previous)
    # SIGINT stays ignored where the shell ignores it (a background job)
    handlers = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)
                if sig == signal.SIGTERM or signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        return command_line(argv)
    finally:   # a command that ended meanwhile takes no signal after it (in-process callers go on
        for sig, handler in handlers.items():   # with their own handlers and no stop noted)
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        STOP_ASKED[0] = False
        sys.unraisablehook = previous
        while AGAIN:
            AGAIN.pop().cancel()


def command_line(argv: list[str] | None) -> int:
    args = None
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:
            take_extra(args, extra)
        load_plugins(args)
        check_experiment_arg(args)
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"cifarlab: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:   # `cifarlab list keys | head`: the reader left, nothing is wrong here
        try:   # no second error when the interpreter flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 128 + signal.SIGPIPE
    except OSError as e:  # a file system that refuses (read-only, full, no permission): one line, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"cifarlab: error: {where}{e.strerror or e}; check that the folder is writable and has space",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        with finishing():   # a second signal does not turn this line into a traceback
            command = (args.command, getattr(args, "action", None)) if args is not None else (None, None)
            said = {("study", "run"): "; finished epochs are saved, rerun the same command: it resumes "
                                      "unfinished runs from their checkpoints",
                    ("run", None): "; the run keeps its last checkpoint (every train.checkpoint_every epochs, "
                                   "none before the first): continue with the same command and --resume"}
            print(f"cifarlab: interrupted{said.get(command, '')}", file=sys.stderr)
            return 128 + STOPPED_BY[0]


if __name__ == "__main__":
    sys.exit(main())
