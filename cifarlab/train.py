"""The training loop: one experiment config + data splits -> a finished run directory."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from cifarlab import config as C
from cifarlab import distributed, runtime
from cifarlab.clock import clock as wall   # wall time less the time the process was paused
from cifarlab.augment import build_pipeline
from cifarlab.data.batch import Batch
from cifarlab.data.loader import Split, Splits
from cifarlab.errors import ConfigError, UserError, finishing, stop_if_asked
from cifarlab.evaluate import Preprocess, evaluate
from cifarlab.flops import training_flops
from cifarlab.losses import build_loss
from cifarlab.methods import METHODS, check_processes, network, optimizers, pretrain_epochs, pretraining, set_rates, total_epochs, views_needed
from cifarlab.models import build_model, count_parameters
from cifarlab.models.layers import fit_whitening
from cifarlab.optim import Lookahead, WeightAverage, build_optimizer, build_schedule
from cifarlab.provenance import provenance
from cifarlab.runs import MODEL_FILE, RunDir, load_verified, save_verified
from cifarlab.session import Session
from cifarlab.stats import best_epoch


WHITEN_SAMPLES = 5000  # training images (the split's first, a fixed set) a whitening stem is fitted to


def epoch_seed(seed: int, epoch: int) -> int:
    # Each epoch reseeds from (seed, epoch): a resumed run draws exactly what a straight one would.
    return seed * 100_003 + epoch


def build_network(cfg: C.ExperimentConfig, num_classes: int, image_size: int) -> nn.Module:
    """The architecture of the network a finished run tested (weights untrained), for loading its model."""
    return network(build_model(cfg.model, num_classes, image_size), cfg, num_classes)


def save_model(s: Session, splits: Splits, run: RunDir, epoch: int) -> None:
    """`model.pt` (+ its SHA-256): the tested weights with what prediction needs without the data:
    the resolved config, the training split's normalisation statistics, the class names and the
    image size (`cifarlab.predict`)."""
    save_verified(run.path / MODEL_FILE, {
        "model": {k: v.detach().cpu() for k, v in s.evaluated.state_dict().items()},
        "config": C.to_toml(s.cfg), "classes": list(splits.classes), "mean": list(splits.mean),
        "std": list(splits.std), "image_size": splits.image_size, "epoch": epoch, "format": 1})


def build_session(cfg: C.ExperimentConfig, splits: Splits) -> Session:
    rt = runtime.setup(cfg.train)
    world = distributed.from_env()
    check_processes(cfg, world)
    distributed.init(world, rt.device)
    if cfg.train.sync_bn and world.size > 1 and rt.device.type != "cuda":
        raise ConfigError("train.sync_bn synchronises BatchNorm over CUDA processes (nn.SyncBatchNorm); on CPUs "
                          "leave it false: each process normalises its own chunk")
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, splits.num_classes, splits.image_size)
    if cfg.train.sync_bn and world.size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    spe = math.ceil(len(splits.train) / cfg.train.batch_size)
    wrapped = network(model, cfg, splits.num_classes)   # a two-phase method's heads (SupCon's), built next
    if wrapped is not model:
        model = wrapped.to(rt.device)
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last)
    epochs = total_epochs(cfg)
    prep = Preprocess(splits.mean, splits.std, cfg.data.normalize == "standard", rt)
    peer = None
    if METHODS.get(cfg.train.method).networks == 2:  # built after the first network: its own initial weights
        peer = build_model(cfg.model, splits.num_classes, splits.image_size).to(rt.device)
        if rt.channels_last:
            peer = peer.to(memory_format=torch.channels_last)
    if cfg.model.stem == "whiten" or cfg.model.whiten_init:  # filters from the training images (a checkpoint then replaces them)
        sample = prep(splits.train.images[:WHITEN_SAMPLES].to(rt.device))
        for net in (model, peer):
            if net is not None:
                fit_whitening(net, sample, first=cfg.model.whiten_init)
    opt, probe_opt = optimizers(model, cfg)   # after the whitening fit, as the network's weights are final
    total = max(1, round(epochs * spe))
    return Session(
        cfg=cfg, rt=rt, model=model, opt=opt,
        schedule=build_schedule(cfg.schedule),
        augment=build_pipeline(cfg.augment, splits.image_size, splits.num_classes),
        loss=build_loss(cfg.loss, splits.num_classes, len(splits.train)),
        prep=prep,
        steps_per_epoch=spe, total_steps=total,
        provenance=provenance(runtime.machine_name(rt.device), cfg.plugins),
        peer=peer, peer_opt=None if peer is None else build_optimizer(peer, cfg.optim), probe_opt=probe_opt,
        world=world, ema=WeightAverage(model, cfg.train.ema) if cfg.train.ema else None,
        lookahead=Lookahead(cfg.train.lookahead, cfg.train.lookahead_alpha, cfg.train.lookahead_ramp,
                            total) if cfg.train.lookahead else None,
    )


def train_step(s: Session, batch: Batch, gen: torch.Generator,
               epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on a uint8 batch; returns (loss, logits, the labels accuracy counts
    against: the dominant label of mixed targets), all detached."""
    # augment the uint8 batch, then scale it to the model's input; the method does the rest
    views = []
    for _ in range(views_needed(s, epoch)):    # supcon's pre-training draws two views of each image
        view = s.augment(batch, gen, epoch, s.cfg.train.epochs) if s.augment is not None else batch
        views.append((s.prep(view.images), view))
    return METHODS.get(s.cfg.train.method).step(s, views, epoch)


