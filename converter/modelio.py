"""Reading and writing models: the only place that touches model files.

Loading checks the file before anything else sees it (is it ONNX, is it whole, does its external data stay inside
its folder, are its declared sizes sane), then densifies sparse tensors, because onnx-graphsurgeon silently turns
them into zero-filled float64 tensors. Saving is atomic (temp file in the target folder, then rename) and never
overwrites the input.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import stat
import logging
import os
import secrets
import signal
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError, Message
from onnx import external_data_helper, numpy_helper

from onnxprune.errors import ConfigError, ModelError
from onnxprune.plain import listed
from onnxprune.passes import storage
from onnxprune.passes.storage.coo import sparse_to_dense  # noqa: F401  (public name, kept)
from onnxprune.passes.storage.graphs import MAX_ELEMENTS  # noqa: F401  (public name, kept)
from onnxprune.passes.storage.graphs import all_graphs as _all_graphs
from onnxprune.passes.storage.graphs import first_line as _first_line
from onnxprune.passes.storage.graphs import refuse_huge as _refuse_huge

log = logging.getLogger(__name__)


def aten_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes of torch's own operators, org.pytorch.aten's ATen (torch.onnx.export's operator_export_type=ONNX_ATEN or
    ONNX_ATEN_FALLBACK), which onnxruntime does not run."""
    return [n for g in _all_graphs(model.graph) for n in g.node
            if n.domain == "org.pytorch.aten" and n.op_type == "ATen"]


def aten_advice(nodes: list[onnx.NodeProto]) -> str:
    """What ATen nodes are and what to do, said by prune's refusal (verify) and by inspect (sweep 38's L6)."""
    ops = sorted({f"aten::{a.s.decode()}" for n in nodes for a in n.attribute if a.name == "operator"})
    return (f"({listed(ops, 4)}), torch's own operators, which torch.onnx.export writes with "
            "operator_export_type=ONNX_ATEN or ONNX_ATEN_FALLBACK and onnxruntime does not run; re-export with "
            "the default operator_export_type (an operator torch has no ONNX export for: write it in other ops, "
            "or try dynamo=True).")

PROTOBUF_LIMIT = 2**31 - 1


@dataclass
class LoadedModel:
    """A model ready for the passes: dense tensors, external data loaded, and where it came from."""

    model: onnx.ModelProto
    path: Path | None
    sha256: str | None
    file_size: int
    had_sparse: list[str] = field(default_factory=list)
    storage: dict[str, dict] = field(default_factory=dict)  # weight -> how the file stored it (encoding, bytes)
    named: list[str] = field(default_factory=list)  # node names the run gave (steps/load.py), taken off when written
    inlined: list[str] = field(default_factory=list)  # model-local functions inlined at load (inline_functions)
    folded: list[str] = field(default_factory=list)  # Ifs replaced by the branch taken (fold_static_ifs)
    formats: list[str] = field(default_factory=list)  # storage formats it held that a run keeps (storage.kept_formats)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_model(path: str | os.PathLike, *, check: bool = True) -> LoadedModel:
    """Load, validate and densify a model file; raise ModelError with what to do when it can't be used."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file '{path}' does not exist; check the path.")
    if path.is_dir():
        raise ModelError(f"'{path}' is a folder, not a model file; {_inside(path)}.")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"model file '{path}' is empty; re-export or re-download it.")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, TypeError) as exc:
        not_onnx(path)
        raise ModelError(
            f"'{path}' is not a readable ONNX model (truncated or corrupted protobuf: {_first_line(exc)}); "
            "re-export or re-download it."
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read '{path}': {exc.strerror or exc}; check the file's permissions.") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        not_onnx(path)
        raise ModelError(f"'{path}' parses but holds no graph; it is not an ONNX model (is it another format?).")
    _check_text(model, path)
    external = _external_tensors(model)
    checked = False
    if external:
        _check_external_locations(external, path.parent)
        size += _external_bytes(external, path.parent)  # the weights in model.onnx.data count too
        _check_declared_sizes(model, path)
        checked = check and _checked_by_path(model, path)
        try:
            for tensor in external:  # ours, not onnx's: onnx's loader skips sparse tensors
                external_data_helper.load_external_data_for_tensor(tensor, str(path.parent))
                tensor.ClearField("data_location")  # unset, as a tensor stored inline is written (not 2 bytes more)
                del tensor.external_data[:]
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"external data of '{path}' cannot be read ({_first_line(exc)}); keep the .data file next to it."
            ) from None
    else:
        _check_declared_sizes(model, path)
    _check_tensor_data(model, path)
    if check and not checked:
        check_model(model, where=str(path))
    storage_info, formats = storage.describe_model(model), storage.kept_formats(model)
    had_sparse = densify_sparse(model)
    if had_sparse:
        log.info("densified %d sparse tensor(s) of %s before any graph pass", len(had_sparse), path)
    model, inlined = inline_functions(model)
    constant_tensors(model)
    folded = fold_static_ifs(model) if inlined else []
    return LoadedModel(model=model, path=path, sha256=sha256_file(path), file_size=size, had_sparse=had_sparse,
                       storage=storage_info, inlined=inlined, formats=formats, folded=folded)


def not_onnx(path: Path) -> None:
    """Raise ModelError naming what `path` is instead, when its first bytes say it is another format a newcomer
    passes by mistake (calibration data, a framework's checkpoint, a text file): "'calib.npz' is a NumPy .npz
    archive, not a binary ONNX model; pass it with --data ..." rather than a protobuf parser's "Wire format was corrupt"."""
    found = _other_format(path)
    if found:
        what, fix = found
        raise ModelError(f"'{path}' is {what}, not a binary ONNX model; {fix}.")


def _other_format(path: Path) -> tuple[str, str] | None:
    """(what the file is, what to do) from its first bytes, or None when it looks like none of them."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return None
        if names and all(n.endswith(".npy") for n in names):
            return ("a NumPy .npz archive (calibration data?)",
                    "pass the .onnx model first and this file with --data")
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return ("a PyTorch checkpoint (torch.save)",
                    "export the model with torch.onnx.export first (README, 'Your own model')")
        inside = [n for n in names if n.endswith(".onnx")]
        if inside:
            return f"a zip archive holding {inside[0]}", "unzip it and pass the .onnx file"
        return "a zip archive", "pass the .onnx model itself"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (a Keras .h5 model?)", "convert it to ONNX first (tf2onnx)"
    if head[4:8] == b"TFL3":
        return "a TensorFlow Lite model", "convert it to ONNX first (python -m tf2onnx.convert --tflite FILE)"
    if head[4:8] == b"ORTM":
        return "an onnxruntime .ort model", "pass the .onnx model it was made from"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array", "calibration data goes in an .npz file given with --data"
    if head.startswith(b"GGUF"):
        return "a GGUF model (llama.cpp)", "export the model to ONNX first"
    if len(head) > 9 and head[8:10] in (b'{"', b"{ ") and int.from_bytes(head[:8], "little") < (1 << 28):
        return "a safetensors file (weights without a graph)", "export the model to ONNX first"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (a scikit-learn model?)", "convert it to ONNX first (skl2onnx)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        if text.lstrip().startswith(("ir_version", "producer_name", "opset_import", "graph {", "<")):
            return ("an ONNX model in text form (textproto or onnx.parser's syntax)",
                    f"write it as the binary protobuf first: python -c \"import onnx; onnx.save(onnx.load('{path}', "
                    "format='textproto'), 'model.onnx')\" (onnx.parser.parse_model for the < > syntax)")
        return "a text file", "pass the binary .onnx file an exporter writes"
    return None


def _inside(folder: Path) -> str:
    """What to pass instead: the folder's .onnx files, named (a model exported with its weights beside it,
    model.onnx + model.onnx.data, is often handed over as its folder: sweep 18)."""
    try:
        found = sorted(p.name for p in folder.iterdir() if p.suffix == ".onnx" and p.is_file())
    except OSError:
        found = None
    if not found:
        return ("pass the .onnx file inside it" if found is None else
                "it holds no .onnx file: pass the path of the model file itself")
    return "pass the .onnx file inside it: " + listed(f"'{folder / name}'" for name in found)


def from_proto(model: onnx.ModelProto, *, check: bool = True) -> LoadedModel:
    """The same as load_model for a model already in memory (the Python API)."""
    model = onnx.ModelProto.FromString(model.SerializeToString()) if model.ByteSize() < PROTOBUF_LIMIT else model
    _refuse_unloaded_external_data(model)
    _check_declared_sizes(model, "<in-memory model>")
    if check:
        check_model(model, where="<in-memory model>")
    storage_info, formats = storage.describe_model(model), storage.kept_formats(model)
    had_sparse = densify_sparse(model)
    model, inlined = inline_functions(model)
    constant_tensors(model)
    folded = fold_static_ifs(model) if inlined else []
    return LoadedModel(model=model, path=None, sha256=None, file_size=model.ByteSize(), had_sparse=had_sparse,
                       storage=storage_info, inlined=inlined, formats=formats, folded=folded)


def _refuse_unloaded_external_data(model: onnx.ModelProto) -> None:
    """A ModelProto whose weights still point at an external file (`onnx.load(path, load_external_data=False)` of a
    dynamo export) holds no weights to prune; audit 40: onnx's checker said "'<in-memory model>' is not a valid ONNX
    model: Data of TensorProto ... should be stored in model.onnx.data ...; fix or re-export it"."""
    external = _external_tensors(model)
    if external:
        files = sorted({dict((e.key, e.value) for e in t.external_data).get("location", "?") for t in external})
        raise ModelError(f"the model passed in memory holds {len(external)} tensor(s) "
                         f"({listed(repr(t.name) for t in external)}) as references to "
                         f"{listed(repr(f) for f in files)}, not their values: it was loaded "
                         "without its external data (onnx.load(..., load_external_data=False)). Pass the model's "
                         "path instead, or onnx.load(path) with the data file beside it.")


