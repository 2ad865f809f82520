"""Measure a candidate on as few calibration batches as decide it (the budgeted scan and the one-shot fit).

Every scored output is measured (the run's loss is the worst output's, calibration.metrics). A measurement runs
the batches in a seeded random order (the reader's order when the data is streamed) and keeps, per output, the
per-sample terms of its metric (`Metric.samples`): each term column j is a ratio R_j = sum_i t_ij / sum_i c_i
(c_i = 1, or a sample's positions for seq_agreement) whose loss against the dense model's own ratio D_j is
100 * (D_j - R_j) pp (100 * (R_j - D_j) where lower is better: relative error, probability change). After k of N
samples each ratio has the standard error of a ratio estimator with the finite-population correction,

    se_j = sqrt(var_i(t_ij - R_j c_i) / k) / mean_i(c_i) * sqrt((N - k) / (N - 1))        (0 once all N are in)

and against a threshold T (pp; or T_j per output and term: the decision rule's ceilings, below) the measurement
stops when

    certain some output's loss_j is over T_j on the whole set      every sample counts 1, and even were each sample
            whatever the samples not run turn out to be             left as good as a sample can be (agreeing,
                                                                    right, no error), the whole set's ratio stays
                                                                    over: exact, no statistics
    over    some output's loss_j - Z * se_j > T                    over T whatever the other samples say
    known   every Z * se_j <= PRECISION * T                         the loss known to +-25% of T, whichever side of
            (only when every scored output is `continuous`:         T it is: the verdict is then its estimate
            "no changed class in 64 samples" does not bound a       against T (a level clearly under, or one too
            1 pp loss, a clean relative error on 64 samples does)   close to T for the samples left to settle)

"certain" asked after every batch (it is exact), the others when the samples seen first reach MIN_SAMPLES, then
each time they have doubled (about log2(N / 8) looks,
so the 3-sigma rule stays a rare false verdict however many batches there are). A measurement that runs to the end
is the exact metric (the Evaluator's own sums, added in the reader's order: the same number `Evaluator.score`
gives); a stopped one reports the estimate from the samples it ran (`Measured.samples` < `Measured.total`).
"known" was "under" (every loss_j + Z * se_j < T as well): a level within +-25% of the budget then ran on every
sample, which settled its side of T and nothing else the allocation reads (it interpolates the curve to the
first level over, known to the same precision): on the 22.6M-parameter encoder 7 of the scan's levels ran all 240
samples and 2 ran 128, about a fifth of its sample-probes; with "known" every level stopped at 16 but one, at 32.
Per-term thresholds (`Threshold`): a rule that accepts a share of changed samples only up to a count (Wilson's
bound: 0 changed lines of 240 at 1 pp, converter.auto.decide) makes every level that changed more samples than
that useless to a plan it judges; with T_j = 100 * that count / N the "certain" stop ends such a level on the
first changed sample too many, where "over" at 3 standard errors needs hundreds of samples for a loss of a few pp
(rapidocr_rec's scan ran every one of its 240 lines on most levels, `Measured.certain` says which stops were so).
Samples are counted in each output's own unit (`Evaluator.units`: rows along its sample axis, one per batch for an
output that follows no batch), the finite-population correction of each output from its own total. A stop happens
on a batch boundary: a run's Evaluator holds stacked data in parts of at most SPLIT_ROWS samples
(when the model takes any batch size), per-feed data one feed per batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxprune.calibration.decide import TOLERANCE_PP, within_budget
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import METRICS, count_samples
from onnxprune.calibration.runtime import FAILED_LOSS_PP, run_failure, say_failed_candidate

Z = 3.0
PRECISION = 0.25
MIN_SAMPLES = 8
SPLIT_ROWS = 16  # a run's Evaluator cuts cached stacked batches to this many samples, so a stop can come early
SEED = 0

# order -> the scored outputs (a tuple per batch, as Evaluator.run_all gives them) of the batches in that order
Batches = Callable[[Sequence[int]], Iterable[tuple]]
# what a measurement is judged against: one loss in pp for every output and term, or per scored output an array of
# its terms' ceilings (pp): the decision rule's (converter.auto.decide `BudgetRule.point_ceilings`); pp of the run's
# budget, as every loss here (an output with its own budget, --max-loss OUTPUT=L: Evaluator.loss_factor)
Threshold = float | Sequence[np.ndarray]


@dataclass
class Measured:
    value: float  # the combined metric in %: exact when complete, estimated from the samples run otherwise
    loss_pp: float  # dense - value (the worst output's loss)
    samples: int  # samples run
    total: int
    sums: dict = field(default_factory=dict, repr=False)  # batch -> its per-output sums (`resume` goes on from them)
    moments: list = field(default_factory=list, repr=False)  # per output, the running moments of the samples run
    certain: bool = False  # stopped because no samples left could bring some term back under its threshold
    failed: str = ""  # onnxruntime could not run the candidate on a batch the input model ran: this reason

    @property
    def complete(self) -> bool:
        return self.samples >= self.total


class _Moments:
    """Running sums of one output's per-sample terms: k, sum c, sum c^2, and per column sum t, sum t^2, sum tc."""

    def __init__(self, columns: int):
        self.k, self.c, self.cc = 0, 0.0, 0.0
        self.t, self.tt, self.tc = np.zeros(columns), np.zeros(columns), np.zeros(columns)

    def add(self, terms: np.ndarray, counts: np.ndarray) -> None:
        c = counts.astype(np.float64)
        self.k += len(c)
        self.c += float(c.sum())
        self.cc += float(c @ c)
        self.t += terms.sum(axis=0)
        self.tt += np.square(terms).sum(axis=0)
        self.tc += c @ terms

    def ratio_and_se(self, total: int) -> tuple[np.ndarray, np.ndarray]:
        """Each column's ratio and its standard error (finite population of `total` samples)."""
        ratio = self.t / max(self.c, 1e-300)
        if self.k < 2:
            return ratio, np.full_like(ratio, np.inf)
        residual = self.tt - 2.0 * ratio * self.tc + ratio * ratio * self.cc  # sum_i (t_i - R c_i)^2
        var = np.maximum(residual, 0.0) / (self.k - 1)
        fpc = math.sqrt(max(0.0, total - self.k) / max(1, total - 1))
        return ratio, np.sqrt(var / self.k) / (self.c / self.k) * fpc


