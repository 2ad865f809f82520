"""One-shot baseline (no retraining) at the paper's per-layer densities, for both shipped LeNets.

Prints test error before/after on the 10,000 MNIST test images, nonzeros before/after, and the file size for each
--sparse-format. This is the baseline retraining must beat.

    python -m tests.benchmarks.bench_oneshot [--mnist DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from onnxprune.calibration.runtime import make_session
from onnxprune.converter.pipeline import configure, run
from onnxprune.models.mnist import load_split
from onnxprune.models.paths import LENET5_ONNX, LENET300_ONNX, shared_mnist_dir

# The paper's Tables 2 and 3: kept weights (W%) per layer.
PAPER_DENSITY = {
    "lenet300": {"fc1.weight": 0.08, "fc2.weight": 0.09, "fc3.weight": 0.26},
    "lenet5": {"conv1.weight": 0.66, "conv2.weight": 0.12, "fc1.weight": 0.08, "fc2.weight": 0.19},
}
MODELS = {"lenet300": LENET300_ONNX, "lenet5": LENET5_ONNX}


def error_pct(model, images, labels) -> float:
    sess = make_session(model)
    logits = np.concatenate([sess.run(None, {"input": images[i:i + 1000]})[0] for i in range(0, len(images), 1000)])
    return 100.0 * float((logits.argmax(1) != labels).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mnist", type=Path, default=shared_mnist_dir())
    args = ap.parse_args()
    images, labels = load_split(args.mnist, "test")
    print(f"{'model':9} {'format':11} {'err before':>10} {'err after':>9} {'nonzeros':>19} {'ratio':>6} "
          f"{'file before':>11} {'file after':>10} {'seconds':>7}")
    for name, path in MODELS.items():
        layers = {w: 1.0 - d for w, d in PAPER_DENSITY[name].items()}
        dense_err = error_pct(path.read_bytes(), images, labels)
        for fmt in ("constant", "initializer", "dense"):
            t0 = time.perf_counter()
            result = run(path, configure(layers=layers, sparse_format=fmt, neurons=False))
            seconds = time.perf_counter() - t0
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "m.onnx"
                out.write_bytes(result.model.SerializeToString())
                size_after = out.stat().st_size
                err = error_pct(str(out), images, labels)
            r = result.report
            print(f"{name:9} {fmt:11} {dense_err:9.2f}% {err:8.2f}% {r['before']['nonzeros']:>8,} -> "
                  f"{r['after']['nonzeros']:>7,} {r['compression']:5.1f}x {path.stat().st_size / 1e6:9.2f}MB "
                  f"{size_after / 1e6:8.2f}MB {seconds:7.2f}")
        per_layer = ", ".join(f"{row['weight'].split('.')[0]} {100 * row['density']:.0f}%" for row in r["layers"])
        print(f"{'':9} W% per layer: {per_layer}")


if __name__ == "__main__":
    main()
