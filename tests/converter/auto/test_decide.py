"""The budget rule: every scored output by its own per-sample form; paired label metrics with one standard error of
margin, fidelity metrics bounded from above; resolution and warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.output_metrics import LISTS, METRICS
from onnxprune.converter.auto.decide import PER_SAMPLE, BudgetRule, wilson_upper
from onnxprune.errors import ConfigError


class FakeEvaluator:
    """The parts of calibration.metrics.Evaluator the rule reads: plan, labels and the reference per batch."""

    def __init__(self, reference, labels, metric="accuracy"):
        plan = metric if isinstance(metric, dict) else {"out": metric}
        self.plan = dict(plan)
        self.reference_all = [r if isinstance(r, tuple) else (r,) for r in reference]
        self.labels = labels
        self.scales = Evaluator._scales(self)  # each relative error's floor: the whole set's scale, as the Evaluator's

    def run_all(self, outputs):  # the "model" is its outputs
        return iter(o if isinstance(o, tuple) else (o,) for o in outputs)

    def samples_first(self, i, out, want):  # every output here holds its samples on axis 0
        return out, want

    def whole(self, i):  # every output follows the batch
        return False

    masked = frozenset()  # no attention mask: every position counts

    def position_mask(self, batch):
        return None

    grouped: dict = {}  # no output of several rows a sample

    def crop(self, batch):  # no output copies an input
        return None

    cropped = staticmethod(Evaluator.cropped)
    output_terms = Evaluator.output_terms  # the Evaluator's own per-sample terms, over the outputs above


def logits_for(classes, n_classes=10):
    out = np.zeros((len(classes), n_classes), dtype=np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


def make_case(n=1000, dense_wrong=20, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    dense = labels.copy()
    dense[:dense_wrong] = (labels[:dense_wrong] + 1) % 10
    half = n // 2
    ev = FakeEvaluator([logits_for(dense[:half]), logits_for(dense[half:])], [labels[:half], labels[half:]])
    return ev, labels, dense


def halves(x):
    return [x[: len(x) // 2], x[len(x) // 2:]]


def test_the_dense_model_itself_is_within_a_zero_budget_and_the_resolution_is_one_sample():
    ev, labels, dense = make_case()
    rule = BudgetRule(ev, 0.0)
    d = rule.judge([r[0] for r in ev.reference_all])
    assert d.loss_pp == 0.0 and d.se_pp == 0.0 and d.within and d.n == 1000
    assert rule.resolution_pp == pytest.approx(0.1)
    assert "one sample = 0.1 pp" in rule.statement() and "1 standard error" in rule.statement()


def test_paired_loss_counts_discordant_samples_and_the_margin_is_one_standard_error():
    ev, labels, dense = make_case()
    cand = dense.copy()
    cand[100:130] = (labels[100:130] + 1) % 10  # 30 newly wrong
    cand[:10] = labels[:10]  # 10 newly right
    rule = BudgetRule(ev, 0.0)
    d = rule.judge(halves(logits_for(cand)))
    assert (d.worse, d.better) == (30, 10)
    diff = np.r_[np.ones(30), -np.ones(10), np.zeros(960)]
    assert d.loss_pp == pytest.approx(2.0)
    assert d.se_pp == pytest.approx(100 * diff.std(ddof=1) / math.sqrt(1000))
    assert d.limit_pp == pytest.approx(d.se_pp) and not d.within  # 2.0 pp > 0 + 1 SE (~0.63 pp)
    # a positive budget bounds the loss from above, as for every other metric: 2.0 pp + 1 SE (0.63 pp) is over 2.0
    # and 2.5 pp, within 2.7 pp (it used to be max(budget, 1 SE): a loss over a budget finer than the noise passed)
    assert not BudgetRule(ev, 1.5).judge(halves(logits_for(cand))).within
    assert not BudgetRule(ev, 2.0).judge(halves(logits_for(cand))).within
    assert BudgetRule(ev, 2.7).judge(halves(logits_for(cand))).within
    assert BudgetRule(ev, 0.5).judge(halves(logits_for(cand))).limit_pp == pytest.approx(0.5 - d.se_pp)


def test_a_measured_gain_is_not_credited_against_a_positive_budget():
    """Sweep 6, k_conv1d: -0.89 pp on 225 decision samples ("upper bound 0.37 pp") and 1.90 pp lost held out. The
    bound is max(L, 0) + 1 SE: a gain no longer buys its own noise."""
    ev, labels, dense = make_case(n=200, dense_wrong=40)
    cand = dense.copy()
    cand[:12] = labels[:12]  # 12 newly right
    cand[100:106] = (labels[100:106] + 1) % 10  # 6 newly wrong: L = -3 pp, SE ~2.1 pp
    d = BudgetRule(ev, 1.0).judge(halves(logits_for(cand)))
    assert d.loss_pp == pytest.approx(-3.0) and d.loss_pp + d.se_pp < 1.0  # the old bound passed it
    assert not d.within and d.limit_pp == pytest.approx(1.0 - d.se_pp)
    assert BudgetRule(ev, 2.5).judge(halves(logits_for(cand))).within  # 0 + 1 SE fits a wider budget
    assert "a gain counts as 0" in BudgetRule(ev, 1.0).statement()


def test_a_loss_within_the_noise_passes_a_zero_budget():
    ev, labels, dense = make_case()
    cand = dense.copy()
    cand[100:103] = (labels[100:103] + 1) % 10  # 3 newly wrong, 2 newly right: 0.1 pp, SE ~0.22 pp
    cand[:2] = labels[:2]
    d = BudgetRule(ev, 0.0).judge(halves(logits_for(cand)))
    assert d.loss_pp == pytest.approx(0.1) and d.within


def test_warnings_for_an_unresolvable_budget_and_for_training_data():
    ev, _, _ = make_case(n=100, dense_wrong=0)
    warnings = BudgetRule(ev, 0.5).warnings()
    assert any("cannot resolve --max-loss 0.5: one sample = 1 pp" in w for w in warnings)
    assert any("if these are samples it was trained on" in w for w in warnings)
    ev, _, _ = make_case(n=1000, dense_wrong=50)
    assert BudgetRule(ev, 0.5).warnings() == []


def test_label_free_agreement_is_bounded_from_above_so_in_sample_noise_is_not_spent():
    """1 pp on 240 samples: a candidate changing 2 of them (0.83 pp, SE 0.59 pp) is within the whole-set budget but
    not within the rule's bound; one changing none is."""
    rng = np.random.default_rng(1)
    dense = rng.standard_normal((240, 10)).astype(np.float32)
    ev = FakeEvaluator(halves(dense), [None, None], metric="agreement")
    rule = BudgetRule(ev, 1.0)
    assert rule.label_free
    two = dense.copy()
    for i in (3, 200):  # another class wins on two samples
        two[i, (dense[i].argmax() + 1) % 10] = 99.0
    d = rule.judge(halves(two))
    assert d.loss_pp == pytest.approx(100 * 2 / 240)
    changed = np.r_[np.ones(2), np.zeros(238)]
    assert d.se_pp == pytest.approx(100 * changed.std(ddof=1) / math.sqrt(240))
    # a share of changed samples is bounded by Wilson's score interval (wider than Wald's L + SE at small counts)
    assert d.limit_pp == pytest.approx(1.0 - 100 * (wilson_upper(2 / 240, 240, 1.0) - 2 / 240))
    assert d.limit_pp < 1.0 - d.se_pp and not d.within
    assert BudgetRule(ev, 2.0).judge(halves(two)).within  # 0.83 + 0.59 <= 2
    same = rule.judge(halves(dense * 1.5))  # same classes: no loss, yet a margin (Wald's would be zero-wide)
    assert same.within and same.se_pp == 0 and same.limit_pp == pytest.approx(1.0 - 100 / 241)
    assert "+ 1 standard error <= 1 pp" in rule.statement() and "Wilson" in rule.statement()


