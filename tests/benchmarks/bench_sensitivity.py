"""Benchmark the sensitivity scan and the one-shot `--max-loss` allocation.

    python tests/benchmarks/bench_sensitivity.py                 # everything
    options: --samples 1000 --batch 250 --deep-blocks 10 --budget 0.5 --fit-samples 5000 --skip-lenet-prune

1. Scan time, fast (one session per layer, weight fed, cached prefix activations) against naive (a fresh session
   per layer and level, masked weight in the initializer), same data, same levels (12), both checked to agree:
     * LeNet-5: models/lenet5.onnx when shipped, else a LeNet-5-shaped random model;
     * a small ResNet built here with onnx.helper: stem conv, N residual blocks of two convs, global pool, fc
       (N = 10 gives 22 prunable layers), on 8x8 random images with 8 channels, metric rel_l2.
   LeNet data: MNIST test images when the full MNIST is at hand, else random data.
2. For each shipped LeNet: scan + allocate + fit to `--budget` pp on `--fit-samples` MNIST training images, then
   the test error of the dense and the one-shot pruned model on the 10,000 test images (no retraining).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from onnxprune.calibration.allocate import allocate, fit_to_budget, pruned_model  # noqa: E402
from onnxprune.calibration.metrics import Evaluator  # noqa: E402
from onnxprune.calibration.readers import open_data  # noqa: E402
from onnxprune.calibration.sensitivity import scan, scan_naive  # noqa: E402
from onnxprune.models import builders, mnist, paths  # noqa: E402
from onnxprune.passes.weights import find_prunable  # noqa: E402


def small_resnet(blocks: int = 10, channels: int = 8, size: int = 8, classes: int = 10, seed: int = 0):
    """stem conv3x3-relu, `blocks` x (conv-relu-conv + skip, relu), GlobalAveragePool, Flatten, Gemm."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(x, name, c_in, c_out):
        w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(c_in * 9)).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.weight"),
                      numpy_helper.from_array(np.zeros(c_out, np.float32), f"{name}.bias")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}_out"], name=name,
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        return f"{name}_out"

    def op(kind, inputs, name, **attrs):
        nodes.append(helper.make_node(kind, inputs, [f"{name}_out"], name=name, **attrs))
        return f"{name}_out"

    x = op("Relu", [conv("input", "stem", 3, channels)], "stem_relu")
    for b in range(blocks):
        y = op("Relu", [conv(x, f"b{b}.conv1", channels, channels)], f"b{b}.relu1")
        y = conv(y, f"b{b}.conv2", channels, channels)
        x = op("Relu", [op("Add", [y, x], f"b{b}.add")], f"b{b}.relu2")
    x = op("Flatten", [op("GlobalAveragePool", [x], "pool")], "flatten")
    w = (rng.standard_normal((classes, channels)) / np.sqrt(channels)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "fc.weight"))
    nodes.append(helper.make_node("Gemm", [x, "fc.weight"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "small_resnet",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def time_scans(label: str, model, evaluator) -> None:
    inventory = find_prunable(model)
    t = time.perf_counter()
    fast = scan(model, inventory, evaluator)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    naive = scan_naive(model, inventory, evaluator)
    t_naive = time.perf_counter() - t
    diff = max(abs(a - b) for la, lb in zip(fast.layers, naive.layers) for a, b in zip(la.values, lb.values))
    paths_used = sorted({lay.path for lay in fast.layers})
    print(f"{label}: {len(inventory.prunable)} layers x {len(fast.levels)} levels on {evaluator.num_samples:,} "
          f"samples, metric {fast.metric}")
    print(f"  fast {t_fast:7.2f} s   naive {t_naive:7.2f} s   speed-up x{t_naive / t_fast:.1f}   "
          f"(max |fast - naive| = {diff:.2g} pp, paths {paths_used})")


def lenet_data(model, samples: int, batch: int):
    mnist_dir = paths.shared_mnist_dir()
    if mnist_dir is None:
        return open_data("random", model, limit=samples, batch_size=batch), "random data"
    images, labels = mnist.load_split(mnist_dir, "test")
    return open_data({"input": images[:samples], "labels": labels[:samples]}, model, batch_size=batch), "MNIST test"


def bench_scans(args) -> None:
    shipped = paths.LENET5_ONNX.exists()
    lenet = onnx.load(str(paths.LENET5_ONNX)) if shipped else builders.lenet5_like()
    reader, where = lenet_data(lenet, args.samples, args.batch)
    metric = "accuracy" if reader.has_labels else "agreement"
    time_scans(f"LeNet-5 ({'shipped' if shipped else 'random weights'}, {where})", lenet,
               Evaluator(reader, metric, lenet))
    deep = small_resnet(args.deep_blocks)
    reader = open_data("random", deep, limit=args.samples, batch_size=args.batch)
    time_scans(f"small ResNet ({args.deep_blocks} blocks)", deep, Evaluator(reader, "rel_l2", deep))


def error_pct(model, images, labels) -> float:
    ev = Evaluator(open_data({"input": images, "labels": labels}, model, batch_size=1000), "accuracy")
    return 100.0 * (1.0 - ev.evaluate(model))


def bench_prune(name: str, args, train, test) -> None:
    path = paths.REFERENCE_ONNX[name]
    if not path.exists():
        print(f"{name}: {path} not shipped yet, skipped")
        return
    model = onnx.load(str(path))
    pick = np.random.default_rng(0).permutation(len(train[1]))[: args.fit_samples]
    reader = open_data({"input": train[0][pick], "labels": train[1][pick]}, model, batch_size=500)
    inventory = find_prunable(model)
    t = time.perf_counter()
    ev = Evaluator(reader, "accuracy", model)
    result = scan(model, inventory, ev)
    outcome = fit_to_budget(model, inventory, ev, allocate(result, inventory, args.budget), args.budget)
    seconds = time.perf_counter() - t
    before, after = error_pct(model, *test), error_pct(pruned_model(model, outcome.sparsities), *test)
    print(f"{name}: --max-loss {args.budget} pp on {args.fit_samples:,} training images "
          f"({seconds:.1f} s, {outcome.tries} measured tries)")
    print(f"  measured loss on calibration data {outcome.measured_loss_pp:.2f} pp, predicted "
          f"{outcome.predicted_loss_pp:.2f} pp; compression x{outcome.compression:.1f} "
          f"({outcome.total - outcome.removed:,} of {outcome.total:,} weights kept)")
    for w in inventory.prunable:
        print(f"    {w.node:14s} {w.size:>9,}  W% kept {100 * (1 - outcome.sparsities[w.name]):5.1f}  "
              f"q {outcome.qualities[w.name]:.2f}")
    print(f"  test error (10,000 images): dense {before:.2f} %  ->  one-shot pruned {after:.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--deep-blocks", type=int, default=10)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--fit-samples", type=int, default=5000)
    parser.add_argument("--skip-lenet-prune", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bench_scans(args)
    if args.skip_lenet_prune:
        return
    mnist_dir = paths.shared_mnist_dir()
    if mnist_dir is None:
        print("full MNIST absent: one-shot --max-loss results skipped")
        return
    train, test = mnist.load_split(mnist_dir, "train"), mnist.load_split(mnist_dir, "test")
    for name in ("lenet300", "lenet5"):
        bench_prune(name, args, train, test)


if __name__ == "__main__":
    main()
