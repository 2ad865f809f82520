"""Find the prunable weights of any ONNX graph, and say why everything else is left alone.

Prunable = an embedding table (a float constant of rank >= 2 that a Gather reads on axis 0 with ids from the data,
passes/opfacts.LOOKUP_OPS: pruned by magnitude, no channels, no MACs) or a float constant weight input of a weight op
(passes/opfacts.WEIGHT_OPS: Conv, ConvTranspose, Gemm, MatMul, and the W/R matrices of LSTM, GRU and RNN), however
it is laid out: an initializer or a Constant node,
reached directly, through layout-only ops (Transpose/Reshape/Identity/Cast/Squeeze/Unsqueeze/Flatten), or as the
bank a Gather with a scalar index selects from a constant table (several such Gathers of one bank whose matrices
reach alike weight ops: a mixture of experts' stacked weights, `_expert_bank`). For each we record the storage
axis that holds the op's output channels (what dead-neuron removal and the report need):

    W[K,N] --Transpose(perm=1,0)--> Wt[N,K] --> Gemm(transB=1)   out channels: axis 0 of Wt = axis 1 of W
    T[2,K,N] --Gather(axis=0, i)--> W[K,N] --> MatMul            out channels: axis 2 of T (the whole table masked)

Weights in If/Loop/Scan bodies count too, wherever they live (see `scope`): a Constant node or initializer of the
body, or an outer-scope tensor the body reads. An outer tensor read by several bodies is one weight when every
reader uses it the same way (same op type and input) and no graph reads it twice: at run time only one branch
reads it. Dead-neuron removal leaves them alone (channel groups block tensors read inside subgraphs).

Not prunable, with the reason reported: biases, normalization parameters, recurrent biases and peepholes, integer
(quantized) weights, with what pruning them would take, weights shared by several nodes of one graph in different
ways. A weight several nodes of one graph read the same way (a tied weight, `_tied`) is one prunable weight with
one mask; `PrunableWeight.node` names its first reader and `readers` counts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.passes import opfacts
from onnxprune.passes.opfacts import LAYOUT_OPS as PASS_THROUGH
from onnxprune.passes.opfacts import LOOKUP_OPS, NORM_OPS, QUANTIZED_HOW, QUANTIZED_WEIGHT_OPS, SUBGRAPH_OPS, WEIGHT_OPS
from onnxprune.passes.scopes import FLOAT_TYPES, ScopeIndex, all_constants, all_nodes, scopes
from onnxprune.passes.shapes import at_batch, conv_pads, infer_shapes

__all__ = ["FLOAT_TYPES", "NORM_OPS", "PASS_THROUGH", "SUBGRAPH_OPS", "WEIGHT_OPS", "Inventory", "PrunableWeight",
           "Skipped", "constant_tensors", "find_prunable", "name_nodes", "second_operand", "tie_use", "weight_array",
           "zeros_of"]


@dataclass(frozen=True)
class PrunableWeight:
    name: str  # the initializer, or the output of the Constant node, that holds the values
    node: str  # the consuming weight op (the first one, when several bodies read it)
    op_type: str
    input_index: int
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "conv", "fc", "recurrent" or "embedding"
    out_axis: int | None  # storage axis of the consumer's output channels (None: unknown, e.g. via Reshape)
    in_axis: int | None
    via: tuple[str, ...] = ()  # op types between the constant and the consumer
    source: str = "initializer"  # or "constant" (a Constant node)
    macs: int | None = None  # multiply-accumulates per sample, when shapes are known
    scope: str = ""  # "" in the main graph, else the path of the body its reader sits in: "If 'sel'/then_branch"
    readers: int = 1  # nodes reading it the same way: a tied weight (one graph) or one per If branch

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str
    size: int


@dataclass
class Inventory:
    prunable: list[PrunableWeight] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)  # weight inputs that are no stored tensor, and where from

    def by_name(self) -> dict[str, PrunableWeight]:
        return {w.name: w for w in self.prunable}


def name_nodes(model: onnx.ModelProto) -> list[str]:
    """Give unnamed nodes a stable name (op type + index; in bodies also the body's position) so every message
    and report can point at them; returns the names given (`unname_nodes` takes them off the written model)."""
    taken = {n.name for n in all_nodes(model) if n.name}
    given: list[str] = []
    for k, sc in enumerate(scopes(model.graph)):  # walked again: names given above shape the paths below
        for i, node in enumerate(sc.graph.node):
            if not node.name:
                candidate = f"{node.op_type}_{i}" if k == 0 else f"{sc.graph.name or 'body'}/{node.op_type}_{i}"
                while candidate in taken:
                    candidate += "_"
                node.name = candidate
                taken.add(candidate)
                given.append(candidate)
    return given


def unname_nodes(model: onnx.ModelProto, given) -> int:
    """Take the names `name_nodes` gave off the nodes that still carry them, in place; returns how many. The
    written model keeps the input's own (empty) names: paddle2onnx leaves most nodes unnamed, and the names the
    run gave them made rapidocr_cls's file 4 KB larger than its input when its pruned weights stayed dense."""
    given = set(given)
    count = 0
    for node in all_nodes(model):
        if node.name in given:
            node.ClearField("name")  # not `= ""`: proto2 writes an explicitly empty field (2 bytes a node)
            count += 1
    return count


def find_prunable(model: onnx.ModelProto, *, with_macs: bool = True) -> Inventory:
    ix = ScopeIndex.of(model)
    shapes = _LazyShapes(model, now=with_macs)
    inv = Inventory()
    claimed: set[str] = set()
    # fed at run time: below IR 4 every initializer is listed as an input too (onnx's "light" zoo models: each Conv
    # weight a ConstantOfShape of such a shape; counted as data, the refusal named no weight that is computed)
    graph_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    for node in ix.nodes(model):
        facts = WEIGHT_OPS.get(node.op_type)
        if facts is None and _embedding(node, ix, shapes):
            if _tied_lookup(node.input[0], ix.uses(node.input[0]), ix, shapes):
                continue  # the output layer that reads the table too claims it (`_tied_lookup`)
            facts = LOOKUP_OPS[node.op_type]
        if facts is None or not facts.of(node):
            continue
        for index in facts.inputs:
            if index >= len(node.input) or not node.input[index]:
                continue
            traced = _trace_constant(node.input[index], ix, shapes, facts.axes(node, index, 3) != (None, None))
            if traced is None:
                if index == next((i for i in facts.inputs if i > 0), None) and not _from_data(
                        node.input[index], ix, graph_inputs):  # input 0 is the data operand; a product of two
                    inv.computed.append(_computed(node, index, ix, graph_inputs))  # activations is no weight
                continue
            source_name, via_nodes, problem = traced
            if source_name in claimed:
                continue
            claimed.add(source_name)
            tensor = ix.consts[source_name]
            size = int(np.prod(tensor.dims, dtype=np.int64))
            reason = problem or _refusal(tensor, source_name, node, index, via_nodes, ix, shapes)
            if reason:
                inv.skipped.append(Skipped(source_name, reason, size))
                continue
            inv.prunable.append(_weight(node, index, facts, source_name, tensor, via_nodes, ix, shapes))
    _explain_the_rest(ix, claimed, inv, {o.name for sc in scopes(model.graph) for o in sc.graph.output}, model)
    return inv


def attribute_parameters(model: onnx.ModelProto, *, least: int = 16) -> list[tuple[int, str]]:
    """Nodes that hold their parameters in attributes (ai.onnx.ml's LinearClassifier coefficients, SVM support
    vectors, tree thresholds), as (values, description), largest first: no pass can prune them. Of two as large, an
    attribute of one value throughout comes last (onnxmltools' 'nodes_hitrates', all 1.0, was named as LightGBM's
    parameters in sweeps 24, 28, 30 and 54, before its 'nodes_values')."""
    found = []
    for node in all_nodes(model):
        if node.op_type == "Constant":
            continue
        for a in node.attribute:
            n = (len(a.floats) if a.type == onnx.AttributeProto.FLOATS
                 else int(np.prod(a.t.dims, dtype=np.int64)) if a.type == onnx.AttributeProto.TENSOR else 0)
            if n >= least:
                domain = f" ({node.domain})" if node.domain not in ("", "ai.onnx") else ""
                values = a.floats if a.type == onnx.AttributeProto.FLOATS else numpy_helper.to_array(a.t).ravel()
                one = len(set(np.asarray(values, np.float64).tolist())) == 1  # a fill, no learned values
                found.append((n, f"{node.op_type} '{node.name}'{domain} holds {n:,} values in its attribute "
                                 f"'{a.name}'", (node.op_type in _PREPROCESSORS, one)))
    return [(n, text) for n, text, _ in sorted(found, key=lambda f: (-f[0], f[2]))]


# ai.onnx.ml ops that prepare features: of two attributes as large, the model's own (a LinearRegressor's
# coefficients) is named before a Scaler's offsets
_PREPROCESSORS = {"Scaler", "Normalizer", "Imputer", "Binarizer", "OneHotEncoder", "LabelEncoder", "CategoryMapper",
                  "FeatureVectorizer", "ArrayFeatureExtractor", "DictVectorizer", "CastMap"}


def _from_data(name: str, ix: ScopeIndex, graph_inputs, limit: int = 20000) -> bool:
    """Whether a computed value depends on a graph input: attention's Q·K^T reads K from the data, so its MatMul has
    no weight to speak of (sweep 13: a dynamically quantized encoder's refusal listed it as "a weight that is not a
    stored tensor"). A graph input itself is not "computed from" it: a weight fed at run time is said as such."""
    producer = ix.producers.get(name)
    if producer is None:
        return False
    stack, seen = list(producer.input), set()
    while stack and len(seen) < limit:
        n = stack.pop()
        if not n or n in seen:
            continue
        seen.add(n)
        if n in graph_inputs:
            return True
        p = ix.producers.get(n)
        if p is not None:
            stack.extend(p.input)
    return False


def _computed(node, index, ix: ScopeIndex, graph_inputs) -> str:
    """Where a weight op's weight input comes from when it is not a stored tensor, in words."""
    name = node.input[index]
    producer = ix.producers.get(name)
    origin = (f"{producer.op_type} '{producer.name}'" if producer is not None
              else "a graph input (fed at run time)" if name in graph_inputs else "a value computed at run time")
    return f"{node.op_type} '{node.name}' reads its weight '{name}' from {origin}"


def _weight(node, index, facts, source_name, tensor, via_nodes, ix: ScopeIndex, shapes) -> PrunableWeight:
    size = int(np.prod(tensor.dims, dtype=np.int64))
    rank = len(tensor.dims)
    if via_nodes:  # a Gather changes the rank: worth inferring shapes for; the others only if they are known
        lookup = shapes.get if any(v.op_type == "Gather" for v in via_nodes) else shapes.known
        rank = _consumer_rank(node.input[index], lookup, tensor)
    out_axis, in_axis = facts.axes(node, index, rank)
    out_axis, in_axis = _map_axes_through(via_nodes, out_axis, in_axis, len(tensor.dims), rank)
    uses = [] if via_nodes else [u for u in ix.uses(source_name) if u.op_type not in _SQUARE_READERS]  # layers
    if via_nodes and via_nodes[0].op_type == "Gather" and _expert_bank(source_name, ix.uses(source_name), ix, shapes):
        uses = ix.uses(source_name)  # an expert bank's Gathers, one matrix each: readers, not MACs (lookups)
    if via_nodes and via_nodes[0].op_type in PASS_THROUGH and _tied_lookup(source_name, ix.uses(source_name), ix,
                                                                            shapes):
        uses = ix.uses(source_name)  # a tied embedding's output layer through a Transpose: the table's readers
    # a bank a sample selects one matrix of (an expert): that matrix's MACs
    per_sample = next((int(tensor.dims[0]) for v in via_nodes
                       if v.op_type in ("Gather", "GatherND") and _per_sample_bank(v, ix, shapes)), 1)
    macs = _macs(node, size // per_sample, shapes, ix, index)
    multiplies = [u for u in uses if u.op_type not in LOOKUP_OPS]  # a lookup reads rows: no MACs
    if macs is not None and len(multiplies) > 1 and len({ix.scope_of.get(id(u), "") for u in uses}) == 1:
        macs *= len(multiplies)  # a tied weight: every reader multiplies (If branches: one runs, counted once)
    return PrunableWeight(
        name=source_name,
        node=node.name,
        op_type=node.op_type,
        input_index=index,
        shape=tuple(int(d) for d in tensor.dims),
        dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name,
        kind=facts.kind,
        out_axis=out_axis,
        in_axis=in_axis,
        via=tuple(v.op_type for v in via_nodes),
        source="constant" if source_name in ix.producers else "initializer",
        macs=macs,
        scope=ix.scope_of.get(id(node), ""),
        readers=max(1, len(uses)),
    )


_NARROW = {getattr(onnx.TensorProto, n): n for n in ("INT4", "UINT4", "FLOAT4E2M1", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ",
                                                     "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0")
           if hasattr(onnx.TensorProto, n)}


def _dequantizer(node: onnx.NodeProto, ix: ScopeIndex) -> str:
    """A DequantizeLinear whose weight no pass folds, in words that say which of QUANTIZED_HOW's cases it is:
    "block-wise (block_size 32) DequantizeLinear of INT4 values" (sweep 32: onnxruntime's MatMul4BitsQuantizer in
    QDQ format; the reason said "behind a DequantizeLinear" and listed every case no pass folds)."""
    stored = _NARROW.get(ix.consts[node.input[0]].data_type)
    block = next((a.i for a in node.attribute if a.name == "block_size"), 0)
    computed = [i for i in node.input[1:] if i and i not in ix.consts]
    where = "block-wise (block_size %d) " % block if block else ""
    what = f" of {stored} values" if stored else ""
    how = f" with computed {' and '.join('scales' if i == node.input[1] else 'zero points' for i in computed)}" \
        if computed else ""
    return f"{where}DequantizeLinear{what}{how}"


def _trace_constant(name, ix: ScopeIndex, shapes, channels: bool):
    """Follow layout-only ops (and a bank-selecting Gather) back to a constant: (name, via nodes, problem) or None.

    A Gather is followed only on a channel-carrying operand (`channels`) and only when its index is a scalar, so
    the constant is a table of whole weights (an embedding lookup is not a weight); a GatherND only when it selects
    one whole matrix a row (`_per_sample_bank`), also as a batched MatMul's first operand."""
    via = []
    while name not in ix.consts:
        node = ix.producers.get(name)
        if node is None and name in ix.carried and len(ix.uses(name)) == 1:
            name = ix.carried[name]  # a loop-invariant body input: the weight is the Loop's input (scopes.py)
            continue
        if node is None:
            return None
        if node.op_type == "DequantizeLinear" and node.input[0] in ix.consts:
            return node.input[0], via, f"behind a {_dequantizer(node, ix)} (quantized weight): {QUANTIZED_HOW}"
        if len(ix.consumers.get(name, [])) != 1:
            return None
        if node.op_type == "QuantizeLinear" and all(i in ix.consts for i in node.input if i):
            via.insert(0, node)  # a dynamically quantized weight's float stand-in (passes/quantized_weights.py)
            name = node.input[0]
            continue
        if node.op_type == "Gather" and channels and node.input[0] in ix.consts and (
                _scalar(node.input[1], ix, shapes) or _per_sample_bank(node, ix, shapes)):
            return node.input[0], [node] + via, None
        if node.op_type == "GatherND" and node.input[0] in ix.consts and _per_sample_bank(node, ix, shapes):
            return node.input[0], [node] + via, None
        if node.op_type not in PASS_THROUGH:
            return None
        via.insert(0, node)
        name = node.input[0]
    return name, via, None


def _embedding(node, ix: ScopeIndex, shapes) -> bool:
    """An embedding lookup: Gather on axis 0 of a float table of rank >= 2 (an initializer or Constant node) with
    ids computed from the data, not a constant and not a scalar (a scalar selects a bank of whole weights, which
    the layer that reads the bank claims), nor a bank of matrices a weight op reads per sample (`_per_sample_bank`),
    nor a bank of biases (`_bias_bank`)."""
    if node.op_type not in LOOKUP_OPS or (node.domain or "") not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    table = ix.consts.get(node.input[0])
    if table is None or table.data_type not in FLOAT_TYPES or len(table.dims) < 2:
        return False
    if _attr(node, "axis", 0) % len(table.dims) != 0 or node.input[1] in ix.consts:
        return False
    if _scalar(node.input[1], ix, shapes) or _bias_bank(node, ix) is not None:
        return False
    return not (_per_sample_bank(node, ix, shapes) and _weight_operand(node.output[0], ix))


def _per_sample_bank(node, ix: ScopeIndex, shapes) -> bool:
    """Gather on axis 0 of a float table of rank >= 3 with one id a sample ([N]): each sample selects a whole
    matrix, as a top-1 mixture of experts' [E, in, out] bank read by a batched MatMul (sweep 27: inventoried as an
    embedding table, 0 MACs where each sample multiplies in x out). Or GatherND (batch_dims 0) with one [1] index a
    sample ([N, 1]): transformers 5's batched_mm experts as torch's dynamo writes them, each token's expert matrices
    `gate_up_proj[expert_ids]` read by a batched MatMul (sweep 57: Mixtral's, 82% of its weights, "used by
    GatherND")."""
    table = ix.consts.get(node.input[0]) if node.op_type in ("Gather", "GatherND") and len(node.input) > 1 else None
    if table is None or len(table.dims) < 3 or _attr(node, "axis", 0) % len(table.dims) != 0:
        return False
    shape = shapes.get(node.input[1])
    if node.op_type == "GatherND":
        return (_attr(node, "batch_dims", 0) == 0 and shape is not None and len(shape) == 2
                and isinstance(shape[-1], (int, np.integer)) and int(shape[-1]) == 1)
    return shape is not None and len(shape) == 1


def _weight_operand(name, ix: ScopeIndex) -> bool:
    """`name` reaches a weight op's weight input through layout ops alone, read once on the way."""
    for _ in range(16):
        users = ix.consumers.get(name, [])
        if len(users) != 1:
            return False
        u = users[0]
        facts = WEIGHT_OPS.get(u.op_type)
        if facts is not None and facts.of(u):
            return any(i < len(u.input) and u.input[i] == name for i in facts.inputs if i > 0)
        if u.op_type not in PASS_THROUGH:
            return False
        name = u.output[0]
    return False


def _bias_bank(node, ix: ScopeIndex) -> str | None:
    """The Add that adds a Gather's rows (axis 0 of a float [E, C] table, ids from the data) to a weight op's
    output, when every reader of those rows is such an Add: a bias a sample selects (a mixture of experts' [E, out]
    biases, sweep 27: pruned to 5% as if an embedding table). Biases are not pruned (Deep Compression's rule)."""
    table = ix.consts.get(node.input[0]) if node.op_type == "Gather" and node.input else None
    if table is None or len(table.dims) != 2 or _attr(node, "axis", 0) % 2 != 0:
        return None
    readers = ix.consumers.get(node.output[0], [])
    if not readers or any(r.op_type != "Add" for r in readers):
        return None
    for r in readers:
        other = [i for i in r.input if i != node.output[0]]
        producer = ix.producers.get(other[0]) if len(other) == 1 else None
        while producer is not None and producer.op_type in PASS_THROUGH:
            producer = ix.producers.get(producer.input[0])
        if producer is None or producer.op_type not in WEIGHT_OPS:
            return None
    r = readers[0]
    return f"a bias bank: Gather '{node.name}' selects its rows per sample and Add '{r.name}' adds them to a layer's output"


def _scalar(name, ix: ScopeIndex, shapes) -> bool:
    if name in ix.consts:
        return len(ix.consts[name].dims) == 0
    shape = shapes.get(name)
    return shape is not None and len(shape) == 0


class _LazyShapes:
    """Inferred shapes, computed on first use (a Gather bank's index rank, a weight behind a layout op) or at once
    when MACs are wanted; without MACs most models never pay for shape inference."""

    def __init__(self, model: onnx.ModelProto, now: bool):
        self._model = model
        self._shapes = infer_shapes(model) if now else None
        self._probes = None

    def get(self, name, default=None):
        if self._shapes is None:
            self._shapes = infer_shapes(self._model)
        return self._shapes.get(name, default)

    def known(self, name, default=None):
        """The shape if inference already ran, without running it."""
        return default if self._shapes is None else self._shapes.get(name, default)

    def rows_a_sample(self, name) -> int | None:
        """Axis 0 of `name` a sample, from inference at a batch of 1 and of 2 (run once, on first use): d(2) = 2 d(1)
        holds when the rows grow with the batch; None when either is unknown or they do not."""
        if self._probes is None:
            self._probes = [at_batch(self._model, b) or {} for b in (1, 2)]
        one, two = (p.get(name) for p in self._probes)
        if not one or not two or one[0] is None or two[0] is None or two[0] != 2 * one[0] or one[0] < 1:
            return None
        return one[0]


def _refusal(tensor, name, node, index, via_nodes, ix: ScopeIndex, shapes=None) -> str | None:
    if tensor.data_type not in FLOAT_TYPES:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).name
        if node.op_type in QUANTIZED_WEIGHT_OPS:  # an integer weight the load step could not fold
            return f"integer dtype (quantized weight of {node.op_type} '{node.name}'): {QUANTIZED_HOW}"
        return f"integer dtype ({dtype}) weight of {node.op_type} '{node.name}'"
    if name in ix.reused:
        return "its name is defined in several subgraphs; rename the tensors to prune it"
    first = via_nodes[0] if via_nodes else node
    users = ix.consumers.get(name, [])
    if len(users) > 1 and not (_same_use_in_separate_bodies(name, users, first, ix, shapes)
                               or _tied(name, users, first, ix) or _shared_table(name, users, ix, shapes)
                               or _tied_lookup(name, users, ix, shapes)
                               or _layer_and_its_square(name, users, first, ix)
                               or _expert_bank(name, users, ix, shapes)):
        others = ", ".join(_use(u, ix) for u in users if u is not first)
        return (f"read by {_use(first, ix)} and by {others}: used in different ways (a weight several nodes read is "
                "pruned only when each reads it alike)")
    if len(tensor.dims) < 1:
        return "scalar"
    return None


def _use(node, ix: ScopeIndex) -> str:
    """A reader of a weight in words: the op and name, and the weight op a layout op feeds (a tied embedding read
    as a table by a Gather and, through a Transpose, as the output layer's weight by a MatMul)."""
    said = f"{node.op_type} '{node.name}'"
    if node.op_type in PASS_THROUGH and node.output:
        after = ix.consumers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type in WEIGHT_OPS:
            said += f" (into {after[0].op_type} '{after[0].name}')"
    return said


def _same_use_in_separate_bodies(name, users, first, ix: ScopeIndex, shapes=None) -> bool:
    """Several readers, all inside bodies, each the same op reading `name` as the same input, at most one per
    body (If branches: one runs): a weight op, or an embedding lookup in each (a Gather of the table with ids from
    the data; sweep 13: a table both branches read was "used in different ways"). A reader in the main graph could
    have its channels sliced: never shared then."""
    if first.op_type in LOOKUP_OPS:
        if shapes is None or not all(_embedding(u, ix, shapes) for u in users):
            return False
    elif first.op_type not in WEIGHT_OPS:
        return False
    scopes = [ix.scope_of.get(id(u), "") for u in users]
    if "" in scopes:
        return False
    same_use = all(u.op_type == first.op_type and list(u.input).index(name) == list(first.input).index(name)
                   for u in users)
    return same_use and len(set(scopes)) == len(scopes)


def _tied(name, users, first, ix: ScopeIndex) -> bool:
    """A tied weight: several readers in one graph, each the same Conv/ConvTranspose/Gemm/MatMul reading `name`
    directly as the same input with the same attributes (`tie_use`: a module applied several times, a legacy
    export's RNN cell unrolled over time, a siamese branch, an exporter's bit-identical copies merged by
    passes/merge_copies.py). One mask serves every reader; the sensitivity scan measures all of them at once (the
    weight's descendants), the layer-wise refit pools their rows, and dead-neuron removal leaves it alone (channel
    groups block a shared tensor). Recurrent W/R matrices and chains through layout ops stay refused."""
    scopes = {ix.scope_of.get(id(u), "") for u in users}
    if len(scopes) != 1 and not _main_and_loops(scopes):
        return False
    uses = {tie_use(u, name) for u in users}
    return (len(uses) == 1 and None not in uses) or (len(scopes) == 1 and (_tied_transposed(name, users, ix)
                                                                             or _tied_kernel(name, users)))


def second_operand(node: onnx.NodeProto, tensor: str) -> bool:
    """Does `node`, a Gemm/MatMul of the standard domain, read `tensor` once, as its second operand (its weight)?"""
    inputs = list(node.input)
    return (node.op_type in ("Gemm", "MatMul") and (node.domain or "") in ("", "ai.onnx")
            and inputs.count(tensor) == 1 and inputs.index(tensor) == 1)


def _tied_transposed(name, users, ix: ScopeIndex) -> bool:
    """A matrix several Gemm/MatMul nodes of one graph read as their second operand, some as W and some as W^T
    (transB, or a Transpose in front, as torch's dynamo writes it): a tied autoencoder's decoder,
    F.linear(h, enc.weight.t()) (sweep 33: 99% of its weights were "used in different ways"). A mask is elementwise,
    so one mask serves every reader; the layer-wise refit leaves the weight as pruned (its readers' rows are not
    alike: reconstruct._twins says so) and channel groups block a shared tensor."""
    for u in users:
        if u.op_type == "Transpose" and (u.domain or "") in ("", "ai.onnx") and _attr(u, "perm", [1, 0]) == [1, 0]:
            after = ix.consumers.get(u.output[0], [])
            if not after or not all(second_operand(a, u.output[0]) for a in after):
                return False
        elif not second_operand(u, name):
            return False
    return True


def _tied_lookup(name, users, ix: ScopeIndex, shapes) -> bool:
    """An output layer tied to the input embedding: a table E [V, d] that Gathers of one graph read as an embedding
    (axis 0, ids from the data) and Gemm/MatMul nodes read as their second operand, as E^T (transB, or a Transpose in
    front: torch's dynamo writes `head.weight = emb.weight` so) or as E. Language models tie them (GPT-2, T5, a
    BERT's masked-LM head), and the table is their largest weight (session 43: a dynamo-exported char LM's was
    "used in different ways" and kept whole). A mask is elementwise, so one mask serves every reader. The output
    layer claims it: a weight op's kind (every row is multiplied by it, so the data reads every row), its MACs; the
    layer-wise refit leaves it as pruned (it would move the table's rows too: reconstruct._twins says so) and
    channel groups block a shared tensor."""
    if shapes is None or len(users) < 2 or len({ix.scope_of.get(id(u), "") for u in users}) != 1:
        return False
    lookups = [u for u in users if u.op_type in LOOKUP_OPS and list(u.input).count(name) == 1 and u.input[0] == name
               and _embedding(u, ix, shapes)]
    linear = [u for u in users if all(u is not v for v in lookups)]
    return bool(lookups) and bool(linear) and _tied_transposed(name, linear, ix)


def _tied_kernel(name, users) -> bool:
    """A kernel several Conv/ConvTranspose nodes of one graph read directly as their weight, whatever their
    attributes: a tied convolutional autoencoder, whose decoder is F.conv_transpose2d(h, enc.weight), or TridentNet's
    one kernel applied at dilations 1, 2 and 3 (sweep 34: 35% and 91% of their weights were "used in different
    ways"). The tensor is the same to every reader; a mask is elementwise, so one mask serves them all. The layer-wise
    refit leaves it as pruned where its readers differ (reconstruct._twins says so) and channel groups block a
    shared tensor."""
    for u in users:
        inputs = list(u.input)
        if (u.op_type not in ("Conv", "ConvTranspose") or (u.domain or "") not in ("", "ai.onnx")
                or inputs.count(name) != 1 or inputs.index(name) != 1):
            return False
    return len(users) > 1


_SQUARE_READERS = ("Pow", "Mul", "Abs")  # element-wise ops of a weight and constants: W ** 2, W * W, |W|


def _layer_and_its_square(name, users, first, ix: ScopeIndex) -> bool:
    """A kernel one Conv/ConvTranspose/Gemm/MatMul reads directly as its weight, which element-wise ops of it and
    constants alone read too (W ** 2, W * W, |W|: a norm of the kernel computed in the graph). StyleGAN2's modulated
    convolution demodulates by rsqrt(s^2 @ sum(W^2)), which torch legacy exports as Pow(W, 2) -> ReduceSum beside the
    Conv (sweep 49: 87% of its weights were "used in different ways"). A mask is elementwise, so both read the pruned
    kernel; the layer-wise refit leaves it as pruned (reconstruct._twins: they read it differently) and channel groups
    block a shared tensor."""
    if tie_use(first, name) is None or len({ix.scope_of.get(id(u), "") for u in users}) != 1:
        return False
    others = [u for u in users if u is not first]
    return bool(others) and all(u.op_type in _SQUARE_READERS and (u.domain or "") in ("", "ai.onnx")
                                and all(i == name or i in ix.consts for i in u.input) for u in others)


def _expert_bank(name, users, ix: ScopeIndex, shapes) -> bool:
    """A bank T [E, ...] of whole matrices that several Gathers of one graph read, each on axis 0 with a scalar index
    (one matrix each), each matrix reaching the same weight input of the same op through the same layout ops: a
    mixture of experts' stacked weights as torch's legacy exporter unrolls HuggingFace transformers 5's eager experts
    loop (`F.linear(x, self.gate_up_proj[expert_idx])` for each expert the example hit, the index computed at run
    time; sweep 57: Mixtral's experts, 82% of its weights, were "used in different ways"). A mask is elementwise, so
    one mask serves every matrix; the layer-wise refit leaves the bank as pruned (reached through a Gather) and
    channel groups block a shared tensor."""
    table = ix.consts.get(name)
    if shapes is None or table is None or len(table.dims) < 3 or len(users) < 2:
        return False
    if len({ix.scope_of.get(id(u), "") for u in users}) != 1:
        return False
    uses = set()
    for u in users:
        if (u.op_type != "Gather" or (u.domain or "") not in ("", "ai.onnx") or list(u.input).count(name) != 1
                or u.input[0] != name or _attr(u, "axis", 0) % len(table.dims) != 0
                or not _scalar(u.input[1], ix, shapes)):
            return False
        uses.add(_slice_use(u.output[0], ix))
    return len(uses) == 1 and None not in uses


def _slice_use(name, ix: ScopeIndex) -> tuple | None:
    """The layout ops (types and attributes) one Gather's matrix passes through, read once each, and how the weight op
    at their end reads it (`tie_use`); None when it reaches no weight op so."""
    chain = []
    for _ in range(16):
        users = ix.consumers.get(name, [])
        if len(users) != 1:
            return None
        node = users[0]
        if node.op_type not in PASS_THROUGH:
            use = tie_use(node, name)
            return None if use is None else (tuple(chain), use)
        chain.append((node.op_type, _attrs_key(node)))
        name = node.output[0]
    return None


def _main_and_loops(scopes: set[str]) -> bool:
    """Readers in the main graph and in Loop bodies only (no If branch: one branch runs, and its reader would tie
    to a main-graph one that always runs): a weight a Loop body reads from outside besides a main-graph layer
    (tf2onnx's Keras LSTM behind Masking runs the first time step outside its while loop; passes/loop_invariants.py
    lets the body read the weight it carried)."""
    return "" in scopes and all(s == "" or (s.startswith("Loop ") and "If " not in s) for s in scopes)


def _shared_table(name, users, ix: ScopeIndex, shapes) -> bool:
    """An embedding table several Gathers of one graph read alike (axis 0, ids from the data): a seq2seq model's
    shared embedding, read by its encoder and its decoder (sweep 17: T5's was "used in different ways"). One table,
    one mask; rows are read, not multiplied, so nothing else changes."""
    if shapes is None or len(users) < 2 or len({ix.scope_of.get(id(u), "") for u in users}) != 1:
        return False
    if any(u.op_type != "Gather" or list(u.input).count(name) != 1 or u.input[0] != name for u in users):
        return False
    return len({_attrs_key(u) for u in users}) == 1 and all(_embedding(u, ix, shapes) for u in users)


def tie_use(node: onnx.NodeProto, name: str) -> tuple | None:
    """How `node` reads `name` as a weight that can be tied: (op type, input index, attributes) when it is a
    Conv/ConvTranspose/Gemm/MatMul of the standard domain reading `name` once, as one of its weight inputs; else
    None. The readers of one tied weight all give the same tuple (`_tied`; the load passes merge_copies.py and
    bypass_identity.py make tied weights by this rule)."""
    facts = WEIGHT_OPS.get(node.op_type)
    if facts is None or facts.kind == "recurrent" or (node.domain or "") not in ("", "ai.onnx"):
        return None
    inputs = list(node.input)
    if inputs.count(name) != 1 or inputs.index(name) not in facts.inputs:
        return None
    return node.op_type, inputs.index(name), _attrs_key(node)


def _attrs_key(node: onnx.NodeProto) -> tuple:
    """A node's attributes as a comparable key: two readers with equal keys read a weight alike."""
    return tuple(sorted(a.SerializeToString() for a in node.attribute))


def _explain_the_rest(ix: ScopeIndex, claimed, inv: Inventory, outputs: set[str] = frozenset(),
                      model: onnx.ModelProto | None = None) -> None:
    """Why each constant no layer claimed is not a weight; `outputs`: names a graph or body returns."""
    shapes: list = []  # onnx's inferred shapes, once, where a weight computed from constants needs its size
    for name, tensor in ix.consts.items():
        if name in claimed:
            continue
        size = int(np.prod(tensor.dims, dtype=np.int64))
        users = ix.consumers.get(name, [])
        if size < 2:  # a scalar constant (an epsilon, a scale): no weight, not worth a line
            continue
        if not users and name in outputs:  # a constant a branch returns as is (torch dynamo's EmbeddingBag: the
            # zero row of an empty bag, 'row_result'); it was "used by nothing" (sweep 28)
            inv.skipped.append(Skipped(name, "a constant a graph or If/Loop/Scan body returns as its output, read by "
                                             "no layer", size))
            continue
        reason = _grown_weight(name, tensor, ix, model, shapes) or _why_not(name, tensor, users, ix)
        if reason:
            inv.skipped.append(Skipped(name, reason, size))


def _grown_weight(name: str, tensor, ix: ScopeIndex, model, shapes: list) -> str | None:
    """A float constant that nodes compute, with other constants alone, into a layer's weight holding more values
    than they store (a quaternion layer's Hamilton product assembled in forward: each stored value read four times,
    sweep 44). constant_weights stores a computed weight as the constant it is only where the file does not grow, so
    this one stays computed and is not pruned; said so, not "used by Split". Every stored tensor the weight is
    computed from is said so, also one a node combines with another computed from constants: sweep 46's p4 lifting
    kernel, Concat(w, rot(w), ...) with legacy's folded transpose of w, said it for the transpose and "used by Concat"
    for w."""
    if tensor.data_type not in FLOAT_TYPES or model is None:
        return None
    chain, nodes, queue, fixed = {name}, [], [name], {}
    while queue and len(nodes) <= 64:
        for u in ix.consumers.get(queue.pop(0), []):
            facts = WEIGHT_OPS.get(u.op_type)
            at = [k for k in (facts.inputs if facts is not None and facts.of(u) else ()) if k < len(u.input)
                  and u.input[k] in chain and u.input[k] != name]
            if at:
                if not shapes:
                    shapes.append(infer_shapes(model))
                dims = shapes[0].get(u.input[at[0]])
                read = _stored_sources(u.input[at[0]], ix)
                stored = sum(int(np.prod(ix.consts[i].dims, dtype=np.int64)) for i in read
                             if ix.consts[i].data_type in FLOAT_TYPES) or None
                if not dims or None in dims or stored is None or int(np.prod(dims)) <= stored:
                    return None
                ops = "/".join(sorted({n.op_type for n in nodes}))
                return (f"computed in the graph ({ops}) into the weight of {u.op_type} '{u.name}', "
                        f"{int(np.prod(dims)):,} values from {stored:,} stored: stored as that constant it would grow "
                        "the file, so it stays computed and is not pruned")
            if u.op_type in SUBGRAPH_OPS or any(i and i not in chain and not _from_constants(i, ix, fixed)
                                                for i in u.input) or set(u.output) <= chain:
                continue
            nodes.append(u)
            chain.update(u.output)
            queue.extend(u.output)
    return None


def _from_constants(t: str, ix: ScopeIndex, memo: dict[str, bool], depth: int = 0) -> bool:
    """Whether `t` is a constant or nodes compute it from constants alone (no graph input, no If/Loop/Scan)."""
    if t in ix.consts:
        return True
    if t not in memo:
        n = ix.producers.get(t)
        memo[t] = bool(n is not None and depth < 64 and n.op_type not in SUBGRAPH_OPS and any(n.input)
                       and all(_from_constants(i, ix, memo, depth + 1) for i in n.input if i))
    return memo[t]


def _stored_sources(t: str, ix: ScopeIndex) -> set[str]:
    """The constants a tensor computed from constants alone is computed from."""
    seen, out, queue = set(), set(), [t]
    while queue:
        x = queue.pop()
        if x in seen:
            continue
        seen.add(x)
        if x in ix.consts:
            out.add(x)
        elif x in ix.producers:
            queue.extend(i for i in ix.producers[x].input if i)
    return out


# named as normalizations in inspect's "not prunable" list only (no channel rule reads this): torch dynamo's nn.RMSNorm
# at opset 23 read "not a weight of Conv/... (used by RMSNormalization)" (sweep 20)
_LISTED_AS_NORMS = frozenset({"RMSNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"})
# onnxruntime's fused kernels (com.microsoft) that take a layer's bias or a normalization's gamma/beta (sweep 28: every
# one read "not a weight of Conv/... (used by SkipLayerNormalization)"): input index -> what it is
_FUSED_VECTORS = {"SkipLayerNormalization": {2: "normalization parameter", 3: "normalization parameter",
                                             4: "a layer's bias, fused into"},
                  "SkipSimplifiedLayerNormalization": {2: "normalization parameter", 3: "a layer's bias, fused into"},
                  "EmbedLayerNormalization": {5: "normalization parameter", 6: "normalization parameter"},
                  "BiasGelu": {1: "a layer's bias, fused into"}, "FastGelu": {1: "a layer's bias, fused into"},
                  "BiasAdd": {1: "a layer's bias, fused into"}}


def _quantized_lookup(node, name, ix: ScopeIndex) -> bool:
    """`node` is a Gather of rows of the integer table `name` (axis 0) whose rows only DequantizeLinear reads (sweep
    26: all-MiniLM-L6-v2 through quantize_dynamic, its 30522x384 word table half the file, was in neither of
    inspect's lists)."""
    if node.op_type != "Gather" or not node.input or node.input[0] != name or _attr_int(node, "axis", 0) != 0:
        return False
    readers = ix.consumers.get(node.output[0], [])
    return bool(readers) and all(r.op_type == "DequantizeLinear" and r.input[0] == node.output[0] for r in readers)


def _attr_int(node, key: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == key), default)


