"""The refit search's per-layer phase as a fixed sequence (converter/auto/sequence.py): chosen on the training part
only, tested in order on the decision part, stopped at the first rejection."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.converter.auto import sequence
from onnxprune.converter.auto.allocation import criterion, global_masks
from onnxprune.converter.auto.recovery import REFIT_DAMP, REFIT_PRIOR, SMALLEST_LEVEL_STEP, _zeroed
from onnxprune.converter.auto.search import WEIGHT_FACTOR
from onnxprune.converter.reconstruct import reconstruct
from onnxprune.models import builders
from onnxprune.passes.weights import find_prunable, weight_array


BUDGET = 5.0  # pp of changed classes (the mechanics are what these tests check)


@pytest.fixture(scope="module")
def setup():
    """An MLP (16-32-16-10), the 240 of 4,000 random samples it is surest of (largest top-2 margin: a random model's
    near-ties change class whatever is pruned): every 4th (60) trains, the other 180 decide."""
    model = builders.mlp_gemm(seed=0)
    x = np.random.default_rng(1).standard_normal((4000, 16)).astype(np.float32)
    top2 = np.sort(make_session(model).run(None, {"input": x})[0], axis=1)[:, -2:]
    x = x[np.sort(np.argsort(top2[:, 0] - top2[:, 1])[:240])]
    reader = open_data({"input": x}, model, batch_size=64)
    train, decide = reader.part(4, holdout=True), reader.part(4, holdout=False)
    decision = Evaluator(decide, "agreement", reference_model=model)
    names = [w.name for w in find_prunable(model).prunable]

    def refit(masks, data=train):
        return reconstruct(_zeroed(model, masks), model, masks, data, limit=None, damp=REFIT_DAMP,
                           prior=REFIT_PRIOR)

    score = criterion("magnitude")

    def propose(current, name, keep):
        return {**current.masks, **global_masks({name: weight_array(current.model, name)},
                                                {name: current.masks[name]}, keep, score)}

    check = sequence.TrainingCheck(train, decision.plan, model, BUDGET, refit)
    start = sequence.Element(model, {n: np.ones(weight_array(model, n).shape, bool) for n in names}, "start")
    return SimpleNamespace(model=model, train=train, decision=decision, refit=refit, propose=propose, check=check,
                           start=start, x=x)


def _sequence(s, limit=10, checked=None):
    count = {"n": 0}

    def time_left():  # a fixed number of candidates stands in for the clock
        count["n"] += 1
        return count["n"] <= limit

    return sequence.layer_sequence(s.start, WEIGHT_FACTOR, SMALLEST_LEVEL_STEP, s.propose, s.check,
                                   lambda m: (s.refit(m), m), time_left, checked)


def test_the_training_check_cross_fits_on_folds_of_the_training_part_only(setup):
    """Two folds of the 60 training rows, each judged on the rows its refit did not see; together all 60, none of
    the 180 decision rows."""
    check = setup.check
    assert [rule.n for _, _, rule in check.parts] == [30, 30] and check.n == setup.train.num_samples == 60
    fit, held, _ = check.parts[0]
    fold_rows = np.concatenate([f["input"] for f, _ in held.reader.batches()])
    fit_rows = np.concatenate([f["input"] for f, _ in fit.batches()])
    train_rows = np.concatenate([f["input"] for f, _ in setup.train.batches()])
    assert len(fold_rows) + len(fit_rows) == 60 and not (fold_rows[:, None] == fit_rows[None]).all(-1).any()
    assert {r.tobytes() for r in np.concatenate([fold_rows, fit_rows])} == {r.tobytes() for r in train_rows}
    assert check(setup.start.masks).within  # the dense masks: nothing changes


def test_the_sequence_is_built_without_the_decision_set(setup, monkeypatch):
    """Built to its end with the decision evaluator unusable: it never reads it. Each element prunes one layer further
    than the one before, and every element passed the training check; built again, it is the same sequence."""
    def boom(*a, **k):
        raise AssertionError("the decision set was read while choosing the sequence")

    monkeypatch.setattr(setup.decision, "run_all", boom)
    seen = []
    elements = list(_sequence(setup, checked=lambda e, d, note, m: seen.append((e is not None, d.within))))
    assert len(elements) >= 2 and all(passed == within for passed, within in seen)
    kept = [sum(int(m.sum()) for m in e.masks.values()) for e in [setup.start, *elements]]
    assert all(a > b for a, b in zip(kept, kept[1:]))
    again = list(_sequence(setup))
    assert [e.note for e in again] == [e.note for e in elements]
    assert all(all((a.masks[n] == b.masks[n]).all() for n in a.masks) for a, b in zip(again, elements))


def test_the_test_stops_at_the_first_rejection_and_builds_no_further(setup):
    """A judge that accepts the first two elements and rejects the third: the result is the second, three were
    judged, and the lazy sequence built no fourth element (the first rejection ends the phase)."""
    built = []
    verdicts = iter([True, True, False, True, True])
    judged = []

    def judge(model):
        judged.append(model)
        return SimpleNamespace(within=next(verdicts), loss_pp=0.0)

    elements = _sequence(setup, checked=lambda e, d, note, m: e is not None and built.append(e))
    found = sequence.judge_in_order(elements, judge)
    assert found.tested == 3 and len(judged) == 3 and len(built) == 3
    assert found.last is built[1] and found.rejected is not None and not found.rejected.within
    assert [m for m in judged] == [e.model for e in built]
    # rejected at once: nothing accepted, the start stands
    none = sequence.judge_in_order(_sequence(setup), lambda m: SimpleNamespace(within=False))
    assert none.last is None and none.tested == 1


def test_the_result_runs_in_onnxruntime_as_its_weights_say(setup):
    """The accepted element's graph: same nodes and shapes as the input, checker-clean, its pruned weights zero, and
    onnxruntime (optimisations off) gives what its own weights compute in numpy on several seeded inputs."""
    found = sequence.judge_in_order(_sequence(setup, limit=4), _plain_judge(setup))
    assert found.last is not None, "no element was accepted; the fixture should allow one"
    model = found.last.model
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in setup.model.graph.node]
    for name, mask in found.last.masks.items():
        w = weight_array(model, name)
        assert w.shape == weight_array(setup.model, name).shape and (w[~mask] == 0).all()
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    session = make_session(model, optimize=False)
    for seed in range(3):
        x = np.random.default_rng(100 + seed).standard_normal((8, 16)).astype(np.float32)
        want = _numpy_forward(model, inits, x)
        got = session.run(None, {"input": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"output '{model.graph.output[0].name}'")


def _plain_judge(setup):
    from onnxprune.converter.auto.decide import BudgetRule

    rule = BudgetRule(setup.decision, BUDGET)
    return rule.judge


def _numpy_forward(model, inits, x):
    """Gemm (transB) and Relu, in graph order."""
    values = {"input": x.astype(np.float64)}
    for node in model.graph.node:
        if node.op_type == "Gemm":
            a, w, b = (values.get(n, inits.get(n)) for n in node.input)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            w = w.T if attrs.get("transB") else w
            values[node.output[0]] = a @ w.astype(np.float64) + b.astype(np.float64)
        elif node.op_type == "Relu":
            values[node.output[0]] = np.maximum(values[node.input[0]], 0.0)
        else:
            raise AssertionError(f"unexpected op {node.op_type}")
    return values[model.graph.output[0].name]


def test_the_decision_test_also_judges_the_deviation_doubled_and_reports_the_plain_loss():
    """Of 180 samples (none may change at 1 pp) whose classes never change: a candidate moving one sample's runner-up to 0.1 below its class
    passes the plain rule, and fails at twice its deviation (the runner-up 0.1 above); a candidate moving it half as
    far passes both. The decision returned is the plain rule's (its loss and limit), `within` only when both accept."""
    from onnxprune.converter.auto.decide import BudgetRule
    from tests.converter.auto.test_decide import FakeEvaluator

    dense = np.tile(np.array([[2.0, 1.0, 0.0]], np.float32), (180, 1))
    ev = FakeEvaluator([dense], [None], "agreement")
    rule = BudgetRule(ev, 1.0)
    search = SimpleNamespace(data=SimpleNamespace(evaluator=ev), rule=rule, clock=None)
    test = sequence.DecisionTest(search)
    near = dense.copy()
    near[0] = [1.95, 1.85, 0.0]  # deviation (-0.05, +0.85): runner-up 0.1 below; doubled, 0.8 above
    assert rule.judge_outputs([near]).within and not rule.judge_outputs([sequence.amplified(near, dense, 2.0)]).within
    decision = test([near])
    assert not decision.within and decision.loss_pp == rule.judge_outputs([near]).loss_pp == 0.0
    safe = dense.copy()
    safe[0] = [1.975, 1.425, 0.0]  # half the deviation: doubled, still 0.1 below
    assert test([safe]).within
    assert sequence.DecisionTest(search, factor=1.0)([near]).within  # factor 1: the plain rule alone