def test_the_rule_says_how_sure_wilsons_bound_with_none_changed_is():
    """Wilson's bound with none of n changed, 100/(n+1) pp at 1 SE, is narrower than the exact binomial bound: a
    share at it leaves all n samples unchanged with chance (1 - 1/(n+1))^n, about e^-1, so "0 of 187 changed, upper
    bound 0.53 pp" holds with about 63% one-sided confidence, not 84% (sweeps 28-42's L1: held-out changes past the
    budget in about 1 run in 4 at 250 unlabelled samples). The rule's statement says so with the exact bound."""
    dense = np.random.default_rng(0).standard_normal((187, 10)).astype(np.float32)
    said = BudgetRule(FakeEvaluator(halves(dense), [None, None], metric="agreement"), 1.0).statement()
    exact = 1 - 0.16 ** (1 / 187)  # P(no change of 187 | share) = 1 - 0.84 at the exact one-sided bound
    assert (1 - 1 / 188) ** 187 == pytest.approx(0.37, abs=0.01) and 100 * exact == pytest.approx(0.98, abs=0.01)
    assert ("with none of 187 changed, Wilson's bound (0.532 pp) holds with about 63% one-sided confidence, the "
            "exact 84% bound being 0.98 pp") in said
    rel = BudgetRule(FakeEvaluator(halves(dense), [None, None], metric="rel_l2"), 1.0).statement()
    assert "Wilson" not in rel  # a continuous loss has no share to bound


