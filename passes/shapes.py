"""Shape inference on a skeleton of the model: big weights become declared inputs, so nothing large is copied.

onnx's shape inference serializes the whole model into C++ and back; for VGG-16 (528 MB) that was 4–5 s a call.
The shapes of every tensor depend only on the weights' shapes (and on small integer constants, which stay):

    initializer fc6.weight float[4096, 25088]  →  graph input fc6.weight float[4096, 25088] (no data)
"""

from __future__ import annotations

import functools
import logging

import onnx

from onnxprune.passes.scopes import FLOAT_TYPES

log = logging.getLogger(__name__)

Shapes = dict[str, list]  # tensor name -> dims (int, or None where unknown)
BIG = 4096  # float initializers with this many elements or more travel as declared inputs


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
        if t.data_type in FLOAT_TYPES and size >= BIG:
            if t.name not in listed:
                graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            graph.initializer.append(t)
    graph.sparse_initializer.extend(g.sparse_initializer)
    graph.value_info.extend(_ml_shapes(g))
    out.graph.CopyFrom(graph)
    return out


# ai.onnx.ml ops whose output has their input's shape (float): onnx has no shape inference for them, and every shape
# after one stayed unknown (sweep 17: MACs "unknown" for every scikit-learn pipeline; a StandardScaler leads them)
ML_SAME_SHAPE = {"Scaler": onnx.TensorProto.FLOAT, "Normalizer": onnx.TensorProto.FLOAT,
                 "Binarizer": None, "Imputer": None}  # None: the input's own element type


def _ml_shapes(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Declared shapes for the outputs of ML_SAME_SHAPE nodes whose input's shape is declared (or was, upstream)."""
    known = {vi.name: vi.type.tensor_type for vi in [*g.input, *g.value_info] if vi.type.HasField("tensor_type")
             and vi.type.tensor_type.HasField("shape")}
    added = []
    for n in g.node:
        if n.domain != "ai.onnx.ml" or n.op_type not in ML_SAME_SHAPE or not n.input or not n.output:
            continue
        src = known.get(n.input[0])
        if src is None or n.output[0] in known:
            continue
        vi = onnx.ValueInfoProto(name=n.output[0])
        vi.type.tensor_type.elem_type = ML_SAME_SHAPE[n.op_type] or src.elem_type
        vi.type.tensor_type.shape.CopyFrom(src.shape)
        known[n.output[0]] = vi.type.tensor_type
        added.append(vi)
    return added


def infer_shapes(model: onnx.ModelProto, *, warn: bool = False) -> Shapes:
    """Tensor name -> dims (None where symbolic or unknown); when inference fails (logged when `warn`), the shapes
    the model itself declares."""
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model), strict_mode=False, data_prop=True)
    except Exception as exc:  # e.g. an op onnx does not know: only the shapes the model declares are known
        if warn:
            log.warning("shape inference failed (%s); rules that need shapes will block", exc)
        inferred = model
    shapes = _declared(inferred.graph)
    if _contrib_unknown(model.graph, shapes) or _layer_unknown(model.graph, shapes) \
            or _layer_partial(model.graph, shapes):
        for name, dims in _declared(_symbolic(model).graph).items():
            shapes[name] = _merged(shapes.get(name), dims)
    return shapes


def _merged(known: list | None, other: list) -> list:
    """`known` with the sizes it lacks taken from `other` (another inference's dims of the same tensor); `known`
    itself where the ranks differ."""
    if known is None:
        return other
    if len(known) != len(other):
        return known
    return [k if k is not None else o for k, o in zip(known, other)]


def at_batch(model: onnx.ModelProto, batch: int) -> Shapes | None:
    """Inferred shapes with the batch fixed at `batch`: every graph input with symbolic dims has exactly one, set to
    `batch` (None when some input has more, or inference fails). onnx's data propagation then follows a Reshape whose
    target is computed from Shape ops to its concrete rows: torch legacy's nn.MultiheadAttention folds [S, N, E] into
    [S*N, E] before out_proj's Gemm through such a chain, and the rows a sample stayed unknown (sweep 24)."""
    m = skeleton(model)
    for vi in m.graph.input:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        free = [d for d in tt.shape.dim if not d.HasField("dim_value")]
        if len(free) > 1:
            return None
        for d in free:
            d.Clear()
            d.dim_value = batch
    del m.graph.value_info[:]
    for vi in m.graph.output:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - unknown: the caller keeps what it knew
        log.debug("shape inference at batch %d failed (%s)", batch, exc)
        return None
    return _declared(inferred.graph)


def _declared(g: onnx.GraphProto) -> Shapes:
    """Every shape `g` declares, in the main graph and in its If branches (inference fills theirs too: a layer in
    an If branch had "unknown" MACs on a fully static input, sweep 27's torch.cond); the main graph's first. Not in
    Loop/Scan bodies: a body's layer runs once an iteration, and its MACs a sample stay unknown, not one iteration's."""
    from onnxprune.passes.scopes import scopes

    shapes: Shapes = {}
    for sc in scopes(g):
        if "Loop " in sc.path or "Scan " in sc.path:
            continue
        for vi in [*sc.graph.value_info, *sc.graph.input, *sc.graph.output]:
            tt = vi.type.tensor_type
            if vi.type.HasField("tensor_type") and tt.HasField("shape") and vi.name not in shapes:
                shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return shapes


LAYERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _layer_unknown(g: onnx.GraphProto, shapes: Shapes) -> bool:
    """A layer whose input or output onnx left without a shape: a Reshape to a shape computed from Shape ops that
    onnx's data propagation does not follow (tf2onnx's Keras Flatten: Shape, Gather, Cast, Slice, Concat, Cast),
    after which every MatMul's MACs were "unknown" (sweep 22); onnxruntime's symbolic inference follows it."""
    return any(n.op_type in LAYERS and n.domain in ("", "ai.onnx") and
               any(t and t not in shapes for t in [n.input[0], *n.output[:1]]) for n in g.node)


def _layer_partial(g: onnx.GraphProto, shapes: Shapes) -> bool:
    """A layer whose input or output has an unknown size besides the batch although every graph input has none: a
    Slice whose bounds come from Shape through a Div, which onnx's data propagation does not follow (torchvision's
    ShuffleNetV2 splits its channels so, and MACs were "unknown" for 50 of 57 layers, sweep 30); onnxruntime's
    symbolic inference follows it. Not where an input has a symbolic axis besides the batch (a sequence length):
    there the sizes are unknown for a reason, and symbolic inference would be paid for nothing."""
    stored = {t.name for t in g.initializer}
    feeds = [vi for vi in g.input if vi.name not in stored]
    if any(not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape")
           or any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim[1:]) for vi in feeds):
        return False
    return any(n.op_type in LAYERS and n.domain in ("", "ai.onnx") and
               any(t and None in (shapes.get(t) or [0])[1:] for t in [n.input[0], *n.output[:1]]) for n in g.node)


def _contrib_unknown(g: onnx.GraphProto, shapes: Shapes) -> bool:
    """A com.microsoft node (onnxruntime's contrib ops) whose output onnx left without a shape."""
    return any(n.domain == "com.microsoft" and any(o and o not in shapes for o in n.output) for n in g.node)


def _symbolic(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's symbolic shape inference, which knows its contrib ops, on the skeleton; the model's own
    declarations where it fails. onnx has no shape function for com.microsoft ops, and every shape after the first
    stayed unknown: an onnxruntime.transformers-optimized BERT (EmbedLayerNormalization, Attention,
    SkipLayerNormalization, BiasGelu) showed MACs "unknown" for every MatMul (sweep 18). It does not know every
    contrib op (DynamicQuantizeLSTM), hence the fallback. Its steps are run here rather than through its
    `infer_shapes`, which, where inference stops short, saves the model as sym_shape_infer_temp.onnx (and a .data file)
    into the working directory before it raises: every `inspect` of an int8 BiLSTM left two files behind; the shapes
    it did infer are kept."""
    try:
        infer = _symbolic_module()
        if (infer.get_opset(model) or 0) < 7:  # what its infer_shapes refuses
            return model
        inference = infer.SymbolicShapeInference(2**31 - 1, True, False, 0)
        inference._preprocess(skeleton(model))
        while inference.run_:
            inference._infer_impl()
        inference._update_output_from_vi()
        return inference.out_mp_
    except Exception as exc:  # noqa: BLE001 - an op it does not know either: the shapes onnx found stand
        log.debug("symbolic shape inference failed (%s)", exc)
        return model


@functools.cache
def _symbolic_module():
    """onnxruntime's `tools/symbolic_shape_infer.py`, loaded from its file: it needs only onnx, numpy, sympy and
    packaging, where `import onnxruntime.tools.symbolic_shape_infer` runs onnxruntime's package (its native library)
    and `onnxruntime.tools`, which imports torch when torch is installed (2.7 s of imports in all; heavy models 51's
    L7: `onnxprune inspect u2netp.onnx` imported both, and inspect imports neither)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("onnxruntime")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("onnxruntime is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "tools" / "symbolic_shape_infer.py"
    module_spec = importlib.util.spec_from_file_location("_onnxprune_symbolic_shape_infer", path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"no symbolic shape inference at {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def conv_pads(auto_pad: str, size, kernel, strides, dilations, pads=None) -> list[int]:
    """A Conv's explicit [begin…, end…] pads on an input of spatial `size`, as the ONNX Conv spec resolves auto_pad:
    NOTSET the `pads` attribute (zeros if absent), VALID none, SAME_* an output of ceil(size / stride) with the odd
    pad at the end (SAME_UPPER) or the start (SAME_LOWER). The one reading of it for shape inference
    (passes/weights), the refit's im2col (converter/reconstruct) and the torch bridge (converter/bridge/ops/nn)."""
    k = len(size)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [max(0, (-(-n // s) - 1) * s + d * (kk - 1) + 1 - n)
                 for n, kk, s, d in zip(size, kernel, strides, dilations)]
        small = [t // 2 for t in total]
        big = [t - h for t, h in zip(total, small)]
        return small + big if auto_pad == "SAME_UPPER" else big + small
    if auto_pad == "VALID":
        return [0] * 2 * k
    return list(pads) if pads is not None else [0] * 2 * k
