"""Registry, node context, attribute parsing, dtypes and the helpers every op family shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper

Tensor = torch.Tensor
OpResult = Union[Tensor, Sequence[Tensor]]
OpFn = Callable[[list, dict, "NodeContext"], OpResult]

DEFAULT_DOMAIN = ""
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})

# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpDef:
    domain: str
    op_type: str
    since_opset: int
    fn: OpFn
    static_inputs: tuple = ()
    check: Optional[Callable[[dict, "NodeContext"], Optional[str]]] = None
    fold: bool = False


_REGISTRY: dict[tuple[str, str], list[OpDef]] = {}


def normalize_domain(domain: str) -> str:
    return DEFAULT_DOMAIN if domain in ("", "ai.onnx") else domain


def register(op_type: str, since_opset: int = 1, domain: str = DEFAULT_DOMAIN, static_inputs: Sequence[int] = (),
             check=None, fold: bool = False):
    """Decorator: ``fn`` implements ``op_type`` from ``since_opset`` on (until a later registration)."""

    def deco(fn: OpFn) -> OpFn:
        key = (normalize_domain(domain), op_type)
        defs = [d for d in _REGISTRY.get(key, []) if d.since_opset != since_opset]
        defs.append(OpDef(key[0], op_type, since_opset, fn, tuple(static_inputs), check, fold))
        _REGISTRY[key] = sorted(defs, key=lambda d: d.since_opset)
        return fn

    return deco


def lookup(domain: str, op_type: str, opset: int) -> Optional[OpDef]:
    """The implementation in force at ``opset`` for (domain, op_type), or None."""
    found = None
    for d in _REGISTRY.get((normalize_domain(domain), op_type), ()):
        if d.since_opset <= opset:
            found = d
    return found


def supported_ops() -> list[tuple[str, str, int]]:
    """Every registered (domain, op_type, since_opset), sorted."""
    return sorted((d.domain, d.op_type, d.since_opset) for defs in _REGISTRY.values() for d in defs)


# --------------------------------------------------------------------------------------------------------------
# Node context, attribute parsing, dtypes
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What changes between calls, shared by all nodes of one module."""

    training: bool = False
    dropout_ratios: dict = field(default_factory=dict)


@dataclass
class NodeContext:
    name: str
    op_type: str
    domain: str
    opset: int
    n_outputs: int
    static: dict = field(default_factory=dict)  # input index -> flat python list, for constant static_inputs
    float_dtype: Optional[torch.dtype] = None  # compute dtype override for every ONNX float type
    run: RunState = field(default_factory=RunState)

    def dtype(self, onnx_type: int) -> torch.dtype:
        """Torch dtype for an ONNX element type, honouring the module's float dtype override."""
        if onnx_type not in ONNX_TO_TORCH:
            raise TypeError(f"{self.op_type} '{self.name}': ONNX element type "
                            f"{TensorProto.DataType.Name(onnx_type)} has no torch equivalent")
        dt = ONNX_TO_TORCH[onnx_type]
        return self.float_dtype if self.float_dtype is not None and dt.is_floating_point else dt


ONNX_TO_TORCH = {
    TensorProto.FLOAT: torch.float32, TensorProto.DOUBLE: torch.float64, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT8: torch.int8, TensorProto.INT16: torch.int16,
    TensorProto.INT32: torch.int32, TensorProto.INT64: torch.int64, TensorProto.UINT8: torch.uint8,
    TensorProto.UINT16: torch.uint16, TensorProto.UINT32: torch.uint32, TensorProto.UINT64: torch.uint64,
    TensorProto.BOOL: torch.bool,
}
TORCH_TO_ONNX = {v: k for k, v in ONNX_TO_TORCH.items()}


def numpy_to_torch(arr: np.ndarray) -> Tensor:
    """A torch copy of ``arr``; bfloat16 (ml_dtypes) goes through its uint16 bits."""
    arr = np.asarray(arr)
    if arr.dtype.name == "bfloat16":
        return torch.from_numpy(np.array(arr.view(np.uint16), copy=True)).view(torch.bfloat16)
    return torch.from_numpy(np.array(arr, copy=True))


def tensor_raw_bytes(t: Tensor) -> bytes:
    """Little-endian element bytes of a CPU tensor, as ONNX raw_data stores them."""
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def sparse_to_dense(sp: onnx.SparseTensorProto) -> np.ndarray:
    values = numpy_helper.to_array(sp.values)
    indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    dense = np.zeros(tuple(sp.dims), dtype=values.dtype)
    if indices.ndim == 1:
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return dense


def _parse_attr(a: onnx.AttributeProto):
    A = onnx.AttributeProto
    if a.type == A.FLOAT:
        return float(np.float32(a.f))
    if a.type == A.INT:
        return int(a.i)
    if a.type == A.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == A.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type == A.SPARSE_TENSOR:
        return sparse_to_dense(a.sparse_tensor)
    if a.type == A.FLOATS:
        return [float(np.float32(v)) for v in a.floats]
    if a.type == A.INTS:
        return [int(v) for v in a.ints]
    if a.type == A.STRINGS:
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.type == A.TENSORS:
        return [numpy_helper.to_array(t) for t in a.tensors]
    if a.type == A.GRAPH:  # a body: the module compiles it (If/Loop), see module.Body
        return a.g
    if a.type == A.TYPE_PROTO:  # an empty Optional's type: no value to build, the TypeProto as it is
        return a.tp
    raise ValueError(f"attribute '{a.name}' of type {A.AttributeType.Name(a.type)} is not supported")


def parse_attributes(node: onnx.NodeProto) -> dict:
    """Node attributes as python values; a GRAPH attribute stays a GraphProto (the module compiles it), GRAPHS
    attributes raise ValueError."""
    return {a.name: _parse_attr(a) for a in node.attribute}


# --------------------------------------------------------------------------------------------------------------
# Small helpers shared by the ops
# --------------------------------------------------------------------------------------------------------------


def _opt(inputs: list, i: int) -> Optional[Tensor]:
    return inputs[i] if i < len(inputs) else None


def _static(inputs: list, i: int, ctx: NodeContext) -> Optional[list]:
    """Input ``i`` as a flat python list: the build-time constant if any, else the run-time tensor."""
    if i in ctx.static:
        return ctx.static[i]
    t = _opt(inputs, i)
    return None if t is None else t.reshape(-1).tolist()


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _as_list(out: OpResult) -> list:
    return [out] if isinstance(out, Tensor) else list(out)


def _torch_pad(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX per-axis (begins, ends) of the last len(begin) axes -> F.pad's last-axis-first order."""
    out: list[int] = []
    for b, e in zip(reversed(list(begin)), reversed(list(end))):
        out += [int(b), int(e)]
    return out


def _lowest(dtype: torch.dtype) -> float:
    return float("-inf") if dtype.is_floating_point else torch.iinfo(dtype).min
