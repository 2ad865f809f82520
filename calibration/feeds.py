"""Calibration data read one complete feed at a time: each .npz (or feed dict) goes to onnxruntime as it is.

Streaming and sequence models take inputs that are not "N samples along axis 0": a scalar sample rate `sr` of
shape [], a recurrent state [2, N, H] with the batch on axis 1, time-major sequences [T, N, C], images whose
width differs from file to file. Stacking or re-batching such arrays is wrong or impossible, so a source is read
per feed when its arrays cannot be samples-first (`feed_reason`, the rule the README states):

  1. an array of a model input is a scalar, or
  2. within one file the model inputs disagree on the length of their first axis, or
  3. one input has different non-first dimensions in different files (per-sample widths, sequence lengths), or
  4. an input is time-major (axis 0 is time): it is the X of an LSTM/GRU/RNN with layout 0, or its declared dims
     name axis 0 like time (seq, time, len, frame, step) and a later axis like the batch (batch, N), or the symbol
     that leads the outputs (their batch) sits on a later axis of it and not on axis 0 (torch's [T, N, E] of a
     Transformer with batch_first=False, 'rows' [T, N, 28] beside 'logits' [N, 10]; also after a fixed axis 0,
     samples as columns, 'input' [784, N] beside 'logits' [N, 10], where no input leads with the batch; never an
     input whose axis 0 is named like a batch, nor by outputs that lead with a time word: 'x' [batch, 100, time]
     beside time-major 'probs' [time, batch, 4] is samples-first), or
  5. an input declares a fixed first axis longer than 1 and every file's array has exactly that length there and
     the declared rank: a model with no batch axis (torchvision's detectors take one image [3, H, W]) or a fixed
     batch, which each file fills whole. Read as samples, a split cut [3, H, W] into [2, H, W] and [1, H, W]
     (sweep 4, ssdlite320: an onnxruntime error wrapped as "step 'auto-search' failed").

One file (or dict of arrays) that stacks N sequences of a time-major model in the layout rule 4 reads (N on axis 1
of each time-major input, on axis 0 of the others and of the labels) is N feeds of one sequence each
(`time_major_stack`): the search can then split, retrain and decide on sequences. One file (or dict) whose inputs
differ on axis 0 only because some arrays have exactly their input's fixed declared shape (a scalar, statistics
[1, 8]) while the others stack N samples on a dynamic batch is N feeds of one sample each, those arrays whole in
every one (`shared_stack`; so are inputs whose axis 0 is a symbol other than the outputs' batch, a DeepONet's
query points [P, 1]: `own_axis_inputs`), and so is each file of a folder of such files
(readers._shared_folder_reader); beside
a fixed batch B, scalars go whole into feeds of B rows (`stacked_batches`).

Otherwise the file is a stack of samples and the ordinary readers cut it into batches. Per feed, every feed is one
step: one onnxruntime run, one scored batch, one retraining step; nothing is concatenated across feeds. A feed is
checked against the declared inputs (names, rank, every fixed dim, dtype with safe casts, NaN/inf); its labels,
if any, are passed on as they are. `--limit` and the validation split count feeds.
"""

from __future__ import annotations

import contextlib
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxprune.calibration.value_types import dim_params
from onnxprune.errors import CalibrationError

if TYPE_CHECKING:  # annotations only: inspect reads single_batch_states without importing onnxruntime
    from onnxprune.calibration.runtime import InputSpec

log = logging.getLogger(__name__)


def npz_shapes(path: Path) -> dict[str, tuple] | None:
    """Array shapes of an .npz from its headers only (no data loaded); None when they cannot be read."""
    shapes = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, _ = read(f)
                shapes[member[:-4]] = tuple(shape)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile):
        return None
    return shapes


_TIME = re.compile(r"seq|time|len|frame|step", re.I)
_BATCH = re.compile(r"batch|^n$", re.I)
RECURRENT = {"LSTM", "GRU", "RNN"}


