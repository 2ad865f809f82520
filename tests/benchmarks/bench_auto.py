"""Acceptance run of the automatic search (`prune --max-loss L`, no other flag), next to the README's hand recipes.

    python -m tests.benchmarks.bench_auto [--rows lenet300,lenet300-nolabels,lenet300-nolabels-expected,lenet5,...]
                                          [--digits-csv PATH] [--time-budget 15m] [--json OUT]

MNIST rows: the shipped ONNX files (onnxprune.models.paths), the 60,000 training images as --data (with labels, or
without: label-free), the first 5,000 test images as --val-data (the decision set; without labels for the
label-free rows) and the last 5,000 test images read only here, to report. A label-free row is judged by the
default metric (top-1 `agreement` with the input model, an upper bound: `-nolabels`) or by `--metric
expected_accuracy` (`-nolabels-expected`: the input model's probabilities stand in for the labels, paired like
accuracy; docs/metrics.md). Printed per row: weights (nonzeros, compression), held-out test error dense -> pruned
and its noise (standard error of the paired difference), the held-out samples whose class changed (how many, how
many of them only the dense / only the pruned model got right, the input model's probability of its own class on
them, and the loss expected_accuracy predicts for them against the loss measured), neurons, onnxruntime speed-up
at batch 1 and 64 (shipped dense file vs output, interleaved in one process, 1 thread, median), file size, wall
and CPU time and the machine's load average.

Digits rows: a small conv-BN CNN trained here on scikit-learn's 8x8 digits (1,257 training images, seeded split;
the remaining 540 report), exported with torch's default and legacy (TorchScript) exporters; only --max-loss 1.
The digits come from sklearn when importable, else from sklearn's digits.csv.gz (--digits-csv).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import as_probabilities
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.api import prune
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.converter.latency import measure_latency
from onnxprune.converter.modelio import saved_size
from onnxprune.models.mnist import load_split
from onnxprune.models.paths import LENET5_ONNX, LENET300_ONNX, shared_mnist_dir

# The README's hand recipes (bench_structured.py / bench_retrain.py, ~15 flags each, chosen on the full test set):
# (test error pruned, dense), weights ratio, speed-up batch 1, batch 64, wall.
HAND = {
    "lenet300": "1.85% (1.78%), 47.5x, 1.92x / 3.87x, 60 s  [neuron sparsity 0.8, 20 rounds + 40 final epochs]",
    "lenet300-nolabels": "1.98% (1.78%), ~47x, - / 3.52x  [distill T=1, neuron sparsity 0.8]; 44.1x unstructured",
    "lenet5": "0.77% (0.82%), 89.7x, 3.77x / 5.66x, 634 s  [neuron sparsity 0.7, 16 rounds + 16 final epochs]",
    "lenet5-nolabels": "0.90% (0.82%), 82.8x unstructured, 5.5 min  [distill T=2]",
    "digits": "hand: --lr 0.05 --epochs 10: 4.7x at no loss; + --neuron-sparsity 0.5: 13.7x, 1.87x faster "
              "(issue #12); one-shot --max-loss 1: 2.8x",
}
MODELS = {"lenet300": LENET300_ONNX, "lenet5": LENET5_ONNX}


def scores(model, images: np.ndarray) -> np.ndarray:
    sess = make_session(model)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + 2000]})[0] for i in range(0, len(images), 2000)])


def held_out(original, pruned, images, labels) -> dict:
    dense, out = scores(original, images), scores(pruned, images)
    a, b = dense.argmax(1) == labels, out.argmax(1) == labels
    d = a.astype(float) - b.astype(float)
    return {"n": len(labels), "error_dense": 100 * (1 - a.mean()), "error_pruned": 100 * (1 - b.mean()),
            "loss_pp": 100 * d.mean(), "se_pp": 100 * d.std(ddof=1) / np.sqrt(len(d)),
            "changed": changed(dense, out, labels)}


def changed(dense: np.ndarray, out: np.ndarray, labels: np.ndarray) -> dict:
    """The samples whose class changed: how many, how many only the dense / only the pruned model gets right, the
    input model's probability of its own class on them, and the loss expected_accuracy predicts (pp) beside the
    measured one. Also the input model's calibration: mean confidence against accuracy on all samples."""
    p = as_probabilities(dense)
    cls, new = dense.argmax(1), out.argmax(1)
    flip = cls != new
    rows = np.arange(len(p))
    pa, pb = p[rows, cls], p[rows, new]
    return {"n": int(flip.sum()), "dense_only_right": int((flip & (cls == labels)).sum()),
            "pruned_only_right": int((flip & (new == labels)).sum()),
            "p_a_quartiles": [float(q) for q in np.quantile(pa[flip], [0.25, 0.5, 0.75])] if flip.any() else [],
            "confident": int((flip & (pa >= 0.9)).sum()),
            "expected_loss_pp": 100 * float((pa - pb).mean()),
            "confidence": 100 * float(pa.mean()), "accuracy": 100 * float((cls == labels).mean())}


