"""Benchmark over the third-party corpus (issue #13): label-free `prune --max-loss 1`, then the model's own fidelity.

For every model that tests/corpus/build_corpus.py wrote (default ~/.cache/onnxprune-corpus, or $ONNXPRUNE_CORPUS):

    python -m onnxprune prune ROOT/NAME/model.onnx -o OUT --data ROOT/NAME/calib{.npz,/} --max-loss 1

(only the flags a newcomer would give), run from this repository's root so its own code is what runs, under a
timeout. Then, independently of the tool, the input and the output model are run with onnxruntime (graph
optimisations off) on the held-out data the tool never saw, and every check on the model's card is scored
(tests/corpus/fidelity.py): each output gets its figure, and the model is faithful when every check marked
`matters` holds its bar. Outcomes:

    converted-faithful    exit 0, every output that matters within the card's bars
    converted-UNFAITHFUL  exit 0, some output that matters outside its bar (silent fidelity loss); each failed
                          check says how often a bootstrap resample of the held-out samples holds its bar
                          (tests/corpus/fidelity.py `meets_share`), and the summary counts those under 5%: beyond
                          what the held-out set's own size can tell
    refused               a non-zero exit with one line that is not an "internal error"
    crashed               "internal error", a traceback, or an output that onnxruntime cannot run
    timeout               still running after --timeout seconds

"weights x" is the input's own nonzero weights over the output's (float / int8 tensors of >= 16 elements in
initializers, sparse initializers and Constant nodes, subgraphs and external data included; an integer weight's zero
is its zero point), so a model that was already sparse is not credited for its own zeros.

    python -m tests.benchmarks.bench_corpus [--root DIR] [--only NAME ...] [--timeout 900] [--jobs 1]
        [--python /path/to/python] [--json results.json] [--self-check] [--extra ARG ...]

--self-check scores every input model against itself (no pruning): a corpus whose cards or data are wrong fails it.
--sparsity S is a baseline instead: every layer pruned by magnitude to S, one-shot, no budget, no recovery (0.5: how
far these models are from "2x for free"; with --data, so verification runs on real samples).

Needs only onnx, onnxruntime and numpy (the project's .venv will do); the corpus itself is built in a venv with the
exporters (see tests/corpus/README.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = Path(os.environ.get("ONNXPRUNE_CORPUS", Path.home() / ".cache" / "onnxprune-corpus"))
_spec = importlib.util.spec_from_file_location("corpus_fidelity", REPO / "tests" / "corpus" / "fidelity.py")
fidelity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fidelity)

NOISE_SHARE = 0.05  # a failed check whose bar fewer held-out resamples than this hold is beyond sampling noise
WEIGHT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.INT8, onnx.TensorProto.UINT8}


# ------------------------------------------------------------------------------------------------------------ weights
def _graph_tensors(g: onnx.GraphProto):
    yield from g.initializer
    for sp in g.sparse_initializer:
        yield sp
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t
            elif a.type == onnx.AttributeProto.SPARSE_TENSOR:
                yield a.sparse_tensor
            elif a.type == onnx.AttributeProto.GRAPH:
                yield from _graph_tensors(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sg in a.graphs:
                    yield from _graph_tensors(sg)


# An integer weight's zero point (the value that means 0) by its reader: (domain, op) -> {weight input: (zero-point
# input, the weight's per-channel axis)}; DequantizeLinear's axis is its attribute (default 1).
ZERO_POINTS = {("", "DequantizeLinear"): {0: (2, None)}, ("", "ConvInteger"): {1: (3, 0)},
               ("", "MatMulInteger"): {1: (3, -1)}, ("com.microsoft", "DynamicQuantizeMatMul"): {1: (3, -1)},
               ("com.microsoft", "MatMulIntegerToFloat"): {1: (5, -1)},
               ("com.microsoft", "DynamicQuantizeLSTM"): {1: (9, 0), 2: (11, 0)}}


def _zero_points(m: onnx.ModelProto) -> dict[str, tuple[np.ndarray, int | None]]:
    """Main-graph integer weights with a zero point: name -> (zero point, axis of the weight it runs along)."""
    inits = {t.name: t for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        for i, (zi, axis) in ZERO_POINTS.get((n.domain or "", n.op_type), {}).items():
            if i < len(n.input) and zi < len(n.input) and n.input[zi] in inits:
                if n.op_type == "DequantizeLinear":
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                out[n.input[i]] = (numpy_helper.to_array(inits[n.input[zi]]), axis)
    return out


def _nonzero(values: np.ndarray, zero: tuple[np.ndarray, int | None] | None) -> int:
    if zero is None or zero[0].size == 0:
        return int(np.count_nonzero(values))
    zp, axis = zero
    if zp.size > 1 and axis is not None:
        zp = zp.reshape([-1 if k == axis % values.ndim else 1 for k in range(values.ndim)])
    return int(np.count_nonzero(values != zp.reshape(()) if zp.size == 1 else values != zp))


def nonzero_weights(path: Path) -> int:
    """Nonzero weight values of a model file (external data loaded, sparse tensors counted by their values); an
    integer weight's "zero" is its zero point (a pruned uint8 weight of zero point 121 holds 121)."""
    m = onnx.load(str(path), load_external_data=True)
    zeros = _zero_points(m)
    total = 0
    for t in _graph_tensors(m.graph):
        if isinstance(t, onnx.SparseTensorProto):
            if t.values.data_type in WEIGHT_TYPES and int(np.prod(t.dims)) >= 16:
                total += int(np.count_nonzero(numpy_helper.to_array(t.values)))
        elif t.data_type in WEIGHT_TYPES and int(np.prod(t.dims)) >= 16:
            total += _nonzero(numpy_helper.to_array(t), zeros.get(t.name))
    return total


