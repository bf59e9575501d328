"""Methods registry: what one optimizer step does with an augmented, preprocessed batch.

    standard     forward, the run's loss (plus the coupled L2 penalty), backward, one optimizer step
    coteaching   Co-teaching (Han et al., NeurIPS 2018): two networks; each picks the (1 - tau_t)
                 fraction of the batch with its smallest cross-entropy, and its peer trains on those;
                 tau_t grows linearly from 0 to train.forget_rate over the first train.forget_epochs
                 epochs (the paper sets the forget rate to the noise rate, which it assumes known).
                 Evaluation and the test use the first network.

    supcon       Supervised contrastive learning (Khosla et al., NeurIPS 2020): for train.epochs, the
                 encoder and projection head learn from L_out on two augmented views of each image;
                 then, for supcon.probe_epochs, the encoder is frozen (eval mode: BatchNorm's running
                 statistics) and the probe (an MLP or a linear layer) learns with the run's loss on
                 one augmented view. Validation is measured in the probe phase only.

A method gets the augmented, preprocessed views `[(x, batch), ...]` (two for supcon's pre-training,
else one) and returns (the loss it reports, the first network's logits or None, the labels
training accuracy counts against or None), all detached.

A method with two phases (`Pretraining`: first without a classifier, then a classifier on what the
first phase learnt) says how: its network around the built model, its two optimizers, each phase's
length and rate, what a finished first phase hands to runs that share it, and its FLOPs. The loop
(`cifarlab.train`), the FLOP count and the planner ask the method through `network`,
`total_epochs`, `pretrain_epochs`, `set_rates` and `Method.pretraining`; none of them names one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab import distributed
from cifarlab.data.batch import Batch
from cifarlab.optim import build_optimizer, l2_penalty
from cifarlab.errors import ConfigError
from cifarlab.registry import Registry
from cifarlab.schema import ExperimentConfig
from cifarlab.session import Session

Step = Callable[[Session, list[tuple[torch.Tensor, Batch]], int],
                tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]


def one_view(s: Session, epoch: int) -> int:
    return 1


@dataclass(frozen=True)
class Pretraining:
    """A first phase that trains without a classifier, then a second that trains one on its frozen
    result (SupCon: the encoder and projection on two views, then the probe)."""
    epochs: Callable[[ExperimentConfig], int]               # the first phase's epochs
    second_epochs: Callable[[ExperimentConfig], float]      # the second phase's
    second_lr: Callable[[ExperimentConfig], float]          # the second phase's peak rate, decayed linearly to 0
    wrap: Callable[[nn.Module, ExperimentConfig, int], nn.Module]  # (built model, config, classes) -> the network
    # the network -> (the first phase's optimizer, the second's)
    optimizers: Callable[[nn.Module, ExperimentConfig], tuple[torch.optim.Optimizer, torch.optim.Optimizer]]
    parts: Callable[[Session], dict]                        # what a finished first phase hands on, by name
    # the config whose hash identifies the first phase: runs of one identity and seed share it
    identity: Callable[[ExperimentConfig], ExperimentConfig]
    # (FLOPs per image and step, images seen, of them in the first phase) -> the run's training FLOPs
    flops: Callable[[int, int, int], int]


@dataclass(frozen=True)
class Method:
    """One training method: its step and what the loop, the FLOP count and the CLI need to know of it."""
    step: Step
    networks: int = 1                                   # independently initialised networks trained (co-teaching: 2)
    views: Callable[[Session, int], int] = one_view     # augmented views of each image the step takes in an epoch
    pretraining: Pretraining | None = None              # two phases (SupCon), else one
    label: str = ""                                     # its name in prose ("co-teaching"); default: the key
    keys: tuple[str, ...] = ()                          # config keys only it reads: left at their defaults elsewhere
    check: Callable[[ExperimentConfig], None] | None = None   # its own config rules (ConfigError, one line)
    splits: bool = False        # its step runs on a share of the batch per process, gradients averaged (several processes)
    legend: Callable[[ExperimentConfig, float], str] | None = None   # (config, label-noise rate) -> its settings in a legend, or ""

    @property
    def single(self) -> bool:
        """One network, one phase: what weight averaging (EMA) and Lookahead step."""
        return self.networks == 1 and self.pretraining is None

    @property
    def doc(self) -> str:
        import inspect
        return inspect.getdoc(self.step) or ""


METHODS: Registry = Registry("method")


def method(name: str, networks: int = 1, views: Callable[[Session, int], int] = one_view,
           pretraining: Pretraining | None = None, label: str = "", keys: tuple[str, ...] = (),
           check: Callable[[ExperimentConfig], None] | None = None, splits: bool = False,
           legend: Callable[[ExperimentConfig, float], str] | None = None, plugin: bool = False) -> Callable[[Step], Step]:
    """Register `step` as train.method `name` (networks: 2 makes the session build `s.peer` and
    `s.peer_opt`, and doubles the run's FLOPs; `pretraining`: a method of two phases; `keys`: the
    dotted config keys only this method reads, refused away from their defaults under any other;
    `check`: its own rules on a config that trains with it, raising ConfigError in one line;
    `splits`: the step is correct on each process's share of the batch with the gradients averaged
    (`update` does that), so it may train on several processes; `legend(cfg, noise_rate)`: its
    settings as a figure's legend states them, "" where they say nothing the method's name does not;
    `plugin`: registered by the step's module, which may register it again when reloaded)."""
    def add(step: Step) -> Step:
        METHODS.register(name, step.__module__ if plugin else None)(Method(step, networks, views, pretraining, label or name, keys, check, splits, legend))
        return step
    return add


def check_processes(cfg: ExperimentConfig, world: distributed.World) -> None:
    """Refuse, in one line, a run several processes cannot train: its method's step does not split a
    batch (`Method.splits`), or its loss keeps per-sample state (`losses.per_sample`)."""
    from cifarlab.losses import per_sample
    distributed.check_supported(cfg, world, [n for n in METHODS.choices() if METHODS.get(n).splits],
                                per_sample(cfg.loss.name))


def network(model: nn.Module, cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    """The network a run trains and evaluates around the built model (SupCon's encoder + projection + probe)."""
    p = METHODS.get(cfg.train.method).pretraining
    return model if p is None else p.wrap(model, cfg, num_classes)


def optimizers(net: nn.Module, cfg: ExperimentConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """(the run's optimizer, the second phase's or None)."""
    p = METHODS.get(cfg.train.method).pretraining
    return (build_optimizer(net, cfg.optim), None) if p is None else p.optimizers(net, cfg)


def pretrain_epochs(cfg: ExperimentConfig) -> int:
    """Epochs of a first phase without a classifier (no validation, no training accuracy); 0: none."""
    p = METHODS.get(cfg.train.method).pretraining
    return 0 if p is None else p.epochs(cfg)


def total_epochs(cfg: ExperimentConfig) -> float:
    """Every epoch the run trains: train.epochs, and a second phase's after a first."""
    p = METHODS.get(cfg.train.method).pretraining
    return cfg.train.epochs if p is None else cfg.train.epochs + p.second_epochs(cfg)


def set_rates(s: Session, step: int) -> float:
    """Each optimizer's rate for this step; returns the one the step's phase follows. One phase: the
    schedule over the run. Two: the schedule over the first phase's steps for its optimizer, then the
    second phase's rate decaying linearly to 0 over its steps."""
    p = METHODS.get(s.cfg.train.method).pretraining
    pre = s.total_steps if p is None else p.epochs(s.cfg) * s.steps_per_epoch
    if p is None or step < pre:
        lr = s.cfg.optim.lr * s.schedule(step, pre, s.steps_per_epoch)
        for opt in (s.optimizers if p is None else [s.opt]):
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr
    lr = p.second_lr(s.cfg) * (1 - (step - pre) / max(s.total_steps - pre, 1))
    for group in s.probe_opt.param_groups:
        group["lr"] = lr
    return lr


def update(s: Session, opt, loss: torch.Tensor, *modules) -> None:
    """Backward and one step of `opt`; the coupled L2 penalty covers the kernels of `modules`."""
    objective = loss + s.cfg.optim.l2 * sum(l2_penalty(m) for m in modules) if s.cfg.optim.l2 else loss
    opt.zero_grad(set_to_none=True)
    objective.backward()
    distributed.average_gradients(modules, s.share, s.world)  # several processes: the global batch's gradient
    opt.step()


def views_needed(s: Session, epoch: int) -> int:
    return METHODS.get(s.cfg.train.method).views(s, epoch)


def supcon_views(s: Session, epoch: int) -> int:
    return 2 if pretraining(s, epoch) else 1


def pretraining(s: Session, epoch: int) -> bool:
    return epoch < pretrain_epochs(s.cfg)


@method("standard", splits=True)
def standard(s: Session, views: list, epoch: int):
    """Forward, the run's loss (plus the coupled L2 penalty), backward, one optimizer step."""
    (x, batch), = views
    with s.rt.autocast():
        logits = s.model(x).float()
    loss = s.loss(logits, batch)
    update(s, s.opt, loss, s.model)
    return loss.detach(), logits.detach(), batch.dominant


def forget_rate(s: Session, epoch: int) -> float:
    ramp = s.cfg.train.forget_epochs
    return s.cfg.train.forget_rate * (min(epoch / ramp, 1.0) if ramp > 0 else 1.0)


def forget_legend(cfg: ExperimentConfig, noise_rate: float) -> str:
    """Co-teaching's forget rate, where it is not the noise rate (the paper's setting)."""
    return f"forget {cfg.train.forget_rate:g}" if cfg.train.forget_rate != noise_rate else ""


@method("coteaching", networks=2, label="co-teaching", keys=("train.forget_rate",), legend=forget_legend)
def coteaching(s: Session, views: list, epoch: int):
    """Co-teaching (Han et al. 2018): two networks, each trained on the small-loss part of the batch its peer picks."""
    (x, batch), = views
    with s.rt.autocast():
        logits, peer_logits = s.model(x).float(), s.peer(x).float()
    target = batch.labels if batch.targets is None else batch.targets
    keep = max(1, math.ceil((1 - forget_rate(s, epoch)) * len(batch)))
    with torch.no_grad():
        mine = F.cross_entropy(logits, target, reduction="none").argsort()[:keep]        # small-loss of net 1
        theirs = F.cross_entropy(peer_logits, target, reduction="none").argsort()[:keep]  # small-loss of net 2
    loss = s.loss(logits[theirs], batch.take(theirs))          # each network learns from its peer's choice
    peer_loss = s.loss(peer_logits[mine], batch.take(mine))
    update(s, s.opt, loss, s.model)
    update(s, s.peer_opt, peer_loss, s.peer)
    return loss.detach(), logits.detach(), batch.dominant


SUPCON_PROBE_KEYS = ("probe", "probe_hidden", "probe_epochs", "probe_lr")


def supcon_pretraining(cfg: ExperimentConfig) -> ExperimentConfig:
    """supcon: the config whose hash identifies a run's pre-training, the probe's keys at their
    defaults. Runs that differ only in their probe pre-train the same encoder: the probe is built
    after the encoder and the projection, its keys enter no step of the pre-training, and every
    epoch reseeds from (seed, epoch)."""
    from dataclasses import replace

    from cifarlab.schema import SupConConfig
    default = SupConConfig()
    return replace(cfg, supcon=replace(cfg.supcon, **{k: getattr(default, k) for k in SUPCON_PROBE_KEYS}))


def supcon_network(model: nn.Module, cfg: ExperimentConfig, num_classes: int) -> nn.Module:
    from cifarlab.models.supcon import SupConNet
    return SupConNet(model, cfg.supcon, num_classes)


def supcon_optimizers(net: nn.Module, cfg: ExperimentConfig):
    """The encoder and projection learn with the run's optimizer; the probe with SGD + momentum."""
    return (build_optimizer(nn.ModuleList([net.encoder, net.projection]), cfg.optim),
            torch.optim.SGD(net.probe.parameters(), lr=cfg.supcon.probe_lr, momentum=0.9))


def supcon_flops(per: int, images: int, pretrain_images: int) -> int:
    """Two views of each pre-training image; the probe on frozen features, whose forward pass is about
    a third of a training step, for the rest."""
    return int(2 * per * pretrain_images + per / 3 * (images - pretrain_images))


SUPCON = Pretraining(
    epochs=lambda cfg: int(cfg.train.epochs), second_epochs=lambda cfg: cfg.supcon.probe_epochs,
    second_lr=lambda cfg: cfg.supcon.probe_lr, wrap=supcon_network, optimizers=supcon_optimizers,
    parts=lambda s: {"encoder": s.model.encoder, "projection": s.model.projection, "optimizer": s.opt},
    identity=supcon_pretraining, flops=supcon_flops)


def supcon_check(cfg: ExperimentConfig) -> None:
    if cfg.train.batch_size < 2:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size}: supcon contrasts the images of a batch, "
                          "it needs at least 2")
    if cfg.train.epochs != int(cfg.train.epochs) or cfg.supcon.probe_epochs != int(cfg.supcon.probe_epochs):
        raise ConfigError("supcon's phases end at epoch boundaries: give train.epochs (pre-training) and "
                          "supcon.probe_epochs as whole numbers")


@method("supcon", views=supcon_views, pretraining=SUPCON, check=supcon_check)
def supcon(s: Session, views: list, epoch: int):
    """Supervised contrastive pre-training (Khosla et al. 2020) on two views, then a probe on the frozen encoder."""
    from cifarlab.losses import supcon_loss
    net = s.model
    if pretraining(s, epoch):
        (x1, batch), (x2, _) = views
        with s.rt.autocast():
            z = net.embed(torch.cat([x1, x2]))
        n = len(batch)
        loss = supcon_loss(torch.stack([z[:n], z[n:]], dim=1), batch.labels, s.cfg.supcon.temperature)
        update(s, s.opt, loss, net.encoder, net.projection)
        return loss.detach(), None, None
    (x, batch), = views
    net.encoder.eval()                       # frozen: no gradients, BatchNorm's running statistics
    with torch.no_grad(), s.rt.autocast():
        features = net.encoder.features(x).float()
    logits = net.probe(features)
    loss = s.loss(logits, batch)
    update(s, s.probe_opt, loss, net.probe)
    return loss.detach(), logits.detach(), batch.dominant
