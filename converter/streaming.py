"""One-shot magnitude pruning in bounded memory: a model with GBs of external data, tensor by tensor.

The in-memory pipeline holds the model, copies of it (oracle, shrunk, encoded) and two sessions: ~9x the weight
bytes. Here the graph is read without its tensor data (`onnx.load(..., load_external_data=False)`), then for each
initializer in turn:

    mmap its bytes → mask (O(n): a partition finds the n-th magnitude) → write w·mask to OUTPUT.data → unmap

so one tensor is resident at a time (its mmap and one float32 copy of its magnitudes: 8 bytes per fp32 weight of
the largest tensor) besides the small graph. Tensors without a target are copied through in chunks. The output keeps
every initializer dense (pruned weights are 0.0) in external data, 4096-aligned so onnxruntime can map it.

Verification, one thing at a time: every written tensor is read back from disk and compared (CRC32) with what was
meant to be written, and its nonzeros counted against the mask; then the input model runs on seeded inputs, its
session is dropped, and the output runs on the same inputs (finite, same shapes); the relative change of the
outputs is reported. Left to the in-memory pipeline: sensitivity, retraining, dead-neuron removal and sparse
storage (the run's notes say so).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import secrets
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from onnxprune.calibration.runtime import make_session, output_names, random_feeds
from onnxprune.converter import modelio
from onnxprune.converter.plan import recipe_of
from onnxprune.errors import ConfigError, ModelError, ParityError
from onnxprune.passes.magnitude import Target, resolve_targets
from onnxprune.passes.weights import find_prunable, name_nodes

log = logging.getLogger(__name__)

STREAM_BYTES = 512 << 20  # external data at least this large takes the streaming path (one-shot runs)
CHUNK = 16 << 20  # bytes copied or written at a time
ALIGN = 4096  # external-data offsets (onnxruntime maps page-aligned data instead of copying it)


@dataclass
class StreamReport:
    layers: list[dict] = field(default_factory=list)
    bytes_read: int = 0
    bytes_written: int = 0
    params: int = 0
    nonzeros: int = 0
    nonzeros_before: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    output_change: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class StreamedResult:
    """What `convert` returns for a streamed run: the model is only on disk (`report["output"]`)."""

    report: dict
    model: None = None
    streamed: bool = True


def external_bytes(path: str | os.PathLike) -> int:
    """Bytes of external tensor data a model file refers to (0 when everything is inline or unreadable)."""
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # the pipeline's loader reports a broken file properly
        return 0
    total = 0
    for t in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(t):
            total += _nbytes(t)
    return total


def applies(path, options, threshold: int | None = None) -> bool:
    """Stream when the run is one-shot by flags (no scan, no retraining) and the model's external data is at least
    `threshold` bytes (default STREAM_BYTES)."""
    if not isinstance(path, (str, os.PathLike)) or options.retrain.iterations > 0 or options.budget.max_loss is not None:
        return False
    return external_bytes(path) >= (STREAM_BYTES if threshold is None else threshold)


def prune_file(source: str | os.PathLike, output: str | os.PathLike, options, progress=None) -> dict:
    """Prune `source` to `output` (+ `output`.data) tensor by tensor; returns the run's report."""
    progress = progress or (lambda *a, **k: None)
    source, output = Path(source), Path(output)
    t0 = time.perf_counter()
    model = _load_graph(source)
    inventory = find_prunable(model, with_macs=False)
    t = options.targets
    targets = resolve_targets(inventory, sparsity=t.sparsity, quality=t.quality, layers=t.layers, exclude=t.exclude)
    report = StreamReport(seconds={"load_graph": time.perf_counter() - t0})
    report.notes.append("streamed one-shot path (large external data): weights stored dense with zeros; no "
                        "dead-neuron removal or sparse storage")
    t = time.perf_counter()
    _check_paths(model, source, output)
    inits = {t.name for g in modelio._all_graphs(model.graph) for t in g.initializer}
    held = sorted(n for n in targets if n not in inits)
    if held:  # weights in Constant nodes are inline and small; this path rewrites initializers only
        report.notes.append(f"left dense (held in Constant nodes, not streamed): {', '.join(held[:10])}")
        targets = {n: t for n, t in targets.items() if n in inits}
    # written and verified in a staging folder beside the output, then moved into place: exit 0 means verified
    # before it was written (sweep 15: the output was renamed into place before onnxruntime had checked it, and an
    # interrupt in between left a new, unchecked output with exit 1)
    staging = output.parent / f".{output.name}.{secrets.token_hex(6)}.staging"
    try:
        with modelio._signals_held():
            staging.mkdir()
        staged = staging / output.name
        expected = _write(model, source.parent, staged, targets, report, progress)
        report.seconds["prune_write"] = time.perf_counter() - t
        t = time.perf_counter()
        _read_back(staged, expected)
        report.seconds["read_back"] = time.perf_counter() - t
        t = time.perf_counter()
        report.output_change = _run_both(source, staged, model, options, report.notes)
        report.seconds["verify_onnxruntime"] = time.perf_counter() - t
        with modelio._signals_held():  # the data and the graph that points into it land together
            os.replace(staging / (output.name + ".data"), output.parent / (output.name + ".data"))
            os.replace(staged, output)
    except OSError as exc:  # a full disk, a folder that stopped taking files: the documented message, exit 2
        raise modelio._write_failed(output, exc) from None
    finally:
        with modelio._signals_held():
            shutil.rmtree(staging, ignore_errors=True)
    report.seconds["total"] = time.perf_counter() - t0
    return _as_dict(report, source, output, options)


