"""Smaller *and faster*: the shipped LeNets through `onnxprune prune` with neuron pruning, on full MNIST.

    python -m tests.benchmarks.bench_structured [--model lenet300|lenet5|both] [--neurons 0.8] [--threads 2]

For each model: iterative magnitude pruning with retraining (the bench_retrain recipe), plus `--neuron-sparsity`
(the weakest whole neurons/channels masked on the same schedule) and `--crop-inputs`; then dead-neuron removal
shrinks the dense shapes. Printed: test error of the input and the output model (10k test images, read only to
report), weight compression, neurons per layer, dense parameters, file size, and onnxruntime CPU latency of the
shipped dense model vs the output (one process, interleaved runs, warm-up excluded, median; 1 intra-op thread).

Latency floor: at batch 1 onnxruntime's fixed cost per run (binding the feed, allocating the output) dominates
small models, so the benchmark also times an Identity model on the same input: no model can beat dense/floor.
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
from onnx import helper

from onnxprune.converter.api import prune
from onnxprune.converter.latency import measure_latency
from onnxprune.models.mnist import load_split
from onnxprune.models.paths import LENET5_ONNX, LENET300_ONNX, shared_mnist_dir
from tests.benchmarks.bench_retrain import error_pct

MODELS = {"lenet300": LENET300_ONNX, "lenet5": LENET5_ONNX}
COMMON = dict(schedule="cubic", reg="l2", reg_strength=1e-4, seed=0, train_batch_size=256, loss="ce+distill",
              label_smoothing=0.1, temperature=2.0, distill_weight=0.3, crop_inputs=True)
RECIPES = {  # bench_retrain's fixed recipes, through the pipeline's option names
    "lenet300": dict(layers={"fc1*": 0.982, "fc2*": 0.95, "fc3*": 0.7}, iterations=20, epochs=1.0, lr=0.1,
                     final_epochs=40, final_lr=0.02),
    "lenet5": dict(layers={"conv1*": 0.5, "conv2*": 0.95, "fc1*": 0.992, "fc2*": 0.9}, iterations=16, epochs=1.0,
                   lr=0.05, final_epochs=16, final_lr=0.05),
}


def identity_like(model: onnx.ModelProto) -> onnx.ModelProto:
    """The cheapest model onnxruntime can run on `model`'s input: the per-run floor."""
    x = model.graph.input[0]
    g = helper.make_graph([helper.make_node("Identity", [x.name], ["y"])], "floor", [x],
                          [helper.make_tensor_value_info("y", x.type.tensor_type.elem_type, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def dense_params(model: onnx.ModelProto) -> int:
    n = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    n += sum(int(np.prod(a.t.dims)) for node in model.graph.node if node.op_type == "Constant"
             for a in node.attribute if a.name == "value")
    n += sum(int(np.prod(a.sparse_tensor.dims)) for node in model.graph.node if node.op_type == "Constant"
             for a in node.attribute if a.name == "sparse_value")
    return n


def run(name: str, neurons: float, train, test, out_dir: Path) -> dict:
    recipe = {**COMMON, **RECIPES[name], "neuron_sparsity": neurons}
    t0 = time.perf_counter()
    result = prune(str(MODELS[name]), data={"input": train[0], "labels": train[1]},
                   output=out_dir / f"{name}-structured.onnx", **recipe)
    seconds = time.perf_counter() - t0
    original = onnx.load(str(MODELS[name]))
    lat = measure_latency(original, result.model, threads=1, budget_s=20)
    floor = measure_latency(original, identity_like(original), threads=1, budget_s=6, batches=(1,))
    neurons_by_layer = {k: (v["before"], v["after"]) for k, v in result.report["neurons"]["layers"].items()}
    return {
        "model": name, "recipe": {k: v for k, v in recipe.items()}, "seconds": round(seconds, 1),
        "error_dense": error_pct(original, *test),
        "error_pruned": error_pct(result.model, *test),
        "compression": result.report["compression"], "neurons": neurons_by_layer,
        "params": (dense_params(original), dense_params(result.model)),
        "file_kb": (MODELS[name].stat().st_size / 1024, (out_dir / f"{name}-structured.onnx").stat().st_size / 1024),
        "latency": {b["batch"]: (b["a"]["median_ms"], b["b"]["median_ms"], b["speedup"]) for b in lat["batches"]},
        "floor_b1_ms": floor["batches"][0]["b"]["median_ms"], "floor_b1_speedup": floor["batches"][0]["speedup"],
    }


def show(r: dict) -> None:
    print(f"\n== {r['model']}  neuron sparsity {r['recipe']['neuron_sparsity']}, crop inputs  ({r['seconds']:.0f} s)")
    print(f"test error   {r['error_dense']:.2f}% -> {r['error_pruned']:.2f}%  "
          f"({r['error_pruned'] - r['error_dense']:+.2f} pp)")
    print(f"weights      {r['compression']:.1f}x fewer nonzeros")
    print("neurons      " + ", ".join(f"{k} {a}->{b}" for k, (a, b) in r["neurons"].items()))
    print(f"params       {r['params'][0]:,} -> {r['params'][1]:,} dense ({r['params'][0] / r['params'][1]:.1f}x)")
    print(f"file         {r['file_kb'][0]:.0f} KB -> {r['file_kb'][1]:.0f} KB")
    for b, (a, p, s) in r["latency"].items():
        print(f"latency b={b:<3} {1e3 * a:8.1f} us -> {1e3 * p:8.1f} us   {s:.2f}x faster")
    print(f"floor   b=1   Identity on the same input {1e3 * r['floor_b1_ms']:.1f} us: at most "
          f"{r['floor_b1_speedup']:.2f}x at batch 1 for any model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["lenet300", "lenet5", "both"], default="both")
    ap.add_argument("--neurons", type=float, default=None, help="neuron sparsity (default: 0.8 / 0.7)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mnist", type=Path, default=shared_mnist_dir(), help="folder with the MNIST IDX files")
    ap.add_argument("--out", type=Path, default=Path("/tmp/onnxprune-bench-structured"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    train, test = load_split(args.mnist, "train"), load_split(args.mnist, "test")
    results = []
    for name in (list(MODELS) if args.model == "both" else [args.model]):
        neurons = args.neurons if args.neurons is not None else {"lenet300": 0.8, "lenet5": 0.7}[name]
        r = run(name, neurons, train, test, args.out)
        show(r)
        results.append(r)
    print(f"\n(load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
