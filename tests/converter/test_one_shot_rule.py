"""The one-shot budget path decides by the automatic search's rule (converter.auto.decide), not by the mean alone:
a candidate is within --max-loss when every output's loss plus its margin is (Wilson's bound for changed samples)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.calibration.allocate import fit_to_budget
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.converter.pipeline import configure, run
from onnxprune.passes.weights import find_prunable
from tests.converter._data import self_labelled


@pytest.fixture(scope="module")
def label_free():
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=120, data_seed=2)
    return model, {"input": data["input"]}


class _Judge:
    """A scripted judge: (loss, fits) per try, whatever the candidate's outputs; counts its calls."""

    def __init__(self, script):
        self.script, self.calls = list(script), 0

    def __call__(self, outputs):
        self.calls += 1
        loss, fits = self.script.pop(0)
        return loss, fits, {"loss_pp": loss, "within": fits}


def test_the_judge_decides_not_the_mean(label_free):
    model, data = label_free
    inventory = find_prunable(model)
    ev = Evaluator(open_data(data, model), "rel_l2", model)
    # every try's mean is within the budget; the judge rejects all but the gentlest (knob 0.7 x 0.7 ...)
    judge = _Judge([(0.9, False), (0.6, False), (0.3, True)] + [(0.5, False)] * 10)
    outcome = fit_to_budget(model, inventory, ev, {w.name: 0.9 for w in inventory.prunable}, 1.0, judge=judge)
    fits = [h["fits"] for h in outcome.history]
    assert fits[:3] == [False, False, True]
    # after a fit, a try clearly over the budget (here by the mean, tens of pp) stops early and is never judged
    assert judge.calls == sum("samples" not in h for h in outcome.history) < len(outcome.history)
    assert outcome.decision == {"loss_pp": 0.3, "within": True} and outcome.measured_loss_pp == 0.3
    chosen = outcome.history[2]["sparsities"]
    assert all(abs(outcome.sparsities[n] - s) < 1e-9 for n, s in chosen.items())


def test_without_a_judge_the_mean_decides(label_free):
    model, data = label_free
    inventory = find_prunable(model)
    ev = Evaluator(open_data(data, model), "rel_l2", model)
    outcome = fit_to_budget(model, inventory, ev, {w.name: 0.5 for w in inventory.prunable}, 100.0, max_tries=1)
    assert outcome.decision is None and outcome.history[0]["fits"]


def _deciding_rule(model, data, result, budget=1.0):
    """The rule on the samples that decided a --one-shot run: all but the every-k-th that chose (choose-apart)."""
    from onnxprune.converter.steps.data import Data, DataConfig

    every = result.report["allocation"]["chosen_apart"]["every"]
    return BudgetRule(Data(model, DataConfig(data=data, seed=0), choose_every=every).calibration, budget)


def test_one_shot_run_is_judged_by_the_rule_on_the_model_written(label_free):
    """--one-shot --max-loss chooses on one sample in k (the scan and the fit) and decides on the others: the
    decision stated is the rule's on the deciding samples, of the model written."""
    model, data = label_free
    result = run(model, configure(max_loss=1.0, data=data, one_shot=True, levels=(0.3, 0.6, 0.9), seed=0))
    budget, allocation = result.report["budget"], result.report["allocation"]
    assert budget["rule"].startswith("accepted when") and "decision" in budget and budget["met"]
    assert any(n.startswith("decision rule: ") for n in result.report["notes"])
    apart = allocation["chosen_apart"]
    assert apart["chosen_on"] + apart["decided_on"] == 120 and apart["decided_on"] == budget["decision"]["n"]
    assert any(n.startswith(f"--one-shot: the scan and the fit chose on one sample in {apart['every']} of --data")
               for n in result.report["notes"])
    # every try the fit judged by a rule (on the choosing part, where it can certify) kept its verdict
    for entry in allocation["history"]:
        if "decision" in entry:
            assert entry["fits"] == entry["decision"]["within"]
    # the deciding samples' looks: the fit's pick, then less pruned, the first within kept
    looks = apart["looks"]
    assert looks and all(not x["within"] for x in looks[:-1]) and [x["share"] for x in looks] == \
        [1.0, 0.75, 0.5, 0.25][:len(looks)]
    # the decision stated is the rule's on the model written, recomputed here from onnxruntime's outputs
    final = result.model
    onnx.checker.check_model(final)
    again = _deciding_rule(model, data, result).judge(final)
    assert again.within == budget["met"] and abs(again.loss_pp - budget["decision_loss_pp"]) < 1e-6
    x = data["input"][:8]
    dense = make_session(model).run(None, {"input": x})[0]
    pruned = make_session(final).run(None, {"input": x})[0]
    assert np.abs(pruned - dense).max() < 0.5 * np.abs(dense).max()  # pruned, not broken


