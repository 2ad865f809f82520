"""The compact format's arithmetic, in numpy: choose the smallest encoding of one weight, encode it, decode it.

Index forms (where the nonzeros are), for a weight flattened to `numel` values with nonzeros at sorted p_0 < p_1 < …:
  gap8 / gap16   relative indices d_0 = p_0, d_k = p_k − p_{k−1}, stored as uint8 / uint16; a gap longer than the
                 largest code M (255 / 65535) becomes ceil(d/M) − 1 filler entries of M with value 0, then the
                 rest (Deep Compression's padding). Decode: positions = cumsum(d).
  bitmask        one bit per element (numpy packbits order: first element in the top bit). Decode: nonzero(bits).
  zeros          no nonzeros at all.
Value forms (what is at those positions, in index order, fillers included):
  raw            the weight's dtype.
  float16        when every value survives fp16 exactly (e.g. after --weight-bits 16).
  codebook       K <= 256 distinct values (e.g. after --weight-bits n): a K-entry table in the weight's dtype plus an
                 n = ceil(log2 K)-bit code per entry, uint8 for n = 8, packed bits (first bit = highest) below.
All forms are exact: decode(encode(w)) == w bit for bit (-0.0 and pruned zeros come back as +0.0, as with COO).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

GAP_TYPES = {"gap8": np.uint8, "gap16": np.uint16}
FLOATS = (np.float16, np.float32, np.float64)


@dataclass
class Encoding:
    """One weight's chosen encoding: its forms, shape, and the arrays to store (name suffix -> array)."""

    index: str
    values: str
    shape: tuple[int, ...]
    dtype: str
    nonzeros: int
    count: int = 0  # entries in index order (nonzeros + fillers)
    bits: int = 0  # codebook bits per entry
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    @property
    def name(self) -> str:
        return self.index if self.index == "zeros" else f"{self.index}+{self.values}{self.bits or ''}"

    def record(self) -> dict:
        return {"index": self.index, "values": self.values, "shape": list(self.shape), "dtype": self.dtype,
                "nonzeros": self.nonzeros, "count": self.count, "bits": self.bits}


def pack_fields(codes: np.ndarray, n: int) -> np.ndarray:
    """n-bit unsigned codes -> packed uint8, first code's top bit first."""
    shifts = np.arange(n - 1, -1, -1, dtype=np.int64)
    return np.packbits(((codes.astype(np.int64)[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1))


def unpack_fields(packed: np.ndarray, count: int, n: int) -> np.ndarray:
    bits = np.unpackbits(packed)[: count * n].reshape(count, n).astype(np.int64)
    return bits @ (1 << np.arange(n - 1, -1, -1, dtype=np.int64))


def gap_entries(positions: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, slot of each nonzero in the entry list) with fillers so that every gap is <= top."""
    d = np.diff(positions, prepend=0) if positions.size else positions
    fillers = np.maximum(0, -(-d // top) - 1)
    last = np.cumsum(fillers + 1) - 1
    gaps = np.full(int(last[-1]) + 1 if last.size else 0, top, dtype=np.int64)
    gaps[last] = d - fillers * top
    return gaps, last


def _value_forms(entries: np.ndarray, dtype: np.dtype) -> list[tuple[str, int, dict]]:
    forms = [("raw", 0, {"values": entries})]
    finite = bool(np.isfinite(entries).all())
    if dtype != np.float16 and finite and np.array_equal(entries.astype(np.float16).astype(dtype), entries):
        forms.append(("float16", 0, {"values": entries.astype(np.float16)}))
    table = np.unique(entries) if finite else np.empty(0)
    if finite and len(table) <= 256 and entries.size:
        n = max(1, math.ceil(math.log2(len(table))))
        codes = np.searchsorted(table, entries)
        stored = codes.astype(np.uint8) if n == 8 else pack_fields(codes, n)
        forms.append(("codebook", n, {"codes": stored, "centroids": table.astype(dtype)}))
    return forms


def candidates(w: np.ndarray) -> list[Encoding]:
    """Every exact encoding of `w` (a float array), smallest first."""
    flat = w.reshape(-1)
    positions = np.flatnonzero(flat)
    base = dict(shape=tuple(w.shape), dtype=str(w.dtype), nonzeros=int(positions.size))
    if positions.size == 0:
        return [Encoding("zeros", "raw", **base)]
    out = []
    for index, gap_type in GAP_TYPES.items():
        gaps, slots = gap_entries(positions, int(np.iinfo(gap_type).max))
        entries = np.zeros(gaps.size, dtype=w.dtype)
        entries[slots] = flat[positions]
        for form, bits, arrays in _value_forms(entries, w.dtype):
            out.append(Encoding(index, form, count=gaps.size, bits=bits,
                                arrays={"gaps": gaps.astype(gap_type), **arrays}, **base))
    mask = np.packbits(flat != 0)
    for form, bits, arrays in _value_forms(flat[positions], w.dtype):
        out.append(Encoding("bitmask", form, count=int(positions.size), bits=bits, arrays={"mask": mask, **arrays},
                            **base))
    return sorted(out, key=lambda e: e.nbytes)


def decode(enc: dict, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The numpy twin of the ONNX decoder: a record (Encoding.record()) and its stored arrays -> the dense weight."""
    shape, dtype = tuple(enc["shape"]), np.dtype(enc["dtype"])
    numel = int(np.prod(shape, dtype=np.int64))
    dense = np.zeros(numel, dtype=dtype)
    if enc["index"] == "zeros":
        return dense.reshape(shape)
    if enc["index"] == "bitmask":
        positions = np.flatnonzero(np.unpackbits(arrays["mask"])[:numel])
    else:
        positions = np.cumsum(arrays["gaps"].astype(np.int64))
    if enc["values"] == "codebook":
        codes = arrays["codes"] if enc["bits"] == 8 else unpack_fields(arrays["codes"], enc["count"], enc["bits"])
        values = arrays["centroids"][codes.astype(np.int64)]
    else:
        values = arrays["values"].astype(dtype)
    if positions.size != values.size or (positions.size and (positions[-1] >= numel or positions.min() < 0)):
        raise ValueError(f"{positions.size} positions (last {positions[-1] if positions.size else '-'}) for "
                         f"{values.size} values in {numel} elements")
    dense[positions] = values
    return dense.reshape(shape)
