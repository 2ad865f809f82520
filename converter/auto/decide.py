"""The statistical rule that decides "within budget" on a finite decision set: every scored output, sample by sample.

Each scored output is judged by its own metric's per-sample form (PER_SAMPLE below; docs/metrics.md has the table)
and a candidate is within the budget only when EVERY output is; the loss reported is the worst output's. The mean
of the per-sample figures is the metric's whole-set loss (calibration.output_metrics), so the rule and the
Evaluator never disagree about the loss itself, only the rule adds the margin. With n decision samples:

label metrics (accuracy, top5), paired: d_i = score of the dense model on sample i - score of the candidate
    (1 when only the dense model is right, -1 when only the candidate is, else 0: McNemar's discordant pairs).
    L = 100·mean(d) pp, SE = 100·std(d)/sqrt(n). The difference can go either way, so with --max-loss 0 a loss
    within one standard error is not told apart from none (accepted when L <= Z·SE: no loss beyond noise); a
    positive budget is an upper bound, as for every other metric: accepted when max(L, 0) + Z·SE <= budget, so the
    best of many candidates tried on one set is not a lucky draw. With no discordant pair SE is 0 and the bound
    would be zero-wide ("upper bound 0.00 pp" on sweep 8's ViT, 225 labelled decision samples, none flipped); the
    margin is never below Wilson's bound at none changed, Z²/(n + Z²), as for a share of changed samples below, and
    a set too small to certify the budget so (fewer than 99 at 1 pp) keeps the input model. The floor holds with
    discordant pairs too, and a stricter rule (below) takes its strictness out of the SE alone, the floor staying
    at Z: the floor at 2 Z once made the rule prefer a changed model to an unchanged one (session 25, MNIST MLPs
    and CNNs, 300 labelled decision samples, after an undone round: no sample changed was rejected, upper bound
    1.32 pp, while one sample made worse passed, 0.33 pp + 2 SE = 1.00 pp; four of eight runs kept such candidates
    and all eight held their budget on 10,000 unseen images, worst 0.81 pp, SE 0.12). (Wilson's bound on the share made worse,
    less the share made better, for every candidate was tried first: on sweep 7's labelled MNIST MLP, 225 decision
    samples, one sample made worse failed the start and, at 2x the margin after an undone round, everything after:
    5.3x with 0.40 pp (SE 0.12) lost on 9,700 held-out images became 1.0x.) A gain (L < 0) is not credited: it
    was, and a Keras Conv1D classifier (sweep 6, 225 decision samples, labels) measured -0.89 pp there, "upper bound 0.37 pp",
    while its held-out accuracy fell 1.90 pp (SE 0.77) on 1,000 samples: the search had kept the candidate the
    decision set's noise favoured most. It used to be max(budget, Z·SE), wider than the budget on
    a small set: a digits CNN (126 decision samples, --max-loss 1) was kept at 96.6x with its held-out error up
    1.11 pp (now 14.2x, +0.19 pp), and a Scan RNN with labels at 1.07 pp "within" 1 pp while its held-out accuracy
    fell 2.8-8.5 pp over three splits (now 1.2 and 5.3 pp on two splits whose calibration data was the training
    data or shifted from the held-out data, +0.4 on the third).

expected_accuracy (label-free, paired against the input model's own probabilities p_i): the input model's
    softmax stands in for the unknown label distribution. With a = the input model's class, b = the candidate's,
    d_i = p_i[a] - p_i[b] (0 when unchanged, > 0 when changed) is the expected change in correctness, and the
    labels the set does not have add v_i = p_i[a] + p_i[b] - d_i^2 (a != b; else 0), the variance of a difference
    of two exclusive Bernoulli outcomes. SE^2 = (var(d) + mean(v)) / n (law of total variance: the spread of the
    d_i over the inputs plus the label noise given them), L = 100·mean(d), accepted as the label rule above:
    for a calibrated input model, what the accuracy rule above decides in expectation (E d_lab = d_i, E d_lab^2 =
    p_i[a] + p_i[b] on a changed sample). Near-ties change freely, confident changes count.

fidelity metrics (agreement, seq_agreement, map_iou, mask_iou, ctc_agreement, prob, binary_prob, rel_l2,
channel_rel_l2, channel_prob, variables, cosine, exact: the candidate against the dense model):
    every sample i has a loss l_i >= 0 (a changed class, its share of changed positions, its relative error, ...),
    L = 100·mean(l) pp, SE = 100·std(l)/sqrt(n); accepted when the upper bound L + Z·SE <= budget. A loss against
    the input model is never negative, so there is no noise around zero to forgive: the margin is taken off the
    budget instead, so what a search selects on this set (the best of many candidates) is not noise that held-out
    data would not repeat. A metric of two parts (prob, binary_prob: class changes and probability changes) has
    each bounded. A part that is 0 or 1 per sample (a changed class: agreement, exact, the first part of prob and
    binary_prob) is bounded by Wilson's score interval at Z instead: the share k/n plus Z·SE is zero-wide when no
    sample changed, and a search that tries many candidates then keeps one that changed none of these n samples by
    luck (torch_gru_legacy, 180 decision samples, the refit's per-layer phase: none changed, 1.8% of 1,000 held-out
    images did). Wilson's bound at k = 0
    is Z²/(n + Z²): 0.55 pp for 180 samples at Z = 1, 2.2 pp at the per-layer phase's strictness 2. A budget under that
    bound cannot be certified by any candidate. For --max-loss 0 the part is judged at one-sample resolution, no
    changed sample (what the user asked for, and what a set can check); for a positive budget on too few samples
    (fewer than 99 at 1 pp) no pruned candidate is certified, and every path keeps the input model, saying how many
    samples would do (`BudgetRule.uncertifiable`); the refit's per-layer phase, under its stricter bound, is skipped
    (`BudgetRule.resolves`).

A stricter rule (`strictness` s > 1: the refit's per-layer phase, which looks at one decision set many times)
accepts a subset of what the rule accepts: paired rules take s·Z·SE off a positive budget, never less than Wilson's
floor at Z (with --max-loss 0 they forgive Z·SE/s), fidelity rules take s·Z·SE (Wilson's bound at s·Z) off the
budget. (A larger z in a forgiving
max(budget, z·SE) would have loosened the paired rule instead: a 3 pp loss on 100 samples passed a 1 pp budget at
z = 2 and the run then ended over its budget.)

A sample is what the Evaluator scores as one (`Evaluator.output_terms`): a row of an output that follows the batch;
for one that does not (a detector's [D, 4] boxes for one image), a feed, its rows' terms pooled: n counts images,
a feed's loss is its rows' share (of changed labels, say: for a 0/1 part Wilson's bound stays conservative, a
share's variance being at most p(1 - p)), and a feed whose detection count changed is lost whole.

An output with its own budget (--max-loss OUTPUT=L beside --max-loss B) is judged by this rule against L instead of B
(its bound within L); the Decision's loss, SE and limit are then the worst output's divided by L/B (pp of the run's
budget, as the Evaluator combines them: calibration.metrics `Evaluator.loss_factor`), its per-output figures stay in
their own pp with `budget_pp` beside them.

A share of changed positions (seq_agreement, map_iou, mask_iou: a continuous part in [0, 1] per sample, exactly 0 on an
unchanged sample) has the same floor: its upper bound is max(L + Z·SE, Wilson's bound at none changed), so a
candidate that changed no position of n samples is not certified below Z²/(n + Z²), and a set too small for the
budget keeps the input model. Its mean cannot exceed the share of samples with any changed position, so the floor
is conservative; without it, no changed position meant SE = 0 and a zero-wide bound (sweep 13: a detector's class
map, "0.00 pp" claimed, 3.0% of held-out positions changed).

The resolution is one sample: 100/n pp ("one sample = 0.79 pp here" for 126 samples); a fidelity candidate that
changes one class more than a budget finer than that is never accepted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from statistics import NormalDist
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np

from onnxprune.calibration.decide import within_budget
from onnxprune.calibration.output_metrics import (LISTS, METRICS, PAIRED_KINDS, RANKS, Registry, ScaleOf,
                                                  is_list)
from onnxprune.errors import ConfigError

log = logging.getLogger(__name__)

Z = 1.0  # margin in standard errors: the default, one-sided about 84% (--confidence sets another for a run)
_RUN_Z = [Z]  # the run's margin (decision_scope); every rule built without an explicit z takes it


def confidence_z(confidence: float | None) -> float:
    """The margin in standard errors of a one-sided `confidence` (0.95 -> 1.645); None -> Z (about 84%)."""
    if confidence is None:
        return Z
    if not 0.5 < confidence < 1.0:
        raise ConfigError(f"--confidence {confidence:g} must be between 0.5 and 1 (e.g. 0.95); the default, about "
                          "0.84, is one standard error.")
    return NormalDist().inv_cdf(confidence)


def current_z() -> float:
    return _RUN_Z[0]


@contextlib.contextmanager
def decision_scope(confidence: float | None):
    """Every decision rule built inside takes the margin of `confidence` (None: Z); the API may convert several
    models in one process, so the setting ends with the run."""
    before = _RUN_Z[0]
    _RUN_Z[0] = confidence_z(confidence)
    try:
        yield
    finally:
        _RUN_Z[0] = before
NEAR_PERFECT = 0.995  # dense accuracy on the decision set at or above this: probably the model's training data


# ---- per-sample forms: (out, ref, labels) -> [n, parts] ------------------------------------------------------------
# paired forms: the sample's score (label metrics: 1 right, 0 wrong; expected_accuracy: p_i[class]); fidelity
# metrics: the sample's loss l_i (0 = as the dense one).
# Both come from the metric's own per-sample terms (calibration.output_metrics `Metric.samples`): one definition, so
# the rule's mean is the Evaluator's whole-set loss by construction. A term where higher is better (agreement,
# cosine, positions that agree) becomes the loss 1 - share; a term where lower is better (relative error,
# probability change) is the loss itself.

def _as_losses(kind: str, terms: np.ndarray, counts: np.ndarray, paired: bool) -> np.ndarray:
    share = terms / np.maximum(counts, 1)[:, None]
    if paired:  # scores, compared with the dense model's own
        return share
    return np.where(np.asarray(METRICS[kind].lower_better), share, 1.0 - share)


def _form(kind: str, paired: bool) -> Callable:
    def fn(out, ref, labels):  # `ref` the whole set (a relative error's floor is its scale: Metric.terms)
        return _as_losses(kind, *METRICS[kind].terms(np.asarray(out), np.asarray(ref), labels), paired)
    return fn


def _exclusive_bernoulli_variance(dense: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Var(X_a - X_b) of two exclusive Bernoulli outcomes with means dense (p[a]) and values (p[b]): p[a] + p[b] -
    (p[a] - p[b])^2, and 0 where the two are equal (the same class; an exact tie counts as unchanged, the
    stricter reading)."""
    return np.where(dense != values, dense + values - np.square(dense - values), 0.0)