def set_learning_rates(s: Session, step: int, epoch: int) -> float:
    """Each optimizer's rate for this step (the method's phases: `methods.set_rates`); returns the
    rate the step's phase follows."""
    return set_rates(s, step)


def train_epoch(s: Session, split: Split, epoch: int, bar: tqdm) -> dict:
    """One pass over the shuffled training split; returns running loss and accuracy."""
    seed = epoch_seed(s.cfg.train.seed, epoch)
    torch.manual_seed(seed)  # dropout masks
    gen = torch.Generator(device=s.rt.device).manual_seed(seed)
    order = torch.randperm(len(split), generator=gen, device=s.rt.device)  # the same in every process
    if s.world.size > 1:  # each process its own augmentation draws and dropout masks
        torch.manual_seed(seed * 1_009 + s.world.rank)
        gen = torch.Generator(device=s.rt.device).manual_seed(seed * 1_009 + s.world.rank)
    loss_sum = torch.zeros((), device=s.rt.device)
    correct = torch.zeros((), dtype=torch.long, device=s.rt.device)
    seen, counted, start = 0, 0, wall()
    if s.lookahead is not None:
        s.lookahead.start(s.model)
    last = min(s.steps_per_epoch, s.total_steps - epoch * s.steps_per_epoch) - 1  # this epoch's final step
    for i, batch in enumerate(split.batches(s.cfg.train.batch_size, order)):
        step = epoch * s.steps_per_epoch + i
        if step >= s.total_steps:
            break
        stop_if_asked()   # a stopping signal whose KeyboardInterrupt some code swallowed stops here
        # 1. learning rate for this step, from the schedule
        set_learning_rates(s, step, epoch)
        if s.world.size > 1:  # this process's chunk of the global batch
            start_i, stop_i = distributed.chunk(len(batch), s.world)
            s.share = (stop_i - start_i) / len(batch)
            batch = batch.take(torch.arange(start_i, stop_i, device=batch.labels.device))
        # 2. augment, forward, loss, backward, update; a final batch smaller than the world leaves
        #    some process no images: it contributes zero gradients and still takes the step
        empty = len(batch) == 0
        if empty:
            empty_step(s)
        else:
            loss, logits, labels = train_step(s, batch, gen, epoch)
        if s.lookahead is not None:
            s.lookahead.after_step(s.model, i, i == last, step)
        if s.ema is not None:
            s.ema.update(s.model, step)
        bar.update(1)
        if empty:
            continue
        # 3. running statistics, without forcing a device sync each step (no accuracy while contrasting)
        loss_sum += loss * len(batch)
        if labels is not None:
            correct += (logits.argmax(1) == labels).sum()
            counted += len(labels)
        seen += len(batch)
        if i % 20 == 0:
            rate = seen / (wall() - start)
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{correct.item() / max(counted, 1):.3f}",
                            img_s=f"{rate:.0f}")
    seconds = wall() - start
    total_loss, hits, seen, counted = distributed.all_sum(  # one process: the values themselves
        [loss_sum.item(), float(correct.item()), float(seen), float(counted)], s.world, s.rt.device)
    return {"train_loss": total_loss / seen, "train_acc": hits / counted if counted else None,
            "train_seconds": seconds, "images_per_s": seen / seconds}


