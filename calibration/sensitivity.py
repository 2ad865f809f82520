"""Per-layer sensitivity: prune ONE weight at a time at growing sparsity and measure the metric (the paper's Fig. 6).

For every prunable weight W and level s, the model with only W pruned to sparsity s (lowest scores removed: |w| by
default, or the run's criterion, passes.criteria) is scored on the calibration data. Done naively that is one
onnxruntime session per (layer, level); instead:

  * one session per layer, in which W alone is a graph input (taken out of the initializers or the Constant node),
    and every level's masked copy of W is fed through it; all other weights stay initializers, so onnxruntime
    still pre-packs and fuses them;
  * better still, only the part of the graph downstream of W is run, fed with cached activations of the unchanged
    prefix, whenever they fit in the memory budget. Layers are cached in groups that fit it together; each group's
    tensors are computed once per batch by a session of only the nodes they need, fed from the previous group's
    cache (onnxruntime runs every node of a session whatever is fetched: a whole-graph session per group made a
    6-layer encoder's prefix caches cost 24 full passes), so all the caches together cost about one pass:

        input -> [conv1] -> pool1 -> [conv2] -> ... -> logits        scan of conv2:
                                 |                                     pool1 (cached) + W --> [conv2] -> ... -> logits
                           cached once

`scan_naive` is the oracle (a fresh session per variant, the masked weight in the initializer): tests check the
fast path against it.

Which levels are measured. Given levels alone, `scan` measures every level on every sample (the full curves of
Figure 6; `--levels` and `onnxprune sensitivity`). Given a budget too (`budget_pp`: one-shot `prune --max-loss`),
the levels are a grid to search (`_LevelSearch`): an allocation within the budget can only use a layer's levels up
to the first one whose loss alone is over it, so each layer is bisected for its largest level within the budget
(4 or 5 of the 12 default levels) and every level below it is measured too (the allocation trades layers off
there; skipping them cost LeNet-5 compression), from the top down until one is negligible for continuous metrics
(its loss bound under NEGLIGIBLE of the budget's share per layer: the levels under it are bounded by it; see
`_LevelSearch`); every measurement stops once its verdict against the budget is
clear, every scored output counted (calibration/sampling.py): levels above the answer after a few batches (the
first one over is then run on until its loss is known to within RESUME_PRECISION of itself: the allocation
interpolates up to it), and for continuous metrics any level once its loss is known to +-PRECISION of the budget
(the verdict of one that close to the budget is its estimate). The curve holds the levels measured, estimated from the samples run where a measurement
stopped (`LayerSensitivity.samples`), and the allocation never moves a layer past its last measured level. A layer
holding under SMALL_SHARE of the prunable weights is not scanned and stays dense (path "small"): it could move the
compression by less than that share, and the first layers of a network, small and run through everything
downstream, cost the most to scan. The one-shot fit measures its answer on every sample.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.calibration.metrics import Evaluator, feed_samples, split_batch
from onnxprune.calibration.runtime import available_memory, make_session, node_seconds, with_outputs
from onnxprune.calibration.sampling import Batches, Measured, SequentialScorer, Threshold
from onnxprune.errors import ConfigError
from onnxprune.passes.criteria import MAGNITUDE, Scorer, Scoring
from onnxprune.passes.scopes import body_definitions, drop_constant, outer_reads
from onnxprune.passes.weights import WEIGHT_OPS, Inventory, PrunableWeight, constant_tensors

log = logging.getLogger(__name__)

DEFAULT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
SMALL_SHARE = 0.001  # budgeted scan: a layer holding less of the prunable weights is left dense, not scanned
# bytes of cached prefix activations: at most this, and at most MEMORY_SHARE of the memory available when the scan
# starts (`memory_budget`). It was 256 MB: rapidocr_rec's 240 lines (338 MB at the backbone's boundaries) then ran
# the whole graph for 16 of its 38 layers; at 1 GiB every layer runs only its downstream part (one-shot scan
# 131 -> 90 s on 2 cores).
DEFAULT_MEMORY_BUDGET = 1 << 30
MEMORY_SHARE = 0.125
# The first level over the budget is measured until its loss is known to +-this share (3 standard errors), not on
# every sample: run to the end, it took 40 of the ~56 samples a layer of PicoDet's scan ran (40 calibration pages,
# 800x608), about two thirds of the scan.
RESUME_PRECISION = 0.25
# A scan with a deadline prices each layer's scan (_Pace): before the first is timed, at this many dense passes of its
# share (LeNet-5's first layer took 3.0, LeNet-300-100's 5.4 on 1,000 MNIST images), then at the pace of those timed;
# the shares come from a profile of one batch, a second session of the model: only when its weights take at most
# PROFILE_SHARE of the memory available (else the scan goes in graph order).
PRIOR_PASSES = 4.0
PROFILE_SHARE = 0.25
PROFILE_ROWS = 8  # the rows of the first batch the profile runs (the whole batch where they cannot be cut)
NEGLIGIBLE = 0.25  # budgeted scan: a level whose loss bound is under this share of budget / layers ends the curve
FORMAT = "onnxprune.sensitivity/1"
Progress = Callable[[int, int, str], None]


@dataclass
class LayerSensitivity:
    name: str  # the weight
    node: str
    op: str
    kind: str  # "conv" or "fc"
    size: int
    levels: list[float]
    values: list[float]  # metric in % at each level, this layer alone pruned
    coupled: bool = False  # output reaches a residual Add/Sum before the next weight layer
    seconds: float = 0.0
    path: str = "full"  # "downstream" (cached prefix), "full" (whole graph), "unused" (output independent of W) or
    #                     "small" (budgeted scan: too few weights to be worth scanning; no levels, stays dense)
    #                     "unscanned" (the scan's deadline passed before its turn; no levels, stays dense)
    samples: list[int] = field(default_factory=list)  # samples behind each value (empty: all, at every level)

    def losses(self, dense: float) -> list[float]:
        """Loss in pp at each level (negative when pruning happened to help)."""
        return [dense - v for v in self.values]


@dataclass
class SensitivityResult:
    metric: str
    dense: float  # metric of the dense model, %
    levels: list[float]
    layers: list[LayerSensitivity] = field(default_factory=list)
    seconds: float = 0.0
    num_samples: int | None = None
    data: str = ""
    unit: str = "weights"  # what a level removes: "weights" (magnitude, per layer) or "neurons" (whole, per group)
    criterion: str = "magnitude"  # how the weights of a level were chosen (passes.criteria)
    paced: bool = False  # a deadline left layers unscanned, chosen by weights per second of scan (_Pace), not order

    def layer(self, name: str) -> LayerSensitivity:
        for lay in self.layers:
            if lay.name == name or lay.node == name:
                return lay
        raise ConfigError(f"no layer '{name}' in the sensitivity result; it has {[x.name for x in self.layers]}.")

    def as_dict(self) -> dict:
        """The document `to_json` writes and `sensitivity --json` prints (onnxprune.plain: a NaN metric is null)."""
        return {"format": FORMAT, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        from onnxprune.plain import dumps

        return dumps(self.as_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str | dict) -> SensitivityResult:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        if data.pop("format", FORMAT) != FORMAT:
            raise ConfigError(f"not an onnxprune sensitivity file (expected format '{FORMAT}').")
        nan = float("nan")  # a metric written as null (a NaN: the pruned model's outputs were not finite)
        layers = [LayerSensitivity(**{**lay, "values": [nan if v is None else v for v in lay.get("values", [])]})
                  for lay in data.pop("layers")]
        if data.get("dense") is None:
            data["dense"] = nan
        return cls(layers=layers, **data)


# ---- graph bookkeeping -----------------------------------------------------------------------------------------

class _GraphIndex:
    """Producers, consumers and data dependence of a graph (nodes in topological order).

    A node with If/Loop/Scan bodies reads, besides its inputs, the outer-scope names its bodies read; and it holds
    the constants its bodies define: a weight that lives in a body is read, for this index, by the node that holds
    it (`holder`). Names that exist only inside a body never become boundary tensors or graph outputs.
    """

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.nodes = list(graph.node)
        self.holder: dict[str, int] = {}  # name defined inside a body -> the main-graph node holding that body
        for i, nd in enumerate(self.nodes):
            for t in body_definitions(nd) if nd.attribute else ():
                self.holder.setdefault(t, i)
        self.inputs = {i: [t for t in nd.input if t] + sorted(outer_reads(nd) if nd.attribute else ())
                       for i, nd in enumerate(self.nodes)}
        self.producer = {o: i for i, nd in enumerate(self.nodes) for o in nd.output if o}
        self.consumers: dict[str, list[int]] = {}
        for i, _ in enumerate(self.nodes):
            for t in self.inputs[i]:
                self.consumers.setdefault(t, []).append(i)
        self.initializers = {t.name for t in graph.initializer}
        self.real_inputs = [vi.name for vi in graph.input if vi.name not in self.initializers]
        self.data = set(self.real_inputs)  # tensors that depend on the model inputs
        for i, nd in enumerate(self.nodes):
            if any(t in self.data for t in self.inputs[i]):
                self.data.update(o for o in nd.output if o)

    def descendants(self, tensor: str) -> set[int]:
        seen: set[int] = set()
        todo = list(self.consumers.get(tensor, [])) + ([self.holder[tensor]] if tensor in self.holder else [])
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            for o in self.nodes[i].output:
                todo.extend(self.consumers.get(o, []))
        return seen

    def ancestors(self, tensors: Sequence[str]) -> set[int]:
        seen: set[int] = set()
        todo = [self.producer[t] for t in tensors if t in self.producer]
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            todo.extend(self.producer[t] for t in self.inputs[i] if t in self.producer)
        return seen

    def consumer_of(self, w: PrunableWeight) -> int:
        """The weight op that reads the weight, following its pass-through chain (Transpose, ...); for a weight
        read inside a body, the main-graph node that holds the body."""
        if w.scope:
            return self.holder[w.name] if w.name in self.holder else self.consumers[w.name][0]
        tensor = w.name
        for step in range(len(w.via) + 1):
            readers = self.consumers[tensor]
            # along its own chain: a tied embedding's table is read by a Gather too (passes/weights._tied_lookup)
            i = next((j for j in readers if self.nodes[j].name == w.node), None)
            if i is None:
                i = next((j for j in readers if step < len(w.via) and self.nodes[j].op_type == w.via[step]), readers[0])
            if self.nodes[i].op_type in WEIGHT_OPS or self.nodes[i].name == w.node:
                return i
            tensor = self.nodes[i].output[0]
        raise ConfigError(f"weight '{w.name}' does not reach its {w.op_type} '{w.node}'; rebuild the inventory.")


def is_coupled(model_or_index, w: PrunableWeight) -> bool:
    """Does the layer's output reach an Add/Sum of two non-constant tensors before the next weight layer?"""
    index = model_or_index if isinstance(model_or_index, _GraphIndex) else _GraphIndex(model_or_index)
    start = index.consumer_of(w)
    seen, todo = set(), [c for o in index.nodes[start].output for c in index.consumers.get(o, [])]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        node = index.nodes[i]
        if node.op_type in ("Add", "Sum") and sum(t in index.data for t in node.input) >= 2:
            return True
        if node.op_type in WEIGHT_OPS and any(t not in index.data for t in node.input if t):
            continue  # the next weight layer: stop here
        todo.extend(c for o in node.output for c in index.consumers.get(o, []))
    return False


