"""Probe dead-neuron removal on any model: zero a random share of every Conv/Gemm/MatMul's output channels, run
`remove_dead_neurons`, check the result (full check, onnxruntime parity on random inputs) and print what it kept and
why. Sweep 21 found GhostNet's and ReXNet's Slices, FCOS's and LeViT's shared biases this way.

    python -m tests.corpus.stress_dead_neurons MODEL.onnx [SHARE]   # SHARE of each layer's channels, default 0.5
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.calibration.runtime import make_session
from onnxprune.passes.bypass_identity import BypassIdentity
from onnxprune.passes.base import PruneState
from onnxprune.passes.dead_neurons import remove_dead_neurons


def main(path: str, share: float = 0.5) -> None:
    model = onnx.load(path)
    model = BypassIdentity()(model, PruneState()).model  # as the load step reads it
    inits, rng, zeroed = {t.name: t for t in model.graph.initializer}, np.random.default_rng(0), 0
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if node.output[0] in outputs:
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).copy()
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        axis = {"Conv": 0, "Gemm": 0 if trans_b else 1}.get(node.op_type, w.ndim - 1)
        drop = rng.permutation(w.shape[axis])[: int(w.shape[axis] * share)]
        index = [slice(None)] * w.ndim
        index[axis] = drop
        w[tuple(index)] = 0
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(w, node.input[1]))
        zeroed += 1
    out, report = remove_dead_neurons(model)
    print("\n".join(report.lines()[-20:]))
    onnx.checker.check_model(out, full_check=True)
    feed = {}
    for i in model.graph.input:
        dims = [d.dim_value if d.dim_value > 0 else 2 for d in i.type.tensor_type.shape.dim]
        feed[i.name] = rng.standard_normal(dims).astype(np.float32)
    for a, b in zip(make_session(model).run(None, feed), make_session(out).run(None, feed)):
        print(f"max abs diff {float(np.abs(a - b).max()):.3g} (output scale {float(np.abs(a).max()):.3g})")
    size = lambda m: sum(int(np.prod(t.dims)) for t in m.graph.initializer)  # noqa: E731
    print(f"{zeroed} layers zeroed; initializer values {size(model)} -> {size(out)}")


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.5)
