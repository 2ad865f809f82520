"""Does `--time-budget` hold? The CLI on corpus models at given budgets, quiet or under load, and where the time went.

For every model and budget:

    python -m onnxprune prune ROOT/NAME/model.onnx -o OUT --data ROOT/NAME/calib{.npz,/} --max-loss 1
        --time-budget B --json

run from --repo (default this checkout; another worktree measures another commit) as a subprocess, its wall time
taken from outside (interpreter start, imports and the write included: what a CI job waits for). The report's
`time_budget` and `seconds_by_step` say where the time went: before the search (load, inventory, data, targets),
the search, and each step after it (shrink, encode, verify, measure, report, budget-check, write), against the
reserve the search left for them (`time_budget.reserved_after_search_s`, at the pace it was priced at). "outside"
is the wall less the run's own total: what the run's clock did not count (once the interpreter, the imports and the
options; since the clock starts with the process, only the JSON printed and the exit), while the "startup" step is
what it counted of them. A run is "verified" when it exited 0, wrote its output and the report has a parity check.

--load K starts K busy processes (one core each) before every run and kills them after it (several values: each
is a separate row); the machine's own load (`os.getloadavg`) is printed with every run.

    python -m tests.benchmarks.bench_time_budget [--only NAME ...] [--budgets 1m 3m] [--load 0 2] [--repo DIR]
        [--root DIR] [--python PY] [--json F] [--extra ARG ...]
    python -m tests.benchmarks.bench_time_budget --compare BEFORE.jsonl AFTER.jsonl   # two --json files, side by side

Needs only the project's .venv. Prints; asserts nothing (timing is never a test's business).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = Path(os.environ.get("ONNXPRUNE_CORPUS", Path.home() / ".cache" / "onnxprune-corpus"))
DEFAULT_MODELS = ["magika", "nudenet_320n", "rapidocr_det", "torch_encoder_dynamo", "silero_vad"]
AFTER_STEPS = ("shrink", "encode", "verify", "measure", "report", "budget-check", "write")
BURNER = "import signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\nwhile True:\n    pass\n"


def seconds_of(text: str) -> float:
    """'90', '90s', '3m', '1h' -> seconds."""
    text = text.strip().lower()
    unit = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(text[-1:])
    return float(text[:-1]) * unit if unit else float(text)


class Burners:
    """K busy processes while a run goes on (started and ended by their own pids)."""

    def __init__(self, k: int, python: str):
        self.k, self.python, self.procs = k, python, []

    def __enter__(self):
        self.procs = [subprocess.Popen([self.python, "-c", BURNER]) for _ in range(self.k)]
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def run_one(name: str, budget: str, load: int, args, work: Path) -> dict:
    folder = args.root / name
    card = json.loads((folder / "card.json").read_text())
    out = work / f"{name}_{budget}_{load}.onnx"
    cmd = [args.python, "-m", "onnxprune", "prune", str(folder / card["model"]), "-o", str(out),
           "--data", str(folder / card["data"]["calib"]), "--max-loss", "1", "--time-budget", budget, "--json",
           *args.extra]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    row = {"model": name, "budget": budget, "budget_s": seconds_of(budget), "load": load, "repo": str(args.repo)}
    with Burners(load, args.python):
        time.sleep(1.0 if load else 0.0)  # the burners are running before the clock does
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=args.repo, env=env, capture_output=True, text=True, timeout=args.timeout)
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        row["loadavg"] = (round(load_before, 1), round(os.getloadavg()[0], 1))
    row["ratio"] = round(row["wall_s"] / row["budget_s"], 2)
    row["exit"] = proc.returncode
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        row["error"] = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:200]
        return row
    steps = report.get("seconds_by_step", {})
    spent = report.get("time_budget") or {}
    auto_time = (report.get("auto") or {}).get("time", {})
    row["time_budget"], row["auto_time"] = spent, auto_time
    row["steps"] = {k: round(v, 1) for k, v in steps.items() if k != "total"}
    row["run_s"] = round(spent.get("total_s", steps.get("total", 0.0) + steps.get("write", 0.0)), 1)
    row["outside_s"] = round(row["wall_s"] - row["run_s"], 1)
    row["before_s"], row["search_s"] = spent.get("before_search_s"), spent.get("search_s")
    row["after_s"] = spent.get("after_search_s")
    row["reserve_s"] = spent.get("reserved_after_search_s", auto_time.get("reserve_s"))
    row["pace_ms"] = auto_time.get("reserve_ms_per_sample", auto_time.get("pass_ms_per_sample"))
    row["compression"] = report.get("compression")  # what the time bought
    row["verified"] = proc.returncode == 0 and out.exists() and bool((report.get("parity") or {}).get("batches"))
    row["notes"] = [n for n in report.get("notes", []) if "time" in n or "one-shot" in n]
    return row


def show(r: dict) -> None:
    head = (f"{r['model']:20s} {r['budget']:>4s} load+{r['load']} (avg {r['loadavg'][0]:.1f}->{r['loadavg'][1]:.1f})"
            f"  wall {r['wall_s']:6.1f} s  wall/budget {r['ratio']:.2f}")
    if "error" in r:
        print(f"{head}  exit {r['exit']}: {r['error']}", flush=True)
        return
    steps = r["steps"]
    after = " ".join(f"{k} {steps[k]:.1f}" for k in AFTER_STEPS if k in steps)
    before = " ".join(f"{k} {v:.1f}" for k, v in steps.items() if k not in AFTER_STEPS and k != "auto-search")
    print(f"{head}  {'verified' if r['verified'] else 'NOT VERIFIED'}, compression {r.get('compression') or 0:.2f}\n"
          f"    outside {r['outside_s']:.1f} | before {r['before_s']} ({before}) | search {r['search_s']} | "
          f"after {r['after_s']} vs reserve {r['reserve_s']} (pace {r['pace_ms']} ms/sample) | {after}", flush=True)
    for n in r["notes"]:
        print(f"    note: {n[:200]}", flush=True)


def compare(before: Path, after: Path) -> None:
    """Two runs' --json rows side by side, matched by model, budget and load: wall/budget, seconds outside the run's
    clock and its startup step, the search, the steps after it and the reserve, x the run's compression."""
    def rows(path):
        return {(r["model"], r["budget"], r["load"]): r for r in map(json.loads, path.read_text().splitlines())}

    a, b = rows(before), rows(after)
    head = (f"{'wall/budget':>11s} {'outside':>7s} {'startup':>7s} {'search':>6s} {'after':>5s} {'reserve':>7s} "
            f"{'x':>5s}")
    print(f"{'model':20s} {'budget':>6s} {'load':>4s} | {head} | {head}")
    for key in [k for k in a if k in b] + [k for k in b if k not in a]:
        cells = []
        for r in (a.get(key), b.get(key)):
            if r is None or "steps" not in r:
                cells.append(f"{'-':>11s} {'':>7s} {'':>7s} {'':>6s} {'':>5s} {'':>7s} {'':>5s}")
                continue
            outside = r.get("outside_s", r.get("startup_s", 0.0))  # outside the run's clock
            cells.append(f"{r['ratio']:11.2f} {outside:7.1f} {r['steps'].get('startup', 0.0):7.1f} "
                         f"{r['search_s'] or 0:6.1f} {r['after_s'] or 0:5.1f} "
                         f"{r['reserve_s'] if r['reserve_s'] is not None else '-':>7} "
                         f"{r['compression'] if r.get('compression') else 0:5.2f}")
        print(f"{key[0]:20s} {key[1]:>6s} {key[2]:>4d} | {cells[0]} | {cells[1]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--only", nargs="*", help=f"models (default {' '.join(DEFAULT_MODELS)})")
    ap.add_argument("--budgets", nargs="*", default=["1m", "3m"])
    ap.add_argument("--load", nargs="*", type=int, default=[0], help="busy background processes (each value a row)")
    ap.add_argument("--repo", type=Path, default=REPO, help="checkout whose code runs (default this one)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--json", type=Path, help="append every row here (one JSON object a line)")
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="print two --json files "
                    "side by side and run nothing")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for `prune` (after the rest)")
    args = ap.parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return 0
    names = args.only or DEFAULT_MODELS
    missing = [n for n in names if not (args.root / n / "card.json").exists()]
    if missing:
        print(f"skipped (no card.json under {args.root}): {', '.join(missing)}", file=sys.stderr)
    names = [n for n in names if n not in missing]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for load in args.load:
            for budget in args.budgets:
                for name in names:
                    r = run_one(name, budget, load, args, Path(tmp))
                    show(r)
                    rows.append(r)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(r) + "\n")
    print(f"\n{'model':20s} {'budget':>6s} {'load':>4s} {'wall s':>7s} {'w/b':>5s} {'after':>6s} {'reserve':>7s}")
    for r in rows:
        print(f"{r['model']:20s} {r['budget']:>6s} {r['load']:>4d} {r['wall_s']:7.1f} {r['ratio']:5.2f} "
              f"{r.get('after_s') or 0:6.1f} {r.get('reserve_s') or 0:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