_INTEGER_WEIGHT_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4,
                                   onnx.TensorProto.UINT4})  # what a quantized weight is stored as (not an index)


def _why_not(name, tensor, users, ix: ScopeIndex) -> str | None:
    if tensor.data_type not in FLOAT_TYPES:
        for u in users:
            k = QUANTIZED_WEIGHT_OPS.get(u.op_type, ())
            if any(i < len(u.input) and u.input[i] == name for i in (k if isinstance(k, tuple) else (k,))):
                return f"integer dtype (quantized weight of {u.op_type} '{u.name}'): {QUANTIZED_HOW}"
            if _quantized_lookup(u, name, ix):
                return (f"an integer-quantized embedding table: Gather '{u.name}' reads its rows, a DequantizeLinear "
                        "after it makes them float (onnxruntime's quantize_dynamic writes this); no pass folds that "
                        "form: prune the float model, then quantize the pruned one")
        fused = next((u for u in users if u.domain == "com.microsoft"), None)
        if fused is not None and len(tensor.dims) >= 2 and tensor.data_type in _INTEGER_WEIGHT_TYPES:
            # quantize_dynamic of a transformer-optimized model (sweep 28): QAttention's int8 QKV and
            # QEmbedLayerNormalization's int8 tables were in neither of inspect's lists
            return (f"an integer-quantized weight of onnxruntime's com.microsoft.{fused.op_type} '{fused.name}', which "
                    "no pass folds back to float: prune the float model (before onnxruntime fuses and quantizes it), "
                    "then quantize the pruned one")
        return None  # shapes, axes, indices: not weights, not worth a line
    if len(users) == 1 and users[0].op_type == "Loop":  # carried unchanged into the body: said by what reads it there
        inner = [b for b, outer in ix.carried.items() if outer == name]  # (sweep 47's Keras ops.while_loop: the body
        readers = [r for b in inner for r in ix.consumers.get(b, []) if not set(r.output) & ix.pass_back]  # Dense's
        if readers:  # bias was "not a weight ... (used by Loop)")
            why = _why_not(inner[0], tensor, readers, ix)
            return why and f"carried unchanged into Loop '{users[0].name}': {why}"
    for u in users:
        if opfacts.is_bias(u, name):
            return f"bias of {u.op_type} '{u.name}'"
        if u.domain == "com.microsoft" and u.op_type in _FUSED_VECTORS and len(tensor.dims) <= 1:
            what = next((w for k, w in _FUSED_VECTORS[u.op_type].items() if k < len(u.input) and u.input[k] == name),
                        None)
            if what is not None:
                return f"{what} {'of ' if what.startswith('norm') else ''}onnxruntime's {u.op_type} '{u.name}'"
        if u.op_type in NORM_OPS or u.op_type in _LISTED_AS_NORMS:
            return f"normalization parameter of {u.op_type} '{u.name}'"
        if u.op_type == "Add":
            return f"added by Add '{u.name}' (a bias, or a learned position table)"
        if WEIGHT_OPS.get(u.op_type) is not None and WEIGHT_OPS[u.op_type].kind == "recurrent":
            return f"bias, state or peephole of {u.op_type} '{u.name}'"
    if len(users) > 1 and not any(u.op_type in WEIGHT_OPS or u.op_type in PASS_THROUGH for u in users):
        # a rotary embedding's cos/sin tables, read by eight Muls, were "shared by ..." as if a weight (sweep 24)
        kinds = "/".join(sorted({u.op_type for u in users}))
        return f"not a weight of {_FLOAT_WEIGHT_OPS} (used by {len(users)} nodes: {kinds})"
    if len(users) > 1:
        return "shared by " + ", ".join(f"'{u.name}'" for u in users)
    op = users[0].op_type if users else "nothing"
    if users and users[0].domain == "com.microsoft.nchwc":  # sweep 28: "not a weight of Conv/... (used by Conv)"
        return (f"a weight of onnxruntime's com.microsoft.nchwc.{op} '{users[0].name}', stored in the blocked (NCHWc) "
                "layout onnxruntime writes for this machine's CPU when it saves a model optimized at ORT_ENABLE_ALL: "
                "prune the model onnxruntime was given, then let onnxruntime optimize the pruned one")
    if users and users[0].domain == "com.microsoft" and len(tensor.dims) >= 2:  # a matrix in a fused kernel of
        # onnxruntime.transformers.optimizer (Attention's QKV, EmbedLayerNormalization's tables, FusedMatMul)
        return (f"a weight of onnxruntime's fused com.microsoft.{op} '{users[0].name}', which these passes do not "
                "take apart: prune the model before onnxruntime fuses it (its transformer optimizer, or a session "
                "that saves its optimized model), then optimize the pruned one")
    if op == "Gather":
        return _bias_bank(users[0], ix) or (
            f"not a weight of {_FLOAT_WEIGHT_OPS}, nor a table Gather reads with ids on axis 0 (used by Gather)")
    return f"not a weight of {_FLOAT_WEIGHT_OPS} (used by {op})"