@dataclass(frozen=True)
class PerSample:
    """One metric kind's per-sample form: `fn(out, ref, labels) -> [n, parts]`; `paired`: scores compared with the
    dense model's (label metrics), else losses against it; `parts`: what each column is; `unit`: the sample's
    loss in words (docs/metrics.md)."""

    fn: Callable
    paired: bool
    parts: tuple[str, ...]
    unit: str
    binary: bool | tuple[bool, ...] = True  # each part (or those marked) is 0 or 1 per sample: Wilson-bounded
    # a continuous part that is a share in [0, 1], exactly 0 on an unchanged sample (changed positions, 1 - IoU):
    # its bound is never below Wilson's at none changed (the docstring), so it resolves a budget as a binary part does
    share: bool | tuple[bool, ...] = False
    # label-free paired forms: (the dense model's per-sample values, the candidate's) -> [n, parts], the variance of
    # each paired difference given its input (the labels it stands for); the SE adds its mean to the spread of d
    variance: Callable | None = None

    def is_binary(self, part: int) -> bool:
        return self.binary if isinstance(self.binary, bool) else self.binary[part]

    def is_share(self, part: int) -> bool:
        return self.share if isinstance(self.share, bool) else self.share[part]

    def floored(self, part: int) -> bool:
        """Whether the part's upper bound is never below Wilson's at no sample changed: a binary part, or a share."""
        return self.is_binary(part) or self.is_share(part)

    @property
    def any_share(self) -> bool:
        return any(self.is_share(j) for j in range(len(self.parts)))

    @property
    def any_binary(self) -> bool:
        """Some part is a share of changed samples (0 or 1 per sample)."""
        return any(self.is_binary(j) for j in range(len(self.parts)))

    @property
    def any_floored(self) -> bool:
        """Some part's bound has Wilson's floor (a binary part or a share): the set must resolve the budget."""
        return any(self.floored(j) for j in range(len(self.parts)))


# what a thresholded kind's parts and unit say, {t} its threshold (the registered kinds' own at their default, and
# KIND@T's at the user's: `_at_form`)
_AT_WORDS = {"mask_iou": (("1 - mask IoU",), "1 - the IoU of its mask (the values over {t}) with the input model's "
                          "(0 when neither has one)"),
             "binary_prob": (("crossed {t}", "probability change"), "1 if its probability crossed {t}; and its "
                             "absolute probability change (each bounded)"),
             "binary_logit": (("crossed {t}", "probability change"), "1 if its logit crossed {t}; and the absolute "
                              "change of its sigmoid (each bounded)"),
             # a request (a feed whose rows are read together, output_metrics.LISTS): its list changed or not
             "list": (("changed list",), "1 if its list (the rows scored {t} or more, by score) changed"),
             "set": (("changed set",), "1 if the set of its rows scored {t} or more changed"),
             "top": (("changed top {t}",), "1 if its top {t} rows or their order changed"),
             # a sample's items (its last axis, output_metrics.RANKS): its first K changed or not
             "rank": (("changed top {t}",), "1 if its top {t} items (its last axis, by score) or their order changed")}


