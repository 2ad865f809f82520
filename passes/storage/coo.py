"""COO: ONNX SparseTensorProto, the format onnx itself defines. Encoder and decoder.

A SparseTensorProto holds the nonzero values (1-D, the weight's dtype) and their linearized positions (1-D int64,
sorted, the only index form onnx.checker accepts). fp32 pays below 1/3 density (4+8 bytes per nonzero vs 4),
fp16 below 1/5. Two homes, same bytes:
  * "constant":    Constant(sparse_value=...) nodes; passes check_model(full_check=True) and shape inference.
  * "initializer": graph.sparse_initializer; loads in onnxruntime, passes the plain checker only.
Decoding (for the passes, which need dense tensors: onnx-graphsurgeon would silently turn sparse tensors into
zero-filled dense ones) accepts linear or coordinate indices, and refuses indices outside the shape.

A sparse Constant needs opset 11. At opset 9 and 10 "constant" writes the same two arrays as plain Constant nodes
and the standard ops that rebuild the weight (`scatter_nodes`):

    ConstantOfShape([numel], 0) -> Scatter(axis 0, indices, values) -> Reshape(shape) -> the weight's name

Scatter is ScatterElements' name before opset 11 (deprecated there). Every input is a constant, so onnxruntime
folds the chain into one initializer when the session is created; its tensors are named `<weight>__coo9.<part>`,
which `decode` and `describe` recognise. Below opset 9 (no ConstantOfShape, no Scatter) the encode step raises the
model to opset 9 where it can (converter/steps/encode.raised_for_storage); otherwise the weights stay dense.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import ModelError
from onnxprune.passes.base import PruneState
from onnxprune.passes.scopes import constant_homes
from onnxprune.passes.storage import StorageFormat, register_format
from onnxprune.passes.storage.graphs import (all_graphs, default_opset, drop_inputs, fed_inputs, first_line,
                                             refuse_huge, replace_initializers)
from onnxprune.passes.weights import constant_tensors


def dense_to_sparse(values: np.ndarray, name: str) -> onnx.SparseTensorProto:
    flat = values.reshape(-1)
    idx = np.flatnonzero(flat).astype(np.int64)  # sorted by construction
    vals = numpy_helper.from_array(flat[idx], name)
    indices = numpy_helper.from_array(idx, name + "__indices")
    return helper.make_sparse_tensor(vals, indices, list(values.shape))


def sparse_bytes(nnz: int, itemsize: int) -> int:
    return nnz * (itemsize + 8)


def pays_off(values: np.ndarray) -> bool:
    return sparse_bytes(int(np.count_nonzero(values)), values.dtype.itemsize) < values.size * values.dtype.itemsize


def sparse_to_dense(sparse: onnx.SparseTensorProto) -> onnx.TensorProto:
    """Our own densifier: values + linear or coordinate indices into a dense TensorProto of the same dtype."""
    dims = tuple(sparse.dims)
    refuse_huge(int(np.prod(dims, dtype=np.float64)), sparse.values.name)
    try:
        values = numpy_helper.to_array(sparse.values)
        indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
        dense = np.zeros(dims, dtype=values.dtype)
        flat = dense.reshape(-1)
        if indices.ndim == 2:  # [NNZ, rank] coordinates
            indices = np.ravel_multi_index(tuple(indices.T), dims) if indices.size else indices.reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= flat.size):
            raise ModelError(f"sparse tensor '{sparse.values.name}' has indices outside its shape {list(dims)}.")
        flat[indices] = values
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # a corrupted file, not a bug of ours
        raise ModelError(f"sparse tensor '{sparse.values.name}' of shape {list(dims)} is malformed "
                         f"({first_line(exc)}); the file is corrupted, re-export or re-download it.") from None
    return numpy_helper.from_array(dense, sparse.values.name)


SCATTER_OPSETS = (9, 10)  # ConstantOfShape and Scatter exist; a sparse Constant does not (11)
SCATTER_TAG = "__coo9."  # the scatter chain's tensor names: <weight>__coo9.<part>
SCATTER_BYTES = 150  # its nodes, less the names


def scatter_nodes(values: np.ndarray, name: str) -> list[onnx.NodeProto]:
    """The opset 9-10 home of a COO weight: its values and int64 linear indices as Constant nodes, scattered into
    zeros and reshaped to the weight's shape; the last node writes `name`."""
    flat = values.reshape(-1)
    idx = np.flatnonzero(flat).astype(np.int64)
    tag = name + SCATTER_TAG

    def const(part: str, array: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [tag + part], value=numpy_helper.from_array(np.asarray(array)))

    return [
        const("values", flat[idx]), const("indices", idx), const("numel", np.array([flat.size], np.int64)),
        helper.make_node("ConstantOfShape", [tag + "numel"], [tag + "zeros"],
                         value=numpy_helper.from_array(np.zeros(1, flat.dtype))),
        helper.make_node("Scatter", [tag + "zeros", tag + "indices", tag + "values"], [tag + "flat"], axis=0),
        const("shape", np.array(values.shape, np.int64)),
        helper.make_node("Reshape", [tag + "flat", tag + "shape"], [name]),
    ]


