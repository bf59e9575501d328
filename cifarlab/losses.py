"""Loss registry: `loss.name` -> a builder `(LossConfig, num_classes) -> loss(logits, batch)`, built
once per run. The loss reads the batch's soft targets when a mixing augmentation set them, else its
labels; a new loss (GCE, SCE, SupCon, ...) is a new entry."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from cifarlab.schema import LossConfig
from cifarlab.data.batch import Batch
from cifarlab.registry import Registry

Loss = Callable[[torch.Tensor, Batch], torch.Tensor]
LOSSES: Registry = Registry("loss")


@LOSSES.register("ce", option_names=())
def cross_entropy(cfg: LossConfig, num_classes: int) -> Loss:
    """Cross-entropy, mean over the batch, with label smoothing (Szegedy et al. 2016: the target
    puts 1 - e + e / K on the label and e / K on every class). With MixUp or CutMix targets it is
    the soft-target cross-entropy -sum_k t_k log p_k (smoothing applied to the mixed targets)."""
    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch.labels if batch.targets is None else batch.targets
        return F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
    return loss


@LOSSES.register("gce", keys=("loss.gce_q",), option_names=())
def generalized_ce(cfg: LossConfig, num_classes: int) -> Loss:
    """Generalized cross-entropy (Zhang & Sabuncu, NeurIPS 2018): mean of (1 - p_y^q) / q, which
    tends to cross-entropy as q -> 0 and to MAE (noise-robust) at q = 1; with soft targets, the
    target-weighted mean over classes. The plain L_q: the paper's truncated variant (samples whose
    p_y falls below a threshold k left out, re-chosen every few epochs) is not implemented."""
    q = cfg.gce_q

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        p = torch.softmax(logits, 1).clamp_min(1e-7)
        return ((1 - p.pow(q)) / q * batch.soft_targets(num_classes)).sum(1).mean()
    return loss


@LOSSES.register("sce", keys=("loss.sce_alpha", "loss.sce_beta"), option_names=())
def symmetric_ce(cfg: LossConfig, num_classes: int) -> Loss:
    """Symmetric cross-entropy (Wang et al., ICCV 2019): alpha CE + beta RCE, where the reverse
    cross-entropy -sum_k p_k log t_k takes log 0 = -4 (the paper's A), so for a one-hot target it is
    4 (1 - p_y). The authors' code clips the label at 1e-4 under a natural logarithm (A = -9.21), so
    its beta is 9.21 / 4 = 2.30 times this one's: its CIFAR-10 setting (0.1, 1) is (0.1, 2.30) here."""
    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        t = batch.soft_targets(num_classes)
        ce = -(t * torch.log_softmax(logits, 1)).sum(1)
        rce = -(torch.softmax(logits, 1) * t.log().clamp_min(-4.0)).sum(1)
        return (cfg.sce_alpha * ce + cfg.sce_beta * rce).mean()
    return loss


class EarlyLearningRegularized:
    """ELR (Liu et al., NeurIPS 2020): cross-entropy + lambda * mean log(1 - <t_i, p_i>), where t_i is a
    running average over epochs of sample i's predicted probabilities (t_i <- beta t_i + (1 - beta)
    p_i, p detached and renormalised after clipping to [1e-4, 1 - 1e-4]); the term pulls each
    prediction towards what the network predicted for that sample early in training, before it
    memorised a wrong label. It keeps one target row per training sample, found by the batch's
    indices, and saves them with the checkpoint so a resumed run continues exactly."""

    def __init__(self, cfg: LossConfig, num_classes: int, num_samples: int):
        self.cfg = cfg
        self.targets = torch.zeros(num_samples, num_classes)

    def __call__(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch.labels if batch.targets is None else batch.targets
        ce = F.cross_entropy(logits, target, label_smoothing=self.cfg.label_smoothing)
        p = torch.softmax(logits, 1).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            idx = batch.index.to(self.targets.device)
            if self.targets.device != logits.device:
                self.targets = self.targets.to(logits.device)
            self.targets[idx] = self.cfg.elr_beta * self.targets[idx] + (1 - self.cfg.elr_beta) * (p / p.sum(1, keepdim=True))
        reg = torch.log(1 - (self.targets[batch.index] * p).sum(1)).mean()
        return ce + self.cfg.elr_lambda * reg

    def state_dict(self) -> dict:
        return {"targets": self.targets.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.targets = state["targets"].clone()


@LOSSES.register("elr", keys=("loss.elr_beta", "loss.elr_lambda"), option_names=())
def early_learning_regularized(cfg: LossConfig, num_classes: int, num_samples: int = 0) -> Loss:
    """Early-learning regularization (Liu et al., NeurIPS 2020): cross-entropy + lambda * mean
    log(1 - <t_i, p_i>), t_i a running average (momentum beta) of sample i's predictions, kept per
    training sample and saved with the checkpoint. The authors' CIFAR-10 settings: beta 0.7 and
    lambda 3 for symmetric noise, beta 0.9 and lambda 1 for asymmetric noise."""
    return EarlyLearningRegularized(cfg, num_classes, num_samples)


def supcon_loss(z: torch.Tensor, labels: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """The supervised contrastive loss L_out (Khosla et al., NeurIPS 2020, Eq. 2), mean over anchors.

    z: (N, V, D) L2-normalised embeddings of V views of N images; labels: (N,), or None for SimCLR
    (each image its own class: the only positives are its other views). Every one of the N V
    views is an anchor i; its positives P(i) are the other views of the same class, and
        L_out = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) ).
    With V >= 2 every anchor has at least one positive (its own other view), so an anchor whose class
    appears once in the batch is pulled only towards its other views, and |P(i)| = V - 1 for it.
    """
    n, v, _ = z.shape
    flat = z.reshape(n * v, -1)
    cls = (torch.arange(n, device=z.device) if labels is None else labels.to(z.device)).repeat_interleave(v)
    logits = flat @ flat.T / temperature
    self_mask = torch.eye(n * v, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))          # a != i in the denominator
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (cls[:, None] == cls[None, :]) & ~self_mask
    mean_log_prob = (log_prob.masked_fill(~positive, 0.0)).sum(1) / positive.sum(1).clamp(min=1)
    return -mean_log_prob.mean()


def per_sample(name: str) -> bool:
    """Whether loss `name` keeps per-sample state: its builder takes `num_samples` (ELR's targets)."""
    import inspect
    return "num_samples" in inspect.signature(LOSSES.get(name)).parameters


def build_loss(cfg: LossConfig, num_classes: int, num_samples: int = 0) -> Loss:
    """The run's loss; `num_samples` (the training split's size) sizes a loss with per-sample state."""
    builder = LOSSES.get(cfg.name)
    return builder(cfg, num_classes, num_samples=num_samples) if per_sample(cfg.name) else builder(cfg, num_classes)
