"""Folded constants become biases: Gemm and Conv get theirs adjusted, MatMul its bias Add (or a new one)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.graph import ChannelGraph
from onnxprune.passes.channel_groups.rules_layers import gemm_weight, matmul_weight
from onnxprune.passes.channel_groups.util import _attr, _opt_input


def _gemm_bias(cg: ChannelGraph, node: gs.Node, delta: np.ndarray) -> None:
    k, w = gemm_weight(node)
    c, delta = _opt_input(node, 2), (delta if k == 1 else delta.reshape(-1, 1))  # W first: channels on axis 0
    if c is None:
        while len(node.inputs) > 2:  # an empty optional input
            node.inputs.pop()
        node.inputs.append(gs.Constant(cg.unique(f"{node.name}_bias"), delta.astype(w.dtype)))
        node.attrs["beta"] = 1.0
    else:
        c.values = (c.values + delta / float(_attr(node, "beta", 1.0))).astype(c.values.dtype)


def _conv_bias(cg: ChannelGraph, node: gs.Node, delta: np.ndarray) -> None:
    c = _opt_input(node, 2)
    if c is None:
        node.inputs.append(gs.Constant(cg.unique(f"{node.name}_bias"), delta.astype(node.inputs[1].dtype)))
    else:
        c.values = (c.values + delta).astype(c.values.dtype)


def _matmul_bias(cg: ChannelGraph, node: gs.Node, delta: np.ndarray) -> None:
    """Add into the bias Add that follows, or insert one (keeping the output's name). A first-operand weight (W·X)
    has its channels on axis -2: the bias is a column [M, 1]."""
    k, (_, w, *_) = matmul_weight(node)
    out, n, axis = node.outputs[0], len(delta), (-1 if k == 1 else -2)
    shape = (n,) if k == 1 else (n, 1)
    users = out.outputs
    if len(users) == 1 and users[0].op == "Add" and out not in cg.graph.outputs:
        b = next((i for i in users[0].inputs if i is not out), None)
        if (isinstance(b, gs.Constant) and b.values.size == n and b.values.ndim >= -axis and b.values.shape[axis] == n
                and len(b.outputs) == 1):
            b.values = (b.values + delta.reshape(b.values.shape)).astype(b.values.dtype)
            return
    mid = gs.Variable(cg.unique(f"{out.name}_unbiased"), dtype=out.dtype)
    node.outputs[0] = mid
    bias = gs.Constant(cg.unique(f"{node.name}_bias"), delta.reshape(shape).astype(w.dtype))
    cg.graph.nodes.append(gs.Node("Add", cg.unique(f"{node.name}_bias_add"), {}, [mid, bias], [out]))


BIAS_ADDERS: dict[str, Callable[[ChannelGraph, gs.Node, np.ndarray], None]] = {
    "Gemm": _gemm_bias, "Conv": _conv_bias, "MatMul": _matmul_bias,
}