def scatter_pays_off(values: np.ndarray, name: str) -> bool:
    """The chain costs about 150 bytes beside the arrays and its tensor names (12 references of the weight's name
    and a part: 415 bytes a weight of a 10-letter name)."""
    chain = sparse_bytes(int(np.count_nonzero(values)), values.dtype.itemsize) + SCATTER_BYTES + 12 * (len(name) + 10)
    return chain < values.size * values.dtype.itemsize


def _old_opset(model: onnx.ModelProto, state: PruneState, where: str = "") -> bool | None:
    """None when the model's opset holds a sparse Constant; True when it holds the scatter chain (9-10); False,
    with a note, when it holds neither."""
    opset = default_opset(model)
    if opset >= 11:
        return None
    if opset in SCATTER_OPSETS:
        return True
    if not any(n.startswith(OLD_OPSET) for n in state.notes):  # the encode step's, when raising the opset failed
        state.notes.append(old_opset_note(opset, where=where))
    return False


OLD_OPSET = "sparse storage needs opset >= 9"


def old_opset_note(opset: int, why: str | None = None, where: str = "") -> str:
    """Why pruned weights of a model below opset 9 stay dense; `why` the version converter's failure, if it ran."""
    head = f"{OLD_OPSET} (ConstantOfShape, Scatter; model has {opset}): pruned weights{where} kept dense"
    if why:
        return f"{head}; raising the model to opset 9 with onnx.version_converter failed ({why})"
    return (f"{head}. Convert the model to opset 11+ (onnx.version_converter.convert_version(model, 11)) to store "
            "them sparse.")


