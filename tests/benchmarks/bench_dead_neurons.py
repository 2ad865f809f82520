"""Benchmark dead-neuron removal: parameters, file size and onnxruntime CPU latency, dense vs pruned.

    python tests/benchmarks/bench_dead_neurons.py                  # built-in LeNet-300-100 and ResNet-style models
    python tests/benchmarks/bench_dead_neurons.py a.onnx b.onnx    # your models (masks applied, e.g. retrained)
    options: --runs 300 --warmup 30 --budget 20 --threads 1 --batches 1 64 --dead-fraction 0.5 --inputs crop

Where the pass keeps dead channels so that a Conv's input channels stay a multiple of 4 (passes/dead_neurons.py
`_keep_aligned`), a third row, "unaligned", is the same removal without that rule, timed in the same run.

"Dense" is the model as given (pruned weights are zeros in dense tensors); "pruned" is the output of
`remove_dead_neurons`. Both run in one process with stock onnxruntime (CPU, default graph optimisations),
interleaved run by run, warm-up excluded; the median is reported. Outputs are checked to agree first.

The built-in models get random weights and per-layer magnitude pruning (LeNet-300-100 at the paper's densities,
fc1 8 %, fc2 9 %, fc3 26 %). Random weights pruned by magnitude leave almost no neuron fully dead, so expect ratios
near 1: the real wins come after retraining, which drives whole rows and columns to zero. `--dead-fraction F` adds
a synthetic stand-in for that: the F weakest hidden channels of each layer (by outgoing norm) and, for the MLP,
the 4-pixel image border (empty in MNIST) lose all their weights.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a plain script from anywhere

from onnxprune.calibration.runtime import make_session, random_feeds  # noqa: E402
from onnxprune.converter.modelio import load_model  # noqa: E402
from onnxprune.passes import dead_neurons  # noqa: E402
from onnxprune.passes.dead_neurons import remove_dead_neurons  # noqa: E402
from onnxprune.passes.neuron_masks import neuron_map, neuron_masks  # noqa: E402
from tests.oracle import assert_same_outputs  # noqa: E402
from tests.passes._graphs import G  # noqa: E402

LENET_DENSITY = {"fc1.weight": 0.08, "fc2.weight": 0.09, "fc3.weight": 0.26}


# -- built-in models ----------------------------------------------------------------------------------------------
def lenet_300_100(seed: int = 0) -> onnx.ModelProto:
    g = G(seed)
    x = g.op("Flatten", "flat", ["x"], axis=1)
    x = g.op("Relu", "r1", [g.gemm(x, "fc1", 784, 300)])
    x = g.op("Relu", "r2", [g.gemm(x, "fc2", 300, 100)])
    g.gemm(x, "fc3", 100, 10)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 1, 28, 28]}, {"y": ["N", 10]})


def _conv_bn(g: G, x: str, name: str, c_in: int, c_out: int, k: int, stride: int = 1, relu: bool = True) -> str:
    w = g.weight(f"{name}.weight", (c_out, c_in, k, k), c_in * k * k)
    y = g.op("Conv", name, [x, w], kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2)
    y = g.bn(y, f"{name}_bn", c_out)
    return g.op("Relu", f"{name}_relu", [y]) if relu else y


def resnet_like(seed: int = 0, widths=(32, 64, 128)) -> onnx.ModelProto:
    """Stem, three stages of two basic blocks (the first of stages 2 and 3 strides by 2), GAP, fc; 32×32 input."""
    g, c_in = G(seed), widths[0]
    x = _conv_bn(g, "x", "stem", 3, c_in, 3)
    for s, c in enumerate(widths):
        for blk in range(2):
            stride, name = (2 if s and not blk else 1), f"s{s}b{blk}"
            y = _conv_bn(g, x, f"{name}c1", c_in, c, 3, stride)
            y = _conv_bn(g, y, f"{name}c2", c, c, 3, relu=False)
            short = x if stride == 1 and c_in == c else _conv_bn(g, x, f"{name}down", c_in, c, 1, stride, relu=False)
            x, c_in = g.op("Relu", f"{name}_out", [g.op("Add", f"{name}_add", [y, short])]), c
    x = g.op("Flatten", "flat", [g.op("GlobalAveragePool", "gap", [x])])
    g.gemm(x, "fc", c_in, 10)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 3, 32, 32]}, {"y": ["N", 10]})


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv 5×5 (1→16) ─ Relu ─ MaxPool ─ conv 5×5 (16→32) ─ Relu ─ MaxPool ─ fc (512→75) ─ Relu ─ fc (→10)."""
    g = G(seed)
    x = g.op("MaxPool", "p1", [g.op("Relu", "r1", [g.conv("x", "c1", 1, 16, 5)])], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("MaxPool", "p2", [g.op("Relu", "r2", [g.conv(x, "c2", 16, 32, 5)])], kernel_shape=[2, 2], strides=[2, 2])
    x = g.op("Relu", "r3", [g.gemm(g.op("Flatten", "flat", [x]), "fc1", 512, 75)])
    g.gemm(x, "fc2", 75, 10)
    g.nodes[-1].output[0] = "y"
    return g.model({"x": ["N", 1, 28, 28]}, {"y": ["N", 10]})


def magnitude_prune(model: onnx.ModelProto, density: dict[str, float], default: float) -> onnx.ModelProto:
    """Keep the largest |w| of every weight (ndim ≥ 2) at its density, zero the rest (masks applied)."""
    for t in model.graph.initializer:
        w = numpy_helper.to_array(t)
        if w.ndim >= 2:
            keep = max(1, int(round(density.get(t.name, default) * w.size)))
            cut = np.partition(np.abs(w).ravel(), w.size - keep)[w.size - keep]
            t.CopyFrom(numpy_helper.from_array(np.where(np.abs(w) >= cut, w, 0).astype(w.dtype), t.name))
    return model


def kill_weakest(model: onnx.ModelProto, readers: dict[str, int], fraction: float) -> onnx.ModelProto:
    """Synthetic retraining: zero the `fraction` weakest input channels (axis given) of each reader weight."""
    for t in model.graph.initializer:
        if t.name in readers:
            w, axis = numpy_helper.to_array(t).copy(), readers[t.name]
            norms = np.sqrt(np.square(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).sum(axis=1))
            idx = np.argsort(norms)[: int(fraction * w.shape[axis])]
            np.moveaxis(w, axis, 0)[idx] = 0
            t.CopyFrom(numpy_helper.from_array(w, t.name))
    return model


def builtin(dead_fraction: float) -> list[tuple[str, onnx.ModelProto]]:
    mlp = magnitude_prune(lenet_300_100(), LENET_DENSITY, 1.0)
    res = magnitude_prune(resnet_like(), {"stem.weight": 0.6, "fc.weight": 0.3}, 0.4)
    out = [("lenet-300-100 (magnitude 8/9/26 %)", mlp), ("resnet-like (magnitude 40 %)", res)]
    if dead_fraction:
        border = [r * 28 + c for r in range(28) for c in range(28) if min(r, c, 27 - r, 27 - c) < 4]
        mlp2 = kill_weakest(onnx.ModelProto.FromString(mlp.SerializeToString()), {"fc2.weight": 1, "fc3.weight": 1},
                            dead_fraction)
        for t in mlp2.graph.initializer:
            if t.name == "fc1.weight":
                w = numpy_helper.to_array(t).copy()
                w[:, border] = 0
                t.CopyFrom(numpy_helper.from_array(w, t.name))
        inner = {t.name: 1 for t in res.graph.initializer if t.name.endswith("c2.weight")}
        res2 = kill_weakest(onnx.ModelProto.FromString(res.SerializeToString()), inner, dead_fraction)
        pct = f"{dead_fraction:.0%}"
        cnn = kill_weakest(small_cnn(), {"c2.weight": 1}, 1 / 16)
        res3 = kill_weakest(onnx.ModelProto.FromString(res.SerializeToString()), inner, 0.1)
        out += [(f"lenet-300-100 + {pct} dead + border (synthetic)", mlp2),
                (f"resnet-like + {pct} dead (synthetic)", res2),
                ("resnet-like + 10% dead (synthetic: 3 of 32, 6 of 64, 12 of 128)", res3),
                ("cnn 1-16-32-75 with 1 of 16 conv channels dead (synthetic)", cnn),
                (f"resnet-like + {pct} of every channel group masked by passes.neuron_masks (residual classes too)",
                 neuron_masked(onnx.ModelProto.FromString(res.SerializeToString()), dead_fraction))]
    return out


def neuron_masked(model: onnx.ModelProto, fraction: float) -> onnx.ModelProto:
    """What --neuron-sparsity masks (without the retraining): the weakest `fraction` of every group's channels."""
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) >= 2}
    masks, _ = neuron_masks(neuron_map(model, set(weights)), weights,
                            {n: np.ones(w.shape, dtype=bool) for n, w in weights.items()}, fraction)
    for t in model.graph.initializer:
        if t.name in masks:
            t.CopyFrom(numpy_helper.from_array(np.where(masks[t.name], weights[t.name], 0).astype(weights[t.name].dtype),
                                               t.name))
    return model


