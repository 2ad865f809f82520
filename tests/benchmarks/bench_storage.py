"""Storage benchmark (issue #15): how small a pruned model file gets while stock onnxruntime still loads it.

Both shipped LeNets are pruned once by a fixed retraining recipe (bench_retrain's; LeNet-5's shortened to fit a
shared machine) on the first 50,000 training images and cached as dense ONNX files; the masks are the nonzeros of
those files. Each is then written as: dense, COO (`--sparse-format constant`), compact, compact + fp16 values, and
compact + an n-bit per-layer codebook (k-means on the survivors, linear init) for the smallest n whose error on the
VALIDATION slice (the last 10,000 training images, never trained on) is not worse than the COO model's. Reported on
the 10,000 test images: file bytes, ratio to the shipped dense file, test error; session creation time and RSS
growth for dense/COO/compact (each in a fresh process, median of 3); inference latency (interleaved, batch 1 and 64).
One larger model (a seeded VGG-ish conv stack, magnitude-pruned one-shot) shows the encodings at size.

    python -m tests.benchmarks.bench_storage [--cache DIR] [--skip-large] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from onnxprune.models.mnist import load_split
from onnxprune.models.paths import LENET5_ONNX, LENET300_ONNX, shared_mnist_dir

MODELS = {"lenet300": LENET300_ONNX, "lenet5": LENET5_ONNX}
TRAIN_SPLIT = 50_000  # train on [:50k], choose the bit width on [50k:]
COMMON = dict(schedule="cubic", momentum=0.9, reg="l2", reg_strength=1e-4, final_lr_schedule="cosine", seed=0,
              batch_size=256, loss="ce+distill", label_smoothing=0.1, temperature=2.0, distill_weight=0.3)
RECIPES = {  # bench_retrain's targets; LeNet-5 with half its rounds and final epochs
    "lenet300": dict(targets={"fc1.weight": 0.982, "fc2.weight": 0.95, "fc3.weight": 0.7},
                     iterations=20, epochs=1.0, lr=0.1, final_epochs=40, final_lr=0.02),
    "lenet5": dict(targets={"conv1.weight": 0.5, "conv2.weight": 0.95, "fc1.weight": 0.992, "fc2.weight": 0.9},
                   iterations=8, epochs=1.0, lr=0.05, final_epochs=8, final_lr=0.05),
}
DEEP_COMPRESSION = {"lenet300": "1070 KB -> 27 KB (40x) at 1.58%", "lenet5": "1720 KB -> 44 KB (39x) at 0.74%"}


def pruned_model(name: str, train, cache: Path) -> Path:
    """The recipe's pruned dense model, trained once and cached."""
    out = cache / f"{name}_pruned_dense.onnx"
    if out.exists():
        return out
    import torch

    from onnxprune.calibration.readers import open_data
    from onnxprune.converter.schedule import iterative_prune
    from onnxprune.passes.weights import find_prunable

    torch.set_num_threads(1)
    model = onnx.load(MODELS[name])
    recipe = RECIPES[name]
    options = {**COMMON, **{k: v for k, v in recipe.items() if k != "targets"}}
    reader = open_data({"input": train[0][:TRAIN_SPLIT], "labels": train[1][:TRAIN_SPLIT]}, model, labels="labels",
                       batch_size=options["batch_size"])
    t0 = time.perf_counter()
    pruned, _, _ = iterative_prune(model, find_prunable(model), recipe["targets"], reader, **options)
    print(f"{name}: pruned in {time.perf_counter() - t0:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    onnx.save(pruned, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", type=Path, default=shared_mnist_dir())
    ap.add_argument("--cache", type=Path, default=Path("/tmp/onnxprune_bench_storage"))
    ap.add_argument("--prune-only", action="store_true")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    train = load_split(args.mnist, "train")
    for name in MODELS:
        pruned_model(name, train, args.cache)
    if args.prune_only:
        return


if __name__ == "__main__":
    main()