def _at_words(base: str, t) -> tuple[tuple[str, ...], str]:
    """(parts, unit) of a thresholded kind at threshold `t`."""
    parts, unit = _AT_WORDS[base]
    return tuple(p.format(t=t) for p in parts), unit.format(t=t)


PER_SAMPLE: dict[str, PerSample] = {
    "accuracy": PerSample(_form("accuracy", True), True, ("accuracy",),
                          "1 if right, else 0 (paired with the dense model)"),
    "top5": PerSample(_form("top5", True), True, ("top5",), "1 if the label is in the top 5, else 0 (paired)"),
    "expected_accuracy": PerSample(_form("expected_accuracy", True), True, ("expected accuracy",),
                                   "p_i[class] under the input model's probabilities (paired with its own p_i[a]; "
                                   "variance p[a] + p[b] - d^2 when changed)", binary=False,
                                   variance=_exclusive_bernoulli_variance),
    "agreement": PerSample(_form("agreement", False), False, ("changed",), "1 if its top-1 class changed"),
    "seq_agreement": PerSample(_form("seq_agreement", False), False, ("changed positions",),
                               "the share of its positions whose top-1 class changed", binary=False, share=True),
    "map_iou": PerSample(_form("map_iou", False), False, ("1 - mean IoU",),
                         "1 - the mean over its classes of the IoU of its class maps (argmax over axis 1)",
                         binary=False, share=True),
    "mask_iou": PerSample(_form("mask_iou", False), False, *_at_words("mask_iou", 0.5), binary=False, share=True),
    "ctc_agreement": PerSample(_form("ctc_agreement", False), False, ("changed",),
                               "1 if its decoded sequence (greedy CTC) changed"),
    "prob": PerSample(_form("prob", False), False, ("changed", "probability change"),
                      "1 if its class changed; and its largest probability change (each bounded)",
                      binary=(True, False)),
    "binary_prob": PerSample(_form("binary_prob", False), False, *_at_words("binary_prob", 0.5),
                             binary=(True, False)),
    "binary_logit": PerSample(_form("binary_logit", False), False, ("changed sign", "probability change"),
                              "1 if its logit changed sign; and the absolute change of its sigmoid (each bounded)",
                              binary=(True, False)),
    "rel_l2": PerSample(_form("rel_l2", False), False, ("relative error", "variance lost"),
                        "||y_i - d_i|| / max(||d_i||, 0.1 s), s = the RMS of ||d_j|| over the set; and ||y_i - d_i||^2 "
                        "/ v, v = the mean of ||d_j - m||^2 over the set, m its mean (each bounded)", binary=False),
    "step_rel_l2": PerSample(_form("step_rel_l2", False), False, ("relative error of the steps", "variance lost"),
                             "rel_l2's two parts on the steps s(y_i) (its first value, then each less the one "
                             "before) against s(d_i), the floor and the spread the dense steps' (each bounded)",
                             binary=False),
    "channel_rel_l2": PerSample(_form("channel_rel_l2", False), False, ("relative error per channel",),
                                "max over channels c of min(1, ||y_ic - d_ic|| / max(||d_ic||, 0.1 s_c)), s_c = the "
                                "RMS of ||d_jc|| over the set", binary=False),
    "channel_prob": PerSample(_form("channel_prob", False), False, ("error per channel",),
                              "max over channels c of: max_k |y_ick - d_ick| for a channel whose d_ic lies in [0, 1], "
                              "else min(1, ||y_ic - d_ic|| / max(||d_ic||, 0.1 s_c))", binary=False),
    "variables": PerSample(_form("variables", False), False,
                           ("relative error per variable", "variance lost per variable"),
                           "rel_l2's two parts in each channel c as its own output, the worst channel of each: max_c "
                           "min(1, ||y_ic - d_ic|| / max(||d_ic||, 0.1 s_c)); and max_c ||y_ic - d_ic||^2 / v_c, v_c "
                           "= the mean of ||d_jc - m_c||^2 over the set (each bounded)", binary=False),
    "detections": PerSample(_form("detections", False), False, ("detection change",),
                            "min(1, the worst of: each detection scored 0.05 or more in either model against its "
                            "match in the other (same class, IoU >= 0.5): |score change| and ||box change|| / its "
                            "size (unmatched: its score); and max_k |k-th highest score change|)", binary=False),
    "cosine": PerSample(_form("cosine", False), False, ("1 - cosine",), "1 - cos(y_i, d_i)", binary=False),
    "exact": PerSample(_form("exact", False), False, ("changed",), "1 if any of its values changed"),
    **{kind: PerSample(_form(kind, False), False, *_at_words(kind, at)) for kind, at in {**LISTS, **RANKS}.items()},
}


def _both(first: str, second: str) -> PerSample:
    """The per-sample form of output_metrics `_both`: the two kinds' parts side by side, each bounded as its own."""
    a, b = PER_SAMPLE[first], PER_SAMPLE[second]
    kind = f"{first}+{second}"
    assert not (a.paired or b.paired or a.variance or b.variance) and kind in METRICS
    each = [(f, j) for f in (a, b) for j in range(len(f.parts))]
    return PerSample(_form(kind, False), False, a.parts + b.parts, f"{a.unit}; and {b.unit} (each bounded)",
                     tuple(f.is_binary(j) for f, j in each), tuple(f.is_share(j) for f, j in each))


PER_SAMPLE.update({kind: _both(*kind.split("+")) for kind in PAIRED_KINDS})

def _at_form(kind: str, base: str, at) -> PerSample:
    """A kind read at the user's threshold (mask_iou@0.3), or a pair led by one: the registered form's, its words
    at that threshold (output_metrics.Threshold); a mean judged in its scale (scaled@S: output_metrics.ScaleOf)."""
    if isinstance(at, ScaleOf):
        return PerSample(_form(kind, False), False, (f"change in {at.scale}",),
                         f"the mean over its values of min(1, |y_ik - d_ik| / s_ik), s_ik the input model's scale "
                         f"({at})", binary=False)
    if "+" in base:
        return _both(*kind.split("+"))
    parts, unit = _at_words(base, at)
    return replace(PER_SAMPLE[base], fn=_form(kind, False), parts=parts, unit=unit)


PER_SAMPLE = Registry(PER_SAMPLE, _at_form)