def judged(original, pruned, val: tuple) -> dict:
    """The output judged on the decision set (with its labels, which label-free rows did not see) by the search's
    rule under three metrics at --max-loss 0: accuracy (the labels), expected_accuracy, agreement."""
    out = {}
    for kind in ("accuracy", "expected_accuracy", "agreement"):
        ev = Evaluator(open_data({"input": val[0], "labels": val[1]}, original, batch_size=1000), kind, original)
        d = BudgetRule(ev, 0.0).judge(pruned)
        out[kind] = {"loss_pp": d.loss_pp, "se_pp": d.se_pp, "limit_pp": d.limit_pp, "within": d.within,
                     "worse": d.worse, "better": d.better}
    return out


def run_row(name: str, model_path, train: dict, val: dict, test: tuple, out: Path, judge_on=None, **choices) -> dict:
    load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    target = out / f"{name}.onnx"
    result = prune(str(model_path), data=train, val_data=val, output=target, **choices)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    original = onnx.load(str(model_path))
    lat = measure_latency(original, result.model, threads=1, budget_s=15)
    report = result.report
    neurons = {k: (v["before"], v["after"]) for k, v in (report.get("neurons") or {}).get("layers", {}).items()}
    auto = report.get("auto", {})
    return {
        "row": name, "metric": choices.get("metric"), "wall_s": wall, "cpu_s": cpu, "load": (load0, os.getloadavg()[0]),
        "compression": report["compression"], "nonzeros": (report["before"]["nonzeros"], report["after"]["nonzeros"]),
        "held_out": held_out(original, result.model, *test), "neurons": neurons,
        "judged": judged(original, result.model, judge_on) if judge_on is not None else None,
        # with external data (the default exporter writes model.onnx.data): "12 KB -> 22 KB" was the graph alone
        "file_kb": (saved_size(model_path) / 1024, saved_size(target) / 1024),
        "latency": {b["batch"]: b["speedup"] for b in lat["batches"]},
        "decision": auto.get("decision"), "rule": auto.get("rule"), "choices": auto.get("choices"),
        "search": [{k: h.get(k) for k in ("phase", "kept", "ratio", "loss_pp", "limit_pp", "neuron_share", "elapsed")}
                   for h in report.get("history", [])],
        "notes": report.get("notes", []),
    }


def show(r: dict) -> None:
    h = r["held_out"]
    flags = "--max-loss only" if not r.get("metric") else f"--max-loss, --metric {r['metric']}"
    print(f"\n== {r['row']}  ({flags}; wall {r['wall_s']:.0f} s, cpu {r['cpu_s']:.0f} s, load {r['load'][0]:.1f} -> {r['load'][1]:.1f})")
    print(f"weights      {r['nonzeros'][0]:,} -> {r['nonzeros'][1]:,} nonzeros = {r['compression']:.1f}x fewer")
    print(f"held-out     {h['error_dense']:.2f}% -> {h['error_pruned']:.2f}% error on {h['n']} images "
          f"(loss {h['loss_pp']:+.2f} pp, noise: 1 SE = {h['se_pp']:.2f} pp)")
    c = h["changed"]
    quart = "/".join(f"{q:.3f}" for q in c["p_a_quartiles"]) or "-"
    print(f"changed      {c['n']} of {h['n']} held-out classes (dense only right {c['dense_only_right']}, pruned only "
          f"right {c['pruned_only_right']}; input model's p[a] quartiles {quart}, {c['confident']} with p[a] >= 0.9); "
          f"expected_accuracy predicts {c['expected_loss_pp']:+.2f} pp; input model: confidence "
          f"{c['confidence']:.2f}% vs accuracy {c['accuracy']:.2f}%")
    for kind, j in (r.get("judged") or {}).items():
        print(f"decision set {kind:<17} {j['loss_pp']:+.3f} pp, limit {j['limit_pp']:.3f} pp (1 SE {j['se_pp']:.3f}): "
              f"{'within' if j['within'] else 'OVER'}" + (f" (worse {j['worse']}, better {j['better']})"
                                                          if kind != "agreement" else ""))
    print("neurons      " + ", ".join(f"{k} {a}->{b}" for k, (a, b) in r["neurons"].items()))
    print(f"file         {r['file_kb'][0]:.0f} KB -> {r['file_kb'][1]:.0f} KB")
    print("onnxruntime  " + ", ".join(f"batch {b}: {s:.2f}x faster" for b, s in r["latency"].items()))
    if r["decision"]:
        d = r["decision"]
        print(f"decision     loss {d['loss_pp']:+.3f} pp <= limit {d['limit_pp']:.3f} pp ({r['rule']})")
        print("choices      " + "; ".join(f"{k}={v['value']}" for k, v in (r["choices"] or {}).items()))
        path = " ".join(f"{s['phase'][0]}{'+' if s['kept'] else '-'}{s['ratio']:.0f}x" for s in r["search"]
                        if s.get("ratio"))
        print(f"search path  {path}")
    print(f"README hand  {HAND.get(r['row'].split(':')[0].removesuffix('-expected'), '-')}")


# ---------------------------------------------------------------------------------------------------- digits


