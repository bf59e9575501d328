"""One model anatomy for every network here: stem -> stages -> pooling -> head.

`features(x)` maps images to a (N, D) representation (after the flatten or the global average
pooling); `head(z)` maps it to logits (the dense layers of the tutorial, if any, then the
classifier). `forward` is `head(features(x))`. A linear probe or an MLP on frozen features
(supervised contrastive pre-training) uses `features` alone.

The config keys (`cifarlab/config.py`, [model]) choose each part; a model registry name
(`cifarlab list models`) is a preset of those keys. From the tutorial VGG to a ResNet:

    vgg                 3 plain stages of 2 convs, max pooling, flatten + dense 128 (550,570 parameters)
    + head = "gap"      global average pooling + the classifier instead of flatten + dense
                        ("gmp": global max pooling, airbench's final max pool over the last 3 x 3 map)
    + downsample = "stride"   each max pool replaced by a stride-2 first conv of the next stage
    + block = "basic"   skip connections: each stage one basic residual block
    + widths with a 4th entry   a fourth stage
"""

from __future__ import annotations

import torch
from torch import nn

from cifarlab.schema import ModelConfig
from cifarlab.errors import ConfigError
from cifarlab.models.layers import STEMS, act, norm, stage


class Net(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int, image_size: int = 32):
        super().__init__()
        check_image_size(cfg, image_size)
        self.stem, c = STEMS.get(cfg.stem)(cfg)
        rates = cfg.dropout or (0.0,) * len(cfg.widths)
        stages = []
        for i, (width, rate) in enumerate(zip(cfg.widths, rates)):
            stages.append(stage(i, c, width, cfg, rate))
            c = width
        self.stages = nn.Sequential(*stages)
        # A pre-activation network ends with the norm and ReLU its last block left out.
        self.final = nn.Sequential(norm(c, cfg), act(cfg)) if cfg.block == "preact" else nn.Identity()
        pools = {"flatten": nn.Flatten, "gap": lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                 "gmp": lambda: nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())}
        self.pool = pools[cfg.head]()
        self.feature_dim = c * self._side(image_size) ** 2 if cfg.head == "flatten" else c
        layers: list[nn.Module] = []
        d = self.feature_dim
        for width in cfg.dense:
            layers += [nn.Linear(d, width), act(cfg)]
            if cfg.dense_dropout > 0:
                layers.append(nn.Dropout(cfg.dense_dropout))
            d = width
        self.classifier = nn.Sequential(*layers, nn.Linear(d, num_classes, bias=cfg.head_bias))
        self.logit_scale = cfg.logit_scale

    def _side(self, image_size: int) -> int:
        # In eval mode: no BatchNorm statistics move and no dropout draws from the seeded RNG.
        was = self.training
        self.eval()
        with torch.no_grad():
            out = self.stages(self.stem(torch.zeros(1, 3, image_size, image_size)))
        self.train(was)
        return out.shape[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.final(self.stages(self.stem(x))))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(z)
        return logits if self.logit_scale == 1.0 else logits * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def check_image_size(cfg: ModelConfig, image_size: int) -> None:
    """Shapes that only the image size decides: one line naming the key and what is valid."""
    if cfg.stem == "patchify" and image_size % cfg.patch:
        raise ConfigError(f"model.patch = {cfg.patch} does not divide the image size {image_size}; "
                          f"use a divisor of {image_size}, e.g. 2 or 4")
    stem_factor = cfg.patch if cfg.stem == "patchify" else 1
    side = image_size // stem_factor - (cfg.patch - 1 if cfg.stem == "whiten" else 0)
    halvings = len(cfg.widths) - (1 if cfg.downsample == "stride" else 0)
    if side < 2 ** halvings:
        raise ConfigError(f"{len(cfg.widths)} stages halve a {image_size} px image {halvings} times "
                          f"(after a stem of stride {stem_factor}): below 1 pixel; use fewer stages or a smaller patch")


def he_uniform_(model: nn.Module) -> None:
    """Keras' he_uniform on every conv/dense kernel (limit sqrt(6 / fan_in)), zero biases: the
    tutorial's initialisation, kept for every network so that comparisons change one thing."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def partial_identity_(model: nn.Module) -> None:
    """The first c_in filters of every 3x3 convolution with c_out >= c_in become the identity (a
    Dirac delta at the centre), the rest keep their initialisation: each layer starts by passing its
    input through beside new features (airbench, Jordan 2024: "partial identity initialization")."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1 and \
                m.out_channels >= m.in_channels:
            with torch.no_grad():
                nn.init.dirac_(m.weight[:m.in_channels])


def build_net(cfg: ModelConfig, num_classes: int, image_size: int = 32) -> Net:
    model = Net(cfg, num_classes, image_size)
    he_uniform_(model)
    if cfg.init == "dirac":
        partial_identity_(model)
    return model