# ---- weight as a graph input -----------------------------------------------------------------------------------

def _weight_input(w: PrunableWeight, shape=None) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(w.dtype))
    return helper.make_tensor_value_info(w.name, elem, list(shape or w.shape))


def weight_as_input(model: onnx.ModelProto, w: PrunableWeight) -> onnx.ModelProto:
    """A copy of the model in which only `w` is a graph input (out of the initializers or its Constant node)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    drop_constant(out, w.name)  # in whichever graph or body it lives; bodies read the input by the same name
    if all(vi.name != w.name for vi in graph.input):
        graph.input.append(_weight_input(w))
    return out


def with_weight(model: onnx.ModelProto, name: str, values: np.ndarray) -> onnx.ModelProto:
    """A copy of the model with weight `name` (initializer or Constant node) replaced by `values`."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    constant_tensors(out)[name].CopyFrom(numpy_helper.from_array(values, name))
    return out


def masked(values: np.ndarray, level: float, scorer: Scorer | None = None, name: str = "") -> np.ndarray:
    """`values` pruned to `level` by the scorer's criterion (magnitude when None): the oracle's way."""
    keep = (scorer or Scorer()).keep(name, values, level)
    return np.where(keep, values, np.zeros((), dtype=values.dtype)).astype(values.dtype)