def empty_step(s: Session) -> None:
    """This process had no images in the batch: it adds zero gradients and takes the same step."""
    s.opt.zero_grad(set_to_none=True)
    distributed.average_gradients([s.model], 0.0, s.world)
    s.opt.step()


def restore(s: Session, run: RunDir) -> tuple[int, list[dict]]:
    """(first epoch to run, metrics so far) from the run's checkpoint, if it has one."""
    state = run.load_checkpoint(C.config_hash(s.cfg), s.cfg.train.seed, s.cfg)
    if state is None:
        return 0, []
    try:
        for key, part in s.stateful().items():
            part.load_state_dict(state[key])
    except (RuntimeError, ValueError, KeyError) as e:  # a layout this model does not have
        raise UserError(f"checkpoint {run.checkpoint_path} does not fit this model ({str(e).splitlines()[0]}); "
                        "it was written by another network or an older cifarlab: use another --out, "
                        "or delete the run to start it over") from None
    # Epochs logged after the checkpoint was written are re-run, so drop them.
    return state["epoch"], [h for h in run.read_metrics() if h["epoch"] <= state["epoch"]]


def pretraining_hash(cfg: C.ExperimentConfig) -> str:
    """The identity of a two-phase run's first phase (SupCon: its config hash with the probe's keys at
    their defaults): runs of one identity and seed share it (`Pretraining.identity`)."""
    return C.config_hash(METHODS.get(cfg.train.method).pretraining.identity(cfg))


def pretrained_path(shared: Path, cfg: C.ExperimentConfig) -> Path:
    return Path(shared) / f"{cfg.train.method}-{pretraining_hash(cfg)}-seed{cfg.train.seed}.pt"


def share_pretrained(s: Session, shared: Path, history: list[dict], run: RunDir) -> None:
    """At the end of a two-phase method's first phase: what it hands on (`Pretraining.parts`; SupCon:
    the encoder, projection and their optimizer), with its epochs' metrics, for runs that differ only
    in the second phase (`take_pretrained`)."""
    parts = METHODS.get(s.cfg.train.method).pretraining.parts(s)
    save_verified(pretrained_path(shared, s.cfg), {
        "key": pretraining_hash(s.cfg), "seed": s.cfg.train.seed, "epoch": pretrain_epochs(s.cfg),
        **{name: part.state_dict() for name, part in parts.items()},
        "history": json.dumps(history), "source": str(run.path)})


def take_pretrained(s: Session, shared: Path) -> tuple[int, list[dict], str | None]:
    """(first epoch to run, metrics so far, the run that pre-trained) from a first phase another run
    of the same identity and seed shared, else (0, [], None). The second phase then trains as in a
    straight run: its initial weights are this run's own, its optimizer untouched so far."""
    path = pretrained_path(shared, s.cfg)
    state = load_shared(path, pretraining_hash(s.cfg), s.cfg.train.seed,
                        METHODS.get(s.cfg.train.method).pretraining.parts(s))
    if state is None:
        return 0, [], None
    return state["epoch"], json.loads(state["history"]), state["source"]


def load_shared(path: Path, key: str, seed: int, parts: dict) -> dict | None:
    """The state another run shared at `path` (its checksum verified before it is unpickled) with
    each of `parts` (name -> module or optimizer) loaded from it, or None when there is none for
    this `key` and seed; one line when it does not fit."""
    state = load_verified(path)
    if state is None or state.get("key") != key or state.get("seed") != seed:
        return None
    try:
        for name, part in parts.items():
            part.load_state_dict(state[name])
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"{path} does not fit this model ({str(e).splitlines()[0]}); it was written by another "
                        "network or an older cifarlab: delete it and its .sha256 to train anew") from None
    return state


def trained_path(shared: Path, cfg: C.ExperimentConfig) -> Path:
    return Path(shared) / f"select-{C.selection_hash(cfg)}-seed{cfg.train.seed}.pt"