def time_major_inputs(model: onnx.ModelProto) -> dict[str, str]:
    """Inputs whose axis 0 is time, with why (rule 4 of the module docstring)."""
    out = {}
    for node in model.graph.node:
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
        if node.op_type in RECURRENT and node.domain in ("", "ai.onnx") and layout == 0 and node.input:
            out.setdefault(node.input[0], f"it is the X of {node.op_type} '{node.name}' (time first)")
    inits = {t.name for t in model.graph.initializer}
    # the outputs' batch; a first axis named like time is not one (brainmaze's seizure model, real models 46: 'x'
    # [batch, 100, time] beside time-major 'probs' [time, batch, 4] was read as samples on axis 2 and refused)
    leading = {d for d in (o.type.tensor_type.shape.dim[0].dim_param for o in model.graph.output
                           if o.type.HasField("tensor_type") and o.type.tensor_type.shape.dim)
               if d and (_BATCH.search(d) or not _TIME.search(d))}
    # a fixed first axis before the outputs' batch reads as samples on axis 1 only where no input leads with the
    # batch: a recurrent state [2, N, H] beside audio [N, T] stays as it was (rule 2 reads such files a feed each)
    columns = not any(dim_params(vi)[:1] and dim_params(vi)[0] in leading for vi in model.graph.input
                      if vi.name not in inits)
    for vi in model.graph.input:
        dims = dim_params(vi)  # an optional tensor's own; a sequence's stacking axis first (no name: never time)
        if vi.name not in inits and len(dims) > 1 and _TIME.search(dims[0]) and any(_BATCH.search(d) for d in dims[1:]):
            out.setdefault(vi.name, f"its declared dims are {dims}")
        elif (vi.name not in inits and len(dims) > 1 and (dims[0] or (columns and _fixed_first(vi) > 1))
              and dims[0] not in leading and not _BATCH.search(dims[0])):  # an axis 0 named like a batch is one
            # sweep 20: 'rows' [T, N, 28] beside 'logits' [N, 10]; 'T' reads as no time word, so the file was cut
            # along T into "28 samples" and onnxruntime refused the feeds; sweep 38: samples as columns, 'input'
            # [784, N] beside 'logits' [N, 10], was "a fixed first axis of 784 ... no batch axis", one feed a file
            batch = next((d for d in dims[1:] if d in leading), None)
            if batch is not None:
                shown = [d or _fixed_first(vi) for d in dims[:1]] + dims[1:]
                out.setdefault(vi.name, f"its declared dims are {shown} and the outputs' batch '{batch}' is on axis "
                                        f"{dims.index(batch)}")
    graph_inputs = {vi.name for vi in model.graph.input} - inits
    return {k: v for k, v in out.items() if k in graph_inputs}


def _fixed_first(vi: onnx.ValueInfoProto) -> int:
    """The fixed size of a tensor input's first axis, 0 when it has none (symbolic, unnamed or no shape)."""
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    dims = tt.shape.dim if tt is not None and tt.HasField("shape") else []
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") else 0


STATE_PATH = {"Slice", "Split", "Gather", "Identity", "Cast"}  # ops a state passes through on its way to a cell


def single_batch_states(model: onnx.ModelProto) -> dict[str, str]:
    """Inputs that are an LSTM/GRU/RNN's initial state with a fixed batch of 1 ([layers x directions, 1, H], every dim
    fixed, reaching the cell's initial_h or initial_c through STATE_PATH ops), with the cell they feed. Such a
    model takes one sample per feed whatever its other inputs declare: speechmos's AECMOS ('input' [batch_size, 3,
    frames, 160], 'h0' [4, 1, 64]) failed on the stacked file inspect's own line wrote ("Input initial_h must have
    shape {2,200,64}", sweep 18)."""
    users: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            users.setdefault(name, []).append((node, k))
    inits = {t.name for t in model.graph.initializer}
    found = {}
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else []
        if vi.name in inits or len(dims) != 3 or not all(d.HasField("dim_value") for d in dims) or dims[1].dim_value != 1:
            continue
        todo, seen = [vi.name], set()
        while todo and vi.name not in found:
            name = todo.pop()
            for node, k in users.get(name, []):
                if node.op_type in RECURRENT and node.domain in ("", "ai.onnx") and k in (5, 6):
                    found[vi.name] = f"{node.op_type} '{node.name}'"
                elif node.op_type in STATE_PATH and k == 0 and id(node) not in seen:
                    seen.add(id(node))
                    todo.extend(node.output)
    return found


