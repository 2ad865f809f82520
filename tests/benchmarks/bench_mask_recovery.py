"""One mask, several recoveries: how far a corpus MNIST-row model goes at a fixed size with 3,000 training images.

For torch_gru_legacy or keras_gru_tf2onnx (tests/corpus, input `rows` [N, 28, 28]): LAMP masks over every prunable
weight at the given kept shares, then each recovery from the same pruned model, counted as changed predictions
against the input model on 1,000 decision images (MNIST test 5,000-5,999) and on the card's 1,000 held-out images
(1,000-1,999); the 3,000 training images are MNIST test 2,000-4,999 (all disjoint). Recoveries: none; the
layer-wise refit (converter/reconstruct.py, toward the kept weights as the search does); masked SGD distillation
from the input model (converter/finetune.py, T = 1, cosine schedule, batch 32) at the given rates and epochs.

    python -m tests.benchmarks.bench_mask_recovery [--model torch_gru_legacy] [--keep 0.6 0.5]
        [--sgd 0.03:3 0.01:3 0.03:10] [--root ~/.cache/onnxprune-corpus] [--mnist /work/shared/data/mnist]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnx


def main(argv=None) -> int:
    from onnxprune.calibration.runtime import make_session
    from onnxprune.converter import finetune
    from onnxprune.converter.auto.allocation import global_masks
    from onnxprune.converter.reconstruct import reconstruct
    from onnxprune.models.mnist import load_split
    from onnxprune.passes.weights import find_prunable, weight_array
    from tests.oracle import zero_weights

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="torch_gru_legacy", choices=["torch_gru_legacy", "keras_gru_tf2onnx"])
    ap.add_argument("--keep", type=float, nargs="+", default=[0.6, 0.5])
    ap.add_argument("--sgd", nargs="*", default=["0.03:3", "0.01:3", "0.03:10"], help="rate:epochs")
    ap.add_argument("--root", default=os.environ.get("ONNXPRUNE_CORPUS", "~/.cache/onnxprune-corpus"))
    ap.add_argument("--mnist", default="/work/shared/data/mnist")
    args = ap.parse_args(argv)

    dense = onnx.load(str(Path(args.root).expanduser() / args.model / "model.onnx"))
    x, _ = load_split(args.mnist, "test")
    x = x.reshape(-1, 28, 28).astype(np.float32)
    train, decide, held = x[2000:5000], x[5000:6000], x[1000:2000]
    name = dense.graph.input[0].name
    weights = {w.name: weight_array(dense, w.name) for w in find_prunable(dense).prunable}
    total = sum(v.size for v in weights.values())

    def predict(model, xs):
        session = make_session(model)
        return np.concatenate([session.run(None, {name: xs[i:i + 500]})[0] for i in range(0, len(xs), 500)]).argmax(1)

    ref = predict(dense, decide), predict(dense, held)

    def line(what, model, t0):
        changed = [int((predict(model, xs) != r).sum()) for xs, r in zip((decide, held), ref)]
        print(f"{what:34s} changed {changed[0]:4d} of 1000 decision, {changed[1]:4d} of 1000 held out "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    feeds = [{name: train[i:i + 250]} for i in range(0, len(train), 250)]
    for keep in args.keep:
        masks = global_masks(weights, {k: np.ones(v.shape, bool) for k, v in weights.items()}, int(keep * total))
        pruned = zero_weights(dense, masks)
        print(f"{args.model}: LAMP keeping {keep:.0%} of {total} weights ({1 / keep:.2f}x)")
        line("  pruned, no recovery", pruned, time.perf_counter())
        t0 = time.perf_counter()
        line("  layer-wise refit", reconstruct(pruned, dense, masks, feeds, prior="auto"), t0)
        for spec in args.sgd:
            lr, epochs = (float(v) for v in spec.split(":"))
            t0 = time.perf_counter()
            model, _ = finetune.finetune(pruned, masks, ({name: train}, None), epochs=epochs, lr=lr, teacher=dense,
                                         temperature=1.0, lr_schedule="cosine", batch_size=32, reg_strength=1e-4)
            line(f"  SGD distillation lr {lr:g}, {epochs:g} ep", model, t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
