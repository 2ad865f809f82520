"""Layer-wise reconstruction: refit pruned layers without backpropagating through the graph.

The fallback for graphs the torch bridge cannot run (an op it lacks, If/Loop/Scan): onnxruntime can still run
them, so each pruned layer is refit on its own. Layers are taken in graph order; for layer l

    X  = its input activations in the *pruned* model (earlier layers already refit: errors do not pile up)
    T  = its output in the *dense* model on the same samples
    W* = argmin ‖X·Wᵀ − T‖² + λ‖W‖²  over the kept weights only, one output channel at a time

Activations are captured by exposing them as extra graph outputs. Only the Gram matrices XᵀX and XᵀT are kept
(float64, summed over batches), so memory does not grow with the data. A Conv is the same least-squares problem
on im2col patches (`torch.nn.functional.unfold`); Gemm/MatMul use their input as is. A bias that belongs to the
layer alone (Gemm/Conv input 2, alpha = beta = 1) is refit with it, as the intercept.

Left as they are (said in the notes): weights reached through Transpose/Reshape chains, weights that are the
first operand, ConvTranspose, Conv with more than two spatial dimensions or auto_pad, 0-sample data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.calibration.runtime import make_session, output_names
from onnxprune.errors import ConfigError
from onnxprune.passes.opfacts import CHANNEL_PRODUCERS
from onnxprune.passes.weights import find_prunable, name_nodes

log = logging.getLogger(__name__)

DEFAULT_DAMP = 1e-2  # ridge λ as a share of the mean diagonal of XᵀX (GPTQ's percdamp)


@dataclass
class Layer:
    weight: str
    node: onnx.NodeProto
    bias: str | None  # refit together with the weight
    x: str  # the activation input's name


@dataclass
class ReconstructReport:
    refit: dict[str, dict] = field(default_factory=dict)  # weight -> {"error_before", "error_after", "samples"}
    skipped: dict[str, str] = field(default_factory=dict)  # weight -> why it was left alone


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _layers(model: onnx.ModelProto, masks: dict[str, np.ndarray], report: ReconstructReport) -> list[Layer]:
    """The refittable layers among the masked weights, in graph order; the others with the reason."""
    name_nodes(model)
    nodes = {n.name: n for n in model.graph.node}
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    inits = {t.name: t for t in model.graph.initializer}
    users: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    layers = []
    for w in find_prunable(model, with_macs=False).prunable:
        if w.name not in masks:
            continue
        node = nodes.get(w.node)
        why = _outside_reach(w) or _unsupported(w, node, inits)
        if why:
            report.skipped[w.name] = why
            continue
        layers.append(Layer(w.name, node, _own_bias(node, inits, users), node.input[0]))
    missing = set(masks) - {lay.weight for lay in layers} - set(report.skipped)
    for name in missing:
        report.skipped[name] = "not a prunable weight of this graph"
    return sorted(layers, key=lambda lay: order[lay.node.name])


def _outside_reach(w) -> str | None:
    """Weights the layer-wise refit does not reach: inside a body, or of an op it has no least-squares form for."""
    if w.scope:
        return f"inside {w.scope}; left as pruned"
    if w.op_type not in CHANNEL_PRODUCERS:
        return f"{w.op_type} '{w.node}' is not refit; left as pruned"
    return None


def _unsupported(w, node, inits) -> str | None:
    if w.via or w.source != "initializer":
        return "reached through " + ("/".join(w.via) or "a Constant node") + "; left as pruned"
    if w.input_index != 1:
        return f"first operand of {node.op_type} '{node.name}'; left as pruned"
    if node.op_type == "ConvTranspose":
        return f"ConvTranspose '{node.name}' is not refit; left as pruned"
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    if node.op_type == "Conv" and (len(w.shape) not in (3, 4) or auto_pad not in (b"NOTSET", "NOTSET")):
        return f"Conv '{node.name}': {len(w.shape) - 2} spatial dims or auto_pad; only 1-D/2-D explicit pads are refit"
    if node.op_type == "Gemm" and _attr(node, "transA", 0):
        return f"Gemm '{node.name}' has transA=1; left as pruned"
    return None


def _own_bias(node, inits, users) -> str | None:
    if node.op_type not in ("Gemm", "Conv") or len(node.input) < 3 or node.input[2] not in inits:
        return None
    if node.op_type == "Gemm" and (_attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0):
        return None
    if users.get(node.input[2], 0) != 1 or len(inits[node.input[2]].dims) != 1:
        return None
    return node.input[2]


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` that also returns the tensors `names` (their element type from shape inference)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(out, strict_mode=False)
        types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    except Exception:  # inference is a nicety: float32 is what prunable layers take
        types = {}
    have = set(output_names(out))
    for n in names:
        if n not in have:
            out.graph.output.append(onnx.helper.make_tensor_value_info(n, types.get(n) or onnx.TensorProto.FLOAT, None))
    return out


def _batches(reader, limit: int | None):
    seen = 0
    source = reader.batches() if hasattr(reader, "batches") else ((f, None) for f in reader)
    for feeds, _ in source:
        if limit is not None and seen >= limit:
            return
        yield feeds
        seen += len(next(iter(feeds.values())))


# ------------------------------------------------------------------------------------------- design matrices


def _rows(layer: Layer, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X rows, T rows): one row per output position, X over the weight's input axis (im2col for Conv)."""
    op = layer.node.op_type
    if op == "Gemm":
        return x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if op == "MatMul":
        return x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    return _im2col(layer.node, x), np.moveaxis(y, 1, -1).reshape(-1, y.shape[1])