def feed_reason(files: list[tuple[str, dict[str, tuple]]], specs: list[InputSpec],
                time_major: dict[str, str] | None = None) -> str | None:
    """Why (file, {array: shape}) sources must be read one feed at a time, or None for stacks of samples."""
    names = [s.name for s in specs]
    for spec in specs:  # its array's first axis lists the sequence's elements, not samples: nothing to cut
        if spec.kind == "sequence":
            return (f"input '{spec.name}' is a sequence of tensors, its elements stacked on its array's first axis "
                    "(a file is one feed)")
    for name, why in (time_major or {}).items():
        if name in names:
            return f"input '{name}' holds its samples on axis 1 (time-major, or samples as columns): {why}"
    seen: dict[str, tuple[tuple, str]] = {}
    for where, shapes in files:
        ins = {n: shapes[n] for n in names if n in shapes}
        scalars = [n for n, s in ins.items() if len(s) == 0]
        if scalars:
            return f"'{where}': input(s) {scalars} are scalars"
        firsts = {n: s[0] for n, s in ins.items()}
        if len(set(firsts.values())) > 1:
            return f"'{where}': the inputs' first axes differ ({firsts})"
        for n, s in ins.items():
            if n in seen and seen[n][0][1:] != s[1:]:  # both shapes whole (it said "[?, 8, 44]": sweep 28)
                return f"input '{n}' has shape {list(s)} in '{where}' and {list(seen[n][0])} in '{seen[n][1]}'"
            seen.setdefault(n, (s, where))
    for spec in specs:
        first = spec.shape[0] if spec.shape else None
        if first is None or first < 2 or not seen.get(spec.name):
            continue
        if all(len(shapes.get(spec.name, ())) == len(spec.shape) and shapes[spec.name][0] == first
               for _, shapes in files):
            return (f"input '{spec.name}' declares a fixed first axis of {first} ({_dims(spec.shape)}) that every "
                    "file fills whole: no batch axis (or a fixed batch), one feed per file")
    return None


def time_major_stack(shapes: dict[str, tuple], specs: list[InputSpec], time_major: dict[str, str] | None) -> int | None:
    """N when one file (or dict of arrays) stacks N > 1 samples of a time-major model: every time-major input at its
    declared rank with N on axis 1, every other input (not a scalar) with N on axis 0, and any further array (its
    labels) of first axis N. The file is then N feeds of one sample each ([T, 1, C] and [1, ...]), so that the
    search can split, retrain and decide on its samples; read as one feed, sweep 20's time-major transformer (a file
    of 2,000 rows [28, 2000, 28]) could only be pruned one-shot on the samples it was judged on, and changed 1.25% of
    held-out predictions against 1 pp. None otherwise (the file is one feed, as before)."""
    if not time_major or not any(s.name in time_major for s in specs):
        return None
    counts = set()
    for s in specs:
        shape = shapes.get(s.name)
        if shape is None or len(shape) != len(s.shape) or not shape:
            return None
        axis = 1 if s.name in time_major else 0
        if len(shape) <= axis:
            return None
        counts.add(shape[axis])
    if len(counts) != 1:
        return None
    (n,) = counts
    others = [shape for name, shape in shapes.items() if name not in {s.name for s in specs}]
    if n < 2 or any(not shape or shape[0] != n for shape in others):
        return None
    return n


