"""Channel groups: which channels of which tensors live and die together (coupling as data, after DepGraph).

A *class* is one output channel of a weight layer (Gemm, MatMul with a constant weight, Conv, ConvTranspose), one
feature of a lookup in a constant table (Gather: the table's last axis) or, with `gather_inputs`, one feature of a
flattened graph input. Walking the graph in topological order, every tensor that carries classes gets a `Channels`
map: its channel axis and, per position on that axis, the class it holds. One small rule per op type (`RULES`)
says how the map flows through that op:

    Conv c1 ─ BN ─ Relu ─ MaxPool ─ Flatten ─ Gemm fc1    c1 channel k  ==  fc1 input rows k·HW … k·HW+HW-1
    Conv a ─┐
    Conv b ─┴─ Add ─ Relu ─ Conv c                          a channel k  ==  b channel k  (one class)
    Concat / Split / Slice: offsets        depthwise Conv: channel k stays class k (its filter k goes with it)
    InstanceNormalization: per channel     Shape: harmless unless the channel count is read downstream
    Pad of other axes: channels pass        Reshape keeping the channel axis whole ([N, C, 1, 1] <-> [-1, C, 1, 1])
    GroupNorm (op or legacy Reshape - InstanceNormalization - Reshape): a group's channels are one class
    Softmax over other axes (a map's positions): channels pass, a constant one 1/n; over the channels: kept
    LayerNormalization over axes after the channels (nn.LayerNorm([H, W])): channels pass; over them: kept
    Reshape merging the channel axis with the axes after it (pixel_unshuffle): channel k -> m channels k·m …
    Reshape keeping the channel axis whole under a computed shape (GPT-2's Conv1D: [N, S, C] -> [-1, C] ->
        Gemm -> [N, S, C_out], N and S read from a Shape): C from x's own Shape follows; a constant is rewritten
    LSTM/GRU/RNN: hidden unit k is a class of Y, Y_h and Y_c (both directions' unit k one class); column k of R
        reads it, so it goes only when that column and every reader downstream are zero
    Reshape merging a last channel axis with the static axes before it ([T, N, 2, H] -> [T, N, 2H]): unit k ->
        positions d·H + k
    Expand: channels keep their place from the end; a count in the target is 1, a constant (rewritten) or read
        from the Shape of a tensor holding these very channels (an SE gate's `y.view(b, c, 1, 1).expand_as(h)`;
        a Reshape or Expand sized by another tensor's count is checked once every class is joined: check_counts)
    Tile of other axes (Keras' UpSampling1D): channels pass
    Reduce{Sum,L1,L2,SumSquare} over the channel axis: a reader of every channel, as a layer of ones (a 0 goes);
        Mul/Div by an Expand of a factor shared by all channels to their count (F.normalize): channels pass
    Gather of a constant table's rows (nn.Embedding): a producer, column d of the table is feature d
    Reshape into groups, Transpose of the two, Reshape back (ShuffleNet's shuffle): a permutation of the channels,
        the chain one Gather of the kept channels once any go

Along the way each rule records, as data:
  * `Layer`: weights whose output rows are the classes (producers, depthwise members, gathered inputs);
  * `Read`:  a consumer's weight rows indexed by a tensor's positions, with `fold`, which turns constant inputs
             into a bias delta where that is exact (None where it is not, e.g. a padded Conv);
  * `Edit`:  what to slice once the kept positions of a tensor are known (constants, Split sizes, Reshape shape,
             depthwise `group`, a Gather on an input);
  * `Channels.value`: the constant each position holds when it is input-independent (act(bias) of a zero-weight
             row, carried through the element-wise chain), NaN when unknown;
  * blocks: an op with no rule, a graph output, a protected initializer, or one shared by unlike readers keeps the
             classes it touches; one every reader of which is alike (same op, attributes and input: a Siamese net's
             two towers) is tied instead (`Builder.shared`, `Builder.tie`): the positions each reader slices it by
             are one class, and it is sliced once.

`ChannelGraph.remove(dead)` folds, slices and adds biases; deciding what is dead is the caller's job.

Files: `graph.py` the data and `remove`; `builder.py` the walk's state; `rules_layers.py`, `rules_elementwise.py`,
`rules_layout.py` the rules; `inputs.py` input features (gather, crop); `biases.py` folded constants; this file
the rule table and the walk.
"""

from __future__ import annotations

import logging
from typing import Callable

import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.builder import Builder
from onnxprune.passes.channel_groups.graph import ChannelGraph, Shapes
from onnxprune.passes.channel_groups.inputs import _seed_inputs
from onnxprune.passes.channel_groups.rules_elementwise import (
    BINARY,
    COMPARE,
    EXTREMA,
    POOL_KEEPS_CONSTANT,
    REDUCE_OPS,
    RMS_NORMS,
    UNARY,
    _batchnorm,
    _group_norm,
    _binary,
    _compare,
    _instance_norm,
    _pool,
    _pow,
    _where,
    _prelu,
    _normalization,
    _qdq,
    _reduce,
    _resize,
    _roi_align,
    _topk,
    _softmax,
    _unary,
)
from onnxprune.passes.channel_groups.rules_layers import (
    RECURRENT_GATES, _conv, _conv_transpose, _einsum, _gemm, _matmul, _recurrent,
)
from onnxprune.passes.channel_groups.rules_layout import (
    _cast,
    _concat,
    _constant_of_shape,
    _depth_to_space,
    _expand,
    _tile,
    check_counts,
    _flatten,
    _gather,
    _gather_nd,
    is_lookup,
    _pad,
    _reshape,
    _shape,
    _slice,
    _space_to_depth,
    _split,
    _squeeze,
    _transpose,
)
from onnxprune.passes.channel_groups.util import NAN
from onnxprune.passes.opfacts import CHANNEL_PRODUCERS, QUANTIZED_WEIGHT_OPS, SOFTMAX_OPS, SUBGRAPH_OPS, WEIGHT_OPS