def inline_functions(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The model with its model-local functions inlined, and their names. torch's
    export_modules_as_functions passes each block's weights into a function call as inputs, where no pass sees the
    Conv or Gemm that reads them: sweep 18's depthwise-separable MNIST CNN listed 29.2K of its 37.8K weights as
    "used by DS" and pruned only its stem and head. onnxruntime inlines these functions when it loads a model, so
    the model written without them computes the same; a function domain no node uses any more leaves the imports.
    A model over protobuf's 2 GB limit cannot be serialized for the inliner and is left as it is."""
    if not len(model.functions) or model.ByteSize() >= PROTOBUF_LIMIT:
        return model, []
    names = [f.name for f in model.functions]
    function_domains = {f.domain for f in model.functions}
    inlined = onnx.inliner.inline_local_functions(model)
    used = {n.domain for g in _all_graphs(inlined.graph) for n in g.node}
    keep = [o for o in inlined.opset_import if o.domain not in function_domains or o.domain in used]
    del inlined.opset_import[:]
    inlined.opset_import.extend(keep)
    return inlined, names


def fold_static_ifs(model: onnx.ModelProto) -> list[str]:
    """Replace, in place, each main-graph If whose condition the model's constants and declared shapes fix
    (`coverage.static_conditions`) by the nodes of the branch it always takes, and drop what computed only those
    conditions; the names of the Ifs folded. Inlined onnxscript functions (torch 2.1's dynamo export: each Conv is
    `_aten_convolution_onnx`, `if transposed: ConvTranspose else Conv` and an If on the input's rank; each Linear an
    If on the rank) leave every weight read by a Conv in one branch, a ConvTranspose in the other and a Shape for the
    rank test: "used in different ways", so ThePitchDetect's pitch_detector.onnx had "no prunable weights" (real
    models 55). onnxruntime never runs the branch not taken, so the model computes the same without it. Run after
    `inline_functions`, whose functions hold such Ifs; an If inside a taken branch is decided on the next round."""
    from onnxprune.converter.coverage import static_conditions

    graph, folded = model.graph, []
    for _ in range(16):
        current = list(graph.node)  # held: static_conditions keys its answer by id(node)
        ifs = [n for n in current if n.op_type == "If" and (n.domain or "") in ("", "ai.onnx")]
        taken = static_conditions(model, ifs) if ifs else {}
        if not taken:
            break
        used = {v for g in _all_graphs(graph) for n in g.node for v in (*n.input, *n.output, n.name)}
        used |= {t.name for t in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}
        nodes, conditions = [], []
        for node in current:
            if id(node) not in taken or any(len(g.sparse_initializer) for _, g in _if_branches(node)):
                nodes.append(node)
                continue
            branch = dict(_if_branches(node))["then_branch" if taken[id(node)] else "else_branch"]
            nodes.extend(_branch_nodes(node, branch, graph, used))
            conditions.append(node.input[0])
            folded.append(node.name or node.output[0])
        if not conditions:
            break
        copies = [_copied(n) for n in nodes]  # `nodes` holds nodes of graph.node, which the next line clears
        del graph.node[:]
        graph.node.extend(copies)
        _drop_unread(graph, conditions)
    return folded


def _copied(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _if_branches(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    return [(a.name, a.g) for a in node.attribute if a.name in ("then_branch", "else_branch")]


def _branch_nodes(node: onnx.NodeProto, branch: onnx.GraphProto, graph: onnx.GraphProto,
                  used: set[str]) -> list[onnx.NodeProto]:
    """The branch's nodes for the main graph: every name the branch defines made unique, its initializers moved to
    the main graph, and its outputs given the If's output names (an Identity where a branch output is not a name a
    branch node writes once)."""
    prefix = (node.name or node.output[0]) + "/"

    def fresh(name: str) -> str:
        new, k = prefix + name, 1
        while new in used:
            new, k = f"{prefix}{name}_{k}", k + 1
        used.add(new)
        return new

    written = [o for n in branch.node for o in n.output if o]
    outs = [o.name for o in branch.output]
    rename = {}
    for i, out in enumerate(outs):
        if out in written and written.count(out) == 1 and outs.count(out) == 1 and i < len(node.output) \
                and node.output[i]:
            rename[out] = node.output[i]
    for name in [*written, *(t.name for t in branch.initializer)]:
        rename.setdefault(name, fresh(name))
    for t in branch.initializer:
        moved = onnx.TensorProto()
        moved.CopyFrom(t)
        moved.name = rename[t.name]
        graph.initializer.append(moved)
    nodes = []
    for n in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.name = fresh(n.name or n.op_type)
        _rename_reads(copy, rename)
        copy.output[:] = [rename.get(o, o) for o in copy.output]
        nodes.append(copy)
    for i, out in enumerate(outs):
        if i < len(node.output) and node.output[i] and rename.get(out) != node.output[i]:
            nodes.append(onnx.helper.make_node("Identity", [rename.get(out, out)], [node.output[i]],
                                               name=fresh("Identity")))
    return nodes


def _rename_reads(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    """`node`'s inputs, and the outer names its bodies read, through `rename`."""
    node.input[:] = [rename.get(i, i) for i in node.input]
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            for inner in g.node:
                _rename_reads(inner, rename)
            for o in g.output:
                o.name = rename.get(o.name, o.name)


def _drop_unread(graph: onnx.GraphProto, names: list[str]) -> None:
    """Drop the nodes that computed only `names` (a folded If's condition) and that nothing else reads."""
    producers = {o: tuple(n.output) for n in graph.node for o in n.output if o}
    inputs = {tuple(n.output): [i for i in n.input if i] for n in graph.node}
    candidates, todo = set(), list(names)
    while todo:
        key = producers.get(todo.pop())
        if key is not None and key not in candidates:
            candidates.add(key)
            todo.extend(inputs[key])
    while True:
        read = {v for g in _all_graphs(graph) for n in g.node for v in n.input} | {o.name for o in graph.output}
        kept = [n for n in graph.node if tuple(n.output) not in candidates or any(o in read for o in n.output if o)]
        if len(kept) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(kept)


def _newer_opset(model: onnx.ModelProto) -> int | None:
    """The model's standard opset when it is newer than this onnx knows, else None."""
    newest = onnx.defs.onnx_opset_version()
    return next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx") and i.version > newest), None)


def _checked_by_path(skeleton: onnx.ModelProto, path: Path) -> bool:
    """onnx's checker on the file itself, before its external data is read: the checker then reads the graph, not
    copies of the weights. Checked in memory after loading, a model of 528 MB of external weights (bench_large's
    VGG-16) peaked at 3.15x them in `inspect` (the checker serialises the proto and parses it again). False when
    the checker refuses it: the in-memory check after loading says why, as for any model (and sorts the nodes of
    a graph onnx's checker refuses only for their order)."""
    if _newer_opset(skeleton) is not None:
        return False
    try:
        onnx.checker.check_model(str(path))
    except Exception:  # noqa: BLE001 - any refusal (sparse external tensors: an InferenceError) is checked again
        return False
    return True


def check_model(model: onnx.ModelProto, *, where: str) -> None:
    """onnx.checker plus an opset check, turned into one clear line."""
    version = _newer_opset(model)
    if version is not None:
        newest = onnx.defs.onnx_opset_version()
        raise ModelError(
            f"'{where}' uses opset {version}, newer than this onnx ({onnx.__version__}) supports "
            f"(<= {newest}); upgrade onnx or re-export the model with opset <= {newest}."
        )
    try:
        if model.ByteSize() < PROTOBUF_LIMIT:
            try:
                onnx.checker.check_model(model)
            except onnx.checker.ValidationError as exc:
                if "topologically sorted" in str(exc) and sort_nodes(model):
                    log.warning("the nodes of '%s' were not in topological order (onnx's checker refuses that; "
                                "onnxruntime sorts them itself): sorted, the model computes the same", where)
                elif "of 'type' is required but missing" in str(exc) and (given := give_output_shapes(model)):
                    log.warning("output(s) %s of '%s' declared no shape (onnx's checker refuses that; onnxruntime "
                                "runs it): given the shapes onnxruntime computes, %s", listed(given, 3), where,
                                listed([_shape_text(o) for o in model.graph.output if f"'{o.name}'" in given], 3))
                elif "in initializer but not in graph input" in str(exc) and (listed_now := input_initializers(model)):
                    log.warning("'%s' is of IR version %d, where every initializer must be a graph input, and %s "
                                "were not (onnx's checker refuses that; onnxruntime runs it: its saved optimized "
                                "graphs add initializers so): listed as inputs, the model computes the same", where,
                                model.ir_version, listed(listed_now, 3))
                elif op := _runtime_only_op(str(exc), model):
                    log.warning("%s in '%s' is an op onnxruntime defines in the ai.onnx domain and no ONNX opset "
                                "has (onnx's checker refuses it; onnxruntime runs it): the model is run and judged "
                                "in onnxruntime as it is", op, where)
                    return
                else:
                    raise
                onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        newer = _op_newer_than_opset(str(exc)) or _attribute_newer_than_opset(str(exc), model)
        raise ModelError(f"'{where}' is not a valid ONNX model: {_first_line(exc)}; "
                         + (newer or "fix or re-export it.")) from None
    except UnicodeDecodeError:  # the checker's message quotes a name that is not UTF-8
        raise ModelError(f"'{where}' is not a valid ONNX model: a name in it is not UTF-8 text; re-export it.") from None


def give_output_shapes(model: onnx.ModelProto) -> list[str]:
    """Give each main-graph tensor output that declares no shape the one onnxruntime computes, in place: its rank
    and fixed sizes from runs at two batch sizes, an axis whose size follows the batch named as the inputs' batch
    axis (else '<output>_<axis>'). Returns the outputs given one ("'std'"), none when onnxruntime cannot run the
    model on random inputs (sweep 38: skl2onnx writes BayesianRidge's `return_std` output 'std' with an element
    type and no shape; onnxruntime runs it, onnx's checker refuses it, and the line said "fix or re-export it")."""
    from onnxprune.calibration.runtime import make_session, random_feeds

    missing = [o for o in model.graph.output if o.type.HasField("tensor_type")
               and not o.type.tensor_type.HasField("shape")]
    if not missing:
        return []
    try:
        session = make_session(model, optimize=False)
        runs = [session.run([o.name for o in missing], random_feeds(model, batch=b)) for b in (3, 5)]
    except Exception:  # noqa: BLE001 - nothing learnt: the checker's line stands
        return []
    batch = next((d.dim_param for i in model.graph.input for d in i.type.tensor_type.shape.dim[:1] if d.dim_param),
                 "N")
    pairs = [tuple(np.shape(r[k]) for r in runs) for k in range(len(missing))]
    if any(len(a) != len(b) for a, b in pairs):
        return []  # a rank that follows the input: nothing given
    for out, (a, b) in zip(missing, pairs):
        shape = out.type.tensor_type.shape
        shape.SetInParent()  # a scalar's shape has no dims, but is there
        for j, (m, n) in enumerate(zip(a, b)):
            dim = shape.dim.add()
            if m == n:
                dim.dim_value = m
            else:
                dim.dim_param = batch if (m, n) == (3, 5) else f"{out.name}_{j}"
    return [f"'{o.name}'" for o in missing]


def input_initializers(model: onnx.ModelProto) -> list[str]:
    """In a model of IR version < 4, list every main-graph initializer that is not a graph input as one (its type and
    shape), in place; returns them ("'name'"). IR 3 requires it, and onnxruntime's saved optimized graph
    (SessionOptions.optimized_model_filepath) of an IR-3 model adds initializers that are not (sweep 55: torch's
    opset-7 export of a DnCNN, optimized at ORT_ENABLE_EXTENDED, whose Conv+BatchNorm fusions wrote
    'ConvBnFusion_W_*'; onnxruntime runs it, and the line said "not a valid ONNX model ... fix or re-export it")."""
    if model.ir_version >= 4:
        return []
    named = {i.name for i in model.graph.input}
    added = []
    for t in model.graph.initializer:
        if t.name not in named:
            model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            added.append(f"'{t.name}'")
    return added


def _shape_text(value: onnx.ValueInfoProto) -> str:
    dims = [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]
    return f"'{value.name}' [{', '.join(dims)}]"


def sort_nodes(model: onnx.ModelProto) -> bool:
    """Put the nodes of the graph and of every body in topological order, in place (among the nodes ready at once,
    the order they had); True when that changed anything, False (and nothing changed) when some node reads a name
    nothing defines. onnxruntime.transformers' float16 conversion appends the Cast of each kept float32 input after
    the nodes that read it (sweep 29: a Swin so converted, which onnxruntime runs, was "not a valid ONNX model:
    Nodes in a graph must be topologically sorted")."""
    orders: list[tuple[onnx.GraphProto, list[onnx.NodeProto]]] = []
    if not _sorted_order(model.graph, set(), orders):
        return False
    changed = False
    for graph, order in reversed(orders):  # bodies first: a graph's nodes are copied with the bodies they hold
        if [id(n) for n in order] != [id(n) for n in graph.node]:
            copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in order]
            del graph.node[:]
            graph.node.extend(copies)
            changed = True
    return changed


def _needs(node: onnx.NodeProto) -> set[str]:
    """Names `node` needs defined before it: its inputs and what its bodies read from the scopes around them."""
    from onnxprune.passes.scopes import outer_reads

    return {i for i in node.input if i} | outer_reads(node)


def _sorted_order(graph: onnx.GraphProto, outer: set[str], orders: list) -> bool:
    known = set(outer) | {v.name for v in graph.input} | {t.name for t in graph.initializer}
    known |= {t.values.name for t in graph.sparse_initializer}
    needs = [_needs(node) for node in graph.node]
    pending, order = list(range(len(graph.node))), []
    while pending:
        rest = []
        for k in pending:
            if needs[k] <= known:
                order.append(graph.node[k])
                known.update(o for o in graph.node[k].output if o)
            else:
                rest.append(k)
        if len(rest) == len(pending):
            return False
        pending = rest
    orders.append((graph, order))
    for node in graph.node:
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                if not _sorted_order(g, known, orders):
                    return False
    return True


def _attribute_newer_than_opset(message: str, model: onnx.ModelProto) -> str | None:
    """For "Unrecognized attribute: num_outputs for operator Split": the opset that has it, when a newer one does
    (sweep 25: torch.onnx's dynamo exporter at opset_version=17 writes GPT-2's Split with opset 18's num_outputs;
    the line said only "fix or re-export it")."""
    import re

    found = re.search(r"Unrecognized attribute: (\w+) for operator (\w+)", message)
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if not found or version is None:
        return None
    attribute, op = found.groups()
    for v in range(version + 1, onnx.defs.onnx_opset_version() + 1):
        try:
            schema = onnx.defs.get_schema(op, v)
        except Exception:  # noqa: BLE001 - not a default-domain op, or none at this opset
            return None
        if attribute in schema.attributes:
            return (f"'{attribute}' is an attribute of {op} from opset {schema.since_version} on and the model "
                    f"imports opset {version} (the exporter wrote a newer opset's form): re-export at opset >= "
                    f"{schema.since_version}.")
    return None


def unknown_op(message: str) -> str | None:
    """The op of onnx's "No Op registered for OP with domain_version of N" when no ONNX domain defines OP."""
    import re

    found = re.search(r"No Op registered for (\w+) with domain_version of (\d+)", message)
    if not found or any(onnx.defs.has(found.group(1), d) for d in {s.domain for s in onnx.defs.get_all_schemas()}):
        return None
    return found.group(1)


def _runtime_only_op(message: str, model: onnx.ModelProto) -> str | None:
    """For "No Op registered for SimplifiedLayerNormalization with domain_version of 17": the op's name when no ONNX
    domain defines it and onnxruntime loads the model, else None. onnxruntime registers a few of its own ops in the
    ai.onnx domain (its transformer optimizer writes SimplifiedLayerNormalization, an RMSNorm, there); sweep 43: the
    line said "onnxruntime cannot run it either" of a model onnxruntime ran."""
    from onnxprune.calibration.runtime import make_session

    op = unknown_op(message)
    if op is None:
        return None
    try:
        make_session(model, optimize=False)
    except Exception:  # noqa: BLE001 - onnxruntime cannot load it either: the checker's refusal stands
        return None
    return op


def _op_newer_than_opset(message: str) -> str | None:
    """For "No Op registered for LayerNormalization with domain_version of 14": what to do (onnxruntime's
    transformer optimizer writes LayerNormalization into an opset-14 export; onnxruntime runs it, onnx's checker
    does not, and a helper read "fix or re-export it" with no way forward)."""
    import re

    found = re.search(r"No Op registered for (\w+) with domain_version of (\d+)", message)
    if not found:
        return None
    op, version = found.group(1), int(found.group(2))
    try:
        since = onnx.defs.get_schema(op, onnx.defs.onnx_opset_version()).since_version
    except Exception:  # noqa: BLE001 - no op of that name in any opset of the default domain
        if any(onnx.defs.has(op, domain) for domain in {s.domain for s in onnx.defs.get_all_schemas()}):
            return None  # an op of another ONNX domain (ai.onnx.ml's Normalizer) under the wrong one: the checker's
        # sweep 37: tf2onnx 1.17 wrote Keras 3's gelu as 'Erfc' and celu as 'Expm1', names of its framework's ops
        # that no ONNX opset of any domain defines (onnxruntime cannot load the file either)
        return (f"{op} is in no ONNX opset (onnxruntime cannot run it either): the exporter wrote its framework's "
                "op; re-export with that layer written in other ops, or with an exporter version that converts it.")
    if since <= version:
        return None
    return (f"{op} is an ONNX op from opset {since} on and the model imports opset {version} (tools that fuse ops, "
            f"such as onnxruntime's transformer optimizer, write it into older exports): export at opset >= {since} "
            "before optimizing, or prune the model before it was optimized.")


def _check_text(model: onnx.ModelProto, where) -> None:
    """Names are protobuf strings; in a corrupted or crafted file they arrive as bytes (not UTF-8): refuse them."""
    stack: list = [model]
    while stack:
        msg = stack.pop()
        if isinstance(msg, onnx.TensorProto):  # never ListFields a tensor (it would copy raw_data): names only
            texts = [msg.name, msg.doc_string] + [s for e in msg.external_data for s in (e.key, e.value)]
            if any(isinstance(v, bytes) for v in texts):
                raise ModelError(f"'{where}' holds a tensor name or external-data entry that is not UTF-8 text "
                                 f"({msg.name!r:.60}); the file is corrupted or crafted, re-export or re-download it.")
            continue
        for fd, value in msg.ListFields():
            if fd.type == fd.TYPE_STRING:
                values = [value] if isinstance(value, (str, bytes)) else value
                bad = next((v for v in values if isinstance(v, bytes)), None)
                if bad is not None:
                    raise ModelError(f"'{where}' holds text that is not UTF-8 in {fd.full_name} ({bad!r:.60}); "
                                     "the file is corrupted or crafted, re-export or re-download it.")
            elif fd.type == fd.TYPE_MESSAGE:
                stack.extend([value] if isinstance(value, Message) else value)


# a Constant's list or scalar forms and the tensor each is (the ONNX spec's Constant: 1-D for the lists, a scalar else)
_CONSTANT_FORMS = {"value_float": (onnx.TensorProto.FLOAT, False), "value_floats": (onnx.TensorProto.FLOAT, True),
                   "value_int": (onnx.TensorProto.INT64, False), "value_ints": (onnx.TensorProto.INT64, True)}


def constant_tensors(model: onnx.ModelProto) -> list[str]:
    """Rewrite every Constant that holds a float or int list or scalar (`value_floats`, `value_ints`, `value_float`,
    `value_int`) as the `value` tensor it is; return their names. The passes read a Constant's `value` only: sweep 28's
    LeNet-300-100 with fc1's 235K weights as `Constant(value_floats) -> Reshape` lost that layer from `inspect`
    altogether, neither pruned nor listed as left alone. The same values and type, so the model computes the same."""
    names = []
    for graph in _all_graphs(model.graph):
        for node in graph.node:
            if node.op_type != "Constant" or len(node.attribute) != 1 or node.attribute[0].name not in _CONSTANT_FORMS:
                continue
            attr = node.attribute[0]
            dtype, listed = _CONSTANT_FORMS[attr.name]
            value = onnx.helper.get_attribute_value(attr)
            values = list(value) if listed else [value]
            tensor = onnx.helper.make_tensor("", dtype, [len(values)] if listed else [], values)
            node.ClearField("attribute")
            node.attribute.append(onnx.helper.make_attribute("value", tensor))
            names.append(node.output[0])
    return names


def densify_sparse(model: onnx.ModelProto) -> list[str]:
    """Decode every stored encoding (COO sparse tensors, compact decoders) into plain dense tensors; return names."""
    return storage.decode_model(model)


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    *,
    protect: list[Path] | tuple[Path, ...] = (),
    external_data: bool | None = None,
) -> Path:
    """Write atomically; never over a protected path (the input). Large models get their data beside them."""
    path = Path(path)
    check_output_path(path, protect)
    if external_data is None:
        external_data = model.ByteSize() >= PROTOBUF_LIMIT - (64 << 20)
    folder = path.parent if str(path.parent) else Path(".")
    tmp = _temp_name(path)
    tmp_data = None
    try:
        if external_data:
            data_name = path.name + ".data"
            tmp_data = _temp_name(folder / data_name)  # its own name: two runs writing one output at once (CI audit:
            # a fixed '.NAME.data.tmp' was one file both wrote into, and the other run's graph pointed into it)
            _write_with_external_data(model, Path(tmp), tmp_data, data_name)
        else:
            with open(tmp, "xb") as f:
                f.write(model.SerializeToString())
                f.flush()
                os.fsync(f.fileno())
        with _signals_held():  # the data and the graph that points into it land together
            if tmp_data is not None:
                os.replace(tmp_data, folder / (path.name + ".data"))
            os.replace(tmp, path)
    except BaseException as exc:
        with _signals_held(), contextlib.suppress(OSError):
            os.unlink(tmp)
        if tmp_data is not None:
            with _signals_held(), contextlib.suppress(OSError):
                os.unlink(tmp_data)
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from None
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, protect=()) -> Path:
    """Any other output (reports, recipes, JSON): temp file + rename."""
    path = Path(path)
    check_output_path(path, protect)
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with _signals_held(), contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from None
        raise
    return path


# what interrupts a run, cleaned up alike: Ctrl-C, a job's kill, a lost terminal or SSH session (sweep 15: SIGHUP
# during a write left the temp file). Not SIGQUIT (Ctrl-\): it stays the immediate stop with a core dump, for when
# these have to wait (docs/bad-input.md).
INTERRUPTS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def _signals_held():
    """SIGINT and SIGTERM wait while a temp file is created and removed, or cleaned up: their handlers raise
    KeyboardInterrupt, which landing inside a cleanup would skip the unlink and leave the file (seen under load).
    Python-level (handlers swapped in the main thread): a signal mask would not do, as any other thread (onnxruntime's,
    torch's) can take a process-directed signal. One that arrived is handed to the previous handler afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in INTERRUPTS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


def _temp_name(path: Path) -> Path:
    """'.NAME.<random>.tmp' beside the output, created inside the caller's try (an interrupt at any point is cleaned
    up) by open(), so the output gets the user's umask like any other file (mkstemp would make it 0600)."""
    return (path.parent if str(path.parent) else Path(".")) / f".{path.name}.{secrets.token_hex(6)}.tmp"