def stacked_batches(shapes: dict[str, tuple], specs: list[InputSpec]) -> int | None:
    """B when a file that holds scalar inputs (so it is read feed by feed) stacks more samples of the other inputs
    than the fixed batch B their declared shapes take (the rows after the last whole batch are left out, said): the file is then k feeds of B rows each, its
    scalars in every one (a helper's If model with a bool flag and an input fixed at [1, 20]: 189 stacked rows were
    "one feed", refused against [1, 20]). None otherwise (a dynamic batch takes the file as one feed)."""
    stacked = [s for s in specs if s.shape and s.name in shapes and len(shapes[s.name]) == len(s.shape)]
    if not stacked or not any(s.name in shapes and not shapes[s.name] for s in specs if not s.shape):
        return None
    batches = {s.shape[0] for s in stacked}
    rows = {shapes[s.name][0] for s in stacked}
    if len(batches) != 1 or len(rows) != 1:
        return None
    (b,), (n,) = batches, rows
    return b if b is not None and b >= 1 and n > b else None


def own_axis_inputs(model: onnx.ModelProto | None) -> dict[str, str]:
    """Inputs whose declared axis 0 is a symbol of its own, not the batch ({name: its symbol}): the batch is the
    symbol that leads an output and an input, and this input's axis 0 is another symbol that an output carries (the
    rule inspect's line follows, converter/inspect._shared_inputs; tf2onnx's 'unk__1' and 'unk__2' on two inputs,
    no output carrying the second, are two names for one batch).
    A DeepONet's query points 'y' [P, 1] beside its functions 'u' [N, 40] and its output 'G' [N, P], or a zero-shot
    classifier's class embeddings 'classes' [C, 32] beside 'x' [N, 1, 28, 28] and 'logits' [N, C]: such an input
    is the same for every sample of a file (`shared_stack` holds it whole in every sample's feed). Sweep 54b: a
    calibration file of 440 functions beside 10 query points was one feed ("the inputs' first axes differ"), pruned
    one-shot on the samples that judged it, with no retraining and no held-out check."""
    if model is None:
        return {}
    inits = {t.name for t in model.graph.initializer}
    firsts = {vi.name: (dim_params(vi)[:1] or [""])[0] for vi in model.graph.input if vi.name not in inits}
    outputs = [dim_params(o) for o in model.graph.output]
    batch = next((o[0] for o in outputs if o and o[0] and o[0] in firsts.values()), None)
    carried = {d for o in outputs for d in o if d}
    return {} if batch is None else {name: f for name, f in firsts.items() if f and f != batch and f in carried}


def shared_stack(shapes: dict[str, tuple], specs: list[InputSpec], least: int = 2,
                 time_major: dict[str, str] | None = None,
                 own_axis: dict[str, str] | None = None) -> tuple[int, list[str]] | None:
    """(N, the shared inputs) when a file's inputs differ on their first axis only because some hold one value for
    the whole file: each such array has exactly its input's declared shape, every dim of it fixed (a scalar, or the
    [1, 1, 1, 1] statistics tf2onnx makes graph inputs of a Keras Normalization layer), while every other input
    stacks N > 1 samples on a symbolic first axis at its declared rank (and any further array, the labels, has N
    rows). Each sample is then a feed, the shared arrays whole in every one. Read as one feed, sweep 31's Keras
    model (two such statistics beside 250 images) could only be pruned one-shot, on the samples that judged it
    (1.00x). A time-major input stacks its samples on axis 1 ([T, N, C]: its axis 0 is time, never cut). `least`:
    the fewest samples that make a stack (a folder's file may hold one: `least=1`). An input of `own_axis`
    (`own_axis_inputs`: its axis 0 a symbol other than the batch) is shared too when its array has the declared rank
    and every fixed dim. None otherwise."""
    shared, counts = [], set()
    for s in specs:
        shape = shapes.get(s.name)
        axis = 1 if s.name in (time_major or {}) else 0
        if shape is None or s.kind != "tensor":
            return None
        if all(d is not None for d in s.shape) and tuple(shape) == tuple(s.shape):
            shared.append(s.name)
        elif (s.name in (own_axis or {}) and len(shape) == len(s.shape)
              and all(d is None or d == k for d, k in zip(s.shape, shape))):
            shared.append(s.name)
        elif len(s.shape) > axis and s.shape[axis] is None and len(shape) == len(s.shape):
            counts.add(shape[axis])
        else:
            return None
    if not shared or len(counts) != 1:
        return None
    (n,) = counts
    names = {s.name for s in specs}
    if n < least or any(not shape or shape[0] != n for name, shape in shapes.items() if name not in names):
        return None
    return n, shared


