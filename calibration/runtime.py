"""onnxruntime sessions and feeds: how every model here is run.

Sessions are built from bytes when the model fits in one protobuf, else from a temporary file with external data.
`optimize=False` turns graph optimisations off: parity checks compare what the graph says, not what a fused
kernel happens to round to.

Every session of a run is made here, on the run's device (`use_device`, once per run: teacher outputs, evaluation,
the sensitivity scan and verification all follow it): 'cpu', 'cuda' (a GPU must be there: otherwise a ConfigError
before any work) or 'auto' (CUDA when a GPU and onnxruntime's CUDA provider are both there, else the CPU, said once).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

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


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The real inputs (old-IR models list their initializers as inputs too: those are skipped)."""
    inits = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type) if tt.elem_type else np.dtype(np.float32)
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, np.dtype(dtype), shape))
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


def make_session(
    model: onnx.ModelProto | bytes | str | os.PathLike,
    *,
    optimize: bool = True,
    device: str | None = None,
    threads: int | None = None,
) -> ort.InferenceSession:
    """A session on `device` (default: the run's device, see `use_device`)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    providers = providers_for(device)
    if isinstance(model, onnx.ModelProto):
        if model.ByteSize() < 2**31 - 1:
            return _checked(ort.InferenceSession(model.SerializeToString(), opts, providers=providers), providers)
        with tempfile.TemporaryDirectory() as tmp:  # onnxruntime maps the data when the session is built
            path = os.path.join(tmp, "model.onnx")
            onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data")
            return _checked(ort.InferenceSession(path, opts, providers=providers), providers)
    if isinstance(model, bytes):
        return _checked(ort.InferenceSession(model, opts, providers=providers), providers)
    return _checked(ort.InferenceSession(str(model), opts, providers=providers), providers)


def _checked(session: ort.InferenceSession, providers: list) -> ort.InferenceSession:
    """Say once when onnxruntime fell back from CUDA to the CPU (e.g. its CUDA libraries are missing)."""
    if len(providers) > 1 and "CUDAExecutionProvider" not in session.get_providers():
        _warn_fallback()
    return session


@functools.lru_cache(maxsize=1)
def _warn_fallback() -> None:
    log.warning("onnxruntime could not start its CUDA provider (see onnxruntime's log); sessions run on the CPU")


def random_feeds(model: onnx.ModelProto, *, batch: int = DEFAULT_DYNAMIC_DIM, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the declared shapes and dtypes; symbolic dims become `batch`.

    Integer inputs get small non-negative values (token ids, indices): any model with an embedding accepts 0 and 1.
    """
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in input_specs(model):
        shape = tuple(batch if d is None else d for d in spec.shape)
        if spec.dtype == np.bool_:
            feeds[spec.name] = rng.random(shape) < 0.5
        elif np.issubdtype(spec.dtype, np.integer):
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds
