"""From sensitivity curves to one sparsity per layer under an accuracy budget (`prune --max-loss PP`).

1. Predict: each layer's loss curve L_l(s) = dense - metric (pp), with L_l(0) = 0, clipped at 0, made monotone
   (running max) and interpolated linearly between the scanned levels. The joint loss of an allocation is predicted
   as sum_l L_l(s_l). A layer whose curve stops below the grid's top (the budgeted scan measures each layer only up
   to its first level over the budget) is never moved past its last measured level.
2. Allocate: maximise the weights removed, sum_l size_l * s_l, subject to sum_l L_l(s_l) <= budget. A greedy
   knapsack on a 1% grid: repeatedly take the move (one layer, from s to any s' > s) with the most weights removed
   per pp of predicted loss that still fits; free moves (no predicted loss) first. Looking ahead to any s' (not
   just the next step) lets the greedy cross bumps in a curve.
3. Measure (`fit_to_budget`): prune all layers at once, run the data, compare with the dense model. Layers interact,
   so the prediction is only a guide: when the measured loss is over budget, the predicted budget is shrunk
   geometrically and the allocation redone (then bisected to KNOB_RESOLUTION); when it fits, a larger predicted budget is tried while
   tries remain. The answer is the allocation that removes the most weights among those MEASURED within budget;
   if none is, the model stays dense, with a note. "Within budget" is the point estimate (`within_budget`) unless
   the caller passes `judge`: the one-shot plan passes the automatic search's decision rule (converter.auto.decide:
   every output, its standard error taken off the budget, Wilson's bound for changed samples), so a candidate that
   changed none of 60 samples is not "within 1 pp" because its mean was 0.
   Until a candidate fits, each is measured on every sample (an over-budget loss sets how far the knob shrinks),
   unless it is certainly over: with the judge's ceilings (`ceilings`, converter.auto.decide
   `BudgetRule.point_ceilings`: 0 changed lines of 240 at 1 pp), the changed sample one too many ends it whatever
   the samples left (calibration.sampling; its loss is then the estimate from the samples run).
   After that the knob only reads verdicts, and a candidate stops as soon as it is clearly over the budget
   (calibration.sampling: a loss 3 standard errors over it, at doubling sample counts); only a fitting candidate
   can become the answer, and it is always measured, and judged, on every sample. A stop can only reject. The
   least pruned candidate rejected past the answer (what the run's note names) is then measured on every sample
   too: its figures are the rule's, and were it to fit after all, it becomes the answer. (22.6M-parameter
   encoder, 240 samples: 6 tries, 3 of them stopped after 16, 16 and 32 samples; the fit 42 -> 23 s CPU.)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.calibration.decide import within_budget
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.sampling import SequentialScorer, Threshold
from onnxprune.calibration.sensitivity import SensitivityResult, masked
from onnxprune.errors import ConfigError
from onnxprune.passes.criteria import MAGNITUDE, Scorer, Scoring
from onnxprune.passes.magnitude import quality_for_sparsity
from onnxprune.passes.weights import Inventory, constant_tensors, zeros_of

log = logging.getLogger(__name__)

# a decision on a candidate from its scored outputs on the fit's evaluator (per batch, in the evaluator's order, as
# Evaluator.run_all gives them): (its loss in pp, whether it is within the budget, the decision as a dict)
Judge = Callable[[list], tuple[float, bool, dict]]

GRID_STEP = 0.01
KNOB_RESOLUTION = 1.05  # the fit bisects the knob until the smallest over / largest within is below this (or tries run out)
_EPS = 1e-9


class Allocation(dict):
    """{weight name: sparsity}, plus how it was chosen (fit_to_budget re-allocates from `result`)."""

    def __init__(self, sparsities, *, result=None, budget_pp=0.0, predicted_loss_pp=0.0, weights=None):
        super().__init__(sparsities)
        self.result, self.budget_pp, self.weights = result, budget_pp, weights
        self.predicted_loss_pp = predicted_loss_pp


@dataclass
class AllocationOutcome:
    sparsities: dict[str, float]
    qualities: dict[str, float]  # q (threshold / std) giving each sparsity, the paper's knob
    measured_loss_pp: float
    tries: int
    history: list[dict] = field(default_factory=list)
    predicted_loss_pp: float = 0.0
    dense_pct: float = 0.0
    pruned_pct: float = 0.0
    removed: int = 0
    total: int = 0
    notes: list[str] = field(default_factory=list)
    decision: dict | None = None  # the judge's decision on the chosen allocation (when a judge decided)
    sizes: dict[str, int] = field(default_factory=dict)  # each prunable weight's size
    zeros: dict[str, int] = field(default_factory=dict)  # ... and the zeros the input already held (weights.zeros_of)
    # the entries a sparsity is a share of, where fewer than the size: a table pruned on the rows the data reads
    # (its unread rows ranked last and given back after pruning: converter/steps/rows.py)
    caps: dict[str, int] = field(default_factory=dict)

    @property
    def compression(self) -> float:
        """The input's nonzero weights / the pruned model's, over the prunable layers (as the summary counts)."""
        return self.ratio_of(self.sparsities)

    def ratio_of(self, sparsities: dict[str, float], held: int = 0) -> float:
        """The same ratio for another allocation (a try of the fit). `held`: the prunable weights the fit was not
        given (no evidence about them, or excluded), kept as they are, as the summary counts them."""
        kept = {n: size - _dropped(n, size, sparsities.get(n, 0.0), self.caps) for n, size in self.sizes.items()}
        return nonzero_ratio(kept, self.sizes, self.zeros, held)


def nonzero_ratio(kept: dict[str, int], sizes: dict[str, int], zeros: dict[str, int], held: int = 0) -> float:
    """The input's nonzero weights over a candidate's, as the summary counts them (converter/steps/report.py), from
    each weight's kept count: its own zeros are the first its mask drops (every criterion scores a zero weight 0)
    and never count as removed. `held`: weights outside `sizes`, kept as they are."""
    before = held + sum(size - zeros.get(n, 0) for n, size in sizes.items())
    after = held + sum(k - max(0, zeros.get(n, 0) - (sizes[n] - k)) for n, k in kept.items())
    return before / after if after > 0 else float("inf")


# ---- curves --------------------------------------------------------------------------------------------------

def loss_curve(result: SensitivityResult, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(sparsities, predicted loss in pp) from 0: clipped at 0, monotone non-decreasing."""
    layer = result.layer(name)
    xs = np.array([0.0, *layer.levels])
    ys = np.maximum.accumulate(np.maximum(0.0, np.array([0.0, *layer.losses(result.dense)])))
    return xs, ys