ROWS_APART_PROBE = 4  # rows run together and one at a time by `rows_interact`
ROWS_APART_RTOL = 1e-4  # of an output's largest magnitude: float32 batching differs by ~1e-6, a carried state by ~1
ROWS_APART_BYTES = 512 << 20  # no probe past this many stored weight bytes (converter/streaming.STREAM_BYTES)


def _stored_bytes(model) -> int:
    """The main graph's initializer bytes, held or external (their shapes and types: nothing is read)."""
    return sum(int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in model.graph.initializer if t.data_type != onnx.TensorProto.STRING)


def rows_interact(model, arrays: dict, specs: list[InputSpec], shared, time_major: dict[str, str]) -> str | None:
    """Why the stacked rows of `arrays` (a file the readers would cut into samples: batches, or one-sample feeds
    beside `shared` arrays held whole) are not independent samples of `model`, or None when they are (or cannot be
    told apart). Up to ROWS_APART_PROBE rows are run together and one at a time in onnxruntime; every float output
    must be the rows' own outputs stacked (k rows a sample, also one target's after another's), one value every run
    gives alike, or an [N, N] relation of the rows (the Evaluator keeps such batches whole). silero's sequence
    VAD ('input' [sequence_length, 576] beside its LSTM state 'h'/'c' [1, 1, 128]) reads axis 0 as chunks in time,
    the state carried from each to the next: cut into chunks that each started from the zero state, a run judged
    only a sequence's first chunk, said "budget met" at 1.36x, and changed 53 of 180 speech decisions on the whole
    sequences the files held."""
    from onnxprune.passes.opfacts import BATCH_DEPENDENT_OPS

    if model is None:
        return None
    if any(s.name not in arrays or np.ndim(arrays[s.name]) == 0 for s in specs if s.name not in shared):
        return None  # the reader's own checks say what is missing
    if any(n.op_type in BATCH_DEPENDENT_OPS for n in model.graph.node):
        return None  # rows a batch's range quantizes together: evaluated a sample at a time already
    if _stored_bytes(model) > ROWS_APART_BYTES:
        return None  # a session of a model this large is no probe: its data are taken as they come
    stacked = [s for s in specs if s.name not in shared]
    rows = {arrays[s.name].shape[1 if s.name in time_major else 0] for s in stacked if s.name in arrays}
    if len(rows) != 1:
        return None
    k = min(rows.pop(), ROWS_APART_PROBE)
    if k < 2:
        return None
    key = _probe_key(model, arrays, specs, shared, time_major, k)
    if key not in _ROWS_VERDICTS:  # a run opens its data several times (parts, evaluators): one probe a run
        _ROWS_VERDICTS[key] = _rows_interact(model, arrays, specs, shared, time_major, k)
    return _ROWS_VERDICTS[key]


_ROWS_VERDICTS: dict[tuple, str | None] = {}
_PROBED: list[frozenset[str] | None] = [None]  # the outputs that decide, when --metric names them (probed_outputs)


