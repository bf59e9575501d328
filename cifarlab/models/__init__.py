"""Model registry. A new architecture is a new module that registers a builder here."""

from __future__ import annotations

from torch import nn

from cifarlab.config import ModelConfig
from cifarlab.registry import Registry

MODELS: Registry = Registry("model")


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    return MODELS.get(cfg.name)(cfg, num_classes)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


from cifarlab.models import vgg  # noqa: E402,F401  (registers its builders)
