"""Saliency criteria side by side: magnitude, wanda, obd, taylor on both shipped LeNets, full MNIST.

For each model and criterion: test error (10,000 test images) one-shot at 90% uniform sparsity and at the paper's
per-layer W% (Tables 2 and 3), through the product path (`pipeline.run`, no retraining); then after one short
retraining recipe, the same for every criterion (iterative prune -> retrain to the paper's W% on the 60,000 training
images, the criterion re-ranking the retrained weights each round), the test error and the compression ratio.

Calibration data for the criteria: the first CALIB training images (labels included), never the test set.

    python -m tests.benchmarks.bench_criteria [--model lenet300|lenet5|both] [--criteria magnitude,wanda,...]
                                              [--calib 1024] [--skip-retrain] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.criteria import calibration_scoring
from onnxprune.converter.pipeline import configure, run
from onnxprune.converter.schedule import iterative_prune
from onnxprune.models.mnist import load_split
from onnxprune.models.paths import LENET5_ONNX, LENET300_ONNX, shared_mnist_dir
from onnxprune.passes.criteria import CRITERIA
from onnxprune.passes.weights import find_prunable

MODELS = {"lenet300": LENET300_ONNX, "lenet5": LENET5_ONNX}
PAPER_DENSITY = {  # kept share per layer, Han et al. 2015 Tables 2 and 3
    "lenet300": {"fc1.weight": 0.08, "fc2.weight": 0.09, "fc3.weight": 0.26},
    "lenet5": {"conv1.weight": 0.66, "conv2.weight": 0.12, "fc1.weight": 0.08, "fc2.weight": 0.19},
}
# The short retraining recipe, the same for every criterion: bench_retrain.py's loss and optimiser, to the paper's
# W% in 2 rounds of half an epoch and a final epoch (cosine), fixed in advance.
RETRAIN = dict(iterations=2, epochs=0.5, final_epochs=1.0, schedule="cubic", momentum=0.9, reg="l2",
               reg_strength=1e-4, final_lr_schedule="cosine", seed=0, batch_size=256, loss="ce+distill",
               label_smoothing=0.1, temperature=2.0, distill_weight=0.3, device="cpu")
LR = {"lenet300": dict(lr=0.1, final_lr=0.02), "lenet5": dict(lr=0.05, final_lr=0.05)}


def error_pct(model, images: np.ndarray, labels: np.ndarray) -> float:
    sess = make_session(model)
    logits = np.concatenate([sess.run(None, {"input": images[i:i + 2000]})[0] for i in range(0, len(images), 2000)])
    return 100.0 * float((logits.argmax(1) != labels).mean())


def nonzeros(model: onnx.ModelProto, names) -> int:
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return sum(int(np.count_nonzero(tensors[n])) for n in names)


def one_shot(path, criterion: str, calib: dict, test, **targets) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    result = run(path, configure(criterion=criterion, data=calib, neurons=False, sparse_format="dense", **targets))
    return error_pct(result.model, *test), result.report["compression"], time.perf_counter() - t0


def retrained(name: str, criterion: str, calib: dict, train, test) -> tuple[float, float, float]:
    model = onnx.load(MODELS[name])
    inventory = find_prunable(model)
    sizes = {w.name: w.size for w in inventory.prunable}
    targets = {n: 1.0 - d for n, d in PAPER_DENSITY[name].items()}
    reader = open_data({"input": train[0], "labels": train[1]}, model, labels="labels", batch_size=256)
    scoring = calibration_scoring(criterion, open_data(calib, model, labels="labels", batch_size=64))
    t0 = time.perf_counter()
    out, _, _ = iterative_prune(model, inventory, targets, reader, scoring=scoring, **RETRAIN, **LR[name])
    seconds = time.perf_counter() - t0
    return error_pct(out, *test), sum(sizes.values()) / nonzeros(out, sizes), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", type=Path, default=shared_mnist_dir())
    ap.add_argument("--model", choices=["lenet300", "lenet5", "both"], default="both")
    ap.add_argument("--criteria", default=",".join(CRITERIA))
    ap.add_argument("--calib", type=int, default=1024, help="training images the criteria score on")
    ap.add_argument("--skip-retrain", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_split(args.mnist, "train"), load_split(args.mnist, "test")
    calib = {"input": train[0][:args.calib], "labels": train[1][:args.calib]}
    names = list(MODELS) if args.model == "both" else [args.model]
    rows = []
    print(f"calibration: first {args.calib:,} training images; test: {len(test[1]):,} images; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'model':9} {'criterion':10} {'dense':>6} {'1-shot 90%':>10} {'1-shot W%':>10} {'ratio':>6} "
          f"{'retrained':>9} {'ratio':>6} {'s 1-shot':>8} {'s retrain':>9}")
    for name in names:
        dense = error_pct(str(MODELS[name]), *test)
        layers = {n: 1.0 - d for n, d in PAPER_DENSITY[name].items()}
        for criterion in args.criteria.split(","):
            e90, _, s90 = one_shot(MODELS[name], criterion, calib, test, sparsity=0.9)
            ew, ratio, sw = one_shot(MODELS[name], criterion, calib, test, layers=layers)
            print(f"{name:9} {criterion:10} one-shot: {e90:.2f}% at 90%, {ew:.2f}% at W% ({ratio:.1f}x), "
                  f"{s90 + sw:.1f} s; retraining…", flush=True)
            er, rr, sr = (float("nan"),) * 3 if args.skip_retrain else retrained(name, criterion, calib, train, test)
            row = dict(model=name, criterion=criterion, dense=dense, oneshot_90=e90, oneshot_paper=ew,
                       oneshot_ratio=ratio, retrained=er, retrained_ratio=rr, seconds_oneshot=s90 + sw,
                       seconds_retrain=sr)
            rows.append(row)
            print(f"{name:9} {criterion:10} {dense:5.2f}% {e90:9.2f}% {ew:9.2f}% {ratio:5.1f}x {er:8.2f}% "
                  f"{rr:5.1f}x {s90 + sw:8.1f} {sr:9.1f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"calib": args.calib, "retrain": RETRAIN, "lr": LR, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
