"""The allocation the search learns: one global target, distributed over layers by layer-adaptive scores.

Each round asks for a total number of kept weights; which layer keeps how many is decided from the current,
retrained weights by LAMP (Lee et al., ICLR 2021): within a layer the weights are sorted by their criterion score
s (magnitude |w| by default) ascending, and weight i gets

    lamp_i = s_i² / Σ_{j ≥ i} s_j²

(its share of the squared scores of itself and everything larger in the same layer). The globally lowest LAMP
scores go. The largest weight of every layer scores 1, so no layer is emptied, and a layer whose weights are all
alike keeps more than one whose few large weights carry it: the allocation shifts as retraining moves the weights
(the one-shot scan keeps 70% of LeNet-300-100's fc1 at --max-loss 0, where retraining takes it to ~2%).

The criterion is the run's --criterion (passes/criteria, a Scorer bound once to the dense model: a data-driven
criterion's statistics are the dense model's on the training part, its scores are of the current weights). A
criterion ranked within each output row (Wanda) keeps the counts LAMP gives each layer, chosen within the layer per
row (rank.keep_mask), as its one-shot path does. Measured with wanda against LAMP over its scores layer-wide
(bench_corpus --time-budget 3m, label-free, one run each, the layer-wide runs beside another job): rapidocr_cls
1.88x per row / 1.50x layer-wide, torch_encoder_dynamo 2.04x / 2.00x, keras_gru, mtcnn_rnet, rapidocr_det the same.
"""

from __future__ import annotations

import numpy as np

from onnxprune.passes.criteria import Scorer
from onnxprune.passes.criteria.rank import keep_mask


def lamp_scores(score: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """LAMP score per entry of one layer (flattened); pruned entries (keep False) get -1."""
    s = np.where(keep.reshape(-1), score.reshape(-1).astype(np.float64), 0.0)
    alive = np.flatnonzero(keep.reshape(-1))
    out = np.full(s.size, -1.0)
    if not alive.size:
        return out
    order = alive[np.argsort(s[alive], kind="stable")]
    sq = np.square(s[order])
    suffix = np.cumsum(sq[::-1])[::-1]
    out[order] = np.where(suffix > 0, sq / np.where(suffix > 0, suffix, 1.0), 0.0)
    out[order[-1]] = max(out[order[-1]], 1.0)  # the layer's strongest weight always stays
    return out


def global_masks(weights: dict[str, np.ndarray], masks: dict[str, np.ndarray], keep_total: int,
                 scorer: Scorer | None = None) -> dict[str, np.ndarray]:
    """Masks keeping the `keep_total` weights with the highest LAMP scores over all layers (never regrowing), ranked
    by `scorer` (magnitude when None). A layer keeps at least its best weight: every layer's best has LAMP score 1,
    and a level past all of them emptied a layer whose outputs the bias alone held (a helper's Gemm whose bias
    decides every class: "sparsity 1.0 is outside [0, 1)" from the search)."""
    scorer = scorer or Scorer()
    names = [n for n in masks if n in weights]
    scores = {n: scorer.rescore(n, weights[n]) for n in names}
    pinned = {n: pinned_entries(scorer, n, masks[n]) for n in names}
    # a layer's LAMP is over the entries that may go: with the pinned ones in its sums (ranked last, so scored above
    # every other), every other entry of the layer scored near 0 and went first (the corpus encoder's table, 76 of
    # 257 rows read: each weight level emptied the rows the data reads, loss 59 pp)
    lamps = {n: lamp_scores(scores[n], masks[n] & ~pinned[n]) for n in names}
    for n in names:  # each layer's best alive weight is not a candidate to drop, nor are its pinned entries
        flat = lamps[n].reshape(-1)
        free = (masks[n] & ~pinned[n]).reshape(-1)
        if free.any():
            flat[int(np.argmax(np.where(free, flat, -np.inf)))] = np.inf
        flat[(masks[n] & pinned[n]).reshape(-1)] = np.inf
    alive = sum(int(masks[n].sum()) for n in names)
    out = {n: m.copy() for n, m in masks.items()}
    drop = alive - max(int(keep_total), 0)
    if drop <= 0:
        return out
    allv = np.concatenate([lamps[n] for n in names])
    idx = np.flatnonzero(allv >= 0)
    # lowest scores first; ties broken by position (deterministic)
    gone = idx[np.argsort(allv[idx], kind="stable")[:drop]]
    flat = np.zeros(allv.size, dtype=bool)
    flat[gone] = True
    start = 0
    for n in names:
        size = masks[n].size
        out[n] = masks[n] & ~flat[start:start + size].reshape(masks[n].shape)
        start += size
        axis = scorer.axis(n)
        if axis is not None and out[n].sum() < masks[n].sum():  # the layer's count, chosen per output row
            rows = keep_mask(scores[n], 1.0 - out[n].sum() / size, masks[n], axis)
            if rows.any():  # a count under one weight a row would empty the layer: LAMP's own choice stays
                out[n] = rows
    return out


def pinned_entries(scorer: Scorer, name: str, mask: np.ndarray) -> np.ndarray:
    """The entries of weight `name` the scorer ranks after every other (`Scorer.last`: embedding rows no sample
    reads, given back their input values after the search), as a mask of `mask`'s shape; none for other weights.
    They are kept at every level and left out of the counts a level takes a share of."""
    last = getattr(scorer, "last", {}).get(name)  # (a scorer without a `last` ranks nothing last)
    if last is None or np.shape(last) != np.shape(mask):
        return np.zeros(np.shape(mask), dtype=bool)
    return np.asarray(last, dtype=bool)


def density(masks: dict[str, np.ndarray]) -> float:
    total = sum(m.size for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / total if total else 1.0
