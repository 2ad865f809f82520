"""Where the shipped reference files live, and where to find the full MNIST.

No heavy imports here: `inspect`, `prune` and the tests import this module freely.
"""

from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
REPO_DIR = MODELS_DIR.parent

LENET300_ONNX = MODELS_DIR / "lenet300.onnx"
LENET300_CARD = MODELS_DIR / "lenet300.json"
LENET5_ONNX = MODELS_DIR / "lenet5.onnx"
LENET5_CARD = MODELS_DIR / "lenet5.json"
MNIST_SLICE = MODELS_DIR / "data" / "mnist_test_1000.npz"
# The demo's training/calibration slice: the first 5,000 training images (the demo must not need ../shared).
MNIST_TRAIN_SLICE = MODELS_DIR / "data" / "mnist_train_5000.npz"

REFERENCE_ONNX = {"lenet300": LENET300_ONNX, "lenet5": LENET5_ONNX}
REFERENCE_CARDS = {"lenet300": LENET300_CARD, "lenet5": LENET5_CARD}

MNIST_ENV_VAR = "ONNXPRUNE_MNIST"
_MNIST_MARKER = "t10k-images-idx3-ubyte.gz"


def shared_mnist_dir() -> Path | None:
    """The folder holding the full MNIST IDX files, or None when there is none.

    `$ONNXPRUNE_MNIST` wins when set; otherwise `../shared/data/mnist` next to the repo.
    A folder counts only if it holds the test images (gzipped or not).
    """
    override = os.environ.get(MNIST_ENV_VAR)
    candidate = Path(override) if override else REPO_DIR.parent / "shared" / "data" / "mnist"
    for name in (_MNIST_MARKER, _MNIST_MARKER.removesuffix(".gz")):
        if (candidate / name).is_file():
            return candidate
    return None