_FLAG = contextvars.ContextVar("output_flag", default="-o")  # the option an output path came from, for messages


@contextlib.contextmanager
def output_flag(flag: str):
    """Messages about outputs written inside name `flag` ('--report', '--checkpoint-dir') instead of -o (sweep 15:
    a full disk under --report said "choose another -o" after the model was written)."""
    token = _FLAG.set(flag)
    try:
        yield
    finally:
        _FLAG.reset(token)


_SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
            (stat.S_ISSOCK, "a socket"))


def _not_a_regular_file(path: Path) -> str | None:
    """What an existing output path is when writing there would replace something that is not a plain file: a device
    (sweep 15: `-o /dev/full` as root made /dev/full a regular file), a pipe, a socket, or a symbolic link (its
    target would be left and the link replaced)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        return f"a symbolic link (to '{os.readlink(path)}')"
    return next((what for test, what in _SPECIAL if test(mode)), None)


def check_output_path(path: Path, protect=()) -> None:
    """Refuse outputs that would overwrite the input, replace a device, pipe or link, or land in a missing or
    read-only folder."""
    flag = _FLAG.get()
    folder = path.parent if str(path.parent) else Path(".")
    for p in protect:
        if p is not None and path.exists() and Path(p).exists() and os.path.samefile(path, p):
            raise ConfigError(f"output '{path}' is the input model; choose another output path (-o).")
    sidecar = folder / (path.name + ".data")  # where save_model writes a large output's data
    for p in protect:
        for data in _external_files(Path(p)) if p is not None else ():
            for mine, what in ((path, "is"), (sidecar, f"would write its data to '{sidecar}', which is")):
                if mine.exists() and os.path.samefile(mine, data):
                    raise ConfigError(f"output '{path}' {what} the input model's external data file; choose "
                                      "another output path (-o).")
    if not folder.is_dir():
        raise ConfigError(f"output folder '{folder}' does not exist; create it or choose another {flag}.")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"output folder '{folder}' is not writable; choose another {flag}.")
    if path.is_dir():
        raise ConfigError(f"output '{path}' is a folder; give a file name such as '{path / 'model.onnx'}'.")
    special = _not_a_regular_file(path)
    if special is not None:
        raise ConfigError(f"output '{path}' is {special}, not a file: the written file would replace it; choose "
                          f"another {flag} (a file path).")
    exc = _refuses_new_files(_temp_name(path))
    if exc is not None:
        raise ConfigError(f"output '{path}' cannot be written: the folder '{folder}' does not accept new files "
                          f"({exc.strerror or type(exc).__name__}); choose another {flag}.")


def check_model_output(path: Path) -> None:
    """An existing output file that is not an ONNX model is not replaced by one (-o; reports and recipes are
    checked by check_output_path alone)."""
    foreign = _not_a_model(path)
    if foreign is not None:
        raise ConfigError(f"output '{path}' exists and is {foreign}, not an ONNX model: the written model would "
                          "replace it; choose another -o (an existing file is overwritten only when it is a model).")


def _not_a_model(path: Path) -> str | None:
    """What an existing, non-empty output file is when it is not an ONNX model, else None. A serialized ModelProto
    opens with its ir_version field (tag 0x08). Audit 39: `-o calib.npz` (the calibration file's name, typed in the
    wrong place) replaced a numpy archive with a model, and `-o other.onnx.data` another model's weights."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head[:1] == b"\x08":
        return None
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a numpy .npz?)"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy file"
    return "a file of another kind (external tensor data?)" if path.name.endswith(".data") else "a file of another kind"


