"""Storage benchmark (issue #15): how small a pruned model file gets while stock onnxruntime still loads it.

Both shipped LeNets are pruned once by a fixed retraining recipe (bench_retrain's; LeNet-5's shortened to fit a
shared machine) on the first 50,000 training images and cached as dense ONNX files; the masks are the nonzeros of
those files. Each is then written as: dense, COO (`--sparse-format constant`), compact, compact + fp16 values, and
compact + the width the pipeline's quantize step (`--weight-bits auto`) chooses: the smallest n-bit per-layer
codebook within its rule (paired against the model before quantization, at most one standard error worse) on the
VALIDATION slice (the last 10,000 training images, never trained on), once with k-means codebooks alone and once
with them fine-tuned for one epoch per width tried (trained quantization, Deep Compression's recipe). Reported on
the 10,000 test images: file bytes, ratio to the shipped dense file, test error; session creation time and RSS
growth for dense/COO/compact (each in a fresh process, median of 3); inference latency (interleaved, batch 1 and 64).
One larger model (a seeded VGG-ish conv stack, magnitude-pruned one-shot) shows the encodings at size.

    python -m tests.benchmarks.bench_storage [--model lenet300|lenet5|both|none] [--cache DIR] [--skip-large]
                                             [--large-width 0.5] [--full-recipe] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from onnx import numpy_helper

from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.models.mnist import load_split
from onnxprune.models.paths import LENET5_ONNX, LENET300_ONNX, shared_mnist_dir
from onnxprune.passes.apply_masks import ApplyMasks
from onnxprune.passes.base import PruneState, run_passes
from onnxprune.passes.magnitude import MagnitudePrune, resolve_targets
from onnxprune.passes.quantize import QuantizeWeights
from onnxprune.passes.sparse_encode import SparseEncode
from onnxprune.passes.storage import describe_model
from onnxprune.passes.weights import find_prunable

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
FULL = {"lenet5": dict(iterations=16, final_epochs=16)}  # --full-recipe: bench_retrain's LeNet-5 rounds, not halved
DEEP_COMPRESSION = {"lenet300": "1070 KB -> 27 KB (40x) at 1.58%", "lenet5": "1720 KB -> 44 KB (39x) at 0.74%"}


def pruned_model(name: str, train, cache: Path) -> Path:
    """The recipe's pruned dense model, trained once and cached."""
    out = cache / f"{name}_pruned_dense.onnx"
    if out.exists():
        return out
    import torch

    from onnxprune.converter.schedule import iterative_prune

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


def encoded(pruned: onnx.ModelProto, names: list[str], fmt: str, bits: int | None = None) -> onnx.ModelProto:
    """The pruned model as `prune --sparse-format fmt [--weight-bits bits]` stores it (quantize, then encode)."""
    out = onnx.ModelProto()
    out.CopyFrom(pruned)
    passes = ([QuantizeWeights(names, bits)] if bits else []) + [SparseEncode(names, fmt)]
    run_passes(passes, out, PruneState())
    return out


