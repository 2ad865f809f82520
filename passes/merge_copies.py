"""Merge bit-identical weight copies into one tied weight (before anything is measured or pruned).

Some exporters write one module's weight once per use: torch's dynamo exporter unrolls `nn.RNN` over 60 time steps
with 60 bit-identical copies of `weight_hh`, each read by its own MatMul. Pruned as 60 layers, the copies get 60
different masks (the output is verified, but the model is no longer a tied-weight RNN), the ratio counts every
copy, and the file stores each one. Merged, they are one tied weight (passes/weights.py `_tied`): one mask, one
stored tensor, counted once.

    W1 --MatMul a--        W --MatMul a--
    W2 --MatMul b--   ->     \\-MatMul b--     when W1, W2 hold the same bytes (dtype, shape, values)
    W3 --MatMul c--           \\-MatMul c--     and every reader reads them the same way

Rules:
  1. Only main-graph constants that are weights (initializers and Constant nodes: a model-local function called
     twice is two copies of its Constant weights once inlined): every reader a Conv/ConvTranspose/Gemm/MatMul reading the copy
     directly, once, as the same input with the same attributes, all copies alike (exactly what `_tied` prunes as
     one weight). Biases, norm parameters, shape tensors and LSTM/GRU/RNN matrices are never merged: two equal
     biases merged would become "shared" and block dead-neuron removal of both layers.
  2. Never a graph input or output, a name read inside an If/Loop/Scan body, or an all-zero tensor (nothing to
     prune; tying it would only block removing it).
  3. The first copy in initializer order is kept under its own name; the others' readers are renamed to it.

A matrix stored twice, once as its transpose, is merged too (`transposed_copies`): a tied language model's output
layer, `head.weight = emb.weight`, exported with the transpose folded into its own constant (torch's legacy exporter
and dynamo both do; sweep 37's GRU LM, session 43's char LM): the table E [V, d] read by a Gather and E^T [d, V] read
by the head's MatMul. Pruned apart they get two masks and the file stores both. The copy's readers then read
Transpose(E), which onnxruntime folds at load: one tied weight (passes/weights.py `_tied_lookup`, or
`_tied_transposed` for a tied autoencoder's W and W^T), one mask, one stored tensor. Only where the inventory then
prunes the kept matrix (else the pair stays as it was: two weights it prunes apart beat one it refuses).
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.passes.base import Pass, PassError, PassResult, PruneState, register_pass
from onnxprune.passes.scopes import drop_local_constants, local_constants, outer_reads, readers_of, rename_reads
from onnxprune.passes.weights import second_operand, tie_use
from onnxprune.plain import listed

MIN_VALUES = 16  # smaller tensors are not weights worth a tie


def _raw(tensor: onnx.TensorProto) -> bytes:
    return tensor.raw_data if tensor.HasField("raw_data") else numpy_helper.to_array(tensor).tobytes()


def duplicate_groups(model: onnx.ModelProto) -> list[list[str]]:
    """Groups of constant names (first = the one kept; initializers and Constant nodes, scopes.local_constants:
    paddle2onnx writes every weight as a Constant node, and an inlined function has one per call) that
    `MergeCopies` would merge; [] when none."""
    graph = model.graph
    readers, frozen = readers_of(graph), frozen_names(graph)
    candidates: dict[tuple, list[tuple[str, onnx.TensorProto]]] = {}
    for name, t in local_constants(graph).items():
        if name in frozen or t.data_location == onnx.TensorProto.EXTERNAL or not readers.get(name):
            continue
        if int(np.prod(t.dims, dtype=np.int64)) < MIN_VALUES:
            continue
        uses = {tie_use(n, name) for n in readers[name]}
        if len(uses) != 1 or None in uses:
            continue
        use = uses.pop()
        if use[1] == 0:  # the first operand: the data a layer reads, not its weight
            continue
        candidates.setdefault((t.data_type, tuple(t.dims), use), []).append((name, t))
    groups = []
    for tensors in candidates.values():
        if len(tensors) < 2:
            continue
        by_bytes: dict[bytes, list[str]] = {}
        for name, t in tensors:
            raw = _raw(t)
            if not any(raw):  # all zero
                continue
            by_bytes.setdefault(hashlib.blake2b(raw, digest_size=16).digest(), []).append(name)
        groups += [names for names in by_bytes.values() if len(names) > 1]
    return groups


def _lookup(node: onnx.NodeProto, name: str) -> bool:
    return (node.op_type == "Gather" and (node.domain or "") in ("", "ai.onnx") and len(node.input) == 2
            and node.input[0] == name and node.input[1] != name
            and all(a.name != "axis" or onnx.helper.get_attribute_value(a) == 0 for a in node.attribute))


def transposed_copies(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(kept, copy) pairs of main-graph float matrices where copy holds kept's transpose exactly, copy is read only
    as a Gemm/MatMul's second operand and kept only so or as a Gather's table (module docstring); [] when none.
    Each matrix is in one pair at most; the one a Gather reads, else the first in graph order, is kept."""
    graph = model.graph
    readers, frozen = readers_of(graph), frozen_names(graph)
    mats = {}
    for name, t in local_constants(graph).items():
        if (name in frozen or t.data_location == onnx.TensorProto.EXTERNAL or not readers.get(name)
                or len(t.dims) != 2 or t.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                            onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
                or int(np.prod(t.dims, dtype=np.int64)) < MIN_VALUES):
            continue
        mats[name] = t
    copies = [n for n in mats if all(second_operand(r, n) for r in readers[n])]
    keepers = [n for n in mats if all(second_operand(r, n) or _lookup(r, n) for r in readers[n])]
    keepers.sort(key=lambda n: not any(_lookup(r, n) for r in readers[n]))  # a table first
    pairs, used = [], set()
    arrays: dict[str, np.ndarray] = {}

    def array(n: str) -> np.ndarray:
        """The matrix's bits as unsigned integers: a view of raw_data (no copy), compared bit for bit."""
        if n not in arrays:
            t = mats[n]
            size = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            raw = t.raw_data if t.HasField("raw_data") else numpy_helper.to_array(t).tobytes()
            arrays[n] = np.frombuffer(raw, dtype=f"<u{size}").reshape(tuple(t.dims))
        return arrays[n]

    for kept in keepers:
        if kept in used:
            continue
        for copy in copies:
            t, c = mats[kept], mats[copy]
            if copy == kept or copy in used or c.data_type != t.data_type or list(c.dims) != list(t.dims)[::-1]:
                continue
            a, b = array(kept), array(copy)
            if not np.array_equal(a[0], b[:, 0]) or not a.any():  # a first row tells most pairs apart
                continue
            if np.array_equal(a.T, b):
                pairs.append((kept, copy))
                used.update((kept, copy))
                break
    return pairs


