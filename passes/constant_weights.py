"""A layer's weight that nodes compute from constants alone is read as the one constant it is (a load pass).

torch.jit.script'ed models keep what tracing would fold: silero-vad's decoder LSTM reads its W, R and B as

    weight_ih -> Slice [0:128], Slice [384:512], Slice [128:384] -> Concat -> Unsqueeze -> LSTM W

(torch's gate order i, f, g, o put into ONNX's i, o, f, c), inside If branches, once per branch. The inventory
looks for a weight where the layer reads it, so 132K of silero_vad_op15's 307K weights (264K of silero_vad's 541K,
two sample rates) were "not a weight of Conv/ConvTranspose/Gemm/MatMul/LSTM/GRU/RNN (used by 6 nodes: Slice)",
never pruned, and every ratio counted them kept. onnxruntime folds such chains when it loads the model anyway.

Rules: a weight or bias input of a WEIGHT_OPS node (in the main graph or any If/Loop/Scan body) that nodes compute from
initializers and Constant nodes alone (no graph or body input, except a Loop body input every iteration hands back
unchanged from an initializer, which is that initializer: tf2onnx's ConvLSTM2D kernel), through at most MAX_CHAIN
standard-domain nodes without bodies and no random op, is evaluated once (onnx's reference evaluator where the chain
only moves values, EXACT_OPS; onnxruntime where it computes, as weight_norm's g * v / ||v||, so that the stored weight
holds the bits the input model computes in onnxruntime) and becomes a main-graph initializer that the layer reads
instead (bodies read outer names). Only when the chain does more than what is already read through (a lone Identity or
Transpose of one constant that one node reads: passes/bypass_identity.py, the MatMul's transposed weight; one that
several layers read, each only as a weight, is folded: torch dynamo's unrolled LSTM, `_read_by_several_layers`), its
result is a float tensor of the same type as every float constant it reads (a Cast from float16 stays the low-precision
weight it is: passes/quantized_weights.py), and every other constant it reads is an int64/int32 index or shape (at most
MAX_INDEX values, or as many as the weight it gives: torch.index_select's stored permutation of 128 rows, exported
without constant folding, left a 128 x 128 weight "used by Gather", sweep 39; a DequantizeLinear of an int8 weight stays
quantized), and the stored floats it reads hold at least as many values as it gives, its shape read through Shape not
counted (a ConstantOfShape fill stays as it is, also one shaped like a stored tensor: skl2onnx's WhiteKernel zeros
[1, N] from Shape(X_train)). Chains that evaluate to the same bytes become one initializer, read by every such layer
(silero's two LSTMs, the branch with a state and the one without, read one tied W); its name is the largest constant the
chain read, with ".folded". The chain's nodes and constants that nothing else reads go, so the file holds each weight
once, as before.

A chain may also read a tensor's shape: torch legacy's `nn.MultiheadAttention` with a query other than its key and
value slices in_proj_weight at `E = q.size(-1)`, read as Shape -> Slice -> Squeeze -> Unsqueeze -> Add of the
normalized latents, so a Perceiver's cross-attention projections (21% of its weights, sweep 35) were "used by 2 nodes:
Slice". Where a chain fails only by reaching a Shape node of a tensor whose rank onnx's shape inference knows, that
Shape is given its inferred dimensions; one that is not a fixed number (the batch) is given each size of PLACEHOLDERS
in turn, and the chain folds only where every evaluation gives the same bytes (a weight sliced at the batch size
stays as it is).

A chain is folded only where nothing else reads the stored floats it reads as a weight: where another node also
reads one as a weight, the fold would store it twice and prune the two copies apart (`_alone`); one another node
reads otherwise stays stored for that node (skl2onnx's QDA: `scalings` under each class's weight and in a Log).
A chain's Shape of a stored tensor that a node outside the chain reads too (tf2onnx's Keras einsum sizes the
activations by the kernel's Shape) becomes the constant it gives, so the stored tensor goes with its fold
(`_shapes_as_constants`).

The same holds for an operand of more than one value that an element-wise op whose channel rule reads a per-channel
constant (`rules_elementwise.CONSTANT_READERS`: Add/Mul/..., Where, PRelu) reads from such a chain (`_parameter_inputs`;
sweep 43: torch legacy's Glow ActNorm, `h * exp(log_scale)`, kept every dead channel before it): it becomes the
constant it is, so dead channels it scales or shifts can go. Not one inside a weight's chain (weight_norm's Div), nor
one whose stored tensor a weight's chain reads; a scalar (an attention's 1 / sqrt(d)) and a chain that only moves
values (quantize_dynamic's Reshape of a Conv bias) stay as they are (`_computes`).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.merge_copies import check_reads
from onnxprune.passes.opfacts import WEIGHT_OPS
from onnxprune.passes.scopes import FLOAT_TYPES, ScopeIndex, constant_chain, scopes
from onnxprune.passes.shapes import infer_shapes

log = logging.getLogger(__name__)

MAX_CHAIN = 64  # nodes: silero's LSTM bias is 6 Slices, 3 Concats, an Unsqueeze and their 20 Constants
MAX_INDEX = 64  # values: a non-float constant a chain reads must be an index or a shape (or as many as it gives)
READ_THROUGH = frozenset({"Identity", "Transpose"})  # a lone one of these the inventory reads through already
# sizes a dimension read through Shape that is not a fixed number is given, in turn: a chain folds only where all
# give the same values. A large one too (real models 52: SwiftF0's frames, Max(Div(samples, 256), 1), were 1 for
# each of 1, 2, 3 and folded to a Slice end of 1: every clip's pitch track came out one frame long)
PLACEHOLDERS = (1, 2, 3, 4099)
NEVER = ("Random", "Bernoulli", "Multinomial")  # ops that do not compute the same twice
# what an index or a shape is stored as; an int8/uint8 constant is a quantized weight (read through Cast -> Mul, or a
# DequantizeLinear: passes/quantized_weights.py), never folded to float here, however small
INDEX_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32})
QUANTIZED = frozenset({"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear"})  # stay quantized weights
# ops that only move or copy values: onnx's reference evaluator gives the bytes onnxruntime does. A chain with any
# other op (weight_norm's ReduceL2 -> Div -> Mul) is evaluated by onnxruntime, whose float kernels the input model
# runs: the reference's numpy arithmetic differs in the last bits (every one of 5 seeded 4x8 weight_norm weights)
EXACT_OPS = frozenset({"Constant", "Identity", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Transpose",
                       "Flatten", "Gather", "Split", "Expand", "Tile", "Shape", "Size", "ConstantOfShape"})


def _weight_inputs(node: onnx.NodeProto) -> list[int]:
    facts = WEIGHT_OPS.get(node.op_type)
    if facts is None or not facts.of(node):
        return []
    return [k for k in (*facts.inputs, *((facts.bias,) if facts.bias is not None else ()))
            if k < len(node.input) and node.input[k]]


def _parameter_inputs(node: onnx.NodeProto) -> list[int]:
    """The inputs of an element-wise op whose channel rule reads a per-channel constant operand (`rules_elementwise.
    CONSTANT_READERS`: Add/Mul/..., Where, PRelu). Sweep 43: torch legacy keeps a Glow ActNorm's `exp(log_scale)`
    as Exp of the stored vector (its constant folding has no Exp), so the Mul read a tensor "which carries none" and
    every dead channel before it stayed; dynamo folds it. Such a chain that gives more than one value is folded."""
    from onnxprune.passes.channel_groups.rules_elementwise import CONSTANT_READERS

    if (node.domain or "") not in ("", "ai.onnx") or node.op_type not in CONSTANT_READERS:
        return []
    return [k for k, name in enumerate(node.input) if name]


def _computes(nodes, value: np.ndarray) -> bool:
    """A parameter's chain that computes more than one value: not a scalar (an attention's 1 / sqrt(d)), nor a chain
    that only moves stored values (quantize_dynamic's Reshape of a Conv bias to [1, C, 1, 1]: the file keeps it)."""
    return value.size > 1 and any(n.op_type not in EXACT_OPS for n in nodes)


def _chain(name: str, ix: ScopeIndex, inputs: set[str], dims: dict | None = None
           ) -> tuple[list[onnx.NodeProto], list[str]] | None:
    """(the nodes computing `name`, the initializer names they read), or None when anything but constants feeds
    them, or a node is not one the rules fold. With `dims`, a Shape node of a tensor of known rank ends the chain."""
    return constant_chain(name, ix.producers, ix.consts, inputs, max_nodes=MAX_CHAIN, never=NEVER,
                          shaped=frozenset(dims or ()))


def _shape_feeds(nodes, leaves, dims: dict | None) -> list[dict[str, np.ndarray]]:
    """The values of the chain's Shape nodes that read a tensor outside it, once per size in PLACEHOLDERS given to
    every dimension that is not a fixed number ([{}]: none; one dict where every dimension they read is fixed)."""
    made = {o for n in nodes for o in n.output} | set(leaves)
    shapes = [n for n in nodes if n.op_type == "Shape" and n.input[0] not in made]
    if not shapes:
        return [{}]
    cuts = {}
    for n in shapes:
        at = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        cuts[n.output[0]] = (dims[n.input[0]], slice(at.get("start", 0), at.get("end")))
    free = any(None in d[cut] for d, cut in cuts.values())
    return [{o: np.array([size if x is None else x for x in d], np.int64)[cut] for o, (d, cut) in cuts.items()}
            for size in (PLACEHOLDERS if free else PLACEHOLDERS[:1])]


def _ordered(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """The chain's nodes so that each comes after what it reads (they may come from several scopes)."""
    made = {o: n for n in nodes for o in n.output}
    done: set[int] = set()
    out: list[onnx.NodeProto] = []

    def visit(n):
        if id(n) in done:
            return
        done.add(id(n))
        for i in n.input:
            if i in made:
                visit(made[i])
        out.append(n)

    for n in nodes:
        visit(n)
    return out


def _evaluate(model: onnx.ModelProto, name: str, nodes, leaves, ix: ScopeIndex, dims: dict | None = None
              ) -> np.ndarray | None:
    """The chain's value; None where it does not run, or where it reads a dimension that is not a fixed number and
    differs between the sizes given to it (the weight depends on the input's shape)."""
    values = []
    for shapes in _shape_feeds(nodes, leaves, dims):
        chain = [onnx.helper.make_node("Constant", [], [n.output[0]],
                                       value=numpy_helper.from_array(shapes[n.output[0]]))
                 if n.op_type == "Shape" and n.output[0] in shapes else n for n in nodes]
        value = _evaluate_once(model, name, chain, leaves, ix)
        if value is None or (values and (value.shape != values[0].shape or value.tobytes() != values[0].tobytes())):
            return None
        values.append(value)
    return values[0]


def _evaluate_once(model: onnx.ModelProto, name: str, nodes, leaves, ix: ScopeIndex) -> np.ndarray | None:
    inits = []
    for leaf in leaves:
        t = onnx.TensorProto()
        t.CopyFrom(ix.consts[leaf])
        t.name = leaf
        inits.append(t)
    out = onnx.helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)
    graph = onnx.helper.make_graph(_ordered(nodes), "weight", [], [out], inits)
    sub = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        if all(n.op_type in EXACT_OPS for n in nodes):
            from onnx.reference import ReferenceEvaluator

            (value,) = ReferenceEvaluator(sub).run(None, {})
        else:
            (value,) = _runtime(sub)
    except Exception as exc:  # noqa: BLE001 - an op it does not run: the weight stays as it is read
        log.debug("constant-weights: could not evaluate '%s' (%s)", name, exc)
        return None
    return np.asarray(value)


def _runtime(sub: onnx.ModelProto) -> list:
    """`sub`'s outputs as onnxruntime computes them (imported here: only a model with an arithmetic chain needs it,
    and `inspect` of any other imports no onnxruntime)."""
    import onnxruntime as ort

    sub = onnx.ModelProto.FromString(sub.SerializeToString())
    outputs = [onnx.helper.make_empty_tensor_value_info(o.name) for o in sub.graph.output]  # a typed-less output
    del sub.graph.output[:]
    sub.graph.output.extend(outputs)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {})


