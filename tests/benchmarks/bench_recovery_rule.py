"""Which recovery should the automatic search choose, label-free, by the number of unlabelled samples?

`converter/auto/recovery.choose` recovers by the layer-wise refit (`reconstruct`) below `SMALL_DATA` unlabelled
training samples and by sgd distillation above. This benchmark measures both on models that are NOT the corpus (the
corpus is the report set): small MNIST models trained here on MNIST train[0:40000] only, and for each model, size N
and backend runs, one run at a time,

    python -m onnxprune prune MODEL -o OUT --data calib_N.npz --max-loss 1 --time-budget 3m --recovery R

with R in sgd / reconstruct (`--recovery auto` for what the shipped rule picks). Splits of MNIST *train*:

    [0:40000]        the models' training set (a few epochs each, torch.set_num_threads(1), seed 0)
    [40000:50000]    the pool the unlabelled calibration sets are drawn from (seed 1 permutation, first N)
    [50000:55000]    the selection set: each result's top-1 changes against the dense model and its accuracy
    MNIST test       only with --test, for the final report once the rule is chosen (reads the cached outputs)

Models (--models): mlp (784-300-100-10), cnn (LeNet-5-like), gru (rows as steps, hidden 96), lstm (rows, hidden 64),
conv1d (two 1-D convs over the 28 rows, columns as channels), encoder (a 2-layer pre-norm transformer encoder over the
28 rows as tokens, width 64, 4 heads, written out in plain ops). Cached under --cache (models, calibration sets, pruned
outputs and results.json, appended to after each run; a run already in results.json is not repeated unless --rerun).

    python -m tests.benchmarks.bench_recovery_rule [--models mlp cnn ...] [--sizes 1000 4000 10000]
        [--recoveries sgd reconstruct] [--time-budget 3m] [--cache DIR] [--rerun] [--test] [--table-only]

Prints per run: model, N, recovery asked / the one the run said it used, weights ratio (the tool's "weights A -> B
nonzero (Rx fewer)"), the run's claimed loss, top-1 changes on the selection set (%, faithful when <= 1%), its
accuracy (dense accuracy beside it), the neurons dead-neuron removal took out, wall seconds. `--flags` adds prune
flags to every run and `--variant NAME` keeps those runs apart (session 32's refit search with and without whole
neurons: `--sizes 240 --recoveries auto --seed S` and `--flags=--no-neurons --variant no-neurons`, S = 1..5). The
defaults (six models, three sizes, both backends: 36 runs) took about 25-30 minutes a draw on the shared 2-core
machine. Measured: tests/corpus/RESULTS.md, "Recovery rule" (which chose converter/auto/recovery.SMALL_DATA on the
selection set; the test set was scored once, after).
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

REPO = Path(__file__).resolve().parents[2]
MNIST = Path(os.environ.get("ONNXPRUNE_MNIST", "/work/shared/data/mnist"))
DEFAULT_CACHE = Path(os.environ.get("ONNXPRUNE_BENCH_CACHE", Path.home() / ".cache" / "onnxprune-recovery-rule"))
MODELS = ["mlp", "cnn", "gru", "lstm", "conv1d", "encoder"]
TRAIN, POOL, SELECT = (0, 40000), (40000, 50000), (50000, 55000)
SEED_TRAIN, SEED_CALIB = 0, 1
FAITHFUL_SHARE = 0.01  # at most 1% of the selection set's top-1 labels change


# ----------------------------------------------------------------------------------------------------------- data
def mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    from onnxprune.models.mnist import load_split

    return load_split(MNIST, split)  # [N, 1, 28, 28] float32 in [0, 1], int64 labels


def as_input(name: str, x: np.ndarray) -> np.ndarray:
    """The model's own input layout: images for mlp/cnn, [N, 28 rows, 28 columns] for the sequence models."""
    return x if name in ("mlp", "cnn") else x[:, 0]


