"""Sparse encoding: store pruned weights as ONNX SparseTensorProto, where that makes the file smaller.

A SparseTensorProto holds the nonzero values (1-D, the weight's dtype) and their linearized positions (1-D int64,
sorted, the only index form onnx.checker accepts). fp32 pays below 1/3 density (4+8 bytes per nonzero vs 4),
fp16 below 1/5. Two homes, same bytes:
  * "constant":    Constant(sparse_value=...) nodes; passes check_model(full_check=True) and shape inference.
  * "initializer": graph.sparse_initializer; loads in onnxruntime, passes the plain checker only.
This is the very last step: onnx-graphsurgeon would silently turn sparse tensors into zero-filled dense ones.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.scopes import constant_homes
from onnxprune.passes.weights import constant_tensors

FORMATS = ("constant", "initializer", "dense")


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


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


@register_pass("sparse-encode")
class SparseEncode(Pass):
    """Re-home the given weights as sparse tensors.

    Rules:
      1. Only weights that get smaller as sparse; the rest stay dense.
      2. "constant" needs opset >= 11, "initializer" IR >= 6; otherwise dense, and a note says why.
      3. Weights that are also graph inputs (old IR) stay dense: a sparse tensor cannot be a graph input.
      4. A weight that lives in an If/Loop/Scan body (its Constant node or a body initializer) is re-homed in
         that body, always as a sparse Constant node there; an outer-scope weight the bodies read is encoded in
         the main graph like any other.
    """

    def __init__(self, names: list[str], fmt: str = "constant"):
        if fmt not in FORMATS:
            raise ValueError(f"sparse format '{fmt}' is not one of {FORMATS}")
        self.names = names
        self.fmt = fmt

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        if self.fmt == "dense":
            return PassResult(model=model, modified=False)
        if self.fmt == "constant" and _default_opset(model) < 11:
            state.notes.append(f"sparse format 'constant' needs opset >= 11 (model has {_default_opset(model)}); weights kept dense.")
            return PassResult(model=model, modified=False)
        if self.fmt == "initializer" and model.ir_version < 6:
            state.notes.append(f"sparse initializers need IR >= 6 (model has IR {model.ir_version}); weights kept dense.")
            return PassResult(model=model, modified=False)
        graph_inputs = {i.name for i in model.graph.input}
        tensors = constant_tensors(model)
        homes = constant_homes(model)
        order = {id(g): k for k, (g, _) in enumerate(homes.values())}
        encoded: list[str] = []
        new_constants: dict[int, list[onnx.NodeProto]] = {}
        graphs: dict[int, onnx.GraphProto] = {}
        for name in self.names:
            values = numpy_helper.to_array(tensors[name])
            if name in graph_inputs or not pays_off(values):
                continue
            sparse = dense_to_sparse(values, name)
            encoded.append(name)
            graph, node = homes[name]
            if node is not None:  # already a Constant node: swap its attribute
                del node.attribute[:]
                node.attribute.append(helper.make_attribute("sparse_value", sparse))
                continue
            _drop_initializer(graph, name)
            if self.fmt == "constant" or graph is not model.graph:
                graphs.setdefault(id(graph), graph)
                new_constants.setdefault(id(graph), []).append(
                    helper.make_node("Constant", [], [name], name=f"{name}__sparse", sparse_value=sparse))
            else:
                model.graph.sparse_initializer.append(sparse)
        # Bodies first: re-filling an outer graph's node list copies its If/Loop nodes, bodies included, so a body
        # edited after that would be a detached copy. Scopes come outer before inner in `order`.
        for key in sorted(graphs, key=lambda k: order[k], reverse=True):
            graph, nodes = graphs[key], new_constants[key]
            nodes = nodes + list(graph.node)
            del graph.node[:]
            graph.node.extend(nodes)
        return PassResult(model=model, modified=bool(encoded))


def _drop_initializer(graph: onnx.GraphProto, name: str) -> None:
    kept = [t for t in graph.initializer if t.name != name]
    del graph.initializer[:]
    graph.initializer.extend(kept)
