"""The experiment's keys: every key, its default, its unit and its range, documented once.

One frozen dataclass per concern (data, augment, model, optim, schedule, loss, supcon, train) and
`ExperimentConfig`, which checks on construction what the values alone decide: ranges, choices that
are not registry names, and rules between keys (`cifarlab.config` coerces the types). Keys whose
values name registry entries (`REGISTERED` in `cifarlab.config`: `data.dataset`, `augment.pipeline`,
`model.name`, `optim.name`, ...) are checked by their registries: `cifarlab.config` asks them when it
reads a config, and each registry again when it builds an entry. This module imports no registry, so
that every registry can import the keys it builds from.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field

from cifarlab.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"     # cifar10 | cifar100 | imagenette (JPEG folders, decoded once at data.image_size)
    image_size: int = 0          # imagenette: side in pixels (shorter side resized, centre crop); 0 = 64; CIFAR: 0 or 32
    label_column: str = "noisy_labels_0"  # imagenette: the CSV column of the training labels: noisy_labels_0 (clean)
                                          # | noisy_labels_1 | noisy_labels_5 | noisy_labels_25 | noisy_labels_50 (published noise, %)
    labels: str = "fine"         # fine | coarse: CIFAR-100's 20 superclasses instead of its 100 classes
    val_size: int = 5000         # training images held out for validation (stratified); 0 = no validation
    split_seed: int = 0          # seed of the train/validation split; fixed across training seeds
    subset: int = 0              # use only this many training images (stratified by the labels trained on: with data.noise, the noisy ones), 0 = all; data.val_size comes out of them
    normalize: str = "unit"      # unit: pixels/255 in [0,1] | standard: per-channel zero mean, unit std (train split stats)
    noise: str = "none"          # label noise on the training images (train and validation splits; never test): none | symmetric | asymmetric | pairflip
    noise_rate: float = 0.0      # probability that a label is flipped, in [0, 1)
    noise_seed: int = 0          # seed of the noise: the same noisy labels for every training seed


@dataclass(frozen=True)
class AugmentConfig:
    # Training-set augmentation, on uint8 batches with per-image random parameters (cifarlab/augment/).
    pipeline: tuple[str, ...] = ()   # the augmentations, applied in this order (`cifarlab list augmentations`), e.g. ["flip", "translate"]
    translate: float = 0.0           # translate: max x and y shift, fraction of the width (tutorial: 0.1)
    fill: str = "edge"               # border fill of translate and affine: edge (Keras' "nearest") | zero | reflect
    rotate: float = 15.0             # affine: max rotation in degrees, in [0, 180]
    scale: float = 0.1               # affine: zoom drawn from [1 - scale, 1 + scale]
    shear: float = 0.0               # affine: max shear angle in degrees, in [0, 90)
    shift: float = 0.1               # affine: max translation, fraction of the width
    crop_area: float = 0.35          # resized_crop: smallest crop area as a fraction of the image (ratio 3/4 to 4/3)
    brightness: float = 0.2          # photometric: factor drawn from [1 - b, 1 + b]
    contrast: float = 0.2            # photometric: factor drawn from [1 - c, 1 + c], around the image's mean grey
    saturation: float = 0.2          # photometric: factor drawn from [1 - s, 1 + s], around each pixel's grey
    gray_p: float = 0.2              # grayscale: probability per image
    cutout: int = 16                 # cutout: side of the grey square in pixels (DeVries & Taylor: 16 on CIFAR-10)
    erase_p: float = 0.5             # erasing: probability per image (Zhong et al.: 0.5)
    erase_area: float = 0.4          # erasing: largest erased area, fraction of the image (smallest: 0.02)
    mix_alpha: float = 1.0           # mixup / cutmix: the Beta(alpha, alpha) of the mixing weight (1.0 for CIFAR in both papers)
    mix_p: float = 1.0               # mixup / cutmix: probability that a batch is mixed
    mix_off: float = 0.0             # mixup / cutmix: no mixing in this many last epochs (train on clean images at the end)


class Options(dict):
    """A plug-in's own keys (`model.options`, `loss.options`): a table of plain values, hashable so the
    configs that hold it stay usable as cache keys."""

    def __hash__(self) -> int:  # type: ignore[override]
        import json
        return hash(json.dumps(self, sort_keys=True))


@dataclass(frozen=True)
class ModelConfig:
    # stem -> stages -> pooling -> head (cifarlab/models/net.py); defaults: the tutorial's VGG
    name: str = "vgg"                           # preset of these keys (`cifarlab list models`); keys set here override it
    stem: str = "none"                          # none | conv (3x3 conv, norm, ReLU) | patchify (conv with kernel = stride = patch, then norm)
                                                # | whiten (patch x patch filters fitted to whiten the training patches, frozen; then ReLU)
    stem_width: int = 0                         # stem output channels; 0 = widths[0] (whiten: 2 x 3 x patch^2, every direction, both signs)
    patch: int = 4                              # patchify stem: patch size in pixels (must divide the image size); whiten: filter size
    widths: tuple[int, ...] = (32, 64, 128)     # output channels of each stage (VGG: block)
    block: str = "plain"                        # plain (VGG convs) | basic (residual, He et al. 2016) | preact (pre-activation, He et al. 2016b)
                                                # | pooled (conv, pool, norm, ReLU, then residual units: the DAWNBench ResNet-9's layer)
                                                # | airbench (conv, pool, norm, ReLU, then convs_per_block - 1 plain convs: airbench94's layer)
    convs_per_block: int = 2                    # plain stages: 3x3 convolutions per stage
    blocks_per_stage: int = 1                   # basic / preact / pooled stages: residual blocks (two 3x3 convs each) per stage
    downsample: str = "max"                     # max | avg: pool at the end of each stage (VGG) | stride: stride-2 first conv of each later stage (ResNet)
    norm: str = "none"                          # after each conv: none | batch | group | layer (all of C,H,W per sample) | instance
    groups: int = 32                            # norm = "group": channel groups (must divide every width)
    se: int = 0                                 # Squeeze-and-Excitation reduction ratio in every stage (Hu et al. 2018 use 16); 0 = off
    head: str = "flatten"                       # flatten (tutorial) | gap (global average pooling) | gmp (global max pooling: airbench); then the dense layers and the classifier
    dropout: tuple[float, ...] = ()             # dropout rate at the end of each stage (after its pooling); () = none
    dense: tuple[int, ...] = (128,)             # hidden dense layers before the classifier
    dense_dropout: float = 0.0                  # dropout after each hidden dense layer
    dropout_before_bn: bool = False             # stage dropout in front of the stage's last norm instead of at its end
    norm_scale: bool = True                     # train the norms' per-channel scales; false: fixed at 1 (airbench's BatchNorm)
    init: str = "he"                            # he (Keras' he_uniform, the tutorial's) | dirac (he, then the first c_in
                                                # filters of every 3x3 conv with c_out >= c_in set to the identity: airbench's)
    whiten_init: bool = False                   # the first conv's filters start as patch-whitening filters of the training
                                                # images (its top c_out/2 principal directions, both signs; Coates & Ng 2012)
                                                # and then train like the rest: airbench's whitening as an initialisation
    activation: str = "relu"                    # after each norm of the stem, stages and dense layers: relu | gelu
                                                # (Hendrycks & Gimpel 2016; airbench's); SE's bottleneck keeps ReLU
    logit_scale: float = 1.0                    # the classifier's outputs times this before the loss and any prediction
                                                # (airbench: 1/9, a temperature that slows the logits' growth)
    head_bias: bool = True                      # the classifier's bias (airbench has none)
    norm_momentum: float = 0.1                  # norm = "batch": weight of each batch in the running statistics, in
                                                # (0, 1] (PyTorch's momentum; airbench: 0.4, its "0.6" counted the other way)
    options: Options = field(default_factory=lambda: Options())  # a plug-in model's own keys, a TOML table: options = { depth = 3 } (docs/EXTENDING.md)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"            # optimizer (`cifarlab list optimizers`): sgd | adam | adamw | muon (orthogonalised steps for the
                                 # conv filters at muon_lr, SGD at lr for the rest: airbench94_muon's split)
    lr: float = 0.001            # peak learning rate
    momentum: float = 0.9        # SGD momentum (adam/adamw: beta1)
    nesterov: bool = False       # Nesterov momentum (SGD only)
    weight_decay: float = 0.0    # decoupled-from-loss decay applied by the optimizer, weights only (not biases/norms)
    l2: float = 0.0              # coupled L2 penalty l2 * sum(w^2) added to the loss on conv/dense kernels (Keras style)
    bias_lr: float = 1.0         # multiplier of the learning rate for biases and norm shifts/scales (airbench: 64, its norm
                                 # scales fixed with model.norm_scale = false)
    muon_lr: float = 0.24        # muon: peak learning rate of the conv filters' orthogonalised steps (airbench94_muon: 0.24);
                                 # every other parameter takes SGD steps at optim.lr (Nesterov as optim.nesterov says)
    muon_momentum: float = 0.6   # muon: the conv filters' momentum, in [0, 1) (airbench94_muon: 0.6, Nesterov)


@dataclass(frozen=True)
class ScheduleConfig:
    name: str = "constant"       # learning-rate schedule (`cifarlab list schedules`): constant | step | linear | cosine | cosine_restarts
    warmup: float = 0.0          # linear warm-up length, in epochs (fractions allowed)
    warmup_start: float = 0.0    # the warm-up's first step runs at this fraction of optim.lr, in [0, 1) (airbench: 0.2)
    final_lr: float = 0.0        # final learning rate, as a fraction of optim.lr
    step_every: float = 30.0     # step schedule: epochs between decays
    step_gamma: float = 0.1      # step schedule: multiplier at each decay
    restart_every: float = 10.0  # cosine_restarts: length of the first cycle, in epochs
    restart_mult: float = 1.0    # cosine_restarts: each cycle is this many times the previous (SGDR's T_mult);
                                 # pick lengths that end a cycle at the last epoch, or the run stops at a high LR


@dataclass(frozen=True)
class LossConfig:
    name: str = "ce"             # loss (`cifarlab list losses`): ce (cross-entropy; soft targets after mixing) | gce | sce | elr
    label_smoothing: float = 0.0 # cross-entropy label smoothing (Szegedy et al. 2016): 1 - e on the label, e / classes everywhere
    gce_q: float = 0.7           # gce: the exponent q of (1 - p_y^q) / q, in (0, 1] (Zhang & Sabuncu 2018: 0.7)
    sce_alpha: float = 0.1       # sce: weight of cross-entropy (Wang et al. 2019, CIFAR-10: 0.1)
    sce_beta: float = 1.0        # sce: weight of reverse cross-entropy (CIFAR-10: 1.0; the authors' code's A makes it 2.30 here)
    elr_beta: float = 0.7        # elr: momentum of the per-sample target average, in [0, 1) (Liu et al. 2020, CIFAR-10: 0.7; asymmetric noise: 0.9)
    elr_lambda: float = 3.0      # elr: weight of the regularizer (CIFAR-10: 3; asymmetric noise: 1)
    options: Options = field(default_factory=lambda: Options())  # a plug-in loss's own keys, a TOML table: options = { margin = 0.5 }


@dataclass(frozen=True)
class SupConConfig:
    # train.method = "supcon" (Khosla et al. 2020): train.epochs of pre-training with L_out, then the probe
    temperature: float = 0.1     # L_out's temperature (the paper: 0.1)
    projection: int = 128        # width of the L2-normalised embedding the projection MLP maps features to
    probe: str = "mlp"           # the classifier trained on the frozen features: mlp (one hidden layer) | linear
    probe_hidden: int = 256      # mlp probe: hidden units
    probe_epochs: float = 10.0   # epochs of the probe phase, after train.epochs of pre-training (whole numbers)
    probe_lr: float = 0.1        # the probe's SGD learning rate (momentum 0.9, linear decay to 0 over its phase)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 100.0        # training length in epochs (fractions allowed)
    batch_size: int = 64         # images per step
    seed: int = 0                # seeds weights, data order, augmentation and dropout
    precision: str = "auto"      # auto (bf16 where the CPU has native bf16, AMP on CUDA) | fp32 | bf16
    channels_last: str = "auto"  # auto (on) | on | off: NHWC memory layout
    device: str = "auto"         # auto (cuda if available) | cpu | cuda
    threads: int = 0             # CPU threads, 0 = PyTorch's default (one per core)
    eval_batch_size: int = 1000  # images per evaluation step
    tta: str = "none"            # test-time augmentation for validation and test: none | flip (mean of mirrored logits)
                                 # | flip-translate (mean over flip x {no shift, 1 px down-right, 1 px up-left}: 6 passes)
    method: str = "standard"     # what one step does (cifarlab/methods.py): standard | coteaching (two networks, Han et al. 2018) | supcon
    forget_rate: float = 0.0     # coteaching: the largest fraction of each batch a network drops as large-loss, in [0, 1) (the paper: the noise rate)
    forget_epochs: float = 10.0  # coteaching: epochs over which the dropped fraction grows linearly to forget_rate
    ema: float = 0.0             # weight averaging: decay of an exponential moving average of the weights, taken each
                                 # step (e.g. 0.99); validation and the test use the averaged network; 0 = off
    lookahead: int = 0           # Lookahead (Zhang et al. 2019): every k optimizer steps (and at each epoch's end) the slow
                                 # weights move lookahead_alpha of the way to the network, which restarts there; 0 = off
    lookahead_alpha: float = 0.5 # Lookahead's step size towards the fast weights, in (0, 1] (the paper: 0.5; 1 = off)
    lookahead_ramp: str = "none" # none: alpha fixed | cubic: alpha falls from 1 (plain training) at the first step to
                                 # lookahead_alpha at the last, 1 - (1 - alpha) (t/T)^3 (airbench94's: alpha 0.226)
    select: str = "last"         # the weights tested at the end: last (the last epoch's) | best_val (the epoch of best validation
                                 # accuracy: early stopping chosen on the validation split, noisy under label noise)
    checkpoint_every: int = 1    # save a resumable checkpoint every N epochs (and at the end)
    sync_bn: bool = False        # torchrun on CUDA: BatchNorm statistics over all processes' chunks (nn.SyncBatchNorm)
    tensorboard: bool = False    # also write each epoch's scalars as TensorBoard event files in the run directory
                                 # (`tensorboard --logdir runs/` compares a study's runs; needs the [tensorboard] extra)
    mlflow: bool = False         # also log the config, each epoch's scalars and the final metrics to MLflow
                                 # (MLFLOW_TRACKING_URI, else a local file store mlruns/; needs the [mlflow] extra)
    test: bool = True            # false: the run never reads the test set (a study's tuning runs: they choose on
                                 # validation, and their test accuracy is recorded as absent)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"     # run name; the run directory is runs/<name>/seed<seed> unless --out says otherwise
    plugins: tuple[str, ...] = ()  # modules imported before the config is resolved (docs/EXTENDING.md); not hashed
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    supcon: SupConConfig = field(default_factory=SupConConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)


SECTIONS = {k: v for k, v in typing.get_type_hints(ExperimentConfig).items() if k not in ("name", "plugins")}
# Keys with a fixed set of values that no registry holds (registry names: `cifarlab.config.REGISTERED`).
CHOICES = {
    ("data", "label_column"): ("noisy_labels_0", "noisy_labels_1", "noisy_labels_5", "noisy_labels_25", "noisy_labels_50"),
    ("data", "labels"): ("fine", "coarse"),
    ("data", "noise"): ("none", "symmetric", "asymmetric", "pairflip"),
    ("data", "normalize"): ("unit", "standard"),
    ("augment", "fill"): ("edge", "zero", "reflect"),
    ("model", "downsample"): ("max", "avg", "stride"),
    ("model", "head"): ("flatten", "gap", "gmp"),
    ("model", "init"): ("he", "dirac"),
    ("train", "precision"): ("auto", "fp32", "bf16"),
    ("train", "channels_last"): ("auto", "on", "off"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "tta"): ("none", "flip", "flip-translate"),
    ("train", "select"): ("last", "best_val"),
    ("train", "lookahead_ramp"): ("none", "cubic"),
    ("supcon", "probe"): ("mlp", "linear"),
}
POOLING_BLOCKS = ("pooled", "airbench")  # model.block values whose stages pool after their first conv (no pool at the end)
POSITIVE = {("optim", "bias_lr"), ("optim", "muon_lr"), ("model", "logit_scale"), ("supcon", "temperature"), ("supcon", "projection"), ("supcon", "probe_hidden"),
            ("supcon", "probe_epochs"), ("supcon", "probe_lr"), ("augment", "mix_alpha"), ("model", "patch"), ("model", "convs_per_block"), ("model", "blocks_per_stage"), ("model", "groups"),
            ("optim", "lr"), ("train", "epochs"), ("train", "batch_size"), ("train", "eval_batch_size"),
            ("train", "checkpoint_every"), ("schedule", "step_every"), ("schedule", "restart_every")}
NON_NEGATIVE = {("train", "forget_epochs"), ("loss", "elr_lambda"), ("data", "image_size"), ("loss", "sce_alpha"), ("loss", "sce_beta"), ("data", "noise_seed"), ("augment", "cutout"), ("augment", "rotate"), ("augment", "scale"), ("augment", "shear"), ("augment", "shift"),
                ("augment", "brightness"), ("augment", "contrast"), ("augment", "saturation"), ("augment", "mix_off"),
                ("model", "stem_width"), ("model", "se"), ("data", "val_size"), ("data", "subset"), ("augment", "translate"), ("optim", "momentum"),
                ("optim", "weight_decay"), ("optim", "l2"), ("schedule", "warmup"), ("schedule", "final_lr"),
                ("loss", "label_smoothing"), ("train", "threads"), ("train", "seed")}
# Keys in [0, 1): fractions and rates that 1 would make degenerate; and probabilities, in [0, 1].
BELOW_ONE = {("train", "ema"), ("schedule", "warmup_start"), ("optim", "muon_momentum"), ("data", "noise_rate"), ("train", "forget_rate"), ("loss", "elr_beta"), ("augment", "scale"),
             ("augment", "brightness"), ("augment", "contrast"), ("augment", "saturation"), ("augment", "shift")}
PROBABILITY = {("augment", "erase_p"), ("augment", "mix_p"), ("augment", "gray_p")}

# Left out of config_hash: the seed (the seeds of one experiment share a hash) and keys that
# change how a run executes but not what it computes, so that a run with 1 thread, or one
# checkpointing less often, counts as the same experiment.
SEEDS = {("train", "seed"), ("data", "split_seed"), ("data", "noise_seed")}
SEED_MAX = 2**32 - 1   # what every generator takes (torch's seeds are 64-bit, NumPy's legacy ones 32-bit)

NOT_HASHED = {("train", "seed"), ("train", "threads"), ("train", "checkpoint_every"),
              ("train", "eval_batch_size"), ("train", "tensorboard"), ("train", "mlflow")}


# Experiment, variant and study names become directory names (runs/<study>/<variant>/...).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str, what: str) -> None:
    if not NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r} is not a valid name: use letters, digits, '.', '-' and '_', "
                          "starting with a letter or digit (it becomes a directory name)")


def validate(cfg: ExperimentConfig) -> None:
    """Range checks that types alone cannot express."""
    check_name(cfg.name, "experiment name")
    for section in SECTIONS:
        sub = getattr(cfg, section)
        for f in dataclasses.fields(sub):
            key, value = (section, f.name), getattr(sub, f.name)
            if key in CHOICES and value not in CHOICES[key]:
                raise ConfigError(f"{section}.{f.name} = {value!r} is invalid; valid: {', '.join(CHOICES[key])}"
                                  + did_you_mean(str(value), CHOICES[key]))
            if key in POSITIVE and not value > 0:
                raise ConfigError(f"{section}.{f.name} = {value!r} must be > 0")
            if key in NON_NEGATIVE and not value >= 0:
                raise ConfigError(f"{section}.{f.name} = {value!r} must be >= 0")
            if key in BELOW_ONE and not 0 <= value < 1:
                raise ConfigError(f"{section}.{f.name} = {value!r} must lie in [0, 1)")
            if key in PROBABILITY and not 0 <= value <= 1:
                raise ConfigError(f"{section}.{f.name} = {value!r} is a probability: it must lie in [0, 1]")
            if key in SEEDS and not value <= SEED_MAX:
                raise ConfigError(f"{section}.{f.name} = {value!r} is too large for a seed: give one in [0, {SEED_MAX}]")
    if cfg.data.dataset in ("cifar10", "cifar100") and (cfg.data.image_size not in (0, 32) or cfg.data.label_column != "noisy_labels_0"):
        raise ConfigError(f"data.image_size and data.label_column are Imagenette's: {cfg.data.dataset} images are 32 px "
                          "(image_size 0 or 32) and have one label column")
    for rate in (*cfg.model.dropout, cfg.model.dense_dropout, cfg.loss.label_smoothing):
        if not 0 <= rate < 1:
            raise ConfigError(f"dropout rates and label smoothing must lie in [0, 1), got {rate}")
    if not cfg.schedule.restart_mult >= 1:
        raise ConfigError(f"schedule.restart_mult = {cfg.schedule.restart_mult} must be >= 1 "
                          "(1: equal cycles; 2: each cycle twice the previous)")
    if not cfg.augment.translate < 1:
        raise ConfigError(f"augment.translate = {cfg.augment.translate} must be below 1: it is the largest shift "
                          "as a fraction of the image width (the tutorial's is 0.1)")
    validate_augment(cfg.augment)
    if cfg.data.subset and cfg.data.val_size >= cfg.data.subset:   # the validation split comes out of the subset
        raise ConfigError(f"data.val_size = {cfg.data.val_size} must be smaller than the {cfg.data.subset} training "
                          f"images of data.subset = {cfg.data.subset}; set data.val_size too, e.g. "
                          f"{max(1, cfg.data.subset // 10)}")
    if cfg.train.select == "best_val" and cfg.data.val_size == 0:
        raise ConfigError("train.select = 'best_val' chooses an epoch on the validation split: data.val_size is 0; set it > 0")
    if (cfg.data.noise == "none") != (cfg.data.noise_rate == 0):
        raise ConfigError(f"data.noise = {cfg.data.noise!r} with data.noise_rate = {cfg.data.noise_rate}: set both "
                          "(a noise type and a rate > 0) or neither")
    if cfg.data.noise == "asymmetric" and cfg.data.dataset != "cifar10":
        raise ConfigError(f"data.noise = 'asymmetric' has a standard map for cifar10 only, not {cfg.data.dataset}; "
                          "use symmetric or pairflip")
    if cfg.train.lookahead < 0:
        raise ConfigError(f"train.lookahead = {cfg.train.lookahead} is the number of optimizer steps per Lookahead "
                          "cycle: use 0 (off) or a positive count, e.g. 5 (airbench's)")
    if not 0 < cfg.train.lookahead_alpha <= 1:
        raise ConfigError(f"train.lookahead_alpha = {cfg.train.lookahead_alpha} must lie in (0, 1] "
                          "(the paper's: 0.5)")
    if cfg.optim.name != "muon":
        for f in dataclasses.fields(cfg.optim):
            if f.name.startswith("muon_") and getattr(cfg.optim, f.name) != f.default:
                raise ConfigError(f"optim.{f.name} is Muon's; set optim.name = 'muon' or leave optim.{f.name} "
                                  f"at its default ({f.default})")
    if not 0 < cfg.loss.gce_q <= 1:
        raise ConfigError(f"loss.gce_q = {cfg.loss.gce_q} must lie in (0, 1]")
    validate_model(cfg.model)
    if cfg.model.dropout and len(cfg.model.dropout) != len(cfg.model.widths):
        raise ConfigError(f"model.dropout has {len(cfg.model.dropout)} rates but model.widths has "
                          f"{len(cfg.model.widths)} blocks; give one rate per block or []")


def validate_augment(a: AugmentConfig) -> None:
    if len(set(a.pipeline)) != len(a.pipeline):
        raise ConfigError(f"augment.pipeline = {list(a.pipeline)} names an augmentation twice; list each once")
    if a.translate > 0 and "translate" not in a.pipeline:
        raise ConfigError(f"augment.translate = {a.translate} is set but 'translate' is not in augment.pipeline "
                          f"= {list(a.pipeline)}; add it where it should run, e.g. [\"flip\", \"translate\"]")
    if "translate" in a.pipeline and not a.translate > 0:
        raise ConfigError("augment.pipeline has 'translate' but augment.translate = 0: set the largest shift "
                          "as a fraction of the width, e.g. 0.1 (the tutorial's), or drop it from the pipeline")
    if a.rotate > 180:
        raise ConfigError(f"augment.rotate = {a.rotate} must lie in [0, 180] degrees")
    if not a.shear < 90:
        raise ConfigError(f"augment.shear = {a.shear} must lie in [0, 90) degrees")
    for key in ("crop_area", "erase_area"):
        if not 0.02 <= getattr(a, key) <= 1:
            raise ConfigError(f"augment.{key} = {getattr(a, key)} is a fraction of the image area: it must lie in [0.02, 1]")


def validate_model(m: ModelConfig) -> None:
    """The model's shapes that the keys alone decide (the image size is checked at build time)."""
    if not 0 < m.norm_momentum <= 1:  # (0, 1]: a range none of the shared key sets has
        raise ConfigError(f"model.norm_momentum = {m.norm_momentum} is the weight of each batch in BatchNorm's "
                          "running statistics: give a value in (0, 1] (PyTorch's default: 0.1)")
    if not m.widths or min(m.widths) < 1:
        raise ConfigError(f"model.widths = {list(m.widths)} must be a non-empty list of positive channel counts")
    if m.block in POOLING_BLOCKS and m.downsample == "stride":
        raise ConfigError(f"model.block = {m.block!r} downsamples with a pool after each stage's first conv: "
                          "set model.downsample = 'max' or 'avg', not 'stride'")
    if m.stem == "whiten" and (m.stem_width % 2 or m.stem_width > 2 * 3 * m.patch ** 2):
        raise ConfigError(f"model.stem_width = {m.stem_width}: a whitening stem has two filters (both signs) per "
                          f"principal direction of a {m.patch} x {m.patch} x 3 patch; give an even width up to "
                          f"{2 * 3 * m.patch ** 2}, or 0 for all of them")
    if m.whiten_init:
        if m.stem == "whiten":
            raise ConfigError("model.whiten_init starts the first conv as whitening filters; model.stem = 'whiten' "
                              "already is one (frozen): set one of them")
        first = (m.stem_width or m.widths[0]) if m.stem in ("conv", "patchify") else m.widths[0]
        k = m.patch if m.stem == "patchify" else 3
        if first % 2 or first > 2 * 3 * k * k:
            raise ConfigError(f"model.whiten_init: the first conv has {first} filters; whitening fills them with "
                              f"two (both signs) per principal direction of a {k} x {k} x 3 patch, so it needs an "
                              f"even count up to {2 * 3 * k * k}")
    widths = {*m.widths, *((m.stem_width,) if m.stem_width and m.stem not in ("none", "whiten") else ())}
    if m.norm == "group":
        bad = sorted(w for w in widths if w % m.groups)
        if bad:
            raise ConfigError(f"model.groups = {m.groups} does not divide the width(s) {bad}; "
                              f"use a common divisor of {sorted(widths)}, e.g. {_common_divisor(sorted(widths))}")
    if m.se and m.se > min(widths):
        raise ConfigError(f"model.se = {m.se} (the reduction ratio) is larger than the width {min(widths)}: "
                          f"its bottleneck would have no unit; use 0 (off) or a ratio <= {min(widths)}, e.g. 16")


def _common_divisor(widths: list[int]) -> int:
    import math
    g = math.gcd(*widths)
    return max(d for d in range(1, min(g, 32) + 1) if g % d == 0)