class SequentialScorer:
    """Scores candidates batch by batch against an Evaluator's dense reference, stopping once the verdict is clear.

    Stops early only with a dense reference (`sequential`); without one every batch is run, in the reader's order.
    """

    def __init__(self, evaluator: Evaluator, *, seed: int = SEED, z: float = Z, precision: float = PRECISION,
                 min_samples: int = MIN_SAMPLES):
        self.evaluator = evaluator
        self.kinds = list(evaluator.plan.values())
        self.batches = len(evaluator.labels)
        self.z, self.precision, self.min_samples = z, precision, max(2, min_samples)
        self.sequential = evaluator.reference_all is not None and evaluator.dense is not None
        # each output's loss in pp of the run's budget (an output with its own budget: Evaluator.loss_factor)
        # or each term column's, where an output's parts have budgets of their own (Evaluator.part_factor)
        factors = getattr(evaluator, "part_factors", None) or getattr(evaluator, "loss_factors", None)
        self.factors = [np.asarray(f, dtype=np.float64) for f in (factors or [1.0] * len(self.kinds))]
        self.continuous = all(METRICS[k].continuous for k in self.kinds)
        self.order = (list(range(self.batches)) if not (self.sequential and evaluator.cached) else
                      [int(i) for i in np.random.default_rng(seed).permutation(self.batches)])
        if self.sequential:
            refs = evaluator.reference_all
            units = getattr(evaluator, "units", None) or [tuple(count_samples(v) for v in r) for r in refs]
            self.sizes = [u[0] for u in units]  # samples per batch (the headline output's, in its sample unit)
            self.totals = [sum(u[o] for u in units) for o in range(len(self.kinds))]  # each output's population
            self.dense_ratios = self._dense_ratios(refs)
        self.total = sum(self.sizes) if self.sequential else (evaluator.num_samples or 0)

    def _dense_ratios(self, refs) -> list[np.ndarray | None]:
        """Each output's ratios for the dense model itself (what a candidate's ratios are compared with)."""
        moments: list[_Moments | None] = [None] * len(self.kinds)
        for b, (ref, labels) in enumerate(zip(refs, self.evaluator.labels)):
            for o, got in enumerate(self.evaluator.batch_samples(ref, ref, labels, b)):
                if got is not None:
                    moments[o] = moments[o] or _Moments(got[0].shape[1])
                    moments[o].add(*got)
        return [None if m is None else m.t / max(m.c, 1e-300) for m in moments]

    def measure(self, batches: Batches, threshold: Threshold | None = None, *, stop_known: bool = True,
                estimate: bool = True) -> Measured:
        """The candidate's combined metric; with a threshold (pp of loss, or per output and term: `Threshold`),
        stop as soon as over it is clear (or, with `stop_known`, the loss is known to +-PRECISION of it); with
        `estimate` False only once over it is certain (every other measurement runs to the end: its loss is exact).
        `batches(order)` yields the candidate's scored outputs."""
        return self._run(batches, {}, None if threshold is None else self.ceilings(threshold), stop_known,
                         estimate=estimate)

    def ceilings(self, threshold: Threshold) -> list[np.ndarray]:
        """Per scored output, each term's threshold in pp (a single number stands for every term)."""
        if isinstance(threshold, (int, float)):
            return [np.full(len(METRICS[k].lower_better), float(threshold)) for k in self.kinds]
        ceilings = [np.asarray(c, dtype=np.float64) for c in threshold]
        if len(ceilings) != len(self.kinds) or any(len(c) != len(METRICS[k].lower_better)
                                                    for c, k in zip(ceilings, self.kinds)):
            raise ValueError(f"thresholds {threshold} do not match the scored outputs' terms {self.kinds}")
        return ceilings

    def within(self, measured: Measured, threshold: Threshold) -> bool:
        """Whether every scored output's terms are within their thresholds (the point estimates of the samples run;
        the exact loss once every sample ran). Without per-term moments (no dense reference): the combined loss
        against the smallest threshold."""
        ceilings = self.ceilings(threshold)
        bounds = self._every_bound(measured)
        if bounds is None:
            return within_budget(measured.loss_pp, min(float(np.min(c)) for c in ceilings))
        return all(bool(np.all(loss <= ceilings[o] + TOLERANCE_PP)) for o, loss, _ in bounds)

    def resume(self, batches: Batches, measured: Measured, precision: float | None = None,
               threshold: float = 0.0) -> Measured:
        """A stopped measurement run on (only the batches it had not run): to the end, or with `precision` until
        every output's loss is known to within that share of itself (Z·SE <= precision · max(|loss|, threshold)),
        at the same doubling looks."""
        if measured.complete:
            return measured
        if precision is None or not self.sequential or len(measured.moments) != len(self.kinds):
            return self._run(batches, dict(measured.sums), None, False)
        if self._precise(measured.moments, precision, threshold):
            return measured  # known that well already
        moments = [None if m is None else copy.deepcopy(m) for m in measured.moments]
        return self._run(batches, dict(measured.sums), None, False, precise=(precision, threshold),
                         moments=moments, seen=measured.samples)

    def _run(self, batches: Batches, sums: dict[int, list], threshold: list[np.ndarray] | None, stop_known: bool, *,
             precise: tuple[float, float] | None = None, moments: list | None = None, seen: int = 0,
             estimate: bool = True) -> Measured:
        ev = self.evaluator
        moments = moments or [None] * len(self.kinds)
        look = self.min_samples
        while look <= seen:
            look *= 2
        refs = ev.reference_all or [None] * self.batches
        order = [b for b in self.order if b not in sums]
        try:
            return self._batches_run(batches, order, refs, sums, threshold, stop_known, precise, moments, seen, look,
                                     estimate)
        except Exception as exc:
            reason = run_failure(exc)
            if reason is None or not self.sequential:  # a bug, or no input model's run on these batches to hold to
                raise
            say_failed_candidate(reason, ev)
            dense = 100.0 * ev.dense
            return Measured(dense - FAILED_LOSS_PP, FAILED_LOSS_PP, self.total, self.total, {},
                            [None] * len(self.kinds), certain=True, failed=reason)

    def _batches_run(self, batches: Batches, order: list[int], refs, sums: dict[int, list],
                     threshold: list[np.ndarray] | None, stop_known: bool, precise, moments: list, seen: int,
                     look: int, estimate: bool) -> Measured:
        """`_run`'s loop over the batches in `order`."""
        ev = self.evaluator
        for b, values in zip(order, batches(order), strict=False):
            got = ev.batch_samples(values, refs[b], ev.labels[b], b)
            sums[b] = [None if g is None else (g[0].sum(axis=0), int(g[1].sum())) for g in got]
            if (threshold is None and precise is None) or not self.sequential:
                continue
            for o, g in enumerate(got):
                if g is not None:
                    moments[o] = moments[o] or _Moments(g[0].shape[1])
                    moments[o].add(*g)
            seen += self.sizes[b]
            if len(sums) >= self.batches:
                continue
            if precise is None and self._certain(moments, threshold):  # exact: asked after every batch
                return self._result(sums, seen, moments, certain=True)
            if seen < look:
                continue
            while look <= seen:
                look *= 2  # looks at doubling sample counts: few looks, few false verdicts
            if precise is not None and self._precise(moments, *precise):
                return self._result(sums, seen, moments)
            if precise is None and estimate and self._decided(moments, seen, threshold, stop_known):
                return self._result(sums, seen, moments)
        return self._result(sums, None, moments)

    def upper(self, measured: Measured) -> float | None:
        """The largest whole-set loss (pp) the samples run leave likely: over every scored output and term, the
        estimate plus Z standard errors (the exact loss once every sample ran); None when a measurement kept no
        moments or an output had nothing to compare yet."""
        bounds = self._every_bound(measured)
        return None if bounds is None else max(float(np.max(loss + half)) for _, loss, half in bounds)

    def _every_bound(self, measured: Measured) -> list[tuple[int, np.ndarray, np.ndarray]] | None:
        """`_bounds` of every scored output, or None when a measurement kept no moments or an output had nothing to
        compare yet."""
        moments = measured.moments
        if not self.sequential or len(moments) != len(self.kinds):
            return None
        bounds = list(self._bounds(moments))
        return bounds if len(bounds) == len(self.kinds) else None

    def _precise(self, moments: list[_Moments | None], precision: float, threshold: float) -> bool:
        """Every output's loss known to within `precision` of itself (or of the threshold, when smaller)."""
        return all(np.all(half <= precision * np.maximum(np.abs(loss), threshold))
                   for _, loss, half in self._bounds(moments))

    def _bounds(self, moments: list[_Moments | None]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Per measured output: its index, each term column's loss (pp) against the dense model and Z standard
        errors of it, in pp of the run's budget (divided by the output's `loss_factor`: every threshold here is)."""
        for o, m in enumerate(moments):
            if m is None or self.dense_ratios[o] is None:
                continue
            ratio, se = m.ratio_and_se(self.totals[o])
            sign = np.where(np.asarray(METRICS[self.kinds[o]].lower_better), -1.0, 1.0)
            f = self.factors[o]
            yield o, 100.0 * sign * (self.dense_ratios[o] - ratio) / f, 100.0 * self.z * se / f

    def _floor(self, o: int, m: _Moments) -> np.ndarray | None:
        """The least whole-set loss (pp) each term of output `o` can still end at, whatever the samples not run
        are: each of them as good as a sample can be (a term where higher is better at its count: agreeing,
        right, cosine 1; an error at 0). None unless every sample counts 1 (the samples left then count
        total - k; a sequence's positions or a feed's pooled rows are not known before they run)."""
        total = self.totals[o]
        if abs(m.c - m.k) > 1e-9 or not total:
            return None
        lower = np.asarray(METRICS[self.kinds[o]].lower_better)
        best = np.where(lower, m.t, m.t + max(0, total - m.k)) / total
        return 100.0 * np.where(lower, -1.0, 1.0) * (self.dense_ratios[o] - best) / self.factors[o]

    def _result(self, sums: dict[int, list], seen: int | None, moments: list | None = None, *,
                certain: bool = False) -> Measured:
        """The combined metric from the batches run, added in the reader's order."""
        ev = self.evaluator
        totals: list = [None] * len(self.kinds)
        counts = [0] * len(self.kinds)
        for b in sorted(sums):
            for o, got in enumerate(sums[b]):
                if got is not None:
                    totals[o] = np.asarray(got[0], dtype=np.float64) + (0.0 if totals[o] is None else totals[o])
                    counts[o] += got[1]
        value = 100.0 * (ev.combine_sums(totals, counts) if hasattr(ev, "combine_sums") else
                         ev.combine(ev.finish_outputs(totals, counts)))
        dense = 100.0 * ev.dense if ev.dense is not None else float("nan")
        done = self.total if seen is None else seen
        return Measured(value, dense - value, done, self.total, sums, list(moments or []), certain)

    def _certain(self, moments: list[_Moments | None], ceilings: list[np.ndarray]) -> bool:
        """Some term over its threshold on the whole set, whatever the samples not run turn out to be (`_floor`)."""
        for o, m in enumerate(moments):
            if m is not None and self.dense_ratios[o] is not None:
                floor = self._floor(o, m)
                if floor is not None and np.any(floor > ceilings[o] + TOLERANCE_PP):
                    return True
        return False

    def _decided(self, moments: list[_Moments | None], seen: int, ceilings: list[np.ndarray],
                 stop_known: bool) -> bool:
        """Over by 3 standard errors, or (continuous metrics, `stop_known`) known to +-PRECISION of the threshold."""
        if seen >= self.total:
            return False
        bounds = []
        for o, loss, half in self._bounds(moments):
            if np.any(loss - half > ceilings[o]):
                return True
            bounds.append((o, half))
        if not (stop_known and self.continuous) or len(bounds) < len(moments):
            return False
        return all(np.all(half <= self.precision * ceilings[o]) for o, half in bounds)