def masked_levels(values: np.ndarray, levels, scorer: Scorer | None = None, name: str = "") -> Iterator[np.ndarray]:
    """`masked(values, s)` for every level (the scores are computed once and cached by the scorer)."""
    scorer = scorer or Scorer()
    for s in levels:
        yield masked(values, s, scorer, name)


# ---- the downstream plan ---------------------------------------------------------------------------------------

@dataclass
class _Plan:
    weight: PrunableWeight
    nodes: list[int]  # the downstream nodes to run, topological order
    boundary: list[str]  # cached tensors they read (besides W)
    path: str
    outputs: list[str] = field(default_factory=list)  # the scored outputs W reaches (the others keep their values)


def _reached(index: _GraphIndex, w: PrunableWeight, outputs: Sequence[str]) -> tuple[set[int], list[str]]:
    """The nodes downstream of `w` and the `outputs` among what they produce."""
    below = index.descendants(w.name)
    return below, [o for o in outputs if index.producer.get(o) in below]


def _plan(index: _GraphIndex, w: PrunableWeight, outputs: Sequence[str]) -> _Plan:
    below, reached = _reached(index, w, outputs)
    if not reached:
        return _Plan(w, [], [], "unused")
    keep = below & index.ancestors(reached)
    boundary: list[str] = []
    todo = [t for i in keep for t in index.inputs[i]]
    while todo:
        t = todo.pop()
        p = index.producer.get(t)
        if t == w.name or t in index.initializers or (p is not None and p in keep):
            continue
        if p is None or t in index.data:
            if t not in boundary:
                boundary.append(t)
        else:  # a constant helper (shape tensors, Constant nodes): run it inside the subgraph
            keep.add(p)
            todo.extend(index.inputs[p])
    return _Plan(w, sorted(keep), sorted(boundary), "downstream", reached)


def _submodel(model: onnx.ModelProto, index: _GraphIndex, plan: _Plan,
              samples: list[dict[str, np.ndarray]]) -> onnx.ModelProto:
    """Downstream nodes only: inputs = the cached boundary tensors + W, outputs = the scored outputs W reaches."""
    nodes = [index.nodes[i] for i in plan.nodes]
    used = {t for i in plan.nodes for t in index.inputs[i]}
    inits = [t for t in model.graph.initializer if t.name in used and t.name != plan.weight.name]
    inputs = [_boundary_input(t, samples) for t in plan.boundary] + [_weight_input(plan.weight)]
    out_infos = [o for o in model.graph.output if o.name in plan.outputs]
    graph = helper.make_graph(nodes, "downstream", inputs, out_infos, initializer=inits)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    sub.functions.extend(model.functions)
    if plan.weight.name in index.holder:
        drop_constant(sub, plan.weight.name)  # fed as the input W instead
    return sub


def _boundary_input(name: str, samples: list[dict[str, np.ndarray]]) -> onnx.ValueInfoProto:
    """Typed from the cached arrays: dims that differ between any two batches (feeds of their own size) become
    symbolic."""
    first = samples[0][name]
    shapes = {np.shape(row[name]) for row in samples}
    dims = [first.shape[k] if len({s[k] for s in shapes}) == 1 else f"{name}_d{k}" for k in range(first.ndim)]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(first.dtype), dims)


