"""Is the written model still the model we meant? Checked in onnxruntime before any file is written.

The oracle is the dense model with the pruned weights zeroed (and retrained weights written back): the output
file must compute the same thing within `rtol` of the output's scale, on the user's data when given, else on
seeded random inputs of the declared shapes. Graph optimisations are off, so we compare graphs, not kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.calibration.metrics import as_array, map_keys
from onnxprune.calibration.runtime import DEFAULT_DYNAMIC_DIM, input_specs, make_session, output_names, random_feeds
from onnxprune.calibration.runtime import ort_reason as _ort_reason  # also read by converter.latency
from onnxprune.errors import CalibrationError, ModelError, ParityError

DEFAULT_RTOL = 1e-5
# Random verification inputs of a crafted fixed shape (a batch of 10^9) must not be allocated: refuse above this.
MAX_INPUT_ELEMENTS = 2**27


@dataclass
class Parity:
    max_abs: float
    max_rel: float
    worst_output: str
    batches: int
    source: str  # "data" or "random"

    def as_dict(self) -> dict:
        return {
            "max_abs_diff": self.max_abs,
            "max_rel_diff": self.max_rel,
            "worst_output": self.worst_output,
            "batches": self.batches,
            "inputs": self.source,
        }


def check_parity(
    candidate: onnx.ModelProto | bytes,
    oracle: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]] | None = None,
    *,
    rtol: float = DEFAULT_RTOL,
    seeds: tuple[int, ...] = (0, 1, 2),
    source: str = "data",
) -> Parity:
    """Run both in onnxruntime on the same inputs; raise ParityError naming the output that differs. `source` says
    what given `feeds` are ("data", or "random" when invented at chosen shapes); without feeds, "random"."""
    if isinstance(candidate, onnx.ModelProto) and candidate.ByteSize() < 2**31 - 1:
        try:  # onnxruntime is laxer than the checker (e.g. IR < 4 initializers missing from the graph inputs)
            onnx.checker.check_model(candidate)
        except onnx.checker.ValidationError as exc:
            raise ModelError(
                f"the written model fails onnx.checker ({str(exc).strip().splitlines()[0][:300]}); this is a bug, "
                "please report it with --debug (--no-neurons may avoid it)."
            ) from None
    if not feeds:
        _refuse_huge_inputs(oracle)
        feeds = [random_feeds(oracle, seed=s) for s in seeds]
        source = "random"
    names = output_names(oracle)
    wants = _reference_outputs(oracle, names, feeds, source)  # one session at a time: big models, little memory
    try:
        cand = make_session(candidate, optimize=False)
    except Exception as exc:
        raise ModelError(f"onnxruntime refuses the written model: {_ort_reason(exc)}") from None
    worst = ("", 0.0, 0.0)
    for feed, want in zip(feeds, wants):
        for name, g, w in zip(names, cand.run(names, feed), want):
            rel, diff = _compare(name, g, w, rtol)
            if rel >= worst[2]:
                worst = (name, diff, rel)
    del cand
    try:  # also the optimised load a deployment will do
        make_session(candidate, optimize=True)
    except Exception as exc:
        raise ModelError(f"onnxruntime refuses the written model with optimisations on: {_ort_reason(exc)}") from None
    return Parity(max_abs=worst[1], max_rel=worst[2], worst_output=worst[0], batches=len(feeds), source=source)


def _reference_outputs(oracle: onnx.ModelProto, names: list[str], feeds, source: str) -> list[list]:
    """The oracle's outputs on every feed; its session is gone when this returns."""
    try:
        ref = make_session(oracle, optimize=False)
    except Exception as exc:
        raise ModelError(
            f"onnxruntime {ort.__version__} cannot load this model (its graph, not the pruning, is the problem), so "
            f"no output can be verified or written: {_ort_reason(exc)}. Fix or re-export the model so that "
            "onnxruntime loads it (supported ops and opset, consistent shapes)."
        ) from None
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failing run is reported in our one line, not also in onnxruntime's log
    wants = []
    for feed in feeds:
        try:
            wants.append(ref.run(names, feed, quiet))
        except Exception as exc:
            shapes = ", ".join(f"'{k}' {list(np.shape(v))}" for k, v in feed.items())
            hint = ("pass --input-shape NAME=DIMS with shapes the model takes, or real samples with --data"
                    if source == "random" else "check the data's shapes")
            raise ModelError(
                f"onnxruntime cannot run the model on {source} inputs ({shapes}): {_ort_reason(exc)}; {hint}."
            ) from None
    return wants


def _compare(name: str, got, want, rtol: float) -> tuple[float, float]:
    """(relative, absolute) max difference of one output; ParityError beyond `rtol` of the output's scale.

    Non-tensor outputs are compared by value: a sequence of maps (ZipMap) must have the same keys, and its values
    are compared as numbers like any tensor; a sequence of tensors is stacked."""
    if map_keys(got) != map_keys(want):
        raise ParityError(f"output '{name}' (a sequence of maps) has keys {map_keys(got)} in the written model, "
                          f"{map_keys(want)} expected; this is a bug, please report it with --debug.")
    try:
        got, want = as_array(got), as_array(want)
    except CalibrationError as exc:
        raise ParityError(f"output '{name}' cannot be compared by value: {exc}") from None
    g = np.asarray(got, dtype=np.float64) if np.issubdtype(got.dtype, np.number) else got
    w = np.asarray(want, dtype=np.float64) if np.issubdtype(want.dtype, np.number) else want
    if g.shape != w.shape:
        raise ParityError(f"output '{name}' has shape {g.shape} in the written model, {w.shape} expected.")
    if g.dtype.kind not in "fc":
        if not np.array_equal(g, w):
            diff = int(np.count_nonzero(g != w)) if g.shape == w.shape else g.size
            raise ParityError(f"output '{name}' ({g.dtype} values) differs from the dense model with the same weights "
                              f"in {diff} of {g.size} element(s); this is a bug, please report it with --debug.")
        return 0.0, 0.0
    finite = np.isfinite(w)  # a model that computes NaN/inf (on random inputs, say) must do so in both
    if not np.array_equal(g[~finite], w[~finite], equal_nan=True):
        raise ParityError(f"output '{name}' is NaN/inf in other places than in the dense model with the same "
                          "weights; this is a bug, please report it with --debug.")
    g, w = g[finite], w[finite]
    diff = float(np.max(np.abs(g - w))) if g.size else 0.0
    scale = max(float(np.max(np.abs(w))) if w.size else 0.0, 1e-6)
    rel = diff / scale
    if not np.isfinite(diff) or rel > rtol:
        raise ParityError(
            f"output '{name}' differs from the dense model with the same weights: max abs diff {diff:.3g}"
            f" ({rel:.3g} of the output scale, limit {rtol:g}); this is a bug, please report it with --debug."
        )
    return rel, diff


def _refuse_huge_inputs(model: onnx.ModelProto) -> None:
    for spec in input_specs(model):
        count = float(np.prod([DEFAULT_DYNAMIC_DIM if d is None else d for d in spec.shape], dtype=np.float64))
        if count > MAX_INPUT_ELEMENTS:
            raise ModelError(
                f"model input '{spec.name}' declares shape {list(spec.shape)} ({count:.3g} elements), above the limit "
                f"of {MAX_INPUT_ELEMENTS:.3g} for random verification inputs; the model is crafted or needs --data "
                "with real samples."
            )