def _encoder(home: str):
    def encode(model: onnx.ModelProto, names: list[str], state: PruneState) -> list[str]:
        """Re-home the weights that get smaller as sparse; "constant" needs opset >= 11 (at 9-10 the scatter
        chain), "initializer" IR >= 6."""
        graph_inputs = fed_inputs(model)
        tensors = constant_tensors(model)
        init_names = {t.name for t in model.graph.initializer}
        encoded: list[str] = []
        new_constants: list[onnx.NodeProto] = []
        replaced: set[str] = set()  # Constant nodes a scatter chain takes the place of
        scatter, decided = None, False  # what the model can hold, asked at the first weight smaller sparse (no note
        # when none is, or when every such weight is a graph input: the encode step says so)
        for name in names:
            if name in graph_inputs:
                continue
            values = numpy_helper.to_array(tensors[name])
            if not pays_off(values):
                continue
            if not decided:
                decided, scatter = True, _old_opset(model, state) if home == "constant" else None
                if scatter is False:
                    return []
                if home == "initializer" and model.ir_version < 6:
                    state.notes.append(f"sparse initializers need IR >= 6 (model has IR {model.ir_version}); "
                                       "weights kept dense.")
                    return []
            if scatter and not scatter_pays_off(values, name):
                continue
            encoded.append(name)
            if scatter:
                if name not in init_names:  # a Constant node: the chain writes its name instead
                    replaced.add(name)
                new_constants += scatter_nodes(values, name)
                continue
            sparse = dense_to_sparse(values, name)
            if name not in init_names:  # already a Constant node: swap its attribute
                node = next(n for n in model.graph.node if n.op_type == "Constant" and n.output[0] == name)
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("sparse_value", sparse))
            elif home == "constant":
                new_constants.append(helper.make_node("Constant", [], [name], name=f"{name}__sparse",
                                                      sparse_value=sparse))
            else:
                model.graph.sparse_initializer.append(sparse)
        replace_initializers(model.graph, drop=set(encoded) & init_names)
        drop_inputs(model.graph, set(encoded) & init_names)  # below IR 4 an initializer is listed as an input too
        if home == "initializer" and set(encoded) & init_names:  # README "Sparse format"; the file is still valid
            state.notes.append("--sparse-format initializer: the file loads in onnxruntime but fails onnx.checker's "
                               "full check and onnx shape inference (a Gemm/MatMul/Conv input may not be a sparse "
                               "initializer); --sparse-format constant, the default, is as small and passes both")
        if new_constants:
            nodes = new_constants + [n for n in model.graph.node
                                     if not (n.op_type == "Constant" and n.output[0] in replaced)]
            del model.graph.node[:]
            model.graph.node.extend(nodes)
        return encoded

    return encode


def encode_in_bodies(model: onnx.ModelProto, names: list[str], state: PruneState) -> list[str]:
    """Weights that live in If/Loop/Scan bodies, re-homed in their body as Constant(sparse_value) nodes (the
    scatter chain at opset 9-10)."""
    scatter = _old_opset(model, state, " in subgraph bodies")
    if scatter is False:
        return []
    tensors, homes = constant_tensors(model), constant_homes(model)
    order = {id(g): k for k, (g, _) in enumerate(homes.values())}
    encoded: list[str] = []
    new_constants: dict[int, list[onnx.NodeProto]] = {}
    drops: dict[int, set[str]] = {}  # Constant nodes the scatter chain replaces, dropped with the inner-first refill
    graphs: dict[int, onnx.GraphProto] = {}
    for name in names:
        values = numpy_helper.to_array(tensors[name])
        if not (scatter_pays_off(values, name) if scatter else pays_off(values)):
            continue
        encoded.append(name)
        graph, node = homes[name]
        if scatter:
            if node is not None:
                drops.setdefault(id(graph), set()).add(name)
            else:
                replace_initializers(graph, drop={name})
            graphs.setdefault(id(graph), graph)
            new_constants.setdefault(id(graph), []).extend(scatter_nodes(values, name))
            continue
        sparse = dense_to_sparse(values, name)
        if node is not None:  # already a Constant node: swap its attribute
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("sparse_value", sparse))
            continue
        replace_initializers(graph, drop={name})
        graphs.setdefault(id(graph), graph)
        new_constants.setdefault(id(graph), []).append(
            helper.make_node("Constant", [], [name], name=f"{name}__sparse", sparse_value=sparse))
    # Inner bodies first: re-filling an outer graph's node list copies its If/Loop nodes, bodies included, so a
    # body edited after that would be a detached copy. Scopes come outer before inner in `order`.
    for key in sorted(graphs, key=lambda k: order[k], reverse=True):
        graph = graphs[key]
        drop = drops.get(key, set())
        nodes = new_constants[key] + [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in drop)]
        del graph.node[:]
        graph.node.extend(nodes)
    return encoded


def _scatter_chains(graph: onnx.GraphProto) -> dict[str, dict[str, onnx.NodeProto]]:
    """{weight: {part: node}} of every complete scatter chain (`scatter_nodes`) in `graph` itself: its nodes are
    known by their outputs, `<weight>__coo9.<part>`, and the Reshape that writes the weight from `...flat`."""
    chains: dict[str, dict[str, onnx.NodeProto]] = {}
    for node in graph.node:
        out = node.output[0] if node.output else ""
        if SCATTER_TAG in out:
            weight, part = out.rsplit(SCATTER_TAG, 1)
            chains.setdefault(weight, {})[part] = node
        elif node.op_type == "Reshape" and node.input and node.input[0] == out + SCATTER_TAG + "flat":
            chains.setdefault(out, {})["reshape"] = node
    parts = {"values", "indices", "numel", "zeros", "flat", "shape", "reshape"}
    return {w: c for w, c in chains.items() if set(c) == parts}


