"""Optimizer and learning-rate schedule registries.

Schedules are pure functions of the step: `multiplier(step, total, steps_per_epoch)`
returns the factor applied to `optim.lr` at that step. Warm-up is shared by all.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from cifarlab.schema import OptimConfig, ScheduleConfig
from cifarlab.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")
Schedule = Callable[[int, int, int], float]


class WeightAverage(nn.Module):
    """An exponential moving average of a network's weights, taken after every optimizer step
    (Polyak & Juditsky 1992; the `ema` of timm's and of airbench's lookahead): `average <- d *
    average + (1 - d) * weights`, with `d = min(decay, (1 + t) / (10 + t))` at step t so that the
    first steps' random weights fade fast (TensorFlow's ExponentialMovingAverage with num_updates).
    Buffers (BatchNorm's running statistics) are copied, not averaged: they describe the current
    weights' activations. `module` is the averaged network that evaluation and the test use."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        import copy
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for average, weights in zip(self.module.parameters(), model.parameters()):
            average.lerp_(weights.detach(), 1 - d)
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            mine.copy_(theirs)


class Lookahead:
    """Lookahead (Zhang, Lucas, Hinton & Ba 2019, "Lookahead Optimizer: k steps forward, 1 step
    back"): the optimizer moves the network (the fast weights) for `k` steps, then the slow weights
    move a fraction `alpha` of the way towards them, `slow <- slow + alpha (fast - slow)`, and the
    network restarts from there (`fast <- slow`); the optimizer's state (momentum) is kept, as in
    the paper's experiments. airbench94 takes such a step every 5 optimizer steps.

    Here a cycle also ends at the last step of every epoch, so validation, the checkpoint and the
    test always see the slow weights (fast = slow there), and a resumed run restarts its slow
    weights from the checkpoint's network: exact, with nothing more to save. Buffers (BatchNorm's
    running statistics) stay the network's.

    `ramp = "cubic"` schedules alpha as airbench94 does (its decay 0.95^5 (t/T)^3 is 1 - alpha):
    1 - (1 - alpha) (t/T)^3 after global step t of T, plain training at first, the full pull
    towards the slow weights only at the end."""

    def __init__(self, k: int, alpha: float, ramp: str = "none", total_steps: int = 1):
        self.k, self.alpha, self.ramp, self.total = k, alpha, ramp, max(total_steps, 1)
        self.slow: list[torch.Tensor] = []

    def alpha_at(self, step: int) -> float:
        """The step size of a cycle that ends after global optimizer step `step` (from 0)."""
        if self.ramp == "none":
            return self.alpha
        return 1 - (1 - self.alpha) * min((step + 1) / self.total, 1.0) ** 3

    @torch.no_grad()
    def start(self, model: nn.Module) -> None:
        """At the start of an epoch: the slow weights are the network's."""
        self.slow = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def after_step(self, model: nn.Module, i: int, last: bool, step: int = 0) -> None:
        """After the epoch's optimizer step `i` (from 0), global step `step`; `last`: the epoch's final step."""
        if (i + 1) % self.k and not last:
            return
        alpha = self.alpha_at(step)
        for slow, fast in zip(self.slow, model.parameters()):
            slow.lerp_(fast.detach(), alpha)
            fast.copy_(slow)


def param_groups(model: nn.Module, weight_decay: float, bias_lr: float = 1.0) -> list[dict]:
    """Decay kernels only: biases and norm scales are not shrunk (the usual practice). The latter
    learn at `bias_lr` times the rate (`lr_scale`, which `set_learning_rates` applies)."""
    kernels = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": kernels, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": others, "weight_decay": 0.0, "lr_scale": bias_lr}]


