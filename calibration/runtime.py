"""onnxruntime sessions and feeds: how every model here is run.

Sessions are built from bytes when the model fits in one protobuf, else from a temporary file with external data.
`optimize=False` turns graph optimisations off: parity checks compare what the graph says, not what a fused
kernel happens to round to.

Every session of a run is made here, on the run's device (`use_device`, once per run: teacher outputs, evaluation,
the sensitivity scan and verification all follow it): 'cpu', 'cuda' (a GPU must be there: otherwise a ConfigError
before any work) or 'auto' (CUDA when a GPU and onnxruntime's CUDA provider are both there, else the CPU, said once).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf import message

from onnxprune.calibration.value_types import unfed_reason, value_tensor
from onnxprune.errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
_run_device = {"device": "cpu", "id": 0}  # the run's device for every session (use_device)

# Dimensions we substitute when a model declares a symbolic one and we must invent inputs.
DEFAULT_DYNAMIC_DIM = 2


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple  # ints, or None for symbolic dims
    # "tensor" (an optional(tensor) too: onnxruntime takes an array for it), "sequence" (seq(tensor): the data's
    # array holds its elements stacked on axis 0, `shape` is [elements, *element shape], and sessions pass the
    # elements as a list: `SequenceFeeds`), or the type in words for what cannot be fed ("map(int64, float32)")
    kind: str = "tensor"
    # NaN marks a missing value the model replaces itself (`replaces_nan`): NaN is data there, inf still is not
    missing: bool = False
    # an optional(tensor) input: data may leave it out (in every chunk alike), and sessions then run without it
    optional: bool = False


def replaces_nan(model: onnx.ModelProto, name: str) -> bool:
    """Whether every node of the main graph reading input `name` replaces its NaN: an ai.onnx.ml Imputer whose
    replaced_value_float is NaN (scikit-learn's SimpleImputer through skl2onnx; sweep 33: data with the missing
    values the pipeline was built for was refused, "holds 440 NaN/inf value(s); clean the data"), an IsNaN, a Where
    that takes another value where an IsNaN of `name` is true (torch.nan_to_num), a Shape or Size (no value read),
    an op that only moves values (a Gather of columns, a Reshape, ...) whose every reader replaces them in turn, or a
    call of a model-local function that is a NaN-aware op as the Imputer is: it is handed the IsNaN of the same input,
    or its body tests that argument with an IsNaN or replaces it by these rules (skl2onnx's KNNImputer, opset 18, is
    nine onnxscript functions: sweep 39's KNNImputer + MLP was refused the NaN it imputes)."""
    functions = {(f.domain, f.name): f for f in model.functions}
    return _replaced(list(model.graph.node), name, functions, 0)


MOVES_VALUES = frozenset({"Identity", "Gather", "Slice", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten",
                          "Compress", "Cast"})  # ops that compute no value from the ones they move
NAN_DEPTH = 8  # ops that move values, and function bodies, followed at most


def _replaced(nodes: list, name: str, functions: dict, depth: int) -> bool:
    """`replaces_nan` over `nodes` (a graph's or a function body's) for the tensor `name`."""
    readers = [n for n in nodes if name in n.input]
    isnan = {n.output[0] for n in readers if n.op_type == "IsNaN" and n.domain in ("", "ai.onnx")}

    def replaces(node) -> bool:
        if node.op_type == "Imputer" and node.domain == "ai.onnx.ml":
            value = next((a.f for a in node.attribute if a.name == "replaced_value_float"), 0.0)
            return math.isnan(value) and not any(a.name == "replaced_value_int64" for a in node.attribute)
        body = functions.get((node.domain, node.op_type))
        if body is not None:  # a model-local function: a NaN-aware op when it tests or replaces the argument
            if isnan & set(node.input):
                return True
            params = [p for p, a in zip(body.input, node.input) if a == name]
            return depth < NAN_DEPTH and all(
                any(n.op_type == "IsNaN" and p in n.input for n in body.node)
                or _replaced(list(body.node), p, functions, depth + 1) for p in params)
        if node.domain not in ("", "ai.onnx"):
            return False
        if node.op_type in MOVES_VALUES and node.input[0] == name and list(node.input).count(name) == 1:
            return depth < NAN_DEPTH and all(_replaced(nodes, o, functions, depth + 1) for o in node.output if o)
        return node.op_type in ("IsNaN", "Shape", "Size") or (
            node.op_type == "Where" and node.input[0] in isnan and list(node.input[1:]).count(name) == 1
            and node.input[2] == name)

    return bool(readers) and all(replaces(n) for n in readers)


def refuse_unfed(specs: list[InputSpec]) -> None:
    """A ConfigError naming the first input no data can feed (a map, a sequence of maps, a sparse tensor)."""
    bad = next((s for s in specs if s.kind not in ("tensor", "sequence")), None)
    if bad is not None:
        raise ConfigError(unfed_reason(bad.name, bad.kind) + " (for scikit-learn's DictVectorizer, vectorize before "
                          "the model).")


class SequenceFeeds(ort.InferenceSession):
    """An onnxruntime session whose seq(tensor) inputs take an array of their elements stacked on axis 0 (as the
    data holds them) and pass them on as the list onnxruntime wants. It is the built session itself (its state
    shared, not built again), so whatever takes an InferenceSession takes it."""

    def __init__(self, session: ort.InferenceSession, names: list[str]):  # not super().__init__: it builds anew
        self.__dict__.update(session.__dict__)
        self._sequence_inputs = set(names)

    def run(self, output_names, input_feed, run_options=None):
        feed = {k: (list(v) if k in self._sequence_inputs and isinstance(v, np.ndarray) else v)
                for k, v in input_feed.items()}
        return super().run(output_names, feed, run_options)


def declared_batch(specs: list[InputSpec]) -> int | None:
    """The batch the inputs fix: the one first-axis size every input that fixes its first axis declares, else None
    (the readers cut batches of it; the teacher of retraining runs chunks of it)."""
    fixed = {s.shape[0] for s in specs if s.shape and s.shape[0] is not None}
    return next(iter(fixed)) if len(fixed) == 1 else None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The real inputs (old-IR models list their initializers as inputs too: those are skipped)."""
    inits = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        kind, tt = value_tensor(vi.type)
        if tt is None:  # a map, a sequence of maps: said when data is read (refuse_unfed), listed by inspect
            specs.append(InputSpec(vi.name, np.dtype(np.float32), (), kind))
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.dtype(np.float32)
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        if kind == "sequence":  # the elements stacked: [elements, *element shape] (an unknown element rank: 1-D)
            shape = (None, *(shape if tt.HasField("shape") else (None,)))
        missing = np.issubdtype(dtype, np.floating) and replaces_nan(model, vi.name)
        optional = vi.type.WhichOneof("value") == "optional_type"
        specs.append(InputSpec(vi.name, np.dtype(dtype), shape, kind, missing, optional))
    return specs


def output_names(model: onnx.ModelProto) -> list[str]:
    return [o.name for o in model.graph.output]


@functools.lru_cache(maxsize=1)
def gpu_count() -> int:
    """CUDA devices the driver sees (0 without a driver), asked of libcuda itself: no torch needed, and unlike
    onnxruntime-gpu's provider list it does not claim a GPU that is not there."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def resolve_device(device: str = "auto") -> str:
    """'cpu' or 'cuda' for onnxruntime; 'cuda' without a usable GPU is a one-line ConfigError."""
    if device not in DEVICES:
        raise ConfigError(f"--device '{device}' is not one of {', '.join(DEVICES)}.")
    has_provider = "CUDAExecutionProvider" in ort.get_available_providers()
    gpus = gpu_count()
    if device == "cuda" and not (gpus and has_provider):
        why = "no CUDA device is visible" if not gpus else f"onnxruntime {ort.__version__} has no CUDA provider"
        raise ConfigError(f"--device cuda: {why}; use --device cpu or --device auto.")
    if device == "auto":
        if gpus and has_provider:
            return "cuda"
        if gpus:
            log.warning("a GPU is there but onnxruntime %s has no CUDA provider (install onnxruntime-gpu); "
                        "onnxruntime runs on the CPU", ort.__version__)
        return "cpu"
    return device


def use_device(device: str = "auto", device_id: int = 0) -> str:
    """Set the run's device for every session made from now on; returns the resolved 'cpu' or 'cuda'."""
    resolved = resolve_device(device)
    _run_device.update(device=resolved, id=device_id)
    log.info("onnxruntime sessions run on %s", "CUDA device %d" % device_id if resolved == "cuda" else "the CPU")
    return resolved


def providers_for(device: str | None = None) -> list:
    device = device or _run_device["device"]
    if device == "cuda":
        return [("CUDAExecutionProvider", {"device_id": _run_device["id"]}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


_DEFAULT_THREADS: int | None = None  # intra-op threads when a caller gives none (None: onnxruntime's default)


def available_memory() -> int | None:
    """Bytes of memory available now (Linux's MemAvailable, else the free pages where the system says), or None."""
    try:
        with open("/proc/meminfo") as f:
            found = next((int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable:")), None)
        if found is not None:
            return found
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system that says
        return None


def default_threads() -> int | None:
    """The run's thread count (set by converter.threads.apply_threads), or None for the libraries' defaults."""
    return _DEFAULT_THREADS


_ARENA = [True]  # onnxruntime's CPU memory arena for new sessions (see `no_arena`)


@contextlib.contextmanager
def no_arena():
    """Sessions built inside this block allocate without onnxruntime's CPU memory arena. For many short-lived
    sessions (the layer-wise refit builds two per wave): with the arena, the process kept each one's activation
    memory after the session was gone (22.6M-parameter encoder, 60 samples, 7 waves: RSS +1235 MB with it, +318 MB
    without, the same CPU time)."""
    before = _ARENA[0]
    _ARENA[0] = False
    try:
        yield
    finally:
        _ARENA[0] = before


def use_arena(flag: bool) -> None:
    """Whether sessions built from now on use onnxruntime's CPU memory arena (the data step turns it off for a
    run whose activations are large: steps/data.py `Data.batch_size`); `arena_scope` restores it after a run."""
    _ARENA[0] = flag


@contextlib.contextmanager
def arena_scope():
    """A run's arena setting ends with the run (the API may convert several models in one process)."""
    before = _ARENA[0]
    try:
        yield
    finally:
        _ARENA[0] = before


def set_default_threads(threads: int | None) -> None:
    """The intra-op thread count of every session built without an explicit `threads` (converter.threads)."""
    global _DEFAULT_THREADS
    _DEFAULT_THREADS = threads


def _fusion_breaks_outputs(graph: onnx.GraphProto) -> bool:
    """onnxruntime's GemmTransposeFusion folds a Transpose into the Gemm it feeds even when the Transpose's output
    is also a graph output, and the session then fails to build ("Failed to find node output … producing output").
    Our probes add such outputs (a boundary tensor, an activation): e.g. paddle's Gemm(W, Transpose(x))."""
    outputs = {o.name for o in graph.output}
    transposed = {n.output[0] for n in graph.node if n.op_type == "Transpose" and n.output and n.output[0] in outputs}
    return any(n.op_type == "Gemm" and any(i in transposed for i in n.input) for n in graph.node)


_VIEW: list = [None]  # the run's session view: what a model is run as (converter.pipeline sets it)


@contextlib.contextmanager
def session_view(view):
    """Within: every session of a ModelProto runs `view(model)`: a run whose quantized weights were folded to float
    at load runs each model as it would be written (passes.quantized_weights), never the float stand-in."""
    saved, _VIEW[0] = _VIEW[0], view
    try:
        yield
    finally:
        _VIEW[0] = saved


def make_session(
    model: onnx.ModelProto | bytes | str | os.PathLike,
    *,
    optimize: bool = True,
    device: str | None = None,
    threads: int | None = None,
    profile: str | None = None,
) -> ort.InferenceSession:
    """A session on `device` (default: the run's device, see `use_device`); `profile`: onnxruntime's profile file
    prefix (profiling on)."""
    opts = ort.SessionOptions()
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    # errors reach the user as our one line (the exception's text); onnxruntime's own log of them only with -vv
    opts.log_severity_level = 3 if logging.getLogger("onnxprune").isEnabledFor(logging.DEBUG) else 4
    if not _ARENA[0]:
        opts.enable_cpu_mem_arena = False
    if not threads and _DEFAULT_THREADS:
        threads = _DEFAULT_THREADS
        if threads > 1:  # the run's default pool: idle threads yield the cores instead of spinning (shared machines)
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    providers = providers_for(device)
    if isinstance(model, onnx.ModelProto) and _VIEW[0] is not None:
        model = _VIEW[0](model)
    if isinstance(model, onnx.ModelProto):
        extra = ({"disabled_optimizers": ["GemmTransposeFusion"]}
                 if optimize and _fusion_breaks_outputs(model.graph) else {})
        data = _serialized(model)  # not ByteSize() first: it serializes too, doubling the cost on a 90 MB model
        if data is not None:
            return _checked(ort.InferenceSession(data, opts, providers=providers, **extra), providers)
        with tempfile.TemporaryDirectory() as tmp:  # onnxruntime maps the data when the session is built
            path = os.path.join(tmp, "model.onnx")
            onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data")
            return _checked(ort.InferenceSession(path, opts, providers=providers, **extra), providers)
    if isinstance(model, bytes):
        return _checked(ort.InferenceSession(model, opts, providers=providers), providers)
    return _checked(ort.InferenceSession(str(model), opts, providers=providers), providers)


def node_seconds(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Each node's kernel seconds in one run of `feeds`, by node name (nodes inside bodies under their own), from
    onnxruntime's profile with graph optimisations off, so that every node keeps its name (fused, 83% of a YOLO's
    time went to names the graph does not have)."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = make_session(model, optimize=False, profile=os.path.join(tmp, "profile"))
        wanted = {i.name for i in sess.get_inputs()}
        sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    seconds: dict[str, float] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time"):
            node = name[: -len("_kernel_time")]
            seconds[node] = seconds.get(node, 0.0) + e.get("dur", 0) / 1e6
    return seconds


def with_outputs(model: onnx.ModelProto, names) -> onnx.ModelProto:
    """A copy that also outputs the tensors `names` (onnxruntime infers their types); names that already are graph
    outputs or inputs are left as they are."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output} | {i.name for i in out.graph.input}
    out.graph.output.extend(onnx.ValueInfoProto(name=n) for n in dict.fromkeys(names) if n not in have)
    return out


def _serialized(model: onnx.ModelProto) -> bytes | None:
    """The model's bytes, or None when they would pass protobuf's 2 GB limit (then saved with external data)."""
    try:
        data = model.SerializeToString()
    except (ValueError, message.EncodeError):  # protobuf refuses to serialize past 2 GB
        return None
    return data if len(data) < 2**31 - 1 else None


def _checked(session: ort.InferenceSession, providers: list) -> ort.InferenceSession:
    """Say once when onnxruntime fell back from CUDA to the CPU (e.g. its CUDA libraries are missing); a session
    with sequence inputs takes their elements stacked in an array (SequenceFeeds)."""
    if len(providers) > 1 and "CUDAExecutionProvider" not in session.get_providers():
        _warn_fallback()
    sequences = [i.name for i in session.get_inputs() if i.type.startswith("seq(tensor")]
    return SequenceFeeds(session, sequences) if sequences else session


def first_sample_fails(run, feed: dict) -> bool:
    """Whether the first sample of a batched `feed` fails on its own too (`run` runs one feed dict): then the batch is
    not why the feed failed. False when some value is no array of two or more samples (nothing smaller to try)."""
    if not all(isinstance(v, np.ndarray) and v.ndim and len(v) > 1 for v in feed.values()):
        return False
    try:
        run({k: v[:1] for k, v in feed.items()})
    except Exception:  # noqa: BLE001 - any failure of the one sample is the answer
        return True
    return False


def ort_reason(exc: BaseException) -> str:
    """onnxruntime's message without its status prefix and C++ source location."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    # a C++ source location and the function it names, wherever it stands:
    # "Exception during initialization: /src/rnn.h:48 ns::RNN<T>::RNN(const Info&) [with T = float] layout_ == 0 …"
    text = re.sub(r"[\w./\\-]+\.(?:h|cc|cpp):\d+ (?:[^()]*::\w+\([^()]*\)(?: const)?(?: \[with [^\]]*\])? )?", "", text)
    # the failed check's condition in front of onnxruntime's own sentence: "layout_ == 0 was false. Batchwise …"
    text = re.sub(r"(^|: )[^.:]*? was false\. (?=[A-Z])", r"\1", text)
    return text[:400].rstrip(". ")


# the loss a candidate onnxruntime cannot run on data the input model ran is counted at (pp): over any budget
FAILED_LOSS_PP = 100.0


def run_failure(exc: BaseException) -> str | None:
    """onnxruntime's reason (`ort_reason`, its node named) when `exc` is onnxruntime failing to run a model (its Fail,
    InvalidArgument, RuntimeException, ...: classes of its own module), else None (a bug of ours stays one)."""
    if not type(exc).__module__.startswith("onnxruntime"):
        return None
    m = re.search(r"running (\S+) node\. Name:'([^']*)'.*?Status Message: (.*)", " ".join(str(exc).split()))
    if not m:
        return ort_reason(exc)
    said = re.sub(r"^[\w./\\-]+\.(?:h|cc|cpp):\d+ (?:\w+ (?=[A-Z]))?", "", m.group(3))  # "split.cc:82 Compute "
    return f"{m.group(1)} '{m.group(2)}': {ort_reason(said)}"


def say_failed_candidate(reason: str, evaluator) -> None:
    """Said once a reason and evaluator (its `failed_said`): a pruned candidate onnxruntime cannot run on a batch the
    input model ran (sweep 57: a legacy-traced mixture of experts' Split of the tokens each expert takes, 0 for an
    expert no token picks once the router's level changes) is counted over the budget, not the end of the run."""
    said = evaluator.__dict__.setdefault("failed_said", set())
    if reason not in said:
        said.add(reason)
        log.warning("onnxruntime cannot run a pruned candidate on data the input model ran (%s): such candidates are "
                    "counted as over the budget", reason)


@functools.lru_cache(maxsize=1)
def _warn_fallback() -> None:
    log.warning("onnxruntime could not start its CUDA provider (see onnxruntime's log); sessions run on the CPU")


# Integer inputs that index no constant table (masks, flags, positions) are drawn from [0, DEFAULT_INT_HIGH).
DEFAULT_INT_HIGH = 2
_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity"}  # ids keep their values


def int_input_ranges(model: onnx.ModelProto) -> dict[str, int]:
    """Integer input -> the exclusive upper bound of its values: the table size when the input (through Cast,
    Reshape, ...) indexes a Gather on a constant table (token ids into an embedding), else DEFAULT_INT_HIGH."""
    graph = model.graph
    tables = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    tables[node.output[0]] = tuple(attr.t.dims)
    from onnxprune.passes.scopes import readers_of

    consumers = readers_of(graph)
    ranges = {}
    for spec in input_specs(model):
        if not np.issubdtype(spec.dtype, np.integer):
            continue
        bounds, todo, seen = [], [spec.name], set()
        while todo:
            tensor = todo.pop()
            seen.add(tensor)
            for node in consumers.get(tensor, []):
                if (node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor
                        and node.input[0] in tables):
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = tables[node.input[0]]
                    if dims and -len(dims) <= axis < len(dims):
                        bounds.append(int(dims[axis]))
                elif node.op_type in _PASS_THROUGH and node.input[0] == tensor:
                    todo.extend(o for o in node.output if o not in seen)
        ranges[spec.name] = min(bounds) if bounds else DEFAULT_INT_HIGH
    return ranges


def with_shapes(specs: list[InputSpec], shapes: dict[str, tuple] | None) -> list[InputSpec]:
    """Specs with the dims given by --input-shape (checked against the declared rank and fixed dims)."""
    from onnxprune.errors import ConfigError

    if not shapes:
        return specs
    known = {s.name for s in specs}
    unknown = [n for n in shapes if n not in known]
    if unknown:
        raise ConfigError(f"--input-shape names {unknown}, which are not model inputs; valid inputs: "
                          f"{', '.join(sorted(known))}.")
    out = []
    for s in specs:
        dims = shapes.get(s.name)
        if dims is not None:
            if len(dims) != len(s.shape) or any(d is not None and d != g for d, g in zip(s.shape, dims)):
                declared = "[" + ", ".join("?" if d is None else str(d) for d in s.shape) + "]"
                raise ConfigError(f"--input-shape {s.name}={','.join(map(str, dims))} does not fit the declared "
                                  f"shape {declared} of input '{s.name}'; give {len(s.shape)} dims, fixed ones as "
                                  "declared.")
            s = dataclasses.replace(s, shape=tuple(dims))
        out.append(s)
    return out


def random_array(rng: np.random.Generator, spec: InputSpec, shape: tuple, high: int = DEFAULT_INT_HIGH) -> np.ndarray:
    """Seeded values of one input: bools, ints in [0, high), floats standard normal."""
    # np.asarray: at a scalar shape () numpy returns a scalar (np.bool_), which onnxruntime refuses ("Unable to
    # handle object of type <class 'numpy.bool'>": a helper's If on a bool scalar input, random data)
    if spec.dtype == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if np.issubdtype(spec.dtype, np.integer):
        return np.asarray(rng.integers(0, max(1, high), size=shape), dtype=spec.dtype)
    return np.asarray(rng.standard_normal(shape), dtype=spec.dtype)


def random_feeds(model: onnx.ModelProto, *, batch: int = DEFAULT_DYNAMIC_DIM, seed: int = 0,
                 shapes: dict[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """Seeded inputs of the declared shapes and dtypes (or `shapes`, --input-shape); other symbolic dims become
    `batch`. Integer inputs are drawn from `int_input_ranges` (token ids up to the embedding table's size)."""
    rng = np.random.default_rng(seed)
    highs = int_input_ranges(model)
    feeds = {}
    specs = input_specs(model)
    refuse_unfed(specs)
    for spec in with_shapes(specs, shapes):
        shape = tuple(batch if d is None else d for d in spec.shape)
        feeds[spec.name] = random_array(rng, spec, shape, highs.get(spec.name, DEFAULT_INT_HIGH))
    return feeds
