"""Weights in If branches no calibration sample takes (converter/coverage.py): a budget leaves them as they are and
says so; a fixed --sparsity prunes them as asked and says no sample checked them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.calibration.readers import open_data
from onnxprune.converter.coverage import branch_coverage
from onnxprune.converter.pipeline import configure, run
from onnxprune.models import builders_bodies as bb
from onnxprune.models import builders_control as bc
from onnxprune.passes.weights import find_prunable, weight_array
from tests.oracle import assert_same_outputs, run as run_model

# if_network takes its then branch when a batch's mean is > 0 (fc1 is read by both branches)
POSITIVE = np.abs(np.random.default_rng(0).standard_normal((256, 16))).astype(np.float32) + 0.1
NEGATIVE = -POSITIVE[:64]


def _coverage(model, x):
    return branch_coverage(model, find_prunable(model).prunable, open_data({"input": x}, model, batch_size=64))


def test_a_branch_no_batch_takes_is_named_with_the_weights_only_it_reads():
    model = bc.if_network()
    cov = _coverage(model, POSITIVE)
    assert cov.untaken == ["If '/select'/else_branch"]
    # fc1 is read by both branches: pruning it would change the untaken one too
    assert set(cov.unreached) == {"else.fc2.weight", "fc1.weight"}
    both = _coverage(model, np.concatenate([POSITIVE[:128], -POSITIVE[128:]]))
    assert both.untaken == [] and both.unreached == {}


def test_only_the_outermost_untaken_branch_is_named():
    """nested_if: column 0 always negative, so the outer then branch (which holds if_network's If) never runs; its
    inner branches are implied, not listed, and every weight inside it is unreached."""
    model = bb.nested_if()
    x = POSITIVE.copy()
    x[:, 0] = -1.0
    cov = _coverage(model, x)
    assert cov.untaken == ["If '/outer_select'/then_branch"]
    assert set(cov.unreached) == {"fc1.weight", "then.fc2.weight", "else.fc2.weight"}


def test_a_budget_leaves_untaken_branch_weights_as_they_are_and_says_so():
    model = bc.if_network()
    result = run(model, configure(max_loss=1.0, data={"input": POSITIVE}, one_shot=True))
    kept = {w: weight_array(model, w) for w in ("else.fc2.weight", "fc1.weight")}
    for name, dense in kept.items():
        np.testing.assert_array_equal(weight_array(result.model, name), dense, err_msg=name)
    assert any("2 weight(s) read in branches no sample of --data took (If '/select'/else_branch)" in n
               and "left as they are" in n
               for n in result.report["notes"])
    onnx.checker.check_model(result.model, full_check=True)
    # the else path the data never ran is the input model's, exactly
    np.testing.assert_array_equal(run_model(result.model, {"input": NEGATIVE})["output"],
                                  run_model(model, {"input": NEGATIVE})["output"])
    assert_same_outputs(result.model, result.dense_model, feeds=[{"input": POSITIVE[:32]}])


def test_a_fixed_sparsity_prunes_them_as_asked_and_says_no_sample_checked_them():
    model = bc.if_network()
    result = run(model, configure(sparsity=0.5, data={"input": POSITIVE}))
    assert (weight_array(result.model, "else.fc2.weight") == 0).mean() == pytest.approx(0.5, abs=0.02)
    assert any("were pruned as asked, but no sample checked them" in n for n in result.report["notes"])


def test_a_budget_with_every_weight_behind_an_untaken_branch_says_what_to_do():
    from onnxprune.errors import CalibrationError

    model = bc.if_network()
    with pytest.raises(CalibrationError, match="no sample of --data takes the branches that hold the weights"):
        run(model, configure(max_loss=1.0, data={"input": POSITIVE}, one_shot=True,
                             exclude=("then.fc2.weight",)))


def test_the_cli_leaves_the_untaken_branch_as_it_is_and_the_output_loads(tmp_path):
    """As a user runs it: the note in the terminal, the else branch's weight unchanged in the written file, parity
    with the dense model on the data, and stock onnxruntime loads the output."""
    import onnxruntime as ort
    from onnx import numpy_helper

    from onnxprune.converter import modelio
    from onnxprune.passes.scopes import all_constants
    from tests.hardening.helpers import invoke

    model = bc.if_network(seed=1)
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", input=POSITIVE)
    res = invoke("prune", tmp_path / "m.onnx", "-o", tmp_path / "out.onnx", "--max-loss", "1", "--one-shot",
                 "--data", tmp_path / "calib.npz")
    assert res.exit_code == 0, res.output
    assert "read in branches no sample of --data took (If '/select'/else_branch) were left as they are" in res.output
    out = modelio.load_model(tmp_path / "out.onnx").model
    before, after = (all_constants(m.graph) for m in (model, out))
    np.testing.assert_array_equal(numpy_helper.to_array(after["else.fc2.weight"]),
                                  numpy_helper.to_array(before["else.fc2.weight"]))
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"))
    assert_same_outputs(out, model, feeds=[{"input": NEGATIVE}])  # the untaken path is the input model's
    ort.InferenceSession((tmp_path / "out.onnx").as_posix(), providers=["CPUExecutionProvider"])


def test_an_if_inside_a_loop_body_is_judged_by_its_condition_every_iteration():
    """loop_if: the If in the Loop body takes its then branch on every step of a positive batch. Before, Ifs in
    Loop bodies counted as run both ways, so else.W (read only by the else branch) was pruned unmeasured."""
    model = bb.loop_if()
    cov = _coverage(model, POSITIVE)
    assert cov.untaken == ["Loop '/loop'/body/If '/loop/select'/else_branch"]
    assert set(cov.unreached) == {"else.W"}
    assert _coverage(model, np.concatenate([POSITIVE[:64], NEGATIVE])).unreached == {}
    # a budget leaves else.W as it is; the model then runs as the input model does on the branch no sample took
    result = run(model, configure(max_loss=1.0, data={"input": POSITIVE}, one_shot=True, seed=0))
    np.testing.assert_array_equal(weight_array(result.model, "else.W"), weight_array(model, "else.W"))
    assert any("weight(s) read in branches no sample of --data took" in n for n in result.report["notes"])
    # on the branch no sample took, the pruned model is the input model with the other (measured) weights pruned
    from onnx import numpy_helper

    same = onnx.ModelProto()
    same.CopyFrom(model)
    for t in same.graph.initializer:
        if t.name in ("then.W", "out.weight"):
            t.CopyFrom(numpy_helper.from_array(weight_array(result.model, t.name), t.name))
    assert_same_outputs(result.model, same, feeds=[{"input": NEGATIVE[:8]}, {"input": POSITIVE[:8]}])


def test_an_if_inside_a_scan_or_behind_an_if_in_a_loop_still_counts_as_run():
    """Not captured (module docstring): assumed to run both ways, so nothing there is reported unreached."""
    from onnxprune.converter.coverage import _ifs

    model = bb.loop_if()
    loop = next(n for n in model.graph.node if n.op_type == "Loop")
    loop.op_type = "Scan"  # only _ifs' walk is asked here: the graph is not run
    assert list(_ifs(model.graph)) == []