# --------------------------------------------------------------------------------------------------------- models
def _nets():
    import torch
    from torch import nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(784, 300), nn.Linear(300, 100), nn.Linear(100, 10)

        def forward(self, x):
            x = torch.relu(self.fc1(x.flatten(1)))
            return self.fc3(torch.relu(self.fc2(x)))

    class CNN(nn.Module):  # LeNet-5-like: conv 20, pool, conv 50, pool, fc 500, fc 10
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.f1, self.f2 = nn.Linear(800, 500), nn.Linear(500, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
            return self.f2(torch.relu(self.f1(x.flatten(1))))

    class RNN(nn.Module):
        def __init__(self, cell, hidden):
            super().__init__()
            self.rnn = cell(28, hidden, batch_first=True)
            self.fc = nn.Linear(hidden, 10)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    class Conv1d(nn.Module):  # the 28 rows as positions, the 28 columns as channels
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv1d(28, 64, 3, padding=1), nn.Conv1d(64, 64, 3, padding=1)
            self.fc1, self.fc2 = nn.Linear(64 * 7, 128), nn.Linear(128, 10)

        def forward(self, x):
            x = torch.max_pool1d(torch.relu(self.c1(x.transpose(1, 2))), 2)
            x = torch.max_pool1d(torch.relu(self.c2(x)), 2)
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    class Block(nn.Module):  # pre-norm self-attention (4 heads) and a 2-layer feed-forward, written out
        def __init__(self, d=64, heads=4, ff=128):
            super().__init__()
            self.heads, self.n1, self.n2 = heads, nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

        def forward(self, x):
            n, t, d = x.shape
            q, k, v = self.qkv(self.n1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1) @ v
            x = x + self.proj(a.transpose(1, 2).reshape(n, t, d))
            return x + self.ff2(torch.relu(self.ff1(self.n2(x))))

    class Encoder(nn.Module):  # the 28 rows as tokens
        def __init__(self, d=64):
            super().__init__()
            self.embed, self.pos = nn.Linear(28, d), nn.Parameter(torch.zeros(1, 28, d))
            self.blocks = nn.Sequential(Block(d), Block(d))
            self.norm, self.fc = nn.LayerNorm(d), nn.Linear(d, 10)

        def forward(self, x):
            return self.fc(self.norm(self.blocks(self.embed(x) + self.pos)).mean(1))

    return {"mlp": (MLP, 10), "cnn": (CNN, 4), "gru": (lambda: RNN(nn.GRU, 96), 8),
            "lstm": (lambda: RNN(nn.LSTM, 64), 8), "conv1d": (Conv1d, 6),
            "encoder": (Encoder, 5)}


def train_model(name: str, cache: Path) -> Path:
    """Train `name` on MNIST train[0:40000] (Adam 1e-3, batch 128, a few epochs) and export it; cached."""
    path = cache / "models" / f"{name}.onnx"
    if path.exists():
        return path
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(SEED_TRAIN)
    make, epochs = _nets()[name]
    net = make()
    x, y = mnist("train")
    x, y = torch.from_numpy(as_input(name, x[TRAIN[0]:TRAIN[1]])), torch.from_numpy(y[TRAIN[0]:TRAIN[1]])
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    start = time.time()
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            idx = order[i:i + 128]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  {name} epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} ({time.time() - start:.0f} s)", flush=True)
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = x[:2]
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
    tmp.rename(path)
    (cache / "models" / f"{name}.json").write_text(json.dumps(
        {"model": name, "trained_on": "MNIST train[0:40000]", "epochs": epochs, "seconds": round(time.time() - start),
         "params": sum(p.numel() for p in net.parameters())}, indent=2) + "\n")
    return path


def _tag(seed: int) -> str:
    return "" if seed == SEED_CALIB else f"_s{seed}"