def _prefix_model(model: onnx.ModelProto, index: _GraphIndex, names: Sequence[str], fed: set[str],
                  samples: list[dict[str, np.ndarray]] | None) -> onnx.ModelProto:
    """The nodes that compute `names` and nothing else (onnxruntime runs every node of a session whatever is
    fetched), cut where they meet a tensor in `fed`: those become inputs typed from `samples` (an earlier group's
    cached rows), beside the model inputs they read."""
    keep: set[int] = set()
    todo = [index.producer[t] for t in names if t in index.producer and t not in fed]
    while todo:
        i = todo.pop()
        if i in keep:
            continue
        keep.add(i)
        todo.extend(index.producer[t] for t in index.inputs[i] if t in index.producer and t not in fed)
    used = {t for i in keep for t in index.inputs[i]}
    inputs = [vi for vi in model.graph.input if vi.name in used and vi.name in index.real_inputs and vi.name not in fed]
    inputs += [_boundary_input(t, samples) for t in sorted(used & fed)]
    inits = [t for t in model.graph.initializer if t.name in used]
    outputs = [onnx.ValueInfoProto(name=n) for n in names]  # onnxruntime infers the types
    graph = helper.make_graph([index.nodes[i] for i in sorted(keep)], "prefix", inputs, outputs, initializer=inits)
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    sub.functions.extend(model.functions)
    return sub


def _prefix_cache(model, index: _GraphIndex, evaluator: Evaluator, names: Sequence[str],
                  previous: list[dict[str, np.ndarray]] | None = None) -> list[dict[str, np.ndarray]]:
    """The boundary tensors per batch: graph inputs straight from the feeds, the rest from one session that runs
    only the nodes they need, starting from the tensors the previous group cached (`previous`, rows in the same
    batch order) where it can: each group pays for the layers since the last one, not for the whole prefix. The
    previous cache is held until this one is built: at most twice the memory budget for a moment."""
    real = set(index.real_inputs)
    computed = [n for n in names if n not in real]
    fed = set(previous[0]) if previous else set()
    carried = [n for n in computed if n in fed]  # cached already by the previous group: copied over, not run
    run = [n for n in computed if n not in fed]
    sess = None
    if run:
        sess = make_session(_prefix_model(model, index, run, fed, previous), optimize=evaluator.optimize)
    wanted = [i.name for i in sess.get_inputs()] if sess else []
    cache = []
    for b, (feeds, _) in enumerate(evaluator.batches()):
        row = {n: feeds[n] for n in names if n in feeds}
        row.update({n: previous[b][n] for n in carried})
        if sess is not None:
            values = sess.run(run, {k: (feeds[k] if k in feeds else previous[b][k]) for k in wanted})
            row.update(zip(run, values))
        cache.append(row)
    return cache


def _bytes_per_sample(model, evaluator: Evaluator, names: Sequence[str]) -> dict[str, float]:
    """Probe one batch to size each boundary tensor."""
    if not names:
        return {}
    feeds, _ = next(iter(evaluator.batches()))
    computed = [n for n in names if n not in feeds]
    row = {n: feeds[n] for n in names if n in feeds}
    if computed:
        sess = make_session(with_outputs(model, computed), optimize=evaluator.optimize)
        inputs = {i.name for i in sess.get_inputs()}
        row.update(zip(computed, sess.run(computed, {k: v for k, v in feeds.items() if k in inputs})))
    n = max(1, feed_samples(feeds, evaluator.reader))
    return {k: np.asarray(v).nbytes / n for k, v in row.items()}


def _groups(plans: list[_Plan], sizes: dict[str, float], samples: int, budget: int) -> list[list[_Plan]]:
    """Consecutive layers whose cached tensors fit the budget together; a layer that alone does not fit
    falls back to the whole-graph path."""
    groups: list[list[_Plan]] = []
    current: list[_Plan] = []
    names: set[str] = set()
    for plan in plans:
        if plan.path != "downstream":
            groups.append([plan])
            continue
        need = sum(sizes[t] for t in plan.boundary) * samples
        if need > budget:
            log.info("layer %s: prefix activations (%.0f MB) exceed the budget; scanning the whole graph",
                     plan.weight.node, need / 2**20)
            groups.append([dataclasses.replace(plan, path="full")])
            continue
        merged = names | set(plan.boundary)
        if current and sum(sizes[t] for t in merged) * samples > budget:
            groups.append(current)
            current, merged = [], set(plan.boundary)
        current.append(plan)
        names = merged
    if current:
        groups.append(current)
    return groups


# ---- the scan ------------------------------------------------------------------------------------------------

def default_memory_budget() -> int:
    """DEFAULT_MEMORY_BUDGET, or MEMORY_SHARE of the memory available now when that is less
    (`runtime.available_memory`; not below the 256 MB it was)."""
    available = available_memory()
    if available is None:
        return DEFAULT_MEMORY_BUDGET
    return int(max(256 << 20, min(DEFAULT_MEMORY_BUDGET, MEMORY_SHARE * available)))


def _check_levels(levels) -> list[float]:
    levels = [float(s) for s in levels]
    if not levels or any(not 0.0 < s < 1.0 for s in levels) or sorted(set(levels)) != levels:
        raise ConfigError(f"sensitivity levels {levels} must be increasing fractions strictly between 0 and 1.")
    return levels


