"""Trace the automatic search on one corpus model: every candidate it judged, its notes, and the held-out card.

bench_corpus.py runs the command line and reports the outcome; this runs the same search in-process (label-free,
`--max-loss 1`, as the newcomer flags) and prints its history, one line per candidate (phase, weights ratio, kept,
loss and limit on the decision set, note), the search's notes, then the output scored against the model's card on
the held-out data the tool never saw (bench_corpus.measure). Used to see where a phase of the refit search spends its
candidates and what the decision set said of each (the per-layer experiments in converter/auto/recovery.py).

    python -m tests.benchmarks.trace_corpus NAME [--time-budget 180] [--root DIR] [--out model.onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import onnx

from tests.benchmarks import bench_corpus


def trace(name: str, root: Path, time_budget: float, out: Path) -> dict:
    from onnxprune.converter.pipeline import configure, run

    folder = root / name
    card = json.loads((folder / "card.json").read_text())
    calib = folder / "calib.npz" if (folder / "calib.npz").exists() else folder / "calib"
    t0 = time.perf_counter()
    result = run(onnx.load(str(folder / "model.onnx")), configure(max_loss=1.0, data=str(calib),
                                                                   time_budget=time_budget, seed=0))
    seconds = time.perf_counter() - t0
    for h in result.report["history"]:
        print(f"{h['phase']:22s} {h['ratio']:7.3f}x {'kept' if h['kept'] else '----'} loss {h['loss_pp']:7.3f} "
              f"limit {h.get('limit_pp', float('nan')):7.3f}  {h.get('note', '')[:110]}")
    for note in result.report["auto"]["notes"]:
        print("note:", note)
    onnx.save(result.model, str(out))
    faithful, checks = bench_corpus.measure(folder, card, out)
    ratio = bench_corpus.nonzero_weights(folder / "model.onnx") / max(1, bench_corpus.nonzero_weights(out))
    print(f"{name}: {ratio:.3f}x weights, {seconds:.0f} s, held-out {'faithful' if faithful else 'UNFAITHFUL'}: "
          + "; ".join(f"{c['output']} {c['metric']} {c['figure']:.4g} (bar {c['bar']:g})" for c in checks))
    return {"name": name, "ratio": ratio, "seconds": seconds, "faithful": faithful, "checks": checks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--root", default=os.environ.get("ONNXPRUNE_CORPUS", "~/.cache/onnxprune-corpus"))
    ap.add_argument("--time-budget", type=float, default=180.0, help="seconds (default 180, as --time-budget 3m)")
    ap.add_argument("--out", default=None, help="where the pruned model goes (default /tmp/trace_NAME.onnx)")
    args = ap.parse_args(argv)
    out = Path(args.out or f"/tmp/trace_{args.name}.onnx")
    trace(args.name, Path(args.root).expanduser(), args.time_budget, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