def make_calib(name: str, n: int, cache: Path, seed: int = SEED_CALIB) -> Path:
    """N unlabelled images from MNIST train[40000:50000] (the first N of a seeded permutation), as the model's
    input; --seed draws another set from the same pool."""
    path = cache / "calib" / f"{name}_{n}{_tag(seed)}.npz"
    if not path.exists():
        x, _ = mnist("train")
        pool = x[POOL[0]:POOL[1]]
        if n > len(pool):
            raise ValueError(f"{n} calibration samples asked for; the pool holds {len(pool)}")
        order = np.random.default_rng(seed).permutation(len(pool))
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, input=as_input(name, pool[order[:n]]))
    return path


# -------------------------------------------------------------------------------------------------------- scoring
def logits(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 500]})[0] for i in range(0, len(x), 500)])


def score(name: str, dense: Path, pruned: Path, split: str) -> dict:
    """Top-1 changes against the dense model and accuracy on the selection set (or the MNIST test set)."""
    x, y = mnist("train" if split == "select" else "test")
    if split == "select":
        x, y = x[SELECT[0]:SELECT[1]], y[SELECT[0]:SELECT[1]]
    x = as_input(name, x)
    d, p = logits(dense, x).argmax(1), logits(pruned, x).argmax(1)
    return {"n": len(y), "changed": int((d != p).sum()), "changed_share": float((d != p).mean()),
            "acc": float((p == y).mean()), "dense_acc": float((d == y).mean())}


# ----------------------------------------------------------------------------------------------------------- runs
def read_report(stdout: str) -> dict:
    out: dict = {}
    m = re.search(r"weights (\S+) -> (\S+) nonzero \(([\d.]+)x fewer\)", stdout)
    if m:
        out["weights_in"], out["weights_out"], out["ratio"] = m.group(1), m.group(2), float(m.group(3))
    m = re.search(r"recovery by (\w+)", stdout)
    out["used"] = m.group(1) if m else ("one-shot" if "one-shot" in stdout else "?")
    m = re.search(r"budget: measured loss ([-+]?[\d.]+) pp", stdout)
    out["claimed_pp"] = float(m.group(1)) if m else None
    m = re.search(r"dead neurons removed: (\d+)", stdout)
    out["neurons"] = int(m.group(1)) if m else 0
    return out


def prune(name: str, n: int, recovery: str, args) -> dict:
    model, calib = train_model(name, args.cache), make_calib(name, n, args.cache, args.seed)
    variant = f"_{args.variant}" if args.variant else ""
    out = args.cache / "runs" / f"{name}_{n}_{recovery}{_tag(args.seed)}{variant}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [args.python, "-m", "onnxprune", "prune", str(model), "-o", str(out), "--data", str(calib),
           "--max-loss", "1", "--time-budget", args.time_budget, "--recovery", recovery, *args.flags.split()]
    res = {"model": name, "n": n, "recovery": recovery, "time_budget": args.time_budget, "seed": args.seed,
           "variant": args.variant, "cmd": " ".join(cmd[1:]).replace(str(args.cache), "CACHE")}
    proc = run_cli(cmd, out, res, args.timeout)
    if proc is None:
        return res
    res.update(read_report(proc.stdout), outcome="ok", output=str(out))
    res["select"] = score(name, model, out, "select")
    return res


def run_cli(cmd: list[str], out: Path, res: dict, timeout: float):
    """Run one prune command (one thread each for BLAS, wide columns), its log beside `out`; `res` gets its seconds,
    and its outcome when it timed out or failed (then None), else the finished process."""
    env = dict(os.environ, COLUMNS="250")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        res.update(seconds=time.time() - start, outcome="timeout")
        return None
    res["seconds"] = time.time() - start
    (out.parent / f"{out.stem}.log").write_text(proc.stdout + "\n--- stderr\n" + proc.stderr)
    if proc.returncode != 0 or not out.exists():
        res.update(outcome=f"exit {proc.returncode}", reason=(proc.stderr or proc.stdout).strip()[-300:])
        return None
    return proc