# The ops whose float weights are pruned, in words (the integer ops of dynamic quantization go without saying).
_FLOAT_WEIGHT_OPS = "/".join(op for op, f in WEIGHT_OPS.items() if op not in QUANTIZED_WEIGHT_OPS and not f.domain)


def _map_axes_through(via_nodes, out_axis, in_axis, storage_rank, consumer_rank):
    """Map consumer-space axes back to the constant's storage axes through the pass-through chain."""
    for v in reversed(via_nodes):
        if v.op_type == "Transpose":
            perm = _attr(v, "perm", None) or list(reversed(range(storage_rank)))
            out_axis = perm[out_axis] if out_axis is not None else None
            in_axis = perm[in_axis] if in_axis is not None else None
        elif v.op_type in ("Identity", "Cast", "QuantizeLinear"):
            continue
        elif v.op_type in ("Gather", "GatherND") and consumer_rank == storage_rank and (
                _attr(v, "axis", 0) % storage_rank == 0):
            continue  # one id a sample: the bank axis becomes the batch axis, the others line up
        elif v.op_type == "Gather" and consumer_rank == storage_rank - 1:  # a scalar index drops the bank axis
            g = _attr(v, "axis", 0) % storage_rank
            out_axis = None if out_axis is None else out_axis + (out_axis >= g)
            in_axis = None if in_axis is None else in_axis + (in_axis >= g)
        else:  # Reshape/Squeeze/Unsqueeze/Flatten: the axes no longer line up one to one
            return None, None
    return out_axis, in_axis


