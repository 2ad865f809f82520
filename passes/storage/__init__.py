"""Storage formats: how a pruned weight is written into the ONNX file, each with its encoder and decoder side by side.

A format is registered under the name `--sparse-format` takes. `encode(model, names, state)` re-homes the named
dense weights in place and returns the names it encoded; `decode(model)` turns the format's tensors back into
plain dense ones (what `modelio.load_model` does before any graph pass) and returns their names; `describe(model)`
says, per encoded weight, how it is stored and what it costs (for `inspect`).

    constant     COO SparseTensorProto in a Constant node (int64 indices + values; full_check passes)
    initializer  COO in graph.sparse_initializer (loads in onnxruntime; plain checker only)
    dense        plain dense initializers
    compact      per weight the smallest of: uint8/uint16 relative indices, a packed bitmask, dense; values as
                 stored (fp32), fp16 or an n-bit codebook when that is lossless; decoded by standard ops that
                 onnxruntime folds into an initializer at session creation
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx

from onnxprune.passes.base import PruneState


@dataclass(frozen=True)
class StorageFormat:
    name: str
    encode: Callable[[onnx.ModelProto, list[str], PruneState], list[str]]
    decode: Callable[[onnx.ModelProto], list[str]]
    describe: Callable[[onnx.ModelProto], dict[str, dict]]
    kept: bool = False  # an input stored in this format is written in it again unless --sparse-format says otherwise
    narrow: bool = False  # stores --weight-bits values in their width (fp16, n-bit codes): the default with the flag
    min_ir: int = 0  # the lowest IR version it stores weights at (compact's arrays are initializers, which IR 3 lists
    #                  among the graph inputs); below it, a format falls back (compact: to COO) or refuses


FORMATS: dict[str, StorageFormat] = {}


def register_format(fmt: StorageFormat) -> StorageFormat:
    if fmt.name in FORMATS:
        raise ValueError(f"storage format '{fmt.name}' registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def decode_model(model: onnx.ModelProto) -> list[str]:
    """Decode every registered encoding found in `model`, in place; return the decoded weight names."""
    names: list[str] = []
    for decode in dict.fromkeys(f.decode for f in FORMATS.values()):  # one call per distinct decoder
        names += decode(model)
    return names


def kept_formats(model: onnx.ModelProto) -> list[str]:
    """The formats marked `kept` that hold weights of `model` (read before it is decoded): a model pruned with
    --sparse-format compact and pruned again is written compact by default, not grown into the default's COO."""
    return [f.name for f in FORMATS.values() if f.kept and f.describe(model)]


def describe_model(model: onnx.ModelProto) -> dict[str, dict]:
    """{weight: {"encoding", "bytes", "nonzeros"}} for every encoded weight of `model` (before decoding)."""
    out: dict[str, dict] = {}
    for describe in dict.fromkeys(f.describe for f in FORMATS.values()):
        out.update(describe(model))
    return out


from onnxprune.passes.storage import coo, dense, compact  # noqa: E402,F401  (registers the formats)