def predicted_loss(result: SensitivityResult, sparsities: dict[str, float]) -> float:
    """Sum of the per-layer losses (pp) the curves predict for an allocation."""
    total = 0.0
    for name, s in sparsities.items():
        xs, ys = loss_curve(result, name)
        total += float(np.interp(s, xs, ys))
    return total


def _grid(levels) -> np.ndarray:
    top = max(levels)
    grid = np.round(np.arange(0.0, top + _EPS, GRID_STEP), 6)
    return np.unique(np.concatenate([grid[grid <= top], np.asarray(levels, dtype=float)]))


# ---- allocation ----------------------------------------------------------------------------------------------

def allocate(result: SensitivityResult, inventory: Inventory, max_loss_pp: float, *, weights=None) -> Allocation:
    """Sparsity per layer removing the most weights with predicted joint loss <= max_loss_pp.

    `weights` ({name: w}) replaces the layer sizes as the value of removing a fraction of a layer (e.g. MACs).
    """
    if max_loss_pp < 0 or not math.isfinite(max_loss_pp):
        raise ConfigError(f"--max-loss {max_loss_pp} must be a finite number of percentage points >= 0.")
    scanned = {lay.name for lay in result.layers}
    names = [w.name for w in inventory.prunable if w.name in scanned]
    missing = [w.name for w in inventory.prunable if w.name not in scanned]
    if missing:
        log.warning("no sensitivity curve for %s: left dense; rerun the scan to include them", missing)
    grid = _grid(result.levels)
    value = {w.name: float(weights.get(w.name, w.size) if weights else w.size) for w in inventory.prunable}
    losses = {n: _grid_losses(result, n, grid) for n in names}
    at = {n: 0 for n in names}
    left = float(max_loss_pp)
    while True:
        move = _best_move(names, at, losses, value, grid, left)
        if move is None:
            break
        name, j, cost = move
        at[name], left = j, left - cost
    sparsities = {w.name: float(grid[at[w.name]]) if w.name in at else 0.0 for w in inventory.prunable}
    return Allocation(sparsities, result=result, budget_pp=max_loss_pp,
                      predicted_loss_pp=predicted_loss(result, {n: sparsities[n] for n in names}), weights=weights)


