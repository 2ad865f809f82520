"""Rules for layout ops: Flatten, Reshape, Transpose, (Un)Squeeze, Concat, Split, Slice, Pad, Cast, Gather(ND),
DepthToSpace/SpaceToDepth, and Shape (read for the batch size only)."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.builder import Builder
from onnxprune.passes.channel_groups.graph import Channels
from onnxprune.passes.channel_groups.rules_elementwise import _merge
from onnxprune.passes.channel_groups.util import NAN, _attr, _const, _opt_input


def _spread(c: Channels, outer: int, inner: int) -> Channels:
    """Channel k becomes `inner` consecutive features, the whole block repeated `outer` times (Flatten)."""
    return Channels(-1, np.tile(np.repeat(c.ids, inner), outer), np.tile(np.repeat(c.value, inner), outer))


def _static(dims) -> bool:
    return all(isinstance(d, int) and d >= 0 for d in dims)


def _flatten(b: Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, s = b.ch(x), b.shape(x)
    if s is None:
        return b.opaque(node, "needs the input shape, which shape inference did not give")
    r = len(s)
    axis, ch = _attr(node, "axis", 1) % r if r else 0, r + c.axis
    if ch < axis or not _static(s[axis:ch] + s[ch + 1 :]):
        return b.opaque(node, f"flattens '{x.name}' {s} without static spatial sizes behind the channel axis")
    b.set(node.outputs[0], _spread(c, math.prod(s[axis:ch]), math.prod(s[ch + 1 :])))


# ops a computed shape goes through on its way from a Shape to a Reshape (tf2onnx's Keras Flatten: Shape ─ Gather
# [0, 2, 3, 1] ─ Cast ─ Slice [0:1] ─ Concat with [800] ─ Cast ─ Reshape)
SHAPE_OPS = ("Shape", "Cast", "Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Identity")


_FOLD = {  # numpy forms of the ops torch's legacy exporter computes constant shapes with (expand's -1 handling)
    "Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Equal": np.equal, "Where": np.where, "Neg": np.negative,
    "Abs": np.abs, "Max": np.maximum, "Min": np.minimum, "Identity": lambda a: a,
    "Reciprocal": np.reciprocal,  # GeM pooling's 1 / p (sweep 47), a float op: never a shape's
}


def _folded(t, depth: int = 0) -> np.ndarray | None:
    """A small tensor computed from constants alone (ConstantOfShape, arithmetic, Equal, Where, Cast, Concat,
    (Un)Squeeze), as numpy computes it; None when an input is not such a tensor. torch's legacy exporter writes
    `x.expand(-1, k, -1)` to Expand(x, Where(Equal(S, -1), 1, S)) with the 1s from a ConstantOfShape (sweep 38's L3)."""
    K = _const(t)
    if K is not None or depth > 8 or len(t.inputs) != 1:
        return K
    node = t.inputs[0]
    if node.op not in _FOLD and node.op not in ("ConstantOfShape", "Cast", "Concat", "Unsqueeze", "Squeeze"):
        return None
    args = []
    for i in node.inputs:  # stops at the first input that is no such tensor
        args.append(_folded(i, depth + 1))
        if args[-1] is None or np.size(args[-1]) > 64:
            return None
    if node.op in _FOLD:
        return np.asarray(_FOLD[node.op](*args))
    if node.op == "ConstantOfShape":
        value = node.attrs.get("value")
        fill = value.values.reshape(-1)[0] if isinstance(value, gs.Constant) else np.float32(0)
        return np.full([int(d) for d in np.ravel(args[0])], fill, dtype=np.asarray(fill).dtype)
    if node.op == "Cast":
        return args[0].astype(onnx.helper.tensor_dtype_to_np_dtype(int(_attr(node, "to", 1))))
    if node.op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=int(_attr(node, "axis", 0)))
    if node.op in ("Unsqueeze", "Squeeze") and len(args) <= 2:
        axes = args[1] if len(args) == 2 else _attr(node, "axes", None)
        if axes is None:
            return np.squeeze(args[0]) if node.op == "Squeeze" else None
        axes = [int(a) for a in np.ravel(axes)]
        return np.expand_dims(args[0], axes) if node.op == "Unsqueeze" else np.squeeze(args[0], tuple(axes))
    return None


def _shape_atoms(b: Builder, t, depth: int = 0) -> list | None:
    """The entries of a small int tensor computed from shapes: ("dim", tensor name, axis) for an entry read from a
    tensor's shape, an int for a constant (or a tensor computed from constants alone: `_folded`); None when some op on
    the way is not one of SHAPE_OPS with constant indices (the entry is then unknown)."""
    K = _folded(t)
    if K is not None:
        return [int(v) for v in np.ravel(K)] if np.issubdtype(np.asarray(K).dtype, np.integer) else None
    if depth > 12 or len(t.inputs) != 1 or t.inputs[0].op not in SHAPE_OPS:
        return None
    node = t.inputs[0]
    if node.op == "Shape":
        r = b.rank(node.inputs[0])
        if r is None:
            return None
        lo, hi = _attr(node, "start", 0), _attr(node, "end", r)
        return [("dim", node.inputs[0].name, a) for a in range(r)[slice(lo, hi)]]
    if node.op == "Concat":
        parts = [_shape_atoms(b, i, depth + 1) for i in node.inputs]
        return None if any(p is None for p in parts) else [a for p in parts for a in p]
    src = _shape_atoms(b, node.inputs[0], depth + 1)
    if src is None or node.op in ("Cast", "Identity", "Unsqueeze", "Squeeze"):
        return src
    if node.op == "Gather":
        idx = _const(node.inputs[1])
        if idx is None or _attr(node, "axis", 0) != 0:
            return None
        return [src[int(i)] for i in np.ravel(idx)]
    starts, ends = _const(_opt_input(node, 1)), _const(_opt_input(node, 2))  # Slice along its only axis
    axes, steps = _opt_input(node, 3), _opt_input(node, 4)
    if starts is None or ends is None or (axes is not None and np.ravel(_const(axes) if _const(axes) is not None
                                                                        else [1]).tolist() != [0]):
        return None
    if steps is not None and (_const(steps) is None or np.ravel(_const(steps)).tolist() != [1]):
        return None
    return src[slice(int(np.ravel(starts)[0]), int(min(np.ravel(ends)[0], len(src))))]