def _dense_pct(model, evaluator: Evaluator) -> float:
    return 100.0 * (evaluator.dense if evaluator.dense is not None else evaluator.evaluate(model))


def scan(model: onnx.ModelProto, inventory: Inventory, evaluator: Evaluator, levels=DEFAULT_LEVELS,
         progress: Progress | None = None, *, memory_budget: int | None = None,
         downstream: bool = True, scoring: Scoring = MAGNITUDE, budget_pp: float | None = None,
         ceilings: Threshold | None = None, deadline: float | None = None) -> SensitivityResult:
    """Sensitivity of every prunable weight, one session per layer (see the module docstring); `scoring` chooses
    which weights a level removes (passes.criteria; magnitude by default), scored once on the dense model.
    Without `budget_pp` every level is measured on every sample; with it, each layer's levels are searched for its
    largest one within budget_pp and measurements stop once their verdict is clear (`_LevelSearch`); `ceilings`
    (per scored output and term, in pp: the decision rule's `BudgetRule.point_ceilings`) say what "within" means
    per term when the rule accepts less than the budget's point estimate (a share of changed samples). A layer whose
    scan, as long as the last one's (a dense pass before the first), would end after `deadline` (a
    time.perf_counter() value) is not scanned and stays dense (path "unscanned")."""
    levels = _check_levels(levels)
    scorer = scoring.bind(model)
    t0 = time.perf_counter()
    index = _GraphIndex(model)
    outputs = [o or model.graph.output[0].name for o in evaluator.scored_outputs]
    result = _new_result(model, evaluator, levels)
    result.criterion = scoring.criterion
    plans = [_plan(index, w, outputs) for w in inventory.prunable]
    if budget_pp is not None:  # a layer this small moves the compression by less than its share: not worth a scan
        total = sum(w.size for w in inventory.prunable)
        plans = [dataclasses.replace(p, path="small") if p.weight.size < SMALL_SHARE * total else p for p in plans]
    if not downstream:
        plans = [dataclasses.replace(p, path="full") if p.path == "downstream" else p for p in plans]
    search = _LevelSearch(evaluator, budget_pp, layers=sum(p.path in ("downstream", "full") for p in plans),
                          ceilings=ceilings)
    samples = evaluator.num_samples or evaluator.reader.num_samples
    if samples is None:  # unknown amount of data: never cache activations
        plans = [dataclasses.replace(p, path="full") if p.path == "downstream" else p for p in plans]
    boundary = sorted({t for p in plans if p.path == "downstream" for t in p.boundary})
    sizes = _bytes_per_sample(model, evaluator, boundary)
    if evaluator.cached:  # model inputs are already in memory: caching them again costs nothing
        sizes.update({n: 0.0 for n in index.real_inputs if n in sizes})
    groups = _groups(plans, sizes, samples, default_memory_budget() if memory_budget is None else memory_budget)
    tick = _Ticker(progress, len(plans) * len(levels))
    by_name: dict[str, LayerSensitivity] = {}
    previous = None  # the last group's cached rows: the next group's prefix starts from them
    reference = getattr(evaluator, "reference_seconds", None) or 0.0
    timed = deadline is not None and deadline > time.perf_counter()
    pace = _Pace.of(model, index, plans, evaluator, reference) if timed else None
    last = reference  # without a pace: a layer's scan is taken to last as long as the last one's, first a dense pass
    every = [p for group in groups for p in group if _scanned(p)]
    todo = {p.weight.name for p in every}  # the layers still to scan
    pending = list(groups)
    while pending:
        group = pending.pop(0 if pace is None else pace.next_group(pending, todo, deadline - time.perf_counter()))
        names = sorted({t for p in group for t in p.boundary}) if group[0].path == "downstream" else []
        turns = group
        if pace is not None:
            first = pace.choose([p for p in every if p.weight.name in todo], deadline - time.perf_counter())
            if not first & {p.weight.name for p in group}:
                names = []  # no prefix pass for a group none of whose layers fits the time left
            # the layers chosen first, most weights per second first, then a second look at the others once those
            # are timed (the cache is there)
            turns = sorted([p for p in group if p.weight.name in first], key=lambda p: -pace.worth(p)) + \
                [p for p in group if not _scanned(p)] + \
                [p for p in group if _scanned(p) and p.weight.name not in first]
        elif deadline is not None and time.perf_counter() + last > deadline:
            names = []  # none of the group's layers will be scanned: no prefix pass for them
        t = time.perf_counter()
        cache = _prefix_cache(model, index, evaluator, names, previous) if names else None
        if cache is not None and deadline is not None:
            log.debug("scan: the prefix pass of %d cached tensors took %.2f s", len(names), time.perf_counter() - t)
        previous = cache if cache is not None else previous
        for plan in turns:
            scanned = _scanned(plan)
            if deadline is not None and scanned:
                if pace is None:
                    late = time.perf_counter() + last > deadline
                else:  # the layers from this one on that fit the time left, most weights per second first
                    chosen = pace.choose([p for p in every if p.weight.name in todo], deadline - time.perf_counter())
                    late = plan.weight.name not in chosen or (plan.path == "downstream" and cache is None)
                if late:
                    plan = dataclasses.replace(plan, path="unscanned")
            if scanned:
                todo.discard(plan.weight.name)
            t = time.perf_counter()
            by_name[plan.weight.name] = _scan_layer(model, index, plan, evaluator, levels, cache, tick, result.dense,
                                                    scorer, search)
            if scanned and plan.path != "unscanned":
                last = time.perf_counter() - t
                if pace is not None:
                    pace.record(plan, last)
        del cache
    del previous
    result.layers = [by_name[w.name] for w in inventory.prunable]
    result.seconds = time.perf_counter() - t0
    if deadline is not None:
        log.debug("scan: %.1f s, ended %.1f s %s its deadline", result.seconds, abs(time.perf_counter() - deadline),
                  "after" if time.perf_counter() > deadline else "before")
    paths = {lay.path for lay in result.layers}
    result.paced = pace is not None and "unscanned" in paths and bool(paths & {"downstream", "full"})
    return result