def _grid_losses(result: SensitivityResult, name: str, grid: np.ndarray) -> np.ndarray:
    """The layer's predicted loss at each grid point; infinite past its last measured level."""
    xs, ys = loss_curve(result, name)
    losses = np.interp(grid, xs, ys)
    losses[grid > xs[-1] + _EPS] = np.inf
    return losses


def _best_move(names, at, losses, value, grid, left):
    """(layer, grid index, cost) of the move with the most value per pp that fits; free moves first."""
    best, best_key = None, None
    for n in names:
        i = at[n]
        if i + 1 >= len(grid):
            continue
        gain = value[n] * (grid[i + 1:] - grid[i])
        cost = np.maximum(0.0, losses[n][i + 1:] - losses[n][i])
        fits = cost <= left + _EPS
        if not fits.any():
            continue
        free = fits & (cost <= _EPS)
        if free.any():
            j = int(np.flatnonzero(free)[-1])
            key = (1, gain[j], 0.0)
        else:
            ratio = np.where(fits, gain / np.maximum(cost, _EPS), -1.0)
            j = int(np.argmax(ratio))
            key = (0, ratio[j], gain[j])
        if best_key is None or key > best_key:
            best, best_key = (n, i + 1 + j, float(cost[j])), key
    return best


# ---- measuring -----------------------------------------------------------------------------------------------

def pruned_model(model: onnx.ModelProto, sparsities: dict[str, float], scorer: Scorer | None = None) -> onnx.ModelProto:
    """A copy of the model with every layer pruned to its sparsity by the scorer's criterion (magnitude when None),
    one shot, no retraining."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    tensors = constant_tensors(out)
    for name, s in sparsities.items():
        if s > 0:
            values = numpy_helper.to_array(tensors[name])
            tensors[name].CopyFrom(numpy_helper.from_array(masked(values, s, scorer, name), name))
    return out


def _dropped(name: str, size: int, sparsity: float, caps: dict[str, int]) -> int:
    """Entries a sparsity removes: round(s * size), or of a capped weight round(s * cap) (`AllocationOutcome.caps`:
    its sparsity is a share of the entries the data reads, `Scorer.keep`)."""
    return int(round(sparsity * caps.get(name, size)))


def _removed(inventory: Inventory, sparsities: dict[str, float], caps: dict[str, int]) -> int:
    return sum(_dropped(w.name, w.size, sparsities.get(w.name, 0.0), caps) for w in inventory.prunable)


def _over_why(decision: dict | None, budget: float) -> str:
    """Why a try whose mean loss is within the budget is over it: the rule's limit (the budget less its margin)."""
    if not decision or "limit_pp" not in decision or decision["limit_pp"] >= budget:
        return ""
    out = decision.get("output")
    return (f" (the rule's limit {decision['limit_pp']:.3f} pp{f' on output {out!r}' if out else ''}: the budget "
            f"less its margin for {decision.get('n', '?')} decision samples)")