def quantize_step(name: str, pruned: onnx.ModelProto, shipped: onnx.ModelProto, train, trained: bool):
    """The pipeline's quantize step (`--weight-bits auto --sparse-format compact`, no dead-neuron removal, like the
    other rows) on the cached pruned model: the smallest codebook width within its rule on the VALIDATION slice
    (paired against the model before quantization, 1 SE), codebooks fine-tuned for 1 epoch when `trained` (the
    recipe's loss and final learning rate, batch 256). Returns the chosen oracle and what the step recorded."""
    from onnxprune.converter.steps.base import RunState
    from onnxprune.converter.steps.data import Data, DataConfig
    from onnxprune.converter.steps.encode import EncodeConfig
    from onnxprune.converter.steps.quantize import QuantizeConfig, QuantizeStep
    from onnxprune.converter.steps.retrain import RetrainConfig
    from onnxprune.converter.steps.shrink import ShrinkConfig
    from onnxprune.passes.weights import weight_array

    recipe = RECIPES[name]
    data = DataConfig(data={"input": train[0][:TRAIN_SPLIT], "labels": train[1][:TRAIN_SPLIT]}, labels="labels",
                      val_data={"input": train[0][TRAIN_SPLIT:], "labels": train[1][TRAIN_SPLIT:]}, batch_size=2000)
    retrain = RetrainConfig(iterations=recipe["iterations"], lr=recipe["lr"], final_lr=recipe["final_lr"],
                            loss=COMMON["loss"], reg_strength=COMMON["reg_strength"],
                            temperature=COMMON["temperature"], label_smoothing=COMMON["label_smoothing"],
                            distill_weight=COMMON["distill_weight"], train_batch_size=COMMON["batch_size"],
                            device="cpu", threads=1)
    step = QuantizeStep(QuantizeConfig(weight_bits="auto", quant_epochs=1.0), retrain, None,
                        ShrinkConfig(neurons=False), EncodeConfig("compact"), trained=trained)
    inventory = find_prunable(pruned)
    state = RunState(source=None, original=shipped, inventory=inventory, pruned=pruned,
                     data=Data(shipped, data))
    state.prune.masks.update({w.name: weight_array(pruned, w.name) != 0 for w in inventory.prunable})
    t0 = time.process_time()
    step.run(state)
    state.quantize["cpu_s"] = round(time.process_time() - t0, 1)
    state.quantize["note"] = state.notes[-1]
    return state.pruned, state.quantize


def error_pct(model: onnx.ModelProto, images: np.ndarray, labels: np.ndarray) -> float:
    """As deployed: onnxruntime with its default optimisations (the compact decoder is folded at load)."""
    sess = make_session(model, threads=1)
    logits = np.concatenate([sess.run(None, {"input": images[i:i + 2000]})[0] for i in range(0, len(images), 2000)])
    return 100.0 * float((logits.argmax(1) != labels).mean())


SESSION_PROBE = """
import sys, time, onnxruntime as ort
def mem(key):
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith(key))
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.log_severity_level = 3
r0, t0 = mem('VmRSS'), time.perf_counter()
s = ort.InferenceSession(sys.argv[1], so, providers=['CPUExecutionProvider'])
print(time.perf_counter() - t0, mem('VmRSS') - r0, mem('VmHWM') - r0)
"""


def session_cost(path: Path, repeats: int = 3) -> dict:
    """Session creation time and memory growth (resident after, peak during), each run in a fresh process."""
    runs = [list(map(float, subprocess.run([sys.executable, "-c", SESSION_PROBE, str(path)], check=True,
                                           capture_output=True, text=True).stdout.split())) for _ in range(repeats)]
    t, rss, peak = np.median(np.array(runs), axis=0)
    return {"session_s": t, "rss_mb": rss / 2**20, "peak_mb": peak / 2**20}