def in_requests(text: str) -> str:
    """Words of a run whose samples are requests (a feed's rows read together as one list, output_metrics.LISTS:
    every scored output is then one sample a feed) in requests: "150 decision requests", "one request = 0.67 pp",
    "the 50 choosing requests", not samples, which a reader takes for rows."""
    return re.sub(r"\bsample(s?)\b", lambda m: "request" + m.group(1), text)


def wilson_upper(share: float, n: int, z: float) -> float:
    """Wilson's score upper bound of a proportion observed as `share` of `n` samples, at `z` standard errors."""
    z2 = z * z
    centre = share + z2 / (2 * n)
    spread = z * math.sqrt(max(share * (1 - share), 0.0) / n + z2 / (4 * n * n))
    return (centre + spread) / (1 + z2 / n)


def samples_for_share(share: float, budget_pp: float, z: float) -> int | None:
    """The fewest samples at which `share` observed would have Wilson's upper bound (at `z`) within `budget_pp`, or
    None when the share itself is not below the budget (no amount of data would admit it)."""
    if not 0 <= 100.0 * share < budget_pp:
        return None
    lo, hi = 1, 2
    while 100.0 * wilson_upper(share, hi, z) > budget_pp:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if 100.0 * wilson_upper(share, mid, z) > budget_pp else (lo, mid)
    return hi


@dataclass
class Decision:
    loss_pp: float  # the worst output's mean loss on the decision set (positive = worse than the dense model)
    se_pp: float  # its standard error
    limit_pp: float  # the loss it may have: budget - Z·SE (Z·SE for label metrics at --max-loss 0)
    within: bool  # every output within its limit
    n: int
    worse: int = 0  # samples only the dense model gets right (label metrics)
    better: int = 0  # samples only the candidate gets right
    output: str = ""  # the output reported (the worst)
    outputs: dict = field(default_factory=dict)  # every scored output: {loss_pp, se_pp, limit_pp, within}
    strictness: float = 1.0  # the judging rule's (BudgetRule.strictness): > 1 after an undone round
    failed: str = ""  # onnxruntime could not run the candidate on data the input model ran: this reason

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def worst_figures(decision) -> dict:
    """The reported (worst) output's own figures (loss_pp, se_pp, limit_pp, within, part, metric, n) of a Decision
    or of its as_dict(); {} when there are none."""
    if isinstance(decision, dict):
        outputs, output = decision.get("outputs"), decision.get("output")
    else:
        outputs, output = decision.outputs, decision.output
    return (outputs or {}).get(output) or {}


def tightest_output(decision: dict, max_loss: float) -> str | None:
    """The output of a Decision's as_dict() whose figures stand closest to their limit (or furthest over it), in pp
    of the run's budget: the budget line's "closest test". The reported output is the one of the largest loss
    (`BudgetRule.judge_outputs`), which is not it where a margin differs: sweep 56's two-tower model named 'q_emb'
    (cosine 0.00 pp, upper bound 0.00) where 'match' had none of 106 samples cross 0.5, Wilson's bound 0.93 pp."""
    outputs = decision.get("outputs") or {}
    if len(outputs) < 2:
        return decision.get("output")

    def over(f: dict) -> float:  # an own budget's figures in pp of the run's (as `judge_outputs` divides them)
        own = f.get("factor") or (f["budget_pp"] / max_loss if f.get("budget_pp") and max_loss > 0 else 1.0)
        return (f["loss_pp"] - f["limit_pp"]) / own

    return max(outputs, key=lambda k: (not outputs[k]["within"], over(outputs[k])))


class _OutputRule:
    """One scored output's per-sample figures and its decision."""

    def __init__(self, name: str, kind: str, budget: float, z: float, strictness: float = 1.0,
                 certifies: bool = True, factor: float = 1.0, part_factors: tuple[float, ...] | None = None):
        self.name, self.kind, self.form, self.budget, self.z = name, kind, PER_SAMPLE[kind], budget, z
        self.factor = factor  # its own budget / the run's (Evaluator.loss_factor): its figures count divided by it
        # each part's, where the own budget holds only some parts (Evaluator.part_factor: a greedy decoder's picks at
        # --max-loss / L, its probability change at --max-loss): the others are judged at the run's budget
        self.split = part_factors is not None
        self.part_factors = part_factors if part_factors is not None else (factor,) * len(self.form.parts)
        self.strictness = strictness
        self.certifies = certifies  # False: a choosing rule, no Wilson floor for a paired output (see judge)
        self.dense: np.ndarray | None = None

    @property
    def part_budgets(self) -> tuple[float, ...]:
        """Each part's budget: the output's (`budget`, which a caller may set: steps/quantize.PairedRule), or where
        the own budget holds only some parts, the run's on the others."""
        if not self.split:
            return (self.budget,) * len(self.form.parts)
        run = self.budget / self.factor if self.factor else self.budget
        return tuple(run * f for f in self.part_factors)

    def resolves(self) -> bool:
        """Whether a candidate that changes no decision sample is within the budget by the bound (binary parts);
        continuous parts always resolve."""
        n = len(self.dense) if self.dense is not None else 0
        if not n or not self.form.any_floored or (self.form.paired and (self.budget <= 0 or not self.certifies)):
            return True
        floored = min(b for j, b in enumerate(self.part_budgets) if self.form.floored(j))
        return floored >= 100.0 * self.floor(n) - 1e-12

    def floor(self, n: int) -> float:
        """Wilson's upper bound at none changed of n, the least a floored part's bound can be: at the rule's own
        margin for a share of changed samples (strictness·z), at z for a paired label rule, whose stricter form
        takes its strictness out of the standard error of the discordant pairs instead (judge)."""
        return wilson_upper(0.0, n, (1.0 if self.form.paired else self.strictness) * self.z)

    def judge(self, values: np.ndarray) -> dict:
        n = len(values)
        d = (self.dense - values) if self.form.paired else values
        parts = []
        noise = self.form.variance(self.dense, values) if self.form.variance is not None and n else None
        for j in range(d.shape[1]):
            col, budget = d[:, j], self.part_budgets[j]  # the output's own, or this part's (part_factors)
            loss = 100.0 * float(col.mean()) if n else 0.0
            var = float(col.var(ddof=1)) if n > 1 else 0.0
            if noise is not None:
                var += float(noise[:, j].mean())
            se = 100.0 * math.sqrt(var / n) if n > 1 or noise is not None else (0.0 if n else float("inf"))
            if self.form.paired and self.budget > 0:  # an upper bound within the budget, as for fidelity metrics
                margin = self.strictness * self.z * se
                if self.certifies and self.form.is_binary(j) and n:
                    # never below Wilson's bound at none made worse (SE is 0 with no discordant pair: a zero-wide
                    # bound), so no candidate with discordant pairs passes where an unchanged one would not
                    margin = max(margin, 100.0 * self.floor(n))
                limit = budget - margin
            elif self.form.paired:  # --max-loss 0: no loss beyond the noise, at 1 SE (a larger margin would forgive
                limit = min(self.z, Z) * se / self.strictness  # more: --confidence does not widen it); stricter: less
            elif self.form.is_binary(j) and n:  # Wilson's upper bound: never zero-width (see the docstring)
                share = float(col.mean())
                if self.resolves():
                    limit = budget - 100.0 * (wilson_upper(share, n, self.strictness * self.z) - share)
                else:  # even no changed sample does not certify the budget: one-sample resolution, none may change
                    limit = 0.0
            elif self.form.is_share(j) and n:  # a share of changed positions: never zero-wide (the docstring)
                floor = 100.0 * wilson_upper(0.0, n, self.strictness * self.z)
                if self.resolves():
                    limit = budget - max(self.strictness * self.z * se, floor - loss)
                else:  # as a binary part: no set of n samples certifies the budget, none may change
                    limit = 0.0
            else:  # a stricter rule takes more off the budget
                limit = budget - self.strictness * self.z * se
            # a paired gain is not credited against a positive budget: the search keeps the best of many candidates
            # on this one set, and a gain measured there is mostly that choice's luck (module docstring)
            judged = max(loss, 0.0) if self.form.paired and self.budget > 0 else loss
            part = {"loss_pp": loss, "se_pp": se, "limit_pp": limit, "within": within_budget(judged, limit),
                    "part": self.form.parts[j]}
            if self.part_factors[j] != self.factor:  # a part at another budget than the output's own
                part["part_budget_pp"] = budget
            if self.form.is_binary(j) and not self.form.paired:  # samples with any change: a pooled feed's term
                part["changed"] = int(np.count_nonzero(col > 0))  # is a share of its rows, not 0 or 1
            parts.append(part)
        # the worst part in pp of the run's budget (each part's figures divided by its factor, as `judge_outputs` does)
        over = [(p["loss_pp"] - p["limit_pp"]) / f for p, f in zip(parts, self.part_factors, strict=True)]
        worst = max(range(len(parts)), key=lambda j: (not parts[j]["within"], over[j]))
        out = {**parts[worst], "within": all(p["within"] for p in parts), "n": n, "metric": self.kind}
        if self.part_factors[worst] != self.factor:
            out["factor"] = self.part_factors[worst]
        if self.form.paired:
            out["worse"], out["better"] = int((d[:, 0] > 0).sum()), int((d[:, 0] < 0).sum())
        return out