def _scatter_dense(weight: str, chain: dict[str, onnx.NodeProto]) -> np.ndarray:
    def value(part):
        return numpy_helper.to_array(next(a.t for a in chain[part].attribute if a.name == "value"))

    try:
        shape = tuple(int(d) for d in value("shape"))
        refuse_huge(int(np.prod(shape, dtype=np.float64)), weight)
        sparse = helper.make_sparse_tensor(numpy_helper.from_array(value("values"), weight),
                                           numpy_helper.from_array(value("indices").astype(np.int64), weight + "i"),
                                           list(shape))
    except (StopIteration, ValueError, TypeError) as exc:
        raise ModelError(f"the sparse weight '{weight}' (opset 9-10 scatter form) is malformed ({first_line(exc)}); "
                         "the file is corrupted or was edited, re-export it.") from None
    return numpy_helper.to_array(sparse_to_dense(sparse))


def decode(model: onnx.ModelProto) -> list[str]:
    """Move sparse initializers, Constant(sparse_value) and scatter chains into dense form; return their names."""
    names: list[str] = []
    for graph in reversed(list(all_graphs(model.graph))):  # inner bodies first: a refill copies the bodies it holds
        chains = _scatter_chains(graph)
        if chains:
            dense = {w: _scatter_dense(w, c) for w, c in chains.items()}
            members = {id(n) for c in chains.values() for n in c.values()}
            nodes = [helper.make_node("Constant", [], [w], name=w, value=numpy_helper.from_array(a))
                     for w, a in dense.items()] + [n for n in graph.node if id(n) not in members]
            del graph.node[:]
            graph.node.extend(nodes)
            names += list(chains)
    for graph in all_graphs(model.graph):
        for sparse in list(graph.sparse_initializer):
            dense = sparse_to_dense(sparse)
            graph.initializer.append(dense)
            names.append(dense.name)
        del graph.sparse_initializer[:]
        for node in graph.node:
            if node.op_type != "Constant":
                continue
            for attr in node.attribute:
                if attr.name == "sparse_value":
                    dense = sparse_to_dense(attr.sparse_tensor)
                    dense.name = ""
                    attr.CopyFrom(helper.make_attribute("value", dense))
                    names.append(node.output[0])
    return names


def describe(model: onnx.ModelProto) -> dict[str, dict]:
    """COO weights: indices + values bytes, as stored."""
    out = {}
    for graph in all_graphs(model.graph):
        for weight, chain in _scatter_chains(graph).items():
            values = next((a.t for a in chain["values"].attribute if a.name == "value"), None)
            nnz = int(np.prod(list(values.dims), dtype=np.int64)) if values is not None else 0
            size = sum(n.ByteSize() for n in chain.values())
            out[weight] = {"encoding": "coo (scatter, opset 9-10)", "bytes": size, "nonzeros": nnz}
        homes = [("initializer", sp, sp.values.name) for sp in graph.sparse_initializer]
        homes += [("constant", a.sparse_tensor, n.output[0]) for n in graph.node if n.op_type == "Constant"
                  for a in n.attribute if a.name == "sparse_value"]
        for home, sp, name in homes:
            nnz = int(np.prod(list(sp.values.dims), dtype=np.int64))
            size = sum(len(t.raw_data) or t.ByteSize() for t in (sp.values, sp.indices))
            out[name] = {"encoding": f"coo ({home})", "bytes": size, "nonzeros": nnz}
    return out


register_format(StorageFormat("constant", _encoder("constant"), decode, describe))
register_format(StorageFormat("initializer", _encoder("initializer"), decode, describe))
