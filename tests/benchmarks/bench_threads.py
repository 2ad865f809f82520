"""Retraining wall time by thread count on this machine: the figures behind converter.threads' default.

    python -m tests.benchmarks.bench_threads [--threads 1,2] [--repeats 2] [--epochs 3]

The digits conv-BN CNN of bench_auto (trained and exported here), retrained under full masks through the torch
bridge (MaskedTrainer, batch 32) for a fixed number of epochs with torch.set_num_threads(N), the thread counts
interleaved; then onnxruntime scoring of the same model with N intra-op threads. Wall and CPU seconds, and the
load average, per run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from onnxprune.calibration.runtime import make_session
from onnxprune.converter.finetune import MaskedTrainer
from onnxprune.passes.weights import find_prunable
from tests.benchmarks.bench_auto import digits_cnn, export, load_digits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--digits-csv", type=Path, default=None)
    args = ap.parse_args()
    images, labels = load_digits(args.digits_csv)
    images = (images / 16.0)[:, None].astype(np.float32)
    torch.set_num_threads(1)
    net = digits_cnn(images[:1257], labels[:1257])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.onnx"
        export(net, path, dynamo=False)
        model = onnx.load(str(path))
    masks = {w.name: np.ones(w.shape, dtype=bool) for w in find_prunable(model).prunable}
    data = ({"input": images[:1257]}, labels[:1257])
    big = np.repeat(images, 20, axis=0)
    for r in range(args.repeats):
        for n in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(n)
            trainer = MaskedTrainer(model, masks, data, loss="ce", device="cpu")
            load, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
            trainer.train(args.epochs, 0.05, batch_size=32)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            sess = make_session(model, threads=n)
            t1 = time.perf_counter()
            for i in range(0, len(big), 64):
                sess.run(None, {"input": big[i:i + 64]})
            ort_s = time.perf_counter() - t1
            print(f"repeat {r} threads {n}: retrain {args.epochs:g} epochs {wall:6.1f} s wall, {cpu:6.1f} s cpu; "
                  f"onnxruntime {len(big)} images batch 64 {ort_s:5.2f} s; load {load:.1f}", flush=True)


if __name__ == "__main__":
    main()