def share_trained(s: Session, shared: Path, history: list[dict], run: RunDir) -> None:
    """At the end of training (before any choice of weights): the last and the best-validation
    weights with every epoch's metrics, for runs that differ only in `train.select` (`take_trained`)."""
    best = run.load_best()
    save_verified(trained_path(shared, s.cfg), {
        "key": C.selection_hash(s.cfg), "seed": s.cfg.train.seed, "last": s.evaluated.state_dict(),
        "best": best["model"], "best_epoch": best["epoch"], "history": json.dumps(history),
        "source": str(run.path)})


def take_trained(s: Session, shared: Path, run: RunDir) -> tuple[list[dict], str] | None:
    """(every epoch's metrics, the run that trained) from a finished run that differs from this one
    only in `train.select`, its last weights loaded and its best-validation weights written as this
    run's best.pt; None when there is none. The test then reads what this run would have trained."""
    state = load_shared(trained_path(shared, s.cfg), C.selection_hash(s.cfg), s.cfg.train.seed, {"last": s.evaluated})
    if state is None:
        return None
    if s.world.writes:
        run.save_best(state["best"], state["best_epoch"])
    return json.loads(state["history"]), state["source"]


def run_epoch(s: Session, splits: Splits, train_split: Split, epoch: int, bar: tqdm) -> dict:
    """Train one epoch, then measure the validation split: one metrics row."""
    bar.set_description(f"{s.cfg.name} seed {s.cfg.train.seed} epoch {epoch + 1}/{s.epochs}")
    lr = set_learning_rates(s, epoch * s.steps_per_epoch, epoch)
    row = {"epoch": epoch + 1, "lr": lr, **train_epoch(s, train_split, epoch, bar)}
    if pretraining(s, epoch):
        row["phase"] = "pretrain"
        return row                    # no classifier yet: validation starts with the second phase
    if pretrain_epochs(s.cfg):
        row["phase"] = "probe"
    val = None
    if splits.val is not None:
        t = wall()
        val = evaluate(s.evaluated, splits.val, s.prep, s.rt, s.cfg.train, splits.num_classes)
        row.update(val_loss=val["loss"], val_acc=val["acc"], val_top5=val["top5"], val_seconds=wall() - t)
    row.update(noise_metrics(s, splits, val))
    return row


MEMORISATION_SAMPLES = 2000  # flipped training samples the memorisation curve is measured on, each epoch


def noise_metrics(s: Session, splits: Splits, val: dict | None) -> dict:
    """Under label noise: validation accuracy on the clean labels (the noisy one is val_acc; both from
    `val`, the validation pass's `evaluate`), and on (up to 2,000 of) the training samples whose
    labels were flipped, accuracy against their noisy labels (memorised) and against their clean
    ones: the memorisation curve, one forward pass over those samples."""
    out = {}
    if val is not None and "acc_clean" in val:
        out["val_acc_clean"] = val["acc_clean"]
    flipped = splits.train.flipped(MEMORISATION_SAMPLES)
    if flipped is not None:
        both = evaluate(s.evaluated, flipped, s.prep, s.rt, s.cfg.train, splits.num_classes)
        out.update(flipped_acc_noisy=both["acc"], flipped_acc_clean=both["acc_clean"])
    return out


