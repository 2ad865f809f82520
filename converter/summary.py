"""Numbers about a model's weights, the same for `inspect`, the prune summary and the report."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.passes.weights import FLOAT_TYPES, Inventory, constant_tensors


def layer_rows(model: onnx.ModelProto, inventory: Inventory) -> list[dict]:
    """One row per prunable weight: where it is, how big, how many nonzeros, how many MACs per sample."""
    tensors = constant_tensors(model)
    rows = []
    for w in inventory.prunable:
        values = numpy_helper.to_array(tensors[w.name]) if w.name in tensors else None
        nnz = int(np.count_nonzero(values)) if values is not None else None
        rows.append(
            {
                "node": w.node,
                "op": w.op_type,
                "weight": w.name,
                "kind": w.kind,
                "shape": list(w.shape),
                "dtype": w.dtype,
                "params": w.size,
                "nonzeros": nnz,
                "density": (nnz / w.size) if (nnz is not None and w.size) else None,
                "macs": w.macs,
                "neurons": neurons(w),
                "via": list(w.via),
                "readers": w.readers,
                "in_loop": "Loop " in w.scope or "Scan " in w.scope,  # runs once an iteration: MACs unknown
            }
        )
    return rows


def neurons(w) -> int | None:
    """A weight's output channels: its out axis, or an embedding table's features (its last axis: what a lookup
    returns per id, which dead-neuron removal follows, as prune's table shows them); None where unknown."""
    if w.out_axis is not None:
        return w.shape[w.out_axis]
    return w.shape[-1] if w.kind == "embedding" and len(w.shape) >= 2 else None


def totals(rows: list[dict]) -> dict:
    params = sum(r["params"] for r in rows)
    nnz = sum(r["nonzeros"] or 0 for r in rows)
    macs = [r["macs"] for r in rows]
    return {
        "params": params,
        "nonzeros": nnz,
        "density": nnz / params if params else None,
        "macs": sum(macs) if macs and all(m is not None for m in macs) else None,
    }


def float_nonzeros(model: onnx.ModelProto) -> int:
    """Nonzero values of every float constant of `model` (initializers and Constant nodes, in every scope) and of the
    float parameters other nodes hold in attributes (ai.onnx.ml's SVM support vectors and coefficients, a
    LinearClassifier's, a Scaler's: `inspect` lists them as not prunable): what the prunable weights' ratio leaves
    out, said beside it when it is much (a dynamo GRU's weights behind Slices, an embedding table; sweep 29's
    scaler + PCA + SVC said "2.19x fewer" for its PCA alone, 29% of its 71K nonzero float parameters, the file
    unchanged)."""
    from onnxprune.passes.scopes import all_nodes

    held = 0
    for node in all_nodes(model):
        if node.domain != "ai.onnx.ml":  # standard ops' float attributes are settings (Upsample's scales)
            continue
        for a in node.attribute:
            if a.type == onnx.AttributeProto.FLOATS:
                held += int(np.count_nonzero(np.asarray(a.floats, dtype=np.float32)))
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type in FLOAT_TYPES:
                held += int(np.count_nonzero(numpy_helper.to_array(a.t)))
    return held + sum(int(np.count_nonzero(numpy_helper.to_array(t))) for t in constant_tensors(model).values()
                      if t.data_type in FLOAT_TYPES)


def packed_weights(model: onnx.ModelProto) -> tuple[int, list[str]]:
    """(values, what) of weights integer kernels hold packed, which the tool neither prunes nor unpacks: onnxruntime's
    com.microsoft MatMulNBits (K x N values of `bits` bits each, in blocks). Counted whole beside the float weights,
    as nonzero (a code is a value, its zero point included): sweep 30's 4-bit row transformer said "all float weights
    5.83K ... 89% not prunable", its 67K 4-bit weights nowhere."""
    from onnxprune.passes.scopes import all_nodes

    values, count, bits = 0, 0, set()
    for node in all_nodes(model):
        if node.op_type == "MatMulNBits" and node.domain == "com.microsoft":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            values += int(attrs.get("K", 0)) * int(attrs.get("N", 0))
            bits.add(int(attrs.get("bits", 4)))
            count += 1
    what = [f"{'/'.join(map(str, sorted(bits)))}-bit values of {count} MatMulNBits"] if count else []
    return values, what


def skipped_rows(inventory: Inventory) -> list[dict]:
    return [{"name": s.name, "reason": s.reason, "size": s.size} for s in inventory.skipped]