@OPTIMIZERS.register("sgd")
def sgd(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


@OPTIMIZERS.register("adam")
def adam(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    # Adam's weight_decay is coupled (added to the gradient); AdamW's is decoupled.
    return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


@OPTIMIZERS.register("adamw")
def adamw(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def orthogonalise(g: torch.Tensor, steps: int = 3) -> torch.Tensor:
    """A fast approximate orthogonalisation of the matrix `g` (rows x columns): about U V^T of
    its singular value decomposition U S V^T, with the singular values pushed into roughly
    [0.5, 1.5] rather than exactly to 1, by `steps` iterations of Jordan's quintic Newton-Schulz
    map X <- aX + (b A + c A^2) X, A = X X^T (Jordan et al. 2024, "Muon"). Computed in float32:
    the filters' matrices are small beside a training step's convolutions."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float()
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T                       # iterate on the side with fewer rows
    x = x / (x.norm() + 1e-7)                    # every singular value <= 1
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """SGD with (Nesterov) momentum for every parameter group, and Muon's step for the groups
    marked `orthogonal` (the conv filters): the momentum-averaged gradient of each filter bank,
    flattened to out_channels x (in_channels * k * k), is orthogonalised (`orthogonalise`) and
    the bank, first rescaled to Frobenius norm sqrt(out_channels), moves `lr` along it
    (airbench94_muon's recipe; the norms that follow each conv make the bank's scale free, so
    the rescaling fixes the step's relative size). Other groups take PyTorch's SGD step with
    their own momentum and coupled weight decay."""

    def __init__(self, groups: Iterable[dict], lr: float, momentum: float, nesterov: bool):
        super().__init__(groups, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=0.0,
                                      orthogonal=False))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ARG002 (the Optimizer signature)
        for group in self.param_groups:
            m = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if not group["weight_decay"] else p.grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.detach().clone()
                else:
                    state["momentum_buffer"].mul_(m).add_(g)
                buf = state["momentum_buffer"]
                g = g.add(buf, alpha=m) if group["nesterov"] else buf
                if group["orthogonal"]:
                    p.mul_(p.shape[0] ** 0.5 / p.norm().clamp_min(1e-12))
                    g = orthogonalise(g.reshape(len(g), -1)).view_as(p)
                p.add_(g, alpha=-group["lr"])


@OPTIMIZERS.register("muon")
def muon(groups: Iterable[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Muon on the trainable conv filters (4-D kernels) at optim.muon_lr and muon_momentum, no
    weight decay (their scale is reset each step); SGD on the rest at optim.lr."""
    split = []
    for group in groups:
        filters = [p for p in group["params"] if p.ndim == 4 and p.requires_grad]
        rest = [p for p in group["params"] if not (p.ndim == 4 and p.requires_grad)]
        if filters:
            split.append({**group, "params": filters, "orthogonal": True, "lr": cfg.muon_lr, "momentum": cfg.muon_momentum,
                          "nesterov": cfg.nesterov and cfg.muon_momentum > 0, "weight_decay": 0.0,
                          "lr_scale": group["lr_scale"] * cfg.muon_lr / cfg.lr})
        if rest:
            split.append({**group, "params": rest})
    return Muon(split, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(cfg.name)(param_groups(model, cfg.weight_decay, cfg.bias_lr), cfg)


def l2_penalty(model: nn.Module) -> torch.Tensor:
    """sum(w^2) over conv and dense kernels: Keras' kernel_regularizer=l2(.) without the factor."""
    return sum((m.weight.pow(2).sum() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))),
               torch.zeros(()))


# ----------------------------------------------------------------------------- schedules

def build_schedule(cfg: ScheduleConfig) -> Schedule:
    """Wrap the named decay in the shared linear warm-up."""
    decay = SCHEDULES.get(cfg.name)(cfg)

    def multiplier(step: int, total: int, steps_per_epoch: int) -> float:
        warm = round(cfg.warmup * steps_per_epoch)
        if step < warm:
            return cfg.warmup_start + (1 - cfg.warmup_start) * (step + 1) / warm
        return decay(step - warm, max(total - warm, 1), steps_per_epoch)
    return multiplier


@SCHEDULES.register("constant")
def constant(cfg: ScheduleConfig) -> Schedule:
    return lambda step, total, spe: 1.0


@SCHEDULES.register("step")
def step_decay(cfg: ScheduleConfig) -> Schedule:
    return lambda step, total, spe: cfg.step_gamma ** math.floor(step / (cfg.step_every * spe))


@SCHEDULES.register("linear")
def linear(cfg: ScheduleConfig) -> Schedule:
    """Linear decay to final_lr; with warm-up this is the triangular one-cycle shape."""
    return lambda step, total, spe: 1.0 + (cfg.final_lr - 1.0) * step / total


@SCHEDULES.register("cosine")
def cosine(cfg: ScheduleConfig) -> Schedule:
    """Cosine annealing to final_lr (Loshchilov & Hutter, https://arxiv.org/abs/1608.03983)."""
    return lambda step, total, spe: cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * step / total))


@SCHEDULES.register("cosine_restarts")
def cosine_restarts(cfg: ScheduleConfig) -> Schedule:
    """SGDR: cosine cycles, the first restart_every epochs long, each restart_mult times the previous."""
    def f(step: int, total: int, spe: int) -> float:
        cycle = max(round(cfg.restart_every * spe), 1)
        if cfg.restart_mult == 1:
            step %= cycle
        while step >= cycle:  # growing cycles: a few iterations
            step -= cycle
            cycle = max(round(cycle * cfg.restart_mult), cycle + 1)
        t = step / cycle
        return cfg.final_lr + (1 - cfg.final_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return f


def end_of_schedule_warning(cfg: ScheduleConfig, epochs: float) -> str | None:
    """A cosine_restarts run that stops mid-cycle ends at a high LR and measures where it stopped.

    Judged on a fine nominal grid (1000 steps per epoch), so the warning does not depend on the
    dataset size; other schedules end where their config says and get no warning."""
    if cfg.name != "cosine_restarts":
        return None
    spe = 1000
    total = max(1, round(epochs * spe))
    last = build_schedule(cfg)(total - 1, total, spe)
    if last - cfg.final_lr <= 0.05 * (1 - cfg.final_lr):
        return None
    return (f"cosine_restarts ends mid-cycle: the last step runs at {last:.0%} of the peak LR; choose "
            "schedule.restart_every / restart_mult (and warm-up) so that a cycle ends at train.epochs")
