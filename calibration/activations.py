"""Act%: the share of nonzero activations a layer produces on real data (the paper's Tables 1–5).

A layer's activation is its output carried through the element-wise chain right after it (bias Add, BN, Relu…),
so a Gemm followed by Relu reports how many of its ReLU outputs are nonzero:

    x ─ Gemm fc1 ─ Add ─ Relu ─▶ measured here ─ Gemm fc2 …
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import onnx

from onnxprune.calibration.runtime import make_session
from onnxprune.passes.opfacts import ACTIVATION_CHAIN
from onnxprune.passes.scopes import readers_of
from onnxprune.passes.weights import Inventory

ELEMENTWISE = ACTIVATION_CHAIN  # bias Add, BN, Relu, …: passes/opfacts.py


def activation_tensors(model: onnx.ModelProto, inventory: Inventory) -> dict[str, str]:
    """Weight name -> the tensor holding that layer's activation (after its element-wise chain)."""
    consumers = readers_of(model.graph)
    nodes = {n.name: n for n in model.graph.node}
    out = {}
    for w in inventory.prunable:
        node = nodes.get(w.node)
        # the first output the node names: an LSTM/GRU/RNN whose optional Y is omitted ("") has its Y_h next
        tensor = next((o for o in node.output if o), None) if node is not None else None
        if tensor is None:
            continue
        while len(consumers.get(tensor, [])) == 1 and consumers[tensor][0].op_type in ELEMENTWISE:
            tensor = consumers[tensor][0].output[0]
        out[w.name] = tensor
    return out


def activation_density(model: onnx.ModelProto, inventory: Inventory, reader, *, max_batches: int = 8) -> dict[str, float]:
    """Fraction of nonzero activations per prunable layer, on up to `max_batches` batches of the reader."""
    return activation_densities([model], inventory, reader, max_batches=max_batches)[0]


def activation_densities(models: list[onnx.ModelProto], inventory: Inventory, reader, *, max_batches: int = 8,
                         more: Callable[[float], bool] | None = None) -> list[dict[str, float]]:
    """`activation_density` of each model on the same batches, read batch by batch (every model on a batch before
    the next); `more(seconds)`, given the seconds the last batch took for all models, says whether to read another
    (a run's deadline: converter.steps.verify)."""
    probes = [_probe(m, inventory) for m in models]
    nonzero = [dict.fromkeys(wanted, 0) for _, _, wanted in probes]
    total = [dict.fromkeys(wanted, 0) for _, _, wanted in probes]
    for i, feeds in enumerate(reader):
        if i >= max_batches:
            break
        t0 = time.perf_counter()
        for (session, _, wanted), nz, tot in zip(probes, nonzero, total):
            if session is None:
                continue
            for name, value in zip(wanted, session.run(wanted, feeds)):
                nz[name] += int(np.count_nonzero(value))
                tot[name] += int(np.asarray(value).size)
        if more is not None and not more(time.perf_counter() - t0):
            break
    return [{w: (nz[t] / tot[t] if tot[t] else None) for w, t in tensors.items()}
            for (_, tensors, _), nz, tot in zip(probes, nonzero, total)]


def _probe(model: onnx.ModelProto, inventory: Inventory):
    """(a session that also outputs every layer's activation, or None without any; weight -> tensor; tensors)."""
    tensors = activation_tensors(model, inventory)
    if not tensors:
        return None, {}, []
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    for name in sorted(set(tensors.values()) - outputs):
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return make_session(probe, optimize=False), tensors, sorted(set(tensors.values()))
