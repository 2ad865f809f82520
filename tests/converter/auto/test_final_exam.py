"""The automatic search's final exam (converter/auto/exam.py): on small data a slice of the decision set that no
candidate is judged on judges the result once; a result it rejects gives way to an earlier candidate the search
kept, the one-shot start, or the input model, and the notes say which (LeNet-300-100, 500 unlabelled images: the
search kept 18.9x after changing 1 of its 375 decision samples, and it changed 1.82% of 10,000 unseen images)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.calibration.sampling import SPLIT_ROWS
from onnxprune.converter.auto import exam as E
from onnxprune.converter.auto import search as S
from onnxprune.converter.auto.decide import BudgetRule, Decision
from onnxprune.converter.pipeline import configure, run
from onnxprune.models import builders


@pytest.fixture(scope="module")
def model():
    return builders.lenet300_like(hidden=(32, 16), seed=7)


def _evaluator(model, x):
    reader = open_data({"input": x}, model, batch_size=64)
    return Evaluator(reader, None, reference_model=model, split=SPLIT_ROWS, quiet=True, budget=1.0)


def _changed(model, seed: int, share: float):
    """A copy of `model` whose top-1 class differs on ~`share` of random inputs: its last bias pushed one way."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(seed)
    for init in out.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        if arr.ndim == 2:
            init.CopyFrom(onnx.numpy_helper.from_array((arr + share * rng.standard_normal(arr.shape)).astype(
                arr.dtype), init.name))
    return out


def test_a_slice_judges_its_own_batches_as_the_whole_set_judges_them(model):
    """The exam's view of the decision evaluator (every EXAM_EVERY-th batch part) scores exactly those samples:
    its rule counts the changed samples a rule on the same samples alone would."""
    x = np.random.default_rng(0).random((360, 1, 28, 28), dtype=np.float32)
    ev = _evaluator(model, x)
    split = E.exam_split(ev, 1.0)
    assert split is not None
    search, rule = split
    parts = len(ev.reference_all)
    exam_rows = np.concatenate([np.arange(b * SPLIT_ROWS, (b + 1) * SPLIT_ROWS) for b in range(parts)
                                if b % E.EXAM_EVERY == E.EXAM_EVERY - 1])
    assert rule.n == len(exam_rows) == 112 and BudgetRule(search, 1.0).n == 248
    other = _changed(model, 1, 0.05)
    alone = BudgetRule(_evaluator(model, x[exam_rows]), 1.0).judge(other)
    got = rule.judge(other)
    assert got.outputs == alone.outputs and got.n == alone.n


def test_no_exam_when_the_slice_alone_cannot_certify_the_budget(model):
    """A third of 240 decision samples is 80, fewer than the 99 that certify 1 pp of changed classes (Wilson's
    bound with none changed): the search decides on all of them, as before; 1.5 pp needs 66."""
    x = np.random.default_rng(0).random((240, 1, 28, 28), dtype=np.float32)
    ev = _evaluator(model, x)
    assert E.exam_split(ev, 1.0) is None
    assert E.exam_split(ev, 1.5) is not None


def test_no_exam_where_the_set_certifies_the_stricter_rule(model):
    """480 decision samples certify 1 pp at twice the margin (396 do): the search's later looks are judged by that
    rule, and no exam is held."""
    x = np.random.default_rng(0).random((480, 1, 28, 28), dtype=np.float32)
    assert E.exam_split(_evaluator(model, x), 1.0) is None


def _search(model, verdicts: dict, n: int = 120):
    """A search stub whose exam accepts the models `verdicts` maps to True."""
    s = S._Search.__new__(S._Search)
    s.original, s.held, s.zeros, s.notes, s.t0, s.history = model, 0, {}, [], 0.0, []
    s.sizes = {"w": 100}
    s.exam = type("Rule", (), {"n": n})()
    s.rule = type("Rule", (), {"n": 2 * n})()
    looks = []

    def judge(m, rule=None):
        looks.append(m)
        ok = verdicts[id(m)]
        return Decision(0.0 if ok else 1.7, 0.0, 0.83 if ok else -0.1, ok, n,
                        outputs={"logits": {"changed": 0 if ok else 2, "loss_pp": 0.0}}, output="logits")

    s.judge = judge
    s._record = lambda *a, **k: s.history.append(a[0])
    kept_input = S._Best(model, {"w": np.ones(100, bool)}, Decision(0.0, 0.0, 1.0, True, n), {})
    s._input_model = lambda: kept_input
    return s, looks, kept_input


