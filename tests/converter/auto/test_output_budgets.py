"""--max-loss OUTPUT=L: an output's own budget beside the run's. Each output's loss counts as a share of its own
budget wherever outputs are combined (the Evaluator, the sequential scorer, the decision rule), so a detector whose
box regression may move 5% while its classes hold 1 pp prunes past the box head's 1 pp, and is still checked on
both outputs, in onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.runtime import make_session
from onnxprune.calibration.sampling import SequentialScorer
from onnxprune.converter.auto.decide import BudgetRule
from onnxprune.converter.cli import _budget_spec, cli
from onnxprune.errors import ConfigError
from onnxprune.models import third_party_builders as tb


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The two-head detector with confident classes (its class weights x20) and 800 unlabelled samples."""
    model = tb.two_head_detector(in_features=16, hidden=64, seed=3)
    for t in model.graph.initializer:
        if t.name.startswith("cls"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 20.0, t.name))
    x = np.random.default_rng(4).normal(size=(800, 16)).astype(np.float32)
    folder = tmp_path_factory.mktemp("own_budgets")
    onnx.save(model, folder / "det.onnx")
    np.savez(folder / "calib.npz", input=x)
    return model, x, folder


def _noisy_boxes(model: onnx.ModelProto, scale: float) -> onnx.ModelProto:
    """The model with its box head's weight moved by relative noise `scale` (the classes untouched)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for t in out.graph.initializer:
        if t.name.startswith("box") and t.name.endswith("weight"):
            w = numpy_helper.to_array(t)
            noise = np.random.default_rng(0).normal(size=w.shape).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(w + scale * np.abs(w).mean() * noise, t.name))
    return out


def test_budget_spec_reads_the_runs_budget_and_each_outputs_own():
    assert _budget_spec(()) is None
    assert _budget_spec(("1",)) == (1.0, {})
    assert _budget_spec(("0.5", "boxes=5", "scores=2pp")) == (0.5, {"boxes": 5.0, "scores": 2.0})
    assert _budget_spec(("boxes=5",)) == (None, {"boxes": 5.0})  # the config then asks for the bare one
    for bad, said in ((("1", "2"), "two budgets"), (("=5",), "names no output"),
                      (("1", "boxes=5", "boxes=4"), "two budgets"), (("1", "boxes=x"), "not a number")):
        with pytest.raises(ConfigError, match=said):
            _budget_spec(bad)


def test_evaluator_and_rule_hold_each_output_to_its_own_budget(detector):
    model, x, _ = detector
    moved = _noisy_boxes(model, 0.03)  # the boxes lose about 2.6 pp
    plain = Evaluator(open_data({"input": x}, model), None, model)
    own = Evaluator(open_data({"input": x}, model), None, model, budget=1.0, output_budgets={"boxes": 5.0})
    raw_value = plain.evaluate(moved)
    raw = {k: f["loss_pp"] for k, f in plain.last.items()}
    assert raw["boxes"] > 1.0 and raw["scores"] == pytest.approx(0.0, abs=1e-9)  # only the boxes moved
    assert plain.loss_pp(raw_value) == pytest.approx(raw["boxes"])
    value = own.evaluate(moved)
    # the same per-output figures, each with its budget; the combined loss is the boxes' as a share of 5 pp
    assert {k: f["loss_pp"] for k, f in own.last.items()} == pytest.approx(raw)
    assert own.last["boxes"]["budget_pp"] == 5.0 and own.last["scores"]["budget_pp"] == 1.0
    assert own.loss_pp(value) == pytest.approx(raw["boxes"] / 5.0)
    assert "own budget" in own.metric

    plain_rule, own_rule = BudgetRule(plain, 1.0), BudgetRule(own, 1.0)
    outputs = list(plain.run_all(moved))
    before, after = plain_rule.judge_outputs(outputs), own_rule.judge_outputs(outputs)
    assert not before.within and before.output == "boxes"
    assert after.within, after
    boxes = after.outputs["boxes"]
    assert boxes["budget_pp"] == 5.0 and boxes["loss_pp"] == pytest.approx(before.outputs["boxes"]["loss_pp"])
    assert boxes["loss_pp"] + (5.0 - boxes["limit_pp"]) <= 5.0  # its upper bound within its own budget
    # the Decision's figures are the worst output's, in pp of the run's budget
    worst = max(after.outputs, key=lambda k: after.outputs[k]["loss_pp"] / after.outputs[k]["budget_pp"])
    assert after.output == worst
    assert after.loss_pp == pytest.approx(after.outputs[worst]["loss_pp"] / after.outputs[worst]["budget_pp"])
    assert "'boxes' 5 pp" in own_rule.statement()

    # the sequential scorer (the scan's measurements) judges in the same units
    scorer = SequentialScorer(own)
    measured = scorer.measure(lambda order: [outputs[b] for b in order], 1.0, stop_known=False, estimate=False)
    assert measured.loss_pp == pytest.approx(raw["boxes"] / 5.0)
    assert scorer.within(measured, 1.0) and not SequentialScorer(plain).within(measured, 1.0)


def test_an_output_budget_names_a_scored_output_beside_a_positive_run_budget(detector):
    model, x, _ = detector
    with pytest.raises(ConfigError, match="'nope' is not a scored output; scored: boxes, scores"):
        Evaluator(open_data({"input": x}, model), None, model, budget=1.0, output_budgets={"nope": 5.0})
    with pytest.raises(ConfigError, match="'boxes' is not a scored output; scored: scores"):
        Evaluator(open_data({"input": x}, model), ["scores=prob"], model, budget=1.0, output_budgets={"boxes": 5.0})
    with pytest.raises(ConfigError, match="positive bare --max-loss"):
        Evaluator(open_data({"input": x}, model), None, model, budget=0.0, output_budgets={"boxes": 5.0})


@pytest.mark.parametrize("args, said", [
    (["--max-loss", "boxes=5"], "add a positive bare --max-loss L"),
    (["--max-loss", "1", "--max-loss", "nope=5"], "'nope' is not a scored output; scored: boxes, scores"),
    (["--max-loss", "1", "--max-loss", "boxes=0"], "must be a number of percentage points in (0, 100]"),
    (["--max-loss", "1", "--max-loss", "1"], "two budgets"),
])
def test_command_line_mistakes_are_one_line_usage_errors(detector, args, said):
    _, _, folder = detector
    result = CliRunner().invoke(cli, ["prune", str(folder / "det.onnx"), "-o", str(folder / "bad.onnx"),
                                      "--data", str(folder / "calib.npz"), "--one-shot", *args])
    assert result.exit_code == 2, result.output
    assert said in result.output and "Traceback" not in result.output
    assert not (folder / "bad.onnx").exists()


def test_a_looser_box_budget_prunes_further_and_holds_both_outputs_in_onnxruntime(detector):
    model, x, folder = detector
    runs = {}
    for name, extra in (("plain", []), ("own", ["--max-loss", "boxes=5"])):
        out = folder / f"{name}.onnx"
        result = CliRunner().invoke(cli, ["prune", str(folder / "det.onnx"), "-o", str(out), "--data",
                                          str(folder / "calib.npz"), "--max-loss", "1", *extra, "--one-shot",
                                          "--json"])
        assert result.exit_code == 0, result.output
        runs[name] = (json.loads(result.output[result.output.index("{"):]), out)
    plain, own = runs["plain"][0], runs["own"][0]
    # the plain run's note names the output that held it back and the flag that gives it its own budget (on the
    # 200 samples that choose, one changed class is over 1 pp: 'scores')
    held = [n for n in plain["notes"] if n.startswith("what stopped the one-shot fit")]
    assert len(held) == 1 and any(f"`--max-loss 1 --max-loss {o}=L` gives it a budget of its own" in held[0]
                                  for o in ("boxes", "scores")), plain["notes"]
    assert plain["budget"]["met"] and own["budget"]["met"]
    assert own["budget"]["by_output"] == {"boxes": 5.0} and "by_output" not in plain["budget"]
    # (its shared layer's class changes, near-ties of untrained weights, stop both soon: 1.04x and 1.09x here)
    assert own["compression"] > plain["compression"] + 0.02, (plain["compression"], own["compression"])
    # both outputs of the written model against the input model, in onnxruntime, on the data decided on
    dense = make_session(model).run(None, {"input": x})
    got = make_session(onnx.load(str(runs["own"][1]))).run(None, {"input": x})
    norm = np.linalg.norm(dense[0], axis=1)
    rel = np.linalg.norm(got[0] - dense[0], axis=1) / np.maximum(norm, 0.1 * np.sqrt((norm ** 2).mean()))
    assert 0.01 < rel.mean() < 0.05  # past the box head's 1 pp, within its own 5
    changed = (got[1].argmax(1) != dense[1].argmax(1)).mean()
    assert changed < 0.01
    figures = own["metrics"]["sets"]["calibration"]["outputs"]
    assert figures["boxes"]["budget_pp"] == 5.0 and figures["scores"]["budget_pp"] == 1.0
    # the terminal names the output its error figures are of (sweep 14: "headline output" beside a worst-of line)
    assert own["metrics"]["sets"]["calibration"]["headline"] == "boxes"
    result = CliRunner().invoke(cli, ["prune", str(folder / "det.onnx"), "-o", str(folder / "again.onnx"), "--data",
                                      str(folder / "calib.npz"), "--max-loss", "1", "--max-loss", "boxes=5",
                                      "--one-shot"])
    assert "; output 'boxes' vs the input model: max rel error" in result.output, result.output


def test_weight_bits_auto_judges_every_output_of_a_two_output_model(detector):
    """--weight-bits auto measured each width on the headline output alone and crashed on any model of several
    scored outputs ("zip() argument 2 is shorter than argument 1"); each width is judged on all of them."""
    model, x, folder = detector
    out = folder / "bits.onnx"
    result = CliRunner().invoke(cli, ["prune", str(folder / "det.onnx"), "-o", str(out), "--data",
                                      str(folder / "calib.npz"), "--max-loss", "1", "--max-loss", "boxes=5",
                                      "--one-shot", "--weight-bits", "auto", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["budget"]["met"]
    tried = report["quantize"]["tried"]
    assert tried and all(set(t["outputs"]) == {"boxes", "scores"} for t in tried)  # every width on both outputs
    assert report["quantize"]["weight_bits"] == min(t["bits"] for t in tried if t["within"])  # the narrowest
    figures = report["metrics"]["sets"]["calibration"]["outputs"]
    assert set(figures) == {"boxes", "scores"}
    dense = make_session(model).run(None, {"input": x})
    got = make_session(onnx.load(str(out))).run(None, {"input": x})
    assert (got[1].argmax(1) != dense[1].argmax(1)).mean() < 0.01
    assert figures["scores"]["loss_pp"] <= 1.0 and figures["boxes"]["loss_pp"] <= 5.0


def test_the_python_api_takes_output_budgets_beside_max_loss(detector):
    from onnxprune.converter import api

    model, x, _ = detector
    result = api.prune(model, data={"input": x}, max_loss=1.0, output_budgets={"boxes": 5.0}, one_shot=True)
    assert result.report["budget"]["met"] and result.report["budget"]["by_output"] == {"boxes": 5.0}
    with pytest.raises(ConfigError, match="positive bare max_loss=L"):  # the keywords it takes
        api.prune(model, data={"input": x}, output_budgets={"boxes": 5.0}, one_shot=True)


def test_the_html_report_lists_each_outputs_figure_and_budget(detector, tmp_path):
    from onnxprune.converter import api

    model, x, _ = detector
    api.prune(model, data={"input": x}, max_loss=1.0, output_budgets={"boxes": 5.0}, one_shot=True,
              output=tmp_path / "o.onnx", report_dir=tmp_path / "rep")
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "output <code>boxes</code>" in html and "(budget 5 pp)" in html and "output <code>scores</code>" in html
    assert "Outputs with their own budget" in html


def test_a_result_prints_its_figures_not_its_arrays(detector):
    from onnxprune.converter import api

    model, x, _ = detector
    text = repr(api.prune(model, data={"input": x}, max_loss=1.0, output_budgets={"boxes": 5.0}, one_shot=True))
    assert text.startswith("PruneResult(compression=") and "budget_met=True" in text and len(text) < 200
