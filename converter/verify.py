"""Is the written model still the model we meant? Checked in onnxruntime before any file is written.

The oracle is the dense model with the pruned weights zeroed (and retrained weights written back): the output
file must compute the same thing, on the user's data when given, else on seeded random inputs of the declared
shapes. Graph optimisations are off, so we compare graphs, not kernels.

Same thing means: within `rtol` of the output's scale, or, where float32 cannot resolve that, within
`NOISE_MULTIPLE` times the oracle's own rounding noise. A correct shrink computes the same sums without some zero
terms and folds constants into biases rounded once to float32, so its outputs move by rounding; so do the oracle's
when every weight moves by one float32 step (`nudged`). That movement is the noise floor, measured only for outputs
that fail the first rule: onnxruntime's float32 Sigmoid, for one, is accurate to ~1e-7 absolute, so a map that
random inputs drive to 1e-5 cannot agree to 1e-5 of itself. Such an output is accepted only if (a) the floor is at
most `NOISE_CEILING` of its scale (outputs that are all noise on these inputs are refused, not waved through) and
(b) the tensors feeding it that both models compute (the Sigmoid's logits) pass the same two rules.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from onnxprune.calibration.metrics import as_array, map_keys
from onnxprune.calibration.runtime import (DEFAULT_DYNAMIC_DIM, first_sample_fails, input_specs, make_session,
                                           output_names, random_feeds, with_outputs)
from onnxprune.calibration.runtime import ort_reason as _ort_reason  # also read by converter.latency
from onnxprune.errors import CalibrationError, ModelError, ParityError
from onnxprune.passes.opfacts import ORT_OLDEST_OPSET, older_than_onnxruntime
from onnxprune.passes.scopes import all_nodes
from onnxprune.plain import listed

log = logging.getLogger(__name__)

DEFAULT_RTOL = 1e-5
OUTPUT_BYTES = 256 << 20  # the oracle's outputs the parity check holds at once (at least one feed's)
COMPARE_CHUNK = 1 << 22  # values compared at a time in float64
NOISE_MULTIPLE = 4.0  # allowed diff, in units of the oracle's movement under a one-float32-step weight nudge
NOISE_CEILING = 1e-2  # ... but never more than this fraction of the output's scale
NUDGED_DTYPES = (np.float16, np.float32, np.float64)  # weights nextafter can step (not bfloat16)
# float inputs whose value is a discrete choice, not a weight: one step off Pow's exponent 2.0 makes a negative
# base's square NaN (LayerNorm decomposed as Pow(x - mean, 2) by older exporters and paddle2onnx)
NOT_NUDGED = {"Pow": frozenset({1})}
# Random verification inputs of a crafted fixed shape (a batch of 10^9) must not be allocated: refuse above this.
MAX_INPUT_ELEMENTS = 2**27


@dataclass
class Parity:
    max_abs: float
    max_rel: float
    worst_output: str
    batches: int
    source: str  # "data" or "random"
    noise_floor: float | None = None  # the worst output's floor, when the first rule failed and the floor was used

    def as_dict(self) -> dict:
        return {
            "max_abs_diff": self.max_abs,
            "max_rel_diff": self.max_rel,
            "worst_output": self.worst_output,
            "batches": self.batches,
            "inputs": self.source,
            "noise_floor": self.noise_floor,
            "noise_multiple": NOISE_MULTIPLE if self.noise_floor else None,  # what the floor was multiplied by
        }


@dataclass(frozen=True)
class _Words:
    """How a verdict's messages name the two models: the written model against the dense model with the same weights
    (the parity check: a difference is an onnxprune bug), or the model as read against the input as given
    (`check_read`, whose one line says so around them)."""
    where: str = "in the written model"
    against: str = "the dense model with the same weights"
    own: str = "the dense model's"
    bug: str = "; this is a bug, please report it with --debug."


WRITTEN = _Words()
READ = _Words("as onnxprune read it", "the input model as given", "the input model's", "")


@dataclass
class _Gap:
    """One output's worst difference over the feeds: absolute, and relative to that feed's scale."""
    diff: float = 0.0
    rel: float = 0.0
    scale: float = 0.0  # the largest |value| over the feeds (floored at 1e-6)
    moved: int = 0  # values NaN/inf in one model and not the other, or another NaN/inf (`_judge_moved`)

    def add(self, diff: float, scale: float, moved: int = 0) -> None:
        self.diff, self.rel, self.scale = max(self.diff, diff), max(self.rel, diff / scale), max(self.scale, scale)
        self.moved += moved

    def merge(self, other: "_Gap") -> None:
        self.diff, self.rel, self.scale = (max(self.diff, other.diff), max(self.rel, other.rel),
                                           max(self.scale, other.scale))
        self.moved += other.moved


def _runtime_only_op_of(message: str, oracle: onnx.ModelProto) -> bool:
    """Whether the checker's refusal names an op no ONNX domain defines that the input model reads too (sweep 43: an
    onnxruntime op of the ai.onnx domain, SimplifiedLayerNormalization, which the load step let onnxruntime judge)."""
    from onnxprune.converter.modelio import unknown_op
    from onnxprune.passes.scopes import all_nodes

    op = unknown_op(message)
    return op is not None and any(n.op_type == op for n in all_nodes(oracle))


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
            # the input model's own op onnx does not know is let through: onnxruntime's session below judges the
            # written model, as the load step let onnxruntime judge the input
            if not _runtime_only_op_of(str(exc), oracle):
                raise ModelError(
                    f"the written model fails onnx.checker ({str(exc).strip().splitlines()[0][:300]}); this is a "
                    "bug, please report it with --debug (--no-neurons may avoid it)."
                ) from None
    if not feeds:
        _refuse_huge_inputs(oracle)
        feeds = [random_feeds(oracle, seed=s) for s in seeds]
        source = "random"
    names = output_names(oracle)
    gaps: dict[str, _Gap] = {}
    left = list(feeds)
    while left:  # the oracle's outputs held for as many feeds as OUTPUT_BYTES allows (all, for most models)
        wants = _reference_outputs(oracle, names, left, source)  # one session at a time: big models, little memory
        group, left = left[:len(wants)], left[len(wants):]
        try:
            cand = make_session(candidate, optimize=False)
        except Exception as exc:
            raise ModelError(f"onnxruntime refuses the written model: {_ort_reason(exc)}") from None
        for name, gap in _gaps(cand, names, group, wants).items():
            gaps.setdefault(name, _Gap()).merge(gap)
        del cand, wants
    parity = _verdict(candidate, oracle, names, gaps, feeds, rtol, source)
    try:  # also the optimised load a deployment will do
        make_session(candidate, optimize=True)
    except Exception as exc:
        raise ModelError(f"onnxruntime refuses the written model with optimisations on: {_ort_reason(exc)}") from None
    return parity


def _verdict(candidate, oracle: onnx.ModelProto, names: list[str], gaps: dict[str, _Gap], feeds, rtol: float,
             source: str, words: _Words = WRITTEN) -> Parity:
    """The gaps judged: each output within `rtol` of its scale, or within the noise floor (`_within_noise`); raises
    ParityError naming the first that is not; else the worst output's figures."""
    _judge_moved(oracle, [name for name in names if gaps[name].moved], gaps, feeds, source, words)
    over = [name for name in names if gaps[name].rel > rtol]
    for name in over:
        if not np.isfinite(gaps[name].diff):
            _judge(f"output '{name}'", gaps[name], rtol, None, source, words)
    floors = _within_noise(candidate, oracle, over, feeds, rtol, source, words) if over else {}
    worst = max(names, key=lambda n: gaps[n].rel, default="")
    gap = gaps.get(worst, _Gap())
    return Parity(max_abs=gap.diff, max_rel=gap.rel, worst_output=worst, batches=len(feeds), source=source,
                  noise_floor=floors.get(worst))