def test_no_changed_sample_still_has_a_margin_so_a_stricter_search_cannot_keep_luck():
    """180 decision samples, none changed: within 1 pp by Wilson's bound at 1 SE (1/181 = 0.55 pp), not at the
    per-layer phase's strictness 2 (4/184 = 2.2 pp), which looks at the set many times; at 1,000 samples, both."""
    for n, resolves_at_2 in ((180, False), (1000, True)):
        dense = np.random.default_rng(n).standard_normal((n, 10)).astype(np.float32)
        ev = FakeEvaluator(halves(dense), [None, None], metric="agreement")
        assert BudgetRule(ev, 1.0).judge(halves(dense)).within and BudgetRule(ev, 1.0).resolves()
        strict = BudgetRule(ev, 1.0, strictness=2.0)
        assert strict.resolves() == resolves_at_2  # unresolved: the search skips what needs it (recovery.py)
        if resolves_at_2:
            assert strict.judge(halves(dense)).limit_pp == pytest.approx(1.0 - 400 / (n + 4))
        one = dense.copy()
        one[5, (dense[5].argmax() + 1) % 10] = 99.0  # one changed sample: 0.58 pp by the bound at 1,000 samples
        assert strict.judge(halves(one)).within == resolves_at_2


def test_a_zero_budget_is_judged_at_one_sample_resolution():
    """--max-loss 0 against the input model: no finite set certifies it, so no sample may change (the dense model
    itself passes; a bound would refuse even it)."""
    dense = np.random.default_rng(0).standard_normal((500, 10)).astype(np.float32)
    ev = FakeEvaluator(halves(dense), [None, None], metric="agreement")
    rule = BudgetRule(ev, 0.0)
    assert not rule.resolves() and rule.samples_to_resolve() is None
    assert BudgetRule(ev, 1.0, strictness=2.0).samples_to_resolve() == 396  # 400/(396 + 4) pp = 1 pp
    assert rule.judge(halves(dense)).within and rule.judge(halves(dense * 2)).within
    one = dense.copy()
    one[7, (dense[7].argmax() + 1) % 10] = 99.0
    assert not rule.judge(halves(one)).within


def _pair(kind, rng, n=60):
    """A dense output of the shape the kind scores, a candidate moved from it, and labels."""
    shape = {"seq_agreement": (n, 5, 7), "exact": (n, 3), "channel_prob": (n, 6, 8), "ctc_agreement+rel_l2": (n, 9, 5),
             "map_iou+rel_l2": (n, 3, 6, 6)}.get(kind, (n, 10))
    ref = rng.standard_normal(shape)
    if kind == "binary_prob":  # one sigmoid score per sample
        ref = 1 / (1 + np.exp(-rng.standard_normal((n, 1))))  # many near 0.5: crossings set the loss
        return ref, np.clip(ref + 0.1 * rng.standard_normal((n, 1)), 0, 1), None
    if kind == "channel_prob":  # box-like channels beside probabilities
        ref[:, 3:] = rng.uniform(0, 1, (n, 3, 8)) ** 4
        out = ref + 0.02 * rng.standard_normal(shape)
        out[:, 3:] = np.clip(out[:, 3:], 0, 1)
        return ref, out, None
    if kind == "detections":  # ranked lists [n, 12, x1 y1 x2 y2 score class], a few confident rows each
        xy = rng.uniform(0, 50, (n, 12, 2))
        scores = -np.sort(-rng.uniform(0, 1, (n, 12)) ** 6, axis=1)
        ref = np.concatenate([xy, xy + rng.uniform(2, 10, (n, 12, 2)), scores[..., None],
                              rng.integers(0, 3, (n, 12, 1))], axis=2)
        out = ref.copy()
        out[..., :4] += 0.2 * rng.standard_normal((n, 12, 4))
        out[..., 4] = -np.sort(-np.clip(scores + 0.02 * rng.standard_normal((n, 12)), 0, 1), axis=1)
        return ref, out, None
    if kind == "prob":
        ref = np.exp(ref) / np.exp(ref).sum(axis=1, keepdims=True)
    if kind == "exact":
        ref = rng.integers(0, 4, shape).astype(np.int64)
        out = ref.copy()
        out[rng.random(n) < 0.2, 0] += 1
        return ref, out, None
    out = ref + 0.4 * rng.standard_normal(shape)
    if kind == "prob":
        out = np.abs(out) / np.abs(out).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 10, n) if METRICS[kind].needs_labels else None
    return ref, out, labels


def _at_pair(kind, rng, n=60):
    """Values around the kind's threshold T (KIND@T), where its crossings set the loss, and a candidate moved from
    them: a probability per sample, a logit per sample, a map of probabilities."""
    at = float(kind.split("@")[1].split("+")[0].rstrip("r"))  # of each sample's range: values in [0, 1] span it
    shape = (n, 10) if kind.startswith("mask_iou") else (n, 1)
    logits = rng.normal(at if kind.startswith("binary_logit") else np.log(at / (1 - at)), 0.5, shape)
    if kind.startswith("binary_logit"):
        return logits, logits + 0.3 * rng.standard_normal(shape), None
    ref = 1 / (1 + np.exp(-logits))
    return ref, np.clip(ref + 0.02 * rng.standard_normal(shape), 0, 1), None