def _scanned(plan: _Plan) -> bool:
    return plan.path in ("downstream", "full")


class _Pace:
    """How long a layer's scan will take, for a scan with a deadline: the share of a dense pass its nodes take (the
    whole graph for path "full"; onnxruntime's profile of one batch) times the seconds per share the layers scanned
    so far took, PRIOR_PASSES dense passes before the first. Given the time left, `choose` takes the layers with the
    most weights per second of scan first: the scan reaches as many weights as the time allows, not the first
    layers of the graph, which run everything downstream and cost the most to scan (isbnx's YOLO, 40 pages, one-shot
    --time-budget 6m, idle: in graph order 22 of 102 layers, 35% of the weights; paced 50 layers, 94%)."""

    def __init__(self, shares: dict[str, float], reference: float):
        self.shares, self.reference = shares, reference
        self.spent, self.done = 0.0, 0.0

    @classmethod
    def of(cls, model, index: _GraphIndex, plans: list[_Plan], evaluator: Evaluator, reference: float):
        """The pace of `plans`' scans, or None (no dense pass timed, or no profile: the scan goes in graph order)."""
        scanned = [p for p in plans if _scanned(p)]
        if reference <= 0 or len(scanned) < 2:
            return None
        available = available_memory()  # the profile is a second session of the whole model: only where it fits
        if available is not None and sum(len(t.raw_data) for t in model.graph.initializer) > PROFILE_SHARE * available:
            return None
        feeds, _ = next(iter(evaluator.batches()))
        profiled = None
        for part in (split_batch(feeds, None, PROFILE_ROWS)[0][0], feeds):  # a few rows: a heavy batch costs
            try:
                profiled = node_seconds(model, part)
                break
            except Exception as exc:  # a faster order only: never a reason to fail the scan
                log.debug("no profile of the dense model (%s)", exc)
        if profiled is None:
            return None
        named: dict[str, int] = {}
        for nd in index.nodes:  # a name two nodes share (or none) has their times together: each gets its part
            named[nd.name] = named.get(nd.name, 0) + 1
        per_node = [profiled.get(nd.name, 0.0) / named[nd.name] for nd in index.nodes]
        total = sum(per_node)
        if total <= 0:
            return None
        return cls({p.weight.name: 1.0 if p.path == "full" else sum(per_node[i] for i in p.nodes) / total
                    for p in scanned}, reference)

    def seconds(self, plan: _Plan) -> float:
        rate = self.spent / self.done if self.done > 0 else PRIOR_PASSES * self.reference
        return rate * self.shares.get(plan.weight.name, 1.0)

    def worth(self, plan: _Plan) -> float:
        """Weights per second of the plan's scan."""
        return plan.weight.size / max(self.seconds(plan), 1e-9)

    def next_group(self, groups: list[list[_Plan]], todo: set[str], left: float) -> int:
        """Which of the `groups` (in graph order) to scan next: the one holding the chosen layer with the most
        weights per second, else the first. Groups in graph order scanned a chosen layer of an early group first,
        priced by the prior: VGG16's block3_conv3 (0.6M weights) took 37 s, 10 dense passes of its share, and left
        no time for block4's three layers (5.9M) that the choice had taken. A group's prefix starts from the last
        group's cache, whichever it was (_prefix_model cuts only at tensors it computes from)."""
        chosen = self.choose([p for g in groups for p in g if p.weight.name in todo and _scanned(p)], left)
        best = [(max((self.worth(p) for p in g if p.weight.name in chosen), default=-1.0), -k)
                for k, g in enumerate(groups)]
        return -max(best)[1] if max(best)[0] >= 0 else 0

    def record(self, plan: _Plan, seconds: float) -> None:
        share = self.shares.get(plan.weight.name, 1.0)
        log.debug("scan pace: layer %s took %.2f s, %.1f dense passes of its share (%.1f%%)", plan.weight.node,
                  seconds, seconds / max(share * self.reference, 1e-9), 100 * share)
        self.spent += seconds
        self.done += share

    def choose(self, plans: list[_Plan], left: float) -> set[str]:
        """The names of the `plans` (each scanned, not small or unused; in graph order) to scan in `left` seconds:
        all when they fit, else the most weights per second first, each that still fits; or, where that reaches fewer
        weights, the plans in their own order or the largest first, each that still fits (a small layer cheap to scan
        can take the time one large layer needed: most weights per second alone then scans fewer than graph order)."""
        need = {p.weight.name: self.seconds(p) for p in plans}
        if sum(need.values()) <= left:
            return set(need)

        def fill(order) -> tuple[int, set[str]]:
            chosen, used, weights = set(), 0.0, 0
            for p in order:
                if used + need[p.weight.name] <= left:
                    chosen.add(p.weight.name)
                    used += need[p.weight.name]
                    weights += p.weight.size
            return weights, chosen

        fills = [fill(sorted(plans, key=lambda p: -self.worth(p))), fill(plans),
                 fill(sorted(plans, key=lambda p: -p.weight.size))]
        return max(fills, key=lambda f: f[0])[1]  # the first of equals: most weights per second