def latencies(paths: dict[str, Path], feed_shape, batch: int, rounds: int) -> dict[str, float]:
    """Median seconds per run, the sessions interleaved round by round so load changes hit all alike."""
    sessions = {k: make_session(p, threads=1) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, *feed_shape)).astype(np.float32)
    times = {k: [] for k in paths}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"input": x})
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def lenet_rows(name: str, pruned_path: Path, train, test, cache: Path, trained: bool = True) -> dict:
    pruned = onnx.load(pruned_path)
    names = [w.name for w in find_prunable(pruned).prunable]
    nonzeros = sum(int(np.count_nonzero(numpy_helper.to_array(t))) for t in pruned.graph.initializer if t.name in names)
    val = (train[0][TRAIN_SPLIT:], train[1][TRAIN_SPLIT:])
    shipped = onnx.load(MODELS[name])
    variants = {"dense (shipped)": shipped, "dense (pruned)": pruned, "COO": encoded(pruned, names, "constant"),
                "compact": encoded(pruned, names, "compact"), "compact+fp16": encoded(pruned, names, "compact", 16)}
    chosen = {}
    for label, trained_q in (("one-shot k-means", False), ("trained", True)):
        if trained_q and not trained:
            continue
        oracle, chosen[label] = quantize_step(name, pruned, shipped, train, trained_q)
        if chosen[label]["weight_bits"] is not None:
            bits = chosen[label]["weight_bits"]
            variants[f"compact+auto {bits}b {label}"] = encoded(oracle, names, "compact")
    rows = {}
    for label, model in variants.items():
        path = cache / f"{name}_{re.sub(r'[^A-Za-z0-9+-]+', '_', label)}.onnx"
        onnx.save(model, path)
        rows[label] = {"bytes": path.stat().st_size, "val_error": error_pct(model, *val),
                       "test_error": error_pct(model, *test), "path": path}
        rows[label].update(session_cost(path))
    for batch, rounds in ((1, 300), (64, 60)):
        lat = latencies({k: r["path"] for k, r in rows.items()}, test[0].shape[1:], batch, rounds)
        for k, v in lat.items():
            rows[k][f"latency_b{batch}_us"] = 1e6 * v
    dense_bytes = rows["dense (shipped)"]["bytes"]
    for r in rows.values():
        r["ratio"] = dense_bytes / r["bytes"]
        r["bytes_per_nonzero"] = r["bytes"] / nonzeros
        r["path"] = str(r["path"])
    return {"model": name, "nonzeros": nonzeros, "rows": rows, "quantize": chosen,
            "storage": {k: describe_model(variants[k]) for k in variants if "compact" in k}}


def large_rows(cache: Path, width: float) -> dict:
    """A VGG-16-shaped model (random He-init weights: no accuracy to report), one-shot magnitude-pruned to the paper's
    VGG-16 shape (conv ~65%, fc6/fc7 96%, fc8 77% pruned); bytes, session cost, latency, and the output change of
    the quantized files against the COO file."""
    from tests.benchmarks.bench_large import vgg16

    model = vgg16(width=width)
    inventory = find_prunable(model)
    layers = {"conv*": 0.65, "fc0.weight": 0.96, "fc1.weight": 0.96, "fc2.weight": 0.77}
    run_passes([MagnitudePrune(inventory, resolve_targets(inventory, layers=layers)), ApplyMasks()], model,
               PruneState())
    names = [w.name for w in inventory.prunable]
    nonzeros = sum(int(np.count_nonzero(numpy_helper.to_array(t))) for t in model.graph.initializer if t.name in names)
    rows, feed = {}, np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for label, fmt, bits in (("dense", "dense", None), ("COO", "constant", None), ("compact", "compact", None),
                             ("compact+fp16", "compact", 16), ("compact+5bit", "compact", 5)):
        t0 = time.perf_counter()
        out = encoded(model, names, fmt, bits)
        encode_s = time.perf_counter() - t0
        path = cache / f"vgg_{label}.onnx"
        onnx.save(out, path)
        del out
        rows[label] = {"bytes": path.stat().st_size, "encode_s": encode_s, **session_cost(path, repeats=1),
                       "output": make_session(path, threads=1).run(None, {"input": feed})[0], "path": path}
    lat = latencies({k: r["path"] for k, r in rows.items() if "bit" not in k and "fp16" not in k}, (3, 224, 224), 1, 5)
    for label, r in rows.items():
        r["ratio"] = rows["dense"]["bytes"] / r["bytes"]
        r["bytes_per_nonzero"] = r["bytes"] / nonzeros
        ref = rows["COO"]["output"]
        r["max_rel_vs_coo"] = float(np.abs(r["output"] - ref).max() / np.abs(ref).max())
        r["latency_b1_ms"] = 1e3 * lat[label] if label in lat else None
        r["path"] = str(r["path"])
    for r in rows.values():
        del r["output"]
    return {"model": f"vgg16 x{width:g}", "params": sum(w.size for w in inventory.prunable), "nonzeros": nonzeros,
            "rows": rows}