@contextlib.contextmanager
def probed_outputs(names):
    """Only the outputs `names` (None: every output) decide whether stacked rows are samples: --metric naming the
    outputs that count, entered for a run by pipeline.run. Sweep 49: a classifier exported with its batch's mean
    cross-entropy beside the logits ('loss' [], the labels an input) made its 440 images one feed under --metric
    logits=agreement too, and the input model was kept ("1 feeds cannot certify --max-loss 1 for output 'logits'").
    An output no one scores need not follow the rows; the runs give it the same batches before and after."""
    before = _PROBED[0]
    _PROBED[0] = None if names is None else frozenset(names)
    try:
        yield
    finally:
        _PROBED[0] = before


def _probe_key(model, arrays: dict, specs: list[InputSpec], shared, time_major: dict[str, str], k: int) -> tuple:
    """What a verdict depends on: the graph's ops and names, and the first `k` rows probed (their bytes)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    for node in model.graph.node:
        digest.update(f"{node.op_type}:{node.name};".encode())
    for s in specs:
        a = np.ascontiguousarray(arrays[s.name] if s.name in shared else arrays[s.name][:, :k]
                                 if s.name in time_major else arrays[s.name][:k])
        digest.update(f"{s.name}{a.shape}{a.dtype.str}".encode())
        digest.update(a.tobytes())
    return (digest.hexdigest(), tuple(o.name for o in model.graph.output), _PROBED[0])


def _rows_interact(model, arrays: dict, specs: list[InputSpec], shared, time_major: dict[str, str],
                   k: int) -> str | None:
    def cut(lo: int, hi: int) -> dict:
        feed = {}
        for s in specs:
            a = np.asarray(arrays[s.name])
            if s.dtype is not None and a.dtype != s.dtype and np.can_cast(a.dtype, s.dtype, "same_kind"):
                a = a.astype(s.dtype)
            feed[s.name] = a if s.name in shared else a[:, lo:hi] if s.name in time_major else a[lo:hi]
        return feed

    try:
        from onnxprune.calibration.runtime import make_session

        session = make_session(model)
    except Exception as exc:  # noqa: BLE001 - a model onnxruntime cannot open: the cut stands, its runs will say
        log.debug("rows_interact: not probed (%s)", exc)
        return None
    try:
        together = session.run(None, cut(0, k))
        alone = [session.run(None, cut(i, i + 1)) for i in range(k)]
    except Exception as exc:  # noqa: BLE001 - a cut the model cannot run
        # rows on an axis fixed or named as a batch are samples by the model's own declaration: a cut failing there
        # is the model's failure (a Reshape to [-1, 3] of [N, 4]), said as such by the runs, not rows read together
        axes = {s.name: 1 if s.name in time_major else 0 for s in specs if s.name not in shared}
        declared = {vi.name: vi.type.tensor_type.shape.dim for vi in model.graph.input if vi.name in axes}
        batch = any(len(dims) > axes[name] and (dims[axes[name]].HasField("dim_value")
                                                or _BATCH.search(dims[axes[name]].dim_param or ""))
                    for name, dims in declared.items())
        return None if batch else _whole_only(session, cut, exc)
    names = [o.name for o in session.get_outputs()]
    for j, name in enumerate(names):
        if _PROBED[0] is not None and name not in _PROBED[0]:
            continue  # --metric leaves it out: it decides nothing, about the rows neither
        whole = together[j]
        parts = [a[j] for a in alone]
        if not isinstance(whole, np.ndarray) or not all(isinstance(p, np.ndarray) for p in parts):
            continue  # a sequence or map output: the tensors beside it decide
        if not np.issubdtype(whole.dtype, np.floating):
            continue  # labels and ids: a near tie may flip between batch sizes; the float outputs decide
        part = parts[0]
        grown = [ax for ax in range(whole.ndim) if part.ndim == whole.ndim and part.shape[ax] != whole.shape[ax]]
        if part.ndim == whole.ndim and len(grown) > 1 and all(whole.shape[ax] == k * part.shape[ax] for ax in grown):
            continue  # [N, N]: it relates the rows to each other (a CLIP's logits), which the Evaluator keeps whole
        axis = grown[0] if len(grown) == 1 and whole.shape[grown[0]] == k * part.shape[grown[0]] else None
        if axis is None:  # one value for all the rows: it must not depend on which rows ran
            same = all(p.shape == whole.shape and _close(p, whole) for p in parts)
            if not same:
                hint = (" (a batch's loss or statistic? --metric naming only the outputs that count, OUTPUT=KIND, "
                        "leaves it out and the rows samples)") if len(names) > 1 and _PROBED[0] is None else ""
                return (f"output '{name}' ({list(whole.shape)} for {k} rows) does not follow the rows and changes "
                        f"with them{hint}")
            continue
        joined = np.concatenate(parts, axis=axis)
        m = part.shape[axis]  # rows a sample, one target's after another's when `whole` is target-major
        crossed = np.moveaxis(whole, axis, 0).reshape(m, k, -1).transpose(1, 0, 2).reshape(
            np.moveaxis(joined, axis, 0).shape) if m > 1 else None
        if not _close(joined, whole) and not (crossed is not None and _close(np.moveaxis(joined, axis, 0), crossed)):
            return (f"output '{name}' of {k} rows run together differs from the rows run one at a time (the model "
                    "reads that axis as a sequence, or mixes its rows)")
    return None


def _whole_only(session, cut, exc: Exception) -> str | None:
    """Why the rows are not samples when a cut of them fails in onnxruntime but all of them run together (a
    reason), or None when the whole file fails too (a fixed batch, bad data: the cut stands, its runs will say).
    madmom's beat TCN reads 'input' [frames, 81] as one spectrogram (Unsqueeze to [1, 1, T, 81], a 3x3 Conv without
    padding): 4 rows or 1 failed the probe, the rows were taken for samples, and retraining fed the torch bridge 2
    frames ("Conv node 'conv_7' failed in the torch bridge: ... Kernel size can't be greater than actual input
    size")."""
    log.debug("rows_interact: a cut of the rows does not run (%s)", exc)
    try:
        session.run(None, cut(None, None))
    except Exception:  # noqa: BLE001 - not even the whole file runs
        return None
    from onnxprune.calibration.runtime import ort_reason

    return f"the model runs them together but not a few of them alone ({ort_reason(exc)[:200]})"


ROWS_APART_STRAYS = 1e-3  # of an output's values: the share that may pass ROWS_APART_RTOL alone (see `_close`)


def _close(a, b) -> bool:
    """Whether `a` (the rows run together) is `b` (run one at a time) up to float32 batching: every value within
    ROWS_APART_RTOL of the output's largest magnitude, or, where a few values pass it, at most ROWS_APART_STRAYS of
    them and the whole within ROWS_APART_RTOL in relative L2. An op that is ill-conditioned somewhere magnifies
    batching's ~1e-6 there: afis' LEADER minutiae net (real models 48) ends in an atan2 of two tiny channels over the
    background, and 51 of its 1,048,576 direction values moved by up to 0.0104 (of pi) between 4 rows together and
    alone (relative L2 1.1e-5), so its 150 fingerprints were taken for rows run together, one feed, which
    onnxruntime ran at once until the kernel killed it (22 GB). Rows the model reads together (a sequence, batch
    statistics) move most values, by far more."""
    if a.shape != b.shape:
        return False
    if not np.issubdtype(b.dtype, np.floating):
        return bool(np.array_equal(a, b))
    a, b = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(b)  # the same inf or NaN in both is no change (sweep 49: a MADE's log-likelihood, NaN
    # where the export's log(sigmoid) underflows, made its 440 images one feed and kept the input model)
    if not np.array_equal(finite, np.isfinite(a)) or not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return False
    a, b = a[finite], b[finite]
    scale = float(np.abs(b).max()) if b.size else 0.0
    apart = np.abs(a - b) > ROWS_APART_RTOL * max(scale, 1e-30)
    if not apart.any():
        return True
    if apart.sum() > ROWS_APART_STRAYS * apart.size:
        return False
    return bool(np.linalg.norm(a - b) <= ROWS_APART_RTOL * max(float(np.linalg.norm(b)), 1e-30))


def _dims(shape: tuple) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class FeedChecker:
    """One feed against the declared inputs: names, rank, every fixed dim, dtype (safe casts), finite values."""

    def __init__(self, specs: list[InputSpec], labels_name: str | None, chunk_checker, reason: str | None = None):
        self.specs, self.labels_name = specs, labels_name
        self._chunk = chunk_checker  # readers._ChunkChecker: names, casts and NaN checks shared with stacks
        self.reason = reason  # why the source is read a feed at a time (feed_reason), said when a feed is refused

    def __call__(self, arrays: dict[str, np.ndarray], where: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        arrays = dict(arrays)
        labels = arrays.pop(self.labels_name, None) if self.labels_name else None
        self._chunk._names(arrays, where)
        feed = {}
        for s in self.specs:
            arr = arrays[s.name]
            if arr.ndim != len(s.shape) or any(d is not None and d != a for d, a in zip(s.shape, arr.shape)):
                declared = "[" + ", ".join("?" if d is None else str(d) for d in s.shape) + "]"
                raise CalibrationError(f"'{where}': array '{s.name}' has shape {list(arr.shape)}, model input "
                                       f"'{s.name}' expects {declared} (the file is one feed, used as is"
                                       f"{': ' + self.reason if self.reason else ''}); "
                                       f"{_feed_hint(arr.shape, s.shape)}")
            self._chunk._structure_dtype(arr, s, where)
            feed[s.name] = np.require(self._chunk._value(arr, s, where), requirements="C")  # keeps scalars 0-d
        return feed, None if labels is None else np.asarray(labels)


class FeedSource:
    """The feeds of a folder of .npz files or of a list of feed dicts, in order; `load(i)` reads feed i."""

    def __init__(self, items: list, load: Callable[[object], dict[str, np.ndarray]], where: Callable[[object], str]):
        self.items, self._load, self._where = items, load, where

    def __len__(self) -> int:
        return len(self.items)

    def feeds(self, check: FeedChecker, limit: int | None, every: int | None,
              holdout: bool, groups=None) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Each feed, or with `every` one side of the split: feed i held out when i % every == 0, or with `groups`
        (each feed's group: a greedy decoder's calls, a stream each) when groups[i] % every == 0."""
        for i, item in enumerate(self.items[:limit]):
            g = groups[i] if groups is not None and i < len(groups) else i
            if every and (g % every == 0) != holdout:
                continue
            yield check(self._load(item), self._where(item))


def reorder_hint(have: tuple, want: tuple) -> str:
    """What fixes a sample shape: a transpose when it holds the declared sizes in another order (images stored
    height x width x channels for a channels-first model), where a reshape would scramble the values; else a reshape."""
    sizes, axes = list(have[1:]), []
    if len(have) == len(want) and all(d is not None for d in want[1:]):
        for d in want[1:]:
            free = [i for i, a in enumerate(sizes) if a == d and i + 1 not in axes]
            axes.append(free[0] + 1 if free else -1)
    if not axes or -1 in axes:
        return "reshape the data to match."
    order = ", ".join(str(a) for a in [0] + axes)
    return (f"it holds the same sizes in another order: np.transpose(x, ({order})) puts them in the model's order "
            "(a reshape would scramble the values).")


def _feed_hint(have: tuple, want: tuple) -> str:
    """reorder_hint for a feed used as is, whose first axis must fit too."""
    if want and want[0] is not None and (not have or want[0] != have[0]):
        return "reshape the data to match."
    return reorder_hint(have, want)
