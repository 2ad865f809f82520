"""Folded constants become biases: Gemm and Conv get theirs adjusted, MatMul its bias Add (or a new one)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx_graphsurgeon as gs

from onnxprune.passes.channel_groups.graph import ChannelGraph
from onnxprune.passes.channel_groups.rules_layers import _matmul_weight
from onnxprune.passes.channel_groups.util import _attr, _opt_input


def _gemm_bias(cg: ChannelGraph, node: gs.Node, delta: np.ndarray) -> None:
    c, dtype = _opt_input(node, 2), node.inputs[1].dtype
    if c is None:
        while len(node.inputs) > 2:  # an empty optional input
            node.inputs.pop()
        node.inputs.append(gs.Constant(cg.unique(f"{node.name}_bias"), delta.astype(dtype)))
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
    """Add into the bias Add that follows, or insert one (keeping the output's name)."""
    out, n = node.outputs[0], len(delta)
    users = out.outputs
    if len(users) == 1 and users[0].op == "Add" and out not in cg.graph.outputs:
        k = next((i for i in users[0].inputs if i is not out), None)
        if isinstance(k, gs.Constant) and k.values.size == n and k.values.shape[-1] == n and len(k.outputs) == 1:
            k.values = (k.values + delta.reshape(k.values.shape)).astype(k.values.dtype)
            return
    mid = gs.Variable(cg.unique(f"{out.name}_unbiased"), dtype=out.dtype)
    node.outputs[0] = mid
    bias = gs.Constant(cg.unique(f"{node.name}_bias"), delta.astype(_matmul_weight(node.inputs[1])[1].dtype))
    cg.graph.nodes.append(gs.Node("Add", cg.unique(f"{node.name}_bias_add"), {}, [mid, bias], [out]))


BIAS_ADDERS: dict[str, Callable[[ChannelGraph, gs.Node, np.ndarray], None]] = {
    "Gemm": _gemm_bias, "Conv": _conv_bias, "MatMul": _matmul_bias,
}

