"""Carry CIFAR-10 to a machine that takes little data per transfer, losslessly, in parts.

The device tool of this workplace carries at most 64 MiB per call and the CIFAR-10 npz is 170 MB.
`pack` writes the images as prediction residuals (the median edge detector of LOCO-I / JPEG-LS
on each channel, then red and blue minus green), compressed with xz, in PARTS files of about
50 MB each, plus a manifest with the SHA-256 of every array. `unpack` inverts it and writes an
uncompressed npz only if every array's SHA-256 matches the manifest.

    python3 scripts/device_data.py pack ../shared/data/cifar10/cifar10.npz .devdata --parts 2
    python3 scripts/device_data.py unpack .devdata data/cifar10/cifar10.npz   # on the other machine
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
from pathlib import Path

import numpy as np

IMAGES = ("train_images", "test_images")
SMALL = ("train_labels", "test_labels", "classes")


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left, upper and upper-left neighbour of every pixel (0 outside the image), N C H W."""
    left, up, corner = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    left[..., :, 1:] = x[..., :, :-1]
    up[..., 1:, :] = x[..., :-1, :]
    corner[..., 1:, 1:] = x[..., :-1, :-1]
    return left, up, corner


def _med(left, up, corner):
    """Median edge detector: min/max of left and up at an edge, else the planar guess."""
    hi, lo = np.maximum(left, up), np.minimum(left, up)
    return np.where(corner >= hi, lo, np.where(corner <= lo, hi, left + up - corner))


def encode(images: np.ndarray) -> bytes:
    x = images.transpose(0, 3, 1, 2).astype(np.int16)          # N H W C -> N C H W
    residual = (x - _med(*_neighbours(x))) % 256
    residual[:, 0] = (residual[:, 0] - residual[:, 1]) % 256     # red minus green
    residual[:, 2] = (residual[:, 2] - residual[:, 1]) % 256     # blue minus green
    return residual.astype(np.uint8).tobytes()


def decode(data: bytes, count: int) -> np.ndarray:
    residual = np.frombuffer(data, np.uint8).reshape(count, 3, 32, 32).astype(np.int16)
    residual[:, 0] = (residual[:, 0] + residual[:, 1]) % 256
    residual[:, 2] = (residual[:, 2] + residual[:, 1]) % 256
    x = np.zeros_like(residual)
    zero = np.zeros(residual.shape[:2], np.int16)
    for i in range(32):                      # raster order: each prediction uses decoded pixels
        for j in range(32):
            left = x[:, :, i, j - 1] if j else zero
            up = x[:, :, i - 1, j] if i else zero
            corner = x[:, :, i - 1, j - 1] if i and j else zero
            x[:, :, i, j] = (residual[:, :, i, j] + _med(left, up, corner)) % 256
    return x.astype(np.uint8).transpose(0, 2, 3, 1).copy()


def pack(npz: Path, out: Path, parts: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with np.load(npz, allow_pickle=False) as d:
        arrays = {k: d[k] for k in (*IMAGES, *SMALL)}
    manifest = {"sha256": {k: _sha(v) for k, v in arrays.items()},
                "small": {k: arrays[k].tolist() for k in SMALL}, "parts": []}
    # Images of train then test, cut into `parts` contiguous ranges.
    everything = np.concatenate([arrays[k] for k in IMAGES])
    bounds = np.linspace(0, len(everything), parts + 1).astype(int)
    for n, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        name = f"part{n}.xz"
        blob = lzma.compress(encode(everything[start:stop]), preset=9 | lzma.PRESET_EXTREME)
        (out / name).write_bytes(blob)
        manifest["parts"].append({"file": name, "start": int(start), "stop": int(stop),
                                  "sha256": hashlib.sha256(blob).hexdigest()})
        print(f"{name}: images {start}-{stop}, {len(blob):,} bytes", flush=True)
    manifest["counts"] = {k: len(arrays[k]) for k in IMAGES}
    (out / "manifest.json").write_text(json.dumps(manifest))


def unpack(folder: Path, npz: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    pieces = []
    missing = [p["file"] for p in manifest["parts"] if not (folder / p["file"]).is_file()]
    if missing:
        sys.exit(f"{folder}: missing {', '.join(missing)}; carry every part the manifest lists")
    for part in manifest["parts"]:
        blob = (folder / part["file"]).read_bytes()
        if hashlib.sha256(blob).hexdigest() != part["sha256"]:
            sys.exit(f"{part['file']}: SHA-256 differs from the manifest; carry it again")
        pieces.append(decode(lzma.decompress(blob), part["stop"] - part["start"]))
    everything = np.concatenate(pieces)
    n_train = manifest["counts"]["train_images"]
    arrays = {"train_images": everything[:n_train], "test_images": everything[n_train:],
              "train_labels": np.array(manifest["small"]["train_labels"], np.uint8),
              "test_labels": np.array(manifest["small"]["test_labels"], np.uint8),
              "classes": np.array(manifest["small"]["classes"])}
    for key, array in arrays.items():
        if _sha(array) != manifest["sha256"][key]:
            sys.exit(f"{key}: SHA-256 of the decoded array differs from the manifest; nothing written")
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, **arrays)
    print(f"{npz}: all {len(arrays)} arrays match their SHA-256", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("npz", type=Path)
    pk.add_argument("out", type=Path)
    pk.add_argument("--parts", type=int, default=2)
    up = sub.add_parser("unpack")
    up.add_argument("folder", type=Path)
    up.add_argument("npz", type=Path)
    args = p.parse_args()
    if args.action == "pack" and args.parts < 1:
        p.error(f"--parts must be >= 1, got {args.parts}")
    if args.action == "pack":
        pack(args.npz, args.out, args.parts)
    else:
        unpack(args.folder, args.npz)


if __name__ == "__main__":
    main()
