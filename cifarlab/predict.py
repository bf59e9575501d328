"""A finished run's model, used without its dataset: load, predict, export.

Every run that finishes writes `model.pt` beside its metrics (`cifarlab.train.save_model`): the
weights it tested, its resolved config, the training split's per-channel mean and std, the class
names and the image size, with a SHA-256 checked before the file is read (and then read with
`weights_only=True`). From it:

    run = load_run("runs/fast-baseline/seed0")
    pred = run.predict(images)            # uint8, N x H x W x 3 (NumPy) or N x 3 x H x W (torch)
    pred.labels, pred.probabilities, pred.top(3)

Images of another size are resized (bilinear, antialiased) to the model's. `export` writes the
network with its preprocessing and its test-time augmentation folded in (uint8 N x 3 x S x S in,
logits out: what the run's test and `predict` compute) as TorchScript or ONNX, or its weights and
metadata as safetensors.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab import config as C
from cifarlab.errors import UserError
from cifarlab.evaluate import predict as predict_logits
from cifarlab.runs import MODEL_FILE, load_verified, sha256_of
from cifarlab.schema import CHOICES

FORMATS = {"torchscript": "torchscript.pt", "safetensors": "safetensors", "onnx": "onnx"}   # format -> file suffix
TTAS = CHOICES[("train", "tta")]


@dataclass(frozen=True)
class Prediction:
    probabilities: np.ndarray   # N x classes, softmax of the logits
    labels: np.ndarray          # N, the most probable class index
    classes: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [self.classes[i] for i in self.labels]

    def top(self, k: int = 1) -> list[list[tuple[str, float]]]:
        """Per image, its k most probable classes with their probabilities, most probable first."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row] for row, p in zip(order, self.probabilities)]


class Normalized(nn.Module):
    """The network with its input scaling and test-time augmentation `tta` (train.tta's values)
    folded in: uint8 (or 0-255 float) images -> logits."""

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float], standard: bool,
                 tta: str = "none"):
        super().__init__()
        self.network = network
        self.tta = tta
        channels = len(mean)
        self.register_buffer("mean", torch.tensor(list(mean) if standard else [0.0] * channels).view(1, -1, 1, 1))
        self.register_buffer("scale", 1 / torch.tensor(list(std) if standard else [255.0] * channels).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.network, (images.float() - self.mean) * self.scale, self.tta).float()


@dataclass
class TrainedModel:
    """A finished run's tested network (CPU, fp32, eval mode) and what prediction needs."""
    run_dir: Path
    config: C.ExperimentConfig
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    epoch: int
    network: nn.Module          # preprocessed float input -> logits
    model: Normalized           # uint8 images -> logits, no test-time augmentation (`export` adds the run's)

    def inputs(self, images: Any) -> torch.Tensor:
        """uint8 images (N x H x W x C NumPy or Pillow, N x C x H x W torch, or one image) -> float N x C x S x S."""
        return to_nchw(images, self.image_size, len(self.mean))

    @torch.no_grad()
    def logits(self, images: Any, tta: str | None = None, batch_size: int = 256) -> torch.Tensor:
        """Logits of each image; `tta` as train.tta (default: the run's own, as its test used)."""
        x = self.inputs(images)
        tta = self.config.train.tta if tta is None else tta
        check_tta(tta)
        scaled = [(x[i:i + batch_size] - self.model.mean) * self.model.scale for i in range(0, len(x), batch_size)]
        return torch.cat([predict_logits(self.network, chunk, tta) for chunk in scaled]) if scaled else \
            torch.empty(0, len(self.classes))

    def predict(self, images: Any, tta: str | None = None, batch_size: int = 256) -> Prediction:
        probabilities = torch.softmax(self.logits(images, tta, batch_size), dim=1).numpy()
        return Prediction(probabilities, probabilities.argmax(axis=1), self.classes)


def to_nchw(images: Any, size: int, channels: int = 3) -> torch.Tensor:
    """uint8 images -> float N x C x size x size on the 0-255 scale. The layout follows the type, never
    the shape (a 3-pixel-tall image must not pass for channels-first): a NumPy array, a Pillow image
    or a list of them is channels-last (H x W x C, or N x H x W x C); a torch tensor is channels-first
    (C x H x W, or N x C x H x W)."""
    given = images
    if isinstance(images, (list, tuple)) and images and not isinstance(images[0], torch.Tensor):
        try:
            images = np.stack([np.asarray(i) for i in images])
        except ValueError:
            raise UserError("a list of images must hold images of one shape and type; resize them first, or "
                            "call predict once per image") from None
    elif not isinstance(images, (np.ndarray, torch.Tensor)) and hasattr(images, "__array_interface__"):
        images = np.asarray(images)   # a Pillow image: H x W x C (H x W when grey)
    numpy = isinstance(images, np.ndarray)
    if numpy:   # a read-only array (Pillow's) is copied: torch wants a writable one
        images = np.ascontiguousarray(images) if images.flags.writeable else np.array(images, order="C")
    x = torch.from_numpy(images) if numpy else images
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        kind = f"{type(given).__name__}" + (f" of {images.dtype}" if numpy else f" of {x.dtype}"
                                            if isinstance(x, torch.Tensor) else "")
        raise UserError(f"images must be uint8 (0-255): a NumPy array or Pillow image (H x W x C, or N x H x W x C) "
                        f"or a torch tensor (C x H x W, or N x C x H x W); got {kind}")
    layout = "N x H x W x C (a NumPy array: channels last)" if numpy else "N x C x H x W (a torch tensor: channels first)"
    if x.dim() == 3:
        x = x.unsqueeze(0)
    at = -1 if numpy else 1
    if x.dim() != 4 or x.shape[at] != channels:
        grey = " (a grey image: give it 3 channels, e.g. Pillow's .convert('RGB'))" if channels == 3 and (
            (numpy and images.ndim == 2) or (x.dim() == 4 and x.shape[at] == 1)) else ""
        raise UserError(f"images must be {layout} with C = {channels}, or one image without N; got shape "
                        f"{tuple(np.shape(images)) if numpy else tuple(images.shape)}{grey}")
    if numpy:
        x = x.permute(0, 3, 1, 2)          # N x H x W x C -> N x C x H x W
    x = x.float()
    if x.shape[-2:] != (size, size) and len(x):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 255)
    return x.contiguous()


