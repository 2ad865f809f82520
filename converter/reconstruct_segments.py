"""The refit's passes over the data, each from where the last one stopped: the run side of converter/reconstruct.py.

The refit makes one onnxruntime pass per wave of layers on the pruned model (a wave's inputs) and, for the targets,
on the dense model. A pass used to run every node its captures depend on, from the graph inputs: on a chain of W
waves that is about W²/2 layers' work where W would do. Measured: rapidocr_rec (paddle2onnx text recognizer, 47
waves, one layer each, 60 training lines of different widths, so one batch per line), one refit 264-276 s, of which
onnxruntime's runs took two thirds (10,494 runs, each a prefix of the model), the batches read from their .npz files
8 s; with the frontier 37-62 s (onnxruntime 7 s), the same weights bit for bit (tests/benchmarks/bench_refit_speed.py).

Here every pass keeps, per batch, the activations later passes need (the *frontier*), and the next pass runs only
the nodes between it and its own captures:

  - the batches themselves are read once and kept (`Stream`), with their digests (the dense cache's key);
  - a pass's model is the exposed copy (reconstruct._capturing) cut to the nodes its captures need that the kept
    activations do not already give, those activations as its graph inputs (`segment`);
  - it also returns the activations the later passes' captures need (found from their roots, stopping at what is
    kept or computed now), so they are kept in turn; what no later pass needs is let go;
  - on the pruned model a tensor is kept only when nothing it depends on will still change: no weight of a layer of
    this wave or a later one is read on its way (`changing`: the refit writes those later); every other activation
    is final, its value the one a pass from the graph inputs would give, bit for bit (the same kernels on the same
    inputs); a tensor computed from constants alone is recomputed, not kept.

Memory is bounded: the batches and both models' frontiers share one `Room` of bytes (REFIT_CACHE_BYTES); when a
pass's frontier does not fit, it is dropped and the next pass runs from the graph inputs (as every pass did before);
when the batches do not fit, no frontier is kept at all and every batch is read again each pass.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import helper

from onnxprune.calibration.runtime import make_session
from onnxprune.passes.scopes import outer_reads

REFIT_CACHE_BYTES = 512 << 20  # the batches and the frontiers of one refit call, at most (Room)


class Room:
    """A byte budget shared by the kept batches and frontiers of one refit call."""

    def __init__(self, size: int):
        self.left = int(size)

    def take(self, n: int) -> bool:
        if n > self.left:
            return False
        self.left -= n
        return True

    def give(self, n: int) -> None:
        self.left += n


def digest(feeds) -> str:
    """A digest of a feed dict's names, shapes, dtypes and values (the dense cache's key)."""
    h = hashlib.sha1()
    for name in sorted(feeds):
        v = np.ascontiguousarray(feeds[name])
        h.update(f"{name}{v.shape}{v.dtype}".encode())
        h.update(v.tobytes())
    return h.hexdigest()


class Stream:
    """The refit's batches (reconstruct._batches of `reader`, `limit` samples), read once and kept with their
    digests while they fit in `room`; past that, read again every pass (and no frontier is kept: `kept` False)."""

    def __init__(self, source, room: Room):
        self.source, self.room = source, room  # source: a callable giving a fresh iterator of feed dicts
        self.batches: list[dict] | None = None  # every batch, once one pass has read them all and they fitted
        self.digests: list[str | None] = []
        self.kept = True  # False once the batches did not fit: every pass reads them again

    def __iter__(self):
        if self.batches is not None:
            yield from enumerate(self.batches)
            return
        held: list[dict] | None = [] if self.kept else None
        taken = 0
        for b, feeds in enumerate(self.source()):
            if held is not None:
                size = sum(int(np.asarray(v).nbytes) for v in feeds.values())
                if self.room.take(size):
                    held.append(feeds)
                    taken += size
                else:
                    self.room.give(taken)
                    held, self.kept, self.digests = None, False, []
            yield b, feeds
        if held is not None:
            self.batches = held

    def digest(self, b: int, feeds) -> str:
        if not self.kept:
            return digest(feeds)
        while len(self.digests) <= b:
            self.digests.append(None)
        if self.digests[b] is None:
            self.digests[b] = digest(feeds)
        return self.digests[b]


def reads(node: onnx.NodeProto) -> list[str]:
    """The tensors a node reads: its inputs and what its bodies read from the enclosing scopes (passes.scopes)."""
    return [*node.input, *sorted(outer_reads(node))]


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    return {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}


class Frontier:
    """One model's activations kept between passes, per batch: `names` (the same for every batch) and `values`."""

    def __init__(self, room: Room):
        self.room = room
        self.names: frozenset = frozenset()
        self.values: list[dict[str, np.ndarray]] = []
        self.size = 0

    def clear(self) -> None:
        self.room.give(self.size)
        self.names, self.values, self.size = frozenset(), [], 0