def _external_files(model_path: Path) -> list[Path]:
    """The external data files an ONNX file points to (read without its data), existing ones only; [] when it is
    not a readable model (the load step says why)."""
    if not model_path.is_file():
        return []
    try:
        model = onnx.load_model(str(model_path), load_external_data=False)
    except (DecodeError, OSError, ValueError):
        return []
    folder = model_path.parent
    files = {folder / external_data_helper.ExternalDataInfo(t).location for t in _external_tensors(model)}
    return [f for f in files if f.is_file()]


def check_output_folder(folder: Path, flag: str = "-o") -> None:
    """A folder we will create (or fill) with outputs: it, or its parent, must accept new files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{flag} '{folder}' is a file; give a folder.")
    target = folder if folder.exists() else (folder.parent if str(folder.parent) else Path("."))
    if not target.is_dir():
        raise ConfigError(f"{flag} folder's parent '{target}' does not exist; create it first.")
    exc = _refuses_new_files(target / f".{folder.name or 'out'}.{secrets.token_hex(6)}.tmp")
    if exc is not None:
        raise ConfigError(f"{flag} '{folder}' cannot be written: '{target}' does not accept new files "
                          f"({exc.strerror or type(exc).__name__}); choose another folder.")


def _refuses_new_files(probe: Path) -> OSError | None:
    """Create and remove `probe`: permission bits do not tell everything (root, read-only mounts, /proc). The probe
    is removed in `finally` with SIGINT/SIGTERM held, so an interrupt (Ctrl-C, SIGTERM) leaves nothing."""
    with _signals_held():  # an interrupt waits until the probe is gone
        ours = True
        try:
            with open(probe, "xb"):
                pass
        except FileExistsError as exc:  # a file of that random name that is not ours: leave it
            ours = False
            return exc
        except OSError as exc:
            return exc
        finally:
            if ours:
                with contextlib.suppress(OSError):
                    os.unlink(probe)
    return None


def make_folder(folder: Path, *, parents: bool = False) -> None:
    """mkdir (an existing folder is fine); a folder that cannot be made is the write error of the flag in force
    (`output_flag`), as a file that cannot be written."""
    try:
        Path(folder).mkdir(parents=parents, exist_ok=True)
    except OSError as exc:
        raise _write_failed(Path(folder), exc) from None


def _write_failed(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"output '{path}' cannot be written ({exc.strerror or type(exc).__name__}); choose another "
                       f"{_FLAG.get()} "
                       "in a writable folder with free space.")


def _write_with_external_data(model: onnx.ModelProto, tmp: Path, tmp_data: Path, data_name: str) -> None:
    """External data for dense and sparse tensors alike (onnx.save leaves sparse ones inline)."""
    model = onnx.ModelProto.FromString(model.SerializeToString()) if model.ByteSize() < PROTOBUF_LIMIT else model
    offset = 0
    with open(tmp_data, "xb") as data:
        for tensor in _tensors_for_external(model):
            if not tensor.HasField("raw_data"):
                arr = numpy_helper.to_array(tensor)
                tensor.CopyFrom(numpy_helper.from_array(arr, tensor.name))
            raw = tensor.raw_data
            pad = (-offset) % 4096
            data.write(b"\0" * pad)
            offset += pad
            data.write(raw)
            external_data_helper.set_external_data(tensor, data_name, offset=offset, length=len(raw))
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
            offset += len(raw)
        data.flush()
        os.fsync(data.fileno())
    with open(tmp, "xb") as f:
        f.write(model.SerializeToString())


def _tensors_for_external(model: onnx.ModelProto, min_bytes: int = 1024):
    for graph in _all_graphs(model.graph):
        tensors = list(graph.initializer)
        for sp in graph.sparse_initializer:
            tensors += [sp.values, sp.indices]
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                if attr.HasField("sparse_tensor"):
                    tensors += [attr.sparse_tensor.values, attr.sparse_tensor.indices]
        for t in tensors:
            if t.data_location != onnx.TensorProto.EXTERNAL and _nbytes(t) >= min_bytes:
                yield t


def _nbytes(t: onnx.TensorProto) -> int:
    if t.HasField("raw_data"):
        return len(t.raw_data)
    return t.ByteSize()


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = list(external_data_helper._get_all_tensors(model))
    for graph in _all_graphs(model.graph):
        for sp in graph.sparse_initializer:
            tensors += [sp.values, sp.indices]
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("sparse_tensor"):
                    tensors += [attr.sparse_tensor.values, attr.sparse_tensor.indices]
    return [t for t in tensors if external_data_helper.uses_external_data(t)]


def _external_bytes(tensors, folder: Path) -> int:
    """Bytes of the distinct external data files the tensors point to."""
    files = {(folder / external_data_helper.ExternalDataInfo(t).location).resolve() for t in tensors}
    return sum(f.stat().st_size for f in files if f.is_file())


def saved_size(path: str | os.PathLike) -> int:
    """Bytes of a written model: the .onnx file plus the external data files it points to."""
    path = Path(path)
    size = path.stat().st_size
    if not any(p.name.startswith(path.name) and p.suffix == ".data" for p in path.parent.glob(f"{path.name}*.data")):
        return size
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError):
        return size
    return size + _external_bytes(_external_tensors(model), path.parent)


def _check_external_locations(tensors, folder: Path) -> None:
    """Refuse external data that points outside the model's folder (absolute, '..', symlinks out)."""
    root = folder.resolve()
    for t in tensors:
        info = external_data_helper.ExternalDataInfo(t)
        loc = info.location
        if not loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or ":" in loc[:3]:
            raise ModelError(
                f"tensor '{t.name}' stores its data at '{loc}', an absolute path; refusing to read outside the "
                "model's folder. Keep the data file next to the model with a relative name."
            )
        target = (folder / loc).resolve()
        if root not in target.parents and target != root:
            raise ModelError(
                f"tensor '{t.name}' stores its data at '{loc}', which leaves the model's folder; refusing it. "
                "Keep the data file next to the model."
            )
        if not target.is_file():
            raise ModelError(
                f"tensor '{t.name}' stores its data in '{loc}', which is missing next to the model; copy it there."
            )


