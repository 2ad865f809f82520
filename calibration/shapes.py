"""The shapes random inputs are drawn at, chosen once per run.

Without real data onnxprune invents inputs (seeded noise): for verification, for the scan on `--data random` and
for latency. A declared symbolic dim must then get a size. Batch-like dims get `DEFAULT_DYNAMIC_DIM` (the caller's
batch); every other symbolic dim (an image's height and width, a sequence or audio length) gets the first size of
`SIZE_LADDER` the model runs at in onnxruntime:

    2 → 32 → 64 → 224      (a 3x3 stride-2 stack needs H, W >= 16; a detector that upsamples and concatenates
                            needs multiples of 32; a reflect-padded STFT needs more samples than its padding)

One session, at most one run per size, before any pruning; the size is said in one note. A model that runs at none
of them fails at once, naming the inputs with their declared shapes and both ways out (`--input-shape NAME=DIMS`
with the real names, `--data`). Which symbolic dims are batch-like (kept small):

  1. axis 0 of an input; axis 1 instead of a time-major one (`calibration.feeds.time_major_inputs`);
  2. a dim named like a batch ('batch', 'N'), or named like a dim of rule 1 (the inputs share one batch);
  3. an unnamed axis 1 that is the only symbolic dim of an input of rank >= 3 with a fixed axis 0 (a recurrent
     state [2, N, H]).

A dim named by an expression of symbols (torch.onnx's dynamo: 'P + 1' beside 'P', '8*T8 + 8') is drawn at
that expression's value, its symbols at the size tried. Dims given with `--input-shape` are used as given and
never probed. A scalar input (a sample rate, a flag) has no
shape to choose, and its random value decides which branch the model takes: it is said in the note, and in the
error, that only real samples (--data) stand in for it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxprune.calibration.runtime import (DEFAULT_DYNAMIC_DIM, DEFAULT_INT_HIGH, InputSpec, input_specs,
                                           make_session, ort_reason, random_feeds, with_shapes)
from onnxprune.calibration.value_types import dim_expression, dim_params
from onnxprune.errors import ModelError

log = logging.getLogger(__name__)

SIZE_LADDER = (DEFAULT_DYNAMIC_DIM, 32, 64, 224)  # sizes tried for the non-batch symbolic dims, in order
MAX_PROBE_ELEMENTS = 2**24  # a size giving any input more elements than this (at batch 2) is not tried

_BATCH_NAME = re.compile(r"batch|^n$", re.I)
_PLACEHOLDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,11}$")  # a dim name short enough to stand in a flag


@dataclass(frozen=True)
class RandomShapes:
    """Where random inputs are drawn: `shapes` maps an input to its dims (None: a batch-like dim, the caller's
    batch), the --input-shape dims included; `size` is the size the other symbolic dims got (None: there were
    none); `note` says what a user should know (a size other than 2, a scalar drawn at random), else None."""

    shapes: dict[str, tuple]
    size: int | None = None
    note: str | None = None


def batch_axes(model: onnx.ModelProto) -> dict[str, set[int]]:
    """Input name -> the axes of its symbolic dims that are batch-like (rules 1-3 of the module docstring)."""
    from onnxprune.calibration.feeds import time_major_inputs

    time_major = time_major_inputs(model)
    params = _dim_params(model)
    specs = input_specs(model)
    axes: dict[str, set[int]] = {s.name: set() for s in specs}
    for s in specs:
        first = 1 if s.name in time_major and len(s.shape) > 1 else 0
        if s.shape and s.shape[first] is None:
            axes[s.name].add(first)
    named = {params[s.name][a] for s in specs for a in axes[s.name] if params[s.name][a]}
    for s in specs:
        symbolic = [a for a, d in enumerate(s.shape) if d is None]
        for a in symbolic:
            name = params[s.name][a]
            if name and (name in named or _BATCH_NAME.search(name)):
                axes[s.name].add(a)
        if len(s.shape) >= 3 and s.shape[0] is not None and symbolic == [1] and not params[s.name][1]:
            axes[s.name].add(1)
    return axes


def choose_random_shapes(model: onnx.ModelProto, shapes: dict[str, tuple] | None = None, *, seed: int = 0,
                         session: ort.InferenceSession | None = None) -> RandomShapes:
    """The shapes every random input of a run is drawn at: the first size of SIZE_LADDER for the non-batch
    symbolic dims that onnxruntime runs the model at (`session`, or one built here with optimisations off).

    Raises ModelError naming the inputs, their declared shapes and --input-shape/--data when none runs. When the
    model has no such dim, when even size 2 would exceed MAX_PROBE_ELEMENTS, or when onnxruntime cannot load the
    model (the verifier says why, by name), nothing is probed and only the --input-shape dims are returned."""
    specs = with_shapes(input_specs(model), shapes)  # a bad --input-shape is a ConfigError here, before any work
    given = {name: tuple(dims) for name, dims in (shapes or {}).items()}
    batch = batch_axes(model)
    free = {s.name: [a for a, d in enumerate(s.shape) if d is None and a not in batch[s.name]] for s in specs}
    scalars = [s for s in specs if not s.shape]
    scalar_note = _scalar_note(scalars)
    if not any(free.values()):
        return RandomShapes(given, None, scalar_note)
    params = _dim_params(model)
    candidates = [(size, _at(specs, batch, free, size, params)) for size in SIZE_LADDER]
    candidates = [(size, c) for size, c in candidates if _elements(c) <= MAX_PROBE_ELEMENTS]
    if not candidates:  # a crafted huge fixed dim: nothing is allocated here, the verifier refuses it by name
        return RandomShapes(given, None, scalar_note)
    if session is None:
        try:
            session = make_session(model, optimize=False)
        except Exception as exc:  # the verifier's load reports it, with what to do
            log.debug("random input shapes not probed: onnxruntime cannot load the model (%s)", ort_reason(exc))
            return RandomShapes(given, None, scalar_note)
    size, chosen, failures = _first_that_runs(session, model, seed, given, candidates)
    if size is None:
        raise ModelError(_no_size_fits(model, specs, batch, free, scalars, failures))
    note = None
    if failures:
        note = (f"random inputs are drawn at {_show(chosen, specs)}: onnxruntime cannot run the model with its "
                f"symbolic dims at {', '.join(str(s) for s, _ in failures)} ({_clip(failures[0][1], 160)}); pass "
                "--input-shape or --data for the shapes it was made for")
    note = "; ".join(n for n in (note, scalar_note) if n) or None
    if note:
        log.info(note)  # the run's notes show it once; a caller without notes says it itself
    return RandomShapes(chosen, size, note)


def _first_that_runs(session, model, seed, given, candidates) -> tuple[int | None, dict, list[tuple[int, str]]]:
    """(size, shapes) of the first candidate onnxruntime runs (None, {} when none does), and why each before failed."""
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a size that fails is expected here, not news for onnxruntime's log
    names = [o.name for o in session.get_outputs()]
    failures: list[tuple[int, str]] = []
    for size, dims in candidates:
        try:
            session.run(names, random_feeds(model, seed=seed, shapes={**given, **dims}), quiet)
        except Exception as exc:
            failures.append((size, _brief(exc)))
            log.debug("random inputs at size %d: onnxruntime refuses them (%s)", size, failures[-1][1])
            continue
        return size, {**given, **dims}, failures
    return None, {}, failures


def _at(specs: list[InputSpec], batch, free, size: int, params: dict | None = None) -> dict[str, tuple]:
    """The dims of every input with a free symbolic dim, that dim at `size`, batch-like ones left None. A dim whose
    name is arithmetic of other names (torch dynamo's "P + 1" for an attention mask beside a past of length P,
    "2*s0", "s0//2") is that arithmetic at `size` for each name it reads (sweep 29's Qwen2 decoding step: a mask of
    224 beside a past of 224 ran at no size, "GatherND ... invalid index found, index = 224")."""
    params = params or {}
    batch_names = {params[s.name][a] for s in specs for a in batch[s.name] if a < len(params.get(s.name, ()))}

    def value(s, a):
        names = params.get(s.name, ())
        return dim_expression(names[a], size, batch_names) if a < len(names) else size

    return {s.name: tuple(value(s, a) if a in free[s.name] else (None if a in batch[s.name] else d)
                          for a, d in enumerate(s.shape))
            for s in specs if free[s.name]}


def _brief(exc: BaseException) -> str:
    """The innermost failing node of an onnxruntime error ("Conv 'conv2d': Invalid input shape: {2,2}")."""
    reason = " ".join(str(exc).split())
    nodes = list(re.finditer(r"running (\w+) node\. Name:'([^']*)' Status Message: ", reason))
    if nodes:
        last = nodes[-1]
        reason = f"{last.group(1)} '{last.group(2)}': {reason[last.end():]}"
    reason = re.sub(r"\S+\.(?:h|cc|cpp):\d+ .*?\[ONNXRuntimeError\] : \d+ : \w+ : ", "", reason)
    reason = re.sub(r"\S+\.(?:h|cc|cpp):\d+ [^(]*\([^)]*\)\s*", "", reason)  # a C++ source location
    reason = re.sub(r"^(\w+ '[^']*': ).*? was false\.\s*", r"\1", reason)  # the failed check, said again in words
    return reason if nodes else ort_reason(exc)


def _clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut after a sentence when one ends late enough."""
    if len(text) <= limit:
        return text
    end = text.rfind(". ", limit // 3, limit)
    return text[:end] if end > 0 else text[:limit - 1] + "…"


def _elements(dims_by_input: dict[str, tuple]) -> float:
    return max((float(np.prod([DEFAULT_DYNAMIC_DIM if d is None else d for d in dims], dtype=np.float64))
                for dims in dims_by_input.values()), default=0.0)


def _dim_params(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Input name -> the dim_param of each axis ('' when unnamed or fixed)."""
    return {vi.name: dim_params(vi) for vi in model.graph.input}


def _show(shapes: dict[str, tuple], specs: list[InputSpec]) -> str:
    return ", ".join(f"'{s.name}' [{', '.join('N' if d is None else str(d) for d in shapes[s.name])}]"
                     for s in specs if s.name in shapes)


def _scalar_note(scalars: list[InputSpec]) -> str | None:
    if not scalars:
        return None
    names = ", ".join(f"'{s.name}' ({s.dtype})" for s in scalars)
    drawn = [f"[0, {DEFAULT_INT_HIGH})" if np.issubdtype(s.dtype, np.integer) else "noise" for s in scalars]
    return (f"scalar input(s) {names} drawn at random ({', '.join(drawn)}): random values cannot stand in for a "
            "sample rate or a flag, so only the paths they take are verified; pass real samples with --data")


def _no_size_fits(model, specs, batch, free, scalars, failures) -> str:
    """One line: what failed at which sizes, the declared shapes, and the flags that fix it with the real names."""
    params = _dim_params(model)
    def dim(s: InputSpec, a: int, d) -> str:
        return str(d) if d is not None else params[s.name][a] or "?"

    declared = ", ".join(f"'{s.name}' [{', '.join(dim(s, a, d) for a, d in enumerate(s.shape))}]" for s in specs)
    placeholders: list[str] = []
    flags = []
    for s in specs:
        if not free[s.name] and not batch[s.name]:
            continue  # its shape is fixed; an input with only a batch is named too, its batch at 1 like the others
        dims = []
        for a, d in enumerate(s.shape):
            if a in free[s.name]:
                name = params[s.name][a] if _PLACEHOLDER.match(params[s.name][a] or "") else "?"
                placeholders.append(name)
                dims.append(name)
            else:
                dims.append("1" if a in batch[s.name] else str(d))
        flags.append(f"--input-shape {s.name}={','.join(dims)}")
    sizes = ", ".join(str(size) for size, _ in failures)
    shape_fix = " ".join(flags) + (f" (numbers in place of {', '.join(dict.fromkeys(placeholders))})"
                                   if placeholders else "")
    head = (f"onnxruntime cannot run the model on random inputs with its symbolic dims at {sizes} (declared: "
            f"{declared}): {_clip(failures[-1][1], 240)}")
    if scalars:
        names = ", ".join(f"'{s.name}'" for s in scalars)
        return (f"{head}; {names} {'is a scalar' if len(scalars) == 1 else 'are scalars'} that random values cannot "
                f"stand in for: pass real samples with --data (if only the shapes are wrong: {shape_fix}).")
    return f"{head}; pass the shape it takes with {shape_fix}, or real samples with --data."


# ---- the evaluation batch: sized so one batch's activations stay bounded ---------------------------------------
ACTIVATION_BYTES = 2 << 30  # one batch's activations (every tensor the graph computes, summed) at most this
MAX_BATCH = 64  # the evaluation batch when --batch-size is not given and activations are small


def activation_bytes(model: onnx.ModelProto, feeds: dict) -> int | None:
    """Bytes of every tensor the main graph computes on `feeds` (one batch as read), from onnx shape inference with
    the inputs fixed to the feeds' shapes: an upper bound of what onnxruntime holds at once (it frees a tensor
    after its last reader), None when shape inference cannot size the graph. Tensors it cannot size count 0."""
    sizes = activation_sizes(model, feeds)
    return None if sizes is None else sizes[0]


def activation_sizes(model: onnx.ModelProto, feeds: dict) -> tuple[int, int] | None:
    """(`activation_bytes`, the bytes of the largest of those tensors: what onnxruntime must hold at least)."""
    from onnx import TensorProto, helper, shape_inference

    probe = onnx.ModelProto()
    probe.ir_version, probe.producer_name = model.ir_version, model.producer_name
    probe.opset_import.extend(model.opset_import)
    graph = probe.graph
    graph.node.extend(model.graph.node)
    graph.output.extend(model.graph.output)
    for init in model.graph.initializer:  # shapes and small values (shape constants) only: no big raw data copied
        t = graph.initializer.add()
        t.name, t.data_type = init.name, init.data_type
        t.dims.extend(init.dims)
        if init.HasField("raw_data") and len(init.raw_data) <= 4096:
            t.raw_data = init.raw_data
        elif np.prod(init.dims, dtype=np.int64) <= 1024 and init.data_location != TensorProto.EXTERNAL:
            t.CopyFrom(init)
        else:  # its shape is what inference needs (an input of that shape); its value is never read for shapes
            del graph.initializer[-1]
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    names = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in names:
            continue
        value = feeds.get(inp.name)
        if value is None or not inp.type.HasField("tensor_type"):
            graph.input.append(inp)
            continue
        graph.input.append(helper.make_tensor_value_info(inp.name, inp.type.tensor_type.elem_type,
                                                         list(np.shape(value))))
    try:
        inferred = shape_inference.infer_shapes(probe, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - an estimate only: no cap rather than a failed run
        log.debug("activation size: shape inference failed: %s", exc)
        return None
    total = largest = 0
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name in names or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if not tt.HasField("shape") or any(d is None for d in dims):
            continue
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
        except Exception:  # noqa: BLE001 - strings and the like
            continue
        size = int(np.prod(dims, dtype=np.int64)) * itemsize
        total, largest = total + size, max(largest, size)
    return total, largest


def feed_memory(model: onnx.ModelProto, feeds: dict, where: str, available: int | None) -> str | None:
    """A feed read as it is cannot be cut into batches: the reason it cannot run here (CalibrationError's text) when
    its largest tensor alone passes the memory `available`, else None; a warning when all its tensors together pass
    it (onnxruntime frees a tensor after its last reader, so the sum is an upper bound). Real models 48's L1: a file
    that is one feed was run whole with no word of its size until the kernel killed the run."""
    from onnxprune.plain import nbytes

    sizes = activation_sizes(model, feeds) if available else None
    if not sizes:
        return None
    total, largest = sizes
    shapes = ", ".join(f"'{k}' {list(np.shape(v))}" for k, v in feeds.items())
    if largest > available:
        return (f"{where} ({shapes}) runs whole, as one feed, and its pass computes a tensor of {nbytes(largest)}, "
                f"more than the {nbytes(available)} of memory available: split it into smaller feeds (a folder of "
                ".npz files, one feed each, or one .npz of stacked samples), or run on a machine with more memory")
    if total > available:
        log.warning("%s (%s) runs whole, as one feed, and its pass computes %s of tensors in all, against %s of memory "
                    "available: onnxruntime frees tensors as it goes and may fit; if the run is killed, split it into "
                    "smaller feeds", where, shapes, nbytes(total), nbytes(available))
    return None


def evaluation_batch(model: onnx.ModelProto, feeds: dict, samples: int, *, limit: int = MAX_BATCH,
                     budget: int | None = None) -> tuple[int, float | None]:
    """(batch, activation bytes per sample): the most samples up to `limit` whose activations together stay within
    `budget`, from one batch of `samples` samples as read (`activation_bytes`); `limit` when they cannot be sized."""
    budget = ACTIVATION_BYTES if budget is None else budget
    total = activation_bytes(model, feeds)
    if not total or samples < 1:
        return limit, None
    per = total / samples
    return max(1, min(limit, int(budget // per))), per