class Pass:
    """One pass of one model over the stream: the segment session and the frontier it leaves.

    `model`: the exposed copy (reconstruct._capturing, every node kept; its captures are main-graph tensors
    `names`); `frontier`: what earlier passes kept (updated in place as the pass goes); `future`: the main-graph
    tensors later passes start from (their captures' names; a body capture's If/Loop node's reads); `changing`: the
    weights the refit will still write (none on the dense model); `data`: the graph inputs the batches feed."""

    def __init__(self, model: onnx.ModelProto, names: list[str], frontier: Frontier | None, future: set[str],
                 changing: set[str], data: set[str]):
        self.frontier = frontier
        have = frontier.names if frontier is not None else frozenset()
        graph = model.graph
        nodes = list(graph.node)
        producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
        node_reads = [reads(n) for n in nodes]
        needed = _walk(names, producer, node_reads, stop=have | data)
        computed = {o for i in needed for o in nodes[i].output if o}
        keep: set[str] = set()
        if frontier is not None:
            final = _final(nodes, node_reads, data, changing)
            candidates = (have | computed) & final
            keep = _reached(future, producer, node_reads, candidates, data)
        self.new_names = frozenset(keep)
        self.fresh = [n for n in dict.fromkeys([*names, *sorted(keep)]) if n not in have and n not in data]
        self.inputs = sorted({r for i in needed for r in node_reads[i] if r in have or r in data}
                             - computed)
        self.nodes = [nodes[i] for i in sorted(needed)]
        self.model, self.names = model, names
        self.session = None
        self.new_values: dict[int, dict[str, np.ndarray]] = {}
        self.new_size = 0
        self.overflow = frontier is None

    def _session(self, example: dict):
        try:
            return make_session(self._segment(example, None), optimize=False)
        except Exception:
            # onnxruntime's inference of some ops needs a size the segment's open inputs hide: ai.onnx Attention
            # (opset 23) on 3-D q/k/v of unknown hidden size gives an output its MatMul after it rejects (sweep 44);
            # the sizes the whole model's inference fixes, declared, let it through
            from onnxprune.passes.shapes import infer_shapes

            segment = self._segment(example, infer_shapes(self.model))
            return make_session(segment, optimize=False)

    def _segment(self, example: dict, shapes: dict | None) -> onnx.ModelProto:
        """The segment model: the pass's nodes, its inputs the kept activations; every input's dims open, or those
        `shapes` (the whole model's inference) fixes at the example's sizes."""
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        g = out.graph
        del g.node[:]
        g.node.extend(self.nodes)
        inits = _constant_names(g)
        declared = {vi.name: vi for vi in self.model.graph.input}
        del g.input[:]
        for name in self.inputs:
            if name in declared and not declared[name].type.HasField("tensor_type"):  # a graph input's own type: a
                g.input.append(declared[name])  # sequence (its stacked array, SequenceFeeds) or an optional tensor
                continue
            v = np.asarray(example[name])
            known = (shapes or {}).get(name) or [None] * v.ndim
            dims = [k if len(known) == v.ndim and k == d else None for k, d in zip(known, v.shape)] \
                if len(known) == v.ndim else [None] * v.ndim
            g.input.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(v.dtype), dims))
        g.input.extend(vi for vi in self.model.graph.input if vi.name in inits)  # optional inputs with defaults
        types = {vi.name: vi for vi in self.model.graph.output}
        del g.output[:]
        g.output.extend(types[n] if n in types else onnx.ValueInfoProto(name=n) for n in self.fresh)
        return out

    def run(self, b: int, feeds: dict) -> dict[str, np.ndarray]:
        """The pass's tensors `names` (and the new frontier, kept) on batch `b`."""
        held = self.frontier.values[b] if self.frontier is not None and self.frontier.names else {}
        given = {**feeds, **held}
        values = {n: given[n] for n in self.names if n not in self.fresh}
        if self.fresh:
            if self.session is None:
                self.session = self._session(given)
            got = self.session.run(self.fresh, {n: given[n] for n in self.inputs})
            values.update(zip(self.fresh, got))
        if not self.overflow:
            kept = {n: values[n] if n in values else held[n] for n in self.new_names}
            size = sum(int(v.nbytes) if isinstance(v, np.ndarray) else 0 for v in kept.values())
            if all(isinstance(v, np.ndarray) for v in kept.values()) and self.frontier.room.take(size):
                self.new_values[b] = kept
                self.new_size += size
            else:  # no room (or a sequence value): the next pass starts from the last frontier (close)
                self.drop()
        return values

    def drop(self) -> None:
        """Keep no new frontier (the batches are not kept, or it did not fit)."""
        if self.frontier is not None:
            self.frontier.room.give(self.new_size)
        self.overflow, self.new_values, self.new_size = True, {}, 0

    def close(self, batches: int, valid: bool = True) -> None:
        """After the last batch: the new frontier replaces the old when every batch has its part. Else the old one
        stays (its values are final: a later pass starts from it), unless `valid` is False (the batches were not
        kept: the next pass reads them again, and runs from the graph inputs)."""
        self.session = None
        if self.frontier is None:
            return
        if not valid:
            self.drop()
            self.frontier.clear()
            return
        if self.overflow or sorted(self.new_values) != list(range(batches)):
            self.drop()
            return
        self.frontier.clear()
        self.frontier.names, self.frontier.size = self.new_names, self.new_size
        self.frontier.values = [self.new_values[b] for b in range(batches)]
        self.new_values, self.new_size = {}, 0