@pytest.mark.parametrize("kind", sorted(k for k in METRICS.own if k not in LISTS) +
                         ["binary_prob@0.3", "binary_logit@0.8", "mask_iou@0.3+rel_l2", "mask_iou@0.4r"])
def test_every_metric_kinds_per_sample_mean_is_its_whole_set_loss(kind):
    """The rule and the Evaluator agree on the loss of every kind (the rule only adds the margin), a kind read at the
    user's threshold (KIND@T) too. A feed's list (list@T, set@T, top@K) is one sample a feed read as it is:
    tests/calibration/test_request_lists.py."""
    assert set(PER_SAMPLE.own) == set(METRICS.own)  # every kind has a per-sample form
    rng = np.random.default_rng(len(kind))
    ref, out, labels = _at_pair(kind, rng) if "@" in kind else _pair(kind, rng)
    metric = METRICS[kind]
    batches = [slice(0, 25), slice(25, 60)]
    labs = [None if labels is None else labels[s] for s in batches]

    def whole(x):
        sums, count = None, 0
        for s, lab in zip(batches, labs):
            part, c = metric.batch(x[s], ref[s], lab)
            sums = np.asarray(part, dtype=np.float64) + (0 if sums is None else sums)
            count += c
        return metric.finish(sums, count)

    ev = FakeEvaluator([ref[s] for s in batches], labs, metric=kind)
    d = BudgetRule(ev, 5.0).judge([out[s] for s in batches])
    assert d.loss_pp == pytest.approx(100 * (whole(ref) - whole(out)), abs=1e-9), kind
    assert d.n == 60 and d.outputs["out"]["metric"] == kind
    form = PER_SAMPLE[kind]
    if form.paired:  # a positive budget: the upper bound L + SE within it
        want = 5.0 - d.se_pp
    elif form.is_binary(form.parts.index(d.outputs["out"]["part"])):  # the worst part reported is a share of
        # changed samples (prob: or its 2nd part); a pair of kinds reports whichever of its parts is worse
        share = d.loss_pp / 100
        want = 5.0 - 100 * (wilson_upper(share, 60, 1.0) - share)
        if kind.split("@")[0] in ("prob", "binary_prob", "binary_logit") and d.limit_pp != pytest.approx(want):
            want = 5.0 - d.se_pp
    else:
        want = 5.0 - d.se_pp
    assert d.limit_pp == pytest.approx(want)
    assert d.within == (d.loss_pp <= d.limit_pp + 1e-9)


def test_every_output_must_be_within_and_the_worst_is_reported():
    rng = np.random.default_rng(3)
    boxes, scores = rng.standard_normal((200, 4)), rng.standard_normal((200, 3))
    ev = FakeEvaluator([(boxes[:100], scores[:100]), (boxes[100:], scores[100:])], [None, None],
                       metric={"boxes": "rel_l2", "scores": "agreement"})
    rule = BudgetRule(ev, 1.0)
    moved = boxes * 1.005  # relative error 0.005 on every sample: 0.5 pp, SE 0 -> within
    flipped = scores.copy()
    flipped[:4] = -flipped[:4]  # changes the class of (at least some of) 4 samples: over 1 pp's bound
    both = rule.judge([(moved[:100], flipped[:100]), (moved[100:], flipped[100:])])
    assert not both.within and both.output == "scores"
    assert both.outputs["boxes"]["within"] and both.outputs["boxes"]["loss_pp"] == pytest.approx(0.5)
    assert not both.outputs["scores"]["within"]
    boxes_only = rule.judge([(moved[:100], scores[:100]), (moved[100:], scores[100:])])
    assert boxes_only.within and boxes_only.output == "boxes" and boxes_only.loss_pp == pytest.approx(0.5)
    assert "every one of 2 outputs" in rule.statement() and "worst output" in rule.statement()
    assert "Wilson" in rule.statement()  # the agreement output's changed classes
    values_only = BudgetRule(FakeEvaluator([(boxes[:100],), (boxes[100:],)], [None, None], metric={"boxes": "rel_l2"}),
                             1.0)
    assert "Wilson" not in values_only.statement()  # nothing that is 0 or 1 per sample