def test_one_shot_runs_the_input_model_over_the_data_once(monkeypatch):
    """The dense reference passes of a --one-shot --max-loss run cover --data once: the choosing part's and the
    deciding part's. The targets step asked which outputs are scored (for weights no scored output reaches) by
    building a whole-set evaluator, a dense pass over all of --data before choose-apart ran both parts again
    (VGG16's 160 images, 31 s of a 10-minute one-shot)."""
    passes, real = [], Evaluator._score_reference

    def counted(self, *args, **kwargs):
        real(self, *args, **kwargs)
        passes.append(self.num_samples)

    monkeypatch.setattr(Evaluator, "_score_reference", counted)
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=200, data_seed=2)
    data = {"input": data["input"]}  # label-free: 150 deciding samples certify 1 pp at every 4th choosing
    result = run(model, configure(max_loss=1.0, data=data, one_shot=True, levels=(0.3, 0.6, 0.9), seed=0))
    apart = result.report["allocation"]["chosen_apart"]
    assert (apart["every"], apart["chosen_on"], apart["decided_on"]) == (4, 50, 150)
    assert sorted(passes) == [50, 150]
    assert result.report["budget"]["met"] and result.report["compression"] > 1.0


def test_one_shot_on_too_few_samples_to_split_chooses_and_decides_on_one_set_and_says_so():
    """Under 64 samples --data is not split (16 to choose, 24 to decide, at least): the scan and the fit choose on
    the samples that judge them, and the decision-rule note says so. A relative error can be certified there."""
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=60, data_seed=2)
    data = {"input": data["input"]}
    result = run(model, configure(max_loss=1.0, data=data, one_shot=True, metric="rel_l2", seed=0))
    budget = result.report["budget"]
    assert "chosen_apart" not in result.report["allocation"] and budget["met"] and budget["decision"]["n"] == 60
    rule_note = next(n for n in result.report["notes"] if n.startswith("decision rule: "))
    assert "the scan and the fit chose on these same samples" in rule_note
    again = BudgetRule(Evaluator(open_data(data, model), "rel_l2", model), 1.0).judge(result.model)
    assert abs(again.loss_pp - budget["decision_loss_pp"]) < 1e-6


def test_with_val_data_the_scan_and_the_fit_choose_on_data_and_val_data_decides(monkeypatch):
    """--one-shot --val-data V: --data chooses (the scan and the fit), V decides, as its name says; it used to scan
    and fit on V itself."""
    from onnxprune.converter.steps import scan as scan_step

    scanned, real = [], scan_step.scan
    monkeypatch.setattr(scan_step, "scan", lambda m, inv, ev, *a, **k: scanned.append(ev.reader.num_samples)
                        or real(m, inv, ev, *a, **k))
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=600, data_seed=2)
    x = data["input"]
    result = run(model, configure(max_loss=1.0, data={"input": x[:200]}, val_data={"input": x[200:]}, one_shot=True,
                                  seed=0))
    apart, budget = result.report["allocation"]["chosen_apart"], result.report["budget"]
    assert apart["every"] is None and apart["chosen_on"] == 200 and apart["decided_on"] == budget["decision"]["n"] == 400
    assert "--one-shot: the scan and the fit chose on --data (200 samples) and --val-data (400) decides" in \
        result.report["notes"]
    assert scanned == [200]  # the scan read --data
    # the fit's pick, rejected by --val-data, is judged again less pruned; the first within is kept, as said
    looks = apart["looks"]
    assert looks[-1]["within"] and not any(x["within"] for x in looks[:-1])
    assert [x["share"] for x in looks] == [1.0, 0.75, 0.5, 0.25][:len(looks)]
    if len(looks) > 1:
        assert any(f"backed off to {looks[-1]['share']:g} of its sparsities" in n for n in result.report["notes"])
        assert looks[-1]["ratio"] == pytest.approx(result.report["compression"], rel=1e-6)
    again = BudgetRule(Evaluator(open_data({"input": x[200:]}, model), None, model), 1.0).judge(result.model)
    assert budget["met"] and again.within and abs(again.loss_pp - budget["decision_loss_pp"]) < 1e-6


