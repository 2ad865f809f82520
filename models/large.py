"""Large seeded models written straight to disk with external data, one tensor at a time (building a 4 GB model
never holds more than one weight in memory).

    x[N, hidden] → (MatMul W_up[hidden, ffn] + b → Relu → MatMul W_down[ffn, hidden] + b → Add x) × blocks
      → y

A transformer-shaped MLP stack: 2·hidden·ffn weights per block (hidden 4096, ffn 16384, 8 blocks: 1.07B).
He-initialised (down-projections scaled by 1/sqrt(2·blocks) so the residual stream stays bounded).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ALIGN = 4096


def mlp_stack_params(hidden: int, ffn: int, blocks: int) -> int:
    return blocks * (2 * hidden * ffn + hidden + ffn)


def write_mlp_stack(path: str | os.PathLike, *, hidden: int, ffn: int, blocks: int, seed: int = 0,
                    rows: int = 1024) -> int:
    """Write the model to `path` and its weights to `path`.data; returns the number of weight bytes."""
    path = Path(path)
    data_name = path.name + ".data"
    rng = np.random.default_rng(seed)
    nodes, inits, x, offset = [], [], "x", 0
    with open(path.parent / data_name, "wb") as data:

        def add(name: str, shape: tuple[int, ...], scale: float) -> None:
            nonlocal offset
            pad = (-offset) % ALIGN
            data.write(b"\0" * pad)
            offset += pad
            start = offset
            for r in range(0, shape[0], rows):  # row blocks: never the whole tensor in memory
                block = rng.standard_normal((min(rows, shape[0] - r), *shape[1:]), dtype=np.float32)
                block *= np.float32(scale)
                data.write(block.tobytes())
                offset += block.nbytes
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape),
                            data_location=TensorProto.EXTERNAL)
            for key, value in (("location", data_name), ("offset", start), ("length", offset - start)):
                entry = t.external_data.add()
                entry.key, entry.value = key, str(value)
            inits.append(t)

        for b in range(blocks):
            add(f"blk{b}.up.weight", (hidden, ffn), np.sqrt(2.0 / hidden))
            add(f"blk{b}.down.weight", (ffn, hidden), np.sqrt(2.0 / ffn) / np.sqrt(2.0 * blocks))
            inits += [numpy_helper.from_array(np.zeros(ffn, np.float32), f"blk{b}.up.bias"),
                      numpy_helper.from_array(np.zeros(hidden, np.float32), f"blk{b}.down.bias")]
            nodes += [
                helper.make_node("MatMul", [x, f"blk{b}.up.weight"], [f"u{b}"], name=f"blk{b}/up"),
                helper.make_node("Add", [f"u{b}", f"blk{b}.up.bias"], [f"ub{b}"], name=f"blk{b}/up_bias"),
                helper.make_node("Relu", [f"ub{b}"], [f"r{b}"], name=f"blk{b}/relu"),
                helper.make_node("MatMul", [f"r{b}", f"blk{b}.down.weight"], [f"d{b}"], name=f"blk{b}/down"),
                helper.make_node("Add", [f"d{b}", f"blk{b}.down.bias"], [f"db{b}"], name=f"blk{b}/down_bias"),
                helper.make_node("Add", [f"db{b}", x], [f"h{b}"], name=f"blk{b}/residual"),
            ]
            x = f"h{b}"
        data.flush()
        os.fsync(data.fileno())
    nodes.append(helper.make_node("Identity", [x], ["y"], name="out"))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", hidden]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "mlp_stack", io[:1], io[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return offset
