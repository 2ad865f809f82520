"""Messages a helper's sweep of real converters' outputs found wrong or without a way forward (session 21)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.converter.modelio import check_model
from onnxprune.converter.steps.budget import budget_error
from onnxprune.errors import ModelError


def test_an_op_newer_than_the_models_opset_says_which_opset_it_needs():
    """onnxruntime's transformer optimizer writes LayerNormalization into an opset-14 export: onnxruntime runs it,
    onnx's checker refuses it, and "fix or re-export it" gave no way forward."""
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "g"], ["y"], axis=-1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "g")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    with pytest.raises(ModelError, match=r"LayerNormalization is an ONNX op from opset 17 on and the model imports "
                                         r"opset 14 .* export at opset >= 17 before optimizing"):
        check_model(model, where="m.onnx")


def test_an_op_of_no_onnx_opset_says_the_exporter_wrote_its_frameworks_op():
    """Sweep 37: tf2onnx 1.17 writes Keras 3's gelu as 'Erfc' and celu as 'Expm1', ops no ONNX opset has; the line
    said "fix or re-export it" as for any invalid file."""
    graph = helper.make_graph(
        [helper.make_node("Expm1", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(ModelError, match=r"No Op registered for Expm1 .*; Expm1 is in no ONNX opset \(onnxruntime "
                                         r"cannot run it either\): the exporter wrote its framework's op; re-export"):
        check_model(model, where="m.onnx")
    # an op of another ONNX domain written under the standard one is not called an op of no opset
    model.graph.node[0].op_type = "Normalizer"  # ai.onnx.ml's
    with pytest.raises(ModelError, match=r"No Op registered for Normalizer .*; fix or re-export it\.$"):
        check_model(model, where="m.onnx")


def test_an_attribute_newer_than_the_models_opset_says_which_opset_has_it():
    """Sweep 25: torch.onnx's dynamo exporter at opset_version=17 writes GPT-2's Split with opset 18's num_outputs;
    the line said only "fix or re-export it"."""
    graph = helper.make_graph(
        [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2]) for n in ("a", "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(ModelError, match=r"Unrecognized attribute: num_outputs for operator Split; 'num_outputs' is "
                                         r"an attribute of Split from opset 18 on and the model imports opset 17 "
                                         r".*re-export at opset >= 18\.$"):
        check_model(model, where="m.onnx")


def test_a_missed_budget_whose_mean_is_within_names_the_bound_that_is_not():
    """"measured loss 0.850 pp exceeds --max-loss 1" (--weight-bits 4 on a CNN): the upper bound was over."""
    report = {"budget": {"max_loss_pp": 1.0, "measured_loss_pp": 0.85, "met": False,
                         "tightest": {"output": "logits", "n": 2000, "metric": "accuracy", "part": "accuracy",
                                      "loss_pp": 0.85, "limit_pp": 0.70}}}
    message = str(budget_error(report))
    assert "exceeds" not in message and "the decision rule's bound is over --max-loss 1" in message
    assert "upper bound 1.15 pp" in message and "2000 decision samples" in message
    report["budget"]["measured_loss_pp"] = 1.2  # over on its own: said as before
    assert "measured loss 1.200 pp exceeds --max-loss 1" in str(budget_error(report))


@pytest.mark.parametrize("args, said", [
    (["--sparsity", "0.5", "--iterations", "1"], "--iterations N runs its rounds in full"),
    (["--max-loss", "1", "--iterations", "1"], "--iterations N runs its rounds in full"),
    (["--sparsity", "0.5"], "this run prunes to fixed targets and has nothing to search"),
])
def test_a_time_budget_no_step_of_the_run_keeps_is_a_usage_error(tmp_path, args, said):
    """--time-budget beside --iterations (or fixed targets) was accepted and not kept."""
    from click.testing import CliRunner

    from onnxprune.converter.cli import cli
    from onnxprune.models import builders

    onnx.save(builders.mlp_matmul(seed=0), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", input=np.zeros((120, 16), np.float32))
    result = CliRunner().invoke(cli, ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx"), "--data",
                                      str(tmp_path / "d.npz"), "--time-budget", "30s", *args])
    assert result.exit_code == 2 and said in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.onnx").exists()


def test_flags_a_recipe_would_ignore_are_a_usage_error_and_per_run_ones_pass(tmp_path):
    """--recipe dropped every other flag without a word (a helper's --max-loss dense_5=2 beside a recipe of 5 pp
    read "budget 5 pp ... met"); data, --val-data, --threads and --device still go with it."""
    from click.testing import CliRunner

    from onnxprune.converter.cli import cli
    from onnxprune.models import builders

    onnx.save(builders.mlp_matmul(seed=0), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", input=np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32))
    base = ["prune", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o.onnx")]
    first = CliRunner().invoke(cli, [*base, "--sparsity", "0.5", "--report", str(tmp_path / "rep")])
    assert first.exit_code == 0, first.output
    recipe = str(tmp_path / "rep" / "recipe.toml")
    bad = CliRunner().invoke(cli, [*base, "--recipe", recipe, "--sparsity", "0.9", "--exclude", "fc1*"])
    assert bad.exit_code == 2 and "--exclude, --sparsity given beside it would be ignored" in bad.output
    good = CliRunner().invoke(cli, [*base, "--recipe", recipe, "--data", str(tmp_path / "d.npz"), "--threads", "1"])
    assert good.exit_code == 0, good.output


def test_undone_retraining_rounds_are_said(tmp_path):
    """A --max-loss --iterations round over the budget was undone silently (only report.json's history had it)."""
    from onnxprune.converter.pipeline import configure, run
    from onnxprune.models import third_party_builders as tb

    model = tb.two_head_detector(in_features=16, hidden=64, seed=3)
    x = np.random.default_rng(4).normal(size=(800, 16)).astype(np.float32)
    # 80 samples decide (every 10th): 1 pp cannot be certified there, 2 pp can
    result = run(model, configure(max_loss=2.0, data={"input": x}, iterations=3, seed=0))
    over = [h for h in result.report["history"] if h.get("fits") is False]
    notes = [n for n in result.report["notes"] if "retraining rounds lost more than --max-loss 2" in n]
    assert over and len(notes) == 1 and notes[0].startswith(f"{len(over)} of ")


@pytest.mark.parametrize("domain, op, says", [
    ("org.pytorch.aten", "ATen", r"2 node\(s\) 'a0', 'a1' are org.pytorch.aten:ATen \(aten::cummax, aten::relu\), "
                                 r"torch's own operators, .*operator_export_type=ONNX_ATEN or ONNX_ATEN_FALLBACK "
                                 r".*re-export with the default operator_export_type"),
    ("com.example", "Warp", r"2 node\(s\) 'a0', 'a1' are com.example:Warp, an op onnxruntime has no kernel for "
                            r".*re-export the model with those layers written in ONNX ops\.$"),
])
def test_an_op_of_a_domain_onnxruntime_does_not_run_is_named_with_its_nodes(domain, op, says):
    """Sweep 38: torch.onnx.export(operator_export_type=ONNX_ATEN or ONNX_ATEN_FALLBACK) writes org.pytorch.aten's
    ATen nodes; the refusal said "fix or re-export the model so that onnxruntime loads it (supported ops, ...)"
    without the nodes or the option that wrote them."""
    from onnxprune.converter.verify import input_session

    nodes = [helper.make_node(op, [i], [o], name=f"a{k}", domain=domain, operator=name)
             for k, (i, o, name) in enumerate([("x", "h", "relu"), ("h", "y", "cummax")])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])
    model.ir_version = 8
    with pytest.raises(ModelError, match=says):
        input_session(model)
    # inspect says so too, without onnxruntime (sweep 38's L6: "no prunable weights", exit 0, nothing more)
    from onnxprune.converter.inspect import _aten

    said = _aten(model)
    if domain == "org.pytorch.aten":
        assert said.startswith("onnxruntime does not run this model, and prune refuses it: 2 node(s)")
        assert re.search(says.split(" torch's own")[0].split("are ")[1], said) and "dynamo=True" in said
    else:
        assert said is None  # a custom op may have its library: not said
