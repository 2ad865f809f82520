"""The note that says what held the automatic search back: the least pruned candidate past the result, the output
and the part of its metric the rule rejected it on, and for a probability part the flags that judge classes alone."""

from __future__ import annotations

from types import SimpleNamespace

from onnxprune.converter.auto.search import stop_note


def _rule(*outputs):
    return SimpleNamespace(outputs=[SimpleNamespace(name=n, kind=k) for n, k in outputs], n=180, budget=1.0)


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
    note = stop_note([_entry(1.3, True, True), _entry(1.6, False, False, output="boxes", part="relative error")],
                     _rule(("boxes", "rel_l2")))
    assert "output 'boxes' (rel_l2: 1.40 pp, upper bound 1.50 pp; --max-loss 1)" in note and "--metric" not in note


def test_a_changed_class_is_counted_in_samples():
    note = stop_note([_entry(1.3, True, True), _entry(1.6, False, False, part="changed", loss=100 / 180, limit=0.11)],
                     _rule(("probs", "prob")))
    assert "(prob: 1 of 180 decision samples changed, upper bound 1.45 pp; --max-loss 1)" in note and "--metric" not in note


def test_nothing_rejected_past_the_result_says_nothing():
    # a candidate within the rule but not kept (the polish kept the better loss) is not what stopped the search
    assert stop_note([_entry(1.3, True, True), _entry(1.6, False, True)], _rule(("probs", "prob"))) is None
    assert stop_note([], _rule(("probs", "prob"))) is None