def _read(nodes, leaves, ix: ScopeIndex) -> list[str] | None:
    """The constants a chain reads: its leaves and its Constant nodes' values (None: a Constant holding no `value`
    tensor, which the rules do not read)."""
    read = list(leaves)
    for n in nodes:  # a Constant node is a leaf that lives in the chain
        if n.op_type == "Constant":
            if n.output[0] not in ix.consts:
                return None
            read.append(n.output[0])
    return read


SHAPE_ONLY = {"Shape", "Size"}  # ops that read a tensor's shape, not its values


def _foldable(nodes, leaves, value: np.ndarray | None, ix: ScopeIndex) -> bool:
    if value is None or value.size == 0:
        return False
    if any(n.op_type in QUANTIZED for n in nodes):  # an integer weight on its grid: passes/quantized_weights.py
        return False
    if len(nodes) == 1 and nodes[0].op_type in READ_THROUGH and not _read_by_several_layers(nodes[0], ix):
        return False
    dtype = onnx.helper.np_dtype_to_tensor_dtype(value.dtype) if value.dtype.kind == "f" else None
    read = _read(nodes, leaves, ix)
    if dtype not in FLOAT_TYPES or read is None:
        return False
    stored = 0
    for name in read:
        t = ix.consts[name]
        if t.data_location == onnx.TensorProto.EXTERNAL and not t.raw_data:
            return False  # its bytes are not loaded
        if t.data_type in FLOAT_TYPES:
            if t.data_type != dtype:
                return False
            if all(n.op_type in SHAPE_ONLY for n in nodes if name in n.input):
                continue  # only its shape is read: a fill shaped like it is made, not stored (sweep 32's L5)
            stored += int(np.prod(t.dims, dtype=np.int64))
        elif t.data_type not in INDEX_TYPES or int(np.prod(t.dims, dtype=np.int64)) > max(MAX_INDEX, value.size):
            return False  # an index picks at most one value of the weight each (torch.index_select's permutation)
    # its values are read from stored floats, not made: a ConstantOfShape fill (onnx's "light" test models) or an
    # Expand of a scalar stays as it is, so no file grows by a tensor its model never stored
    return stored >= value.size


