"""Shape inference on a skeleton of the model: big weights become declared inputs, so nothing large is copied.

onnx's shape inference serializes the whole model into C++ and back; for VGG-16 (528 MB) that was 4–5 s a call.
The shapes of every tensor depend only on the weights' shapes (and on small integer constants, which stay):

    initializer fc6.weight float[4096, 25088]  →  graph input fc6.weight float[4096, 25088] (no data)
"""

from __future__ import annotations

import logging

import onnx

log = logging.getLogger(__name__)

Shapes = dict[str, list]  # tensor name -> dims (int, or None where unknown)
BIG = 4096  # float initializers with this many elements or more travel as declared inputs
FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without the data of its big float initializers (declared as inputs instead)."""
    g = model.graph
    out = onnx.ModelProto(ir_version=max(model.ir_version, 4), opset_import=model.opset_import,
                          functions=model.functions)
    graph = onnx.GraphProto(name=g.name, node=g.node, input=g.input, output=g.output, value_info=g.value_info)
    listed = {i.name for i in g.input}
    for t in g.initializer:
        size = 1
        for d in t.dims:
            size *= d
        if t.data_type in FLOATS and size >= BIG:
            if t.name not in listed:
                graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            graph.initializer.append(t)
    graph.sparse_initializer.extend(g.sparse_initializer)
    out.graph.CopyFrom(graph)
    return out


def infer_shapes(model: onnx.ModelProto, *, warn: bool = False) -> Shapes:
    """Tensor name -> dims (None where symbolic or unknown); when inference fails (logged when `warn`), the shapes
    the model itself declares."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), strict_mode=False, data_prop=True)
    except Exception as exc:  # e.g. an op onnx does not know: only the shapes the model declares are known
        if warn:
            log.warning("shape inference failed (%s); rules that need shapes will block", exc)
        inferred = model
    g = inferred.graph
    shapes: Shapes = {}
    for vi in [*g.value_info, *g.input, *g.output]:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return shapes