def test_the_budget_lines_closest_test_is_the_output_nearest_its_limit_not_the_largest_loss():
    """Sweep 56: a Keras two-tower model's budget line named 'q_emb' (cosine 0.00 pp, upper bound 0.00) as the rule's
    closest test, where 'match' had none of 106 samples cross 0.5 and Wilson's bound 0.93 of 1 pp: the reported
    output is the largest loss's, and ties at no loss name the first. The closest test is the nearest limit."""
    from types import SimpleNamespace

    from onnxprune.converter.auto.decide import tightest_output
    from onnxprune.converter.steps.budget import BudgetCheckStep, BudgetConfig

    rng = np.random.default_rng(3)
    boxes, scores = rng.standard_normal((200, 4)), rng.standard_normal((200, 3))
    ev = FakeEvaluator([(boxes[:100], scores[:100]), (boxes[100:], scores[100:])], [None, None],
                       metric={"boxes": "rel_l2", "scores": "agreement"})
    moved = boxes * 1.002  # 0.2 pp of relative error, SE 0: its limit is the whole budget
    d = BudgetRule(ev, 1.0).judge([(moved[:100], scores[:100]), (moved[100:], scores[100:])])
    assert d.within and d.output == "boxes" and d.outputs["scores"]["loss_pp"] == 0.0  # the largest loss
    over = {k: f["loss_pp"] - f["limit_pp"] for k, f in d.outputs.items()}
    assert over["scores"] > over["boxes"]  # none of 200 changed: Wilson's bound leaves less of the budget
    assert tightest_output(d.as_dict(), 1.0) == "scores"
    state = SimpleNamespace(report={"metrics": {"sets": {"calibration": {"loss_pp": 0.2}}}, "notes": []},
                            data=SimpleNamespace(output_budgets=None), auto={"decision": d.as_dict(), "rule": "r"},
                            allocation=None, quantize=None)
    BudgetCheckStep(BudgetConfig(max_loss=1.0)).run(state)
    tight = state.report["budget"]["tightest"]
    assert tight["output"] == "scores" and tight["metric"] == "agreement" and tight["changed"] == 0
    # an output over its limit is the one named, whatever the others' losses
    flipped = scores.copy()
    flipped[:4] = -flipped[:4]
    d = BudgetRule(ev, 1.0).judge([(boxes[:100] * 1.009, flipped[:100]), (boxes[100:] * 1.009, flipped[100:])])
    assert not d.within and tightest_output(d.as_dict(), 1.0) == "scores"


def test_a_batch_of_another_shape_loses_every_sample_of_it():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((40, 6))
    ev = FakeEvaluator([ref[:20], ref[20:]], [None, None], metric="rel_l2")
    d = BudgetRule(ev, 1.0).judge([ref[:20], ref[20:35]])  # 15 detections where the dense model had 20
    assert d.loss_pp == pytest.approx(50.0) and not d.within


def test_a_negative_budget_is_refused():
    ev, _, _ = make_case()
    with pytest.raises(ConfigError, match="max-loss"):
        BudgetRule(ev, -1.0)


@pytest.mark.parametrize("metric", ["accuracy", "agreement"])
def test_a_stricter_rule_accepts_a_subset_for_both_kinds(metric):
    """strictness 2 (the refit's per-layer phase): a paired rule takes 2 SE off a positive budget, a share of changed
    samples is bounded by Wilson at 2 SE. A larger z inside max(budget, z·SE) would have loosened the paired rule: a 3 pp loss on 100
    samples passed a 1 pp budget at z = 2 (a run then ended over its budget)."""
    ev, labels, dense = make_case(n=100, dense_wrong=5)
    if metric == "agreement":
        ev = FakeEvaluator(ev.reference_all, ev.labels, "agreement")
    rng = np.random.default_rng(3)
    for worse in range(8):
        cand = dense.copy()
        idx = rng.choice(np.arange(5, 100), worse, replace=False)
        cand[idx] = (cand[idx] + 1) % 10
        loose, strict = (BudgetRule(ev, 1.0, strictness=s).judge(halves(logits_for(cand))) for s in (1.0, 2.0))
        if metric == "accuracy":  # a positive budget: an upper bound, L + SE (L + 2 SE when stricter) within it,
            # the margin never below Wilson's bound at none changed (at Z, however strict)
            for rule, s in ((loose, 1.0), (strict, 2.0)):
                margin = max(100.0 * wilson_upper(0.0, 100, 1.0), s * rule.se_pp)  # the floor at Z: decide.py
                assert rule.limit_pp == pytest.approx(1.0 - margin)
        # agreement: 100 samples cannot certify 1 pp at 2 SE, so the stricter rule takes no changed sample at all
        assert not (strict.within and not loose.within)
        if worse == 3:
            assert not strict.within and not loose.within  # 3 pp against a 1 pp budget, however strict