def fit_to_budget(model: onnx.ModelProto, inventory: Inventory, evaluator: Evaluator, allocation: dict[str, float],
                  max_loss_pp: float, max_tries: int = 8, *,
                  result: SensitivityResult | None = None, scoring: Scoring = MAGNITUDE,
                  deadline: float | None = None, judge: Judge | None = None,
                  ceilings: Threshold | None = None, memo: dict | None = None) -> AllocationOutcome:
    """Measure the allocation on the data; back off (or grow) until the measured loss is within max_loss_pp.
    `scoring` ranks the weights (passes.criteria; magnitude by default), scored once on `model`. `deadline` (a
    time.perf_counter() value): no try starts that would end after it at the longest try's pace (the dense pass's
    before the first; a try of a big model is a long pass); the best one that fit so far is kept; none: dense.
    `judge(outputs) -> (loss_pp, fits, decision dict)` decides instead of the point estimate from a candidate's
    scored outputs on `evaluator` (module docstring); the best try's decision is in the outcome. `ceilings` (per
    scored output and term, pp: the judge's `BudgetRule.point_ceilings`) stop a try once it is certainly over what
    the judge can accept (the first changed line too many), before any try fits too. `memo` (a dict the caller
    keeps across fits of the same model, evaluator and scoring at decreasing budgets, judged by the mean: no
    `judge`, no `ceilings`): a try measured before is not run again (a full measurement's loss is judged at this
    budget; one stopped clearly over a larger budget is over this one too). rapidocr_rec's start, fitted at 1, 0.5
    and 0 pp on 60 samples where one changed line is 1.67 pp, ran the 0.5 pp fit's eight tries again (40 s of a
    3-minute budget, every try as at 1 pp)."""
    ranker = scoring.bind(model)
    caps = {n: int((~m).sum()) for n, m in scoring.last.items()}  # entries ranked last come back (steps/rows.py)
    result = result if result is not None else getattr(allocation, "result", None)
    weights = getattr(allocation, "weights", None)
    dense = 100.0 * (evaluator.dense if evaluator.dense is not None else evaluator.evaluate(model))
    search = _KnobSearch(max_loss_pp)
    tried: dict[tuple, float] = {}
    best = None
    screen = _Screen(evaluator, max_loss_pp if ceilings is None else ceilings)
    remembering = memo is not None and judge is None and ceilings is None  # tries judged by the mean alone

    def decide(outputs) -> tuple[float, bool, dict | None]:
        if judge is None:
            loss = round(dense - 100.0 * evaluator.score(outputs), 9)  # 99.9 - 99.4 is 0.50000000000001
            return loss, within_budget(loss, max_loss_pp), None
        loss, fits, decision = judge(outputs)
        return round(loss, 9), fits, decision

    x = 1.0
    last = [getattr(evaluator, "reference_seconds", None) or 0.0]  # a try: the longest yet, else a dense pass

    def no_time() -> bool:  # a try like the longest would end after the deadline
        return deadline is not None and time.perf_counter() + last[0] >= deadline

    for _ in range(4 * max_tries + BACKOFF_TRIES):
        if x is None:
            break
        if len(tried) >= max_tries:
            if best is not None or len(tried) >= max_tries + BACKOFF_TRIES:
                break
            # nothing fit in max_tries: the curves (a small set's scan says many levels lose nothing) re-allocate
            # about as much at every knob, so halve the allocation's sparsities toward dense instead (a helper's
            # CNN, 300 samples: 8 tries at 4.7-5.6x over the budget, then dense, where 3x fit)
            x = min(x, 1.0 / 16.0) / 2.0
        if no_time():
            log.info("fit_to_budget: the time budget stopped it after %d tries", len(tried))
            break
        t0 = time.perf_counter()
        cand = dict(allocation) if not tried else _candidate(x, allocation, result, inventory, max_loss_pp, weights)
        key = _try_key(cand)
        if key in tried:  # the knob moved but the allocation did not: keep searching
            x = search.next(x, *tried[key], growable=result is not None)
            continue
        reused = _remembered(memo, key, max_loss_pp) if remembering else None
        if reused is not None:
            loss, fits, decision, stopped = reused
        else:
            outputs, stopped = screen.run(pruned_model(model, cand, ranker), stop=best is not None,
                                          certain=ceilings is not None)
            loss, fits, decision = (round(stopped.loss_pp, 9), False, None) if stopped is not None else decide(outputs)
            if remembering:
                memo[key] = (loss, stopped, max_loss_pp)
        tried[key] = (loss, fits)
        last[0] = max(last[0], time.perf_counter() - t0)  # a screened try stops early; the next may not
        entry = {"try": len(tried), "knob": x, "measured_loss_pp": loss, "fits": fits,
                 "predicted_loss_pp": predicted_loss(result, cand) if result is not None else None,
                 "removed": _removed(inventory, cand, caps), "sparsities": cand, "pruned_pct": dense - loss}
        if decision is not None:
            entry["decision"] = decision
        if stopped is not None:  # clearly over: the loss is the estimate from the samples run
            entry["samples"] = stopped.samples
        if reused is not None:
            entry["remembered"] = True
        search.history.append(entry)
        log.info("try %d: %s weights removed, measured loss %.3f pp (budget %.3f)%s%s%s", len(tried),
                 f"{entry['removed']:,}", loss, max_loss_pp,
                 f", estimated on {stopped.samples} of {stopped.total} samples" if stopped is not None else "",
                 " (measured by an earlier fit)" if reused is not None else "",
                 "" if fits else " -> over budget" + _over_why(decision, max_loss_pp))
        if fits and (best is None or entry["removed"] > best["removed"]):
            best = entry
        x = search.next(x, loss, fits, growable=result is not None)
    while best is not None and not no_time():
        # the least pruned try rejected past the answer, when it was stopped early: measured on every sample
        past = [h for h in search.history if not h["fits"] and h["removed"] > best["removed"]]
        nearest = min(past, key=lambda h: h["removed"], default=None)
        if nearest is None or "samples" not in nearest:
            break
        outputs, _ = screen.run(pruned_model(model, nearest["sparsities"], ranker), stop=False, certain=False)
        loss, fits, decision = decide(outputs)
        if remembering:
            memo[_try_key(nearest["sparsities"])] = (loss, None, max_loss_pp)
        del nearest["samples"]
        nearest.update(measured_loss_pp=loss, fits=fits, pruned_pct=dense - loss,
                       **({"decision": decision} if decision is not None else {}))
        log.info("try %d measured on every sample: loss %.3f pp%s", nearest["try"], loss,
                 " (within the budget after all: it is the answer)" if fits else "")
        if fits:
            best = nearest
    return _outcome(model, inventory, best, search.history, dense, max_loss_pp, caps)


