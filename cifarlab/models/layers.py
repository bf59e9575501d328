"""The parts every model is built from: norms, stems, stages of blocks, Squeeze-and-Excitation.

A network is stem -> stages -> pooling -> head (see `cifarlab.models.net`). Each stage is a list
of blocks of one width; downsampling between stages is either a pooling layer at the end of each
stage (the VGG way) or a stride-2 first convolution of every stage but the first (the ResNet way,
He et al. 2016, "Deep Residual Learning for Image Recognition").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.schema import POOLING_BLOCKS, ModelConfig
from cifarlab.registry import Registry

# --------------------------------------------------------------------------- norms
NORMS: Registry = Registry("norm")


@NORMS.register("none")
def _no_norm(channels: int, cfg: ModelConfig) -> nn.Module:
    return nn.Identity()


@NORMS.register("batch")
def _batch(channels: int, cfg: ModelConfig) -> nn.Module:
    """BatchNorm (Ioffe & Szegedy 2015): per channel, over the batch and both spatial axes."""
    return nn.BatchNorm2d(channels, momentum=cfg.norm_momentum)


class ContiguousGroupNorm(nn.GroupNorm):
    """nn.GroupNorm (same parameters, same numbers) computed on a contiguous NCHW copy on a CPU.

    PyTorch's CPU GroupNorm kernels are slow on channels-last tensors when groups are small: in
    the ResNet-ified network (bf16 autocast, 1 thread, Intel Xeon with AMX) one training step with
    InstanceNorm ran 4.5x faster with this round trip, GroupNorm(8) 1.1x; LayerNorm (one group) is
    faster left as it is, so it keeps the plain module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.is_contiguous():
            return super().forward(x)
        return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last)


@NORMS.register("group")
def _group(channels: int, cfg: ModelConfig) -> nn.Module:
    """GroupNorm (Wu & He 2018): per sample, over each group of `model.groups` channels and space."""
    return ContiguousGroupNorm(cfg.groups, channels)


@NORMS.register("layer")
def _layer(channels: int, cfg: ModelConfig) -> nn.Module:
    """LayerNorm for conv features: per sample, over all channels and both spatial axes (C, H, W),
    with a per-channel scale and shift. That is GroupNorm with one group, which is how Wu & He (2018)
    define LayerNorm for conv nets; unlike `nn.LayerNorm([C, H, W])` its affine parameters do not
    depend on the image size, so one network runs at 32 px and at 64 px."""
    return nn.GroupNorm(1, channels)


@NORMS.register("instance")
def _instance(channels: int, cfg: ModelConfig) -> nn.Module:
    """InstanceNorm (Ulyanov et al. 2016): per sample and channel, over space (GroupNorm with one
    channel per group), with a learned per-channel scale and shift and no running statistics."""
    return ContiguousGroupNorm(channels, channels)


# --------------------------------------------------------------------------- activations
ACTIVATIONS: Registry = Registry("activation")


@ACTIVATIONS.register("relu")
def _relu(inplace: bool) -> nn.Module:
    return nn.ReLU(inplace=inplace)


@ACTIVATIONS.register("gelu")
def _gelu(inplace: bool) -> nn.Module:
    """GELU (Hendrycks & Gimpel 2016), the exact erf form; airbench94's activation. No in-place form."""
    return nn.GELU()


def act(cfg: ModelConfig, inplace: bool = True) -> nn.Module:
    """The configured activation (`model.activation`)."""
    return ACTIVATIONS.get(cfg.activation)(inplace)


def norm(channels: int, cfg: ModelConfig) -> nn.Module:
    """The configured norm; with `norm_scale = false` its per-channel scale stays at 1 (not trained)."""
    layer = NORMS.get(cfg.norm)(channels, cfg)
    if not cfg.norm_scale and getattr(layer, "weight", None) is not None:
        layer.weight.requires_grad_(False)
    return layer


def conv(c_in: int, c_out: int, cfg: ModelConfig, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
    # A conv followed by a norm needs no bias: the norm's shift replaces it.
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2 if kernel > 1 else 0,
                     bias=cfg.norm == "none")