def test_the_statement_says_how_many_changed_samples_fit_and_what_a_larger_set_would_allow():
    """At 1 pp, 180 decision samples allow no changed class; the smallest set that allows one is where Wilson's bound
    for 1 of n first falls to 1 pp (brute force here). 60 samples cannot certify even none (100/61 pp); a rule with
    only continuous outputs says nothing of it."""
    def first(k, z=1.0, budget=1.0):
        return next(n for n in range(max(k, 1), 100_000) if 100 * wilson_upper(k / n, n, z) <= budget)

    for n, text in ((180, f"0 changed sample(s) fit the budget here, 1 from {first(1)} decision samples on"),
                    (400, f"2 changed sample(s) fit the budget here, 3 from {first(3)} decision samples on"),
                    (60, f"not even a set with no changed sample fits the budget here, from {first(0)} decision")):
        dense = np.random.default_rng(n).standard_normal((n, 10)).astype(np.float32)
        rule = BudgetRule(FakeEvaluator(halves(dense), [None, None], metric="agreement"), 1.0)
        assert text in rule.statement(), rule.statement()
    assert first(1) == 261  # what the corpus's 112-240 sample sets are up against
    dense = np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)
    continuous = BudgetRule(FakeEvaluator(halves(dense), [None, None], metric="rel_l2"), 1.0)
    assert "fit the budget here" not in continuous.statement() and continuous.changes_allowed() is None


def test_a_positive_budget_too_fine_for_the_set_certifies_nothing():
    """60 samples, none changed: Wilson's bound 100/61 = 1.64 pp > 1 pp, so no pruned candidate is certified (every
    path keeps the input model and says so); 99 samples do; --max-loss 0 and continuous outputs are not affected."""
    for n, certifiable in ((60, False), (98, False), (99, True), (120, True)):
        dense = np.random.default_rng(n).standard_normal((n, 10)).astype(np.float32)
        rule = BudgetRule(FakeEvaluator(halves(dense), [None, None], metric="agreement"), 1.0)
        why = rule.uncertifiable()
        assert (why is None) == certifiable
        if not certifiable:
            assert why.startswith(f"{n} samples cannot certify --max-loss 1 for output 'out' (agreement)")
            assert f"{100 / (n + 1):.2f} pp" in why and "give 99 samples to decide on" in why
        assert BudgetRule(FakeEvaluator(halves(dense), [None, None], metric="agreement"), 0.0).uncertifiable() is None
        assert BudgetRule(FakeEvaluator(halves(dense), [None, None], metric="rel_l2"), 1.0).uncertifiable() is None
        prob = np.exp(dense) / np.exp(dense).sum(1, keepdims=True)  # prob: its class part is a share of samples
        assert (BudgetRule(FakeEvaluator(halves(prob), [None, None], metric="prob"), 1.0).uncertifiable() is None
                ) == certifiable
    # the warning about one-sample resolution is for label metrics now (paired); a fidelity output's is the above
    dense = np.random.default_rng(1).standard_normal((60, 10)).astype(np.float32)
    assert BudgetRule(FakeEvaluator(halves(dense), [None, None], metric="rel_l2"), 1.0).warnings() == []


def test_confidence_sets_the_margin_of_every_rule_built_in_its_scope():
    """--confidence 0.95 is 1.645 standard errors (one-sided); the default is Z = 1 (about 84%). Rules built inside
    decision_scope take it, the scope ends with the run, and an explicit z still wins."""
    from onnxprune.converter.auto.decide import Z, confidence_z, current_z, decision_scope

    assert confidence_z(None) == Z == 1.0 and confidence_z(0.95) == pytest.approx(1.6449, abs=1e-4)
    for bad in (0.5, 1.0, 1.5, 0.2):
        with pytest.raises(ConfigError, match=f"--confidence {bad:g} must be between 0.5 and 1"):
            confidence_z(bad)
    dense = np.random.default_rng(0).standard_normal((240, 10)).astype(np.float32)
    ev = FakeEvaluator(halves(dense), [None, None], metric="agreement")
    with decision_scope(0.95):
        rule = BudgetRule(ev, 1.0)
        assert rule.z == pytest.approx(1.6449, abs=1e-4) and BudgetRule(ev, 1.0, z=1.0).z == 1.0
        assert "about 95% confidence" in rule.statement(), rule.statement()
        # 240 samples, none changed: Wilson's bound at 1.645 is z²/(n + z²) = 1.11 pp > 1 pp: nothing certifiable
        z2 = confidence_z(0.95) ** 2
        assert rule.uncertifiable().startswith("240 samples cannot certify --max-loss 1")
        assert f"give {math.ceil(100 * z2 - z2)} samples to decide on" in rule.uncertifiable()
    assert current_z() == Z and "about 84% confidence" in BudgetRule(ev, 1.0).statement()
    assert BudgetRule(ev, 1.0).uncertifiable() is None


