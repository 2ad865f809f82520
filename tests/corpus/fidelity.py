"""The corpus models' own fidelity metrics: how a user of each model would judge a pruned copy against the original.

A card (card.json, written by build_corpus.py) lists checks; each check names one graph output, optionally a slice
of it along one axis, a metric from METRICS, a bar and whether the output matters. A check passes when its figure
is on the right side of its bar (`higher` says which side). Figures are taken over all held-out feeds at once:

    top1_agree     share of rows (all axes but the last) whose argmax over the last axis is the same   >= bar
    thresh_agree   share of elements on the same side of `threshold` (probabilities, VAD decisions)   >= bar
    mask_iou       IoU of the masks {x > threshold} (segmentation / text-detection maps)               >= bar
    ctc_agree      share of samples whose greedy CTC decoding (argmax, collapse repeats, drop blank 0)  >= bar
                   is identical (OCR line recognisers; [N, T, C], or [T, N, C] with time_first)
    exact_agree    share of samples whose output is identical element for element (labels, indices)    >= bar
    rel_l2         ||pruned - original|| / ||original|| over all held-out values (regression, spectra) <= bar
    cosine         mean cosine similarity of the rows (embeddings; the last axis is the vector)        >= bar

A figure outside its bar may still be within the held-out set's own sampling noise (400 files, a bar of 99%: a model
whose true agreement is exactly 99% shows 5 or more changes 37% of the time). `meets_share` says how often a bootstrap
resample of the held-out samples holds the bar; the benchmark reports it beside every failed check.

Non-tensor outputs (skl2onnx's ZipMap: a list of {class: probability}) are turned into a [N, classes] array over the
sorted keys before they are scored, so they are compared by value.

Only numpy here; the benchmark runs the sessions.
"""

from __future__ import annotations

import numpy as np


def as_array(value) -> np.ndarray:
    """An output as a numpy array; a sequence of maps (ZipMap) becomes [N, classes] over the sorted keys."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float64)
    return np.asarray(value)


def take(arr: np.ndarray, sl: dict | None) -> np.ndarray:
    if not sl:
        return arr
    index = [slice(None)] * arr.ndim
    index[sl["axis"]] = slice(sl.get("start"), sl.get("stop"))
    return arr[tuple(index)]


def _rows(a, b):
    return (a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1),
            b.reshape(-1, b.shape[-1]) if b.ndim else b.reshape(1, 1))


def _ctc(seq: np.ndarray) -> tuple:
    ids = seq.argmax(-1)
    out, prev = [], -1
    for i in ids.tolist():
        if i != prev and i != 0:
            out.append(i)
        prev = i
    return tuple(out)


# ---- one definition per metric: each figure is a ratio of sums over held-out samples ------------------------------
# `_terms` gives one (original, pruned) pair's (numerator, denominator): agreeing rows / rows, intersection / union,
# squared error / squared reference, ...; a figure sums them over the pairs (`_finish`). A bootstrap over the held-out
# samples (`meets_share`) resamples the same terms.

def _terms(metric: str, a: np.ndarray, b: np.ndarray, threshold: float = 0.5, time_first: bool = False):
    """(numerator, denominator) of `metric` on one pair of outputs (a batch, a feed or one sample)."""
    if metric == "top1_agree":
        x, y = _rows(a, b)
        return float((x.argmax(-1) == y.argmax(-1)).sum()), float(x.shape[0])
    if metric == "cosine":
        x, y = (r.astype(np.float64) for r in _rows(a, b))
        sims = (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-30)
        return float(sims.sum()), float(len(sims))
    if metric == "thresh_agree":
        return float(((a > threshold) == (b > threshold)).sum()), float(a.size)
    if metric == "mask_iou":
        ma, mb = a > threshold, b > threshold
        return float((ma & mb).sum()), float((ma | mb).sum())
    if metric == "ctc_agree":
        if time_first:  # [T, N, C] -> [N, T, C]
            a, b = np.moveaxis(a, 0, 1), np.moveaxis(b, 0, 1)
        a3, b3 = a.reshape(-1, a.shape[-2], a.shape[-1]), b.reshape(-1, b.shape[-2], b.shape[-1])
        return float(sum(_ctc(x) == _ctc(y) for x, y in zip(a3, b3))), float(len(a3))
    if metric == "exact_agree":
        n = a.shape[0] if a.ndim else 1
        return float((a.reshape(n, -1) == b.reshape(n, -1)).all(axis=1).sum()), float(n)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)  # rel_l2
    return float(((b64 - a64) ** 2).sum()), float((a64 ** 2).sum())


def _finish(metric: str, num, den):
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if metric == "rel_l2":
        return np.where(den > 0, np.sqrt(num / np.maximum(den, 1e-300)), np.sqrt(num))
    if metric == "mask_iou":
        return np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
    return num / np.maximum(den, 1.0)


def figure(metric: str, pairs, threshold: float = 0.5, time_first: bool = False) -> float:
    """`metric` over all pairs at once (the sums pooled, then the ratio)."""
    terms = [_terms(metric, a, b, threshold, time_first) for a, b in pairs]
    return float(_finish(metric, sum(t[0] for t in terms), sum(t[1] for t in terms)))


def units(pairs, *, per_feed: bool, time_first: bool = False):
    """The held-out samples as (original, pruned) pairs: a folder's feeds as they are (one complete feed each),
    a stacked file's batches split along the sample axis (axis 1 for a time-first output)."""
    if per_feed:
        return list(pairs)
    axis = 1 if time_first else 0
    out = []
    for a, b in pairs:
        if a.ndim <= axis:
            out.append((a, b))
            continue
        out.extend((np.take(a, [i], axis=axis), np.take(b, [i], axis=axis)) for i in range(a.shape[axis]))
    return out