# ------------------------------------------------------------------------------------------------ reading


def _load_graph(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise ModelError(f"model file '{path}' does not exist; check the path.")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:
        modelio.not_onnx(path)
        raise ModelError(f"'{path}' is not a readable ONNX model ({str(exc).splitlines()[0][:200]}).") from None
    modelio._check_external_locations(modelio._external_tensors(model), path.parent)
    name_nodes(model)
    return model


def _nbytes(t: onnx.TensorProto) -> int:
    info = external_data_helper.ExternalDataInfo(t)
    if info.length:
        return int(info.length)
    return int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


@contextlib.contextmanager
def _mapped(t: onnx.TensorProto, folder: Path):
    """The tensor's values as a read-only array: a memory map of its external data (no copy), or its inline data."""
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type))
    shape = tuple(int(d) for d in t.dims)
    if not external_data_helper.uses_external_data(t):
        yield numpy_helper.to_array(t)
        return
    info = external_data_helper.ExternalDataInfo(t)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if info.length and int(info.length) != size:
        raise ModelError(f"tensor '{t.name}' declares {info.length} bytes of external data, its shape needs {size}; "
                         "the model is corrupted, re-export it.")
    with open(folder / info.location, "rb") as f:
        start = int(info.offset or 0)
        base = start - start % mmap.ALLOCATIONGRANULARITY
        if start + size > os.fstat(f.fileno()).st_size:
            raise ModelError(f"external data of tensor '{t.name}' runs past the end of '{info.location}'; the data "
                             "file is truncated, re-download it.")
        if size == 0:
            yield np.zeros(shape, dtype)
            return
        mm = mmap.mmap(f.fileno(), start - base + size, offset=base, access=mmap.ACCESS_READ)
        try:
            arr = np.frombuffer(mm, dtype=dtype, count=size // dtype.itemsize, offset=start - base).reshape(shape)
            yield arr
            del arr
        finally:
            with contextlib.suppress(BufferError):  # a caller still holding a view keeps the pages; GC frees them
                mm.close()


def _check_paths(model: onnx.ModelProto, source: Path, output: Path) -> None:
    modelio.check_output_path(output, protect=(source,))
    data = (output.parent / (output.name + ".data")).resolve()
    for t in modelio._external_tensors(model):
        if (source.parent / external_data_helper.ExternalDataInfo(t).location).resolve() == data:
            raise ConfigError(f"output data file '{data}' is the input's external data; choose another -o.")


# ------------------------------------------------------------------------------------------------ masking, writing


class DropRule:
    """Which weights of one tensor go, decided once in O(n) and applied chunk by chunk (no whole-tensor mask).

    Sparsity s: the round(s·n) smallest magnitudes, ties broken by position (exactly `passes.magnitude.smallest`):
    every |w| below the n-th smallest magnitude goes, and the first `ties` weights equal to it. Found by an in-place
    partition of one float32 copy of the magnitudes, the only whole-tensor copy. Quality q: |w| <= q·std(w), the
    std summed in float64 chunk by chunk.
    """

    def __init__(self, flat: np.ndarray, target: Target):
        self.ties = 0
        if target.sparsity is None:
            self.threshold, self.inclusive = target.quality * _chunked_std(flat), True
            return
        self.inclusive = False
        n = int(round(target.sparsity * flat.size))
        if n <= 0:
            self.threshold = -np.inf  # nothing is below: nothing goes
            return
        if n >= flat.size:
            self.threshold, self.inclusive = np.inf, True
            return
        mag = np.abs(flat, out=np.empty(flat.size, np.float32))  # the one copy (flat is a read-only map)
        mag.partition(n - 1)
        self.threshold = mag[n - 1]
        self.ties = n - int(np.count_nonzero(mag[:n] < self.threshold))
        del mag

    def keep(self, part: np.ndarray) -> np.ndarray:
        """Mask of the weights of the next chunk (chunks in order) that stay."""
        mag = np.abs(part.astype(np.float32, copy=False))
        if self.inclusive:
            return mag > self.threshold
        drop = mag < self.threshold
        if self.ties:
            equal = np.flatnonzero(mag == self.threshold)[: self.ties]
            drop[equal] = True
            self.ties -= len(equal)
        return ~drop


def _chunked_std(flat: np.ndarray) -> float:
    step = max(1, CHUNK // 8)
    n = flat.size
    if n == 0:
        return 0.0
    mean = sum(float(np.sum(flat[s : s + step], dtype=np.float64)) for s in range(0, n, step)) / n
    var = sum(float(np.sum(np.square(flat[s : s + step].astype(np.float64) - mean))) for s in range(0, n, step)) / n
    return float(np.sqrt(var))


def _write(model: onnx.ModelProto, folder: Path, output: Path, targets: dict[str, Target], report: StreamReport,
           progress) -> dict[str, tuple[int, int, int]]:
    """Write OUTPUT.data and OUTPUT; returns {tensor: (offset, length, crc32)} of what went to the data file."""
    data_name = output.name + ".data"
    tmp_data, tmp_model = output.parent / f".{data_name}.tmp", output.parent / f".{output.name}.tmp"
    inits = [t for g in modelio._all_graphs(model.graph) for t in g.initializer]
    big = [t for t in inits if external_data_helper.uses_external_data(t) or t.name in targets]
    expected, offset = {}, 0
    try:
        with open(tmp_data, "wb") as out:
            for i, t in enumerate(big):
                pad = (-offset) % ALIGN
                out.write(b"\0" * pad)
                offset += pad
                length, crc = _write_tensor(t, folder, out, targets.get(t.name), report)
                expected[t.name] = (offset, length, crc)
                _point_to(t, data_name, offset, length)
                offset += length
                progress("prune (streamed)", i + 1, len(big), t.name)
            out.flush()
            os.fsync(out.fileno())
        with open(tmp_model, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp_data, output.parent / data_name)
        os.replace(tmp_model, output)
    except BaseException:
        for p in (tmp_data, tmp_model):
            with contextlib.suppress(OSError):
                os.unlink(p)
        raise
    report.bytes_written = offset + output.stat().st_size
    return expected


def _point_to(t: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make `t` refer to `length` bytes at `offset` of `location` (and hold no data of its own)."""
    for fld in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        t.ClearField(fld)
    del t.external_data[:]
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        entry = t.external_data.add()
        entry.key, entry.value = key, str(value)
    t.data_location = onnx.TensorProto.EXTERNAL


def _write_tensor(t: onnx.TensorProto, folder: Path, out, target: Target | None, report: StreamReport):
    """(bytes written, CRC32) of one tensor, pruned by `target` when given, else copied through."""
    crc, written = 0, 0
    with _mapped(t, folder) as values:
        flat = values.reshape(-1)
        report.bytes_read += flat.nbytes
        rule = DropRule(flat, target) if target is not None else None
        step = max(1, CHUNK // max(flat.itemsize, 1))
        kept, had, part = 0, 0, None  # nonzeros after and before: zeros the input held are not the pruning's
        for s in range(0, flat.size, step):
            part = flat[s : s + step]
            if rule is not None:
                had += int(np.count_nonzero(part))
                part = np.where(rule.keep(part), part, part.dtype.type(0))
                kept += int(np.count_nonzero(part))
            raw = np.ascontiguousarray(part).astype(part.dtype.newbyteorder("<"), copy=False).tobytes()
            crc = zlib.crc32(raw, crc)
            out.write(raw)
            written += len(raw)
        if rule is not None:
            report.layers.append({"weight": t.name, "shape": list(values.shape), "params": int(flat.size),
                                  "nonzeros": kept, "density": kept / flat.size if flat.size else 1.0,
                                  "target": {"sparsity": target.sparsity} if target.sparsity is not None
                                  else {"quality": target.quality}})
            report.params += int(flat.size)
            report.nonzeros += kept
            report.nonzeros_before += had
        del flat, part, values  # nothing may hold the map when it closes
    return written, crc


# ------------------------------------------------------------------------------------------------ verification


def _read_back(output: Path, expected: dict[str, tuple[int, int, int]]) -> None:
    """Every tensor as written is what the graph now points at: same offsets, lengths and bytes."""
    model = onnx.load_model(str(output), load_external_data=False)
    data = output.parent / (output.name + ".data")
    with open(data, "rb") as f:
        for g in modelio._all_graphs(model.graph):
            for t in g.initializer:
                if t.name not in expected:
                    continue
                offset, length, crc = expected[t.name]
                info = external_data_helper.ExternalDataInfo(t)
                if (int(info.offset or 0), int(info.length or 0)) != (offset, length):
                    raise ParityError(f"tensor '{t.name}' of '{output}' points at the wrong bytes; nothing is wrong "
                                      "with the input: please report it.")
                f.seek(offset)
                got, left = 0, length
                while left:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    got, left = zlib.crc32(chunk, got), left - len(chunk)
                if left or got != crc:
                    raise ParityError(f"tensor '{t.name}' of '{output}' reads back other bytes than were written "
                                      "(disk full or a failing disk?); check the disk and run again.")


def _feeds(model: onnx.ModelProto, options, session, notes: list[str]) -> list[dict[str, np.ndarray]]:
    """Seeded random inputs at batch 1, at the shapes chosen on the input model's session (calibration.shapes)."""
    from onnxprune.calibration.shapes import choose_random_shapes

    chosen = choose_random_shapes(model, options.data.input_shapes, seed=options.data.seed, session=session)
    if chosen.note:
        notes.append(chosen.note)
    return [random_feeds(model, batch=1, seed=options.data.seed + i, shapes=chosen.shapes) for i in range(2)]


def _run_both(source: Path, output: Path, model: onnx.ModelProto, options, notes: list[str]) -> dict[str, float]:
    """Input model, then output model, on the same feeds: one session alive at a time."""
    names = output_names(model)
    session = make_session(str(source), optimize=False)
    feeds = _feeds(model, options, session, notes)
    dense = [session.run(names, f) for f in feeds]
    del session
    session = make_session(str(output), optimize=False)
    pruned = [session.run(names, f) for f in feeds]
    del session
    change = {}
    for j, name in enumerate(names):
        a = np.concatenate([np.asarray(d[j], np.float64).ravel() for d in dense])
        b = np.concatenate([np.asarray(p[j], np.float64).ravel() for p in pruned])
        if a.shape != b.shape or not np.all(np.isfinite(b)):
            raise ParityError(f"output '{name}' of '{output}' has shape {b.shape} or non-finite values where the input "
                              f"model gives shape {a.shape}; please report it.")
        change[name] = float(np.linalg.norm(a - b) / (np.linalg.norm(a) or 1.0))
    return change


def _as_dict(report: StreamReport, source: Path, output: Path, options) -> dict:
    density = report.nonzeros / report.params if report.params else 1.0
    return {"model": str(source), "output": str(output), "streamed": True, "layers": report.layers,
            "before": {"params": report.params, "nonzeros": report.nonzeros_before},
            "after": {"params": report.params, "nonzeros": report.nonzeros, "density": density},
            "compression": report.nonzeros_before / report.nonzeros if report.nonzeros else float("inf"),
            "bytes_read": report.bytes_read, "bytes_written": report.bytes_written,
            "file_size_after": report.bytes_written, "output_change": report.output_change,
            "notes": report.notes, "options": recipe_of(options),
            "seconds_by_step": {k: round(v, 3) for k, v in report.seconds.items()},
            "seconds": round(report.seconds.get("total", 0.0), 3)}