def test_confidence_does_not_widen_the_no_loss_test_of_a_zero_budget():
    """--max-loss 0 with labels accepts a loss within the noise (L <= 1 SE); a larger margin would forgive more, so
    it stays at one standard error whatever --confidence says."""
    from onnxprune.converter.auto.decide import decision_scope

    ev, labels, dense = make_case()
    worse = dense.copy()
    worse[500:515] = (labels[500:515] + 1) % 10  # 15 more wrong of 1,000: 1.5 pp, SE ~0.38 pp
    outs = [logits_for(worse[:500]), logits_for(worse[500:])]
    plain = BudgetRule(ev, 0.0).judge(outs)
    with decision_scope(0.99):
        sure = BudgetRule(ev, 0.0).judge(outs)
        assert "paired loss <= 1 standard error" in BudgetRule(ev, 0.0).statement()
    assert sure.limit_pp == pytest.approx(plain.limit_pp) and not sure.within


def test_a_rule_over_continuous_figures_only_does_not_speak_of_one_samples_worth():
    """'one sample = 0.444 pp here' read as a resolution where no share of samples is counted (sweep 7's U-Net,
    rel_l2 only)."""
    from onnxprune.calibration.metrics import Evaluator
    from onnxprune.calibration.readers import open_data
    from onnxprune.models import third_party_builders as tb

    x = np.random.default_rng(0).standard_normal((120, 8)).astype(np.float32)
    model = tb.regressor()
    rule = BudgetRule(Evaluator(open_data({"input": x}, model, batch_size=40), None, model), 1.0)
    assert [r.kind for r in rule.outputs] == ["rel_l2"] and "one sample" not in rule.statement()


def test_accuracy_with_no_discordant_pair_is_bounded_by_wilson_not_zero():
    """Sweep 8: a ViT with 225 labelled decision samples, none of them flipped between right and wrong, printed
    "upper bound 0.00 pp" (the paired SE is 0 there) and lost 1.19 pp (SE 0.23) on 4,700 unseen images. The bound on
    the share made worse is Wilson's, as for a share of changed classes: 1/(n + 1) at Z = 1."""
    ev, labels, dense = make_case(n=226, dense_wrong=10)
    cand = dense.copy()
    cand[:3] = (cand[:3] + 3) % 10  # three wrong answers changed to other wrong ones: no discordant pair
    assert (cand[:3] != labels[:3]).all()
    d = BudgetRule(ev, 1.0).judge(halves(logits_for(cand)))
    assert d.loss_pp == 0.0 and d.se_pp == 0.0 and d.within
    assert d.limit_pp == pytest.approx(1.0 - 100.0 / 227)  # upper bound 0.44 pp, not 0
    cand[20] = (labels[20] + 1) % 10  # one made worse: 0.44 pp + 1 SE (0.44): the paired rule, within
    one = BudgetRule(ev, 1.0).judge(halves(logits_for(cand)))
    assert one.within and one.limit_pp == pytest.approx(1.0 - one.se_pp)
    # --max-loss 0 keeps its meaning (no loss beyond the noise): the unchanged model is within it
    assert BudgetRule(ev, 0.0).judge(halves(logits_for(dense))).within
    # too few labelled samples to certify 1 pp even with none flipped: the input model is kept, saying why
    small, _, _ = make_case(n=90, dense_wrong=5)
    why = BudgetRule(small, 1.0).uncertifiable()
    assert why and "90 samples cannot certify --max-loss 1 for output" in why


def test_a_choosing_rule_has_no_zero_width_floor_and_still_certifies_on_enough_samples():
    """The one-shot start is chosen on the training part (75 labelled samples in sweep 8's two-input model) and
    certified on the decision set: the floor (1.3 pp at 75) rejected every try there and the start fell to 1.0x."""
    ev, labels, dense = make_case(n=76, dense_wrong=4)
    choosing = BudgetRule(ev, 1.0, certifies=False)
    assert choosing.uncertifiable() is None
    d = choosing.judge(halves(logits_for(dense)))
    assert d.within and d.limit_pp == pytest.approx(1.0)  # no discordant pair: SE 0, as the chooser had it
    assert BudgetRule(ev, 1.0).uncertifiable()  # the certifying rule says 76 labelled samples cannot