def _read_by_several_layers(node: onnx.NodeProto, ix: ScopeIndex) -> bool:
    """A lone Identity/Transpose whose output several nodes read, each only as a weight (a weight op's weight or
    bias input): the inventory reads through such a node only when one node reads it, so it is folded, and the
    readers read one stored (tied) weight. torch 2.9's dynamo writes nn.LSTM unrolled so: weight_hh -> Transpose ->
    one MatMul a time step (real models 59's LSTM autoencoder: 65.5K of its 117K weights, 3 matrices of 50
    readers, were "used by Transpose")."""
    out = node.output[0]
    readers = ix.consumers.get(out, [])
    return len(readers) > 1 and all(k in _weight_inputs(r) for r in readers for k, name in enumerate(r.input)
                                    if name == out)


def computed_weights(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, int, list, list, np.ndarray]]:
    """[(layer, input index, chain nodes, leaves, value)] for every weight input the rules fold."""
    return _computed(model, ScopeIndex.of(model))


def _computed(model: onnx.ModelProto, ix: ScopeIndex) -> list[tuple[onnx.NodeProto, int, list, list, np.ndarray]]:
    if model.ir_version < 4:  # an initializer must also be a graph input there
        return []
    inputs = {v.name for sc in scopes(model.graph) for v in sc.graph.input}
    # a Loop body input every iteration hands back unchanged, set from a main-graph initializer, is that constant
    # (tf2onnx's Keras ConvLSTM2D: the kernel carried into the while loop, Split into its 4 gates and Transposed to
    # each gate's Conv weight inside the body; sweep 29); loop-invariants then drops what the Loop no longer reads
    graph_inputs = {v.name for v in model.graph.input}
    for inner, outer in ix.carried.items():
        if outer in ix.consts and outer not in graph_inputs and inner not in ix.consts:
            ix.consts[inner] = ix.consts[outer]
            inputs.discard(inner)
    outputs = {v.name for sc in scopes(model.graph) for v in sc.graph.output}
    found: list = []
    params: list = []
    memo: dict[str, tuple | None] = {}
    dims = None
    for sc in scopes(model.graph):
        for node in sc.graph.node:
            weights = _weight_inputs(node)
            for k in weights + [k for k in _parameter_inputs(node) if k not in weights]:
                name = node.input[k]
                if name in ix.consts or name in outputs or name not in ix.producers:
                    continue
                if name not in memo:
                    chain = _chain(name, ix, inputs)
                    if chain is None and any(n.op_type == "Shape" for n in model.graph.node):
                        dims = infer_shapes(model) if dims is None else dims  # torch legacy's cross-attention
                        chain = _chain(name, ix, inputs, dims)
                    memo[name] = None
                    if chain is not None:
                        value = _evaluate(model, name, *chain, ix, dims)
                        if _foldable(*chain, value, ix) and (k in weights or _computes(chain[0], value)):
                            memo[name] = (*chain, value)
                if memo[name] is not None:
                    (found if k in weights else params).append((node, k, *memo[name]))
    found = _alone(found, ix, weights=True)
    # a parameter's chain folds on its own: not one inside a weight's chain (weight_norm's Div), nor one reading a
    # stored tensor a weight's chain or any other node reads
    chained = {id(n) for _, _, nodes, *_ in found for n in nodes}
    return found + _alone([f for f in params if id(f[0]) not in chained], ix)