READ_ROWS = 8  # rows of the first batch the read check runs (a heavy model's whole batch costs seconds, twice)


def check_read(given: onnx.ModelProto, read: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], *,
               rtol: float = DEFAULT_RTOL, source: str = "data") -> Parity | None:
    """The model as the load passes rewrote it (`read`: identities bypassed, copies merged, constant chains folded,
    QDQ weights folded), which every later step measures against and the parity check takes as its oracle, against
    the input as it was given, on the same feeds: each output within `rtol` of its scale, or within NOISE_MULTIPLE x
    the input's own float32 noise. Raises ParityError worded as the read's (an onnxprune defect). Real models 52:
    SwiftF0's frame count, max(samples // 256, 1), was folded to 1, and every step judged the one-frame rewrite
    against itself ("verified, max abs diff 0") while the written file returned one frame a clip. None where
    onnxruntime cannot run the input as given (the model as read is what it runs: a sparse initializer densified)."""
    names = output_names(given)
    try:
        wants = _reference_outputs(given, names, feeds, source, limit=float("inf"))
    except Exception as exc:  # noqa: BLE001 - the input itself fails on these rows: the steps after say why, in
        log.debug("read check skipped: the input model as given does not run here (%s)", exc)  # their own words
        return None
    try:
        try:
            session = make_session(read, optimize=False)
            gaps = _gaps(session, names, feeds, wants, words=READ)
        except ParityError:
            raise
        except Exception as exc:  # noqa: BLE001 - the input runs and the model as read does not
            raise ParityError(f"onnxruntime runs the input model but not the model as read: {_ort_reason(exc)}") \
                from None
        verdict = _verdict(read, given, names, gaps, feeds, rtol, source, READ)
        if source == "data":
            _say_one_sample_fails(session, feeds[0])
        return verdict
    except ParityError as exc:  # worded as the read's (READ) by the judging tail; the run's one line around it
        said = str(exc).rstrip("; .")
        raise ParityError(f"the model as onnxprune read it (its load passes: identities bypassed, copies merged, "
                          f"constants folded) does not compute what the input model does on "
                          f"{'your data' if source == 'data' else 'random inputs'}: {said}; "
                          "nothing was pruned or written. This is an onnxprune defect: please report it with "
                          "--debug") from None