# ----------------------------------------------------------------------------------------------------------- fidelity
def load_feeds(folder: Path, card: dict, which: str, batch: int = 16) -> list[dict]:
    rel = card["data"][which]
    path = folder / rel
    if path.is_dir():
        return [dict(np.load(p)) for p in sorted(path.glob("*.npz"))]
    arrays = dict(np.load(path))
    n = len(next(iter(arrays.values())))
    return [{k: v[i:i + batch] for k, v in arrays.items()} for i in range(0, n, batch)]


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_all(sess: ort.InferenceSession, feeds: list[dict]) -> dict[str, list]:
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    out = {n: [] for n in names}
    for feed in feeds:
        for n, v in zip(names, sess.run(names, {k: v for k, v in feed.items() if k in inputs})):
            out[n].append(v)
    return out


def measure(folder: Path, card: dict, pruned: Path) -> tuple[bool, list[dict]]:
    feeds = load_feeds(folder, card, "holdout")
    per_feed = (folder / card["data"]["holdout"]).is_dir()
    ref = run_all(session(folder / card["model"]), feeds)
    got = run_all(session(pruned), feeds)
    rows, ok = [], True
    for c in card["checks"]:
        name = c["output"]
        share = float("nan")
        if name not in got:
            fig, passed = float("nan"), False
        else:
            fig, passed = fidelity.score(c, ref[name], got[name])
            if not passed:
                share = fidelity.meets_share(c, ref[name], got[name], per_feed=per_feed)
        rows.append({"output": name + (f"[{c['slice']['start']}:{c['slice']['stop']}]" if c.get("slice") else ""),
                     "metric": c["metric"], "figure": fig, "bar": c["bar"], "passed": passed,
                     "matters": c.get("matters", True), "meets_share": share})
        if c.get("matters", True) and not passed:
            ok = False
    return ok, rows


# ---------------------------------------------------------------------------------------------------------------- run
def _reason(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("Error:") or ln.startswith("error:"):
            return ln
    return lines[-1] if lines else "(no output)"


def card_budgets(card: dict) -> list[str]:
    """`--max-loss OUTPUT=L` for each output whose every check that matters is a relative L2 error with a bar other
    than 0.01 (L = 100 x the tightest bar): the regression bars a user who knows them would give the tool
    (--card-budgets). Outputs judged by anything else keep the run's 1 pp."""
    bars: dict[str, list] = {}
    for c in card.get("checks", []):
        if c.get("matters", True) and not c.get("slice"):
            bars.setdefault(c["output"], []).append(c)
    out = []
    for name, checks in bars.items():
        if all(c["metric"] == "rel_l2" for c in checks):
            bar = min(float(c["bar"]) for c in checks)
            if abs(bar - 0.01) > 1e-12:
                out += ["--max-loss", f"{name}={100 * bar:g}"]
    return out


def bench_one(name: str, root: Path, args, workdir: Path, calib: Path | None = None,
              keep_stdout: bool = False) -> dict:
    """Prune one corpus model as the benchmark does and score the output on its held-out data; `calib` replaces
    the model's own calibration set (tests/benchmarks/bench_corpus_data.py), the holdout and card stay its own;
    `keep_stdout` keeps the run's whole report in the result ("stdout")."""
    folder = root / name
    card = json.loads((folder / "card.json").read_text())
    model = folder / card["model"]
    out = workdir / name / "pruned.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    calib = calib or folder / card["data"]["calib"]
    cmd = [args.python, "-m", "onnxprune", "prune", str(model), "-o", str(out),
           "--data", str(calib), *(["--sparsity", str(args.sparsity)] if args.sparsity else ["--max-loss", "1"]),
           *(card_budgets(card) if args.card_budgets else []), *args.extra]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    res = {"model": name, "exporter": card["exporter"], "kinds": card["kinds"], "cmd": " ".join(cmd)}
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired as exc:
        text = "\n".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                         for x in (exc.stdout, exc.stderr))
        progress = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if "onnxprune:" in ln]
        res.update(outcome="timeout", seconds=round(time.time() - t0, 1), tail=text.strip()[-3000:],
                   reason=f"> {args.timeout:.0f} s" + (f", last: {progress[-1]}" if progress else ""))
        return res
    res["seconds"] = round(time.time() - t0, 1)
    text = (proc.stdout or "") + "\n" + (proc.stderr or "")
    res["tail"] = (proc.stdout or "").strip()[-3000:]          # the report (progress lines go to stderr)
    if keep_stdout:
        res["stdout"] = proc.stdout or ""                       # whole, for bench_corpus_data's notes
    res["stderr_tail"] = (proc.stderr or "").strip()[-1500:]
    if proc.returncode != 0:
        crashed = "internal error" in text or "Traceback (most recent call last)" in text
        res.update(outcome="crashed" if crashed else "refused", reason=_reason(text), exit=proc.returncode)
        return res
    if not out.exists():
        res.update(outcome="crashed", reason="exit 0 but no output file")
        return res
    try:
        nz_in, nz_out = nonzero_weights(model), nonzero_weights(out)
        res["weights_in"], res["weights_out"] = nz_in, nz_out
        res["ratio"] = round(nz_in / nz_out, 2) if nz_out else float("inf")
        ok, rows = measure(folder, card, out)
    except Exception as exc:  # noqa: BLE001 - an output the runtime cannot run is a crash of the tool
        res.update(outcome="crashed", reason=f"output does not run: {type(exc).__name__}: {str(exc)[:200]}")
        return res
    res["checks"] = rows
    res["outcome"] = "converted-faithful" if ok else "converted-UNFAITHFUL"
    bad = [r for r in rows if r["matters"] and not r["passed"]]
    res["reason"] = "; ".join(f"{r['output']} {r['metric']} {r['figure']:.4g} vs bar {r['bar']} "
                              f"({r['meets_share']:.0%} of held-out resamples hold it)" for r in bad)
    res["beyond_noise"] = any(r["meets_share"] < NOISE_SHARE for r in bad)
    return res