def train(cfg: C.ExperimentConfig, splits: Splits, run: RunDir, *, resume: bool = False, progress: bool = True,
          progress_row: int = 0, on_epoch: Callable[[dict], None] | None = None,
          shared: Path | None = None) -> dict:
    """Train (or continue) one run and write its directory; returns the final metrics.

    `shared`: a folder where runs share work they would repeat: supcon runs that differ only in
    their probe share their pre-training (`take_pretrained`: the first to finish it leaves it there,
    the others start at their probe), and runs with a validation split that differ only in
    `train.select` share their training (`take_trained`: the first to finish leaves its last and
    best-validation weights, the others only test theirs)."""
    if not cfg.train.test:
        splits = replace(splits, test=None)   # a tuning run: nothing below can read the test set
    s = build_session(cfg, splits)
    if run.checkpoint_path.exists() and not resume:
        raise run.held(cfg, "pass --resume (in Python resume=True)", "--out DIR; in Python out=...")
    start, history = restore(s, run) if resume else (0, [])
    writes = s.world.writes
    keeps_best = writes and splits.val is not None and (cfg.train.select == "best_val" or shared is not None)
    pretrained_by = trained_by = None
    taken = take_trained(s, shared, run) if shared is not None and splits.val is not None and start == 0 else None
    if taken is not None:
        history, trained_by = taken
        start = s.epochs                              # nothing left to train: the test reads its weights
        if writes:
            run.write_metrics(history)
    elif shared is not None and pretrain_epochs(cfg) and start == 0:
        start, history, pretrained_by = take_pretrained(s, shared)
    elif shared is not None and pretrain_epochs(cfg):   # resumed: whose first phase it continues
        pretrained_by = next((h["pretrained_by"] for h in history if "pretrained_by" in h), None)
    if on_epoch is not None and (trained_by is not None or (pretrained_by is not None and start == pretrain_epochs(cfg))):
        for row in history:
            on_epoch(row)                             # the store records the epochs taken from another run
    events = None
    if cfg.train.tensorboard and writes:
        from cifarlab.tensorboard import EventLog
        events = EventLog(run.path, history)
    if writes:
        run.write_config(cfg)
    tracker = None
    if cfg.train.mlflow and writes:
        from cifarlab.tracking import MlflowLog
        tracker = MlflowLog(run.path, C.to_dict(cfg), cfg.name, f"{cfg.name} seed {cfg.train.seed}")
        for row in history:
            tracker.epoch(row)              # a resumed run: the epochs before its checkpoint
    try:
        train_split = splits.train.to(s.rt.device)
        # Wall clock of the run since it began, time before an interruption included.
        clock = wall() - (history[-1]["elapsed"] if history else 0.0)
        bar = tqdm(total=s.total_steps, initial=min(start * s.steps_per_epoch, s.total_steps),
                   disable=not progress or not writes, unit="step", dynamic_ncols=True, leave=False, position=progress_row)
        for epoch in range(start, s.epochs):
            if history and diverged(history[-1]):
                break  # resuming a run that diverged: its weights are not numbers any more
            row = run_epoch(s, splits, train_split, epoch, bar)
            row["elapsed"] = wall() - clock
            if pretrained_by is not None:
                row["pretrained_by"] = pretrained_by   # a resumed run still knows whose pre-training it probes
            history.append(row)
            if writes and shared is not None and pretrained_by is None and pretrain_epochs(cfg) and \
                    epoch + 1 == pretrain_epochs(cfg) and not diverged(row):
                share_pretrained(s, shared, history, run)
            if keeps_best and row.get("val_acc") is not None and \
                    row["val_acc"] > max((h.get("val_acc", -1) for h in history[:-1]), default=-1):
                run.save_best(s.evaluated.state_dict(), row["epoch"])   # before metrics: a resume finds both or neither
            if writes:
                run.write_metrics(history)
            if events is not None:
                events.epoch(row)
            if tracker is not None:
                tracker.epoch(row)
            if on_epoch is not None:
                on_epoch(row)
            stop = diverged(row)  # NaN weights stay NaN: the remaining epochs would only burn time
            if writes and (stop or (epoch + 1) % cfg.train.checkpoint_every == 0 or epoch + 1 == s.epochs):
                run.save_checkpoint({**{key: part.state_dict() for key, part in s.stateful().items()},
                                     "epoch": epoch + 1, "config_hash": C.config_hash(cfg), "seed": cfg.train.seed})
            if stop:
                break
        bar.close()
        if events is not None:
            events.close()
        if keeps_best and shared is not None and trained_by is None and run.best_path.exists() and \
                not diverged(history[-1]) and run.load_best()["epoch"] == best_epoch(history):
            share_trained(s, shared, history, run)   # (a best.pt that is not the history's best: not shared)
        selected = None
        if writes and cfg.train.select == "best_val" and run.best_path.exists() and not diverged(history[-1]):
            best = run.load_best()
            s.evaluated.load_state_dict(best["model"])
            selected = best["epoch"]
        final = finish(s, splits, history, clock)
        final["selected_epoch"] = selected or len(history)
        if pretrained_by is not None:
            final["pretrained_by"] = pretrained_by    # its pre-training epochs, time included, are that run's
        if trained_by is not None:
            final["trained_by"] = trained_by          # its epochs, time included, are that run's
        if selected:   # the validation numbers of the weights tested, not of the last epoch
            tested = history[selected - 1]
            final.update({key: tested.get(key) for key in ("val_acc", "val_loss", "val_top5", "val_acc_clean")})
        if writes:
            if not final["stopped"]:
                save_model(s, splits, run, final["selected_epoch"])
            run.write_final(final)
    except BaseException as err:   # an interrupted or failed run: its MLflow run ends too, marked so
        if tracker is not None:
            with finishing():
                tracker.abort(err)
        raise
    if tracker is not None:
        tracker.close(final, run.path)
    return final


