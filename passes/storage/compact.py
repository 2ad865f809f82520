"""`compact`: each weight in its smallest exact encoding, decoded by standard ops that onnxruntime folds at load.

Encoding (numpy, packing.py) and the ONNX decoder (decoder.py) sit beside the decoder back to a dense weight that
`modelio.load_model` uses (so `prune` and `inspect` read these files). Per weight, the candidates of
packing.candidates are ranked by stored bytes; the smallest, with its decoder nodes, is compared in file bytes
with the dense tensor ("dense where nothing wins") and with a COO Constant (which wins for tiny weights, where
the decoder's ~350 bytes of nodes dominate), and the smallest of the three is written. What was chosen is recorded
in the model's metadata (key METADATA, JSON: weight -> key and record; the decoder's tensors and intermediates are
named `_c<key>.…`), which the decoder reads back.

Needs opset >= 11 and IR >= 4 (initializers that are not graph inputs): the encode step raises an older model to 11
where onnxruntime's outputs stay the same (converter/steps/encode.raised_for_storage); otherwise, at opset 9-10, the
weights are written as the "constant" format's scatter chain (coo.py), below that they stay dense, and a note says
why. Weights that are graph inputs stay dense.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import ModelError
from onnxprune.passes.base import PruneState
from onnxprune.passes.storage import FORMATS, StorageFormat, coo, packing, register_format
from onnxprune.passes.storage.coo import dense_to_sparse
from onnxprune.passes.storage.decoder import MIN_OPSET, SHARED, DecoderBuilder, prefix, shared_tensors
from onnxprune.passes.storage.graphs import default_opset, first_line, replace_initializers
from onnxprune.passes.weights import constant_tensors

log = logging.getLogger(__name__)
METADATA = "onnxprune.compact"


MIN_IR = 4  # its arrays are initializers, which IR 3 lists among the graph inputs too


def _refusal(model: onnx.ModelProto) -> str | None:
    if default_opset(model) < MIN_OPSET:
        return (f"sparse format 'compact' needs opset >= {MIN_OPSET} for its decoder (CumSum, ScatterND; model has "
                f"{default_opset(model)}); weights kept dense. Convert the model to opset {MIN_OPSET}+ "
                "(onnx.version_converter) or use --sparse-format initializer.")
    if model.ir_version < MIN_IR:
        return f"sparse format 'compact' needs IR >= {MIN_IR} (model has IR {model.ir_version}); weights kept dense."
    return None


def encode_weight(name: str, values: np.ndarray, dense_bytes: int, key: int, shared: frozenset = frozenset()
                  ) -> tuple[DecoderBuilder, packing.Encoding] | onnx.NodeProto | None:
    """The smallest home for one weight: a compact decoder, a COO Constant (tiny weights, where the decoder's own
    nodes cost more), or None when the dense tensor is at least as small. The decoder's cost counts its nodes, data,
    metadata record and the shared constants not yet in the graph (`shared`: those that are)."""
    if values.dtype not in packing.FLOATS:
        return None
    enc = packing.candidates(values)[0]
    builder = DecoderBuilder(name, enc, key)
    builder.build()
    cost = sum(n.ByteSize() for n in builder.nodes) + sum(t.ByteSize() for t in builder.tensors)
    cost += sum(t.ByteSize() for t in shared_tensors(builder.shared - shared))
    cost += len(json.dumps({name: {"key": key, **enc.record()}})) + 4
    coo = onnx.helper.make_node("Constant", [], [name], sparse_value=dense_to_sparse(values, name))
    best = min(cost, coo.ByteSize(), dense_bytes)
    return None if best == dense_bytes else (builder, enc) if best == cost else coo


def encode(model: onnx.ModelProto, names: list[str], state: PruneState) -> list[str]:
    refusal = _refusal(model)
    opset = default_opset(model)
    if refusal and opset in coo.SCATTER_OPSETS and model.ir_version >= MIN_IR:
        state.notes.append(f"sparse format 'compact' needs opset >= {MIN_OPSET} for its decoder (model has "
                           f"{opset}): the pruned weights are stored as COO (values and int64 "
                           "indices scattered into zeros), as --sparse-format constant writes them at this opset")
        return FORMATS["constant"].encode(model, names, state)
    if refusal and model.ir_version < MIN_IR and (opset >= MIN_OPSET or opset in coo.SCATTER_OPSETS):
        # its arrays are initializers, which IR 3 lists as graph inputs too; COO's are Constant nodes
        state.notes.append(f"sparse format 'compact' needs IR >= {MIN_IR} for its decoder's arrays (model has IR "
                           f"{model.ir_version}): the pruned weights are stored as COO, as --sparse-format constant "
                           "writes them")
        return FORMATS["constant"].encode(model, names, state)
    if refusal:
        state.notes.append(refusal)
        return []
    graph = model.graph
    graph_inputs = {i.name for i in graph.input}
    tensors = constant_tensors(model)
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} | graph_inputs
    records, nodes, data, shared, encoded = read_records(model), [], [], set(), []
    keys = (k for k in range(len(taken) + len(records) + len(names) + 1)
            if k not in {r["key"] for r in records.values()} and not any(t.startswith(prefix(k)) for t in taken))
    for name in names:
        if name in graph_inputs:
            continue
        key = next(keys)
        have = frozenset(shared) | {t[len(SHARED):] for t in taken if t.startswith(SHARED)}
        built = encode_weight(name, numpy_helper.to_array(tensors[name]), tensors[name].ByteSize(), key, have)
        if built is None:
            continue
        encoded.append(name)
        if isinstance(built, onnx.NodeProto):
            nodes.append(built)
            continue
        builder, enc = built
        nodes += builder.nodes
        data += builder.tensors
        shared |= builder.shared
        records[name] = {"key": key, **enc.record()}
    if not encoded:
        return []
    kept_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in encoded)]
    del graph.node[:]
    graph.node.extend(nodes + kept_nodes)
    have = {t.name for t in graph.initializer}
    replace_initializers(graph, drop=set(encoded), add=data + [t for t in shared_tensors(shared) if t.name not in have])
    write_records(model, records)
    return encoded


def read_records(model: onnx.ModelProto) -> dict[str, dict]:
    entry = next((p for p in model.metadata_props if p.key == METADATA), None)
    if entry is None:
        return {}
    try:
        records = json.loads(entry.value)
        assert isinstance(records, dict)
        return records
    except (ValueError, AssertionError):
        raise ModelError(f"the model's metadata '{METADATA}' is not the JSON onnxprune writes; the file is "
                         "corrupted or was edited, re-export it.") from None


def write_records(model: onnx.ModelProto, records: dict[str, dict]) -> None:
    kept = [p for p in model.metadata_props if p.key != METADATA]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if records:
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, METADATA: json.dumps(records)})


def decode(model: onnx.ModelProto) -> list[str]:
    """Replace every compact decoder by a plain initializer holding the weight; return the weights' names."""
    records = read_records(model)
    if not records:
        return []
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    dense = []
    for name, rec in records.items():
        try:
            arrays = {t[len(prefix(rec["key"])):]: numpy_helper.to_array(inits[t]) for t in _tensors(inits, rec)}
            dense.append(numpy_helper.from_array(packing.decode(rec, arrays), name))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise ModelError(f"compact weight '{name}' cannot be decoded ({first_line(exc)}); the file is corrupted "
                             "or was edited after onnxprune wrote it, re-export it.") from None
    kept = [n for n in graph.node if not any(_owner(o, records) for o in n.output)]
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    drop = {t for t in inits if _owner(t, records) or (t.startswith(SHARED) and t not in used)}
    replace_initializers(graph, drop=drop, add=dense)
    write_records(model, {})
    log.info("decoded %d compact weight(s)", len(dense))
    return list(records)