def stopped_reason(path: Path) -> str | None:
    """Why a finished run stopped early (final.json's `stopped`: a diverged run saves no model), or None."""
    try:
        return json.loads((path / "final.json").read_text()).get("stopped")
    except (OSError, ValueError, AttributeError):
        return None


def require_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` as a Path where it is a directory; one line saying what to give where it is a file
    or does not exist."""
    path = Path(run_dir)
    if path.is_file():
        in_run = (path.parent / "config.toml").exists() and not path.name.startswith("model.")   # final.json, ...
        raise UserError(f"{path} is a file; give the finished run's directory that holds it"
                        + (f" ({path.parent})" if path.name == MODEL_FILE or in_run else
                           " (a .safetensors export loads with load_safetensors; `cifarlab predict` reads it as it "
                           "is)" if path.suffix == ".safetensors" else
                           " (of the exports, a .safetensors file is read as it is; TorchScript and ONNX files "
                           "are for other runtimes: torch.jit.load, onnxruntime)"))
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist; give a finished run's directory "
                        "(runs/<name>/seed<k>, a study's runs/<study>/<variant>/seed<k>-<hash>, or the --out "
                        "of `cifarlab run`)")
    return path


# The sections whose registry names rebuilding a trained network needs (its model and method): a run
# trained with a plug-in loss, augmentation or dataset predicts where that plug-in is not installed.
NETWORK_SECTIONS = ("model", "train")


def load_run(run_dir: str | Path) -> TrainedModel:
    """The model of a finished run directory (one with `model.pt`); one line if it has none."""
    path = require_run_dir(run_dir)
    state = load_verified(path / MODEL_FILE)
    if state is None:
        check = path / (MODEL_FILE + ".sha256")
        why = ((f"{check.name} is missing: it cannot be verified" if not check.exists() else
                "it does not match its checksum: it changed after the run wrote it"
                if sha256_of((path / MODEL_FILE).read_bytes()) != check.read_text().strip() else
                "it verifies but does not load as tensors only (weights_only): cifarlab did not write it")
               if (path / MODEL_FILE).exists() else
               "the run has not finished" if (path / "checkpoint.pt").exists() and not (path / "final.json").exists()
               else f"the run stopped ({stopped}), so it saved no model" if (stopped := stopped_reason(path))
               else "it was trained before runs saved their model, or it is not a run directory")
        todo = (f"finish it: cifarlab run {path / 'config.toml'} --out {path} --resume" if why == "the run has not finished"
                else "train it again at a lower learning rate or with a warm-up" if why.startswith("the run stopped")
                else "train the run (again) with this cifarlab")
        raise UserError(f"{path} holds no usable {MODEL_FILE} ({why}); {todo}")
    try:
        cfg = C.from_dict(C.upgrade_renamed(tomllib.loads(state["config"])), path / MODEL_FILE, recorded=True,
                          needs=NETWORK_SECTIONS)
        return assemble(path, cfg, state["classes"], state["mean"], state["std"], int(state["image_size"]),
                        int(state["epoch"]), state["model"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"{path / MODEL_FILE} does not fit its config ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]})") from None


def assemble(path: Path, cfg: C.ExperimentConfig, classes: Sequence[str], mean: Sequence[float],
             std: Sequence[float], size: int, epoch: int, weights: dict) -> TrainedModel:
    """The run's network rebuilt from its config, with `weights` loaded, in eval mode."""
    from cifarlab.train import build_network
    network = build_network(cfg, len(classes), size)
    network.load_state_dict(weights)
    network.eval()
    model = Normalized(network, mean, std, cfg.data.normalize == "standard").eval()
    return TrainedModel(path, cfg, tuple(classes), tuple(mean), tuple(std), size, epoch, network, model)


def read_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """Image files (PNG, JPEG, anything Pillow reads) as uint8 H x W x 3 arrays; one line per bad file."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UserError("reading image files needs Pillow: pip install pillow") from None
    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        except FileNotFoundError:
            raise UserError(f"image {p} does not exist") from None
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"image {p} is not an image Pillow can read ({type(e).__name__})") from None
    return out


def check_tta(tta: str) -> None:
    if tta not in TTAS:
        raise UserError(f"tta {tta!r} is invalid; valid: {', '.join(TTAS)}")


def check_export(fmt: str, out: Path, run_dir: Path | None = None) -> None:
    """What `export` can refuse before it loads anything: the format, its package, the output file
    (its folder must exist; it must not be the run's own model.pt, which `predict` and `export` read)."""
    if fmt not in FORMATS:
        raise UserError(f"format {fmt!r} is invalid; valid: {', '.join(FORMATS)}")
    need = {"safetensors": "safetensors", "onnx": "onnx"}.get(fmt)
    if need:
        import importlib.util
        if importlib.util.find_spec(need) is None:
            raise UserError(f"--format {fmt} needs the {need} package: pip install 'cifarlab[export]' (or {need})")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file, e.g. {out / ('model.' + suffix(fmt))}")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    if run_dir is not None and out.resolve() == (Path(run_dir) / MODEL_FILE).resolve():
        raise UserError(f"--out {out} is the run's own {MODEL_FILE}, which predict and export read; "
                        f"give another file, e.g. {Path(run_dir) / ('model.' + suffix(fmt))}")


def suffix(fmt: str) -> str:
    """The file suffix of `fmt` (an unknown format: itself, for `check_export` to refuse)."""
    return FORMATS.get(fmt, fmt)


def metadata(run: TrainedModel) -> dict[str, str]:
    """What a reader of an exported file needs besides the weights, as strings."""
    return {"config": C.to_toml(run.config), "classes": json.dumps(list(run.classes)),
            "mean": json.dumps(list(run.mean)), "std": json.dumps(list(run.std)),
            "image_size": str(run.image_size), "input": "uint8 N x 3 x S x S, 0-255; output: logits"}


def with_tta(run: TrainedModel, tta: str) -> Normalized:
    """The run's uint8 -> logits module with test-time augmentation `tta` inside."""
    return Normalized(run.network, run.mean, run.std, run.config.data.normalize == "standard", tta).eval()


def export(run: TrainedModel | str | Path, fmt: str, out: str | Path | None = None, tta: str | None = None) -> Path:
    """Write the run's model as `fmt` (torchscript, onnx: uint8 images -> logits, preprocessing and
    test-time augmentation `tta` inside, by default the run's train.tta, so the file computes what
    the run's test did; safetensors: the network's weights; each with the metadata, `tta` recorded
    there: TorchScript's cifarlab.json, safetensors' header, ONNX's metadata_props). `run`: a loaded
    run or a finished run's directory; `out` (default: model.<suffix> in the run's directory) is
    checked before anything loads. Returns the path written."""
    run_dir = run.run_dir if isinstance(run, TrainedModel) else Path(run)
    out = Path(out) if out is not None else run_dir / f"model.{suffix(fmt)}"
    check_export(fmt, out, run_dir)
    run = run if isinstance(run, TrainedModel) else load_run(run_dir)
    tta = run.config.train.tta if tta is None else tta
    check_tta(tta)
    model = with_tta(run, tta)
    meta = metadata(run) | {"tta": tta}
    example = torch.randint(0, 256, (2, len(run.mean), run.image_size, run.image_size), dtype=torch.uint8)
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={"cifarlab.json": json.dumps(meta)})
    elif fmt == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.detach().contiguous().clone() for k, v in run.network.state_dict().items()}, str(out),
                  metadata=meta)
    else:
        import onnx
        torch.onnx.export(model, (example,), str(out), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        graph = onnx.load(str(out))
        for key, value in meta.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(graph, str(out))
    out.chmod(0o644)   # as every file a run writes (safetensors writes its file 0600)
    return out


def load_safetensors(path: str | Path) -> TrainedModel:
    """A model exported as safetensors, rebuilt from its metadata (for a round trip or another tool)."""
    try:
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise UserError("reading safetensors needs the safetensors package: pip install 'cifarlab[export]'") from None
    if not Path(path).is_file():
        raise UserError(f"{path} does not exist; give a file `cifarlab export --format safetensors` wrote")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except SafetensorError as e:
        raise UserError(f"{path} is not a safetensors file ({e})") from None
    missing = [k for k in ("config", "classes", "mean", "std", "image_size") if k not in meta]
    if missing:
        raise UserError(f"{path} lacks cifarlab's metadata ({', '.join(missing)}): it was not written by "
                        "`cifarlab export --format safetensors`")
    cfg = C.from_dict(tomllib.loads(meta["config"]), path, recorded=True, needs=NETWORK_SECTIONS)
    if meta.get("tta", cfg.train.tta) != cfg.train.tta:   # exported with --tta: predict as the file says
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tta=meta["tta"]))
    return assemble(Path(path), cfg, json.loads(meta["classes"]),
                    json.loads(meta["mean"]), json.loads(meta["std"]), int(meta["image_size"]), -1,
                    load_file(str(path)))
