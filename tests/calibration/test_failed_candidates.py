"""Candidates onnxruntime cannot run where the input model ran, and an input model that runs some batches and not
others (sweep 57: torch's legacy trace of transformers 5's Mixtral, a Split of the tokens an expert takes that fails
on a batch leaving an expert unpicked; its run with labels stopped in the scan on onnxruntime's raw error)."""

import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.calibration.sampling import SequentialScorer
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.models.third_party_builders import split_experts
from tests.oracle import run


def _gate(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The router's value a sample (picked where > 0)."""
    w = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "router.weight"))
    return (x @ w.T)[:, 0] - 0.5


def _data(n: int = 256, seed: int = 0) -> np.ndarray:
    """Samples every batch of 16 of which starts with one the router picks (its Gemm over -0.5 bias)."""
    x = np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)
    x[::16] = x[np.flatnonzero(_gate(split_experts(), x) > 0)[0]]
    return x


def _zeroed(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name == name:
            t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), name))
    return out


def test_a_candidate_onnxruntime_cannot_run_where_the_input_ran_is_over_the_budget(caplog):
    """The router pruned to 0 leaves the expert unpicked in every batch, where onnxruntime's Split fails: the
    sequential measurement (the scan's) and the decision rule (the search's, the exam's) count it as over the
    budget (the reason kept and said once), not the run's end."""
    from onnxprune.calibration.runtime import FAILED_LOSS_PP

    model, x = split_experts(), _data()
    run(model, {"input": x})  # the input model runs the data
    ev = Evaluator(open_data({"input": x}, model, batch_size=64), None, model)
    candidate = _zeroed(model, "router.weight")
    with pytest.raises(Exception, match="Split"):
        run(candidate, {"input": x[:16]})
    sess = make_session(candidate)
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        measured = SequentialScorer(ev).measure(lambda order: ev.run_batches(sess, order), 1.0)
        decision = BudgetRule(ev, 1.0).judge(candidate)
    assert measured.failed.startswith("Split '/experts/Split': Invalid value in 'split'")
    assert measured.loss_pp == FAILED_LOSS_PP and measured.complete and measured.certain
    assert not SequentialScorer(ev).within(measured, 1.0)
    assert not decision.within and decision.loss_pp == FAILED_LOSS_PP and decision.failed == measured.failed
    assert decision.as_dict()["outputs"]["logits"]["failed"] == measured.failed
    said = [r.getMessage() for r in caplog.records if "cannot run a pruned candidate" in r.getMessage()]
    assert len(said) == 1 and "Split '/experts/Split'" in said[0] and "over the budget" in said[0]