def _shape(b: Builder, node: gs.Node) -> None:
    """Shape of a channel-carrying tensor: harmless when nothing downstream reads the channel count (tf2onnx's
    Flatten takes only the batch size from it). Follows its output through SHAPE_OPS and checks each tensor that
    leaves them."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r is None:
        return b.opaque(node, "needs the input rank, which shape inference did not give")
    todo, seen = [node.outputs[0]], set()
    while todo:
        t = todo.pop()
        if t.name in seen:
            continue
        seen.add(t.name)
        inner = [n for n in t.outputs if n.op in SHAPE_OPS and n.op != "Shape"]
        closing = [n for n in t.outputs if (t is node.outputs[0] and _closes_group_norm(b, n, t))
                   or _like(n) is not None or _reads_own_count(b, n, t, x) or _into_shuffle(b, n, t, x)
                   or _sizes_another(b, n, t, x)]
        if len(inner) + len(closing) < len(t.outputs) or any(t is o for o in b.cg.graph.outputs):
            atoms = _shape_atoms(b, t)
            if atoms is None or ("dim", x.name, r + c.axis) in atoms:
                return b.opaque(node, "gives the channel count to an op that reads it")
        todo += [o for n in inner for o in n.outputs]


def _like(node: gs.Node):
    """(x, perm) when `node` is ConstantOfShape(Shape(x)) of x's whole shape (tf's zeros_like / ones_like), perm None,
    or of that shape permuted by a Gather of constant indices (tf2onnx's zeros_like of an NHWC tensor reads the shape
    of its NCHW twin: Gather [0, 2, 3, 1]); else None."""
    if node.op != "ConstantOfShape" or len(node.inputs[0].inputs) != 1:
        return None
    src, perm = node.inputs[0].inputs[0], None
    if src.op == "Gather" and len(src.inputs[0].inputs) == 1:
        idx = _const(src.inputs[1])
        if idx is None or _attr(src, "axis", 0) != 0:
            return None
        perm, src = [int(i) for i in np.ravel(idx)], src.inputs[0].inputs[0]
    if src.op != "Shape" or _attr(src, "start", 0) != 0 or _attr(src, "end", None) is not None:
        return None
    return src.inputs[0], perm


def _constant_of_shape(b: Builder, node: gs.Node) -> None:
    """ConstantOfShape(Shape(x)), tf's zeros_like / ones_like: a tensor of x's channels (on the axis a permuting Gather
    moves them to), each the one fill value; the Shape follows the channels left by itself. tf2onnx writes
    tf.where(cond, x, zeros_like(x)) (Keras' hard_shrink, soft_shrink, sparse_plus) as Mul(Cast(Not(cond)),
    zeros_like(x)) + Mul(Cast(cond), x) (sweep 37: "consumer Shape ... gives the channel count to an op that reads
    it"). Of any other shape it carries none."""
    like = _like(node)
    c = b.ch(like[0]) if like is not None else None
    r = b.rank(like[0]) if like is not None else None
    if c is None or r is None:
        _filled(b, node)
        return None
    axis, perm = c.axis, like[1]
    if perm is not None:
        perm = [p % r for p in perm]
        if sorted(perm) != list(range(r)):
            return None
        axis = perm.index(r + c.axis) - r
    fill = node.attrs.get("value")
    value = 0.0 if fill is None else float(np.ravel(getattr(fill, "values", fill))[0])
    b.set(node.outputs[0], Channels(axis, c.ids, np.full(len(c.ids), value)))


def _filled(b: Builder, node: gs.Node) -> None:
    """ConstantOfShape of a shape whose last entry is a constant count n (no entry a channel count) read only as the
    data operand of Gemm/MatMul layers: n positions of one fill value, a class each, which a weight shared with other
    readers joins to the positions they carry (`Builder.tie`); the count is rewritten as they go. Sweep 40: torch's
    `h = torch.zeros(x.shape[0], 64)` before an nn.RNNCell unrolled over 28 steps: the first step's Gemm reads it with
    the shared W_hh, and "'cell.weight_hh' is shared with a reader whose input there carries no channels" kept every
    dead hidden unit. Of any other shape, or read otherwise, it carries none."""
    out = node.outputs[0]
    atoms = _shape_atoms(b, node.inputs[0])
    if (not atoms or len(atoms) < 2 or not isinstance(atoms[-1], int) or atoms[-1] < 1
            or any(isinstance(a, tuple) and _channel_dim(b, a) for a in atoms)):
        return
    if not out.outputs or any(r.op not in ("Gemm", "MatMul") or r.inputs[0] is not out for r in out.outputs):
        return
    fill = node.attrs.get("value")
    value = 0.0 if fill is None else float(np.ravel(getattr(fill, "values", fill))[0])
    n = atoms[-1]
    c = Channels(-1, b.cg.new_classes(n, f"ConstantOfShape '{node.name}'"), np.full(n, value))
    if _rewrites_count(b, node, out, c, len(atoms) - 1, shape_input=0):
        b.set(out, c)


def _before_casts(t):
    """`t`, or the start of the chain of Casts that made it."""
    for _ in range(4):
        if len(t.inputs) != 1 or t.inputs[0].op != "Cast":
            return t
        t = t.inputs[0].inputs[0]
    return t


def _closes_group_norm(b: Builder, reshape: gs.Node, shape) -> bool:
    """Reshape `reshape` reads `shape` (Shape of x) to close torch's legacy GroupNorm of x: x's new channel count is
    what it must read (`_legacy_group_norm_parts`)."""
    if reshape.op != "Reshape" or len(reshape.inputs) < 2 or reshape.inputs[1] is not shape:
        return False
    t = _before_casts(reshape.inputs[0])
    norm = t.inputs[0] if len(t.inputs) == 1 else None
    if norm is None or norm.op != "InstanceNormalization":
        return False
    t = _before_casts(norm.inputs[0])
    if len(t.inputs) != 1 or t.inputs[0].op != "Reshape":
        return False
    opener = t.inputs[0]
    parts = _legacy_group_norm_parts(b, opener)
    return parts is not None and parts[2] is reshape


def _batch_only(b: Builder, atoms: list, x) -> bool:
    """atoms is [dim 0 of x] (or of a tensor x is made from by ops that keep axis 0 the batch: tf2onnx's
    NCHW -> NHWC Transpose before the Flatten; Keras 3's torch export, a Cast to the same type after it)."""
    if len(atoms) != 1 or not isinstance(atoms[0], tuple) or atoms[0][2] != 0:
        return False
    t = x
    for _ in range(8):
        if t.name == atoms[0][1]:
            return True
        if len(t.inputs) != 1:
            return False
        p = t.inputs[0]
        if p.op not in ("Cast", "Identity") and (p.op != "Transpose" or list(_attr(p, "perm", [0]))[0] != 0):
            return False
        t = p.inputs[0]
    return False


def _computed_flatten(b: Builder, node: gs.Node, x) -> tuple[np.ndarray, object] | None:
    """A Reshape's shape computed as Concat([N from x's shape], [features]) (through Casts): ([0, features], the
    features constant), read as the constant shape [0, features]; None when it is not that."""
    k = node.inputs[1]
    while len(k.inputs) == 1 and k.inputs[0].op in ("Cast", "Identity"):
        k = k.inputs[0].inputs[0]
    if len(k.inputs) != 1 or k.inputs[0].op != "Concat" or len(k.inputs[0].inputs) != 2:
        return None
    head, tail = k.inputs[0].inputs
    atoms, F = _shape_atoms(b, head), _const(tail)
    if atoms is None or F is None or F.size != 1 or not _batch_only(b, atoms, x):
        return None
    return np.array([0, int(np.ravel(F)[0])], dtype=np.int64), tail


def _channel_reshape(b: Builder, node: gs.Node, x, c: Channels, s, S) -> bool:
    """A Reshape to a constant shape that keeps the channel axis whole with the same elements before and after it
    (tf2onnx writes its NHWC -> NCHW Transpose of a [N, 1, 1, C] map as Reshape to [-1, C, 1, 1]; a [N, C] ->
    [N, C, 1, 1] unsqueeze): channel k stays channel k, on the axis where the products line up; the shape entry
    follows the kept channels. Or one that merges the channel axis with the axes right after it, channels outermost
    ([N, C, 2, 2, H, W] -> [N, 4C, H, W]: the last Reshape of torch's pixel_unshuffle, written as Reshape ->
    Transpose -> Reshape, sweep 23's "not a flattening Reshape"): channel k becomes the m consecutive channels
    k*m ... k*m+m-1, m the product of the merged axes, and the entry is m times the kept channels. False (nothing
    recorded) when it is neither."""
    if S is None or s is None or np.asarray(S).ndim != 1 or _attr(node, "allowzero", 0) or not _static(s[1:]):
        return False
    ch = len(s) + c.axis
    T = [int(v) for v in np.ravel(S)]
    T = [s[i] if v == 0 and i < len(s) else v for i, v in enumerate(T)]  # 0 copies the input's dim
    if len(T) < 2:  # a Reshape to a scalar or a vector: no axis stays beside the batch's (hey_jarvis' If condition)
        return False
    head = T[0] if T[0] is not None else -1
    if ch < 1 or any(not isinstance(v, int) or v < 1 for v in T[1:]) or \
            not (head == -1 or (isinstance(s[0], int) and head == s[0])):
        return False
    before = math.prod(s[1:ch])
    found = next(((j, math.prod(s[ch + 1:end])) for end in range(ch + 1, len(s) + 1) for j in range(1, len(T))
                  if math.prod(T[1:j]) == before and T[j] == math.prod(s[ch:end])
                  and math.prod(T[j + 1 :]) == math.prod(s[end:])), None)
    if found is None:
        return False
    at, m = found
    k = node.inputs[1]

    def edit(keep: np.ndarray) -> None:
        new = np.array(np.ravel(S), dtype=np.asarray(S).dtype)
        new[at] = int(keep.sum()) * m
        node.inputs[1] = gs.Constant(b.cg.unique(f"{k.name}_pruned"), new)

    b.edit(x, edit)
    b.set(node.outputs[0], Channels(at - len(T), np.repeat(c.ids, m), np.repeat(c.value, m)))
    return True


def _merge_before(b: Builder, node: gs.Node, x, c: Channels, s, S) -> bool:
    """A Reshape to a constant shape that merges a last channel axis with the static axes right before it, the
    entries ahead copied (0, or the same static size): a bidirectional LSTM's Y, [T, N, 2, H] -> [T, N, 2H] (torch's
    Reshape to [0, 0, -1]). Channel k becomes positions d·C + k, every block d of the merged axes; a merged entry
    that is not -1 follows the kept channels. False (nothing recorded) when it is not that."""
    if S is None or s is None or np.asarray(S).ndim != 1 or _attr(node, "allowzero", 0) or c.axis != -1:
        return False
    T = [int(v) for v in np.ravel(S)]
    j = len(T) - 1  # the merged entry; the input's axes j .. last merge into it
    if j < 1 or j >= len(s) - 1 or not _static(s[j:-1]):
        return False
    if any(not (v == 0 or (isinstance(s[i], int) and v == s[i])) for i, v in enumerate(T[:j])):
        return False
    outer = math.prod(s[j:-1])
    if T[j] != -1 and T[j] != outer * len(c.ids):
        return False
    k = node.inputs[1]

    def edit(keep: np.ndarray) -> None:
        if T[j] == -1:
            return
        new = np.array(np.ravel(S), dtype=np.asarray(S).dtype)
        new[j] = outer * int(keep.sum())
        node.inputs[1] = gs.Constant(b.cg.unique(f"{k.name}_pruned"), new)

    b.edit(x, edit)
    b.set(node.outputs[0], _spread(c, outer, 1))
    return True


def _reshape_entries(b: Builder, node: gs.Node) -> list | None:
    """The entries of Reshape `node`'s target shape, constant or computed (`_shape_atoms`), a 0 (allowzero 0) read
    as the input's dim at its place; None when some entry is unknown."""
    T = _shape_atoms(b, node.inputs[1]) if len(node.inputs) > 1 else None
    if T is None or _attr(node, "allowzero", 0):
        return T
    return [("dim", node.inputs[0].name, i) if isinstance(a, int) and a == 0 else a for i, a in enumerate(T)]


def _channel_dim(b: Builder, atom) -> bool:
    """Entry `atom` ("dim", tensor, axis) is the size of a tensor's channel axis (or of a channel-carrying tensor
    whose rank is unknown): it changes as channels go."""
    c, s = b.cg.channels.get(atom[1]), b.shapes.get(atom[1])
    return c is not None and (s is None or atom[2] == len(s) + c.axis)


def _count_of(b: Builder, atom) -> int | None:
    """The channel count entry `atom` is (the size of a channel-carrying tensor's channel axis), else None. Read from
    another tensor than the one reshaped, it follows the kept channels only where they are that tensor's classes:
    `check_counts` sees to it."""
    if not isinstance(atom, tuple) or not _channel_dim(b, atom):
        return None
    return len(b.cg.channels[atom[1]].ids)


def _static_entry(b: Builder, atom) -> int | None:
    """An entry's value where it is fixed: a constant, or a static size of a tensor's axis that is not a channel
    axis; None otherwise."""
    if isinstance(atom, int):
        return atom
    s = b.shapes.get(atom[1])
    if s is None or _channel_dim(b, atom) or not isinstance(s[atom[2]], int):
        return None
    return s[atom[2]]


def _kept_axis(b: Builder, node: gs.Node, x, c: Channels | None, s) -> tuple[int, list] | None:
    """(j, entries) when Reshape `node` keeps x's channel axis whole as entry j of its target shape, constant or
    computed (`_reshape_entries`), whatever the axes before it: entry j is the channel count (x's own Shape entry for
    its channel axis, or a constant equal to it), the entries after it are fixed and multiply to the sizes behind x's
    channel axis, and no entry before it is a channel count (at most one -1). The reshape being valid, the entries
    before j then multiply to the sizes before x's channel axis, which channels going do not change, so channel k
    stays channel k on axis j. One -1 after the channel axis is what lies behind it where the entries before j are
    x's own leading sizes (`_leading_dims`: torch legacy's x.flatten(2), sweep 39's attention pooling). Hugging
    Face's Conv1D (GPT-2): [N, S, C] -> [-1, C] and [N*S, C] -> [N, S, C], the N and S read from a tensor's Shape, C
    from x's own Shape or a constant. None otherwise."""
    if c is None or s is None or len(node.inputs) < 2:
        return None
    T = _reshape_entries(b, node)
    ch = len(s) + c.axis
    if T is None or ch < 0 or not _static(s[ch + 1 :]):
        return None
    own, n, behind = ("dim", x.name, ch), len(c.ids), math.prod(s[ch + 1 :])
    for j in range(len(T) - 1, -1, -1):
        tail = [_static_entry(b, a) for a in T[j + 1 :]]
        if any(v is None or (v < 1 and v != -1) for v in tail) or tail.count(-1) > 1:
            return None  # further left only adds entries
        if not (T[j] == own or (isinstance(T[j], int) and T[j] == n) or _count_of(b, T[j]) == n):
            continue
        head = T[:j]
        if -1 in tail:  # torch's x.flatten(2) of [N, C, H, W]: [Shape(x)[0], Shape(x)[1], -1]; with the head x's own
            if _leading_dims(b, head, x, s, ch):  # sizes before its channel axis, the -1 is what lies behind it
                return j, T
            continue
        if math.prod(tail) != behind:
            continue
        if sum(isinstance(a, int) and a == -1 for a in head) > 1 or \
                any(isinstance(a, int) and a < 1 and a != -1 for a in head) or \
                any(isinstance(a, tuple) and _channel_dim(b, a) for a in head):
            return None
        return j, T
    return None


def _leading_dims(b: Builder, head: list, x, s, ch: int) -> bool:
    """Whether the entries `head` are x's own sizes of its axes before the channel axis, each read from x's Shape or
    a constant equal to a static one."""
    return len(head) == ch and all(a == ("dim", x.name, i) or (isinstance(a, int) and a == s[i] and a >= 1)
                                   for i, a in enumerate(head))


def _entry_path(b: Builder, node: gs.Node, j: int, at: int = 1) -> tuple[list[tuple[gs.Node, int]], int] | None:
    """([(reader, input index), ...] from `node`'s shape input (input `at`: a Reshape's 1) down to the integer
    constant that gives entry j of its target shape, through Cast, Identity, (Un)Squeeze and Concat; the entry's index
    in that constant), or None when entry j is not read from a constant that way."""
    path, reader, i = [], node, at
    for _ in range(16):
        path.append((reader, i))
        t = reader.inputs[i]
        if _const(t) is not None:
            return path, j
        if len(t.inputs) != 1:
            return None
        p = t.inputs[0]
        if p.op in ("Cast", "Identity", "Unsqueeze", "Squeeze"):
            reader, i = p, 0
        elif p.op == "Concat":
            for k, part in enumerate(p.inputs):
                atoms = _shape_atoms(b, part)
                if atoms is None:
                    return None
                if j < len(atoms):
                    reader, i = p, k
                    break
                j -= len(atoms)
            else:
                return None
        else:
            return None
    return None


def _computed_channel_reshape(b: Builder, node: gs.Node, x, c: Channels | None, s) -> bool:
    """A Reshape that keeps x's channel axis whole (`_kept_axis`) under a shape whose other entries need not be
    static: channel k stays channel k on that axis. An entry read from x's own Shape follows the kept channels by
    itself; a constant is rewritten, in a copy of the nodes that compute the shape where other nodes read them too
    (torch's dynamo export computes one shape for every layer of the same width). False when it is not that.
    Sweep 25: GPT-2's Conv1D layers kept every neuron ("not a flattening Reshape with a constant shape")."""
    kept = _kept_axis(b, node, x, c, s)
    if kept is None:
        return False
    j, T = kept
    if isinstance(T[j], int) and not _rewrites_count(b, node, x, c, j):
        return False
    b.set(node.outputs[0], Channels(j - len(T), c.ids, c.value))
    return True


def _merged_axes(b: Builder, node: gs.Node, x, c: Channels | None, s) -> bool:
    """A Reshape that merges x's channel axis with static axes right after it, channels outermost, under a shape
    whose entries before it are x's own leading sizes (read from its Shape, a 0 copying them, or a constant equal to
    a static one) and whose entries after it are fixed: channel k becomes the m consecutive channels k*m ...
    k*m+m-1, m the product of the merged axes. The merged entry is a -1 (it follows by itself) or a constant m times
    the channel count (rewritten). Sweep 40: torch legacy's `repeat_interleave(2, dim=1)` (Unsqueeze, Tile [1, 1,
    2, 1, 1], Reshape to [Shape(t)[0], -1, Shape(t)[3:5]]) and its pixel_unshuffle of a map with a dynamic batch
    (Reshape to [0, -1, 1, 1, 0, 0]) kept every channel before them. False when it is not that."""
    if c is None or s is None or len(node.inputs) < 2:
        return False
    T = _reshape_entries(b, node)
    ch = len(s) + c.axis
    if T is None or ch < 1 or len(T) <= ch or not _static(s[ch:]) or not _leading_dims(b, T[:ch], x, s, ch):
        return False
    tail = [_static_entry(b, a) for a in T[ch + 1:]]
    if any(v is None or v < 1 for v in tail):
        return False
    end = next((e for e in range(ch + 2, len(s) + 1) if math.prod(s[e:]) == math.prod(tail)), None)
    if end is None:
        return False
    m, n = math.prod(s[ch + 1:end]), len(c.ids)
    if m < 2 or not (T[ch] == -1 or (isinstance(T[ch], int) and T[ch] == n * m)):
        return False
    if T[ch] != -1 and not _rewrites_count(b, node, x, c, ch, per=m):
        return False
    b.set(node.outputs[0], Channels(ch - len(T), np.repeat(c.ids, m), np.repeat(c.value, m)))
    return True


def _split_axes(b: Builder, node: gs.Node, x, c: Channels | None, s) -> bool:
    """A Reshape that splits x [N, C], its channels on axis 1, into channels and static axes after them, channels
    outermost: nn.Unflatten(1, (16, 4, 4)) of a Linear's 256 units, [N, 256] -> [N, 16, 4, 4]. Channel j is units
    j*m ... j*m+m-1, m the product of the new axes, which become one class: a map channel goes when all its units
    do, and holds a constant only where they hold the same one. The entries before it are x's own leading sizes
    (`_leading_dims`) or one -1 beside a constant channel entry, which is rewritten to the kept units over m; a -1
    there follows by itself. Sweep 41: a dynamo export's Reshape to [-1, 16, 4, 4] after a Linear kept every unit
    ("not a flattening Reshape ... it splits the channels"). Not [N, S, D] -> [N, S, H, d], attention's heads: a
    head would be a channel that Q K^T reads on a batch axis. False when it is not that."""
    if c is None or s is None or len(node.inputs) < 2:
        return False
    T = _reshape_entries(b, node)
    ch = len(s) + c.axis
    if T is None or len(s) != 2 or ch != 1 or len(T) < 3 or not isinstance(s[1], int):
        return False
    head, tail = T[:ch], [_static_entry(b, a) for a in T[ch + 1:]]
    wild = [i for i, a in enumerate(head) if isinstance(a, int) and a == -1]
    if any(v is None or v < 1 for v in tail) or len(wild) > 1 or (wild and T[ch] == -1):
        return False
    if not _leading_dims(b, [("dim", x.name, i) if i in wild else a for i, a in enumerate(head)], x, s, ch):
        return False
    m, n = math.prod(tail), len(c.ids)
    if m < 2 or n % m or not (T[ch] == -1 or (isinstance(T[ch], int) and T[ch] == n // m)):
        return False
    if T[ch] != -1 and not _rewrites_count(b, node, x, c, ch, div=m):
        return False
    blocks, values = c.ids.reshape(n // m, m), c.value.reshape(n // m, m)
    for row in blocks.tolist():
        for i in row[1:]:
            b.cg.union(row[0], i)
    same = (values == values[:, :1]).all(axis=1)  # NaN (varies) is never the same
    b.set(node.outputs[0], Channels(ch - len(T), blocks[:, 0].copy(), np.where(same, values[:, 0], NAN)))
    return True


def _rewrites_count(b: Builder, node: gs.Node, x, c: Channels, j: int, per: int = 1, shape_input: int = 1,
                    div: int = 1) -> bool:
    """Entry j of `node`'s target shape (its input `shape_input`: 1 for Reshape and Expand, 0 for ConstantOfShape) is
    a constant channel count (`per` times it, or a `div`-th of it): an edit of x's channels rewrites it to the kept
    count (times `per`, over `div`), in a copy of the nodes that compute the shape where other nodes read them too.
    False when the entry is not read from a constant through Cast, Identity, (Un)Squeeze and Concat."""
    found = _entry_path(b, node, j, shape_input)
    if found is None:
        return False
    path, at = found
    last, i = path[-1]
    if last.inputs[i].name in b.protected:
        b.block(c.ids, f"the channel count '{last.inputs[i].name}' of {node.op} '{node.name}' is protected")

    def edit(keep: np.ndarray) -> None:
        old = last.inputs[i]
        new = np.array(_const(old), copy=True)
        new.reshape(-1)[at] = int(keep.sum()) * per // div
        current = gs.Constant(b.cg.unique(f"{old.name}_pruned"), new)
        if not any(len(r.outputs[0].outputs) > 1 for r, _ in path[1:]):
            last.inputs[i] = current
            return
        for r, k in reversed(path[1:]):  # the shape is shared: this node gets its own copy of the chain
            out = r.outputs[0]
            copy = gs.Node(r.op, b.cg.unique(f"{r.name}_pruned"), dict(r.attrs),
                           [current if m == k else t for m, t in enumerate(r.inputs)],
                           [gs.Variable(b.cg.unique(f"{out.name}_pruned"), dtype=out.dtype, shape=out.shape)],
                           domain=r.domain)
            b.cg.graph.nodes.append(copy)
            current = copy.outputs[0]
        node.inputs[shape_input] = current

    b.edit(x, edit)
    return True


def _tile(b: Builder, node: gs.Node) -> None:
    """Tile of other axes than the channels' (Keras' UpSampling1D: Unsqueeze, Tile [1, 1, 2, 1], Reshape back with
    the count read from the input's Shape, `check_counts`): every copy holds the channels in place (sweep 39's L2).
    Repeats on the channel axis copy the channels: kept."""
    x, reps = node.inputs[:2]
    c, r, R = b.ch(x), b.rank(x), _folded(reps) if b.ch(reps) is None else None
    if R is None or r is None or np.size(R) != r:
        return b.opaque(node, "has repeats that are not constants, or an input rank shape inference did not give")
    if int(np.ravel(R)[r + c.axis]) != 1:
        return b.opaque(node, "repeats the channel axis")
    b.set(node.outputs[0], Channels(c.axis, c.ids, c.value))


def _expand(b: Builder, node: gs.Node) -> None:
    """Expand broadcasts from the last axis, so the channels keep their place counted from the end; the target's
    entry there is 1 (the input's count is kept), a constant count (rewritten to the kept count), or a count read
    from a tensor whose channels these are (`check_counts`): an SE block's gate `y.expand_as(h)` (torch legacy: the
    target is Shape(h); dynamo: a Concat holding the count), a feature vector expanded against prototypes
    ([N, 1, C] -> [N, K, C]). Sweep 38's L3: "Expand ... has no channel rule"."""
    x, k = node.inputs[:2]
    c, r = b.ch(x), b.rank(x)
    T = _shape_atoms(b, k) if b.ch(k) is None else None
    if T is None or r is None:
        return b.opaque(node, "has a target shape that is neither constant nor read from shapes, or an input rank "
                              "shape inference did not give")
    j = len(T) + c.axis
    if len(c.ids) == 1 and (T[j] if j >= 0 else 1) != 1:
        return b.opaque(node, "broadcasts one channel to many")
    if not _expands_to_count(b, node, x, c, T):
        return b.opaque(node, "expands to a channel count it does not read from a constant or from these channels")
    b.set(node.outputs[0], Channels(c.axis, c.ids, c.value))


def _expands_to_count(b: Builder, expand: gs.Node, x, c: Channels, T: list) -> bool:
    """Whether Expand `expand`'s target `T` (its `_shape_atoms`) is x's channel count where x's channels stand,
    counted from the end: 1 (the count kept), the count read from the Shape of a tensor holding these channels
    (`check_counts` sees that it is theirs), or a constant equal to it, rewritten to the kept count."""
    j, n = len(T) + c.axis, len(c.ids)
    entry = T[j] if j >= 0 else 1
    return (entry == 1 or (isinstance(entry, tuple) and _count_of(b, entry) == n)
            or (isinstance(entry, int) and entry == n and _rewrites_count(b, expand, x, c, j)))


def expanded_gate(b: Builder, node: gs.Node, x, c: Channels, k) -> bool:
    """Whether `k`, the one input of `node` (a Mul, or a Div of x's channels) beside x's channels, is an Expand of a
    factor shared by every channel (`_gate`: size 1 on their axis) to x's channel count, read from a constant
    (rewritten to the kept count) or from the Shape of a tensor holding these very channels (`check_counts`):
    F.normalize's `x / norm.clamp_min(eps).expand_as(x)`, both torch exporters. Then k is read by `node` alone and
    carries x's channels; its count follows the kept ones."""
    from onnxprune.passes.channel_groups.rules_elementwise import _gate

    expand = k.inputs[0] if len(k.inputs) == 1 else None
    if expand is None or expand.op != "Expand" or len(expand.inputs) < 2 or len(k.outputs) != 1:
        return False
    d = expand.inputs[0]
    T = _shape_atoms(b, expand.inputs[1]) if b.ch(expand.inputs[1]) is None else None
    if b.ch(d) is not None or T is None or not _gate(b, x, c, d):
        return False
    if not _expands_to_count(b, expand, x, c, T):
        return False
    b.set(k, Channels(c.axis, c.ids, np.full(len(c.ids), NAN)))  # from x's Shape: check_counts finds x's channels here
    return True


def _sizes_another(b: Builder, node: gs.Node, t, x) -> bool:
    """Reshape or Expand `node` of another tensor than x takes its target shape `t` from x's Shape: whether an entry
    there that is x's channel count sizes the channels of the other tensor, which are x's own classes (an SE block's
    `y.view(b, c, 1, 1).expand_as(h)`, the gate multiplied with h), is known once every class is joined: recorded
    for `check_counts`, which blocks x's channels otherwise."""
    if node.op not in ("Reshape", "Expand") or len(node.inputs) < 2 or node.inputs[1] is not t or \
            node.inputs[0] is x:
        return False
    b.counts.append((x.name, node))
    return True


def check_counts(b: Builder) -> None:
    """After the walk (every class joined): a Reshape or Expand sized by a tensor x's channel count (`_sizes_another`)
    keeps x's channels unless that entry sizes its own output's channel axis, and the channels there are x's, one
    for one (then the count follows the kept channels by itself); else x's channels stay, and the output's."""
    for name, node in b.counts:
        c, s = b.cg.channels.get(name), b.shapes.get(name)
        if c is None:
            continue
        count = ("dim", name, len(s) + c.axis) if s is not None else None
        T = _shape_atoms(b, node.inputs[1]) if count is not None else None
        out = b.cg.channels.get(node.outputs[0].name)
        at = [i - len(T) for i, a in enumerate(T) if a == count] if T is not None else None
        if at == [] or (out is not None and at == [out.axis] and len(out.ids) == len(c.ids) and
                        np.array_equal(b.cg.root_of(out.ids), b.cg.root_of(c.ids))):
            continue
        b.block(c.ids if out is None else np.concatenate([c.ids, out.ids]),
                f"{node.op} '{node.name}' is sized by the channel count of '{name}' but does not carry its channels")


def _reads_own_count(b: Builder, reshape: gs.Node, t, x) -> bool:
    """Reshape `reshape` of x itself reads x's channel count (Shape(x) through SHAPE_OPS, as tensor t) as the entry
    that keeps x's channel axis (`_kept_axis`): the count follows the kept channels by itself (Hugging Face's Conv1D
    flattens its input with `x.view(-1, x.size(-1))`)."""
    if reshape.op != "Reshape" or len(reshape.inputs) < 2 or reshape.inputs[1] is not t or reshape.inputs[0] is not x:
        return False
    c, s = b.ch(x), b.shape(x)
    kept = _kept_axis(b, reshape, x, c, s)
    return kept is not None and kept[1][kept[0]] == ("dim", x.name, len(s) + c.axis)


def _pad(b: Builder, node: gs.Node) -> None:
    """Pad of the positions around each channel (tf2onnx's ZeroPadding2D before a strided depthwise Conv): channels
    pass through; a constant channel stays that constant when the padding repeats it (edge, reflect, wrap) or pads
    with the same value (a 0 with zeros), and is no constant otherwise."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r is None:
        return b.opaque(node, "needs the input rank, which shape inference did not give")
    t = _opt_input(node, 1)
    pads = _const(t) if t is not None else _attr(node, "pads", None)
    at = _opt_input(node, 3)
    axes = list(range(r)) if at is None else (None if _const(at) is None else
                                                                [int(a) % r for a in np.ravel(_const(at))])
    cv = _opt_input(node, 2)
    fill = float(_attr(node, "value", 0.0)) if cv is None else (None if _const(cv) is None else
                                                                 float(np.ravel(_const(cv))[0]))
    if pads is None or axes is None or fill is None or len(np.ravel(pads)) != 2 * len(axes):
        return b.opaque(node, "has pads, axes or a value that are not constants")
    pads, ch = np.ravel(pads).astype(np.int64), r + c.axis
    if ch in axes and (pads[axes.index(ch)] or pads[len(axes) + axes.index(ch)]):
        return b.opaque(node, "pads the channel axis")
    value = c.value
    if _attr(node, "mode", "constant") == "constant" and pads.any():
        value = np.where(c.value == fill, c.value, NAN)
    b.set(node.outputs[0], Channels(c.axis, c.ids, value))


def _past_casts(t, outputs: set[str]):
    """`t`, or the end of the chain of Casts that alone read it (onnxconverter-common's mixed float16 keeps an
    InstanceNormalization in float32 between two Casts); None where a tensor on the way is a graph output."""
    for _ in range(4):
        if t.name in outputs:
            return None
        if len(t.outputs) != 1 or t.outputs[0].op != "Cast":
            return t
        t = t.outputs[0].outputs[0]
    return None


def _cast_constant(t):
    """(values, reader node, input index) of a constant read directly or through one Cast (mixed float16), or None."""
    if _const(t) is not None:
        return None
    if len(t.inputs) == 1 and t.inputs[0].op == "Cast" and _const(t.inputs[0].inputs[0]) is not None:
        return _const(t.inputs[0].inputs[0]), t.inputs[0], 0
    return None


def _legacy_group_norm_parts(b: Builder, node: gs.Node):
    """(groups, InstanceNormalization node, closing Reshape, [(reader, index) of its scale and bias constants]) when
    Reshape `node` opens torch's legacy export of nn.GroupNorm: x [N, C, ...] -> Reshape [0, G, -1] ->
    InstanceNormalization (a scale and bias per group, constants, or constants through a Cast) -> Reshape back to
    Shape(x) (or to x's constant shape), each tensor read by the next alone, Casts allowed between them (the affine
    Mul and Add follow as element-wise ops); else None."""
    x = node.inputs[0]
    c, s, S = b.ch(x), b.shape(x), _const(node.inputs[1]) if len(node.inputs) > 1 else None
    if c is None or s is None or S is None or np.asarray(S).shape != (3,) or len(s) < 3 or len(s) + c.axis != 1 or \
            _attr(node, "allowzero", 0) or not _static(s[2:]):
        return None
    n, (first, groups, rest) = len(c.ids), (int(v) for v in np.ravel(S))
    if groups < 1 or n % groups or first not in (0, -1, s[0]) or rest not in (-1, n // groups * math.prod(s[2:])):
        return None
    outputs = {t.name for t in b.cg.graph.outputs}
    mid = _past_casts(node.outputs[0], outputs)
    if mid is None or len(mid.outputs) != 1 or mid.outputs[0].op != "InstanceNormalization":
        return None
    norm = mid.outputs[0]
    params = []
    for i in (1, 2):
        t = _opt_input(norm, i)
        if t is None:
            return None
        found = (_const(t), norm, i) if _const(t) is not None else _cast_constant(t)
        if found is None or np.asarray(found[0]).size != groups:
            return None
        params.append(found)
    out = _past_casts(norm.outputs[0], outputs) if norm.inputs[0] is mid else None
    if out is None or len(out.outputs) != 1 or out.outputs[0].op != "Reshape" or _attr(out.outputs[0], "allowzero", 0):
        return None
    back = out.outputs[0]
    if back.inputs[0] is not out or not _back_to(b, back.inputs[1], x, s):
        return None
    return groups, norm, back, params


def _back_to(b: Builder, shape, x, s) -> bool:
    """`shape` is Shape(x) whole, or a constant equal to x's shape (0 or -1 for the batch)."""
    if len(shape.inputs) == 1 and shape.inputs[0].op == "Shape" and shape.inputs[0].inputs[0] is x:
        return _attr(shape.inputs[0], "start", 0) == 0 and _attr(shape.inputs[0], "end", None) in (None, len(s))
    T = _const(shape)
    return T is not None and np.asarray(T).ndim == 1 and len(T) == len(s) and int(T[0]) in (0, -1, s[0]) and \
        [int(v) for v in np.ravel(T)[1:]] == list(s[1:])


def _legacy_group_norm(b: Builder, node: gs.Node) -> bool:
    """torch's legacy export of nn.GroupNorm (`_legacy_group_norm_parts`) read as one GroupNormalization with the
    InstanceNormalization's scale and bias per group (rules_elementwise._group_norm): a group's channels are one
    class, G in the first Reshape, the InstanceNormalization's scale and bias (new constants) and a constant shape
    back follow the kept groups. Sweep 23: the Reshape to [N, G, -1] kept every channel before it."""
    from onnxprune.passes.channel_groups.rules_elementwise import _group_values

    parts = _legacy_group_norm_parts(b, node)
    if parts is None:
        return False
    groups, norm, back, params = parts
    x, c = node.inputs[0], b.ch(node.inputs[0])
    k = len(c.ids) // groups
    for row in c.ids.reshape(groups, k).tolist():
        for j in row[1:]:
            b.cg.union(row[0], j)
    scale, bias = (np.repeat(np.asarray(v, dtype=np.float64).reshape(-1), k) for v, _, _ in params)
    value = _group_values(c.value, groups, float(_attr(norm, "epsilon", 1e-5)), scale, bias)
    b.set(back.outputs[0], Channels(c.axis, c.ids, value))
    S = _const(node.inputs[1])

    def edit(keep: np.ndarray) -> None:
        kept = keep[::k]
        new = np.array(np.ravel(S), dtype=np.asarray(S).dtype)
        new[1] = int(kept.sum())
        node.inputs[1] = gs.Constant(b.cg.unique(f"{node.inputs[1].name}_pruned"), new)
        for v, reader, i in params:
            old = reader.inputs[i]
            reader.inputs[i] = gs.Constant(b.cg.unique(f"{old.name}_pruned"), np.compress(kept, np.asarray(v), axis=0))
        T = _const(back.inputs[1])
        if T is not None:
            shape = np.array(np.ravel(T), dtype=np.asarray(T).dtype)
            shape[1] = int(keep.sum())
            back.inputs[1] = gs.Constant(b.cg.unique(f"{back.inputs[1].name}_pruned"), shape)

    b.edit(x, edit)
    return True


def _reshape(b: Builder, node: gs.Node) -> None:
    """The flattening Reshape to [N, features] (torch's x.view(-1, C*H*W), tf2onnx's Flatten with the batch size read
    from the input's shape), the shape constant following; else legacy GroupNorm's, one that keeps the channel axis
    whole or merges it with the axes after it (`_channel_reshape`), or one that keeps it whole under a computed shape
    (`_computed_channel_reshape`)."""
    x, k = node.inputs[:2]
    c, s, S = b.ch(x), b.shape(x), _const(k)
    features = None
    if S is None and b.ch(k) is None:
        found = _computed_flatten(b, node, x)
        if found is not None:
            S, features = found
    ch = None if s is None else len(s) + c.axis
    if S is None or S.shape != (2,) or ch is None or ch < 1 or not _static(s[1:ch] + s[ch + 1 :]):
        if features is None and (_legacy_group_norm(b, node) or _channel_reshape(b, node, x, c, s, S) or
                                 _merge_before(b, node, x, c, s, S) or _computed_channel_reshape(b, node, x, c, s)
                                 or _shuffle(b, node, x, c, s) or _merged_axes(b, node, x, c, s)
                                 or _split_axes(b, node, x, c, s)):
            return None
        return b.opaque(node, "is not a flattening Reshape, nor one that keeps the channel axis whole or merges it "
                              "with the axes after it (it splits the channels, as into attention heads, or its shape "
                              "or sizes are not known)")
    per = math.prod(s[1:ch]) * math.prod(s[ch + 1 :])
    total = per * len(c.ids)
    allowzero = _attr(node, "allowzero", 0)
    if not ((S[1] == total and S[0] in (-1, 0)) or (S[1] == -1 and S[0] == 0)) or (allowzero and 0 in S):
        if features is None and _computed_channel_reshape(b, node, x, c, s):  # [N, 28, C] -> [-1, C] at a fixed length
            return None
        return b.opaque(node, f"reshapes to {S.tolist()}, not [N, {total}]")

    if features is not None and S[1] != -1:  # a -1 follows the channels by itself
        b.block(c.ids, b.frozen(features, features.outputs[0]) if isinstance(features, gs.Constant) else
                f"the feature count '{features.name}' of {node.op} '{node.name}' is not an initializer")

    def edit(keep: np.ndarray) -> None:
        if S[1] == -1:
            return
        if features is not None:  # the Concat's constant [features]
            user = features.outputs[0]
            at = [i for i, t in enumerate(user.inputs) if t is features][0]
            value = np.array([per * int(keep.sum())], dtype=features.values.dtype).reshape(features.values.shape)
            user.inputs[at] = gs.Constant(b.cg.unique(f"{features.name}_pruned"), value)
            return
        new = np.array([S[0], per * int(keep.sum())], dtype=S.dtype)
        node.inputs[1] = gs.Constant(b.cg.unique(f"{k.name}_pruned"), new)

    b.edit(x, edit)
    b.set(node.outputs[0], _spread(c, math.prod(s[1:ch]), math.prod(s[ch + 1 :])))


def _shuffle_chain(b: Builder, node: gs.Node, x, c: Channels | None, s) -> tuple[gs.Node, int] | None:
    """(the last Reshape, the group count g) when Reshape `node` of x begins ShuffleNet's channel shuffle: to
    [.., g, C/g, ..], a Transpose that swaps those two axes, a Reshape back to x's shape (shapes from shape
    inference; C/g may be unknown there, a legacy export computing it from x's Shape); else None."""
    mid = node.outputs[0]
    tr = mid.outputs[0] if len(mid.outputs) == 1 else None
    if c is None or s is None or node.inputs[0] is not x or tr is None or tr.op != "Transpose" or \
            len(tr.outputs[0].outputs) != 1:
        return None
    last = tr.outputs[0].outputs[0]
    outputs = {t.name for t in b.cg.graph.outputs}
    if last.op != "Reshape" or last.inputs[0] is not tr.outputs[0] or {mid.name, tr.outputs[0].name} & outputs:
        return None
    s1, s2, r, n = b.shape(mid), b.shape(last.outputs[0]), len(s), len(c.ids)
    ch = r + c.axis
    if s1 is None or s2 is None or len(s1) != r + 1 or len(s2) != r or s2[ch] != n:
        return None
    g, k = s1[ch], s1[ch + 1]
    same = lambda u, v: not (isinstance(u, int) and isinstance(v, int)) or u == v  # noqa: E731
    if not (isinstance(g, int) and 1 < g < n and n % g == 0 and same(k, n // g)) or not all(
            same(u, v) for u, v in zip(s[:ch] + s[ch + 1:], s1[:ch] + s1[ch + 2:])) or not all(map(same, s, s2)):
        return None
    swap = list(range(r + 1))
    swap[ch], swap[ch + 1] = ch + 1, ch
    return (last, g) if list(_attr(tr, "perm", [])) == swap else None


def _shuffle(b: Builder, node: gs.Node, x, c: Channels | None, s) -> bool:
    """ShuffleNet's channel shuffle (`_shuffle_chain`) permutes the channels: output channel j·g + i is input channel
    i·C/g + j, so the channels follow to the last Reshape's output in that order. Channels going unevenly across the
    groups would break both reshapes: once any go, the chain becomes one Gather of the kept channels in their
    shuffled order, and a shape computed for it from x's Shape dies with it (`_into_shuffle`). Sweep 38's L2: "it
    splits the channels" kept every dead channel of a grouped net. False when the chain is not that."""
    found = _shuffle_chain(b, node, x, c, s)
    if found is None:
        return False
    (last, g), n, ch = found, len(c.ids), len(s) + c.axis
    order = np.arange(n).reshape(g, n // g).T.ravel()  # output position p holds input channel order[p]
    final = last.outputs[0]

    def edit(keep: np.ndarray) -> None:
        if keep.all():
            return
        index = (np.cumsum(keep) - 1)[order[keep[order]]].astype(np.int64)
        last.outputs = []
        b.cg.graph.nodes.append(gs.Node("Gather", b.cg.unique(f"{node.name}_shuffle"), {"axis": ch},
                                        [x, gs.Constant(b.cg.unique(f"{node.name}_shuffle_order"), index)], [final]))

    b.edit(x, edit)
    b.set(final, Channels(c.axis, c.ids[order], c.value[order]))
    return True


def _into_shuffle(b: Builder, node: gs.Node, t, x, depth: int = 0) -> bool:
    """Whether `node`, reading t (computed from x's Shape), computes only target shapes of a channel shuffle of x
    (either Reshape), which `_shuffle` replaces by a Gather once channels go: then x's channel count read there
    goes unused (torch legacy's `x.view(b, g, c // g, h, w)` with a dynamic batch divides it in the graph)."""
    c, s = b.ch(x), b.shape(x)
    if node.op == "Reshape" and len(node.inputs) > 1 and node.inputs[1] is t:
        data = node.inputs[0]
        tr = data.inputs[0] if data is not x and len(data.inputs) == 1 else None
        first = node if data is x else (tr.inputs[0].inputs[0] if tr is not None and tr.op == "Transpose"
                                        and len(tr.inputs[0].inputs) == 1 else None)
        found = _shuffle_chain(b, first, x, c, s) if first is not None and first.op == "Reshape" else None
        return found is not None and node in (first, found[0])
    if depth > 8 or node.op == "Reshape" or not node.outputs:
        return False
    outputs = {o.name for o in b.cg.graph.outputs}
    return all(o.name not in outputs and o.outputs and all(_into_shuffle(b, m, o, x, depth + 1) for m in o.outputs)
               for o in node.outputs)


def _transpose(b: Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    perm = list(_attr(node, "perm", [] if r is None else list(range(r))[::-1]))
    if not perm:
        return b.opaque(node, "needs the input rank, which shape inference did not give")
    r = len(perm)
    b.set(node.outputs[0], Channels(perm.index(r + c.axis) - r, c.ids, c.value))


def _squeeze_axes(b: Builder, node: gs.Node, rank: int | None) -> list[int] | None:
    t = _opt_input(node, 1)
    axes = _const(t) if t is not None else _attr(node, "axes", None)
    if axes is None and node.op == "Squeeze" and b.shape(node.inputs[0]) is not None:
        axes = [i for i, d in enumerate(b.shape(node.inputs[0])) if d == 1]
    if axes is None or rank is None or (t is not None and _const(t) is None):
        return None
    return sorted(int(a) % rank for a in np.ravel(axes))


def _squeeze(b: Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, r, out_rank = b.ch(x), b.rank(x), b.rank(node.outputs[0])
    axes = _squeeze_axes(b, node, r if node.op == "Squeeze" else out_rank)
    if axes is None or r is None or out_rank is None:
        return b.opaque(node, "has axes or ranks that shape inference did not give")
    ch = r + c.axis
    if node.op == "Squeeze" and ch in axes:
        return b.opaque(node, "squeezes the channel axis")
    if node.op == "Squeeze":
        new = ch - sum(a < ch for a in axes)
    else:
        new = [j for j in range(out_rank) if j not in axes][ch]
    b.set(node.outputs[0], Channels(new - out_rank, c.ids, c.value))


def is_lookup(node: gs.Node) -> bool:
    """A Gather of a constant table's rows (axis 0 of a table of 2 or more axes): nn.Embedding, Keras Embedding."""
    x = node.inputs[0] if node.op == "Gather" and len(node.inputs) == 2 else None
    return isinstance(x, gs.Constant) and x.values.ndim >= 2 and _attr(node, "axis", 0) % x.values.ndim == 0


def _lookup(b: Builder, node: gs.Node) -> None:
    """A lookup (`is_lookup`) produces channels: feature d of every row it returns is column d of the table (its last
    axis), so a column that is zero is a feature that is 0 whatever the ids, and goes with the readers' weight rows
    (sweep 38's L7: torch's nn.Embedding and Keras' Embedding concatenated into a Dense's input kept their zeroed
    columns without a word). A table another node reads too (a language model's head tied to it) keeps them, as any
    shared weight; alike lookups of one table (a Siamese net's two) are tied."""
    table, idx = node.inputs[0], node.inputs[1]
    if b.ch(idx) is not None:
        return b.opaque(node, "gathers with indices computed from channels")
    values, axis = table.values, table.values.ndim - 1
    frozen = b.shared(table, node)
    b.produce(node, table, values.reshape(-1, values.shape[-1]).T, -1, np.zeros(values.shape[-1]), frozen)
    b.tie(table, axis, node.outputs[0], node)
    b.slices(node.outputs[0], table, axis)


def _gather(b: Builder, node: gs.Node) -> None:
    """A Gather with constant indices across another axis than the channels' (a TCN's last time step,
    `y[:, :, -1]`, torch legacy: Gather(axis=2) of a scalar; sweep 24): every position keeps its channels, which
    move by the axes the indices remove or add before them. A lookup in a constant table produces them (`_lookup`)."""
    x, idx = node.inputs[0], node.inputs[1]
    if is_lookup(node):
        return _lookup(b, node)
    c, r = b.ch(x), b.rank(x)
    if c is None or b.ch(idx) is not None:
        return b.opaque(node, "gathers with indices computed from channels")
    k = _const(idx)
    if r is None or k is None:
        return b.opaque(node, "has indices that are not constant, or an input rank shape inference did not give")
    axis, ch = _attr(node, "axis", 0) % r, r + c.axis
    if axis == ch:
        return b.opaque(node, "gathers along the channel axis")
    out_rank = r - 1 + np.ndim(k)
    new = ch if axis > ch else ch - 1 + np.ndim(k)
    b.set(node.outputs[0], Channels(new - out_rank, c.ids, c.value))


def _gather_nd(b: Builder, node: gs.Node) -> None:
    """A GatherND with constant indices into leading axes that are not the channels' (torch dynamo's
    `adaptive_avg_pool2d` to a size that does not divide the map, 7x7 -> 3x3: Transpose to [H, W, N, C], GatherND of
    the overlapping windows, ReduceMean; sweep 37): the axes after the indexed ones are copied whole, the channels
    among them, at the same place counted from the end."""
    x, idx = node.inputs[0], node.inputs[1]
    c, r, k = b.ch(x), b.rank(x), _const(idx)
    if c is None or b.ch(idx) is not None:
        return b.opaque(node, "gathers with indices computed from channels")
    if r is None or k is None or k.ndim < 1:
        return b.opaque(node, "has indices that are not constant, or an input rank shape inference did not give")
    if r + c.axis < int(_attr(node, "batch_dims", 0)) + k.shape[-1]:
        return b.opaque(node, "indexes the channel axis (or batches over it)")
    b.set(node.outputs[0], Channels(c.axis, c.ids, c.value))


def _concat(b: Builder, node: gs.Node) -> None:
    r = b.rank(node.outputs[0])
    chans = [b.ch(t) for t in node.inputs]
    if r is None:
        return b.opaque(node, "needs the output rank, which shape inference did not give")
    axis = _attr(node, "axis", 0) % r - r
    if all(c is not None and c.axis != axis for c in chans):  # across another axis (batch, space): one class
        same = np.all([c.value == chans[0].value for c in chans], axis=0)
        return _merge(b, node, chans, np.where(same, chans[0].value, NAN))
    parts = []
    for t, c in zip(node.inputs, chans):
        size = (b.shape(t) or [None] * r)[axis] if c is None else None
        if c is None and not isinstance(size, int):
            return b.opaque(node, f"needs the size of input '{t.name}'")
        if c is None:  # a graph input or a constant: its positions are fixed
            c = Channels(axis, b.cg.new_classes(size, f"Concat input '{t.name}'"), np.full(size, NAN))
            b.block(c.ids, f"it is not produced by a weight layer (Concat {node.name!r})")
        if c.axis != axis:
            return b.opaque(node, "concatenates along an axis that is not every input's channel axis")
        parts.append(c)
    ids, value = np.concatenate([c.ids for c in parts]), np.concatenate([c.value for c in parts])
    b.set(node.outputs[0], Channels(axis, ids, value))


def _split(b: Builder, node: gs.Node) -> None:
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    if r is None:
        return b.opaque(node, "needs the input rank, which shape inference did not give")
    if _attr(node, "axis", 0) % r - r != c.axis:  # split across another axis: every output holds every class
        return [b.set(o, c) for o in node.outputs]
    given = _opt_input(node, 1)
    sizes = _const(given) if given is not None else _attr(node, "split", None)
    n, p = len(node.outputs), len(c.ids)
    if sizes is None and (given is not None or p % n):
        return b.opaque(node, "has split sizes that are neither constant nor equal")
    sizes = [p // n] * n if sizes is None else [int(s) for s in np.ravel(sizes)]
    bounds = np.cumsum([0] + sizes)
    for o, lo, hi in zip(node.outputs, bounds[:-1], bounds[1:]):
        b.set(o, Channels(c.axis, c.ids[lo:hi], c.value[lo:hi]))

    def edit(keep: np.ndarray) -> None:
        new = np.array([int(keep[lo:hi].sum()) for lo, hi in zip(bounds[:-1], bounds[1:])], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if b.cg.graph.opset < 13:
            node.attrs["split"] = new.tolist()
        else:
            const = gs.Constant(b.cg.unique(f"{node.name or 'split'}_sizes"), new)
            while len(node.inputs) > 1:
                node.inputs.pop()
            node.inputs.append(const)

    b.edit(x, edit)




def _slice_params(node: gs.Node, opset: int | None) -> tuple | None:
    """(starts, ends, axes, steps) as int lists, or None where one is not constant."""
    if opset is not None and opset < 10:  # Slice-1: attributes, no steps
        starts, ends = _attr(node, "starts", None), _attr(node, "ends", None)
        axes, steps = _attr(node, "axes", None), None
    else:
        starts, ends, axes, steps = (_opt_input(node, i) for i in (1, 2, 3, 4))
        if any(t is not None and _const(t) is None for t in (starts, ends, axes, steps)):
            return None
        starts, ends, axes, steps = (None if t is None else _const(t) for t in (starts, ends, axes, steps))
    if starts is None or ends is None:
        return None
    starts, ends = [int(v) for v in np.ravel(starts)], [int(v) for v in np.ravel(ends)]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.ravel(axes)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.ravel(steps)]
    return starts, ends, axes, steps


def _slice(b: Builder, node: gs.Node) -> None:
    """A constant Slice: across other axes the channels pass; along the channel axis (step 1) it keeps a range of
    positions, whose bounds follow the kept channels (GhostNet's `cat([x1, x2])[:, :out_chs]`, ReXNet's partial
    residual `x[:, :C] + shortcut`). Positions it cuts off are not read through it."""
    x = node.inputs[0]
    c, r = b.ch(x), b.rank(x)
    params = _slice_params(node, b.cg.graph.opset)
    if r is None or params is None:
        return b.opaque(node, "has starts, ends, axes or steps that are not constant, or an input rank shape "
                              "inference did not give")
    starts, ends, axes, steps = params
    axes = [a % r for a in axes]
    ch = r + c.axis
    if ch not in axes:  # a slice across space or time: every position keeps its channels
        return b.set(node.outputs[0], c)
    i = axes.index(ch)
    if steps[i] != 1:
        return b.opaque(node, f"slices the channel axis with step {steps[i]}")
    lo, hi, _ = slice(starts[i], ends[i], 1).indices(len(c.ids))
    hi = max(lo, hi)
    b.set(node.outputs[0], Channels(c.axis, c.ids[lo:hi], c.value[lo:hi]))

    def edit(keep: np.ndarray) -> None:
        new_lo = int(keep[:lo].sum())
        new_hi = new_lo + int(keep[lo:hi].sum())
        new_starts, new_ends = list(starts), list(ends)
        new_starts[i], new_ends[i] = new_lo, new_hi
        if b.cg.graph.opset is not None and b.cg.graph.opset < 10:
            node.attrs["starts"], node.attrs["ends"] = new_starts, new_ends
            return
        for index, values, what in ((1, new_starts, "starts"), (2, new_ends, "ends")):
            old = node.inputs[index]
            dtype = _const(old).dtype if _const(old) is not None else np.int64
            node.inputs[index] = gs.Constant(b.cg.unique(f"{node.name or 'slice'}_{what}"),
                                             np.array(values, dtype=dtype))

    b.edit(x, edit)


def _cast(b: Builder, node: gs.Node) -> None:
    """Cast changes each element's type alone: channels pass, a constant channel holds its value in the new type
    (float16 rounding, an integer's truncation; NaN, "not a constant", where numpy cannot hold the type). A mixed
    float16 model (onnxconverter-common's keep_io_types and op_block_list) puts Casts between layers: each one
    blocked the channels before it (sweep 23: "consumer Cast '/fc/Gemm_cast_to_logits' (op Cast) has no channel
    rule")."""
    c = b.ch(node.inputs[0])
    if c is None:
        return b.opaque(node, "casts a tensor whose channels are not followed")
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(int(_attr(node, "to", onnx.TensorProto.FLOAT)))
        with np.errstate(all="ignore"):
            known = np.isfinite(c.value)
            value = np.where(known, np.where(known, c.value, 0).astype(dtype).astype(np.float64), NAN)
    except (TypeError, ValueError, KeyError):
        value = np.full_like(c.value, NAN, dtype=np.float64)
    b.set(node.outputs[0], Channels(c.axis, c.ids, value))


def _block_size(b: Builder, node: gs.Node, c: Channels | None, outward: bool) -> int | None:
    """The blocksize of a DepthToSpace/SpaceToDepth over channels on axis 1 of a 4-D tensor, or None (made opaque)."""
    size, r = int(_attr(node, "blocksize", 0)), b.rank(node.inputs[0])
    if c is None or r != 4 or c.axis != -3 or size < 1 or (not outward and len(c.ids) % (size * size)):
        b.opaque(node, "is not over the channel axis of a 4-D tensor with whole blocks of channels")
        return None
    return size


def _depth_to_space(b: Builder, node: gs.Node) -> None:
    """DepthToSpace moves blocks of b*b channels into space: output channel k is built from input channels
    (i*b + j)*C' + k (mode DCR) or k*b*b + i*b + j (CRD). Those b*b channels go together (one class) and make one
    output channel, a constant where all of them are the same one. A super-resolution or pixel-shuffle block inside a
    net (torch's pixel_shuffle) kept every channel before it (sweep 23: "consumer DepthToSpace ... has no channel
    rule")."""
    c = b.ch(node.inputs[0])
    size = _block_size(b, node, c, outward=False)
    if size is None:
        return None
    k = size * size
    out = len(c.ids) // k
    crd = str(_attr(node, "mode", "DCR")).upper() == "CRD"
    ids = c.ids.reshape(out, k) if crd else c.ids.reshape(k, out).T  # [output channel, its b*b input channels]
    value = c.value.reshape(out, k) if crd else c.value.reshape(k, out).T
    for row in ids.tolist():
        for j in row[1:]:
            b.cg.union(row[0], j)
    with np.errstate(invalid="ignore"):
        same = np.all(value == value[:, :1], axis=1)
    b.set(node.outputs[0], Channels(c.axis, ids[:, 0].copy(), np.where(same, value[:, 0], NAN)))


def _space_to_depth(b: Builder, node: gs.Node) -> None:
    """SpaceToDepth puts each b*b block of positions into channels: output channel (i*b + j)*C + c holds input
    channel c, so the channels are repeated b*b times, blocks of C (torch's pixel_unshuffle written as one op)."""
    c = b.ch(node.inputs[0])
    size = _block_size(b, node, c, outward=True)
    if size is None:
        return None
    b.set(node.outputs[0], Channels(c.axis, np.tile(c.ids, size * size), np.tile(c.value, size * size)))