# --------------------------------------------------------------------------- SE
class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018): global average pool, a bottleneck of
    channels / ratio units with ReLU, a sigmoid gate that rescales each channel."""

    def __init__(self, channels: int, ratio: int):
        super().__init__()
        hidden = max(1, channels // ratio)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(torch.relu(self.reduce(s))))


def maybe_se(channels: int, cfg: ModelConfig) -> list[nn.Module]:
    return [SqueezeExcite(channels, cfg.se)] if cfg.se else []


# --------------------------------------------------------------------------- stems
STEMS: Registry = Registry("stem")


@STEMS.register("none")
def _no_stem(cfg: ModelConfig) -> tuple[nn.Module, int]:
    return nn.Identity(), 3


@STEMS.register("conv")
def _conv_stem(cfg: ModelConfig) -> tuple[nn.Module, int]:
    """A 3x3 convolution to `stem_width` channels (then norm and ReLU; a pre-activation network
    leaves those to its first block), as in ResNet for CIFAR: no stride and no max pool."""
    width = cfg.stem_width or cfg.widths[0]
    layers = [conv(3, width, cfg)]
    if cfg.block != "preact":
        layers += [norm(width, cfg), act(cfg)]
    return nn.Sequential(*layers), width


@STEMS.register("patchify")
def _patchify(cfg: ModelConfig) -> tuple[nn.Module, int]:
    """Patchify and embed: a convolution whose kernel equals its stride (`model.patch`), each
    non-overlapping patch mapped to `stem_width` channels, then a norm: the first operation of a
    Vision Transformer (Dosovitskiy et al. 2021) and of ConvNeXt (Liu et al. 2022)."""
    width = cfg.stem_width or cfg.widths[0]
    return nn.Sequential(nn.Conv2d(3, width, cfg.patch, stride=cfg.patch, bias=cfg.norm == "none"),
                         norm(width, cfg)), width


class Whiten(nn.Module):
    """Patch whitening (Coates & Ng 2012; the first layer of Keller Jordan's airbench, after
    tysam-code's hlb-CIFAR10): a k x k convolution (stride 1, no padding) whose filters are the
    top principal directions of the training images' k x k patches, each scaled by
    1 / sqrt(eigenvalue + eps), and the same filters negated, so that a ReLU after it keeps both
    signs. The filters are fitted once from training images (`fit`, called by the training loop
    before the first step) and never trained; the bias is trained."""

    EPS = 5e-4  # added to each eigenvalue: bounds the gain of the faintest directions kept

    def __init__(self, patch: int, width: int, channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, patch, bias=True)
        self.conv.weight.requires_grad_(False)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Fit the filters to `images` (N, C, H, W), the model's input (preprocessed floats)."""
        whiten_conv_(self.conv, images, self.EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@torch.no_grad()
def whiten_conv_(conv: nn.Conv2d, images: torch.Tensor, eps: float = Whiten.EPS, chunk: int = 500) -> None:
    """Set `conv`'s filters to the top out_channels / 2 principal directions of the k x k patches of
    `images` (N, C, H, W), each scaled by 1 / sqrt(eigenvalue + eps), then the same filters negated;
    its bias (if any) maps the mean patch to zero. Each output channel then has unit variance
    over the patches, and a ReLU after it keeps both signs of every direction."""
    k, half = conv.kernel_size[0], conv.out_channels // 2
    dim = images.shape[1] * k * k
    total, outer, count = torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dim, dtype=torch.float64), 0
    for i in range(0, len(images), chunk):
        patches = F.unfold(images[i:i + chunk].float().cpu(), k).transpose(1, 2).reshape(-1, dim).double()
        total += patches.sum(0)
        outer += patches.T @ patches
        count += len(patches)
    mean = total / count
    values, vectors = torch.linalg.eigh(outer / count - mean[:, None] * mean[None, :])  # ascending
    top = vectors[:, -half:].flip(1).T / (values[-half:].flip(0).clamp(min=0) + eps).sqrt()[:, None]
    filters = torch.cat([top, -top])
    conv.weight.copy_(filters.reshape(conv.weight.shape).to(conv.weight.dtype))
    if conv.bias is not None:  # centre the outputs: the mean patch maps to zero before the bias trains
        conv.bias.copy_(-(filters @ mean).to(conv.bias.dtype))


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The model's first convolution (the one that sees the images); every network here has one."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def fit_whitening(model: nn.Module, images: torch.Tensor, first: bool = False) -> None:
    """Fit every `Whiten` layer of `model` to `images` (preprocessed model input); with `first`
    (`model.whiten_init`), also start the first convolution's trainable filters as whitening
    filters of its own k x k patches."""
    for m in model.modules():
        if isinstance(m, Whiten):
            m.fit(images)
    if first:
        whiten_conv_(first_conv(model), images)


@STEMS.register("whiten")
def _whiten(cfg: ModelConfig) -> tuple[nn.Module, int]:
    """Patch whitening (`Whiten`) with `model.patch` x `model.patch` filters, then a ReLU: the
    stem's width is 2 x 3 x patch^2 (every principal direction, both signs; 24 for patch 2), or
    `stem_width` (even) for the top stem_width / 2 directions. The image shrinks by patch - 1
    pixels (no padding), as in airbench."""
    width = cfg.stem_width or 2 * 3 * cfg.patch ** 2
    return nn.Sequential(Whiten(cfg.patch, width), act(cfg)), width


# --------------------------------------------------------------------------- blocks
class Residual(nn.Module):
    """`branch(x) + shortcut(x)`: the shortcut is the identity when shapes agree, else a 1x1
    projection with stride (He et al. 2016, option B) followed by a norm."""

    def __init__(self, branch: nn.Module, c_in: int, c_out: int, stride: int, cfg: ModelConfig,
                 post: nn.Module | None = None, project_norm: bool = True):
        super().__init__()
        self.branch = branch
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            layers = [conv(c_in, c_out, cfg, kernel=1, stride=stride)]
            self.shortcut = nn.Sequential(*layers, norm(c_out, cfg)) if project_norm else layers[0]
        self.post = post if post is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.branch(x) + self.shortcut(x))


