"""Does "within --max-loss" hold on unseen data when the user has only a few hundred labelled samples?

    python -m tests.benchmarks.bench_small_labelled [--sets 4] [--samples 400] [--time-budget 1m] [--json OUT]

Two small MNIST classifiers are trained here (seeded, one or two epochs: about 95% accurate, so a changed prediction
can be a gain as well as a loss, as on a real model) on the first 30,000 training images: a 784-300-100 MLP and a
two-conv CNN, exported by torch's legacy exporter. From the other 30,000 training images, 10,000 are set aside to
report and `--sets` disjoint labelled calibration sets of `--samples` images are drawn (seeded). Each set is given to
`onnxprune prune MODEL --data SET --max-loss 1 --time-budget T` as a newcomer would (the automatic search; with
400 samples every 4th trains and 300 decide). Printed per run: the compression, the loss the run claimed and its
upper bound, and the accuracy lost on the 10,000 unseen images with its standard error (paired difference), and how
many of their predictions changed. No test image is read: the figures can steer design choices.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _train(x, y, make, epochs: int, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.tensor(x), torch.tensor(y)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            b = perm[i:i + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    return model.eval()


def _models(x, y, folder: Path) -> dict[str, Path]:
    import torch
    from torch import nn

    makers = {
        "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                                      nn.Linear(100, 10)), 2),
        "cnn": (lambda: nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 5), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10)),
                1),
    }
    paths = {}
    for name, (make, epochs) in makers.items():
        model = _train(x, y, make, epochs)
        paths[name] = folder / f"{name}.onnx"
        torch.onnx.export(model, torch.tensor(x[:1]), str(paths[name]), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          dynamo=False)
    return paths


def _predict(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i:i + 1000]})[0].argmax(1) for i in range(0, len(x), 1000)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", type=int, default=4)
    p.add_argument("--samples", type=int, default=400)
    p.add_argument("--time-budget", default="1m")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    from onnxprune.models.mnist import load_split
    from onnxprune.models.paths import shared_mnist_dir

    mnist = shared_mnist_dir()
    if mnist is None:
        sys.exit("the full MNIST is needed: ../shared/data/mnist beside the repository, or $ONNXPRUNE_MNIST")
    torch.set_num_threads(1)
    x, y = load_split(mnist, "train")
    rest = 30000 + np.random.default_rng(12345).permutation(len(x) - 30000)
    report_x, report_y = x[rest[:10000]], y[rest[:10000]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = _models(x[:30000], y[:30000], folder)
        for name, path in models.items():
            dense = _predict(path, report_x)
            print(f"{name}: dense accuracy on the 10,000 unseen images {100 * (dense == report_y).mean():.2f}%")
            for s in range(args.sets):
                idx = rest[10000 + args.samples * s:10000 + args.samples * (s + 1)]
                data, out = folder / f"set{s}.npz", folder / f"{name}_{s}.onnx"
                np.savez(data, input=x[idx], labels=y[idx])
                cmd = [sys.executable, "-m", "onnxprune", "prune", str(path), "-o", str(out), "--data", str(data),
                       "--max-loss", "1", "--time-budget", args.time_budget]
                run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
                text = run.stdout + run.stderr
                if run.returncode != 0 or not out.exists():
                    print(f"  set {s}: exit {run.returncode}: {text.strip().splitlines()[-1:]}")
                    continue
                find = lambda pattern: (lambda m: float(m.group(1)) if m else None)(re.search(pattern, text))
                pruned = _predict(out, report_x)
                d = (dense == report_y).astype(float) - (pruned == report_y)
                row = {"model": name, "set": s, "ratio": find(r"\(([\d.]+)x fewer\)"),
                       "claimed_pp": find(r"budget: measured loss ([-\d.]+) pp"),
                       "upper_pp": find(r"upper bound ([-\d.]+) pp"),
                       "unseen_loss_pp": 100 * d.mean(), "unseen_se_pp": 100 * d.std(ddof=1) / np.sqrt(len(d)),
                       "changed_pct": 100 * float((pruned != dense).mean())}
                rows.append(row)
                print(f"  set {s}: {row['ratio']}x, claimed {row['claimed_pp']} pp (upper bound {row['upper_pp']}),"
                      f" unseen {row['unseen_loss_pp']:.2f} pp (SE {row['unseen_se_pp']:.2f}), "
                      f"{row['changed_pct']:.2f}% of predictions changed")
    over = [r for r in rows if r["unseen_loss_pp"] - r["unseen_se_pp"] > 1.0]
    print(f"{len(rows)} runs; over the 1 pp budget beyond one SE on unseen images: {len(over)}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