def _say_one_sample_fails(session, feed: dict) -> None:
    """Said where the input model runs the read check's rows of the data and fails on one of them alone
    (sweep 57: torch's legacy trace of Mixtral failed on 324 of 440 single lines, a Split of the tokens an expert
    no token picked, and ran every batch of 8): the batches the run measures on are the data's, and a model that
    fails on some batch sizes is exported so."""
    from onnxprune.calibration.runtime import run_failure

    rows = {len(v) if isinstance(v, np.ndarray) and v.ndim else 0 for v in feed.values()}
    n = rows.pop() if len(rows) == 1 else 0
    for i in range(n if n > 1 else 0):  # each of the rows alone (a few: READ_ROWS), to the first that fails
        try:
            session.run(None, {k: v[i:i + 1] for k, v in feed.items()})
        except Exception as exc:  # noqa: BLE001 - only onnxruntime's own failure is said
            _say_fails_alone(n, i, run_failure(exc))
            return


def _say_fails_alone(n: int, i: int, reason: str | None) -> None:
    """`_say_one_sample_fails`'s warning: sample i (0-based) of n fails alone, for onnxruntime's `reason`."""
    if reason is not None:
        log.warning("the input model runs %d samples of the data together and fails in onnxruntime on sample %d "
                    "alone (%s): it runs some batch sizes and not others (torch's legacy tracer unrolls a "
                    "data-dependent loop, as a mixture of experts' over the experts a batch picks); this run "
                    "measures on the data's batches, and pruned candidates that fail where it ran count as over "
                    "the budget. Re-export it with torch's dynamo exporter (torch.onnx.export(..., dynamo=True)) "
                    "to run it on any batch, or give its users batches it runs", n, i + 1, reason)


