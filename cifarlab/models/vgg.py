"""VGG-style networks: blocks of 3x3 "same" convolutions, each block closed by pooling.

The default config is the tutorial's baseline (Brownlee, "How to Develop a CNN From
Scratch for CIFAR-10 Photo Classification"): conv32-conv32-pool-conv64-conv64-pool-
conv128-conv128-pool-dense128-dense10, ReLU, 550,570 parameters.
"""

from __future__ import annotations

from torch import nn

from cifarlab.config import ModelConfig
from cifarlab.models import MODELS


def conv_unit(c_in: int, c_out: int, batchnorm: bool) -> list[nn.Module]:
    # A conv followed by BatchNorm needs no bias: BN's shift replaces it.
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(c_out))
    return layers + [nn.ReLU(inplace=True)]


def vgg_block(c_in: int, c_out: int, cfg: ModelConfig, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(cfg.convs_per_block):
        layers += conv_unit(c_in if i == 0 else c_out, c_out, cfg.batchnorm)
    layers.append(nn.MaxPool2d(2) if cfg.pool == "max" else nn.AvgPool2d(2))
    if dropout > 0:
        # The tutorial drops after pooling; `dropout_before_bn` moves it in front of the
        # block's last BatchNorm so both orders can be compared.
        at = len(layers) - 3 if cfg.dropout_before_bn and cfg.batchnorm else len(layers)
        layers.insert(at, nn.Dropout(dropout))
    return nn.Sequential(*layers)


def dense_head(c_in: int, cfg: ModelConfig, num_classes: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in cfg.dense:
        layers += [nn.Linear(c_in, width), nn.ReLU(inplace=True)]
        if cfg.dense_dropout > 0:
            layers.append(nn.Dropout(cfg.dense_dropout))
        c_in = width
    return layers + [nn.Linear(c_in, num_classes)]


def he_uniform_(model: nn.Module) -> None:
    """Keras' he_uniform on every conv/dense kernel (limit sqrt(6 / fan_in)), zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@MODELS.register("vgg")
def vgg(cfg: ModelConfig, num_classes: int, image_size: int = 32) -> nn.Sequential:
    rates = cfg.dropout or (0.0,) * len(cfg.widths)
    blocks, c = [], 3
    for width, rate in zip(cfg.widths, rates):
        blocks.append(vgg_block(c, width, cfg, rate))
        c = width
    side = image_size // 2 ** len(cfg.widths)
    model = nn.Sequential(*blocks, *dense_head(c * side * side, cfg, num_classes))
    he_uniform_(model)
    return model