def meets_share(check: dict, original: list, pruned: list, *, per_feed: bool, resamples: int = 2000,
                seed: int = 0) -> float:
    """The share of bootstrap resamples of the held-out samples (same size, with replacement) on which the figure
    holds its bar: about 0.5 for a figure at its bar; a figure outside its bar with a share under 0.05 is beyond
    what the held-out set's own sampling noise explains (a one-sided 95% percentile test). NaN when the shapes
    differ."""
    pairs = _pairs(check, original, pruned)
    if pairs is None:
        return float("nan")
    kw = {"threshold": check.get("threshold", 0.5), "time_first": check.get("time_first", False)}
    terms = np.array([_terms(check["metric"], a, b, **kw)
                      for a, b in units(pairs, per_feed=per_feed, time_first=kw["time_first"])], dtype=np.float64)
    n = len(terms)
    if n == 0:
        return float("nan")
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    figures = _finish(check["metric"], counts @ terms[:, 0], counts @ terms[:, 1])
    higher = METRICS[check["metric"]]
    return float(np.mean(figures >= check["bar"] if higher else figures <= check["bar"]))


# name -> higher is better
METRICS = {"top1_agree": True, "thresh_agree": True, "mask_iou": True, "ctc_agree": True, "exact_agree": True,
           "rel_l2": False, "cosine": True}


def _pairs(check: dict, original: list, pruned: list):
    """The check's (original, pruned) arrays per feed, sliced as it says; None when their shapes differ."""
    pairs = [(take(as_array(a), check.get("slice")), take(as_array(b), check.get("slice")))
             for a, b in zip(original, pruned)]
    return None if any(a.shape != b.shape for a, b in pairs) else pairs


def score(check: dict, original: list, pruned: list) -> tuple[float, bool]:
    """(figure, passed) of one card check over per-feed output lists of the original and the pruned model."""
    pairs = _pairs(check, original, pruned)
    if pairs is None:
        return float("nan"), False
    value = figure(check["metric"], pairs, check.get("threshold", 0.5), check.get("time_first", False))
    return value, (value >= check["bar"]) if METRICS[check["metric"]] else (value <= check["bar"])
