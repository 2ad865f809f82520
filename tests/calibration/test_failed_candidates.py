"""Candidates onnxruntime cannot run where the input model ran, and an input model that runs some batches and not
others (sweep 57: torch's legacy trace of transformers 5's Mixtral, a Split of the tokens an expert takes that fails
on a batch leaving an expert unpicked; its run with labels stopped in the scan on onnxruntime's raw error)."""

import logging

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from onnxprune import prune
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.calibration.sampling import SequentialScorer
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.errors import CalibrationError
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


def test_an_automatic_run_on_an_expert_a_router_picks_ends_within_the_budget(tmp_path):
    """The automatic search on the expert model: its refit reads other rows pruned than dense for the expert (the
    router's picks move) and leaves it as pruned, saying so; the written model is within the budget of the input
    model in onnxruntime on the data."""
    model, x = split_experts(), _data()
    result = prune(model, output=tmp_path / "out.onnx", data={"input": x}, max_loss=1.0, time_budget=10, seed=0)
    notes = " ".join(result.report["notes"])
    assert "'experts.weight': the rows it reads are chosen by the data" in notes
    got = run(onnx.load(tmp_path / "out.onnx"), {"input": x})["logits"].argmax(1)
    assert np.mean(got != run(model, {"input": x})["logits"].argmax(1)) <= 0.02


def test_an_input_model_that_fails_on_some_batches_says_which_and_the_fix():
    """Where the input model runs some of the data's batches and fails on others, the error names how many, which
    and their sizes, onnxruntime's reason at its node, and the fix (the dynamo exporter, or batches it runs)."""
    model, x = split_experts(), _data()
    x[16:32] = x[np.flatnonzero(_gate(model, x) <= 0)[0]]  # a batch of 16 samples none of which the router picks
    with pytest.raises(CalibrationError) as err:
        Evaluator(open_data({"input": x}, model, batch_size=16), None, model)
    text = str(err.value)
    assert "fails in onnxruntime on 1 of 16 batches" in text and "(batch 2 (16 samples))" in text
    assert "runs the 15 others (Split '/experts/Split': Invalid value in 'split'" in text
    assert "dynamo=True" in text and "--batch-size" in text and "\n" not in text


def test_the_read_check_says_the_input_model_fails_on_one_sample_of_the_data(tmp_path, caplog):
    """The read check runs the input model on a few rows of the data; where it fails on one of them alone,
    the run says so with onnxruntime's reason and the fix, and goes on."""
    model, x = split_experts(), _data()
    x[1], x[0] = x[0], x[np.flatnonzero(_gate(model, x) <= 0)[0]].copy()  # the first sample alone picks no expert
    path = tmp_path / "in.onnx"
    onnx.save(model, path)
    with caplog.at_level(logging.WARNING, logger="onnxprune"):
        prune(str(path), output=tmp_path / "out.onnx", data={"input": x}, max_loss=1.0, time_budget=5, seed=0)
    said = [r.getMessage() for r in caplog.records if "fails in onnxruntime on sample 1 alone" in r.getMessage()]
    assert len(said) == 1 and "Split '/experts/Split'" in said[0] and "dynamo=True" in said[0]