def _best(share: float, seed: int):
    mask = np.ones(100, bool)
    mask[: int(100 * share)] = False
    return S._Best(builders.lenet300_like(hidden=(8, 8), seed=seed), {"w": mask}, Decision(0.1, 0.0, 0.5, True, 240),
                   {"weights": share})


def test_a_result_the_exam_rejects_falls_back_to_an_earlier_candidate(model):
    start, a, b, result = _best(0.5, 1), _best(0.75, 2), _best(0.8, 3), _best(0.9, 4)
    s, looks, _ = _search(model, {id(result.model): False, id(b.model): False, id(a.model): True,
                                  id(start.model): True})
    s.kept = [start, a, b, result]
    got = s._final_exam(result, start)
    assert got.model is a.model and got.masks is a.masks
    assert got.decision.n == 120  # the result's decision is the exam's
    assert looks == [result.model, b.model, a.model]  # most pruned first, stopped at the first accepted
    note = [n for n in s.notes if n.startswith("final exam:")]
    assert len(note) == 1
    assert ("120 decision samples no candidate was judged on accepted an earlier candidate the search kept "
            "(10.00x rejected: 2 of 120 changed; 5.00x rejected: 2 of 120 changed; 4.00x accepted: 0 of 120 "
            "changed); the search decided on the other 240") in note[0]
    assert s.history == ["final exam"]


def test_the_history_no_longer_counts_what_the_exam_rejected(model):
    """After a walk back the candidates the exam rejected are not "kept" in the history, so the note on what stopped
    the search speaks of the result."""
    start, a, result = _best(0.5, 1), _best(0.75, 2), _best(0.9, 4)
    s, _, _ = _search(model, {id(result.model): False, id(a.model): True, id(start.model): True})
    s.kept = [start, a, result]
    s._record = lambda *a, **k: None
    s.history = [{"ratio": 2.0, "kept": True, "fits": True}, {"ratio": 4.0, "kept": True, "fits": True},
                 {"ratio": 10.0, "kept": True, "fits": True}, {"ratio": 12.0, "kept": False, "fits": False}]
    assert s._final_exam(result, start).model is a.model
    assert [h["kept"] for h in s.history] == [True, True, False, False]
    assert s.history[2]["exam"] == "rejected" and "exam" not in s.history[3]


def test_the_exam_looks_a_few_times_at_most_then_keeps_the_input_model(model):
    start = _best(0.5, 1)
    kept = [_best(0.5 + 0.1 * k, 10 + k) for k in range(1, 5)]
    s, looks, kept_input = _search(model, {id(c.model): False for c in [start, *kept]})
    s.kept = [start, *kept]
    got = s._final_exam(kept[-1], start)
    assert got is kept_input
    assert looks == [kept[-1].model, kept[-2].model, kept[-3].model, start.model]  # EXAM_LOOKS, the start last
    assert len(looks) == E.EXAM_LOOKS
    assert any(n.startswith("final exam:") and "the input model is kept" in n for n in s.notes)
    said = next(n for n in s.notes if n.startswith("final exam:"))  # real models 54b: "rejected 1.31x rejected: ..."
    assert "judged on rejected every candidate it looked at (" in said and "rejected 1" not in said
    assert said.count("rejected: ") == E.EXAM_LOOKS


def test_a_result_the_exam_accepts_is_kept(model):
    start, result = _best(0.5, 1), _best(0.9, 4)
    s, looks, _ = _search(model, {id(result.model): True, id(start.model): True})
    s.kept = [start, result]
    got = s._final_exam(result, start)
    assert got.model is result.model and looks == [result.model] and not s.history
    assert any("accepted the search's result (10.00x accepted: 0 of 120 changed)" in n for n in s.notes)


def test_a_small_data_run_says_what_its_exam_did(model):
    """500 unlabelled samples: 125 train, 375 decide, of which every third batch part (119 samples) is the exam's."""
    x = np.random.default_rng(0).random((500, 1, 28, 28), dtype=np.float32)
    result = run(model, configure(max_loss=1.0, data={"input": x}, seed=0, time_budget="60s"))
    notes = [n for n in result.report["notes"] if n.startswith("final exam:")]
    assert len(notes) == 1 and "119" in notes[0], result.report["notes"]
    if "accepted" in notes[0]:
        assert "the search decided on the other 256" in notes[0]
        assert result.report["budget"]["tightest"]["n"] == 119  # the claim is the exam's one look
    got = make_session(result.model).run(None, {"input": x})[0]
    assert np.isfinite(got).all()
