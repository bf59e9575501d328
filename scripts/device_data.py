"""Pack or unpack CIFAR in the project's lossless format: a thin entry point to `cifarlab data`.

The format and its verification live in `cifarlab/data/pack.py`; this script keeps the old
command line working on a machine where only the checkout is at hand:

    python3 scripts/device_data.py pack cifar10.npz .devdata --parts 2
    python3 scripts/device_data.py unpack .devdata data/cifar10/cifar10.npz
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cifarlab.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["data", *sys.argv[1:]]))