def basic_block(c_in: int, c_out: int, stride: int, cfg: ModelConfig) -> nn.Module:
    """The basic residual block (He et al. 2016): conv-norm-ReLU-conv-norm (-SE), plus the
    shortcut, then ReLU."""
    branch = nn.Sequential(conv(c_in, c_out, cfg, stride=stride), norm(c_out, cfg), act(cfg),
                           conv(c_out, c_out, cfg), norm(c_out, cfg), *maybe_se(c_out, cfg))
    return Residual(branch, c_in, c_out, stride, cfg, post=act(cfg))


class PreActBlock(nn.Module):
    """The pre-activation block (He et al. 2016b, "Identity Mappings in Deep Residual Networks"):
    norm-ReLU-conv-norm-ReLU-conv (-SE), added to the shortcut with nothing after the sum. A
    projection shortcut takes the pre-activated input, as in the paper's code."""

    def __init__(self, c_in: int, c_out: int, stride: int, cfg: ModelConfig):
        super().__init__()
        self.pre = nn.Sequential(norm(c_in, cfg), act(cfg, inplace=False))
        self.branch = nn.Sequential(conv(c_in, c_out, cfg, stride=stride), norm(c_out, cfg),
                                    act(cfg), conv(c_out, c_out, cfg), *maybe_se(c_out, cfg))
        self.project = None
        if stride != 1 or c_in != c_out:
            self.project = conv(c_in, c_out, cfg, kernel=1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pre(x)
        shortcut = x if self.project is None else self.project(out)
        return self.branch(out) + shortcut


def plain_stage(c_in: int, c_out: int, stride: int, cfg: ModelConfig) -> list[nn.Module]:
    """A VGG block: `convs_per_block` conv-norm-ReLU units (the first with `stride`), then SE."""
    layers: list[nn.Module] = []
    for i in range(cfg.convs_per_block):
        layers += [conv(c_in if i == 0 else c_out, c_out, cfg, stride=stride if i == 0 else 1)]
        if cfg.norm != "none":
            layers.append(norm(c_out, cfg))
        layers.append(act(cfg))
    return layers + maybe_se(c_out, cfg)


BLOCKS: Registry = Registry("block")
BLOCKS.register("plain")(plain_stage)


@BLOCKS.register("basic")
def _basic_stage(c_in: int, c_out: int, stride: int, cfg: ModelConfig) -> list[nn.Module]:
    return [basic_block(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, cfg)
            for i in range(cfg.blocks_per_stage)]


@BLOCKS.register("preact")
def _preact_stage(c_in: int, c_out: int, stride: int, cfg: ModelConfig) -> list[nn.Module]:
    return [PreActBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, cfg)
            for i in range(cfg.blocks_per_stage)]


