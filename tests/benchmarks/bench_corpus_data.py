"""Data scale over the third-party corpus: the issue's command with larger calibration sets of the same real data.

Is the corpus's small compression (1.0-1.46x within 1 pp, label-free) bound by its 36-240 calibration samples? For
each model whose calibration source can be scaled with real data of the same kind, and each size N, this runs

    python -m onnxprune prune ROOT/NAME/model.onnx -o OUT --data CALIB_N --max-loss 1 --time-budget 10m

one run at a time (the issue's command, only the calibration set changed; `own` is the corpus's own calib), then
scores OUT against the input on the corpus's own held-out set with the model's card, exactly as
tests/benchmarks/bench_corpus.py does (its `bench_one`: the weight count, the checks, the bootstrap share).

    python -m tests.benchmarks.bench_corpus_data [--models NAME ...] [--sizes own 1000 4000 ...]
        [--data DIR] [--time-budget 10m] [--timeout 1500] [--json out.json] [--make-only] [--extra ARG ...]

Calibration sets are written once to DIR/NAME/calib_N.npz (or calib_N/, a folder of one feed per file where the
corpus uses one) and reused; they are never the held-out samples:

    torch_gru_legacy, keras_gru_tf2onnx   MNIST *training* images ($ONNXPRUNE_MNIST, default /work/shared/data/mnist;
                                          the holdouts are test images), a seeded random draw, the first N of it
    torch_lstm_legacy                     the same images, one time-first feed [28, 1, 28] per file as its builder
    magika                                files on this machine, picked and featurised by build_corpus's own code
                                          (another seed), every file whose features equal a held-out row dropped
    rapidocr_cls                          text lines rendered by build_corpus's own code (another seed)

Prints, per run as it ends and as a table at the end: model, N (calibration samples given), recovery the run chose
(from its notes: reconstruct or sgd), weights ratio (the input's nonzeros over the output's, bench_corpus's count),
the run's own claimed loss (its `budget: measured loss` line), each held-out check's figure vs its bar, faithful or
not (with the share of held-out resamples that hold a failed bar), and the wall time. Needs the corpus built
(tests/corpus/build_corpus.py) and, for the rapidocr_cls sets, Pillow and the DejaVu font. The defaults (four
models, own / 1,000 / 4,000) ran about 20 minutes on the shared 2-core machine; measured: tests/corpus/RESULTS.md,
"Data scale".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from tests.benchmarks.bench_corpus import DEFAULT_ROOT, REPO, bench_one

_spec = importlib.util.spec_from_file_location("corpus_builders", REPO / "tests" / "corpus" / "build_corpus.py")
builders = importlib.util.module_from_spec(_spec)
sys.modules["corpus_builders"] = builders  # its dataclass looks its module up
_spec.loader.exec_module(builders)

MNIST = Path(os.environ.get("ONNXPRUNE_MNIST", builders.DEFAULT_MNIST))
SEED = 1  # the corpus's own sets use 0
DEFAULT_MODELS = ["torch_gru_legacy", "keras_gru_tf2onnx", "magika", "torch_lstm_legacy"]


# ------------------------------------------------------------------------------------------------ calibration sets
def _mnist_train_rows(n: int) -> np.ndarray:
    (xtr, _), _ = builders.load_mnist(MNIST)
    order = np.random.default_rng(SEED).permutation(len(xtr))
    if n > len(order):
        raise ValueError(f"{n} MNIST training images asked for; there are {len(order)}")
    return builders.mnist_rows(xtr[order[:n]])


def _magika_bytes(n: int, holdout: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    held = {row.tobytes() for row in holdout}
    picked = builders.magika_pick(builders.magika_files(), 2 * n, rng)  # room for the held-out ones
    feats = builders.magika_features(picked)
    keep = np.array([row.tobytes() not in held for row in feats])
    feats = feats[keep][rng.permutation(int(keep.sum()))]
    if len(feats) < n:
        raise ValueError(f"magika: only {len(feats)} files outside the holdout; {n} asked for")
    return feats[:n]


def make_calib(name: str, n: int, root: Path, data_dir: Path) -> Path:
    """The calibration set of `n` samples for corpus model `name` (written once, then reused)."""
    folder = data_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    if name == "torch_lstm_legacy":
        out = folder / f"calib_{n}"
        if not out.exists():
            tmp = folder / f".calib_{n}.tmp"
            tmp.mkdir(exist_ok=True)
            for i, feed in enumerate(builders.lstm_feeds(_mnist_train_rows(n))):
                np.savez(tmp / f"{i:05d}.npz", **feed)
            tmp.rename(out)
        return out
    out = folder / f"calib_{n}.npz"
    if out.exists():
        return out
    if name in ("torch_gru_legacy", "keras_gru_tf2onnx"):
        arrays = {"rows": _mnist_train_rows(n)}
    elif name == "magika":
        arrays = {"bytes": _magika_bytes(n, np.load(root / name / "holdout.npz")["bytes"])}
    elif name == "rapidocr_cls":
        arrays = {"x": builders.cls_lines(np.random.default_rng(SEED), n)}
    else:
        raise ValueError(f"no larger calibration source for {name}; choose from {sorted(MAKERS)}")
    np.savez(out, **arrays)
    return out


MAKERS = {"torch_gru_legacy", "keras_gru_tf2onnx", "torch_lstm_legacy", "magika", "rapidocr_cls"}


# ------------------------------------------------------------------------------------------------------ the report
def read_notes(stdout: str) -> tuple[str, float | None]:
    """(the recovery the run chose, its claimed loss in pp) from its printed report."""
    m = re.search(r"recovery by (\w+)", stdout)
    recovery = m.group(1) if m else ("one-shot" if "one-shot" in stdout else "?")
    m = re.search(r"budget: measured loss ([-+]?[\d.]+) pp", stdout)
    return recovery, (float(m.group(1)) if m else None)


def run(name: str, size: str, root: Path, data_dir: Path, args, work: Path) -> dict:
    card = json.loads((root / name / "card.json").read_text())
    calib = root / name / card["data"]["calib"] if size == "own" else make_calib(name, int(size), root, data_dir)
    n = card["data"]["n_calib"] if size == "own" else int(size)
    res = bench_one(name, root, args, work / f"N{size}", calib=calib, keep_stdout=True)
    res["n"], res["calib"] = n, str(calib)
    res["recovery"], res["claimed_pp"] = read_notes(res.get("stdout", ""))  # the whole report stays in --json
    return res


def _figures(r: dict) -> str:
    return "; ".join(f"{c['output'][:14]} {c['metric']} {c['figure']:.4f} vs {c['bar']}"
                     + ("" if c["passed"] else f" (fails; {c['meets_share']:.0%} of resamples hold it)")
                     for c in r.get("checks", []) if c["matters"]) or r.get("reason", "")


def print_row(r: dict) -> None:
    ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
    claimed = f"{r['claimed_pp']:.2f}" if r.get("claimed_pp") is not None else "-"
    faithful = {"converted-faithful": "yes", "converted-UNFAITHFUL": "NO"}.get(r["outcome"], r["outcome"])
    print(f"{r['model']:20s} {r['n']:>6d} {r.get('recovery', '-'):>11s} {ratio:>6s} {claimed:>8s} {faithful:>8s} "
          f"{r['seconds']:7.1f}  {_figures(r)}", flush=True)


HEADER = f"{'model':20s} {'N':>6s} {'recovery':>11s} {'ratio':>6s} {'claim pp':>8s} {'faithful':>8s} {'wall s':>7s}  " \
         "held-out figure vs bar"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="the built corpus")
    ap.add_argument("--models", nargs="*", default=DEFAULT_MODELS, choices=sorted(MAKERS))
    ap.add_argument("--sizes", nargs="*", default=["own", "1000", "4000"], help="'own' or a number of samples")
    ap.add_argument("--data", type=Path, default=REPO / "data", help="where the larger calibration sets go")
    ap.add_argument("--time-budget", default="10m")
    ap.add_argument("--timeout", type=float, default=1500.0, help="seconds per run")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs `-m onnxprune`")
    ap.add_argument("--workdir", type=Path, help="where pruned models go (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="write every result here (appended to after each run)")
    ap.add_argument("--make-only", action="store_true", help="write the calibration sets, run nothing")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for `prune` (after the rest; "
                    "a diagnostic, no longer the issue's command)")
    args = ap.parse_args(argv)
    for size in args.sizes:
        if size != "own" and not size.isdigit():
            ap.error(f"--sizes takes 'own' or a number of samples, not {size!r}")
    if args.make_only:
        for name in args.models:
            for size in args.sizes:
                if size != "own":
                    print(name, size, make_calib(name, int(size), args.root, args.data), flush=True)
        return 0
    bench_args = argparse.Namespace(python=args.python, sparsity=None, card_budgets=False, timeout=args.timeout,
                                    extra=["--time-budget", args.time_budget, *args.extra])
    results = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for name in args.models:
            for size in args.sizes:
                r = run(name, size, args.root, args.data, bench_args, work)
                results.append(r)
                print_row(r)
                if args.json:
                    args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print("\n" + HEADER)
    for r in results:
        print_row(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