def _check_declared_sizes(model: onnx.ModelProto, where) -> None:
    for graph in _all_graphs(model.graph):
        for t in graph.initializer:
            _refuse_huge(int(np.prod(list(t.dims), dtype=np.float64)), t.name, where)
        for sp in graph.sparse_initializer:
            _refuse_huge(int(np.prod(list(sp.dims), dtype=np.float64)), sp.values.name, where)


# Bits per element in raw_data, and the typed field that holds one value per element otherwise (None: packed types,
# raw_data checked only). Types missing here (strings, 6-bit floats, types newer than this table) are not checked.
_T = onnx.TensorProto
_STORAGE = {
    _T.FLOAT: (32, "float_data"), _T.DOUBLE: (64, "double_data"), _T.FLOAT16: (16, "int32_data"),
    _T.BFLOAT16: (16, "int32_data"), _T.INT8: (8, "int32_data"), _T.UINT8: (8, "int32_data"),
    _T.INT16: (16, "int32_data"), _T.UINT16: (16, "int32_data"), _T.INT32: (32, "int32_data"),
    _T.BOOL: (8, "int32_data"), _T.INT64: (64, "int64_data"), _T.UINT32: (32, "uint64_data"),
    _T.UINT64: (64, "uint64_data"), _T.COMPLEX64: (64, None), _T.COMPLEX128: (128, None),
    **{getattr(_T, n): (8, "int32_data") for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
                                                   "FLOAT8E8M0") if hasattr(_T, n)},
    **{getattr(_T, n): (4, None) for n in ("UINT4", "INT4", "FLOAT4E2M1") if hasattr(_T, n)},
    **{getattr(_T, n): (2, None) for n in ("UINT2", "INT2") if hasattr(_T, n)},
}
_KNOWN_TYPES = set(_T.DataType.values()) - {_T.UNDEFINED}