def _reads_as_weight(reader: onnx.NodeProto, name: str, ix: ScopeIndex) -> bool:
    """Whether `reader` reads stored tensor `name` as a weight the inventory prunes: at a WEIGHT_OPS weight or bias
    input, as a Gather's table, or through a lone Identity/Transpose (READ_THROUGH) that one of those reads."""
    if any(reader.input[k] == name for k in _weight_inputs(reader)):
        return True
    if reader.op_type == "Gather" and reader.input and reader.input[0] == name:
        return True
    return reader.op_type in READ_THROUGH and any(_reads_as_weight(r, reader.output[0], ix)
                                                  for r in ix.consumers.get(reader.output[0], []))


def _alone(found: list, ix: ScopeIndex, weights: bool = False) -> list:
    """The folds whose stored floats no other node reads as a weight (a Loop body's hand-back aside): a chain of a
    tensor another node also reads as a weight (a DeepFM's V, read by x @ V and, as V ** 2, by x² @ V², sweep 35)
    would store it twice and prune the two copies apart, so it stays computed from the one the other node reads. A
    stored tensor another node reads otherwise (not pruned there) stays for that node as it is: scikit-learn's QDA
    through skl2onnx whitens by `rotations * scalings ** -0.5` (a MatMul's weight per class) and reads `scalings`
    again by Log for the log-determinant; sweep 54b's QDA was refused as having no prunable weights at all. That
    holds for a layer's weight (`weights`); a per-channel parameter's chain stays computed wherever any other node
    reads its stored tensor (dead-channel removal would slice the fold and leave the other copy whole)."""
    while True:
        chained = {id(n) for _, _, nodes, *_ in found for n in nodes}
        kept = [f for f in found if all(id(r) in chained or (r.op_type == "Identity" and r.output[0] in ix.pass_back)
                                        or (weights and not _reads_as_weight(r, leaf, ix))
                                        for leaf in f[3] if ix.consts[leaf].data_type in FLOAT_TYPES
                                        for r in ix.consumers.get(leaf, []))]
        if len(kept) == len(found):
            return found
        found = kept