def load_digits(csv: Path | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sk

        d = sk()
        return d.images.astype(np.float32), d.target.astype(np.int64)
    except ImportError:
        if csv is None or not csv.is_file():
            raise SystemExit("digits rows need scikit-learn or --digits-csv PATH (sklearn/datasets/data/digits.csv.gz)")
        raw = np.loadtxt(gzip.open(csv), delimiter=",")
        return raw[:, :-1].reshape(-1, 8, 8).astype(np.float32), raw[:, -1].astype(np.int64)


def digits_cnn(images, labels, seed: int = 0):
    """A conv-BN CNN on 8x8 digits, trained here (Adam, 40 epochs, seeded)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(40):
        net.train()
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def dynamo_exports() -> bool:
    """Whether this torch's exporter takes `dynamic_shapes` (torch 2.4's does not)."""
    import inspect

    import torch

    return "dynamic_shapes" in inspect.signature(torch.onnx.export).parameters


def export(net, path: Path, dynamo: bool) -> None:
    import torch

    # dynamic_shapes only for dynamo: torch 2.4's export has no such keyword, and the legacy path never reads it
    shapes = {"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamo else {}
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes=None if dynamo else {"input": {0: "N"}, "logits": {0: "N"}}, dynamo=dynamo,
                      opset_version=18 if dynamo else 17, **shapes)


def digits_rows(csv, out: Path, time_budget) -> list[dict]:
    images, labels = load_digits(csv)
    images = (images / 16.0)[:, None].astype(np.float32)
    order = np.random.default_rng(0).permutation(len(labels))
    tr, te = order[:1257], order[1257:]
    net = digits_cnn(images[tr], labels[tr])
    rows = []
    for exporter, dynamo in (("default", True), ("legacy", False)):
        if dynamo and not dynamo_exports():
            import torch

            print(f"# digits:default exporter skipped: torch {torch.__version__}'s export takes no dynamic_shapes")
            continue
        path = out / f"digits-{exporter}.onnx"
        export(net, path, dynamo)
        r = run_row(f"digits:{exporter} exporter", path, {"input": images[tr], "labels": labels[tr]}, None,
                    (images[te], labels[te]), out, max_loss=1.0, **time_budget)
        one = prune(str(path), data={"input": images[tr], "labels": labels[tr]}, max_loss=1.0, one_shot=True)
        r["one_shot"] = {"compression": one.report["compression"],
                         "held_out": held_out(onnx.load(str(path)), one.model, images[te], labels[te])}
        rows.append(r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="lenet300,lenet300-nolabels,lenet300-nolabels-expected,lenet5,lenet5-nolabels,"
                                      "lenet5-nolabels-expected,digits")
    ap.add_argument("--mnist", type=Path, default=shared_mnist_dir())
    ap.add_argument("--digits-csv", type=Path, default=None)
    ap.add_argument("--time-budget", default=None, help="default: the search's own (15m)")
    ap.add_argument("--max-loss", type=float, default=0.0, help="budget of the MNIST rows (the acceptance: 0)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/onnxprune-bench-auto"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--judge", type=Path, default=None, help="only judge this output of the first --rows model on "
                    "the decision set (accuracy, expected_accuracy, agreement) and the held-out half")
    args = ap.parse_args()
    if args.judge:
        test = load_split(args.mnist, "test")
        original, pruned = onnx.load(str(MODELS[args.rows.split("-")[0]])), onnx.load(str(args.judge))
        r = {"row": f"judged {args.judge}", "judged": judged(original, pruned, (test[0][:5000], test[1][:5000])),
             "held_out": held_out(original, pruned, test[0][5000:], test[1][5000:])}
        print(json.dumps(r, indent=1, default=float))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    budget = {"time_budget": args.time_budget} if args.time_budget else {}
    rows = args.rows.split(",")
    results = []
    if any(r.startswith("lenet") for r in rows):
        train, test = load_split(args.mnist, "train"), load_split(args.mnist, "test")
        val, held = (test[0][:5000], test[1][:5000]), (test[0][5000:], test[1][5000:])
        for row in rows:
            if not row.startswith("lenet"):
                continue
            name, *kind = row.split("-")
            labelled = "nolabels" not in kind
            metric = {"metric": "expected_accuracy"} if "expected" in kind else {}
            data = {"input": train[0], **({"labels": train[1]} if labelled else {})}
            decide = {"input": val[0], **({"labels": val[1]} if labelled else {})}
            r = run_row(row, MODELS[name], data, decide, held, args.out, max_loss=args.max_loss, **budget, **metric,
                        judge_on=val)
            show(r)
            results.append(r)
    if "digits" in rows:
        for r in digits_rows(args.digits_csv, args.out, budget):
            show(r)
            o = r["one_shot"]
            print(f"one-shot     {o['compression']:.1f}x, held-out {o['held_out']['error_dense']:.2f}% -> "
                  f"{o['held_out']['error_pruned']:.2f}%")
            results.append(r)
    print(f"\n(load average {os.getloadavg()}, {os.cpu_count()} cpus)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