def test_the_automatic_plans_fallback_beside_val_data_chooses_on_data_and_val_data_decides():
    """--max-loss with 20 samples of --data (too few to retrain on) and --val-data: the one-shot fallback chooses on
    --data and --val-data decides; it used to scan, fit and decide on --val-data alone."""
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=420, data_seed=2)
    x = data["input"]
    result = run(model, configure(max_loss=1.0, data={"input": x[:20]}, val_data={"input": x[20:]}, seed=0))
    apart, budget = result.report["allocation"]["chosen_apart"], result.report["budget"]
    assert apart["chosen_on"] == 20 and apart["decided_on"] == budget["decision"]["n"] == 400 and budget["met"]
    assert any("chosen on --data's 20 samples and decided on --val-data's 400" in n for n in result.report["notes"])
    again = BudgetRule(Evaluator(open_data({"input": x[20:]}, model), None, model), 1.0).judge(result.model)
    assert again.within and abs(again.loss_pp - budget["decision_loss_pp"]) < 1e-6


def test_the_budget_check_judges_the_measure_steps_pass(label_free, monkeypatch):
    """The model written is run once on the decision set (measure); the budget check judges those outputs. The only
    models run to be judged are the fit's looks on the deciding samples."""
    model, data = label_free
    real, calls = BudgetRule.judge, []

    def counted(self, candidate):
        calls.append(candidate)
        return real(self, candidate)

    monkeypatch.setattr(BudgetRule, "judge", counted)
    result = run(model, configure(max_loss=1.0, data=data, one_shot=True, levels=(0.3, 0.6, 0.9), seed=0))
    assert len(calls) == len(result.report["allocation"]["chosen_apart"]["looks"])
    again = real(_deciding_rule(model, data, result), result.model)
    assert result.report["budget"]["decision_loss_pp"] == pytest.approx(again.loss_pp, abs=1e-9)


def test_a_mean_within_the_budget_but_its_margin_over_is_rejected(label_free):
    """The point estimate would take this candidate; the rule does not: L <= budget < L + SE."""
    from onnxprune.calibration.allocate import pruned_model

    model, data = label_free
    ev = Evaluator(open_data(data, model), "rel_l2", model)
    inventory = find_prunable(model)
    sparsities = {w.name: 0.6 for w in inventory.prunable}
    d = BudgetRule(ev, 1.0).judge(pruned_model(model, sparsities))
    assert d.se_pp > 0
    budget = d.loss_pp + d.se_pp / 2  # between the mean and the mean plus its margin
    rule = BudgetRule(ev, budget)

    def judge(outputs):
        decision = rule.judge_outputs(outputs)
        return decision.loss_pp, decision.within, decision.as_dict()

    decided = fit_to_budget(model, inventory, ev, sparsities, budget, max_tries=1, judge=judge)
    plain = fit_to_budget(model, inventory, ev, sparsities, budget, max_tries=1)
    assert plain.history[0]["fits"] and not decided.history[0]["fits"]
    # the rule's fit backs off from what it rejected (calibration.allocate BACKOFF_TRIES): less pruned, within it
    assert decided.removed < plain.removed and all(not h["fits"] or h["removed"] < plain.removed
                                                   for h in decided.history)