def _unique(base: str, taken: set[str]) -> str:
    name, k = f"{base}.folded", 1
    while name in taken:
        name, k = f"{base}.folded.{k}", k + 1
    taken.add(name)
    return name


def _ops(found: list) -> str:
    ops = sorted({n.op_type for _, _, nodes, *_ in found for n in nodes if n.op_type != "Constant"})
    return "/".join(ops[:4]) + ("/..." if len(ops) > 4 else "")


@register_pass("constant-weights")
class ConstantWeights(Pass):
    """Store a weight that nodes compute from constants as the constant it is (module docstring)."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        ix = ScopeIndex.of(model)
        found = _computed(model, ix)
        if not found:
            return PassResult(model, False)
        taken = set(ix.consts) | set(ix.producers) | {v.name for sc in scopes(model.graph) for v in sc.graph.input}
        by_bytes: dict[tuple, str] = {}
        chained_nodes: dict[int, onnx.NodeProto] = {}
        leaves: set[str] = set()
        for node, k, nodes, chain_leaves, value in found:
            key = (value.dtype.str, value.shape, hashlib.blake2b(value.tobytes(), digest_size=16).digest())
            if key not in by_bytes:
                floats = [t for t in _read(nodes, chain_leaves, ix) if ix.consts[t].data_type in FLOAT_TYPES]
                biggest = max(floats, key=lambda n: int(np.prod(ix.consts[n].dims, dtype=np.int64)), default=None)
                by_bytes[key] = _unique(ix.carried.get(biggest, biggest) if biggest else node.input[k], taken)
                model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), by_bytes[key]))
            node.input[k] = by_bytes[key]
            chained_nodes.update((id(n), n) for n in nodes)
            leaves.update(chain_leaves)
        self._shapes_as_constants(chained_nodes, leaves, ix)
        self._drop_unread(model, chained_nodes, leaves)
        # a fold whose reader was itself inside another fold's chain (spectral_norm's sigma = u . (W v): the MatMul
        # reading W v is a chain node of W / sigma) is read by nothing once that chain went
        read = {i for sc in scopes(model.graph) for n in sc.graph.node for i in n.input}
        orphans = set(by_bytes.values()) - read
        if orphans:
            kept = [t for t in model.graph.initializer if t.name not in orphans]
            del model.graph.initializer[:]
            model.graph.initializer.extend(kept)
        layer = [f for f in found if f[1] in _weight_inputs(f[0])]
        weights = sum(1 for node, k, *_ in layer if node.input[k] not in orphans)
        if layer:
            stored = len({node.input[k] for node, k, *_ in layer} - orphans)
            state.notes.append(f"{weights} layer weight(s) that nodes computed from constants ({_ops(layer)} of a "
                               f"stored tensor) stored as the {stored} constant(s) they are, so they can be pruned")
        # a reader inside another fold's chain went with it (an unrolled loop's first step, Mul(Clip(u), zeros))
        alive = {o for sc in scopes(model.graph) for n in sc.graph.node for o in n.output}
        params = [f for f in found if f[1] not in _weight_inputs(f[0]) and f[0].input[f[1]] not in orphans
                  and f[0].output[0] in alive]
        if params:  # an unrolled loop computes one stored vector at every step: said as the constants it is
            stored = len({node.input[k] for node, k, *_ in params})
            state.notes.append(f"{len(params)} per-channel parameter(s) of element-wise ops that nodes computed from "
                               f"constants ({_ops(params)} of a stored tensor) stored as the {stored} constant(s) they "
                               f"are, so dead channels they scale or shift can go")
        log.debug("constant-weights: %d weight input(s) and %d parameter(s) folded into %d initializer(s)", weights,
                  len(params), len(by_bytes) - len(orphans))
        return PassResult(model, True)

    @staticmethod
    def _shapes_as_constants(chained: dict[int, onnx.NodeProto], leaves: set[str], ix: ScopeIndex) -> None:
        """A chain's Shape or Size of a stored tensor becomes the constant it gives: where a node outside the chain
        reads it too (tf2onnx's Keras einsum: the kernel's Shape also sizes a Reshape of the activations; g2p_id's
        BERT, real models 53), it kept the stored tensor, written again beside its fold (the file grew)."""
        for n in chained.values():
            if n.op_type not in SHAPE_ONLY or n.input[0] not in leaves or n.input[0] not in ix.consts:
                continue
            dims = [int(d) for d in ix.consts[n.input[0]].dims]
            if n.op_type == "Size":
                value = np.array(int(np.prod(dims, dtype=np.int64)), np.int64)
            else:
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
                value = np.array(dims[attrs.get("start", 0):attrs.get("end", len(dims))], np.int64)
            n.op_type, n.domain = "Constant", ""
            del n.input[:]
            del n.attribute[:]
            n.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(value)))

    @staticmethod
    def _drop_unread(model: onnx.ModelProto, chained: dict[int, onnx.NodeProto], leaves: set[str]) -> None:
        """The chains' nodes and constants nothing reads any more, in every scope (inner bodies first)."""
        chained_outputs = {o for n in chained.values() for o in n.output}
        while True:
            read = set()
            for sc in scopes(model.graph):
                read.update(i for n in sc.graph.node for i in n.input if i)
                read.update(v.name for v in sc.graph.output)
            dead = {o for o in chained_outputs if o not in read}
            changed = False
            for sc in reversed(list(scopes(model.graph))):
                keep = [n for n in sc.graph.node
                        if not (n.output and all(o in dead or not o for o in n.output)
                                and any(o in chained_outputs for o in n.output))]
                if len(keep) != len(sc.graph.node):
                    keep = [onnx.NodeProto.FromString(n.SerializeToString()) for n in keep]
                    del sc.graph.node[:]
                    sc.graph.node.extend(keep)
                    changed = True
                inits = [t for t in sc.graph.initializer if not (t.name in leaves and t.name not in read)]
                if len(inits) != len(sc.graph.initializer):
                    del sc.graph.initializer[:]
                    sc.graph.initializer.extend(inits)
                    changed = True
            if not changed:
                break
        for sc in scopes(model.graph):
            names = {o for n in sc.graph.node for o in n.output}
            for v in [v for v in sc.graph.value_info if v.name in chained_outputs and v.name not in names]:
                sc.graph.value_info.remove(v)

    def ensures(self, model: onnx.ModelProto, state: PruneState) -> None:
        check_reads(model, self.name)