def row(r: dict, split: str = "select") -> str:
    s = r.get(split) or {}
    ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "-"
    claim = f"{r['claimed_pp']:.2f}" if r.get("claimed_pp") is not None else "-"
    if s:
        ch = f"{100 * s['changed_share']:.2f}"
        ok = "yes" if s["changed_share"] <= FAITHFUL_SHARE else "NO"
        acc = f"{100 * s['acc']:.2f}/{100 * s['dense_acc']:.2f}"
    else:
        ch, ok, acc = "-", r.get("outcome", "-"), "-"
    return (f"{r['model']:7s} {r['n']:>6d} {r['recovery']:>11s} {r.get('used', '-'):>11s} {ratio:>6s} {claim:>6s} "
            f"{ch:>7s} {ok:>4s} {acc:>13s} {r.get('neurons', 0):>7d} {r.get('seconds', 0):6.0f}")


HEADER = (f"{'model':7s} {'N':>6s} {'asked':>11s} {'used':>11s} {'ratio':>6s} {'claim':>6s} {'chg %':>7s} "
          f"{'<=1%':>4s} {'acc/dense %':>13s} {'neurons':>7s} {'wall s':>6s}")


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    ap.add_argument("--sizes", nargs="*", type=int, default=[1000, 4000, 10000])
    ap.add_argument("--recoveries", nargs="*", default=["sgd", "reconstruct"],
                    choices=["sgd", "reconstruct", "auto"])
    ap.add_argument("--time-budget", default="3m")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs `-m onnxprune`")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--seed", type=int, default=SEED_CALIB, help="the calibration draw (another seed: other samples "
                    "of the same pool)")
    ap.add_argument("--flags", default="", help="more prune flags for every run, e.g. '--no-neurons'")
    ap.add_argument("--variant", default="", help="a name for runs with --flags (kept apart in results.json)")
    ap.add_argument("--rerun", action="store_true", help="run again what results.json already holds")
    ap.add_argument("--train-only", action="store_true", help="train the models and write the sets, run nothing")
    ap.add_argument("--table-only", action="store_true", help="print results.json's table, run nothing")
    ap.add_argument("--test", action="store_true", help="score the cached outputs on the MNIST test set (the final "
                    "report, after the rule is chosen); runs nothing")
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    store = args.cache / "results.json"
    results = load_results(store)
    wanted = [(m, n, r) for m in args.models for n in args.sizes for r in args.recoveries]

    def pick(m, n, r):
        return next((x for x in results if (x["model"], x["n"], x["recovery"], x["time_budget"], x.get("seed", 1),
                                            x.get("variant", "")) == (m, n, r, args.time_budget, args.seed,
                                                                      args.variant)), None)

    if args.train_only:
        for m in args.models:
            print(m, train_model(m, args.cache), flush=True)
            for n in args.sizes:
                make_calib(m, n, args.cache, args.seed)
        return 0
    if args.test:
        print("MNIST test set (10,000 images)\n" + HEADER)
        for key in wanted:
            r = pick(*key)
            if r and r.get("output"):
                r["test"] = score(r["model"], train_model(r["model"], args.cache), Path(r["output"]), "test")
                print(row(r, "test"), flush=True)
        store.write_text(json.dumps(results, indent=2) + "\n")
        return 0
    if not args.table_only:
        print(HEADER, flush=True)
        for key in wanted:
            old = pick(*key)
            if old and not args.rerun:
                continue
            r = prune(*key, args)
            if old:
                results.remove(old)
            results.append(r)
            store.write_text(json.dumps(results, indent=2) + "\n")
            print(row(r), flush=True)
    print(f"\nselection set: MNIST train[{SELECT[0]}:{SELECT[1]}]; calibration draw seed {args.seed}; "
          f"--time-budget {args.time_budget}\n" + HEADER)
    for key in wanted:
        r = pick(*key)
        if r:
            print(row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
