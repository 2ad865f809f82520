"""Which share of LABELLED --data should the automatic search decide on, by data size?

With labels the automatic search holds out `--validation` (default 0.1: every 10th sample) of --data as the
decision set that certifies the budget and retrains on the rest (`converter/steps/data.py`, `Data._split`). This
benchmark measures decision shares, each given as the run's --validation, on models that are NOT the corpus:
the MNIST models of `bench_recovery_rule` (trained on MNIST train[0:40000]; reused from it, cached here), and for
each model, labelled size N and policy, one run at a time,

    python -m onnxprune prune MODEL -o OUT --data calib_N.npz --max-loss 1 --time-budget 2m --validation V

Policies (--policies), V as a function of N (the split holds out every round(1/V)-th sample):

    p10      0.1                   (the default before this benchmark)
    third    min(1000/N, 1/3)
    half     min(1000/N, 0.5)
    default  no --validation       (what the shipped default does; for checking it after a change)

Policies giving the same V at an N (third and half from N = 3,000 on) share one run. Splits of MNIST *train*:

    [0:40000]        the models' training set (bench_recovery_rule.train_model)
    [40000:50000]    the pool the labelled calibration sets are drawn from (seed 1 permutation, first N; images
                     under the model's input name and int64 labels under `labels`, the name the tool reads)
    [50000:55000]    the selection set: each result's accuracy change against the dense model (pp, with the
                     standard error of the paired per-image difference) and its top-1 changes
    MNIST test       only with --test, for the final report once the policy is chosen (reads the cached outputs)

    python -m tests.benchmarks.bench_labelled_split [--models mlp cnn] [--sizes 1000 2000 5000]
        [--policies p10 third half] [--time-budget 2m] [--cache DIR] [--seeds 1 2 3] [--rerun] [--test]
        [--table-only]

Prints per run: model, N, calibration draw, policy, V, the decision samples the run said it judged on, weights ratio, the run's
claimed loss, accuracy lost on the selection set (pp +- SE; faithful when <= 1 pp), top-1 changes (%), wall
seconds; then per policy (over every draw asked for) the geometric-mean ratio and the worst / mean selection loss.
Measured:
tests/corpus/RESULTS.md, "Labelled split".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from tests.benchmarks.bench_recovery_rule import (POOL, REPO, SEED_CALIB, SELECT, _tag, as_input, logits, mnist,
                                                  read_report, run_cli, train_model)

DEFAULT_CACHE = Path(os.environ.get("ONNXPRUNE_BENCH_CACHE", Path.home() / ".cache" / "onnxprune-labelled-split"))
MODELS = ["mlp", "cnn", "gru", "lstm", "conv1d", "encoder"]
POLICIES = ["p10", "third", "half", "default"]
FAITHFUL_PP = 1.0  # the budget: at most 1 pp of accuracy lost on the selection set


def validation(policy: str, n: int) -> float | None:
    """The --validation a policy passes at N labelled samples (None: the flag is not given)."""
    if policy == "p10":
        return 0.1
    if policy == "third":
        return min(1000 / n, 1 / 3)
    if policy == "half":
        return min(1000 / n, 0.5)
    return None


def every(v: float | None) -> int | None:
    """The split the tool makes of --validation V (Data._split: every round(1/V)-th sample held out)."""
    return None if v is None else max(2, round(1.0 / v))


def run_key(policy: str, n: int) -> str:
    """Runs are keyed by the split they make, so policies that make the same one share a run."""
    e = every(validation(policy, n))
    return "default" if e is None else f"every{e}"


def make_calib(name: str, n: int, cache: Path, seed: int = SEED_CALIB) -> Path:
    """N labelled images from MNIST train[40000:50000] (the first N of a seeded permutation): the model's input
    under `input`, int64 labels under `labels`."""
    path = cache / "calib" / f"{name}_{n}{_tag(seed)}.npz"
    if not path.exists():
        x, y = mnist("train")
        pool, labels = x[POOL[0]:POOL[1]], y[POOL[0]:POOL[1]]
        if n > len(pool):
            raise ValueError(f"{n} calibration samples asked for; the pool holds {len(pool)}")
        order = np.random.default_rng(seed).permutation(len(pool))[:n]
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, input=as_input(name, pool[order]), labels=labels[order].astype(np.int64))
    return path


def score(name: str, dense: Path, pruned: Path, split: str) -> dict:
    """Accuracy lost against the dense model (pp, + its paired standard error) and top-1 changes, on the selection
    set (or the MNIST test set)."""
    x, y = mnist("train" if split == "select" else "test")
    if split == "select":
        x, y = x[SELECT[0]:SELECT[1]], y[SELECT[0]:SELECT[1]]
    x = as_input(name, x)
    d, p = logits(dense, x).argmax(1), logits(pruned, x).argmax(1)
    diff = (d == y).astype(float) - (p == y).astype(float)  # 1 where the pruned model lost an image
    return {"n": len(y), "changed": int((d != p).sum()), "changed_share": float((d != p).mean()),
            "acc": float((p == y).mean()), "dense_acc": float((d == y).mean()),
            "loss_pp": 100 * float(diff.mean()), "se_pp": 100 * float(diff.std(ddof=1) / math.sqrt(len(y)))}


def read_decision(stdout: str) -> int | None:
    """The decision samples the run said it judged on (the budget line's 'on the N decision samples', else any
    'N decision samples' it printed)."""
    m = re.search(r"on the (\d+) decision samples", stdout) or re.search(r"(\d+) decision samples", stdout)
    return int(m.group(1)) if m else None


def prune(name: str, n: int, key: str, v: float | None, seed: int, args) -> dict:
    model, calib = train_model(name, args.cache), make_calib(name, n, args.cache, seed)
    out = args.cache / "runs" / f"{name}_{n}_{key}{_tag(seed)}.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [args.python, "-m", "onnxprune", "prune", str(model), "-o", str(out), "--data", str(calib),
           "--max-loss", "1", "--time-budget", args.time_budget]
    if v is not None:
        cmd += ["--validation", f"{v:.4f}"]
    res = {"model": name, "n": n, "key": key, "validation": v, "time_budget": args.time_budget, "seed": seed,
           "cmd": " ".join(cmd[1:]).replace(str(args.cache), "CACHE")}
    proc = run_cli(cmd, out, res, args.timeout)
    if proc is None:
        return res
    res.update(read_report(proc.stdout), outcome="ok", output=str(out), decide=read_decision(proc.stdout))
    res["select"] = score(name, model, out, "select")
    return res


HEADER = (f"{'model':6s} {'N':>5s} {'draw':>4s} {'policy':>7s} {'V':>6s} {'decide':>6s} {'ratio':>6s} {'claim':>6s} "
          f"{'lost pp +- SE':>14s} {'<=1pp':>5s} {'chg %':>6s} {'wall s':>6s}")


def row(policy: str, r: dict, split: str = "select") -> str:
    s = r.get(split) or {}
    v = "-" if r.get("validation") is None else f"{r['validation']:.3f}"
    ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "-"
    claim = f"{r['claimed_pp']:.2f}" if r.get("claimed_pp") is not None else "-"
    if s:
        lost = f"{s['loss_pp']:.2f} +- {s['se_pp']:.2f}"
        ok = "yes" if s["loss_pp"] <= FAITHFUL_PP else "NO"
        ch = f"{100 * s['changed_share']:.2f}"
    else:
        lost, ok, ch = "-", r.get("outcome", "-"), "-"
    return (f"{r['model']:6s} {r['n']:>5d} {r.get('seed', 1):>4d} {policy:>7s} {v:>6s} {str(r.get('decide') or '-'):>6s} {ratio:>6s} "
            f"{claim:>6s} {lost:>14s} {ok:>5s} {ch:>6s} {r.get('seconds', 0):6.0f}")


def summary(rows: list[tuple[str, dict]], split: str = "select") -> list[str]:
    """Per policy, over every size and then at each size: geometric-mean ratio, worst and mean accuracy lost, runs
    faithful."""
    lines = [f"{'N':>5s} {'policy':>7s} {'runs':>4s} {'geomean ratio':>13s} {'worst lost pp':>13s} "
             f"{'mean lost pp':>12s} {'faithful':>8s}"]
    sizes = ["all", *sorted({r["n"] for _, r in rows})] if len({r["n"] for _, r in rows}) > 1 else ["all"]
    for size in sizes:
        for policy in dict.fromkeys(p for p, _ in rows):
            done = [r for p, r in rows if p == policy and r.get(split) and r.get("ratio")
                    and size in ("all", r["n"])]
            if not done:
                continue
            gm = math.exp(sum(math.log(r["ratio"]) for r in done) / len(done))
            lost = [r[split]["loss_pp"] for r in done]
            ok = sum(x <= FAITHFUL_PP for x in lost)
            lines.append(f"{size:>5} {policy:>7s} {len(done):>4d} {gm:>13.2f} {max(lost):>13.2f} "
                         f"{sum(lost) / len(lost):>12.2f} {ok:>4d}/{len(done):<3d}")
    return lines


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=["mlp", "cnn"], choices=MODELS)
    ap.add_argument("--sizes", nargs="*", type=int, default=[1000, 2000, 5000])
    ap.add_argument("--policies", nargs="*", default=["p10", "third", "half"], choices=POLICIES)
    ap.add_argument("--time-budget", default="2m")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs `-m onnxprune`")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--seeds", nargs="*", type=int, default=[SEED_CALIB], help="the calibration draws (another "
                    "seed: other samples of the same pool), run one after the other")
    ap.add_argument("--rerun", action="store_true", help="run again what results.json already holds")
    ap.add_argument("--label", default="", help="tag the runs (e.g. a branch whose default differs): a run is "
                    "reused only under the same label")
    ap.add_argument("--train-only", action="store_true", help="train the models and write the sets, run nothing")
    ap.add_argument("--table-only", action="store_true", help="print results.json's table, run nothing")
    ap.add_argument("--test", action="store_true", help="score the cached outputs on the MNIST test set (the final "
                    "report, after the policy is chosen); runs nothing")
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    store = args.cache / "results.json"
    results = load_results(store)
    wanted = [(m, n, p, s) for s in args.seeds for m in args.models for n in args.sizes for p in args.policies]

    def pick(m, n, p, s):
        k = run_key(p, n)
        return next((x for x in results if (x["model"], x["n"], x["key"], x["time_budget"], x.get("seed", 1),
                                            x.get("label", "")) == (m, n, k, args.time_budget, s, args.label)), None)

    if args.train_only:
        for m in args.models:
            print(m, train_model(m, args.cache), flush=True)
            for n in args.sizes:
                for s in args.seeds:
                    make_calib(m, n, args.cache, s)
        return 0
    if args.test:
        print("MNIST test set (10,000 images)\n" + HEADER)
        rows = []
        for m, n, p, s in wanted:
            r = pick(m, n, p, s)
            if r and r.get("output"):
                if "test" not in r:
                    r["test"] = score(m, train_model(m, args.cache), Path(r["output"]), "test")
                rows.append((p, r))
                print(row(p, r, "test"), flush=True)
        store.write_text(json.dumps(results, indent=2) + "\n")
        print("\n" + "\n".join(summary(rows, "test")))
        return 0
    if not args.table_only:
        print(HEADER, flush=True)
        fresh = set()  # runs made in this call: a policy sharing one's split is not run again
        for m, n, p, s in wanted:
            old = pick(m, n, p, s)
            if old and (not args.rerun or id(old) in fresh):
                continue
            r = prune(m, n, run_key(p, n), validation(p, n), s, args)
            r["label"] = args.label
            if old:
                results.remove(old)
            results.append(r)
            store.write_text(json.dumps(results, indent=2) + "\n")
            fresh.add(id(r))
            print(row(p, r), flush=True)
    print(f"\nselection set: MNIST train[{SELECT[0]}:{SELECT[1]}]; calibration draws {args.seeds}; "
          f"--time-budget {args.time_budget}\n" + HEADER)
    rows = []
    for m, n, p, s in wanted:
        r = pick(m, n, p, s)
        if r:
            rows.append((p, r))
            print(row(p, r))
    print("\n" + "\n".join(summary(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
