"""Dead-neuron removal (Han et al., NIPS 2015, §3.5): channels that carry nothing leave the dense shapes.

Once the pruned weights are zero, some neurons are dead:
  (a) every outgoing weight is zero in every consumer: the channel contributes nothing, drop it;
  (b) every incoming weight is zero: the channel holds c = act(bias) everywhere (through BN, pools, the
      element-wise chain), so fold c·W_row into the consumers' biases (Gemm/MatMul always, Conv only without
      padding, where every output sees c under the whole kernel) and drop it; c = 0 (a negative bias under a
      Relu) adds nothing to any consumer, padded Conv and ConvTranspose included, and is dropped as well.
Which channels must go together (residual Add, Concat offsets, Flatten into a Gemm, depthwise Conv) comes from
`passes.channel_groups`; a weight that is Gemm's or MatMul's first operand (a column-major W·xᵀ) has its channels on
the activations' axis -2 and a column bias [out, 1].

    before: x ─ Gemm fc1 W1[300×784] ─ Relu ─ Gemm fc2 W2[100×300]      W1 row 7 zero, W2 column 42 zero
    after:  x ─ Gemm fc1 W1[298×784] ─ Relu ─ Gemm fc2 W2[100×298]      b2 += relu(b1[7])·W2[:, 7]

Dropping channels can leave others dead (a row whose only non-zero inputs were dropped), so the pass repeats
until nothing changes. A channel count a Conv reads stays a multiple of 4 where it was one (`_keep_aligned`: the
dead channels that would break it stay, zero; exact either way): onnxruntime's blocked (NCHWc) convolution takes
input channels in multiples of 4 once they pass its block (8 or 16 by CPU), and falls back to a slower kernel
otherwise (31 input channels ran 1.8x slower than 32 here, 30 depthwise channels 2x slower than 28). Input features no weight reads are dropped by a Gather (`gather_inputs`) or, faster in
onnxruntime, cut to their bounding box by a Slice on the input (`crop_inputs`).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.logger import G_LOGGER

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.channel_groups import ChannelGraph, build_channel_groups
from onnxprune.passes.scopes import all_constants, local_constants, scopes
from onnxprune.passes.shapes import infer_shapes
from onnxprune.plain import listed

log = logging.getLogger(__name__)
MAX_ROUNDS = 16
MAX_NOTES = 10  # blocked-removal lines the notes keep
ALIGN, ALIGN_ABOVE = 4, 8  # channel counts a Conv reads above 8 stay multiples of 4 (if the input model's were)


@dataclass(frozen=True)
class LayerChannels:
    node: str  # node name (the graph input's name for gathered inputs)
    op: str  # "Gemm", "Conv", … or "input"
    weight: str  # weight initializer ("" for inputs)
    before: int
    after: int


@dataclass
class DeadNeuronReport:
    layers: list[LayerChannels] = field(default_factory=list)  # producers, depthwise convs and gathered inputs
    blocked: list[str] = field(default_factory=list)  # what kept which channels (from the last analysis)
    folded: int = 0  # removed channels whose constant output went into consumer biases
    aligned: int = 0  # dead channels kept so that a Conv's input channels stay a multiple of ALIGN
    rounds: int = 0  # rounds that removed something
    slices: list[tuple[str, int, np.ndarray]] = field(default_factory=list)  # (initializer, axis, keep), in order

    @property
    def removed(self) -> int:
        """Channels removed, a weight alike layers read (a Siamese net's two towers) counted once."""
        return sum({lay.weight or lay.node: lay.before - lay.after for lay in self.layers}.values())

    def lines(self) -> list[str]:
        out = [f"{l.op} '{l.node}' ({l.weight or 'features'}): {l.before} -> {l.after}" for l in self.layers
               if l.before != l.after]
        return out + [f"removed {self.removed} channels ({self.folded} folded into biases)"] + self.blocked + (
            [self.aligned_note()] if self.aligned else [])

    def aligned_note(self) -> str:
        return (f"{self.aligned} dead channel(s) kept so that convolution inputs stay multiples of {ALIGN} "
                f"(onnxruntime's blocked convolution needs that, and runs up to 2x slower without it)")


def remove_dead_neurons(
    model: onnx.ModelProto, *, gather_inputs: bool = False, crop_inputs: bool = False,
    protected: set[str] | frozenset[str] = frozenset()
) -> tuple[onnx.ModelProto, DeadNeuronReport]:
    """Remove dead channels; the result computes the same outputs. Returns `model` itself when nothing goes."""
    report, counts, current, crop_now = DeadNeuronReport(), {}, model, False
    first: dict[str, int] = {}  # channels of each tensor a Conv reads, as the input model has them
    for _ in range(MAX_ROUNDS):  # crops come last: a cropped input is not cropped again
        cg = analyse(current, gather_inputs=gather_inputs, crop_inputs=crop_now, protected=protected)
        graph = cg.graph
        for lay in cg.layers:
            counts.setdefault((lay.node, lay.weight), [lay.op, len(lay.rows), len(lay.rows)])
        dead, by_weights = dead_classes(cg)
        dead = cg.boxed(_keep_one_per_tensor(cg, dead))
        removable = dead
        dead, kept = _keep_aligned(cg, dead, first)
        report.aligned = kept  # the same dead channels are kept back again each round: the last count holds
        # the channels kept for alignment have their own note: not "in a class with a channel read elsewhere"
        report.blocked = cg.notes(by_weights & cg.blocked(), costly=True) + partnered(cg, removable)
        if not dead and crop_inputs and not crop_now:
            crop_now = True
            continue
        if not dead:
            break
        report.folded += len(_folded(cg, dead))
        keep = cg.remove(dead)
        for lay in cg.layers:
            counts[(lay.node, lay.weight)][2] = int(keep[lay.tensor].sum())
        report.slices += cg.slices
        report.rounds += 1
        current = _export(graph, model)
    report.layers = [LayerChannels(n, op, w, b, a) for (n, w), (op, b, a) in counts.items()]
    # a search calls this per candidate: "removed 0" is said only under --debug
    (log.info if report.removed else log.debug)("dead neurons: removed %d channels in %d rounds", report.removed,
                                                 report.rounds)
    return current, report


# the graph's nodes and its bodies', not its local functions (kept in their order): onnx_graphsurgeon 0.6's sort of
# functions recurses without end in a graph that holds both functions and bodies (sweep 39: skl2onnx's KNNImputer at
# opset 18, inlined at load, keeps 5 functions its 64 If branches call; "RecursionError" in the shrink step)
SORT = "nodes"


def analyse(model: onnx.ModelProto, *, gather_inputs: bool = False, crop_inputs: bool = False,
            protected: set[str] | frozenset[str] = frozenset()) -> ChannelGraph:
    """The channel groups of `model` (on a graph of its own, free to edit)."""
    with _quiet_graphsurgeon():
        graph = _lift_constant_nodes(gs.import_onnx(model)).toposort(mode=SORT)
    return build_channel_groups(graph, infer_shapes(model, warn=True), gather_inputs=gather_inputs,
                                crop_inputs=crop_inputs, protected=frozenset(protected))


def unneeded(cg: ChannelGraph, rd) -> np.ndarray:
    """Per position of the tensor `rd` (a Read) reads: the reader's weight rows there are zero, or the position holds
    a known constant the reader folds into its bias, or 0 (a weight op is linear in its input: a position that is 0
    everywhere adds nothing, padded Conv or not)."""
    value = cg.channels[rd.tensor].value
    return ~rd.rows.any(axis=1) | (np.isfinite(value) & (rd.fold is not None)) | (value == 0)


def dead_classes(cg: ChannelGraph) -> tuple[set[int], set[int]]:
    """(removable classes, classes dead by their weights whatever the blocks).

    Removable: not blocked, and every consumer weight reading any of its positions is zero there or the position
    holds a known constant the consumer can fold into its bias. Dead by weights: read only that way (and read at
    all), or a known constant where it is produced that no weight reads varying.
    """
    everything = {int(r) for t in cg.channels for r in cg.roots(t)}
    alive: set[int] = set()
    read: set[int] = set()
    for rd in cg.reads:
        roots = cg.roots(rd.tensor)
        alive.update(roots[~unneeded(cg, rd)].tolist())
        read.update(roots.tolist())
    constant = {int(r) for lay in cg.layers for r in cg.roots(lay.tensor)[np.isfinite(cg.channels[lay.tensor].value)]}
    # a class a weight reads varying is alive, constant where one layer produces it or not: a dead row of a residual
    # branch whose stream lives is no dead class (sweep 37: "kept: consumer Shape ... (8 dead kept)" of a Set
    # Transformer's stream, which nothing would have removed)
    return everything - alive - cg.blocked(), (read | constant) - alive


def partnered(cg: ChannelGraph, dead: set[int]) -> list[str]:
    """Lines for channels every weight reading them ignores (zero rows, or a constant it folds: sweep 38's forced dead
    rows before a grouped Conv were kept without a word) that stay because their class is alive
    through another member: a grouped Conv drops local channel j from every group at once, so one dead in some
    groups only stays (sweep 21: regnety_002, half of every Conv's channels zeroed at random, removed no more), as
    does a residual stream's channel the head ignores while a block reads it, or one split from a tensor whose
    other part is read. Only tensors that weights alone read count (a residual Add's input is read through the
    sum). One line: the total and the producers with the most; the report was silent about them (regnety_002 at
    --sparsity 0.97: 1,513 such channels beside 185 removed)."""
    ignored: dict[str, np.ndarray] = {}
    readers: dict[str, set[int]] = defaultdict(set)
    for rd in cg.reads:
        zero = unneeded(cg, rd)
        ignored[rd.tensor] = ignored[rd.tensor] & zero if rd.tensor in ignored else zero
        readers[rd.tensor].add(id(rd.node))
    tensors = cg.graph.tensors()
    outputs = {t.name for t in cg.graph.outputs}
    for name in list(ignored):  # a tensor something else reads too (a residual Add, a graph output) is not ignored
        # but its Shape reads sizes alone (sweep 45: a top-1 MoE's zeros_like(h), Shape -> ConstantOfShape, the
        # experts' Where's other side, tied h's dead units to the experts' live channels without a word)
        consumers = ({id(n) for n in tensors[name].outputs if n.op != "Shape"} if name in tensors else {None})
        # nor one filled with a constant (an unrolled RNNCell's zero h0, `rules_layout._filled`): nothing to remove
        filled = name in tensors and any(p.op == "ConstantOfShape" for p in tensors[name].inputs)
        if name in outputs or consumers != readers[name] or filled:
            del ignored[name]
    blocked = cg.blocked()
    boxes = {t for t, _ in cg.boxes}
    kept: dict[str, set[int]] = defaultdict(set)
    boxed: dict[str, set[int]] = defaultdict(set)  # input features inside the crop's box (`ChannelGraph.boxed`)
    for tensor, zero in ignored.items():
        ids, roots = cg.channels[tensor].ids, cg.roots(tensor)
        # a channel is ignored when none of its positions is read: a Flatten into a Gemm gives each channel one
        # position per pixel, and a sparse Gemm's zero columns at some of them leave the channel read
        read_ids = set(ids[~zero].tolist())
        for p in np.flatnonzero(zero).tolist():
            root = int(roots[p])
            if root not in dead and root not in blocked and int(ids[p]) not in read_ids:
                (boxed if tensor in boxes else kept)[cg.origins[int(ids[p])]].add(int(ids[p]))
    # units a layer's zero rows make constant, whose class lives through another member the analysis follows (sweep
    # 47: criss-cross attention's dead value channels, one class with the residual stream's live ones through
    # P·v + h, were kept without a word once the Einsum passed them; sweep 46's RetNet through GroupNorm alike)
    listed = {i for ids in kept.values() for i in ids}
    units: dict[str, set[int]] = defaultdict(set)
    for lay in cg.layers:
        c = cg.channels.get(lay.tensor)
        if c is None or lay.op == "input" or lay.rows.shape[1] == 0 or len(lay.rows) != len(c.ids):
            continue
        roots = cg.roots(lay.tensor)
        for p in np.flatnonzero(~np.any(lay.rows != 0, axis=1) & np.isfinite(c.value)).tolist():
            root, i = int(roots[p]), int(c.ids[p])
            if root not in dead and root not in blocked and i not in listed:
                units[cg.origins[i]].add(i)
    # a unit alone in its class has no other channel to stay alive through: a later layer reads it, and what it holds
    # by then the analysis does not know (sweep 48: a BatchEnsemble's units, 0 times a per-member scale, were said to
    # be "in a class that stays alive through another of its channels (a residual stream's ...)")
    sizes = Counter(cg.find(i) for i in range(len(cg.parent)))
    alone: dict[str, set[int]] = defaultdict(set)
    for who, ids in list(units.items()):
        for i in [i for i in ids if sizes[cg.find(i)] == 1]:
            ids.discard(i)
            alone[who].add(i)
        if not ids:
            del units[who]
    lines = []
    if units:
        lines.append(f"{_total(units)} unit(s) whose weights are all zero are kept, each in a class that stays alive "
                     f"through another of its channels (a residual stream's channel another block writes, or one "
                     f"normalized with it): {_shown(units)}")
    if alone:
        lines.append(f"{_total(alone)} unit(s) whose weights are all zero are kept: a later layer reads them, and the "
                     f"analysis does not know they still hold a constant there (an op on the way combines them with "
                     f"an operand it cannot follow per channel): {_shown(alone)}")
    if kept:
        lines.append(f"{_total(kept)} channel(s) no weight needs (unread, or a constant) are kept, each in a class "
                     f"with a channel that is read elsewhere (a residual stream's channel another block reads; a "
                     f"grouped Conv's local channel, alive in another group: it goes from every group at once; a "
                     f"split's partner): {_shown(kept)}")
    if boxed:  # sweep 24: 92 border pixels of an MLP's image were said to be "in a class with a channel ..."
        lines.append(f"{_total(boxed)} input feature(s) no weight reads are kept inside the box of the read ones (an "
                     f"input is cropped to a box with a Slice, not gathered: onnxruntime's Gather of scattered "
                     f"features costs more than the layer it shrinks): {_shown(boxed)}")
    return lines


def _total(kept: dict[str, set[int]]) -> int:
    return sum(len(ids) for ids in kept.values())


def _shown(kept: dict[str, set[int]]) -> str:
    counts = sorted(((len(ids), who) for who, ids in kept.items()), key=lambda c: (-c[0], c[1]))
    return ", ".join(f"{who} {n}" for n, who in counts[:3]) + (f", +{len(counts) - 3} more" if len(counts) > 3 else "")


def _class_norms(cg: ChannelGraph) -> dict[int, float]:
    norms: dict[int, float] = defaultdict(float)
    for item in [*cg.layers, *cg.reads]:
        for r, v in zip(cg.roots(item.tensor).tolist(), np.square(item.rows, dtype=np.float64).sum(axis=1).tolist()):
            norms[r] += v
    return norms


def _keep_one_per_tensor(cg: ChannelGraph, dead: set[int]) -> set[int]:
    """Never empty a tensor: keep its class with the largest weight norm."""
    dead, norms = set(dead), None
    for t in cg.channels:
        roots = cg.roots(t).tolist()
        if roots and dead.issuperset(roots):
            norms = norms or _class_norms(cg)
            dead.discard(max(roots, key=lambda r: norms[r]))
    return dead


def _keep_aligned(cg: ChannelGraph, dead: set[int], first: dict[str, int]) -> tuple[set[int], int]:
    """`dead` without the classes that keep the channel count of each tensor a Conv reads (dense or depthwise) a
    multiple of ALIGN, where the input model's was one and more than ALIGN_ABOVE stay; returns (dead, how many kept
    back). Keeping back only adds channels, so the loop ends; the strongest dead classes stay first."""
    tensors = list(dict.fromkeys(n.inputs[0].name for n in cg.graph.nodes
                                 if n.op == "Conv" and n.inputs and n.inputs[0].name in cg.channels))
    for t in tensors:
        first.setdefault(t, len(cg.channels[t].ids))
    dead, back, norms, changed = set(dead), 0, None, True
    while changed and dead:
        changed = False
        for t in tensors:
            roots = cg.roots(t)
            gone = np.isin(roots, np.fromiter(dead, dtype=np.int64, count=len(dead)))
            kept = len(roots) - int(gone.sum())
            if first[t] % ALIGN or not gone.any() or kept % ALIGN == 0 or kept <= ALIGN_ABOVE:
                continue
            norms = norms or _class_norms(cg)
            for r in sorted(set(roots[gone].tolist()), key=lambda r: (-norms[r], r)):
                dead.discard(r)
                back += 1
                kept += int((roots == r).sum())
                changed = True
                if kept % ALIGN == 0:
                    break
    return dead, back


def _folded(cg: ChannelGraph, dead: set[int]) -> set[int]:
    out: set[int] = set()
    for rd in cg.reads:
        roots = cg.roots(rd.tensor)
        out.update(roots[rd.rows.any(axis=1) & np.isin(roots, list(dead))].tolist())
    return out


def _quiet_graphsurgeon():
    """onnx-graphsurgeon's own warnings off (errors still shown): it prints '[W] ...' lines to the user's terminal
    past our logging and -q, e.g. 'Could not convert: UNDEFINED ...' for skl2onnx's ZipMap output (a sequence of
    maps, which it keeps as it is) and then 'colored module is not installed'."""
    return G_LOGGER.suppress(G_LOGGER.ERROR)


def _lift_constant_nodes(graph: gs.Graph) -> gs.Graph:
    """Constant nodes become initializers, so weights and biases exported that way can be sliced too."""
    outputs = {t.name for t in graph.outputs}
    for node in graph.nodes:
        value = node.attrs.get("value") if node.op == "Constant" else None
        if isinstance(value, gs.Constant) and node.outputs[0].name not in outputs:
            out = node.outputs[0]
            node.outputs.clear()
            out.to_constant(value.values)
    return graph.cleanup()


def _export(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export with stale intermediate shapes dropped and `like`'s IR version, opsets and metadata."""
    with _quiet_graphsurgeon():
        graph.cleanup().toposort(mode=SORT)
        io = {t.name for t in [*graph.inputs, *graph.outputs]}
        for t in graph.tensors().values():
            if isinstance(t, gs.Variable) and t.name not in io:
                t.shape = None
        out = gs.export_onnx(graph)
    out.ir_version = like.ir_version
    del out.opset_import[:]
    out.opset_import.extend(like.opset_import)
    for name in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(out, name, getattr(like, name))
    del out.metadata_props[:]
    out.metadata_props.extend(like.metadata_props)
    if like.functions and not out.functions:
        out.functions.extend(like.functions)
    _keep_io_types(out, like)
    _keep_constants_home(out, like)
    _relist_initializer_inputs(out, like)
    _keep_annotations(out, like)
    return out


def _keep_annotations(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Nodes and graphs keep their metadata_props and doc strings (onnx-graphsurgeon drops them): a torch dynamo
    export's per-node stack traces were gone after a shrink (a transformer's 189 KB file read 74 KB, the shrink
    credited with bytes it had not saved). By scope and node name; a node the shrink made has none."""
    had = {sc.path: sc.graph for sc in scopes(like.graph)}
    for sc in scopes(out.graph):
        old = had.get(sc.path)
        if old is None:
            continue
        if not sc.graph.metadata_props and old.metadata_props:
            sc.graph.metadata_props.extend(old.metadata_props)
        if not sc.graph.doc_string:
            sc.graph.doc_string = old.doc_string
        nodes = {n.name: n for n in old.node if n.name and (n.metadata_props or n.doc_string)}
        for node in sc.graph.node:
            was = nodes.get(node.name)
            if was is None or was.op_type != node.op_type:
                continue
            if not node.metadata_props:
                node.metadata_props.extend(was.metadata_props)
            if not node.doc_string:
                node.doc_string = was.doc_string


def _keep_constants_home(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """onnx-graphsurgeon exports a constant of an outer graph that only If/Loop bodies read as an initializer of
    every body that reads it (silero_vad_op15's LSTM weights, read by both branches of an If: two copies after a
    shrink, the file 92K weights larger). Each goes back to the graph `like` held it in (a Constant node lifted by
    `_lift_constant_nodes` comes back an initializer there), once; its values are the exported ones (sliced alike
    in every copy: one gs tensor)."""
    homes: dict[str, str] = {}
    twice: set[str] = set()
    for sc in scopes(like.graph):
        for name in local_constants(sc.graph):
            if name in homes:
                twice.add(name)
            else:
                homes[name] = sc.path
    for name in twice:  # defined in several scopes: where each copy belongs is not ours to say
        del homes[name]
    graphs = {sc.path: sc.graph for sc in scopes(out.graph)}
    moved: dict[str, onnx.TensorProto] = {}
    for path, graph in graphs.items():
        strays = {t.name for t in graph.initializer if homes.get(t.name, path) != path and homes[t.name] in graphs}
        if not strays:
            continue
        for t in graph.initializer:
            if t.name in strays:
                moved.setdefault(t.name, onnx.TensorProto()).CopyFrom(t)
        kept = [t for t in graph.initializer if t.name not in strays]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    for name, t in moved.items():
        home = graphs[homes[name]]
        if all(i.name != name for i in home.initializer):
            home.initializer.append(t)


def _keep_io_types(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """Graph inputs and outputs keep their shapes here, so they keep their declarations too: onnx-graphsurgeon
    exports a sequence-of-maps output (ZipMap) as a sequence of untyped tensors, which onnxruntime refuses."""
    for got, had in ((out.graph.input, like.graph.input), (out.graph.output, like.graph.output)):
        original = {vi.name: vi for vi in had}
        for vi in got:
            if vi.name in original:
                vi.CopyFrom(original[vi.name])


def _relist_initializer_inputs(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    """IR < 4 needs every initializer listed as a graph input too; onnx-graphsurgeon drops them: list them again,
    with their new shapes."""
    listed = {i.name for i in like.graph.input} & {t.name for t in like.graph.initializer}
    if not listed and like.ir_version >= 4:
        return
    present = {i.name for i in out.graph.input}
    for t in out.graph.initializer:
        if t.name not in present and (t.name in listed or like.ir_version < 4):
            out.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def body_units_note(model: onnx.ModelProto) -> str | None:
    """What dead-neuron removal leaves in bodies, said: the output units of Gemm/MatMul/Conv layers inside Loop, Scan
    and If bodies whose weights are all zero there, and the all-zero columns of a [rows, D] table a lookup there reads
    (Left alone: the walk does not enter bodies). Sweep 41: a Keras SimpleRNN stack (tf2onnx: a Loop per layer) with
    4 hidden units zeroed kept them, and the run said nothing; sweep 42: so did torch legacy's `nn.EmbeddingBag` (a
    Loop over the bags whose body Gathers the table) with 4 zero columns."""
    from onnxprune.passes.weights import find_prunable  # the inventory's reading of bodies (tf2onnx's carried weights)

    consts, found = all_constants(model.graph), {}
    for w in find_prunable(model, with_macs=False).prunable:
        table = w.kind == "embedding" and w.op_type == "Gather"
        if not w.scope or w.name not in consts or not (table or (w.kind in ("fc", "conv") and w.out_axis is not None)):
            continue
        a = onnx.numpy_helper.to_array(consts[w.name])
        if a.ndim < 2 or (table and a.ndim != 2):
            continue
        axis = 1 if table else w.out_axis
        zero = int((~np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).any(axis=1)).sum())
        if zero:
            found[f"{w.op_type} '{w.node}'"] = zero
    if not found:
        return None
    return (f"{sum(found.values())} output unit(s) with all-zero weights kept in layers inside Loop/Scan/If bodies "
            f"({listed(f'{k}: {v}' for k, v in found.items())}): dead-neuron removal does not enter bodies; the "
            f"zeros are stored sparse where that is smaller")


@register_pass("dead-neurons")
class RemoveDeadNeurons(Pass):
    """Drop channels that carry nothing, from every member of their group at once.

    Rules:
      1. A channel goes when each consumer weight reading it is zero, or it is a constant that consumer folds into
         its bias exactly (Gemm, MatMul; Conv without padding).
      2. Never empty a tensor; graph inputs and outputs keep their shapes; graph outputs, protected initializers,
         initializers shared by unlike readers and ops with no channel rule block (the report's `blocked` says
         which); a weight alike layers read (a Siamese net's towers) ties their channels and is sliced once.
      3. State masks are sliced with their weights, so masks and graph keep lining up.
      4. The notes say what blocked a removal (at most MAX_NOTES lines); the per-layer counts are in `report`.
    Left alone: grouped (non-depthwise) convs, ops without a rule, constants read by padded convs or ConvTranspose,
    layers inside Loop/Scan/If bodies (their all-zero output units are counted in a note, `body_units_note`).
    """

    def __init__(self, gather_inputs: bool = False, protected: set[str] | frozenset[str] = frozenset(),
                 crop_inputs: bool = False) -> None:
        self.gather_inputs = gather_inputs
        self.crop_inputs = crop_inputs
        self.protected = frozenset(protected)
        self.report: DeadNeuronReport | None = None

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        out, self.report = remove_dead_neurons(model, gather_inputs=self.gather_inputs, crop_inputs=self.crop_inputs,
                                               protected=self.protected)
        for name, axis, keep in self.report.slices:
            if name in state.masks:
                state.masks[name] = np.compress(keep, state.masks[name], axis=axis)
        state.notes.extend(self.report.blocked[:MAX_NOTES])  # the per-layer counts are in self.report.layers
        if self.report.aligned:
            state.notes.append(self.report.aligned_note())
        inside = body_units_note(out)
        if inside:
            state.notes.append(inside)
        return PassResult(model=out, modified=out is not model)