def print_lenet(r: dict) -> None:
    print(f"\n{r['model']}: {r['nonzeros']:,} nonzero weights; Deep Compression: {DEEP_COMPRESSION[r['model']]}")
    for label, q in r["quantize"].items():
        print(f"  --weight-bits auto, {label} ({q['cpu_s']:.0f} s CPU): {q['note']}")
    print(f"  {'file':30} {'bytes':>9} {'x dense':>8} {'B/nz':>6} {'val err':>8} {'test err':>9} {'session':>9} "
          f"{'RSS':>8} {'peak':>8} {'b1 us':>7} {'b64 us':>8}")
    for label, x in r["rows"].items():
        print(f"  {label:30} {x['bytes']:9,} {x['ratio']:7.1f}x {x['bytes_per_nonzero']:6.2f} {x['val_error']:7.2f}% "
              f"{x['test_error']:8.2f}% {1e3 * x['session_s']:7.1f}ms {x['rss_mb']:6.1f}MB {x['peak_mb']:6.1f}MB "
              f"{x['latency_b1_us']:7.1f} {x['latency_b64_us']:8.1f}")
    for label, storage in r["storage"].items():
        print(f"  {label}: " + ", ".join(f"{w} {v['encoding']} {v['bytes'] / v['nonzeros']:.2f} B/nz"
                                         for w, v in storage.items()))


def print_large(r: dict) -> None:
    print(f"\n{r['model']}: {r['params']:,} weights, {r['nonzeros']:,} nonzero (random weights, one-shot)")
    print(f"  {'file':14} {'bytes':>12} {'x dense':>8} {'B/nz':>6} {'encode':>7} {'session':>8} {'RSS':>8} "
          f"{'peak':>8} {'b1 ms':>7} {'max rel diff vs COO':>20}")
    for label, x in r["rows"].items():
        lat = "-" if x["latency_b1_ms"] is None else f"{x['latency_b1_ms']:.0f}"
        print(f"  {label:14} {x['bytes']:12,} {x['ratio']:7.1f}x {x['bytes_per_nonzero']:6.2f} {x['encode_s']:6.1f}s "
              f"{x['session_s']:7.2f}s {x['rss_mb']:6.0f}MB {x['peak_mb']:6.0f}MB {lat:>7} {x['max_rel_vs_coo']:20.2g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", type=Path, default=shared_mnist_dir())
    ap.add_argument("--cache", type=Path, default=Path("/tmp/onnxprune_bench_storage"))
    ap.add_argument("--model", choices=["lenet300", "lenet5", "both", "none"], default="both")
    ap.add_argument("--prune-only", action="store_true")
    ap.add_argument("--full-recipe", action="store_true", help="LeNet-5 pruned with bench_retrain's full rounds "
                    "(16 + 16 final epochs) instead of half; use another --cache")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--skip-trained", action="store_true", help="no trained-quantization row (one epoch per width)")
    ap.add_argument("--large-width", type=float, default=0.5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.full_recipe:
        for name, changes in FULL.items():
            RECIPES[name].update(changes)
    train, test = load_split(args.mnist, "train"), load_split(args.mnist, "test")
    args.cache.mkdir(parents=True, exist_ok=True)
    chosen = {"both": list(MODELS), "none": []}.get(args.model, [args.model])
    pruned = {name: pruned_model(name, train, args.cache) for name in chosen}
    if args.prune_only:
        return
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus (shared machine: timings move with it)")
    results = {"lenets": [], "large": None}
    for name, path in pruned.items():
        results["lenets"].append(lenet_rows(name, path, train, test, args.cache, trained=not args.skip_trained))
        print_lenet(results["lenets"][-1])
    if not args.skip_large:
        results["large"] = large_rows(args.cache, args.large_width)
        print_large(results["large"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
