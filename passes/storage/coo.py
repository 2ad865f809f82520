"""COO: ONNX SparseTensorProto, the format onnx itself defines. Encoder and decoder.

A SparseTensorProto holds the nonzero values (1-D, the weight's dtype) and their linearized positions (1-D int64,
sorted, the only index form onnx.checker accepts). fp32 pays below 1/3 density (4+8 bytes per nonzero vs 4),
fp16 below 1/5. Two homes, same bytes:
  * "constant":    Constant(sparse_value=...) nodes; passes check_model(full_check=True) and shape inference.
  * "initializer": graph.sparse_initializer; loads in onnxruntime, passes the plain checker only.
Decoding (for the passes, which need dense tensors: onnx-graphsurgeon would silently turn sparse tensors into
zero-filled dense ones) accepts linear or coordinate indices, and refuses indices outside the shape.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.errors import ModelError
from onnxprune.passes.base import PruneState
from onnxprune.passes.scopes import constant_homes
from onnxprune.passes.storage import StorageFormat, register_format
from onnxprune.passes.storage.graphs import all_graphs, default_opset, first_line, refuse_huge, replace_initializers
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


def _encoder(home: str):
    def encode(model: onnx.ModelProto, names: list[str], state: PruneState) -> list[str]:
        """Re-home the weights that get smaller as sparse; "constant" needs opset >= 11, "initializer" IR >= 6."""
        if home == "constant" and default_opset(model) < 11:
            state.notes.append(f"sparse format 'constant' needs opset >= 11 (model has {default_opset(model)}); "
                               "weights kept dense. Convert the model to opset 11+ (onnx.version_converter) to "
                               "store them sparse.")
            return []
        if home == "initializer" and model.ir_version < 6:
            state.notes.append(f"sparse initializers need IR >= 6 (model has IR {model.ir_version}); "
                               "weights kept dense.")
            return []
        graph_inputs = {i.name for i in model.graph.input}
        tensors = constant_tensors(model)
        init_names = {t.name for t in model.graph.initializer}
        encoded: list[str] = []
        new_constants: list[onnx.NodeProto] = []
        for name in names:
            values = numpy_helper.to_array(tensors[name])
            if name in graph_inputs or not pays_off(values):
                continue
            sparse = dense_to_sparse(values, name)
            encoded.append(name)
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
        if home == "initializer" and set(encoded) & init_names:  # README "Sparse format"; the file is still valid
            state.notes.append("--sparse-format initializer: the file loads in onnxruntime but fails onnx.checker's "
                               "full check and onnx shape inference (a Gemm/MatMul/Conv input may not be a sparse "
                               "initializer); --sparse-format constant, the default, is as small and passes both")
        if new_constants:
            nodes = new_constants + list(model.graph.node)
            del model.graph.node[:]
            model.graph.node.extend(nodes)
        return encoded

    return encode


def encode_in_bodies(model: onnx.ModelProto, names: list[str], state: PruneState) -> list[str]:
    """Weights that live in If/Loop/Scan bodies, re-homed in their body as Constant(sparse_value) nodes."""
    if default_opset(model) < 11:
        state.notes.append(f"sparse Constant nodes need opset >= 11 (model has {default_opset(model)}); weights in "
                           "subgraph bodies kept dense.")
        return []
    tensors, homes = constant_tensors(model), constant_homes(model)
    order = {id(g): k for k, (g, _) in enumerate(homes.values())}
    encoded: list[str] = []
    new_constants: dict[int, list[onnx.NodeProto]] = {}
    graphs: dict[int, onnx.GraphProto] = {}
    for name in names:
        values = numpy_helper.to_array(tensors[name])
        if not pays_off(values):
            continue
        sparse = dense_to_sparse(values, name)
        encoded.append(name)
        graph, node = homes[name]
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
        nodes = new_constants[key] + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    return encoded


def decode(model: onnx.ModelProto) -> list[str]:
    """Move sparse initializers and Constant(sparse_value) into dense form; return their names."""
    names: list[str] = []
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