def _im2col(node, x: np.ndarray) -> np.ndarray:
    """Conv patches as rows [N·positions, C·k…] in the weight's [O, C/group, k…] order (groups side by side)."""
    import torch
    import torch.nn.functional as F

    spatial = x.ndim - 2
    kernel = list(_attr(node, "kernel_shape", None) or [])
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    strides = list(_attr(node, "strides", [1] * spatial))
    dilations = list(_attr(node, "dilations", [1] * spatial))
    pads = list(_attr(node, "pads", [0] * 2 * spatial))
    if spatial == 1:  # 1-D as 2-D with height 1
        t, kernel, strides, dilations = t.unsqueeze(2), [1, *kernel], [1, *strides], [1, *dilations]
        pads = [0, pads[0], 0, pads[1]]
    begin, end = pads[: len(pads) // 2], pads[len(pads) // 2 :]
    t = F.pad(t, [v for pair in zip(reversed(begin), reversed(end)) for v in pair])
    cols = F.unfold(t, kernel_size=kernel, dilation=dilations, stride=strides)  # [N, C·k·k, L]
    return cols.permute(0, 2, 1).reshape(-1, cols.shape[1]).numpy()


def _weight_matrix(layer: Layer, w: np.ndarray) -> np.ndarray:
    """[outputs, inputs] view of the stored weight (Gemm transB, MatMul [K, N], Conv [O, C/g·k…])."""
    op = layer.node.op_type
    if op == "Gemm":
        return w if _attr(layer.node, "transB", 0) else w.T
    if op == "MatMul":
        return w.T
    return w.reshape(w.shape[0], -1)


def _store(layer: Layer, matrix: np.ndarray, shape: tuple) -> np.ndarray:
    op = layer.node.op_type
    if op == "Gemm":
        return matrix if _attr(layer.node, "transB", 0) else matrix.T
    if op == "MatMul":
        return matrix.T
    return matrix.reshape(shape)


# -------------------------------------------------------------------------------------------------- fitting


@dataclass
class _Gram:
    """Running XᵀX, XᵀT, TᵀT (float64) per conv group, with an all-ones column for the intercept."""

    groups: int
    intercept: bool
    xx: list = field(default_factory=list)
    xt: list = field(default_factory=list)
    tt: np.ndarray | None = None
    rows: int = 0

    def add(self, x: np.ndarray, t: np.ndarray) -> None:
        x, t = x.astype(np.float64), t.astype(np.float64)
        xs, ts = np.split(x, self.groups, axis=1), np.split(t, self.groups, axis=1)
        for g, (xg, tg) in enumerate(zip(xs, ts)):
            if self.intercept:
                xg = np.concatenate([xg, np.ones((len(xg), 1))], axis=1)
            if len(self.xx) <= g:
                self.xx.append(np.zeros((xg.shape[1], xg.shape[1])))
                self.xt.append(np.zeros((xg.shape[1], tg.shape[1])))
            self.xx[g] += xg.T @ xg
            self.xt[g] += xg.T @ tg
        self.tt = (t * t).sum(axis=0) if self.tt is None else self.tt + (t * t).sum(axis=0)
        self.rows += len(x)


def _solve(gram: _Gram, w: np.ndarray, b: np.ndarray | None, mask: np.ndarray, damp: float) -> tuple:
    """Per output channel: ridge least squares on the kept inputs (and the intercept). Returns (W, b, err0, err1)."""
    out, per = w.shape[0] // gram.groups, w.shape[1]
    new_w, new_b = np.zeros_like(w, dtype=np.float64), None if b is None else b.astype(np.float64).copy()
    before = after = 0.0
    for g in range(gram.groups):
        xx, xt = gram.xx[g], gram.xt[g]
        lam = damp * float(np.mean(np.diag(xx)[:per])) + 1e-12
        for j in range(out):
            o = g * out + j
            keep = np.flatnonzero(mask[o])
            idx = np.concatenate([keep, [per]]) if gram.intercept else keep
            old = np.concatenate([w[o, keep], [b[o]]]) if gram.intercept else w[o, keep]
            before += _sse(xx, xt[:, j], gram.tt[o], idx, old)
            if len(idx):
                a = xx[np.ix_(idx, idx)] + lam * np.eye(len(idx))
                if gram.intercept:
                    a[-1, -1] -= lam  # the intercept is not shrunk
                sol = np.linalg.solve(a, xt[idx, j])
            else:
                sol = np.zeros(0)
            after += _sse(xx, xt[:, j], gram.tt[o], idx, sol)
            new_w[o, keep] = sol[: len(keep)]
            if gram.intercept:
                new_b[o] = sol[-1]
    return new_w, new_b, before, after


def _sse(xx, xt, tt, idx, v) -> float:
    """‖X[:, idx]·v − t‖² from the Gram matrices."""
    if not len(idx):
        return float(tt)
    return float(tt - 2.0 * v @ xt[idx] + v @ xx[np.ix_(idx, idx)] @ v)


# ------------------------------------------------------------------------------------------------- the call


def reconstruct(model: onnx.ModelProto, dense_model: onnx.ModelProto, masks: dict[str, np.ndarray], reader, *,
                limit: int | None = 2048, damp: float = DEFAULT_DAMP, refit_bias: bool = True,
                report: ReconstructReport | None = None) -> onnx.ModelProto:
    """Refit the kept weights of every masked layer so it reproduces the dense layer's output (see module doc).

    `model`: the pruned model (masked weights zero); `dense_model`: the same graph before pruning; `reader`: a
    calibration reader (`.batches()`) or a list of feed dicts; `limit`: samples used. Returns a new model with
    the same names, dtypes and shapes; pruned weights stay exactly 0.0. `report` (optional) receives per-layer
    output errors before/after and the layers left alone.
    """
    if damp < 0:
        raise ConfigError(f"damp {damp} must be >= 0.")
    report = report if report is not None else ReconstructReport()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    layers = _layers(out, masks, report)
    dense = _with_outputs(dense_model, [lay.node.output[0] for lay in layers])
    dense_session = make_session(dense, optimize=False)
    for layer in layers:
        _refit(out, dense_session, layer, masks[layer.weight], reader, limit, damp, refit_bias, report)
    for name, why in report.skipped.items():
        log.info("reconstruct: %s: %s", name, why)
    return out


def _refit(model, dense_session, layer: Layer, mask, reader, limit, damp, refit_bias, report) -> None:
    inits = {t.name: t for t in model.graph.initializer}
    w_store = numpy_helper.to_array(inits[layer.weight])
    w = _weight_matrix(layer, w_store).astype(np.float64)
    m = _weight_matrix(layer, np.asarray(mask, dtype=bool))
    bias = layer.bias if refit_bias else None
    b = numpy_helper.to_array(inits[bias]).astype(np.float64) if bias else None
    groups = int(_attr(layer.node, "group", 1)) if layer.node.op_type == "Conv" else 1
    gram = _Gram(groups, intercept=bias is not None)
    pruned = make_session(_with_outputs(model, [layer.x]), optimize=False)
    target = layer.node.output[0]
    for feeds in _batches(reader, limit):
        x = pruned.run([layer.x], feeds)[0]
        t = dense_session.run([target], feeds)[0]
        if bias is None and len(layer.node.input) > 2 and layer.node.input[2]:  # Gemm/Conv bias kept as is
            t = t - _fixed_bias(layer, inits, t)
        if layer.node.op_type == "Gemm":
            t = t / float(_attr(layer.node, "alpha", 1.0))
        gram.add(*_rows(layer, x, t))
    if gram.rows == 0:
        report.skipped[layer.weight] = "no calibration samples"
        return
    new_w, new_b, before, after = _solve(gram, w * m, b, m, damp)
    if after > before:  # the ridge can lose on tiny data: never make a layer worse
        report.refit[layer.weight] = {"error_before": before / gram.rows, "error_after": before / gram.rows,
                                      "samples": gram.rows, "kept": True}
        return
    stored = _store(layer, np.where(m, new_w, 0.0), w_store.shape).astype(w_store.dtype)
    stored[~np.asarray(mask, dtype=bool)] = 0
    inits[layer.weight].CopyFrom(numpy_helper.from_array(stored, layer.weight))
    if bias:
        inits[bias].CopyFrom(numpy_helper.from_array(new_b.astype(numpy_helper.to_array(inits[bias]).dtype), bias))
    report.refit[layer.weight] = {"error_before": before / gram.rows, "error_after": after / gram.rows,
                                  "samples": gram.rows}


def _fixed_bias(layer: Layer, inits, t: np.ndarray) -> np.ndarray:
    """The bias term a Gemm/Conv adds that is not refit, broadcast like its output (subtracted from the target)."""
    c = numpy_helper.to_array(inits[layer.node.input[2]]) if layer.node.input[2] in inits else None
    if c is None:
        raise ConfigError(f"{layer.node.op_type} '{layer.node.name}' takes a computed bias; refit it with refit_bias.")
    if layer.node.op_type == "Conv":
        return c.reshape(1, -1, *([1] * (t.ndim - 2)))
    return float(_attr(layer.node, "beta", 1.0)) * c