def copy_record(cfg: C.ExperimentConfig, run: RunDir, final: dict) -> list[str]:
    """A finished run resumed with `train.tensorboard` / `train.mlflow` turned on (settings outside
    the config hash): its recorded epochs and final metrics, copied there from metrics.jsonl and
    final.json where they are not yet (no event file in the run directory; no finished MLflow run of
    this directory), by the process that writes (rank 0); nothing is trained or rewritten. Returns the
    sinks written ("TensorBoard", "MLflow")."""
    sinks: list[str] = []
    if not distributed.from_env().writes:
        return sinks
    history = run.read_metrics()
    if cfg.train.tensorboard and not any(run.path.glob("events.out.tfevents.*")):
        from cifarlab.tensorboard import EventLog
        EventLog(run.path, history).close()
        sinks.append("TensorBoard")
    if cfg.train.mlflow:
        from cifarlab.tracking import MlflowLog, logged
        if not logged(run.path, cfg.name):
            tracker = MlflowLog(run.path, C.to_dict(cfg), cfg.name, f"{cfg.name} seed {cfg.train.seed}")
            try:
                for row in history:
                    tracker.epoch(row)
            except BaseException as err:
                with finishing():
                    tracker.abort(err)
                raise
            tracker.close(final, run.path)
            sinks.append("MLflow")
    return sinks


def diverged(row: dict) -> bool:
    return not math.isfinite(row["train_loss"])


def images_in(s: Session, steps: int, train_size: int) -> int:
    """Training images the first `steps` steps draw: each whole epoch the split once (its last batch
    is the remainder, not a full batch), then full batches of the epoch cut short."""
    epochs, rest = divmod(steps, s.steps_per_epoch)
    return epochs * train_size + min(rest * s.cfg.train.batch_size, train_size)


def finish(s: Session, splits: Splits, history: list[dict], clock: float) -> dict:
    """Test once, at the end; gather timings and provenance.

    A run that diverged ends at its first epoch with a non-finite training loss; `stopped` says
    so, and its accuracies are those of the diverged model (chance), honestly recorded."""
    t = wall()
    test = (evaluate(s.evaluated, splits.test, s.prep, s.rt, s.cfg.train, splits.num_classes) if s.cfg.train.test
            else dict.fromkeys(("acc", "loss", "per_class_acc", "top5")))   # a tuning run: the test set is never read
    test_seconds = wall() - t
    train_seconds = sum(h["train_seconds"] for h in history)
    steps = min(len(history) * s.steps_per_epoch, s.total_steps)
    images_seen = images_in(s, steps, len(splits.train))
    pretrain_images = images_in(s, min(steps, pretrain_epochs(s.cfg) * s.steps_per_epoch), len(splits.train))
    return {
        "name": s.cfg.name, "seed": s.cfg.train.seed, "config_hash": C.config_hash(s.cfg),
        "epochs": len(history), "steps": s.total_steps, "parameters": count_parameters(s.model),
        "stopped": (f"diverged: non-finite training loss at epoch {len(history)} of {s.epochs}"
                    if diverged(history[-1]) else None),
        "val_acc": history[-1].get("val_acc"), "val_loss": history[-1].get("val_loss"),
        "test_acc": test["acc"], "test_loss": test["loss"], "per_class_test_acc": test["per_class_acc"],
        "test_top5": test["top5"], "val_top5": history[-1].get("val_top5"),
        "val_acc_clean": history[-1].get("val_acc_clean"), "noise": splits.noise,
        "classes": list(splits.classes),
        "train_seconds": train_seconds,
        "test_seconds": test_seconds,
        "images_seen": images_seen,
        "train_flops": training_flops(s.cfg, splits.num_classes, splits.image_size, images_seen, pretrain_images),
        # everything after the data is in memory: training, augmentation, evaluation, checkpoints
        "wall_seconds": wall() - clock,
        "images_per_s": sum(h["images_per_s"] * h["train_seconds"] for h in history) / train_seconds,
        "runtime": s.rt.describe(),
        **s.provenance,
    }
