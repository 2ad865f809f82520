"""Before/after of the refit's speed in one run: two checkouts, interleaved, on the corpus models that recover by
the layer-wise refit.

For each model, each checkout in turn (the order alternates from model to model, so that a load that changes
during the run falls on both):

  1. the refit alone (tests/benchmarks/bench_refit.py run from that checkout: the steps before the search as the
     CLI runs them, then one DenseSessions across refits at LAMP densities 0.9 and 0.54): seconds per refit, and
     the largest difference of the refit weights between the two checkouts;
  2. the command a user runs, `prune MODEL -o OUT --data CALIB --max-loss 1 --time-budget 3m --report DIR`, from
     that checkout (as bench_corpus runs it, OMP_NUM_THREADS=1): wall seconds, the weights ratio, each refit
     candidate's seconds (refit + judgement, from the report's history), the notes on the time budget, and the
     model's card on its held-out data (faithful or not).

    python -m tests.benchmarks.bench_refit_speed --before /path/to/old/checkout [--models NAME ...]
        [--time-budget 3m] [--density 0.9 0.54] [--skip-refit] [--skip-prune] [--json out.json]

Run it from the "after" checkout with its .venv (both checkouts run with this interpreter).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks import bench_corpus

AFTER = Path(__file__).resolve().parents[2]
MODELS = ["rapidocr_rec", "magika", "torch_logmel_legacy"]


def _env(checkout: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHONPATH"] = str(checkout)  # its `onnxprune` first
    return env


def refit(checkout: Path, name: str, work: Path, against: Path | None, densities=(0.9, 0.54)) -> list[dict]:
    cmd = [sys.executable, str(AFTER / "tests" / "benchmarks" / "bench_refit.py"), name, "--save", str(work),
           "--density", *map(str, densities)]
    if against is not None:
        cmd += ["--against", str(against)]
    proc = subprocess.run(cmd, cwd=checkout, env=_env(checkout), capture_output=True, text=True)
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode:
        print(proc.stderr[-2000:], file=sys.stderr)
    return [r for r in rows if "call" in r]


def prune(checkout: Path, name: str, work: Path, budget: str) -> dict:
    folder = bench_corpus.DEFAULT_ROOT / name
    card = json.loads((folder / "card.json").read_text())
    out, report = work / "pruned.onnx", work / "report"
    cmd = [sys.executable, "-m", "onnxprune", "prune", str(folder / card["model"]), "-o", str(out), "--data",
           str(folder / card["data"]["calib"]), "--max-loss", "1", "--time-budget", budget, "--report", str(report)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=checkout, env=_env(checkout), capture_output=True, text=True)
    row = {"wall_s": round(time.time() - t0, 1), "exit": proc.returncode}
    if proc.returncode or not out.exists():
        row["error"] = (proc.stderr or proc.stdout)[-500:]
        return row
    row["ratio"] = round(bench_corpus.nonzero_weights(folder / card["model"]) /
                         max(1, bench_corpus.nonzero_weights(out)), 3)
    faithful, checks = bench_corpus.measure(folder, card, out)
    row["faithful"] = faithful
    row["checks"] = "; ".join(f"{c['metric']} {c['figure']:.4g} (bar {c['bar']:g})" for c in checks)
    doc = json.loads((report / "report.json").read_text())
    history = doc.get("history") or []
    row["refits"] = [(h["phase"], round(h["seconds"], 1), round(h["ratio"], 2), bool(h["kept"])) for h in history
                     if str(h.get("phase", "")).startswith("reconstruct")]
    notes = [n for n in (doc.get("notes") or []) + (doc.get("auto", {}).get("notes") or [])
             if "time budget" in n or "per-layer refit" in n]
    row["notes"] = list(dict.fromkeys(notes))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="the old checkout")
    ap.add_argument("--after", type=Path, default=AFTER)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--time-budget", default="3m")
    ap.add_argument("--density", type=float, nargs="+", default=[0.9, 0.54], help="the refit-alone LAMP densities")
    ap.add_argument("--skip-refit", action="store_true")
    ap.add_argument("--skip-prune", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.models):
            order = [("before", args.before), ("after", args.after)]
            order = order if i % 2 == 0 else order[::-1]
            saved = {}
            for label, checkout in order:
                work = Path(tmp) / label / name
                work.mkdir(parents=True, exist_ok=True)
                row = {"model": name, "version": label}
                if not args.skip_refit:
                    other = next((p for lab, p in saved.items() if lab != label), None)
                    row["refit"] = refit(checkout, name, work / "refit", other, args.density)
                    saved[label] = work / "refit"
                if not args.skip_prune:
                    row["prune"] = prune(checkout, name, work, args.time_budget)
                print(json.dumps(row), flush=True)
                results.append(row)
    print(f"\n{'model':20s} {'version':7s} {'refit alone s':>14s} {'wall s':>7s} {'ratio':>6s} "
          f"{'faithful':>8s}  refit candidates in the run: count (kept), seconds each median / max")
    for r in results:
        fits = " / ".join(f"{x['seconds']:.1f}" for x in r.get("refit", []))
        diff = max((x.get("max_rel_diff", 0.0) for x in r.get("refit", [])), default=0.0)
        p = r.get("prune", {})
        seconds = sorted(c[1] for c in p.get("refits", []))
        cands = (f"{len(seconds)} ({sum(c[3] for c in p['refits'])}), {seconds[len(seconds) // 2]:.1f} / "
                 f"{seconds[-1]:.1f}" if seconds else "none")
        print(f"{r['model']:20s} {r['version']:7s} {fits:>14s} {p.get('wall_s', float('nan')):7.1f} "
              f"{p.get('ratio', float('nan')):6.2f} {str(p.get('faithful', '-')):>8s}  {cands}"
              + (f"  [refit weights differ from the other checkout's by {diff:.2g} of their scale]"
                 if "refit" in r and any("max_rel_diff" in x for x in r["refit"]) else ""))
        for n in p.get("notes", []):
            print(f"{'':30s}note: {n}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
