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
from typing import Callable

import torch
import torch.nn.functional as F

from cifarlab import distributed
from cifarlab.data.batch import Batch
from cifarlab.optim import l2_penalty
from cifarlab.registry import Registry
from cifarlab.session import Session

Method = Callable[[Session, list[tuple[torch.Tensor, Batch]], int],
                  tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]
METHODS: Registry = Registry("method")


def update(s: Session, opt, loss: torch.Tensor, *modules) -> None:
    """Backward and one step of `opt`; the coupled L2 penalty covers the kernels of `modules`."""
    objective = loss + s.cfg.optim.l2 * sum(l2_penalty(m) for m in modules) if s.cfg.optim.l2 else loss
    opt.zero_grad(set_to_none=True)
    objective.backward()
    distributed.average_gradients(modules, s.share, s.world)  # several processes: the global batch's gradient
    opt.step()


def views_needed(s: Session, epoch: int) -> int:
    return 2 if s.cfg.train.method == "supcon" and pretraining(s, epoch) else 1


def pretraining(s: Session, epoch: int) -> bool:
    return s.cfg.train.method == "supcon" and epoch < int(s.cfg.train.epochs)


@METHODS.register("standard")
def standard(s: Session, views: list, epoch: int):
    (x, batch), = views
    with s.rt.autocast():
        logits = s.model(x).float()
    loss = s.loss(logits, batch)
    update(s, s.opt, loss, s.model)
    return loss.detach(), logits.detach(), batch.dominant


def forget_rate(s: Session, epoch: int) -> float:
    ramp = s.cfg.train.forget_epochs
    return s.cfg.train.forget_rate * (min(epoch / ramp, 1.0) if ramp > 0 else 1.0)


@METHODS.register("coteaching")
def coteaching(s: Session, views: list, epoch: int):
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


@METHODS.register("supcon")
def supcon(s: Session, views: list, epoch: int):
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