def unscored_weights(model: onnx.ModelProto, inventory: Inventory, scored: Sequence[str]) -> list[str]:
    """The prunable weights none of the `scored` outputs depends on ("" = the first output), in inventory order."""
    index = _GraphIndex(model)
    outputs = [o or model.graph.output[0].name for o in scored]
    return [w.name for w in inventory.prunable if not _reached(index, w, outputs)[1]]


def _new_result(model, evaluator: Evaluator, levels) -> SensitivityResult:
    return SensitivityResult(metric=evaluator.metric, dense=_dense_pct(model, evaluator), levels=list(levels),
                             num_samples=evaluator.num_samples, data=evaluator.reader.description)


def _scan_layer(model, index, plan: _Plan, evaluator: Evaluator, levels, cache, tick, dense, scorer: Scorer,
                search: _LevelSearch) -> LayerSensitivity:
    t0 = time.perf_counter()
    w = plan.weight
    values = _weight_values(model, w.name)
    if plan.path == "unused":
        log.info("layer %s: no scored output depends on weight %s", w.node, w.name)
        tick.advance(len(levels), w.node)
        return _layer(w, levels, [dense] * len(levels), is_coupled(index, w), time.perf_counter() - t0, plan.path)
    if plan.path in ("small", "unscanned"):
        if plan.path == "small":
            log.info("layer %s: %s weights, under %g%% of the prunable ones: left dense, not scanned", w.node,
                     f"{w.size:,}", 100 * SMALL_SHARE)
        else:
            log.info("layer %s: the scan's time ran out before its turn: left dense, not scanned", w.node)
        tick.advance(len(levels), w.node)
        return _layer(w, [], [], is_coupled(index, w), 0.0, plan.path)
    batches = _level_batches(model, index, plan, evaluator, cache)
    found = search.layer(lambda s: batches(masked(values, s, scorer, w.name)), levels,
                         lambda s: tick.advance(1, f"{w.node} {s:.0%}"))
    if len(found) < len(levels):
        tick.advance(len(levels) - len(found), f"{w.node} done")
    picked = sorted(found)
    samples = [found[i].samples for i in picked]
    return _layer(w, [levels[i] for i in picked], [found[i].value for i in picked], is_coupled(index, w),
                  time.perf_counter() - t0, plan.path, samples=[] if all(m.complete for m in found.values())
                  else samples)


def _level_batches(model, index, plan: _Plan, evaluator: Evaluator, cache) -> Callable[[np.ndarray], Batches]:
    """For the weight's values at a level: the scored outputs of the batches in a given order, run on the layer's
    downstream part (cached prefix), the whole graph with the weight fed, or (onnxruntime refused those) a model
    with the values written in."""
    w = plan.weight
    sess = _session_or_none(lambda: _submodel(model, index, plan, cache) if plan.path == "downstream"
                            else weight_as_input(model, w), evaluator, w) if _feedable(model, w.name) else None
    if sess is None:
        return lambda fed: lambda order: evaluator.run_batches(
            evaluator.session(with_weight(model, w.name, fed)), order)
    if plan.path == "downstream":
        def downstream(fed):
            return lambda order: (evaluator.fill(plan.outputs, sess.run(plan.outputs, {
                **{t: cache[b][t] for t in plan.boundary}, w.name: fed}), b) for b in order)
        return downstream
    return lambda fed: lambda order: evaluator.run_batches(sess, order, {w.name: fed})


