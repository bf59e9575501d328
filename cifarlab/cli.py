"""Command line: wires config files to data, training, benchmarks and reports.

    cifarlab run EXPERIMENT.toml [--set section.key=value ...] [--seed N] [--resume]
    cifarlab bench throughput [--batch-size N] [--steps N]
    cifarlab list models|optimizers|schedules|augmentations|keys

Bad input prints one line `cifarlab: error: ...` and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifarlab.errors import UserError


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other input error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data root (default: $CIFARLAB_DATA, else ./data)")
    p.add_argument("--no-download", action="store_true", help="never download the official archive")


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", help="experiment TOML file, e.g. experiments/fast/baseline.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.01 (repeatable)")


def build_parser() -> Parser:
    parser = Parser(prog="cifarlab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="train one experiment and print its test accuracy")
    add_config_args(run)
    run.add_argument("--seed", type=int, help="shortcut for --set train.seed=N")
    run.add_argument("--out", help="run directory (default: runs/<name>/seed<seed>)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_data_args(run)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True, parser_class=Parser)
    tp = bench_sub.add_parser("throughput", help="training images/s: default path vs plain fp32 eager NCHW")
    tp.add_argument("--experiment", default=None, help="experiment whose model is timed (default: tutorial net)")
    tp.add_argument("--batch-size", type=int, default=None, help="default: the experiment's batch size")
    tp.add_argument("--steps", type=int, default=30, help="timed steps per configuration and round")
    tp.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")

    lst = sub.add_parser("list", help="list registry entries or config keys")
    lst.add_argument("what", choices=["models", "optimizers", "schedules", "augmentations", "keys"])
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from cifarlab import config as C
    from cifarlab.data import load_dataset
    from cifarlab.data.loader import make_splits
    from cifarlab.runs import RunDir
    from cifarlab.train import train

    overrides = list(args.overrides) + ([f"train.seed={args.seed}"] if args.seed is not None else [])
    cfg = C.load(args.experiment, overrides)
    arrays = load_dataset(cfg.data.dataset, args.data_dir, download=not args.no_download,
                          progress=not args.no_progress)
    run = RunDir(Path(args.out)) if args.out else RunDir.for_config(cfg)
    final = train(cfg, make_splits(arrays, cfg.data), run, resume=args.resume, progress=not args.no_progress)
    val = f"val {final['val_acc']:.4f}  " if final["val_acc"] is not None else ""
    print(f"{cfg.name} seed {cfg.train.seed}: {val}test {final['test_acc']:.4f}  "
          f"({final['epochs']} epochs, {final['wall_seconds']:.1f} s, {final['images_per_s']:.0f} img/s)  -> {run.path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from cifarlab.bench import throughput
    throughput(args.experiment, args.batch_size, args.steps, args.rounds)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from cifarlab import augment, config, models, optim
    registries = {"models": models.MODELS, "optimizers": optim.OPTIMIZERS, "schedules": optim.SCHEDULES,
                  "augmentations": augment.AUGMENTS}
    print(config.describe_keys() if args.what == "keys" else "\n".join(registries[args.what].names()))
    return 0


COMMANDS = {"run": cmd_run, "bench": cmd_bench, "list": cmd_list}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"cifarlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cifarlab: interrupted; finished epochs are saved, continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