# -- measuring ----------------------------------------------------------------------------------------------------
def latency_ms(models: dict[str, onnx.ModelProto], batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Median ms per run; runs interleaved (alternating order), warm-up excluded, capped by --budget seconds."""
    sessions = {k: make_session(m, optimize=True, threads=args.threads) for k, m in models.items()}
    feed = random_feeds(next(iter(models.values())), batch=batch, seed=0)
    names = list(sessions)
    t0 = time.perf_counter()
    for i in range(args.warmup):
        for k in names:
            sessions[k].run(None, feed)
    per_round = (time.perf_counter() - t0) / max(1, args.warmup)
    runs = max(20, min(args.runs, int(args.budget / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for i in range(runs):
        for k in names if i % 2 == 0 else names[::-1]:
            t = time.perf_counter()
            sessions[k].run(None, feed)
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


@contextlib.contextmanager
def unaligned():
    """The pass without its alignment rule (every dead channel goes), for the comparison row."""
    saved = dead_neurons.ALIGN_ABOVE
    dead_neurons.ALIGN_ABOVE = sys.maxsize
    try:
        yield
    finally:
        dead_neurons.ALIGN_ABOVE = saved


def params(model: onnx.ModelProto) -> tuple[int, int]:
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    return sum(a.size for a in arrays), sum(int(np.count_nonzero(a)) for a in arrays)


def bench(name: str, model: onnx.ModelProto, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    pruned, report = remove_dead_neurons(model, gather_inputs=args.inputs == "gather",
                                         crop_inputs=args.inputs == "crop")
    took = time.perf_counter() - t0
    assert_same_outputs(pruned, model, seeds=(0, 1), rtol=1e-4)
    models = {"dense": model, "pruned": pruned}
    if report.aligned:
        with unaligned():
            models["unaligned"] = remove_dead_neurons(model, gather_inputs=args.inputs == "gather",
                                                      crop_inputs=args.inputs == "crop")[0]
        assert_same_outputs(models["unaligned"], model, seeds=(0, 1), rtol=1e-4)
    lat = {b: latency_ms(models, b, args) for b in args.batches}
    print(f"\n== {name}   (pass: {took:.2f} s, {report.rounds} round(s), {report.removed} channels removed,"
          f" {report.folded} folded, {report.aligned} dead kept for alignment)")
    print(f"{'':8}{'params':>12}{'nonzero':>12}{'file KB':>11}" + "".join(f"{f'b={b} ms':>11}" for b in args.batches))
    rows = {}
    for k, m in models.items():
        p, nz = params(m)
        rows[k] = (p, nz, m.ByteSize() / 1024, *[lat[b][k] for b in args.batches])
        print(f"{k:8}{p:>12,}{nz:>12,}{rows[k][2]:>11.1f}" + "".join(f"{lat[b][k]:>11.4f}" for b in args.batches))
    ratio = [d / p if p else math.nan for d, p in zip(rows["dense"], rows["pruned"])]
    print(f"{'ratio':8}{ratio[0]:>11.2f}x{ratio[1]:>11.2f}x{ratio[2]:>10.2f}x"
          + "".join(f"{r:>10.2f}x" for r in ratio[3:]) + "   (dense / pruned)")
    if "unaligned" in rows:
        u = [d / p if p else math.nan for d, p in zip(rows["dense"], rows["unaligned"])]
        print(f"{'ratio':8}{u[0]:>11.2f}x{u[1]:>11.2f}x{u[2]:>10.2f}x"
              + "".join(f"{r:>10.2f}x" for r in u[3:]) + "   (dense / unaligned)")
    for lay in report.layers:
        if lay.before != lay.after:
            print(f"  {lay.op} {lay.node!r}: {lay.before} -> {lay.after}")
    for note in report.blocked[:5]:
        print(f"  blocked: {note}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="ONNX files (masks applied); default: built-in models")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds at most per model and batch size")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1: steadier)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--dead-fraction", type=float, default=0.5, help="synthetic dead channels for built-ins (0: off)")
    ap.add_argument("--inputs", choices=["crop", "gather", "keep"], default="crop",
                    help="unread input features: cropped by a Slice, gathered, or kept")
    args = ap.parse_args(argv)
    todo = [(p, load_model(p).model) for p in args.models] if args.models else builtin(args.dead_fraction)
    for name, model in todo:
        bench(str(name), model, args)


if __name__ == "__main__":
    main()
