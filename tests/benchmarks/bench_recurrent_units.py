"""Recurrent hidden units removed whole: what the automatic search gives with and without them, and how fast it runs.

Dead-neuron removal shrinks an LSTM/GRU's hidden size (passes/channel_groups/rules_layers._recurrent), so the
automatic search's neuron knob now reaches recurrent layers. This benchmark runs, for the MNIST row-sequence GRU
(hidden 96) and LSTM (hidden 64) of tests/benchmarks/bench_recovery_rule.py (trained on MNIST train[0:40000], cached
there), in one run with the same code,

    python -m onnxprune prune MODEL -o OUT --data TRAIN.npz --eval-data TEST.npz --max-loss 1 --time-budget T
    python -m onnxprune prune MODEL -o OUT ... --no-neurons                          (the baseline: weights only)

TRAIN.npz: N labelled images of MNIST train[40000:60000] (not the models' training set); TEST.npz: MNIST test, which
only reports (the search never sees it). Then every output and the input model are timed in onnxruntime (CPU, one
thread, default optimisations), interleaved run by run, median of 7 rounds, at batch 1 and 64.

Prints per model and variant: weights ratio, recurrent units before -> after, the MACs ratio the run printed, test
accuracy (dense beside it), and latency as a multiple of the input model's.

    python -m tests.benchmarks.bench_recurrent_units [--models gru lstm] [--n 20000] [--time-budget 5m]
        [--cache DIR (bench_recovery_rule's)]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tests.benchmarks.bench_recovery_rule import DEFAULT_CACHE, REPO, as_input, mnist, train_model


def data(cache: Path, name: str, n: int) -> tuple[Path, Path]:
    train, test = cache / "calib" / f"{name}_labelled_{n}.npz", cache / "calib" / f"{name}_test.npz"
    if not train.exists():
        x, y = mnist("train")
        train.parent.mkdir(parents=True, exist_ok=True)
        np.savez(train, input=as_input(name, x[40000:40000 + n]), labels=y[40000:40000 + n])
    if not test.exists():
        x, y = mnist("test")
        np.savez(test, input=as_input(name, x), labels=y)
    return train, test


def prune(model: Path, train: Path, test: Path, out: Path, budget: str, flags: list[str]) -> dict:
    cmd = [sys.executable, "-m", "onnxprune", "prune", str(model), "-o", str(out), "--data", str(train),
           "--eval-data", str(test), "--max-loss", "1", "--time-budget", budget, "--seed", "0", *flags]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    res = {"wall": time.perf_counter() - t0, "rc": proc.returncode}
    text = proc.stdout + proc.stderr
    m = re.search(r"weights \S+ -> \S+ nonzero \(([\d.]+)x fewer\)", text)
    res["ratio"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"dead neurons removed: \d+ \(([^)]*)\)", text)
    res["units"] = m.group(1) if m else "-"
    m = list(re.finditer(r"([\d.]+)x fewer MACs", text))
    res["macs"] = m[-1].group(1) + "x" if m else "-"
    m = re.search(r"\(evaluation\): ([\d.]+)% -> ([\d.]+)%", text)
    res["acc"] = f"{m.group(1)} -> {m.group(2)}" if m else "?"
    if proc.returncode:
        res["tail"] = text[-600:]
    return res


def latency(paths: list[Path], x: np.ndarray, rounds: int = 7, seconds: float = 0.3) -> list[float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for p in paths]
    times: list[list[float]] = [[] for _ in paths]
    for s in sessions:
        s.run(None, {"input": x})
    for _ in range(rounds):
        for k, s in enumerate(sessions):
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                s.run(None, {"input": x})
                n += 1
            times[k].append((time.perf_counter() - t0) / n)
    return [float(np.median(t)) for t in times]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", default=["gru", "lstm"], choices=["gru", "lstm"])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--time-budget", default="5m")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    for name in args.models:
        model = train_model(name, args.cache)
        train, test = data(args.cache, name, args.n)
        outs, rows = [], []
        for variant, flags in (("units", []), ("no-neurons", ["--no-neurons"])):
            out = args.cache / "runs" / f"{name}_units_bench_{variant}.onnx"
            out.parent.mkdir(parents=True, exist_ok=True)
            res = prune(model, train, test, out, args.time_budget, flags)
            rows.append((variant, res))
            if res["rc"] == 0:
                outs.append(out)
        x = {b: as_input(name, mnist("test")[0][:b]) for b in (1, 64)}
        lat = {b: latency([model, *outs], x[b]) for b in x}
        print(f"\n{name}: {args.n} labelled images of MNIST train[40000:], --max-loss 1 --time-budget "
              f"{args.time_budget}; test = MNIST test (10,000)")
        print(f"{'variant':12s} {'weights':>8s} {'units':28s} {'MACs':>6s} {'test acc %':>16s} "
              f"{'b=1':>6s} {'b=64':>6s} {'wall s':>7s}")
        for k, (variant, res) in enumerate(rows):
            if res["rc"]:
                print(f"{variant:12s} failed (exit {res['rc']}): {res.get('tail', '')}")
                continue
            speed = [lat[b][0] / lat[b][k + 1] for b in (1, 64)]
            print(f"{variant:12s} {res['ratio']:7.2f}x {res['units']:28s} {res['macs']:>6s} {res['acc']:>16s} "
                  f"{speed[0]:5.2f}x {speed[1]:5.2f}x {res['wall']:7.0f}")
        print(f"(input model: {lat[1][0] * 1e3:.3f} ms at batch 1, {lat[64][0] * 1e3:.3f} ms at batch 64)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