def _tensors(inits, rec: dict) -> list[str]:
    return [t for t in inits if t.startswith(prefix(rec["key"]))]


def _owner(tensor: str, records: dict[str, dict]) -> str | None:
    """The weight whose decoder writes or stores `tensor`, if any."""
    return next((w for w, r in records.items() if tensor == w or tensor.startswith(prefix(r["key"]))), None)


def describe(model: onnx.ModelProto) -> dict[str, dict]:
    """Per compact weight: its encoding, the bytes of its data and decoder nodes, its nonzeros."""
    records = read_records(model)
    inits = {t.name: t for t in model.graph.initializer}
    out = {}
    for name, rec in records.items():
        size = sum(len(inits[t].raw_data) or inits[t].ByteSize() for t in _tensors(inits, rec))
        size += sum(n.ByteSize() for n in model.graph.node if any(_owner(o, {name: rec}) for o in n.output))
        encoding = rec["index"] if rec["index"] == "zeros" else f"{rec['index']}+{rec['values']}{rec['bits'] or ''}"
        out[name] = {"encoding": encoding, "bytes": size, "nonzeros": rec["nonzeros"]}
        if rec["values"] == "codebook":
            out[name]["codebook_bits"] = rec["bits"]  # its values are 2**bits shared floats (--weight-bits)
    return out


register_format(StorageFormat("compact", encode, decode, describe, kept=True, narrow=True, min_ir=MIN_IR))
