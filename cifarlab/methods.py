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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from cifarlab import distributed
from cifarlab.data.batch import Batch
from cifarlab.optim import l2_penalty
from cifarlab.registry import Registry
from cifarlab.session import Session

Step = Callable[[Session, list[tuple[torch.Tensor, Batch]], int],
                tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]


def one_view(s: Session, epoch: int) -> int:
    return 1


@dataclass(frozen=True)
class Method:
    """One training method: its step and what the loop, the FLOP count and the CLI need to know of it."""
    step: Step
    networks: int = 1                                   # independently initialised networks trained (co-teaching: 2)
    views: Callable[[Session, int], int] = one_view     # augmented views of each image the step takes in an epoch

    @property
    def doc(self) -> str:
        import inspect
        return inspect.getdoc(self.step) or ""


METHODS: Registry = Registry("method")


def method(name: str, networks: int = 1, views: Callable[[Session, int], int] = one_view) -> Callable[[Step], Step]:
    """Register `step` as train.method `name` (networks: 2 makes the session build `s.peer` and
    `s.peer_opt`, and doubles the run's FLOPs)."""
    def add(step: Step) -> Step:
        METHODS.register(name)(Method(step, networks, views))
        return step
    return add


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
    return s.cfg.train.method == "supcon" and epoch < int(s.cfg.train.epochs)


@method("standard")
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


@method("coteaching", networks=2)
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


@method("supcon", views=supcon_views)
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