@pytest.mark.parametrize("kind", ["seq_agreement", "map_iou"])
def test_a_share_of_changed_positions_with_none_changed_is_not_zero_wide(kind):
    """Sweep 13: a class map / per-position output with no changed position had SE 0 and a zero-wide bound
    ("0.00 pp" claimed; 3.0% of held-out positions changed). Its upper bound is now at least Wilson's at none
    changed, so 180 samples bound it at 100/181 pp and 60 cannot certify 1 pp at all (as for agreement)."""
    for n in (180, 60):
        rng = np.random.default_rng(n)
        dense = rng.standard_normal((n, 4, 6, 5) if kind == "map_iou" else (n, 6, 7)).astype(np.float32)
        rule = BudgetRule(FakeEvaluator(halves(dense), [None, None], metric=kind), 1.0)
        same = rule.judge(halves(dense))
        assert same.loss_pp == 0.0 and same.se_pp == 0.0
        if n == 180:
            assert rule.resolves() and rule.uncertifiable() is None
            assert same.within and same.limit_pp == pytest.approx(1.0 - 100 / 181)
            finer = BudgetRule(FakeEvaluator(halves(dense), [None, None], metric=kind), 0.5)
            assert finer.uncertifiable() is not None  # 0.55 pp > 0.5 pp: the input model is kept
            one = dense.copy()  # one position of one sample changed: the bound stays at least the floor
            if kind == "map_iou":
                one[3, :, 0, 0] = 0.0
                one[3, (dense[3, :, 0, 0].argmax() + 1) % 4, 0, 0] = 99.0
            else:
                one[3, 0, (dense[3, 0].argmax() + 1) % 7] = 99.0
            d = rule.judge(halves(one))
            assert 0 < d.loss_pp and d.loss_pp - d.limit_pp + 1.0 >= 100 / 181 - 1e-9
        else:
            why = rule.uncertifiable()
            assert not rule.resolves() and why.startswith(f"60 samples cannot certify --max-loss 1 for output 'out' ({kind})")
            assert "share of changed positions is 1.64 pp" in why
            assert rule.point_ceilings()[0][0] == 0.0
        assert BudgetRule(FakeEvaluator(halves(dense), [None, None], metric=kind), 0.0).judge(halves(dense)).within


def test_a_paired_rule_never_prefers_a_changed_candidate_to_an_unchanged_one():
    """Session 25: at 2x the margin on 300 labelled samples an unchanged candidate was rejected (Wilson's floor at
    2 Z, 1.32 pp) while one with a sample made worse passed (0.33 pp + 2 SE = 1.00 pp). The margin is never below
    the floor, and the floor is Wilson's at Z however strict the rule, so the unchanged candidate is at least as
    acceptable at any strictness, and a set that certifies the budget certifies it at any strictness."""
    ev, labels, dense = make_case(n=300, dense_wrong=10)
    worse, swapped = dense.copy(), dense.copy()
    worse[50] = swapped[50] = (labels[50] + 1) % 10  # one made worse
    swapped[0] = labels[0]  # and one made better (the dense model was wrong there)
    floor = 100.0 * wilson_upper(0.0, 300, 1.0)
    for strictness in (1.0, 2.0):
        rule = BudgetRule(ev, 1.0, strictness=strictness)
        unchanged, one, two = (rule.judge(halves(logits_for(c))) for c in (dense, worse, swapped))
        assert unchanged.within and unchanged.limit_pp == pytest.approx(1.0 - floor) and rule.resolves()
        assert two.worse == 1 and two.better == 1 and two.loss_pp == 0.0
        for changed in (one, two):
            assert changed.limit_pp <= unchanged.limit_pp
            assert changed.limit_pp == pytest.approx(1.0 - max(floor, strictness * changed.se_pp))
    assert one.within and one.limit_pp == pytest.approx(1.0 - 2 * one.se_pp)  # 0.33 pp + 2 SE: at the budget


def test_a_read_out_and_its_values_must_both_hold_the_budget():
    """ctc_agreement+rel_l2 (an unnamed CTC head, metric_choice `read_out_kind`): a candidate whose text is the dense
    model's on every sample but whose values moved 5% fails 1 pp on the values; one whose values moved 0.3% but
    whose text changed on 3 of 300 samples fails on the text (ddddocr: within 1 pp of relative error, 1 of 20
    held-out captchas read differently); one that moved neither passes. The figure is the lower of the two."""
    rng = np.random.default_rng(4)
    n, t, c = 300, 12, 6
    ref = rng.standard_normal((n, t, c)).astype(np.float64)
    ref[:, :, 0] += 3.0  # the blank leads
    ref[:, ::3, 1 + rng.integers(0, c - 1)] += 8.0  # characters
    kind = "ctc_agreement+rel_l2"
    ev = FakeEvaluator([ref[:150], ref[150:]], [None, None], metric=kind)
    rule = BudgetRule(ev, 1.0)
    scaled = ref * 1.05  # same text, 5% relative error
    assert not rule.judge(halves(scaled)).within
    assert rule.judge(halves(scaled)).outputs["out"]["part"] == "relative error"
    nudged = ref * 1.003
    assert rule.judge(halves(nudged)).within
    changed = nudged.copy()
    for i in (5, 77, 201):  # one more character on 3 lines, a small change in norm
        other = 1 + int(ref[i, 0].argmax()) % (c - 1)  # a character other than its neighbour's (no repeat)
        changed[i, 1, other] = 1.0 + changed[i, 1].max()
    d = rule.judge(halves(changed))
    assert not d.within and d.outputs["out"]["part"] == "changed"
    metric = METRICS[kind]
    sums, count = metric.batch(changed, ref, None)
    assert metric.finish(sums, count) == pytest.approx(1 - 3 / n)  # the text's figure is the lower one here