def _check_tensor_data(model: onnx.ModelProto, where) -> None:
    """The checker refuses too little data for a shape, not too much, and lets unknown data types through: refuse
    both, naming the tensor."""
    for graph in _all_graphs(model.graph):
        for value in list(graph.input) + list(graph.output) + list(graph.value_info):
            elem = value.type.tensor_type.elem_type
            if elem and elem not in _KNOWN_TYPES:
                raise ModelError(f"'{value.name}' in {where} declares element type {elem}, which onnx "
                                 f"{onnx.__version__} does not know; the file is corrupted or needs a newer onnx.")
        tensors = list(graph.initializer)
        for sp in graph.sparse_initializer:
            tensors += [sp.values, sp.indices]
        for node in graph.node:
            for attr in node.attribute:
                tensors += ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
                if attr.HasField("sparse_tensor"):
                    tensors += [attr.sparse_tensor.values, attr.sparse_tensor.indices]
        for t in tensors:
            if t.data_type not in _KNOWN_TYPES:
                raise ModelError(f"tensor '{t.name}' in {where} has data type {t.data_type}, which onnx "
                                 f"{onnx.__version__} does not know; the file is corrupted or needs a newer onnx.")
            if t.data_type not in _STORAGE or t.data_location == onnx.TensorProto.EXTERNAL:
                continue
            bits, typed = _STORAGE[t.data_type]
            count = int(np.prod(list(t.dims), dtype=np.float64))
            if t.HasField("raw_data"):
                have, want = len(t.raw_data), (count * bits + 7) // 8
            elif typed is not None:
                have, want = len(getattr(t, typed)), count
            else:
                continue
            if have != want:
                raise ModelError(
                    f"tensor '{t.name}' in {where} declares shape {list(t.dims)} but holds {have} "
                    f"{'bytes' if t.HasField('raw_data') else 'values'} ({want} expected); the file is corrupted."
                )


