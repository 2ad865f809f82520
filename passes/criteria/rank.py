"""One ranking routine: scores + a target sparsity + the current mask -> the keep-mask.

Every path that prunes by a criterion comes here (one-shot, iterative rounds, the budget search, the sensitivity
scan, the one-shot budget fit). Rules:
  1. Exactly round(s·n) weights of a comparison group go (n its size), ties broken by position (the first of a
     stable argsort), in O(n) per layer (`smallest`: a partition finds the cut value).
  2. Never regrow: a weight already pruned stays pruned and counts first toward the drop count; when more are
     already pruned than s asks, none comes back.
  3. The comparison group is the whole layer, or each output row (`axis` = the weight's output-channel axis):
     Wanda ranks within each output, so every output keeps the same share of its inputs.

    scores  [[.9 .1 .5]      s = 1/3, per row (axis 0)     keep [[1 0 1]
             [.2 .8 .3]]                                         [0 1 1]]
"""

from __future__ import annotations

import numpy as np


def smallest(values: np.ndarray, n: int) -> np.ndarray:
    """Mask of the `n` smallest entries of a 1-D array, ties broken by position: the first n of a stable argsort,
    in O(size) (a partition finds the n-th value; a full sort of VGG-16's 103M fc6 weights took 20 s)."""
    out = np.zeros(values.size, dtype=bool)
    if n <= 0:
        return out
    if n >= values.size:
        out[:] = True
        return out
    nth = np.partition(values, n - 1)[n - 1]
    out = values < nth
    out[np.flatnonzero(values == nth)[: n - int(out.sum())]] = True
    return out


def keep_mask(scores: np.ndarray, sparsity: float, current: np.ndarray | None = None,
              axis: int | None = None) -> np.ndarray:
    """Keep the highest scores: drop exactly round(s·n) per group (pruned ones first), never regrow.

    `axis` None ranks the whole layer; an int ranks each slice along it (an output row) on its own.
    """
    scores = np.asarray(scores)
    if axis is not None and scores.ndim > 1:
        moved = np.moveaxis(scores, axis, 0)
        keep = None if current is None else np.moveaxis(current, axis, 0)
        rows = [_keep_flat(moved[r].reshape(-1), sparsity, None if keep is None else keep[r].reshape(-1),
                           keep_one=False) for r in range(moved.shape[0])]  # a row may empty (a dead neuron)...
        out = np.moveaxis(np.stack(rows).reshape(moved.shape), 0, axis)
        if sparsity < 1.0 and not out.any() and scores.size and (current is None or current.any()):  # ... the
            # layer keeps its best weight (never a regrown one)
            best = np.where(current, scores, -np.inf) if current is not None else scores
            out = np.array(out)  # a view through moveaxis: set on a copy
            out[np.unravel_index(int(np.argmax(best)), out.shape)] = True
        return out
    flat = _keep_flat(scores.reshape(-1), sparsity, None if current is None else current.reshape(-1))
    return flat.reshape(scores.shape)


def _keep_flat(scores: np.ndarray, sparsity: float, current: np.ndarray | None, keep_one: bool = True) -> np.ndarray:
    rank = scores.astype(np.float64, copy=False)
    n_drop = int(round(sparsity * rank.size))
    if keep_one and sparsity < 1.0 and rank.size:  # a sparsity under 1 keeps a weight: 0.99 of 20 rounded to all
        n_drop = min(n_drop, rank.size - 1)  # 20 (a helper's Gemm, emptied: "sparsity 1.0 is outside [0, 1)")
    if current is not None:
        rank = np.where(current, rank, -np.inf)
        n_drop = max(n_drop, int(rank.size - current.sum()))
    return ~smallest(rank, n_drop)


def kth_smallest(values: np.ndarray, k: int) -> float:
    """The k-th smallest entry (0-based) of a flat array, in O(n): the cut value of a drop count k + 1."""
    flat = np.asarray(values).reshape(-1)
    return float(np.partition(flat, k)[k])