def _try_key(sparsities: dict[str, float]) -> tuple:
    """A try's allocation as a key (`tried`, `memo`): the same sparsities to 6 places are the same try."""
    return tuple(sorted((n, round(s, 6)) for n, s in sparsities.items()))


def _remembered(memo: dict | None, key: tuple, budget: float) -> tuple | None:
    """(loss, fits, decision, stopped) of a try an earlier fit measured (fit_to_budget's `memo`), or None when it
    must be run: never measured, or stopped over a smaller budget than this one (it may be within this one)."""
    if memo is None or key not in memo:
        return None
    loss, stopped, measured_at = memo[key]
    if stopped is None:
        return loss, within_budget(loss, budget), None, None
    if budget <= measured_at + 1e-12:
        return loss, False, None, stopped
    return None


class _Screen:
    """Runs a candidate on the evaluator's batches: all of them, or stopping once it is (`certain`) certainly over
    the budget (whatever the samples left; calibration.sampling) or (`stop`) clearly over it (a loss 3 standard
    errors over); it never stops under."""

    def __init__(self, evaluator: Evaluator, budget: Threshold):
        self.evaluator, self.budget = evaluator, budget
        self.sequential = evaluator.reference_all is not None and evaluator.dense is not None
        self._scorer = None

    def run(self, candidate: onnx.ModelProto, *, stop: bool, certain: bool):
        """(the scored outputs per batch in the evaluator's order, None) or, stopped over the budget, (None,
        the Measured estimate)."""
        ev = self.evaluator
        sess = ev.session(candidate)
        if not self.sequential or not (stop or certain):
            return list(ev.run_all(sess)), None
        self._scorer = self._scorer or SequentialScorer(ev)
        got: dict[int, tuple] = {}

        def batches(order):
            for b, values in zip(order, ev.run_batches(sess, order)):
                got[b] = values
                yield values

        measured = self._scorer.measure(batches, self.budget, stop_known=False, estimate=stop)
        if not measured.complete:
            return None, measured
        return [got[b] for b in range(len(got))], None