UNFED_OP = "Optional"  # what stands for an optional input the data leaves out: an empty optional of its type


def run_without(model: onnx.ModelProto, names) -> tuple[onnx.ModelProto, list[tuple[int, onnx.ValueInfoProto]]]:
    """A copy of `model` without the optional(tensor) graph inputs `names`, each replaced by an Optional node that
    makes the empty optional of its type (the value onnxruntime gives an optional input it is not fed), and the
    inputs taken out with their positions, for `inputs_back`. Every step of a run then runs the model as its callers
    run it, none fed a value for them; the written model takes them again (sweep 54)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph, dropped = out.graph, []
    for k in reversed(range(len(graph.input))):
        vi = graph.input[k]
        if vi.name in names and vi.type.WhichOneof("value") == "optional_type":
            dropped.append((k, onnx.ValueInfoProto.FromString(vi.SerializeToString())))
            del graph.input[k]
            graph.node.insert(0, onnx.helper.make_node(UNFED_OP, [], [vi.name], name=f"{vi.name}/unfed",
                                                       type=vi.type.optional_type.elem_type))
    dropped.reverse()
    return out, dropped


def inputs_back(model: onnx.ModelProto, dropped: list[tuple[int, onnx.ValueInfoProto]]) -> None:
    """`run_without` undone in place: its Optional nodes out, the inputs back where they were."""
    names = {vi.name for _, vi in dropped}
    for node in [n for n in model.graph.node if n.op_type == UNFED_OP and not n.input and n.output[0] in names]:
        model.graph.node.remove(node)
    for k, vi in dropped:
        model.graph.input.insert(min(k, len(model.graph.input)), vi)
