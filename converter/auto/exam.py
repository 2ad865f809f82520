"""The final exam: a slice of the decision set that no candidate of the search is judged on, judging its result once.

The search judges many candidates on one decision set and keeps the most pruned one the rule (decide.py) accepts,
so the kept result fits that set's noise (a winner's curse): on small data the rule's one-sided ~84% is the chance
of one look, not of the best of many. LeNet-300-100, 500 unlabelled images (375 deciding), --max-loss 1: four draws
kept 8.77x, 18.9x, 4.31x and 2.15x, the 18.9x changing 1 of its 375 decision samples and 1.82% of 10,000 unseen
training images (tests/corpus/RESULTS.md, "Final exam").

`exam_split` holds out every EXAM_EVERY-th of the decision evaluator's batches (batch parts of at most
calibration.sampling.SPLIT_ROWS samples when the model takes any batch size) on small data (the one-shot start
chosen on the training part, retraining or refit), only where the decision set cannot certify the rule with
recovery.PER_LAYER_Z times the margin (under about 400 samples at 1 pp: there the search's later looks cannot be
judged by that rule), only when the slice alone can certify the budget (BudgetRule.resolves: a share of changed
samples needs 100·z²/budget - z² samples, 99 at 1 pp) and the rest can still decide; the search then decides on
the rest. `final_exam` judges the search's result on the
slice, once, by the run's own rule; when it is rejected, it walks back along the candidates the search kept, most
pruned first (at most EXAM_LOOKS looks, the one-shot start the last), keeping the first the exam accepts, else the
input model. The note says what the exam did.
"""

from __future__ import annotations

import logging

import numpy as np

from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.errors import ConfigError

log = logging.getLogger(__name__)

EXAM_EVERY = 3  # every 3rd batch of the decision set is the exam's (a third of it)
EXAM_LOOKS = 4  # the result, two candidates kept before it, the one-shot start: then the input model


class EvaluatorSlice:
    """An Evaluator (calibration.metrics) seen on some of its batches only: what a BudgetRule reads (`plan`,
    `reference_all`, `labels`, `position_mask`, `crop`, `output_terms`, `run_all`), the rest the evaluator's own."""

    def __init__(self, evaluator, batches: list[int]):
        self.base, self.indices = evaluator, list(batches)
        self.reference_all = [evaluator.reference_all[b] for b in self.indices]
        self.labels = [evaluator.labels[b] for b in self.indices]
        total = max(1, len(evaluator.reference_all))
        seconds = getattr(evaluator, "reference_seconds", None)
        self.reference_seconds = None if seconds is None else seconds * len(self.indices) / total

    def position_mask(self, batch):
        return self.base.position_mask(None if batch is None else self.indices[batch])

    def crop(self, batch):
        return self.base.crop(None if batch is None else self.indices[batch])

    def run_all(self, model_or_session, extra_feeds=None):
        return self.base.run_batches(self.base.session(model_or_session), self.indices, extra_feeds)

    def __getattr__(self, name):  # plan, loss_factors, output_terms, session, dense, masked, padding ...
        return getattr(self.base, name)


def exam_split(evaluator, budget_pp: float) -> tuple[EvaluatorSlice, BudgetRule] | None:
    """(the evaluator the search decides on, the exam's rule), or None: when the decision set certifies the rule
    with recovery.PER_LAYER_Z times the margin (about 400 samples for a changed-class output at 1 pp), the search's
    later looks are judged by that rule and no exam is held (LeNet-300-100, 2,000 images, 1,000 deciding: no draw
    over the budget without one, and an exam cost 44% of the geometric-mean ratio); when the slice alone cannot
    certify the budget, or the rest cannot; for an evaluator with fewer than EXAM_EVERY batches."""
    from onnxprune.converter.auto.recovery import PER_LAYER_Z

    refs = getattr(evaluator, "reference_all", None)
    if not refs or len(refs) < EXAM_EVERY or budget_pp <= 0:
        return None
    try:  # a set that certifies the stricter rule: the search's later looks are judged by it, no exam
        if BudgetRule(evaluator, budget_pp, strictness=PER_LAYER_Z).resolves():
            return None
    except ConfigError:
        return None
    exam, rest = exam_batches(evaluator, len(refs))
    if not exam or not rest:
        return None
    try:
        rule = BudgetRule(EvaluatorSlice(evaluator, exam), budget_pp)
        search = EvaluatorSlice(evaluator, rest)
        if rule.uncertifiable() or not rule.resolves() or BudgetRule(search, budget_pp).uncertifiable():
            return None
    except ConfigError:
        return None
    return search, rule


def exam_batches(evaluator, n: int) -> tuple[list[int], list[int]]:
    """(the exam's batches, the search's) of the evaluator's `n`: every EXAM_EVERY-th batch the exam's, or, where
    batches are the calls of streams (those that follow the one before: the evaluator's `chained`; a greedy
    decoder's feeds split by stream, its reader's `feed_groups`), every EXAM_EVERY-th stream, whole, so that each
    side runs its streams as they run and a decode is judged by one side; where batches hold the rows of a stacked
    decoder's decodes (the evaluator's `batch_groups`, parts cut where no decode goes on), every EXAM_EVERY-th run
    of batches that share no decode with another (decoders 57's L3: every 3rd batch part of 16 rows, most decodes
    on both sides)."""
    chained = list(getattr(evaluator, "chained", None) or [])
    groups = getattr(getattr(evaluator, "reader", None), "feed_groups", None)
    rows = getattr(evaluator, "batch_groups", None)
    if len(chained) == n:
        unit = np.cumsum([not c for c in chained]) - 1
    elif groups is not None and len(groups) == n:
        unit = np.unique(groups, return_inverse=True)[1]
    elif rows is not None and len(rows) == n:
        unit = _sharing(rows)
    else:
        unit = np.arange(n)
    exam = [b for b in range(n) if unit[b] % EXAM_EVERY == EXAM_EVERY - 1]
    return exam, [b for b in range(n) if unit[b] % EXAM_EVERY != EXAM_EVERY - 1]


def _sharing(groups: list[np.ndarray]) -> np.ndarray:
    """Each batch's unit, in order of their first batch: batches whose samples share a group (a decode a batch's end
    cut) are one unit."""
    parent = list(range(len(groups)))

    def root(b: int) -> int:
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        return b

    first: dict[int, int] = {}
    for b, ids in enumerate(groups):
        for g in np.unique(ids).tolist():
            if g in first:
                a, c = root(b), root(first[g])
                parent[max(a, c)] = min(a, c)
            else:
                first[g] = b
    return np.unique([root(b) for b in range(len(groups))], return_inverse=True)[1]


def exam_looks(result, kept: list, start) -> list:
    """The candidates the exam judges in turn: the result, the candidates kept before it (most pruned first), the
    one-shot start last; each model once, at most EXAM_LOOKS."""
    ends = {id(result.model), id(start.model)}
    earlier = [k for k in reversed(kept) if id(k.model) not in ends][: EXAM_LOOKS - 2]
    looks, seen = [], set()
    for candidate in [result, *earlier, start]:
        if id(candidate.model) not in seen:
            seen.add(id(candidate.model))
            looks.append(candidate)
    return looks