def input_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A session (optimisations off) on the input model, or the one line that says onnxruntime cannot load it.

    The load step calls it before any work (every later step measures in onnxruntime), verification again on the
    oracle (the same graph with other weights)."""
    try:
        return make_session(model, optimize=False)
    except Exception as exc:
        opset = older_than_onnxruntime(model)
        if opset is not None:  # onnx's own pytorch-converted test models (opset 6): "Could not find an
            # implementation for Gemm(6)", and "fix or re-export" said nothing of how
            raise ModelError(
                f"onnxruntime {ort.__version__} cannot load this model: its ai.onnx opset {opset} is older than "
                f"onnxruntime runs ({ORT_OLDEST_OPSET} and later; {_ort_reason(exc)}). Upgrade it with onnx's version "
                "converter and prune the upgraded file: python -c \"import onnx; from onnx import version_converter "
                "as v; onnx.save(v.convert_version(onnx.load('model.onnx'), 13), 'model-opset13.onnx')\""
            ) from None
        locale = _missing_locale(model, exc) or _unregistered_op(model, exc)
        if locale:
            raise ModelError(locale) from None
        raise ModelError(
            f"onnxruntime {ort.__version__} cannot load this model (its graph, not the pruning, is the problem), so "
            f"no output can be verified or written: {_ort_reason(exc)}. Fix or re-export the model so that "
            "onnxruntime loads it (supported ops, opset and IR version, consistent shapes)."
        ) from None


def _missing_locale(model: onnx.ModelProto, exc: Exception) -> str | None:
    """The one line for a StringNormalizer whose locale this machine lacks (sweep 31: skl2onnx's TfidfVectorizer sets
    none, onnxruntime's default is en_US.UTF-8, and a machine with only C.UTF-8 refused it with "fix or re-export the
    model", which no export changes)."""
    import re

    found = re.search(r"Failed to construct locale with name:\s*([^:\s]+)", str(exc))
    if not found:
        return None
    name = found.group(1)
    nodes = [n.name or n.output[0] for n in model.graph.node if n.op_type == "StringNormalizer"]
    who = "StringNormalizer " + listed([f"'{n}'" for n in nodes], 1) if nodes else "a StringNormalizer"
    return (f"onnxruntime cannot load this model on this machine: {who} needs the locale '{name}' (its locale "
            "attribute, or onnxruntime's default where it sets none), which this machine does not have; install it "
            f"(locale-gen {name}), or set the node's locale attribute to one `locale -a` lists (C.UTF-8 on most).")


def _unregistered_op(model: onnx.ModelProto, exc: Exception) -> str | None:
    """The one line for an op of a domain onnxruntime has no kernel for (sweep 38: torch.onnx.export's
    operator_export_type=ONNX_ATEN writes every layer as org.pytorch.aten's ATen, ONNX_ATEN_FALLBACK the ops torch
    has no ONNX export for, aten::cummax; the line said "fix or re-export the model so that onnxruntime loads it
    (supported ops, ...)", which names neither the nodes nor the export option that wrote them)."""
    import re

    found = re.search(r"([\w.]+):(\w+)\(-?\d+\) is not a registered function/op", str(exc))
    if not found:
        return None
    domain, op = found.groups()
    nodes = [n for n in all_nodes(model) if n.domain == domain and n.op_type == op]
    if not nodes:
        return None
    names = listed([f"'{n.name or n.output[0]}'" for n in nodes], 2)
    head = (f"onnxruntime {ort.__version__} cannot load this model, so no output can be verified or written: "
            f"{len(nodes)} node(s) {names} are {domain}:{op}")
    if domain == "org.pytorch.aten" and op == "ATen":
        from onnxprune.converter.modelio import aten_advice

        return f"{head} {aten_advice(nodes)}"
    return (f"{head}, an op onnxruntime has no kernel for (a custom op of the exporter or of a library onnxruntime "
            "is not given here); re-export the model with those layers written in ONNX ops.")


# onnxruntime's words for an index a value gave that leaves its range (a Gather of ids computed from pixels: sweep 39's
# pixel-level Embedding, ids round(7x), failed on standard normal inputs and was told it "does not run as exported")
VALUE_FAILURE = re.compile(r"out of (data )?bounds|out of range", re.IGNORECASE)


def _reference_outputs(oracle: onnx.ModelProto, names: list[str], feeds, source: str,
                       limit: float | None = None) -> list[list]:
    """The oracle's outputs on the feeds, in order, until they hold `limit` bytes (default OUTPUT_BYTES; at least one
    feed's); its session is gone when this returns. A language model's logits (64 x 32 x 50,257 float32, 411 MB a
    batch) were held for every batch at once (3.5 GB of an 8.6 GB run); now a batch or so at a time."""
    limit = OUTPUT_BYTES if limit is None else limit
    ref = input_session(oracle)
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a failing run is reported in our one line, not also in onnxruntime's log
    wants, held = [], 0
    for feed in feeds:
        if wants and held >= limit:
            break
        try:
            wants.append(ref.run(names, feed, quiet))
            held += sum(v.nbytes for v in wants[-1] if isinstance(v, np.ndarray))
        except Exception as exc:
            shapes = ", ".join(f"'{k}' {list(np.shape(v))}" for k, v in feed.items())
            hint = ("pass --input-shape NAME=DIMS with shapes the model takes, or real samples with --data"
                    if source == "random" else "check the data's shapes")
            if source == "random" and VALUE_FAILURE.search(str(exc)):
                hint = ("the model computes an index from an input's values and random ones (floats standard "
                        "normal, integers from 0) leave its range: give real samples with --data")
            elif source == "random" and _declared_only_batch(oracle, feed) and first_sample_fails(
                    lambda one: ref.run(names, one, quiet), feed):
                hint = ("they have its declared shapes and one sample alone fails too, so no other shape or batch "
                        "is the fix: the model does not run in onnxruntime as exported")
            raise ModelError(
                f"onnxruntime cannot run the model on {source} inputs ({shapes}): {_ort_reason(exc)}; {hint}."
            ) from None
    return wants


def _declared_only_batch(model: onnx.ModelProto, feed: dict) -> bool:
    """Whether the random feed has every declared dim of every input but the first (sweep 31: dynamo's LSTM with
    proj_size fails at any batch, and the line said to pass shapes the model takes)."""
    declared = {vi.name: vi.type.tensor_type.shape.dim for vi in model.graph.input if vi.type.HasField("tensor_type")}
    for name, value in feed.items():
        dims, shape = declared.get(name), np.shape(value)
        if dims is None or len(dims) != len(shape) or any(
                not d.HasField("dim_value") or d.dim_value != n for d, n in zip(list(dims)[1:], shape[1:])):
            return False
    return True


def _compare(name: str, got, want, words: _Words = WRITTEN) -> tuple[float, float, int]:
    """(max abs difference, scale, values NaN/inf in one and not the other or another NaN/inf) of one output on one
    feed, the difference over the values finite in both; ParityError when they differ in kind, not degree.

    Non-tensor outputs are compared by value: a sequence of maps (ZipMap) must have the same keys, and its values
    are compared as numbers like any tensor; a sequence of tensors is stacked. Non-float values must be equal."""
    if map_keys(got) != map_keys(want):
        raise ParityError(f"output '{name}' (a sequence of maps) has keys {map_keys(got)} {words.where}, "
                          f"{map_keys(want)} expected{words.bug}")
    try:
        got, want = as_array(got), as_array(want)
    except CalibrationError as exc:
        raise ParityError(f"output '{name}' is {exc}") from None
    if got.shape != want.shape:
        raise ParityError(f"output '{name}' has shape {got.shape} {words.where}, {want.shape} expected.")
    if not np.issubdtype(got.dtype, np.number):  # strings, bools: equal or not (numbers, ints too, by their gap)
        g = got
        w = np.asarray(want, dtype=np.float64) if np.issubdtype(want.dtype, np.number) else want
        if not np.array_equal(g, w):
            diff = int(np.count_nonzero(g != w)) if g.shape == w.shape else g.size
            raise ParityError(f"output '{name}' ({g.dtype} values) differs from {words.against} in {diff} of "
                              f"{g.size} element(s){words.bug}")
        return 0.0, 1.0, 0
    diff, top, moved = 0.0, 0.0, 0
    flat_g, flat_w = got.reshape(-1), want.reshape(-1)
    for start in range(0, flat_w.size, COMPARE_CHUNK):  # in float64, a chunk at a time: a language model's logits
        g = flat_g[start:start + COMPARE_CHUNK].astype(np.float64)  # (64 x 32 x 50,257 a batch) were copied
        w = flat_w[start:start + COMPARE_CHUNK].astype(np.float64)  # whole, twice, and their difference too
        finite = np.isfinite(w)  # a model that computes NaN/inf (on random inputs, say) must do so in both, up to
        both = finite & np.isfinite(g)  # its own rounding noise at an edge (`_judge_moved`)
        moved += int(np.count_nonzero(~both & ~(~finite & ~np.isfinite(g) & ((g == w) | np.isnan(g) & np.isnan(w)))))
        g, w = g[both], w[both]
        if w.size:
            diff = max(diff, float(np.max(np.abs(g - w))))
            top = max(top, float(np.max(np.abs(w))))
    scale = max(top, 1e-6)
    return (diff if np.isfinite(diff) else np.inf), scale, moved


def _judge(label: str, gap: _Gap, rtol: float, floor: float | None, source: str = "data",
           words: _Words = WRITTEN) -> None:
    """Accept a gap above `rtol` of the scale only within NOISE_MULTIPLE x the floor, itself within NOISE_CEILING."""
    scale = "the output scale" if label.startswith("output") else "its scale"
    said = (f"{label} differs from {words.against}: max abs diff {gap.diff:.3g} "
            f"({gap.rel:.3g} of {scale}, limit {rtol:g}")
    if floor is None or not np.isfinite(gap.diff):
        raise ParityError(f"{said}){words.bug}")
    if floor > NOISE_CEILING * gap.scale:
        raise ParityError(f"{said}); {words.own} own rounding noise on these inputs ({floor:.3g}) is above "
                          f"{NOISE_CEILING:g} of {scale}, too much to tell rounding from a bug: "
                          + ("verify on other inputs (--data with real samples)." if source == "random" else
                             "verify on other samples (--data), or report it with --debug."))
    if gap.diff > NOISE_MULTIPLE * floor:
        raise ParityError(f"{said}, or {NOISE_MULTIPLE:g}x {words.own} own rounding noise {floor:.3g}){words.bug}")
    log.info("%s: max abs diff %.3g is %.3g of its scale, within %gx the dense model's rounding noise %.3g", label,
             gap.diff, gap.rel, NOISE_MULTIPLE, floor)


def _gaps(session, names: list[str], feeds, wants, optional: frozenset[str] = frozenset(),
          words: _Words = WRITTEN) -> dict[str, _Gap]:
    """Per name, the worst gap between the session's values and `wants` over the feeds; `optional` names whose
    values are not float or not shaped like the wanted ones are left out (a tensor the shrink narrowed)."""
    gaps = {name: _Gap() for name in names}
    for feed, want in zip(feeds, wants):
        for name, g, w in zip(names, session.run(names, feed), want):
            if name in optional and (np.shape(g) != np.shape(w) or np.asarray(w).dtype.kind != "f"):
                gaps.pop(name, None)
            elif name in gaps:
                gaps[name].add(*_compare(name, g, w, words))
    return gaps


def _within_noise(candidate, oracle: onnx.ModelProto, over: list[str], feeds, rtol: float,
                  source: str, words: _Words = WRITTEN) -> dict[str, float]:
    """The second rule for the outputs in `over`, and for the tensors feeding them that both models compute (a
    Sigmoid's logits, which float32 resolves far better than its saturated output): each within `rtol` of its
    scale or NOISE_MULTIPLE x its noise floor. Raises ParityError naming the first that is not; returns the floors."""
    feeders = _feeders(candidate, oracle, over)
    watched = over + [t for t in feeders if t not in over]
    reference = with_outputs(oracle, watched) if feeders else oracle
    wants = _reference_outputs(reference, watched, feeds, source, limit=float("inf"))  # (rare: every feed's)
    try:
        session = make_session(with_outputs(candidate, watched) if feeders else candidate, optimize=False)
    except Exception as exc:
        raise ModelError(f"onnxruntime refuses the written model: {_ort_reason(exc)}") from None
    gaps = _gaps(session, watched, feeds, wants, optional=frozenset(feeders), words=words)
    del session
    compared = [t for t in watched if t in gaps]  # feeders the shrink narrowed, or not float, are not compared
    floors = noise_floor(reference, compared, feeds, [[w for t, w in zip(watched, ws) if t in gaps] for ws in wants])
    for name in over + [t for t in feeders if t in gaps and gaps[t].rel > rtol]:
        label = f"output '{name}'" if name in over else f"tensor '{name}' (feeding output '{feeders[name]}')"
        _judge(label, gaps[name], rtol, floors.get(name), source, words)
    return floors


def _judge_moved(oracle: onnx.ModelProto, moved: list[str], gaps: dict[str, _Gap], feeds, source: str,
                 words: _Words = WRITTEN) -> None:
    """Outputs NaN/inf in other places than the dense model's (`_Gap.moved`) are refused; where the dense model's own
    one-float32-step weight nudge (`nudged`) moves such places on the same feeds too, the refusal says so and what to
    do, as `_judge` does for a noise floor too high to tell rounding from a bug. A count of places is no test that
    they moved by rounding alone (a flipped sign moves as many), so none pass. Sweep 49: a MADE's log-likelihood,
    log(sigmoid(z)) in torch legacy's export, is -inf/NaN where z saturates; stored compact (its weights decoded at
    load, another kernel), 14 of those places moved on its 440 images, and the run stopped on "this is a bug"; the
    nudge moved 6."""
    if not moved:
        return
    wants = _reference_outputs(oracle, moved, feeds, source, limit=float("inf"))
    try:
        noise = _gaps(make_session(nudged(oracle), optimize=False), moved, feeds, wants)
    except Exception as exc:  # noqa: BLE001 - no floor: the plain refusal
        log.info("no NaN/inf noise floor: the nudged model does not run like the dense one (%s)", exc)
        noise = {}
    name = moved[0]
    own = noise[name].moved if name in noise else 0
    said = f"output '{name}' is NaN/inf in other places than in {words.against} ({gaps[name].moved} value(s))"
    if not own:
        raise ParityError(f"{said}{words.bug}")
    raise ParityError(f"{said}; {words.own} own rounding noise moves {own} such place(s) on these inputs (its "
                      "NaN/inf sit at a float32 edge, such as log(sigmoid(z)) where z saturates), too close to tell "
                      "rounding from a bug: compute those outputs stably in the model (log-sigmoid, a clamp) and "
                      + ("verify on other inputs (--data with real samples)." if source == "random" else
                         "prune it again, or verify on other samples (--data)."))


def _feeders(candidate, oracle: onnx.ModelProto, over: list[str]) -> dict[str, str]:
    """{tensor: output} for the computed inputs of the nodes producing `over` that the candidate computes too."""
    if not isinstance(candidate, onnx.ModelProto) or candidate.ByteSize() >= 2**31 - 1:
        return {}
    fixed = {t.name for t in oracle.graph.initializer} | {i.name for i in oracle.graph.input}
    fixed |= {o for n in oracle.graph.node if n.op_type == "Constant" for o in n.output}
    computed = {o for n in candidate.graph.node if n.op_type != "Constant" for o in n.output}
    return {x: name for n in oracle.graph.node for name in over if name in n.output
            for x in n.input if x and x not in fixed and x in computed}


def noise_floor(oracle: onnx.ModelProto, names: list[str], feeds, wants) -> dict[str, float]:
    """Per name, the largest move of the oracle's values over `feeds` when its weights are `nudged`: {} when the
    nudged model does not run like the oracle (a shape-deciding float it reads, say), so the first rule stands."""
    try:
        session = make_session(nudged(oracle), optimize=False)
    except Exception as exc:
        log.info("no rounding-noise floor: the nudged model does not load (%s)", _ort_reason(exc))
        return {}
    try:
        return {name: gap.diff for name, gap in _gaps(session, names, feeds, wants).items()}
    except Exception as exc:  # ParityError (a shape) or a failed run
        log.info("no rounding-noise floor: the nudged model does not run like the dense one (%s)", exc)
        return {}


def nudged(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy whose non-zero float weights each move one float32 (or their dtype's) step, up or down at random.

    Only tensors every reader takes as a value (`_value_inputs`) are nudged, in initializers and Constant nodes of
    the main graph; zeros (pruned) stay zero. A float that decides a shape anyway (Range's limit) makes the nudged
    model run differently, and `noise_floor` gives up."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    values, rng = _value_inputs(out), np.random.default_rng(seed)
    tensors = [t for t in out.graph.initializer if t.name in values]
    tensors += [a.t for n in out.graph.node if n.op_type == "Constant" and n.output[0] in values
                for a in n.attribute if a.name == "value"]
    for t in tensors:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            continue
        a = numpy_helper.to_array(t)
        if a.dtype.type not in NUDGED_DTYPES:
            continue
        step = np.where(rng.random(a.shape) < 0.5, -np.inf, np.inf).astype(a.dtype)
        with np.errstate(over="ignore"):  # float32's max steps to inf: kept as it is below
            moved = np.nextafter(a, step)
        t.CopyFrom(numpy_helper.from_array(np.where((a == 0) | ~np.isfinite(moved), a, moved), t.name))  # max stays
    return out


def _value_inputs(model: onnx.ModelProto) -> set[str]:
    """Tensors that every node reading them (subgraphs too) takes at an input its schema types with a type variable
    that admits float (Conv W, BatchNormalization's statistics, Clip's bounds), not at a fixed type (Resize and
    Upsample scales, NonMaxSuppression thresholds) nor at one NOT_NUDGED lists (Pow's exponent); a reader without a
    schema (custom domains) rules them out."""
    opsets = {o.domain or "": o.version for o in model.opset_import}
    fine, ruled_out = set(), set()
    for node in all_nodes(model):
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(node.domain or "", 1), node.domain or "")
        except Exception:
            ruled_out.update(node.input)
            continue
        floats = {c.type_param_str for c in schema.type_constraints if "tensor(float)" in c.allowed_type_strs}
        for i, name in enumerate(node.input):
            formal = schema.inputs[min(i, len(schema.inputs) - 1)] if schema.inputs else None
            value = formal is not None and formal.type_str in floats and i not in NOT_NUDGED.get(node.op_type, ())
            (fine if value else ruled_out).add(name)
    return fine - ruled_out


def _refuse_huge_inputs(model: onnx.ModelProto) -> None:
    for spec in input_specs(model):
        count = float(np.prod([DEFAULT_DYNAMIC_DIM if d is None else d for d in spec.shape], dtype=np.float64))
        if count > MAX_INPUT_ELEMENTS:
            raise ModelError(
                f"model input '{spec.name}' declares shape {list(spec.shape)} ({count:.3g} elements), above the limit "
                f"of {MAX_INPUT_ELEMENTS:.3g} for random verification inputs; the model is crafted or needs --data "
                "with real samples."
            )