class _LevelSearch:
    """Which levels of a layer are measured, and on how many samples.

    Without a budget: every level on every sample. With one (`budget_pp`): an allocation within the budget can only
    use a layer's levels below the first one whose loss alone is over it (the curves are made monotone), so the
    levels are bisected for the largest one within the budget, and every level below it is measured, from the top
    down, until one is negligible; each measurement stops once its verdict against the budget is clear
    (calibration.sampling), except that the first level over the budget runs on until its loss is known to within
    RESUME_PRECISION (the allocation interpolates between it and the answer) unless it is certainly over: with the
    decision rule's ceilings (`ceilings`: 0 changed lines of 240) a level is over on the changed sample that takes
    it past what the rule accepts, and its value past that only steers the allocation's interpolation, which the fit
    measures; resumed, a share of changed samples can never be known to +-25% of a few pp on a few hundred
    samples, so every such level ran on all of them (rapidocr_rec: 38 layers).

    Negligible: for continuous metrics, the level's loss plus 3 standard errors, on every scored output, is at
    most NEGLIGIBLE of the budget's share per scanned layer (budget / layers); for the others (a share of changed
    samples, whose bound on a clean subset is no bound), none of all the samples changed at that level (rapidocr_rec:
    a layer clean at 50% then skips its 40, 30, 20 and 10%, each a run over all 240 lines). The levels under it are then
    bounded by it (the allocation takes curves as monotone) and not measured: all of them together could move a
    prediction by less than the scan resolves of any one level (PRECISION of the budget: calibration.sampling).
    The 22.6M-parameter encoder's 12 query/key projections lose at most 0.001 pp at 99% (budget 1 pp, 36 layers:
    negligible under 0.007 pp); 8 of their 12 levels each were measured only to draw a flat line.
    """

    def __init__(self, evaluator: Evaluator, budget_pp: float | None, layers: int = 1,
                 ceilings: Threshold | None = None):
        self.scorer = SequentialScorer(evaluator)
        self.budget = None if budget_pp is None else float(budget_pp)
        self.ceilings = self.budget if ceilings is None else ceilings
        self.negligible = (None if self.budget is None or not self.scorer.continuous else
                           NEGLIGIBLE * self.budget / max(1, layers))

    def layer(self, batches_at: Callable[[float], Batches], levels,
              measured: Callable[[float], None]) -> dict[int, Measured]:
        """{index into levels: measurement} of the levels measured."""
        found: dict[int, Measured] = {}

        def measure(i: int) -> Measured:
            if i not in found:
                found[i] = self.scorer.measure(batches_at(levels[i]), self.ceilings)
                measured(levels[i])
            return found[i]

        if self.budget is None:
            for i in range(len(levels)):
                measure(i)
            return found
        lo, hi = -1, len(levels)  # lo: largest index within budget (-1: dense), hi: smallest over it
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.scorer.within(measure(mid), self.ceilings):
                lo = mid
            else:
                hi = mid
        for i in range(lo, -1, -1):  # the curve below the answer (cheap levels stop after a few samples)
            if self._negligible(measure(i)):
                break  # the levels under it: at most this, if curves are monotone (the allocation takes them so)
        if hi < len(levels) and not found[hi].certain:  # the first level over: the allocation interpolates up to it
            found[hi] = self.scorer.resume(batches_at(levels[hi]), found[hi], precision=RESUME_PRECISION,
                                           threshold=self.budget)
        return found


    def _negligible(self, measured: Measured) -> bool:
        upper = self.scorer.upper(measured)
        if self.negligible is None:  # a share of changed samples: only none changed of every sample bounds the rest
            return upper is not None and measured.complete and upper <= 0.0
        return upper is not None and upper <= self.negligible


# element types onnxruntime's Python API cannot take as a numpy feed (ml_dtypes' bfloat16 and float8 arrays: "Numpy_type
# 256 can't be converted to MLDataType", sweep 23's bfloat16 weights): such a weight's levels are written in
UNFEEDABLE = frozenset({onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ,
                        onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ})


def _feedable(model: onnx.ModelProto, name: str) -> bool:
    """Whether weight `name`'s values can be fed to onnxruntime as a numpy array (see UNFEEDABLE)."""
    tensor = constant_tensors(model).get(name)
    return tensor is None or tensor.data_type not in UNFEEDABLE


def _session_or_none(build, evaluator: Evaluator, w: PrunableWeight):
    """A session for the layer's scan model, or None when onnxruntime refuses it (seen: an LSTM inside an If body
    whose type inference fails once its weight is a graph input); the scan then writes each level's values in."""
    try:
        return make_session(build(), optimize=evaluator.optimize)
    except Exception as exc:  # onnxruntime's Fail/InvalidGraph (plain Exceptions), or our ModelError around them
        log.info("layer %s: onnxruntime refused the scan model (%s); scanning with the values written in", w.node,
                 str(exc).splitlines()[0][:200])
        return None


def _layer(w: PrunableWeight, levels, scores, coupled, seconds, path, samples=()) -> LayerSensitivity:
    return LayerSensitivity(name=w.name, node=w.node, op=w.op_type, kind=w.kind, size=w.size, levels=list(levels),
                            values=[float(v) for v in scores], coupled=coupled, seconds=seconds, path=path,
                            samples=[int(n) for n in samples])


def _weight_values(model, name: str) -> np.ndarray:
    tensors = constant_tensors(model)
    if name not in tensors:
        raise ConfigError(f"weight '{name}' of the inventory is not in the model; rebuild the inventory.")
    return numpy_helper.to_array(tensors[name])


class _Ticker:
    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def advance(self, n: int, what: str) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total, what)


def scan_naive(model: onnx.ModelProto, inventory: Inventory, evaluator: Evaluator, levels=DEFAULT_LEVELS,
               progress: Progress | None = None, *, scoring: Scoring = MAGNITUDE) -> SensitivityResult:
    """The oracle: a fresh session per (layer, level) with the masked weight written into the model."""
    levels = _check_levels(levels)
    scorer = scoring.bind(model)
    t0 = time.perf_counter()
    index = _GraphIndex(model)
    result = _new_result(model, evaluator, levels)
    result.criterion = scoring.criterion
    tick = _Ticker(progress, len(inventory.prunable) * len(levels))
    for w in inventory.prunable:
        t1 = time.perf_counter()
        values = _weight_values(model, w.name)
        scores = []
        for s in levels:
            scores.append(100.0 * evaluator.evaluate(with_weight(model, w.name, masked(values, s, scorer, w.name))))
            tick.advance(1, f"{w.node} {s:.0%}")
        result.layers.append(_layer(w, levels, scores, is_coupled(index, w), time.perf_counter() - t1, "naive"))
    result.seconds = time.perf_counter() - t0
    return result
