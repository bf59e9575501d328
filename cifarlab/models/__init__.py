"""Model registry: each name is a preset of the [model] config keys, built by one anatomy
(`cifarlab.models.net`). A preset's keys are defaults that the experiment's own [model] keys
override, and the run's resolved config records every key, so two runs' configs diff cleanly.
A new architecture is a new preset, or a new stem, block or norm in `cifarlab.models.layers`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from cifarlab.schema import ModelConfig
from cifarlab.registry import Registry


@dataclass(frozen=True)
class Preset:
    doc: str
    keys: dict
    build: Callable[[ModelConfig, int, int], nn.Module] | None = None   # a plug-in's own network; None: the anatomy


MODELS: Registry = Registry("model")


def preset(name: str, doc: str, build: Callable[[ModelConfig, int, int], nn.Module] | None = None,
           origin: str | None = None, option_names: tuple[str, ...] | None = None, **keys) -> None:
    """Register `name`: a preset of [model] keys, built by the anatomy (`cifarlab.models.net`) or, for
    a plug-in (its module: `origin`), by `build(cfg, num_classes, image_size)`; `option_names`: the
    `model.options` keys it reads (the anatomy reads none)."""
    MODELS.register(name, origin, option_names=() if build is None else option_names)(Preset(doc, keys, build))


def build_model(cfg: ModelConfig, num_classes: int, image_size: int = 32) -> nn.Module:
    from cifarlab.models.net import build_net
    entry = MODELS.get(cfg.name)  # an unknown name is one line naming the valid ones
    return (entry.build or build_net)(cfg, num_classes, image_size)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_BN_GAP = dict(norm="batch", head="gap", dense=())
_RESNET = dict(stem="conv", stem_width=64, widths=(64, 128, 256, 512), blocks_per_stage=2,
               downsample="stride", head="gap", dense=(), norm="batch")
preset("vgg", "the tutorial's VGG: 3 blocks of two 3x3 convs and a max pool, flatten, dense 128")
preset("vgg_bn", "vgg with BatchNorm after each conv", norm="batch")
preset("vgg_gap", "vgg_bn, global average pooling + the classifier in place of flatten + dense 128", **_BN_GAP)
preset("vgg_strided", "vgg_gap, each max pool replaced by a stride-2 first conv of the next block (ResNet's place)",
       **_BN_GAP, downsample="stride")
preset("vgg_residual", "vgg_strided with skip connections: each block a basic residual block (He et al. 2016; "
       "the first block's shortcut projects the image's 3 channels with a 1x1 conv)",
       **_BN_GAP, downsample="stride", block="basic")
preset("vgg_residual4", "vgg_residual with a fourth block of 256 channels", **_BN_GAP, downsample="stride",
       block="basic", widths=(32, 64, 128, 256))
preset("vgg_plain4", "vgg_strided with a fourth block of 256 channels, no skips", **_BN_GAP,
       downsample="stride", widths=(32, 64, 128, 256))
preset("resnet18", "ResNet-18 for CIFAR (He et al. 2016): 3x3 stem, no stem pool, 4 stages x 2 basic blocks",
       **_RESNET, block="basic")
preset("preact_resnet18", "pre-activation ResNet-18 (He et al. 2016b), with the paper's final norm + ReLU",
       **_RESNET, block="preact")
preset("resnet9", "the DAWNBench ResNet-9 layout (Page 2018): 3x3 stem of 64, three pooled stages of 128/256/512 "
       "(conv, max pool, norm, ReLU, one residual unit each; Page's middle stage has none), global average pooling",
       stem="conv", stem_width=64, widths=(128, 256, 512), block="pooled", blocks_per_stage=1,
       downsample="max", head="gap", dense=(), norm="batch")
preset("airbench", "the network of airbench94 (Jordan 2024) in this anatomy: a 2 x 2 patch-whitening stem (24 "
       "filters), three airbench stages of 64/256/256 (conv, max pool, norm, ReLU, conv, norm, ReLU; no skips), "
       "global average pooling (airbench: a final max pool) and the classifier; ReLU (airbench: GELU, "
       "model.activation = 'gelu')",
       stem="whiten", patch=2, stem_width=0, widths=(64, 256, 256), block="airbench", convs_per_block=2,
       downsample="max", head="gap", dense=(), norm="batch")
