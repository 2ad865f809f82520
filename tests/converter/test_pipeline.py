"""The pipeline end to end on small seeded models: choices, budget, retraining hook-up, API and CLI."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxprune.calibration.runtime import make_session
from onnxprune.converter import api
from onnxprune.converter.cli import cli
from onnxprune.errors import BudgetError, ConfigError
from onnxprune.converter.pipeline import configure, run
from onnxprune.models import builders
from tests.converter._data import self_labelled
from tests.oracle import assert_same_outputs


@pytest.fixture(scope="module")
def teacher_data():
    """A classifier and 'labels' that are its own predictions: dense accuracy 100%, so losses are measurable."""
    return self_labelled()


def test_max_loss_respects_the_budget_and_prunes_layers_differently(teacher_data):
    model, data = teacher_data
    result = run(model, configure(max_loss=2.0, data=data, levels=(0.3, 0.5, 0.7, 0.8, 0.9, 0.95), one_shot=True))
    report = result.report
    assert report["budget"]["met"] and report["budget"]["measured_loss_pp"] <= 2.0
    densities = [r["density"] for r in report["layers"]]
    assert len(set(round(d, 3) for d in densities)) > 1, densities
    assert report["compression"] > 1.0
    assert set(report["sensitivity"]) == {r["weight"] for r in report["layers"]}
    # the measured loss is the real one: recompute it independently
    acc = (make_session(result.model).run(None, {"input": data["input"]})[0].argmax(1) == data["labels"]).mean()
    assert report["metrics"]["after"] == pytest.approx(acc)


def test_without_labels_the_metric_is_agreement_with_the_dense_model(teacher_data):
    model, data = teacher_data
    result = run(model, configure(sparsity=0.5, data={"input": data["input"]}))
    assert result.report["metrics"]["metric"] == "agreement"
    assert result.report["metrics"]["before"] == 1.0


def test_eval_data_is_reported_separately(teacher_data):
    model, data = teacher_data
    held_out = {k: v[:64] for k, v in data.items()}
    result = run(model, configure(sparsity=0.6, data=data, eval_data=held_out))
    sets = result.report["metrics"]["sets"]
    assert "64 samples" in sets["evaluation"]["data"] and "256 samples" in sets["calibration"]["data"]


def test_final_model_matches_the_dense_oracle_and_shrinks(teacher_data):
    model, data = teacher_data
    result = run(model, configure(sparsity=0.97, data=data))
    assert_same_outputs(result.model, result.dense_model, feeds=[{"input": data["input"][:16]}])
    assert result.report["neurons"]["removed"] > 0
    onnx.checker.check_model(result.model, full_check=True)


def test_retraining_keeps_masks_and_recovers_accuracy(teacher_data):
    model, data = teacher_data
    one_shot = run(model, configure(sparsity=0.9, data=data))
    retrained = run(model, configure(sparsity=0.9, data=data, iterations=2, epochs=3, lr=0.01, seed=0))
    assert retrained.report["after"]["nonzeros"] == one_shot.report["after"]["nonzeros"]
    assert retrained.report["metrics"]["after"] >= one_shot.report["metrics"]["after"]
    assert len(retrained.history) == 2


def test_missed_budget_raises_and_api_force_returns(teacher_data):
    model, data = teacher_data
    with pytest.raises(BudgetError):  # the one-shot path (256 samples would now enter the automatic search)
        api.prune(model, data=data, max_loss=0.0, layers={"fc1*": 0.995}, one_shot=True)
    result = api.prune(model, data=data, max_loss=0.0, layers={"fc1*": 0.995}, force=True, one_shot=True)
    assert not result.report["budget"]["met"]


def test_api_rejects_unknown_options():
    with pytest.raises(ConfigError, match="unknown option"):
        api.prune(builders.mlp_gemm(), sparsity=0.5, spartsity=0.4)


def test_api_writes_output_and_report(teacher_data, tmp_path):
    pytest.importorskip("onnxprune.converter.report")
    model, data = teacher_data
    out = tmp_path / "m.onnx"
    api.prune(model, data=data, sparsity=0.8, output=out, report_dir=tmp_path / "rep")
    assert out.exists() and (tmp_path / "rep" / "report.html").exists() and (tmp_path / "rep" / "recipe.toml").exists()


def test_sensitivity_command_writes_json_and_plot(teacher_data, tmp_path):
    model, data = teacher_data
    mpath, dpath = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, mpath)
    np.savez(dpath, **data)
    res = CliRunner().invoke(cli, ["sensitivity", str(mpath), "--data", str(dpath), "--levels", "0.5,0.9",
                                   "-o", str(tmp_path / "scan")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "scan" / "sensitivity.json").read_text())
    assert len(saved["layers"]) == 3
    png = (tmp_path / "scan" / "sensitivity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "/fc1/Gemm" in res.output


def test_prune_json_exit_code_3_when_budget_missed(teacher_data, tmp_path):
    model, data = teacher_data
    mpath, dpath = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, mpath)
    np.savez(dpath, **data)
    out = tmp_path / "o.onnx"
    res = CliRunner().invoke(cli, ["prune", str(mpath), "-o", str(out), "--data", str(dpath), "--max-loss", "0",
                                   "--layer", "fc1*=0.995", "--one-shot"])
    assert res.exit_code == 3 and "exceeds --max-loss" in res.output
    assert not out.exists()
    res = CliRunner().invoke(cli, ["prune", str(mpath), "-o", str(out), "--data", str(dpath), "--max-loss", "0",
                                   "--layer", "fc1*=0.995", "--one-shot", "--force", "-q"])
    assert res.exit_code == 3 and out.exists()
    # forced: the error says the model was written (CI audit: "wrote o.onnx" beside "nothing written")
    assert "written anyway to" in res.output and "nothing written" not in res.output


def test_graphs_the_bridge_cannot_run_fall_back_to_layerwise_reconstruction(teacher_data):
    """An op the bridge does not run (ai.onnx.ml Normalizer, L2: the class order stays) sits after the MLP:
    retraining still happens, by reconstruction. (It was a Scan, then a CenterCropPad, which the bridge runs now.)"""
    model, data = teacher_data
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.opset_import.append(onnx.helper.make_opsetid("ai.onnx.ml", 1))
    out = m.graph.output[0]
    m.graph.node.append(onnx.helper.make_node("Normalizer", [out.name], ["looped"], norm="L2", name="normalize",
                                              domain="ai.onnx.ml"))
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info("looped", onnx.TensorProto.FLOAT, ["N", 10]))
    onnx.checker.check_model(m, full_check=True)
    one_shot = run(m, configure(sparsity=0.9, data=data, neurons=False))
    refit = run(m, configure(sparsity=0.9, data=data, iterations=1, neurons=False))
    assert any("layer-wise reconstruction" in n for n in refit.report["notes"])
    assert refit.history[0]["phase"] == "reconstruct"
    # weights fed only by dead ReLUs refit to exactly zero: never more nonzeros than one-shot
    assert refit.report["after"]["nonzeros"] <= one_shot.report["after"]["nonzeros"]
    assert refit.report["metrics"]["after"] >= one_shot.report["metrics"]["after"]
    structured = run(m, configure(sparsity=0.9, data=data, iterations=1, neuron_sparsity=0.5))
    assert any("--neuron-sparsity needs the bridge" in n for n in structured.report["notes"])  # said, not silent


def test_sensitivity_refuses_eval_data_instead_of_ignoring_it(teacher_data, tmp_path):
    model, data = teacher_data
    mpath, dpath = tmp_path / "m.onnx", tmp_path / "d.npz"
    onnx.save(model, mpath)
    np.savez(dpath, **data)
    res = CliRunner().invoke(cli, ["sensitivity", str(mpath), "--data", str(dpath), "--eval-data", str(dpath)])
    assert res.exit_code == 2 and "--eval-data is for prune" in res.output


def test_the_written_model_keeps_the_inputs_unnamed_nodes_unnamed():
    """The run names every unnamed node so messages can point at it; the written model does not carry those names
    (paddle2onnx leaves most nodes unnamed: rapidocr_cls's file grew 4 KB where its pruned weights stayed dense,
    and 2 bytes a node with names set to "", which proto2 writes)."""
    model = builders.mlp_gemm(seed=0)
    model.graph.node[0].ClearField("name")
    model.graph.node[1].ClearField("name")
    kept = model.graph.node[2].name
    result = run(model, configure(sparsity=0.2, neurons=False))  # 80% kept: the weights stay dense (COO costs more)
    names = [n.name for n in result.model.graph.node]
    assert names[:2] == ["", ""] and not result.model.graph.node[0].HasField("name") and names[2] == kept
    assert result.model.ByteSize() <= model.ByteSize()
    assert_same_outputs(result.model, result.dense_model)