class BudgetRule:
    """Per-sample figures of every scored output on the decision set, and the rule above.

    `evaluator`: a calibration.metrics.Evaluator built with the dense model (plan, reference_all, labels,
    run_all). `strictness` > 1 makes every output's rule stricter by that factor (a phase that looks at the same
    decision set many times): paired rules forgive Z·SE / strictness, fidelity rules take strictness·Z·SE off the
    budget (Wilson's bound at strictness·Z for a share of changed samples). (A larger `z` would loosen a paired
    rule.)"""

    def __init__(self, evaluator, budget_pp: float, *, z: float | None = None, strictness: float = 1.0,
                 certifies: bool = True):
        """`certifies=False`: a rule that only chooses (the one-shot start on the training part, which the decision
        set then certifies): a paired output without a discordant pair is not bounded by Wilson's floor there, as
        before it: the floor at 75 labelled training samples (1.3 pp) rejected every try, the fit then went by the
        mean, and sweep 8's two-input model started at 1.0x where the rule had chosen 1.2x."""
        if budget_pp < 0 or not math.isfinite(budget_pp):
            raise ConfigError(f"--max-loss {budget_pp} must be a finite number of percentage points >= 0.")
        unknown = [k for k in evaluator.plan.values() if k not in PER_SAMPLE]
        if unknown:
            raise ConfigError(f"metric '{unknown[0]}' has no per-sample form; use one of {', '.join(PER_SAMPLE)}.")
        z = current_z() if z is None else z
        self.evaluator, self.budget, self.z = evaluator, float(budget_pp), z
        if not strictness >= 1.0:
            raise ConfigError(f"a decision rule's strictness must be >= 1 (got {strictness}); 1 is the rule itself.")
        self.strictness = strictness
        factors = getattr(evaluator, "loss_factors", None) or (1.0,) * len(evaluator.plan)
        self.own_budgets = any(f != 1.0 for f in factors)  # some output has its own budget (--max-loss OUTPUT=L)
        parts = getattr(evaluator, "part_factors", None) or factors  # or its parts', some of them (a decoder's)
        self.outputs = [_OutputRule(name or "output", kind, self.budget * f, z, strictness, certifies, f,
                                    p if isinstance(p, tuple) else None)
                        for (name, kind), f, p in zip(evaluator.plan.items(), factors, parts, strict=True)]
        dense = self.values(evaluator.reference_all)
        for rule, values in zip(self.outputs, dense):
            rule.dense = values
        self.n = max((len(v) for v in dense), default=0)
        if self.n == 0:
            raise ConfigError("the decision set has no samples to judge a candidate on; pass more --data.")
        self.label_free = not any(r.form.paired for r in self.outputs)

    def values(self, batches) -> list[np.ndarray]:
        """Every scored output's per-sample figures, [n, parts] each, from per-batch tuples of output values."""
        refs = self.evaluator.reference_all
        per_output: list[list[np.ndarray]] = [[] for _ in self.outputs]
        for b, (values, ref, labels) in enumerate(zip(batches, refs, self.evaluator.labels, strict=True)):
            values = values if isinstance(values, tuple) else (values,)
            mask, crop = self.evaluator.position_mask(b), self.evaluator.crop(b)
            for i, (rule, value) in enumerate(zip(self.outputs, values, strict=True)):
                # the Evaluator's own per-sample terms: samples as it counts them (an output with no batch: per
                # feed), a batch of another shape lost whole
                got = self.evaluator.output_terms(i, rule.kind, value, ref[i], labels, mask, crop, ref)
                if got is not None:
                    per_output[i].append(_as_losses(rule.kind, *got, rule.form.paired))
        return [np.concatenate(p) if p else np.zeros((0, len(r.form.parts))) for p, r in zip(per_output, self.outputs)]

    def samples_to_resolve(self, budget: float | None = None) -> int | None:
        """The decision samples this rule would need to resolve `budget` (default: the smallest budget of an output
        judged by a share of changed samples, else the run's; Wilson's bound with none changed, 100·s²/(n + s²) pp
        with s = strictness·z, at most the budget), or None for a zero budget (no finite set)."""
        budget = self._binary_budget() if budget is None else budget
        if budget <= 0:
            return None
        z2 = (self.strictness * self.z) ** 2
        return int(math.ceil(100.0 * z2 / budget - z2))

    def _binary_budget(self) -> float:
        """The smallest budget among outputs judged by a share of changed samples (the run's when none is)."""
        own = [r.budget for r in self.outputs if not r.form.paired and r.form.any_floored]
        return min(own) if own else self.budget

    def short_samples(self) -> str:
        """The decision samples that cannot resolve the budget, in words: the rule's n, or where the outputs count
        samples differently, the first such output's own count and name (sweep 28's GNN: "5142 decision samples
        cannot certify" was the per-node output's count, where the per-graph output's 112 feeds fell short)."""
        i = self._short()
        if i is None or len(set(self._counts().values())) <= 1:
            return f"{self.n} decision {'requests' if any(is_list(r.kind) for r in self.outputs) else 'samples'}"
        r = self.outputs[i]
        return f"{len(r.dense)} decision {self.short_unit()} of output '{r.name}'"

    def short_unit(self) -> str:
        """"feeds" where the first output that cannot resolve the budget is pooled a feed a sample (its rows), else
        "samples": what a count of more decision data is in."""
        i = self._short()
        if i is not None and is_list(self.outputs[i].kind):  # a feed's rows read as one list: a request
            return "requests"
        return "feeds" if i is not None and self._pooled(i) else "samples"

    def _short(self) -> int | None:
        """The first scored output whose bound cannot resolve the budget, or None."""
        return next((i for i, r in enumerate(self.outputs) if r.dense is not None and not r.resolves()), None)

    def resolves(self) -> bool:
        """Whether every scored output's bound can certify the budget at this z (a share of changed samples needs
        budget >= Wilson's bound with none changed, 100·z²/(n + z²) pp); when not, a changed-class output is judged
        at one-sample resolution (no sample may change), and a search that looks at the set many times should not."""
        return all(r.resolves() for r in self.outputs)

    @property
    def resolution_pp(self) -> float:
        return 100.0 / self.n

    def judge_outputs(self, batches) -> Decision:
        """The decision for per-batch outputs (tuples in the evaluator's output order, or arrays for one output)."""
        try:
            figures = {r.name: r.judge(v) for r, v in zip(self.outputs, self.values(batches))}  # (batches: any
            # iterable, read once: a candidate's outputs need not all be held at once, `judge`)
        except Exception as exc:
            from onnxprune.calibration.runtime import FAILED_LOSS_PP, run_failure, say_failed_candidate

            reason = run_failure(exc)
            if reason is None:
                raise
            say_failed_candidate(reason, self.evaluator)  # over any budget (sweep 57's legacy-traced MoE)
            name = self.outputs[0].name
            said = {"loss_pp": FAILED_LOSS_PP, "se_pp": 0.0, "limit_pp": self.budget, "within": False, "n": self.n,
                    "metric": self.outputs[0].kind, "failed": reason}
            return Decision(FAILED_LOSS_PP, 0.0, self.budget, False, self.n, output=name, outputs={name: said},
                            strictness=self.strictness, failed=reason)
        factor = {r.name: r.factor for r in self.outputs}
        if self.own_budgets:  # each output's figures against its own budget
            for r in self.outputs:
                figures[r.name]["budget_pp"] = r.budget
        name = max(figures, key=lambda k: (not figures[k]["within"],
                                           figures[k]["loss_pp"] / figures[k].get("factor", factor[k])))
        w = figures[name]  # the worst output's figures, in pp of the run's budget (its worst part's factor)
        f = w.pop("factor", factor[name])
        return Decision(w["loss_pp"] / f, w["se_pp"] / f, w["limit_pp"] / f, all(x["within"] for x in figures.values()),
                        w["n"],
                        w.get("worse", 0), w.get("better", 0), name,
                        {k: {m: (round(x, 6) if isinstance(x, float) else x) for m, x in fig.items()}
                         for k, fig in figures.items()}, self.strictness)

    def judge(self, model) -> Decision:
        """A candidate's decision, its outputs scored a batch at a time as they are computed (a language model's
        logits are 411 MB a batch of 64 x 32 x 50,257: held whole, they were another copy of the reference's)."""
        return self.judge_outputs(self.evaluator.run_all(model))

    def fit_judge(self):
        """The judge calibration.allocate.fit_to_budget takes: (loss_pp, fits, decision dict) of a candidate's
        scored outputs on this rule's evaluator, where fits is the rule and the mean within the budget (for a
        positive budget the upper bound implies the mean; with --max-loss 0 a label rule accepts a loss within one
        standard error, and a fit still holds the mean to the budget)."""
        def judge(outputs):
            decision = self.judge_outputs(outputs)
            return (decision.loss_pp, bool(decision.within) and within_budget(decision.loss_pp, self.budget),
                    decision.as_dict())

        return judge

    def statement(self) -> str:
        kinds = sorted({r.kind for r in self.outputs})
        paired = [k for k in kinds if PER_SAMPLE[k].paired]
        fidelity = [k for k in kinds if not PER_SAMPLE[k].paired]
        rules = []
        if paired:
            rules.append(f"{'/'.join(paired)}: paired loss (a gain counts as 0) + {self.z:.3g} standard error of the "
                         f"paired difference <= {self._budget_text()}" if self.budget > 0 else
                         f"{'/'.join(paired)}: paired loss <= {min(self.z, Z):g} standard error of the paired "
                         "difference "
                         "(no loss beyond the noise)")
        if "expected_accuracy" in paired:
            rules[-1] += (" (expected_accuracy: labels drawn from the input model's probabilities, so it assumes that "
                          "model is calibrated)")
        if fidelity:
            binary = any(r.form.any_binary for r in self.outputs if r.kind in fidelity)
            share = any(r.form.any_share for r in self.outputs if r.kind in fidelity)
            rules.append(f"{'/'.join(fidelity)} (against the input model): mean per-sample loss + {self.z:.3g} "
                         f"standard error <= {self._budget_text()}"
                         + (" (Wilson's bound for a share of changed samples)" if binary else "")
                         + (" (a share of changed positions at least Wilson's bound with none changed)"
                            if share else ""))
        if self.budget > 0:  # what the margin buys: a model at the budget's edge passes on new data this often
            rules[-1] += f"; one-sided, about {NormalDist().cdf(self.z * self.strictness):.0%} confidence"
        every = f"every one of {len(self.outputs)} outputs" if len(self.outputs) > 1 else "the scored output"
        counted = [r for r in self.outputs if r.form.paired or r.form.any_binary]  # one sample's worth: a resolution
        counts = self._counts()
        if len(set(counts.values())) > 1:  # a per-node output beside a per-graph one: each its own samples
            samples = "the decision samples (" + ", ".join(f"{n} of '{k}'" for k, n in counts.items()) + ")"
            fewest = min(counted, key=lambda r: len(r.dense)) if counted else None
            one = (f"; one sample = {100.0 / len(fewest.dense):.3g} pp of '{fewest.name}' here" if fewest else "")
        else:
            samples = f"the {self.n} decision samples"
            one = f"; one sample = {self.resolution_pp:.3g} pp here" if counted else ""
        said = (f"accepted when {every} is within the budget on {samples} ({'; '.join(rules)}); "
                f"the loss reported is the worst output's" + one
                + self._changes_allowed() + self._zero_bound() + self._padding() + self._copied())
        return in_requests(said) if any(is_list(r.kind) for r in self.outputs) else said

    def _counts(self) -> dict:
        """Each scored output's decision samples (they differ where an output follows no batch and is pooled per
        feed beside one that follows it: sweep 28's GNN, 5,142 nodes and 112 graphs)."""
        return {r.name: len(r.dense) for r in self.outputs if r.dense is not None}

    def _binary_fewest(self) -> tuple[int, str] | None:
        """(n, name) of the output judged by a share of changed samples with the fewest decision samples: the one
        that bounds what changes fit; None when no output is."""
        binary = [r for r in self.outputs if not r.form.paired and r.form.any_binary and r.dense is not None]
        if not binary:
            return None
        r = min(binary, key=lambda r: len(r.dense))
        return len(r.dense), r.name

    def _budget_text(self) -> str:
        """'1 pp', or with outputs of their own budget 'its budget (1 pp; 'boxes' 5 pp)'."""
        if not self.own_budgets:
            return f"{self.budget:g} pp"
        own = "; ".join(f"'{r.name}' {r.budget:g} pp" for r in self.outputs if r.factor != 1.0)
        rest = f"{self.budget:g} pp; " if any(r.factor == 1.0 for r in self.outputs) else ""
        return f"its budget ({rest}{own})"

    def _padding(self) -> str:
        """Which positions are not scored, when some output leaves padding out (calibration.metrics)."""
        ev = self.evaluator
        masked = sorted(getattr(ev, "masked", ()) or ())
        if not masked or not getattr(ev, "padding", None):
            return ""
        names = ", ".join(f"'{list(ev.plan)[i]}'" for i in masked)
        return f"; padding not scored on {names}: positions where {ev.padding}"

    def _copied(self) -> str:
        """Which outputs are scored on their computed part only (a decoder's present.* past the past it was fed:
        calibration.metrics `Evaluator.crops`)."""
        ev = self.evaluator
        crops = getattr(ev, "crops", None) or []
        blends = getattr(ev, "blends", None) or {}
        cut = sorted({i for batch in crops for i in batch if i not in blends})
        mixed = sorted({i for batch in crops for i in batch if i in blends})
        last = [n for n in getattr(ev, "plan", ()) if n in (getattr(ev, "last_positions", None) or ())]
        said = "".join(f"; '{n}' scored on its last position only: the pick fed to the next call"
                       for n in last)
        if not cut and not mixed:
            return said
        names = list(ev.plan)
        if cut:
            fed = sorted({p for i in cut for p in ev.copies[i][1] if p})
            said += (f"; {', '.join(repr(names[i]) for i in cut)} scored on their new part only: the part that copies "
                     f"{', '.join(repr(p) for p in fed)} as fed is equal in every model")
        for i in mixed:
            x, m, c = blends[i]
            where = f"'{m}'" if c is None else f"1 - '{m}'" if np.all(np.asarray(c) == 1) else f"c - '{m}'"
            said += (f"; '{names[i]}' scored on its computed part only: the input '{x}' it blends in by {where} is "
                     f"equal in every model")
        return said

    def changes_allowed(self, n: int | None = None) -> int | None:
        """How many of `n` (default: this set's) decision samples may change class/value within the budget by
        Wilson's bound (-1: not even none), or None when no scored output has such a part."""
        fewest = self._binary_fewest()
        n = (fewest[0] if fewest else self.n) if n is None else n
        if not fewest or not n:
            return None
        return self._allowed(n, self.z * self.strictness, self._binary_budget())

    def point_ceilings(self) -> list[np.ndarray]:
        """Per scored output, per part: the largest whole-set loss (pp) a candidate may show on this set and still be
        accepted, as far as it is known before the candidate is measured. A binary part of a fidelity output (a
        share of changed samples): 100·k/n, k the changed samples Wilson's bound admits on its n (0 where the set
        cannot certify the budget: judged at one-sample resolution). Any other part: the budget (its margin, Z·SE,
        is known only once measured). The budgeted scan judges its levels against these
        (calibration.sensitivity `scan(ceilings=)`): a layer that alone changes more samples than a model may is
        over, however much less than the budget's point estimate that is."""
        out = []
        for r in self.outputs:
            n = len(r.dense)
            cols = [r.budget] * len(r.form.parts)
            if not r.form.paired and n and r.budget > 0:
                k = 0 if not r.resolves() else max(0, self._allowed(n, self.z * self.strictness, r.budget))
                cols = [100.0 * k / n if r.form.is_binary(j) else 0.0 if r.form.floored(j) and not r.resolves()
                        else c for j, c in enumerate(cols)]
            out.append(np.asarray(cols, dtype=np.float64) / r.factor)  # in pp of the run's budget, as measured
        return out

    def _allowed(self, n: int, z: float, budget: float | None = None) -> int:
        """The changed samples of n whose share Wilson's bound at z keeps within `budget` (default the run's; -1: not
        even none)."""
        budget = self.budget if budget is None else budget
        k = -1
        while k + 1 <= n and 100.0 * wilson_upper((k + 1) / n, n, z) <= budget + 1e-12:
            k += 1
        return k

    def _changes_allowed(self) -> str:
        """'; 0 changed samples fit the budget here, 1 from 330 decision samples on': what more data would buy."""
        k = self.changes_allowed()
        if k is None or self._binary_budget() <= 0:
            return ""
        n, name = self._binary_fewest()
        of = f" of '{name}'" if len(set(self._counts().values())) > 1 else ""
        lo, hi = n, max(2 * n, 16)
        while self.changes_allowed(hi) <= k:
            lo, hi = hi, 2 * hi
        while hi - lo > 1:  # the smallest set that allows one more changed sample
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.changes_allowed(mid) <= k else (lo, mid)
        if k < 0:
            return (f"; not even a set with no changed sample{of} fits the budget here, from {hi} decision samples on "
                    "it does")
        return f"; {k} changed sample(s){of} fit the budget here, {k + 1} from {hi} decision samples on"

    def _zero_bound(self) -> str:
        """What Wilson's bound with none changed claims, for a share of changed samples: it is narrower than the exact
        binomial bound near 0 (n/(n+1) of n unchanged at that share happens with chance about e^-1), so the claim
        "0 of 187 changed, upper bound 0.53 pp" holds with about 63% one-sided, not the rule's 84% (sweeps 28-42's
        L1: held-out changes over 1 pp after such claims in about 1 run in 4 at 250 unlabelled samples)."""
        fewest = self._binary_fewest() if self._binary_budget() > 0 else None
        if fewest is None:
            return ""
        n = fewest[0]
        z = self.strictness * self.z
        bound = wilson_upper(0.0, n, z)
        held = 1.0 - (1.0 - bound) ** n
        confidence = NormalDist().cdf(z)
        exact = 1.0 - (1.0 - confidence) ** (1.0 / n)
        return (f"; with none of {n} changed, Wilson's bound ({100 * bound:.3g} pp) holds with about {held:.0%} "
                f"one-sided confidence, the exact {confidence:.0%} bound being {100 * exact:.3g} pp")

    def uncertifiable(self) -> str | None:
        """Why no pruned candidate can be certified on this set, or None: a positive budget under Wilson's bound with
        no sample changed, for an output judged by a share of changed samples. Every path then keeps the input
        model (a pruned model that changed none of 60 lines is not shown to change under 1% of lines; measured on
        the corpus's OCR recognizer: such a 1.05x candidate changed 1 of 20 held-out lines). --max-loss 0 is not: it
        asks for no changed sample, which is what the set can check."""
        if self.budget <= 0:
            return None
        for i, r in enumerate(self.outputs):
            if not r.resolves():
                n = len(r.dense)
                bound = 100.0 * wilson_upper(0.0, n, self.strictness * self.z)
                flag = f"--max-loss {r.name}=" if r.factor != 1.0 else "--max-loss "
                derived = (getattr(self.evaluator, "derived", None) or {}).get(r.name)  # a decoder's: not typed
                listed_rows = is_list(r.kind)  # a request's rows read together as one list: one sample a request
                what = ("changed lists" if listed_rows else "changed positions" if r.form.any_share and
                        not r.form.any_binary else "changed samples")
                pooled = self._pooled(i)
                unit = "requests" if listed_rows else "feeds" if pooled else "samples"
                how = (f" (each request's rows, {pooled} here, read together as one list)" if listed_rows else
                       f" (an output that follows no batch: its rows, {pooled} here, pooled into one sample a feed)"
                       if pooled else "")
                single = self._one_a_feed() if pooled and not listed_rows else 0
                alone = (f", --batch-size 1 (a feed each sample: {single} here)" if single > n else "")
                asked = f"{flag}{r.budget:g}" if derived is None else f"{r.budget:.3g} pp a call ({derived})"
                return (f"{n} {unit} cannot certify {asked} for output '{r.name}' ({r.kind}){how}: "
                        f"even with none of them changed, the bound on its share of {what} is {bound:.2f} "
                        f"pp, so the input model is kept; give {self.samples_to_resolve(r.budget)} {unit} to decide "
                        f"on (more --data, or --val-data){alone}, or {flag}{math.ceil(bound * 100) / 100:g}"
                        f"{fraction_hint(r.budget) if derived is None else ''}")
        return None

    def _one_a_feed(self) -> int:
        """The samples of the decision set's feeds where the reader cut them from stacked samples and the model takes
        any batch, so --batch-size 1 makes each a feed of its own; else 0. Sweep 39: an MLP's NonZero output of
        (sample, class) pairs [K, 2], 187 samples read in 12 feeds, was told to give 99 feeds (more --data)."""
        ev = getattr(self, "evaluator", None)
        reader = getattr(ev, "reader", None)
        if reader is None or getattr(reader, "per_feed", False) or getattr(reader, "whole_batches", False):
            return 0
        from onnxprune.calibration.metrics import feed_samples

        return sum(feed_samples(f, reader) for f, _ in ev.batches())

    def _pooled(self, i: int) -> int:
        """The rows of scored output `i` on the decision set when it follows no batch and each feed's rows are
        pooled into one sample (Evaluator.sample_axes None, not k rows a sample), else 0. Sweep 28's batched GNN
        (8 graphs a feed, per-graph logits [graphs, 2]) was told "40 samples cannot certify ... give 99 samples"
        beside its 320 graphs: the samples are feeds."""
        ev = getattr(self, "evaluator", None)
        axes = getattr(ev, "sample_axes", None)
        if not axes or i >= len(axes) or axes[i] is not None or i in (getattr(ev, "grouped", None) or {}):
            return 0
        refs = getattr(ev, "reference_all", None) or []
        rows = 0
        for batch in refs:
            values = batch if isinstance(batch, tuple) else (batch,)
            if i < len(values):
                rows += len(values[i]) if getattr(values[i], "ndim", 0) else 1
        return rows

    def warnings(self) -> list[str]:
        out = []
        if 0 < self.budget < self.resolution_pp and any(r.form.paired for r in self.outputs):
            out.append(f"the decision set ({self.n} samples) cannot resolve --max-loss {self.budget:g}: one sample = "
                       f"{self.resolution_pp:.3g} pp; decisions are made at one-sample resolution (pass a larger "
                       f"--val-data){'' if self.uncertifiable() else fraction_hint(self.budget)}")
        for r in self.outputs:
            if METRICS[r.kind].needs_labels and len(r.dense) and float(r.dense[:, 0].mean()) >= NEAR_PERFECT:
                # said as a condition: a model as accurate on unseen data scores so as well (real models 55: a digit
                # CNN at 98.9% held out scored 329 of 330 unseen test images, which such a model does 1 time in 8)
                out.append(f"the dense model scores {100 * float(r.dense[:, 0].mean()):.2f}% on the decision set: if "
                           "these are samples it was trained on, the budget measures fitting, not generalization "
                           "(pass held-out samples as --val-data); a model this accurate on unseen data scores so too")
        return out


FRACTION_LIKE = 0.1  # a --max-loss at most this would be a share of at most 10% if meant as a fraction: said


def fraction_hint(budget_pp: float) -> str:
    """Audit 39: `--max-loss 0.01`, meant as 1%, kept the input model with "give 9999 samples ... or --max-loss
    0.45" and no word that the budget is in percentage points."""
    if not 0 < budget_pp <= FRACTION_LIKE:
        return ""
    return (f"; --max-loss is in percentage points, not a fraction: {budget_pp:g} is {budget_pp:g} pp "
            f"(if you meant {100 * budget_pp:g}%, pass --max-loss {100 * budget_pp:g})")


def rule_ceilings(evaluator, budget_pp: float) -> list[np.ndarray] | None:
    """Per scored output and term, the most a level may lose (pp) and still be of use to a plan the decision rule
    judges (`BudgetRule.point_ceilings`: 0 changed lines of 240 at 1 pp), or None (the budget itself) when no rule
    can be built on this evaluator. The budgeted scan's (steps/scan.py, the automatic search's one-shot start)."""
    try:
        return BudgetRule(evaluator, budget_pp).point_ceilings()
    except ConfigError:
        return None
