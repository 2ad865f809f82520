"""Fewer bits per surviving weight (Deep Compression's second stage): fp16, or an n-bit codebook per layer.

  bits = 16   every nonzero value rounded to the nearest fp16 (a value that would round to 0 keeps its sign at the
              smallest fp16 subnormal, so the mask never changes).
  bits = n<=8 a per-layer codebook of 2^n shared values: 1-D k-means on the layer's nonzero values, centroids
              initialised evenly between their min and max (Han et al. 2016 found this linear init best, as it
              keeps the few large weights), Lloyd iterations until no value changes cluster; every nonzero is
              replaced by its centroid. Zeros stay zero (the codebook covers the survivors only). When the layer's
              uint8 relative indices need filler entries (a gap over 255), those fillers need a code for 0, so the
              layer gets 2^n - 1 centroids and its codes still fit in n bits.
The pass changes values, not the graph's structure; the model it returns is the oracle the final file is checked
against, and `compact` storage then stores these values exactly (fp16 or an n-bit code per nonzero).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.errors import PassError
from onnxprune.passes.base import Pass, PassResult, PruneState, register_pass
from onnxprune.passes.storage.packing import gap_entries
from onnxprune.passes.weights import constant_tensors

log = logging.getLogger(__name__)
BITS = (16, 8, 7, 6, 5, 4, 3, 2, 1)
FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)


def kmeans_1d(values: np.ndarray, k: int, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(centroids sorted ascending, code of each value): Lloyd's algorithm in 1-D, linear initialisation.

    In 1-D the clusters are runs of the sorted values split at the midpoints between centroids, so one iteration
    is a binary search per boundary and prefix-sum differences: O(k log n), whatever the layer's size.
    """
    xs = np.sort(values.astype(np.float64))
    prefix = np.concatenate([[0.0], np.cumsum(xs)])
    centroids = np.linspace(xs[0], xs[-1], k)
    edges = None
    for _ in range(max_iter):
        new = np.concatenate([[0], np.searchsorted(xs, (centroids[1:] + centroids[:-1]) / 2, side="right"), [len(xs)]])
        if edges is not None and np.array_equal(new, edges):
            break
        edges = new
        counts = np.diff(edges)
        sums = prefix[edges[1:]] - prefix[edges[:-1]]
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
    codes = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, values.astype(np.float64))
    return centroids, codes


def shared_codes(w: np.ndarray) -> np.ndarray:
    """The index of each weight's value among the layer's distinct nonzero values; -1 where the weight is 0 (what
    MaskedTrainer.set_codebooks takes to fine-tune the shared values)."""
    codes = np.full(w.shape, -1, dtype=np.int64)
    nz = w != 0
    codes[nz] = np.unique(w[nz], return_inverse=True)[1].reshape(-1)
    return codes


def quantize_fp16(w: np.ndarray, name: str) -> np.ndarray:
    nz = w != 0
    if np.abs(w[nz]).max(initial=0) > np.finfo(np.float16).max:
        raise PassError(f"weight '{name}' has values beyond the fp16 range (±65504); use --weight-bits 8 or lower.")
    q = w.astype(np.float16).astype(w.dtype)
    lost = nz & (q == 0)
    q[lost] = np.sign(w[lost]) * FP16_TINY
    return q


def quantize_codebook(w: np.ndarray, bits: int) -> np.ndarray:
    """Every nonzero replaced by its k-means centroid (2^bits of them; fewer when the layer has fewer values)."""
    nz = np.flatnonzero(w)
    values = w.reshape(-1)[nz]
    gaps, _ = gap_entries(nz, int(np.iinfo(np.uint8).max))
    k = min(2**bits - (len(gaps) > len(nz)), len(np.unique(values)))
    if k <= 0:
        return w.copy()
    centroids, codes = kmeans_1d(values, k)
    q = centroids.astype(w.dtype)[codes]
    q[q == 0] = np.sign(values[q == 0]) * np.finfo(w.dtype).smallest_subnormal  # a survivor stays a survivor
    out = np.zeros_like(w).reshape(-1)
    out[nz] = q
    return out.reshape(w.shape)


@register_pass("quantize")
class QuantizeWeights(Pass):
    """Round the named float weights' nonzero values to `bits` (16: fp16; n <= 8: a per-layer 2^n codebook; a dict
    gives each weight its own width).

    Rules:
      1. Zeros stay zero and nonzeros stay nonzero: the sparsity pattern is untouched.
      2. Non-float weights are left alone. `state.notes` gets one line with the worst relative change.
    """

    def __init__(self, names: list[str], bits: int | dict[str, int]):
        self.widths = bits if isinstance(bits, dict) else {n: bits for n in names}
        bad = sorted({b for b in self.widths.values() if b not in BITS})
        if bad:
            raise ValueError(f"--weight-bits {bad[0]} is not one of {BITS}")
        self.names, self.bits = names, bits
        self.changes: dict[str, float] = {}  # weight -> max |change| / max |weight|

    def run(self, model: onnx.ModelProto, state: PruneState) -> PassResult:
        tensors = constant_tensors(model)
        for name in self.names:
            w = numpy_helper.to_array(tensors[name])
            if w.dtype.kind != "f" or not w.size:
                continue
            bits = self.widths.get(name)
            if bits is None:
                continue
            q = quantize_fp16(w, name) if bits == 16 else quantize_codebook(w, bits)
            scale = float(np.abs(w).max()) or 1.0
            self.changes[name] = float(np.abs(q.astype(np.float64) - w).max()) / scale
            tensors[name].CopyFrom(numpy_helper.from_array(q, tensors[name].name))
        if self.changes:
            worst = max(self.changes, key=self.changes.get)
            kind = ("fp16" if self.bits == 16 else f"{2**self.bits}-value codebook per layer"
                    if isinstance(self.bits, int) else "bits per layer")
            state.notes.append(f"--weight-bits {self.bits}: {len(self.changes)} weight(s) quantized ({kind}); "
                               f"largest change {100 * self.changes[worst]:.2g}% of the layer's range ('{worst}').")
        return PassResult(model=model, modified=bool(self.changes))
