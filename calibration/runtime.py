"""onnxruntime sessions and feeds: how every model here is run.

Sessions are built from bytes when the model fits in one protobuf, else from a temporary file with external data.
`optimize=False` turns graph optimisations off: parity checks compare what the graph says, not what a fused
kernel happens to round to.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

log = logging.getLogger(__name__)

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


def providers_for(device: str = "cpu") -> list[str]:
    if device == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


_DEFAULT_THREADS: int | None = None  # intra-op threads when a caller gives none (None: onnxruntime's default)


def set_default_threads(threads: int | None) -> None:
    """The intra-op thread count of every session built without an explicit `threads` (converter.auto.threads)."""
    global _DEFAULT_THREADS
    _DEFAULT_THREADS = threads


def make_session(
    model: onnx.ModelProto | bytes | str | os.PathLike,
    *,
    optimize: bool = True,
    device: str = "cpu",
    threads: int | None = None,
) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    threads = threads or _DEFAULT_THREADS
    if threads:
        opts.intra_op_num_threads = threads
    providers = providers_for(device)
    if isinstance(model, onnx.ModelProto):
        if model.ByteSize() < 2**31 - 1:
            return ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        with tempfile.TemporaryDirectory() as tmp:  # onnxruntime maps the data when the session is built
            path = os.path.join(tmp, "model.onnx")
            onnx.save_model(model, path, save_as_external_data=True, location="model.onnx.data")
            return ort.InferenceSession(path, opts, providers=providers)
    if isinstance(model, bytes):
        return ort.InferenceSession(model, opts, providers=providers)
    return ort.InferenceSession(str(model), opts, providers=providers)


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
