"""Retraining LeNet-300-100 in 1 process and in 2 (torchrun, gloo on the CPU): wall time, samples/s, test error.

    python -m onnxprune.models.mnist --mnist /work/shared/data/mnist --out /tmp/mnist
    python -m tests.benchmarks.bench_distributed --mnist /tmp/mnist [--iterations 2 --epochs 1]

The recipe is fixed: --sparsity 0.92, cubic schedule over N rounds of E epochs, lr 0.02, batch 128 (the global
batch: each of 2 processes takes 64 of every 128), labels, evaluation on the 10,000 test images. On a 2-core machine
shared with other work, 2 processes mostly check that distributed training trains like one process; the speed is
what a shared 2-core box gives, not what DDP scales to.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from onnxprune.models.paths import LENET300_ONNX


def prune(nproc: int, out: Path, args) -> tuple[float, dict]:
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
              if nproc > 1 else [sys.executable])
    cmd = [*launch, "-m", "onnxprune", "prune", str(LENET300_ONNX), "-o", str(out),
           "--data", str(args.mnist / "train.npz"), "--eval-data", str(args.mnist / "test.npz"), "--labels", "labels",
           "--sparsity", "0.92", "--iterations", str(args.iterations), "--epochs", str(args.epochs), "--lr", "0.02",
           "--train-batch-size", "128", "--device", "cpu", "--seed", "0", "--json", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return time.perf_counter() - t0, json.loads(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", type=Path, required=True, help="folder with train.npz and test.npz")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, 2):
            wall, report = prune(nproc, Path(tmp) / f"lenet-{nproc}.onnx", args)
            train = report["seconds_by_step"]["retrain"]
            backend = report["training_backend"]
            error = 100.0 * (1.0 - report["metrics"]["after"])
            print(f"{nproc} process(es): wall {wall:6.1f} s, retraining {train:6.1f} s, {backend['samples']} samples "
                  f"({backend['samples_per_process']} per process) = {backend['samples'] / train:7.0f} samples/s, "
                  f"test error {error:.2f}% (dense {100 * (1 - report['metrics']['before']):.2f}%), "
                  f"compression {report['compression']:.1f}x, round losses "
                  f"{[round(h['train_loss'], 5) for h in report['history']]}")


if __name__ == "__main__":
    main()
