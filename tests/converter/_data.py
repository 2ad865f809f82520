"""Small data for pipeline tests."""

import numpy as np

from onnxprune.calibration.runtime import make_session
from onnxprune.models import builders


def self_labelled(hidden=(64, 32), model_seed: int = 3, n: int = 256, data_seed: int = 0, blank_rows: int = 0):
    """A LeNet-300-100-like classifier and random images labelled with its own predictions: dense accuracy is 100%,
    so any loss is measurable. `blank_rows` zeroes the top and bottom image rows, as MNIST's border."""
    model = builders.lenet300_like(hidden=hidden, seed=model_seed)
    x = np.random.default_rng(data_seed).random((n, 1, 28, 28), dtype=np.float32)
    if blank_rows:
        x[:, :, :blank_rows, :] = x[:, :, -blank_rows:, :] = 0.0
    labels = make_session(model).run(None, {"input": x})[0].argmax(1).astype(np.int64)
    return model, {"input": x, "labels": labels}
