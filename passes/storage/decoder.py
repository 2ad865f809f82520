"""The compact format's ONNX decoder: standard ops (opset >= 11) that rebuild one dense weight from its arrays.

    gaps  : Cast(int64) -> CumSum -> Reshape [-1, 1] = positions
    values: Cast(float16 -> dtype) | Gather(centroids, codes) | as stored  (a float16 weight: computed in float32,
            cast to float16 by the last node: onnxruntime's CPU provider has no float16 Where to fold)
            ConstantOfShape([numel], 0) -> ScatterND(positions, values) -> Reshape(shape) -> the weight's name
    mask  : unpack bits -> Where(bits, Gather(values, CumSum(bits) - 1), 0) -> Reshape(shape) -> the weight's name
    unpack bits: Reshape [-1, 1] -> BitShift right [7 … 0] -> Mod 2 -> Reshape [-1] -> Slice [0, total)  (uint8)
    n-bit codes: unpack -> Reshape [count, n] -> MatMulInteger [2^(n-1) … 1] -> Reshape [-1] (int32)

Every input is a constant, so onnxruntime's constant folding turns the whole decoder into one initializer at
session creation; inference never runs it. The few constants every decoder needs (bit weights, the shape
[-1, 1], …) are shared per graph under the prefix SHARED.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxprune.passes.storage.packing import GAP_TYPES, Encoding

MIN_OPSET = 11  # CumSum, ScatterND, BitShift (11); Mod, MatMulInteger, Slice with inputs (10); Where (9)
SHARED = "onnxprune__compact__"
_SHARED = {
    "shifts8": np.arange(7, -1, -1, dtype=np.uint8),
    "two": np.array(2, np.uint8),
    "one": np.array(1, np.int32),
    "col": np.array([-1, 1], np.int64),
    "flat": np.array([-1], np.int64),
    "zero": np.array([0], np.int64),
    "axis0": np.array(0, np.int64),
    **{f"pow{n}": (2 ** np.arange(n - 1, -1, -1)).astype(np.uint8).reshape(n, 1) for n in range(1, 8)},
}


def prefix(key: int) -> str:
    """Every tensor and intermediate of decoder `key` is named `_c<key>.<something>`: short, as they are in the file."""
    return f"_c{key}."


class DecoderBuilder:
    """Collects the nodes (unnamed: names cost bytes) and tensors of one weight's decoder."""

    def __init__(self, weight: str, enc: Encoding, key: int):
        self.weight, self.enc, self.prefix = weight, enc, prefix(key)
        self.nodes: list[onnx.NodeProto] = []
        self.tensors: list[onnx.TensorProto] = []
        self.shared: set[str] = set()

    def data(self, suffix: str, array: np.ndarray) -> str:
        name = self.prefix + suffix
        self.tensors.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def common(self, key: str) -> str:
        self.shared.add(key)
        return SHARED + key

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = f"{self.prefix}{len(self.nodes)}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def unpack(self, packed: str, total: int, tag: str) -> str:
        """uint8 bits (one byte each: the temporaries of a big weight stay a quarter of int32's)."""
        x = self.op("Reshape", [packed, self.common("col")])
        x = self.op("BitShift", [x, self.common("shifts8")], direction="RIGHT")
        x = self.op("Mod", [x, self.common("two")])
        x = self.op("Reshape", [x, self.common("flat")])
        return self.op("Slice", [x, self.common("zero"), self.data(f"{tag}len", np.array([total], np.int64))])

    def positions(self) -> str:
        gaps = self.op("Cast", [self.data("gaps", self.enc.arrays["gaps"])], to=TensorProto.INT64)
        return self.op("Reshape", [self.op("CumSum", [gaps, self.common("axis0")]), self.common("col")])

    @property
    def work(self) -> np.dtype:
        """The dtype the decoder computes in: float32 for a float16 weight (onnxruntime's CPU provider has no
        float16 Where, so a float16 decoder was not folded and ran at every inference: a helper's fp16 CNN 0.44x
        as fast as its input), cast to float16 by the last node; else the weight's own."""
        dtype = np.dtype(self.enc.dtype)
        return np.dtype(np.float32) if dtype == np.float16 else dtype

    def values(self) -> str:
        out = self._values()
        if np.dtype(self.enc.dtype) != self.work or self.enc.values == "float16":
            return self.op("Cast", [out], to=helper.np_dtype_to_tensor_dtype(self.work))
        return out

    def _values(self) -> str:
        enc = self.enc
        if enc.values in ("raw", "float16"):
            return self.data("values", enc.arrays["values"])
        codes = self.data("codes", enc.arrays["codes"])
        if enc.bits < 8:
            bits = self.unpack(codes, enc.count * enc.bits, "codes")
            bits = self.op("Reshape", [bits, self.data("codeshape", np.array([enc.count, enc.bits], np.int64))])
            codes = self.op("MatMulInteger", [bits, self.common(f"pow{enc.bits}")])  # [count, 1] int32
            codes = self.op("Reshape", [codes, self.common("flat")])
        else:
            codes = self.op("Cast", [codes], to=TensorProto.INT32)
        return self.op("Gather", [self.data("centroids", enc.arrays["centroids"]), codes])

    def build(self) -> None:
        """The weight's decoder; its last node writes the weight's own name."""
        enc = self.enc
        numel = int(np.prod(enc.shape, dtype=np.int64))
        zero = numpy_helper.from_array(np.zeros(1, self.work))
        if enc.index == "bitmask":  # no NonZero: onnxruntime does not fold it
            bits = self.op("Cast", [self.unpack(self.data("mask", enc.arrays["mask"]), numel, "mask")],
                           to=TensorProto.INT32)
            slot = self.op("Sub", [self.op("CumSum", [bits, self.common("axis0")]), self.common("one")])
            gathered = self.op("Gather", [self.values(), slot])
            zero = self.data("zero", np.zeros((), self.work))
            dense = self.op("Where", [self.op("Cast", [bits], to=TensorProto.BOOL), gathered, zero])
        else:
            dense = self.op("ConstantOfShape", [self.data("numel", np.array([numel], np.int64))], value=zero)
        if enc.index in GAP_TYPES:
            dense = self.op("ScatterND", [dense, self.positions(), self.values()])
        dense = self.op("Reshape", [dense, self.data("shape", np.array(enc.shape, np.int64))])
        if self.work != np.dtype(enc.dtype):
            self.op("Cast", [dense], to=helper.np_dtype_to_tensor_dtype(np.dtype(enc.dtype)))
        self.nodes[-1].output[0] = self.weight


def shared_tensors(keys) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(_SHARED[k], SHARED + k) for k in sorted(keys)]