def _merge_transposed(model: onnx.ModelProto, pairs: list[tuple[str, str]]) -> None:
    """Read each copy as Transpose(kept): a Transpose node before the copy's first reader; the copy goes."""
    graph = model.graph
    taken = {o for n in graph.node for o in n.output} | {t.name for t in graph.initializer}
    for kept, copy in pairs:
        out = f"{kept}_T"
        while out in taken:
            out += "_"
        taken.add(out)
        first = next(i for i, n in enumerate(graph.node) if copy in n.input)
        graph.node.insert(first, onnx.helper.make_node("Transpose", [kept], [out], name=f"{out}_merged", perm=[1, 0]))
        read_as(model, {copy: out})
    drop_local_constants(graph, {c for _, c in pairs})


# the end of the merge notes: a kept model written as given (converter/convert._input_as_given) keeps its copies, and
# the notes go (sweep 49: "5.2 KB less in the file" beside "file 15.50 KB -> 15.50 KB")
FILE_SAVING = "less in the file"

@register_pass("merge-copies")
class MergeCopies(Pass):
    """Read every bit-identical copy of a weight as its first copy and drop the others (module docstring)."""

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        groups = duplicate_groups(model)
        if groups:
            self._identical(model, groups, state)
        transposed = self._transposed(model, state)  # after: a symmetric copy is an identical one, merged above
        return PassResult(model, bool(groups or transposed))

    def _identical(self, model: onnx.ModelProto, groups: list[list[str]], state: PruneState) -> None:
        inits = local_constants(model.graph)
        rename = {}
        for kept, *copies in groups:
            for name in copies:
                if _raw(inits[name]) != _raw(inits[kept]):  # a hash collision: never merge on a hash alone
                    continue
                rename[name] = kept
        saved = sum(len(_raw(inits[n])) for n in rename)
        read_as(model, rename)
        drop_local_constants(model.graph, set(rename))
        merged = sorted({rename[n] for n in rename})
        shown = listed(f"'{n}'" for n in merged)
        state.notes.append(f"{len(rename)} bit-identical copies of {len(merged)} weight(s) ({shown}) merged into "
                           f"one tied weight each: pruned with one mask, counted once, {saved / 1024:.1f} KB "
                           f"{FILE_SAVING}")

    def _transposed(self, model: onnx.ModelProto, state: PruneState) -> list[tuple[str, str]]:
        """Merge `transposed_copies` where the inventory then prunes the kept matrix; the note says which."""
        from onnxprune.passes.weights import find_prunable

        pairs = transposed_copies(model)
        if not pairs:
            return []
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        _merge_transposed(trial, pairs)
        prunable = {w.name for w in find_prunable(trial, with_macs=False).prunable}
        pairs = [(k, c) for k, c in pairs if k in prunable]
        if not pairs:
            return []
        inits = local_constants(model.graph)
        saved = sum(len(_raw(inits[c])) for _, c in pairs)
        _merge_transposed(model, pairs)
        shown = listed(f"'{c}' as '{k}'" for k, c in pairs)
        state.notes.append(f"{len(pairs)} weight(s) stored again as their transpose ({shown}, transposed) merged into "
                           f"one tied weight each: pruned with one mask, counted once, {saved / 1024:.1f} KB "
                           f"{FILE_SAVING}")
        return pairs

    def ensures(self, model: onnx.ModelProto, state: PruneState) -> None:
        check_reads(model, self.name)


# ---- shared with bypass_identity.py: the main graph's names a rename may not touch, renaming, its check ----------

def frozen_names(graph: onnx.GraphProto) -> set[str]:
    """Graph inputs and outputs and the names If/Loop/Scan bodies read from the main graph."""
    names = {v.name for v in graph.input} | {v.name for v in graph.output}
    return names | {name for node in graph.node if node.attribute for name in outer_reads(node)}


def read_as(model: onnx.ModelProto, rename: dict[str, str]) -> None:
    """Main-graph nodes read rename[name] where they read name; the renamed names' value_info goes."""
    rename_reads(model.graph, rename, bodies=False)


def check_reads(model: onnx.ModelProto, pass_name: str) -> None:
    """Every main-graph node input still exists (an initializer, a graph input or a node's output)."""
    names = {t.name for t in model.graph.initializer} | {v.name for v in model.graph.input}
    names |= {o for n in model.graph.node for o in n.output}
    missing = [i for n in model.graph.node for i in n.input if i and i not in names]
    if missing:
        raise PassError(f"{pass_name}: nodes read '{missing[0]}', which no longer exists.")