def _consumer_rank(name, lookup, tensor):
    shape = lookup(name)
    return len(shape) if shape is not None else len(tensor.dims)


def _macs(node, size, lazy, ix: ScopeIndex, index: int = 1) -> int | None:
    """Multiply-adds a sample of the weight at input `index` of `node`."""
    if node.op_type in LOOKUP_OPS:
        return 0  # rows read, not multiplied
    shapes = {n: lazy.known(n) for n in (*node.input, *node.output) if lazy.known(n) is not None}
    out = shapes.get(node.output[0]) if node.output else None
    op = opfacts.MULTIPLIES_AS.get(node.op_type, node.op_type)
    if out is None and op in ("MatMul", "Gemm") and index == 1 and not _attr(node, "transA", 0) \
            and shapes.get(node.input[0]):
        # a fused product (com.microsoft FusedMatMul, FusedGemm) whose output onnx's shape inference does not give:
        # its rows are its input's
        out = [*shapes[node.input[0]][:-1], None]
    if out is None and op == "Conv" and index == 1 and shapes.get(node.input[0]):
        weight = ix.consts.get(node.input[1])  # a fused Conv (com.microsoft FusedConv): from its input
        out = _conv_out(node, shapes[node.input[0]], weight.dims[0] if weight is not None and weight.dims else None)
    if op in ("LSTM", "GRU", "RNN"):  # W and R run once a time step (X: [T, N, I], layout 1: [N, T, I])
        x = shapes.get(node.input[0])
        steps = None if not x or len(x) != 3 else x[1] if _attr(node, "layout", 0) else x[0]
        return size * steps if steps else None
    if out is None:
        return None
    if op == "MatMul" and index == 0 and len(out) > 2:
        # W [M, K] @ x [N, ..., K, C] -> [N, ..., M, C]: each weight is used once a column, on every axis but its
        # own rows and the batch (an MLP-Mixer's token mixing, torch dynamo: 28.7K MACs counted for 57.3K)
        rest = [d for i, d in enumerate(out) if i != len(out) - 2]
        if sum(d is None for d in rest) == 1:
            return size * int(np.prod([d for d in rest if d is not None], dtype=np.int64))
        return None
    if op == "Gemm" or (op == "MatMul" and len(out) == 2):
        return size * _rows_per_sample(node, out, lazy, ix)
    weight = ix.consts.get(node.input[index]) if op == "MatMul" and index == 1 else None
    if weight is not None and 2 < len(weight.dims) <= len(out):
        # x [..., *b, R, K] @ W [*b, K, M]: a matrix per group (torch.baddbmm, sweep 42's per-position capsule
        # transform), each used by its own group's rows alone: W's group axes are not rows
        rows = [d for i, d in enumerate(out[:-1]) if not len(out) - len(weight.dims) <= i < len(out) - 2]
        if sum(d is None for d in rows) == 1:
            return size * int(np.prod([d for d in rows if d is not None], dtype=np.int64))
    if op == "MatMul" and len(out) > 2 and sum(d is None for d in out[:-1]) == 1:
        # one unknown axis is the batch, wherever it is (a seq-first transformer: [S, N, H])
        return size * int(np.prod([d for d in out[:-1] if d is not None], dtype=np.int64))
    if any(d is None for d in out[1:]):
        return None
    if op == "Conv":
        return size * int(np.prod(out[2:], dtype=np.int64))
    if op == "ConvTranspose":
        inp = shapes.get(node.input[0])
        if inp is None or any(d is None for d in inp[2:]):
            return None
        return size * int(np.prod(inp[2:], dtype=np.int64))
    if op == "MatMul":
        return size * int(np.prod(out[1:-1], dtype=np.int64)) if len(out) >= 2 else size
    return None