@pytest.mark.parametrize("n, path", [(60, "fallback")])
def test_too_few_samples_to_certify_keep_the_input_model_and_say_how_many_would(n, path):
    """60 samples: the one-shot fallback (no scan: nothing could be kept) cannot certify 1 pp of changed classes
    (Wilson's bound with none changed > 1 pp): the input model. (120 label-free samples, whose split leaves 90 to
    decide on, now decide on all 120, which can: tests/converter/auto/test_small_decision_sets.py.)"""
    from onnx import numpy_helper

    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=n, data_seed=2)
    result = run(model, configure(max_loss=1.0, data={"input": data["input"]}, seed=0, time_budget="60s"))
    notes = [x for x in result.report["notes"] if "cannot certify --max-loss 1" in x]
    assert len(notes) == 1 and "give 99 samples to decide on" in notes[0]
    assert result.report["budget"]["met"]
    if path == "fallback":
        assert result.report.get("sensitivity") in (None, {})  # no scan ran
    else:
        assert "auto" in result.report
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    for name, w in before.items():
        if name in after and after[name].shape == w.shape:
            np.testing.assert_array_equal(after[name], w, err_msg=name)
    x = data["input"][:16]
    np.testing.assert_allclose(make_session(result.model).run(None, {"input": x})[0],
                               make_session(model).run(None, {"input": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("labelled", [True, False])
def test_on_small_data_the_one_shot_start_is_chosen_on_the_training_part(monkeypatch, labelled):
    """200 samples: every 4th trains (50), the other 150 decide. The sensitivity scan and the fit run on the 50
    training samples and the decision set only judges the start (a start chosen on the set that judges it looks
    better there than it is). With labels the fit's tries are judged by the decision rule there (a choosing rule:
    without the decision set's floor for a candidate with no discordant pair); label-free, 50 samples cannot
    certify 1 pp for a share of changed samples, so by the mean."""
    import onnxprune.calibration.allocate as allocate
    import onnxprune.calibration.sensitivity as sensitivity

    seen = {}

    def samples(ev):
        return sum(len(np.asarray(r[0])) for r in ev.reference_all)

    real_scan, real_fit = sensitivity.scan, allocate.fit_to_budget

    def scan(model, inventory, ev, *a, **k):
        seen["scan"] = samples(ev)
        return real_scan(model, inventory, ev, *a, **k)

    def fit(model, inventory, ev, *a, **k):
        seen.setdefault("fit", samples(ev))
        seen.setdefault("judged", k.get("judge") is not None)  # by the rule on the training part, else the mean
        return real_fit(model, inventory, ev, *a, **k)

    monkeypatch.setattr(sensitivity, "scan", scan)
    monkeypatch.setattr(allocate, "fit_to_budget", fit)
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=200, data_seed=2)
    feed = data if labelled else {"input": data["input"]}
    result = run(model, configure(max_loss=1.0, data=feed, seed=0, time_budget="30s", recovery="reconstruct"))
    assert result.report["auto"]["decision"]["n"] == 150  # the decision set judged the result
    assert seen == {"scan": 50, "fit": 50, "judged": labelled}
    x = data["input"][:16]
    assert make_session(result.model).run(None, {"input": x})[0].shape == (16, 10)


def test_with_labels_on_small_data_retraining_distils_and_the_labels_judge():
    """200 labelled samples (50 train, 150 decide) and the sgd recovery: the rounds distil from the input model
    (the labels would only move its predictions, and the decision set cannot see through its own choice); the
    decision stays the label rule's. With 2,000 labelled samples (not small data) the labels train."""
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=200, data_seed=2)
    result = run(model, configure(max_loss=1.0, data=data, seed=0, time_budget="40s", recovery="sgd"))
    auto = result.report["auto"]
    assert auto["choices"]["loss"]["value"] == "distill" and "judge only" in auto["choices"]["loss"]["rule"]
    assert auto["decision"]["outputs"]["logits"]["metric"] == "accuracy"
    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=2000, data_seed=2)
    result = run(model, configure(max_loss=1.0, data=data, seed=0, time_budget="40s", recovery="sgd"))
    assert result.report["auto"]["choices"]["loss"]["value"] == "ce+distill"