log = logging.getLogger(__name__)

__all__ = ["NAN", "PRODUCERS", "RULES", "ChannelGraph", "Shapes", "build_channel_groups"]

RULES: dict[str, Callable[[Builder, gs.Node], None]] = {
    "Gemm": _gemm, "MatMul": _matmul, "Einsum": _einsum, "Conv": _conv, "ConvTranspose": _conv_transpose,
    **{op: _recurrent for op in RECURRENT_GATES},
    **{op: _unary for op in UNARY}, **{op: _binary for op in BINARY}, **{op: _binary for op in EXTREMA},
    **{op: _compare for op in COMPARE}, "Where": _where, "GatherND": _gather_nd, "ConstantOfShape": _constant_of_shape,
    "BatchNormalization": _batchnorm, "PRelu": _prelu, "Pow": _pow, **{op: _pool for op in POOL_KEEPS_CONSTANT},
    "RoiAlign": _roi_align, "TopK": _topk,
    **{op: _reduce for op in REDUCE_OPS}, "LayerNormalization": _normalization,
    **{op: _normalization for op in RMS_NORMS}, "GroupNormalization": _group_norm,
    "InstanceNormalization": _instance_norm, **{op: _softmax for op in SOFTMAX_OPS},
    "Resize": _resize, "Upsample": _resize,
    "Flatten": _flatten, "Reshape": _reshape, "Shape": _shape, "Pad": _pad, "Transpose": _transpose, "Squeeze": _squeeze, "Unsqueeze": _squeeze,
    "Cast": _cast, "Gather": _gather, "Expand": _expand, "Tile": _tile,
    "DepthToSpace": _depth_to_space, "SpaceToDepth": _space_to_depth, "Concat": _concat, "Split": _split,
    "Slice": _slice, "QuantizeLinear": _qdq, "DequantizeLinear": _qdq,
}
PRODUCERS = CHANNEL_PRODUCERS  # passes/opfacts.py: weight ops whose output channels the rules follow
# ops of another domain a rule above follows (every other node of a domain other than ai.onnx is opaque)
OTHER_DOMAIN_RULES = frozenset({("com.microsoft", "QuickGelu")})


def _no_rule(node: gs.Node) -> str:
    """Why a node with no rule keeps its channels: weight ops and bodies we do not shrink say so plainly."""
    if node.op in QUANTIZED_WEIGHT_OPS:
        return f"(op {node.op}) holds integer-quantized weights: dead-neuron removal does not shrink it"
    if node.op in WEIGHT_OPS and WEIGHT_OPS[node.op].kind == "recurrent":
        return f"(op {node.op}) is recurrent: dead-neuron removal does not shrink its hidden size"
    if node.op in WEIGHT_OPS and WEIGHT_OPS[node.op].domain and WEIGHT_OPS[node.op].of(node):  # not ai.onnx's Attention
        return f"(op {node.domain}.{node.op}) is a fused kernel: dead-neuron removal does not shrink it"
    if node.op in SUBGRAPH_OPS:
        return f"(op {node.op}) holds subgraphs: dead-neuron removal does not enter them"
    return f"(op {node.op}) has no channel rule"


def _subgraph_names(graph: gs.Graph) -> set[str]:
    """Tensors read inside If/Loop/Scan bodies (outer-scope reads are invisible in node.inputs)."""
    names: set[str] = set()
    for node in graph.nodes:
        for v in node.attrs.values():
            for sub in v if isinstance(v, list) else [v]:
                if isinstance(sub, gs.Graph):
                    names |= {t.name for n in sub.nodes for t in n.inputs} | _subgraph_names(sub)
    return names


def build_channel_groups(
    graph: gs.Graph, shapes: Shapes, *, gather_inputs: bool = False, crop_inputs: bool = False,
    protected: frozenset[str] = frozenset()
) -> ChannelGraph:
    """Walk `graph` (topologically sorted) and record every class, member, consumer and block."""
    b = Builder(graph, shapes, frozenset(protected))
    if gather_inputs or crop_inputs:
        _seed_inputs(b, crop=crop_inputs)
    for node in graph.nodes:
        mapped = any(b.ch(t) is not None for t in node.inputs)
        if node.name and node.name in b.protected:
            b.opaque(node, "is protected")
        elif ((node.domain or "") not in ("", "ai.onnx") and (node.domain, node.op) not in OTHER_DOMAIN_RULES
              or node.op not in RULES):
            why = _no_rule(node)
            if node.op in WEIGHT_OPS or node.op in SUBGRAPH_OPS:
                log.info("%s '%s' %s; its weights keep their channels", node.op, node.name, why.split(") ", 1)[1])
            b.opaque(node, why)
        elif mapped or node.op in PRODUCERS or node.op == "ConstantOfShape" or is_lookup(node):
            RULES[node.op](b, node)
    b.check_ties()
    check_counts(b)
    inner, outputs = _subgraph_names(graph), {t.name for t in graph.outputs}
    for name, c in b.cg.channels.items():
        if name in outputs:
            b.block(c.ids, f"tensor '{name}' is a graph output")
        if name in b.protected:
            b.block(c.ids, f"tensor '{name}' is protected")
        if name in inner:
            b.block(c.ids, f"tensor '{name}' is read inside a subgraph")
    return b.cg