def _candidate(x, allocation, result, inventory, max_loss_pp, weights) -> dict[str, float]:
    """The allocation at knob x: re-allocated with predicted budget x * max_loss when curves are at hand (and
    scaled down below x = 1/16), else the original sparsities scaled by min(1, x)."""
    if result is None or max_loss_pp <= 0:
        return {n: s * min(1.0, x) for n, s in allocation.items()}
    alloc = allocate(result, inventory, x * max_loss_pp, weights=weights)
    scale = min(1.0, 16.0 * x)
    return {n: s * scale for n, s in alloc.items()}


BACKOFF_TRIES = 4  # tries after max_tries when none fit: the allocation at 1/2, 1/4, 1/8, 1/16 of its sparsities


class _KnobSearch:
    """Where to put the knob next: grow x2 while it fits, shrink geometrically while it does not, then bisect."""

    def __init__(self, budget: float):
        self.budget = budget
        self.lo: float | None = None  # largest knob that fit
        self.hi: float | None = None  # smallest knob that did not
        self.history: list[dict] = []

    def next(self, x: float, loss: float, fits: bool | None = None, *, growable: bool) -> float | None:
        """The next knob after one at `x` measured `loss` (pp); `fits`: the caller's decision (default: the point
        estimate within the budget)."""
        if within_budget(loss, self.budget) if fits is None else fits:
            self.lo = x if self.lo is None else max(self.lo, x)
        else:
            self.hi = x if self.hi is None else min(self.hi, x)
        if self.hi is None:
            return x * 2.0 if growable and x < 1024 else None
        if self.lo is None:
            shrink = min(0.7, max(0.2, self.budget / loss)) if loss > 0 else 0.5
            return x * shrink if x > 1e-4 else None
        if self.hi / max(self.lo, 1e-12) < KNOB_RESOLUTION:
            return None
        mid = math.sqrt(self.lo * self.hi) if self.lo > 0 else self.hi / 2
        return mid if self.lo < mid < self.hi else None


def _outcome(model, inventory, best, history, dense, max_loss_pp, caps: dict[str, int]) -> AllocationOutcome:
    total = sum(w.size for w in inventory.prunable)
    notes = []
    if best is None:
        notes.append(f"no allocation stayed within {max_loss_pp:g} pp after {len(history)} measured tries; "
                     "the model is left dense. Raise --max-loss or give more representative data.")
        sparsities = {w.name: 0.0 for w in inventory.prunable}
        best = {"measured_loss_pp": 0.0, "predicted_loss_pp": 0.0, "removed": 0, "pruned_pct": dense}
    else:
        sparsities = {w.name: float(best["sparsities"].get(w.name, 0.0)) for w in inventory.prunable}
    tensors = constant_tensors(model)
    qualities = {n: quality_for_sparsity(numpy_helper.to_array(tensors[n]), s) for n, s in sparsities.items()}
    return AllocationOutcome(sparsities=sparsities, qualities=qualities, measured_loss_pp=best["measured_loss_pp"],
                             tries=len(history), history=history, predicted_loss_pp=best["predicted_loss_pp"] or 0.0,
                             dense_pct=dense, pruned_pct=best["pruned_pct"], removed=best["removed"], total=total,
                             notes=notes, decision=best.get("decision"),
                             sizes={w.name: w.size for w in inventory.prunable}, zeros=zeros_of(model, inventory),
                             caps=caps)