def _walk(names, producer: dict[str, int], node_reads: list[list[str]], stop) -> set[int]:
    """Indices of the nodes `names` need, not going past the tensors in `stop`."""
    seen: set[int] = set()
    todo = [producer[n] for n in names if n not in stop and n in producer]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo.extend(producer[r] for r in node_reads[i] if r not in stop and r in producer)
    return seen


def _reached(roots, producer: dict[str, int], node_reads: list[list[str]], candidates: set[str],
             data: set[str]) -> set[str]:
    """The `candidates` a walk back from `roots` meets first (what later passes will start from)."""
    found: set[str] = set()
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in candidates:
            found.add(name)
            continue
        if name in data or name not in producer:
            continue
        i = producer[name]
        if i in seen:
            continue
        seen.add(i)
        todo.extend(node_reads[i])
    return found


def _final(nodes, node_reads: list[list[str]], data: set[str], changing: set[str]) -> set[str]:
    """Tensors that depend on the data and on no weight the refit will still write (their values stay valid)."""
    from_data, stale = set(data), set(changing)
    for node, r in zip(nodes, node_reads):
        outs = [o for o in node.output if o]
        if any(x in stale for x in r) or any(o in changing for o in outs):
            stale.update(outs)
        elif any(x in from_data for x in r):
            from_data.update(outs)
    return from_data - stale - set(data)