def test_confidence_asks_the_rule_for_more_and_the_run_says_how_many_samples_would_do():
    """240 label-free samples (one-shot: 180 decide, 60 choose) certify 1 pp of changed classes at the default
    margin (about 84%), not at --confidence 0.95 (Wilson's bound with none changed: 1.645²/(180 + 1.645²) = 1.48 pp):
    the input model is kept, and the run names the samples that would certify it. The setting ends with the run."""
    from onnxprune.converter.auto.decide import Z, current_z

    model, data = self_labelled(hidden=(32, 16), model_seed=7, n=240, data_seed=2)
    feed = {"input": data["input"]}
    sure = run(model, configure(max_loss=1.0, data=feed, seed=0, one_shot=True, confidence=0.95))
    notes = [x for x in sure.report["notes"] if "cannot certify --max-loss 1" in x]
    assert len(notes) == 1 and "give 268 samples to decide on" in notes[0] and "1.48 pp" in notes[0], notes
    assert sure.report["confidence"] == 0.95 and sure.report["budget"]["met"] and current_z() == Z
    kept = {t.name: t.raw_data for t in sure.model.graph.initializer}
    assert all(kept[t.name] == t.raw_data for t in model.graph.initializer if t.name in kept)
    plain = run(model, configure(max_loss=1.0, data=feed, seed=0, one_shot=True))
    assert not any("cannot certify" in x for x in plain.report["notes"]) and "confidence" not in plain.report


def test_feeds_used_as_is_are_split_by_feed_and_counted_by_their_samples():
    """A stateful model's calibration set is a folder of feeds (the state's batch is its axis 1): 10 feeds of 32
    samples were one set that chose and decided ("given 64 feeds or more", sweep 27's streaming VAD; its mixture of
    experts, 6 feeds of 50, claimed 1 of 300 changed and changed 1.70% of 2,000 held out). Every 4th feed chooses now
    (3 feeds, 96 samples) and the 7 others (224 samples) decide; the notes count samples, not feeds."""
    from onnxprune import prune
    from onnxprune.models.third_party_builders import scripted_lstm

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((5, 32, 4)).astype(np.float32)} for _ in range(10)]
    result = prune(scripted_lstm(hidden=8), data=feeds, max_loss=1, one_shot=True, seed=0)
    notes = result.report["notes"]
    # in prune()'s words (the command line says "of --data (96)")
    assert any("chose on one sample in 4 of data= (96) and the 224 others decide" in n for n in notes), notes
    assert any("decision rule: accepted when the scored output is within the budget on the 224 decision samples" in n
               for n in notes), notes
    assert not any("did not choose" in n and "given 64" in n for n in notes), notes
    assert not any("on the 3 choosing samples" in n for n in notes), notes
    apart = result.report["allocation"]["chosen_apart"]
    assert apart["chosen_on"] == 96 and apart["decided_on"] == 224, apart


def test_two_feeds_too_small_to_split_choose_and_decide_on_one_set():
    """Feeds used as is whose choosing part would hold fewer than MIN_CHOOSE samples are not split; the note says
    how many samples would let the run decide apart."""
    from onnxprune import prune
    from onnxprune.models.third_party_builders import scripted_lstm

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((5, 8, 4)).astype(np.float32)} for _ in range(3)]  # 1 feed of 8 would choose
    result = prune(scripted_lstm(hidden=8), data=feeds, max_loss=5, one_shot=True, seed=0)
    said = [n for n in result.report["notes"] if "the run decides on samples that did not choose" in n]
    assert len(said) == 1 and "given 64 samples in 2 feeds or more, or val_data=" in said[0], said  # prune()'s