def _conv_out(node, inp, channels) -> list | None:
    """A Conv's output shape from its input's and its attributes (explicit pads or auto_pad), None where a spatial
    size or the kernel's is unknown: what onnx's shape inference gives a Conv and not com.microsoft's FusedConv."""
    kernel = list(_attr(node, "kernel_shape", []))
    spatial = list(inp[2:])
    if not kernel or len(kernel) != len(spatial) or any(d is None for d in spatial):
        return None
    k = len(kernel)
    strides, dilations = list(_attr(node, "strides", [1] * k)), list(_attr(node, "dilations", [1] * k))
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    pads = conv_pads(auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad, spatial, kernel, strides,
                     dilations, _attr(node, "pads", None))
    sizes = [(d + pads[i] + pads[i + k] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
             for i, d in enumerate(spatial)]
    return [inp[0], channels, *sizes] if all(d > 0 for d in sizes) else None


ROW_CHAIN = 16  # ops walked back from a 2-D product to the Reshape/Flatten that made its rows
ROW_KEEPING = opfacts.ELEMENTWISE_UNARY | opfacts.ARITHMETIC | opfacts.NORM_OPS | opfacts.SOFTMAX_OPS | {
    "Gemm", "MatMul", "Identity", "Cast", "Dropout",
    "QuantizeLinear", "DequantizeLinear"}  # an activation's Q/DQ pair (quantize_static's QDQ format; sweep 24)


def _rows_per_sample(node, out, lazy, ix: ScopeIndex) -> int:
    """Rows of a 2-D product (Gemm, 2-D MatMul) per sample: 1 when its first axis is the batch, or when that is
    all that is known; an exporter that flattened [N, S, ...] to [N·S, K] before it (a Reshape or Flatten whose
    input has one symbolic axis, the batch, on any axis, and known others) reads prod(S, ...) / K rows a sample.
    A GPT-2 (torch dynamo) counted 12.3K MACs for 786K: one row, not 64 positions."""
    if out[0] is not None:
        return 1
    name = node.input[0]
    for _ in range(ROW_CHAIN):  # back over ops that keep the rows (another product, an activation, a norm)
        flat = ix.producers.get(name)
        a = lazy.known(name)
        if flat is None or not flat.input or not a or len(a) != 2 or a[0] is not None:
            return 1
        if flat.op_type in ("Reshape", "Flatten"):
            break
        if flat.op_type not in ROW_KEEPING:
            return 1
        name = flat.input[0]
    else:
        return 1
    src = lazy.known(flat.input[0])
    if not a[1] or not src:
        return 1
    if len(src) < 2 or sum(d is None for d in src) != 1:  # exactly one unknown axis: the batch, on any axis
        # several unknown (a Reshape of a Reshape whose target was computed from Shape ops: torch legacy's
        # nn.MultiheadAttention before out_proj): the product's own rows at a batch of 1 and of 2
        return lazy.rows_a_sample(node.input[0]) or 1 if sum(d is None for d in src) > 1 else 1
    per_sample = int(np.prod([d for d in src if d is not None], dtype=np.int64))
    return per_sample // a[1] if per_sample % a[1] == 0 and per_sample >= a[1] else 1


def _attr(node, name, default):
    return opfacts.attr(node, name, default)


def zeros_of(model: onnx.ModelProto, inventory: Inventory) -> dict[str, int]:
    """The zeros each prunable weight of `model` already holds (a model pruned before; a quantized weight at its zero
    point, once folded): what a ratio counted from the input's own nonzeros leaves out. Weights without any: absent."""
    tensors = constant_tensors(model)
    zeros = {}
    for w in inventory.prunable:
        if w.name in tensors:
            k = w.size - int(np.count_nonzero(numpy_helper.to_array(tensors[w.name])))
            if k:
                zeros[w.name] = k
    return zeros


def weight_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    """The values of a prunable weight, initializer or Constant node output, in any scope."""
    return numpy_helper.to_array(all_constants(model.graph)[name])


def constant_tensors(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Every dense constant (initializer or Constant node value) of the model and its bodies, by name."""
    return all_constants(model.graph)