def self_check(name: str, root: Path) -> dict:
    """Score the input model against itself: every check must pass (tests the corpus and the metrics, not the tool)."""
    folder = root / name
    card = json.loads((folder / "card.json").read_text())
    t0 = time.time()
    ok, rows = measure(folder, card, folder / card["model"])
    return {"model": name, "exporter": card["exporter"], "outcome": "self-check ok" if ok else "self-check FAILED",
            "seconds": round(time.time() - t0, 1), "ratio": 1.0, "checks": rows,
            "weights_in": nonzero_weights(folder / card["model"])}


def print_table(results: list[dict]) -> None:
    print(f"\n{'model':22s} {'exporter':34s} {'outcome':21s} {'weights x':>9s} {'wall s':>7s}  reason / figures")
    for r in results:
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        figs = r.get("reason") or ", ".join(f"{c['output']} {c['metric']} {c['figure']:.4g}"
                                            for c in r.get("checks", []))
        print(f"{r['model']:22s} {r['exporter'][:34]:34s} {r['outcome']:21s} {ratio:>9s} {r['seconds']:7.1f}  {figs}")
    counts = {}
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    good = sum(1 for r in results if r["outcome"] == "converted-faithful" and r.get("ratio", 0) >= 2.0)
    unfaithful = [r for r in results if r["outcome"] == "converted-UNFAITHFUL"]
    beyond = sum(1 for r in unfaithful if r.get("beyond_noise"))
    print("\nsummary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) +
          (f" ({beyond} of the {len(unfaithful)} beyond held-out noise: under {NOISE_SHARE:.0%} of resamples hold "
           "the bar)" if unfaithful else "") +
          ("" if any(k.startswith("self-check") for k in counts) else
           f"; faithful with >= 2x fewer weights: {good} / {len(results)}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model (default 900 = 15 min)")
    ap.add_argument("--jobs", type=int, default=1, help="models pruned at once (the machine has 2 cores)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs `-m onnxprune`")
    ap.add_argument("--workdir", type=Path, help="where pruned models go (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="write all results (with the tool's output tails) here")
    ap.add_argument("--self-check", action="store_true", help="score each input model against itself, no pruning")
    ap.add_argument("--sparsity", type=float, help="baseline: `prune --sparsity S` (every layer, magnitude, one-shot, "
                    "no budget) instead of `--max-loss 1`")
    ap.add_argument("--card-budgets", action="store_true", help="also give each card's regression bars as "
                    "per-output budgets (--max-loss OUTPUT=L; card_budgets), beside --max-loss 1")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for `prune` (after the rest)")
    args = ap.parse_args(argv)
    names = args.only or sorted(p.name for p in args.root.iterdir() if (p / "card.json").exists())
    if not names:
        print(f"no corpus in {args.root}: build it with tests/corpus/build_corpus.py", file=sys.stderr)
        return 2
    if args.self_check:
        results = [self_check(n, args.root) for n in names]
        print_table(results)
        return 0 if all(r["outcome"] == "self-check ok" for r in results) else 1
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        results = {}
        with cf.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futs = {pool.submit(bench_one, n, args.root, args, work): n for n in names}
            for f in cf.as_completed(futs):
                r = f.result()
                results[r["model"]] = r
                print(f"[{r['outcome']:21s}] {r['model']} ({r['seconds']} s) {r.get('reason', '')[:160]}", flush=True)
        ordered = [results[n] for n in names]
        print_table(ordered)
        if args.json:
            args.json.write_text(json.dumps(ordered, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
