"""Time the layer-wise refit (converter/reconstruct.py) as the automatic search runs it, on corpus models.

The steps before the search run as the command line runs them (load, inventory, data, targets: the same training
part, batches and dense model), then the refit is called the way ReconstructRecovery._refit calls it, on LAMP masks
over every prunable weight at the given densities (magnitude), in order, one DenseSessions across the calls as in a
search. Per call: seconds, waves and a digest of the refit weights (two code versions that compute the same refit
print the same relative weight difference ~0), so a before/after comparison runs this file from each checkout:

    python -m tests.benchmarks.bench_refit NAME [NAME ...] [--density 0.9 0.54] [--profile out.prof]
        [--save DIR]   (the refit models, to compare two checkouts' results with --against DIR)

Run from the checkout whose code is measured (its `onnxprune` is imported from the current directory).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(os.environ.get("ONNXPRUNE_CORPUS", Path.home() / ".cache" / "onnxprune-corpus"))


def prepare(name: str, root: Path = ROOT):
    """The run state after the steps before the automatic search (as `prune MODEL --data CALIB --max-loss 1`)."""
    from onnxprune.calibration import runtime
    from onnxprune.converter.plan import build_plan, configure
    from onnxprune.converter.steps.base import RunState, run_steps
    from onnxprune.converter.threads import apply_threads

    folder = root / name
    card = json.loads((folder / "card.json").read_text())
    config = configure(max_loss=1.0, data=str(folder / card["data"]["calib"]), time_budget=180.0, seed=0)
    config.validate()
    apply_threads(config.retrain.threads)
    steps = build_plan(config)
    upto = [s.name for s in steps].index("auto-search")
    state = RunState(source=onnx.load(str(folder / card["model"])), config=config, progress=lambda *a, **k: None)
    with runtime.session_view(lambda m: m):
        run_steps(steps[:upto], state)
    return state


def masks_at(state, density: float) -> dict[str, np.ndarray]:
    from onnxprune.converter.auto.allocation import global_masks

    weights = {w.name: numpy_helper.to_array(w.tensor) if hasattr(w, "tensor") else None
               for w in state.scannable.prunable}
    from onnxprune.passes.scopes import all_constants

    consts = all_constants(state.original.graph)
    weights = {n: numpy_helper.to_array(consts[n]) for n in weights if n in consts}
    full = {n: np.ones(w.shape, bool) for n, w in weights.items()}
    total = sum(m.size for m in full.values())
    return global_masks(weights, full, round(density * total))


def refit_calls(state, densities, profile: str | None = None, save: Path | None = None, against: Path | None = None):
    from onnxprune.calibration.runtime import no_arena
    from onnxprune.converter.auto.recovery import REFIT_DAMP, REFIT_PRIOR, _zeroed
    from onnxprune.converter.reconstruct import DenseSessions, ReconstructReport, reconstruct, waves, _layers

    train = state.data.train_reader(batch_size=state.config.retrain.train_batch_size)
    dense = DenseSessions(state.original)
    rows = []
    prof = cProfile.Profile() if profile else None
    for i, density in enumerate(densities):
        masks = masks_at(state, density)
        pruned = _zeroed(state.original, masks)
        report = ReconstructReport()
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        with no_arena():
            model = reconstruct(pruned, state.original, masks, train, limit=None, report=report,
                                dense_session=dense, damp=REFIT_DAMP, prior=REFIT_PRIOR)
        if prof:
            prof.disable()
        seconds = time.perf_counter() - t0
        n_waves = len(waves(pruned, _layers(pruned, masks, ReconstructReport())))
        row = {"call": i, "density": density, "seconds": round(seconds, 2), "waves": n_waves,
               "layers": len(report.refit), "samples": getattr(train, "num_samples", None)}
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            onnx.save(model, str(save / f"refit{i}.onnx"))
        if against is not None and (against / f"refit{i}.onnx").exists():
            row["max_rel_diff"] = weight_difference(model, onnx.load(str(against / f"refit{i}.onnx")))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if prof:
        prof.dump_stats(profile)
    return rows


def weight_difference(a: onnx.ModelProto, b: onnx.ModelProto) -> float:
    """The largest |a - b| / max|b| over the two models' float initializers and Constant tensors."""
    from onnxprune.passes.scopes import all_constants

    ca, cb = all_constants(a.graph), all_constants(b.graph)
    worst = 0.0
    for n, t in cb.items():
        if n not in ca:
            continue
        x, y = numpy_helper.to_array(ca[n]), numpy_helper.to_array(t)
        if x.dtype.kind != "f" or x.shape != y.shape or not y.size:
            continue
        x, y = x.astype(np.float64), y.astype(np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))  # infinities and NaNs (a mask constant) compare as themselves
        if not same.all():
            scale = float(np.max(np.abs(y[np.isfinite(y)]), initial=0.0)) or 1.0
            worst = max(worst, float(np.max(np.abs(x - y)[~same])) / scale)
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+")
    ap.add_argument("--density", type=float, nargs="+", default=[0.9, 0.54])
    ap.add_argument("--profile", default=None, help="cProfile stats of the refit calls (NAME is appended)")
    ap.add_argument("--save", default=None, help="folder: write each refit model to DIR/NAME/refitI.onnx")
    ap.add_argument("--against", default=None, help="folder written by --save: print the weights' largest difference")
    args = ap.parse_args(argv)
    for name in args.names:
        t0 = time.perf_counter()
        state = prepare(name)
        print(json.dumps({"model": name, "prepare_s": round(time.perf_counter() - t0, 1)}), flush=True)
        refit_calls(state, args.density, f"{args.profile}.{name}" if args.profile else None,
                    Path(args.save) / name if args.save else None, Path(args.against) / name if args.against else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