class ResidualUnit(nn.Module):
    """`x + f(x)` with f = (conv-norm-ReLU) twice at one width and resolution, no ReLU after the
    sum: the residual of the DAWNBench ResNet-9 (Page 2018, "How to train your ResNet")."""

    def __init__(self, c: int, cfg: ModelConfig):
        super().__init__()
        self.branch = nn.Sequential(conv(c, c, cfg), norm(c, cfg), act(cfg),
                                    conv(c, c, cfg), norm(c, cfg), act(cfg), *maybe_se(c, cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


def pool(cfg: ModelConfig) -> nn.Module:
    """The 2 x 2 pool of `downsample` (max | avg)."""
    return nn.MaxPool2d(2) if cfg.downsample == "max" else nn.AvgPool2d(2)


@BLOCKS.register("pooled")
def _pooled_stage(c_in: int, c_out: int, stride: int, cfg: ModelConfig) -> list[nn.Module]:
    """A conv to the stage's width, the pool (`downsample` max | avg), norm and ReLU, then
    `blocks_per_stage` residual units at the pooled resolution: a layer of the DAWNBench ResNet-9
    (Page 2018), with the pool in front of the norm as airbench (Jordan 2024) places it, so that
    only one convolution per stage runs at the stage's input resolution. Fast on a CPU, where
    element-wise work on large activations costs as much as the convolutions."""
    return [conv(c_in, c_out, cfg), pool(cfg), norm(c_out, cfg), act(cfg),
            *(ResidualUnit(c_out, cfg) for _ in range(cfg.blocks_per_stage))]


@BLOCKS.register("airbench")
def _airbench_stage(c_in: int, c_out: int, stride: int, cfg: ModelConfig) -> list[nn.Module]:
    """A conv to the stage's width, the pool (`downsample` max | avg), norm and ReLU, then
    `convs_per_block` - 1 more conv-norm-ReLU units at the pooled resolution, no skips: the layer
    of Keller Jordan's airbench94 (2024; GELU there: `model.activation`), i.e. the pooled stage with plain
    convolutions in place of its residual units."""
    layers = [conv(c_in, c_out, cfg), pool(cfg), norm(c_out, cfg), act(cfg)]
    for _ in range(cfg.convs_per_block - 1):
        layers += [conv(c_out, c_out, cfg), norm(c_out, cfg), act(cfg)]
    return layers + maybe_se(c_out, cfg)


def stage(index: int, c_in: int, c_out: int, cfg: ModelConfig, dropout: float) -> nn.Sequential:
    """Stage `index`: its blocks, then the VGG's pooling (downsample max | avg), then dropout.

    With `downsample = "stride"` the first convolution of every stage but the first has stride 2
    and no pooling follows. Dropout sits where the tutorial puts it, after the pooling, or with
    `dropout_before_bn` in front of the stage's last norm."""
    stride = 2 if cfg.downsample == "stride" and index > 0 else 1
    layers = BLOCKS.get(cfg.block)(c_in, c_out, stride, cfg)
    if cfg.downsample in ("max", "avg") and cfg.block not in POOLING_BLOCKS:  # these pool inside
        layers.append(pool(cfg))
    if dropout > 0:
        norms = [i for i, m in enumerate(layers) if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
        at = norms[-1] if cfg.dropout_before_bn and norms else len(layers)
        layers.insert(at, nn.Dropout(dropout))
    return nn.Sequential(*layers)
