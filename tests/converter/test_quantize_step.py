"""The quantize step: trained quantization after the last retraining round, and --weight-bits auto's stated rule."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.runtime import make_session
from onnxprune.converter import modelio
from onnxprune.converter.pipeline import configure, run
from onnxprune.converter.plan import build_plan
from onnxprune.converter.steps.quantize import PairedRule, bisect
from onnxprune.converter.trained_quant import keep_survivors
from onnxprune.errors import ConfigError
from onnxprune.passes.weights import weight_array
from tests.converter._data import self_labelled

RETRAIN = dict(sparsity=0.8, iterations=1, epochs=1, lr=0.05, seed=0, sparse_format="compact", neurons=False)


@pytest.fixture(scope="module")
def teacher_data():
    return self_labelled(hidden=(32, 16), model_seed=7, n=600, data_seed=2)


@pytest.fixture(scope="module")
def runs(teacher_data):
    """The same retraining run three ways: values as trained, 3-bit k-means codebooks, 3-bit trained codebooks."""
    model, data = teacher_data
    return {key: run(model, configure(data=data, **RETRAIN, **extra))
            for key, extra in (("plain", {}), ("kmeans", dict(weight_bits=3, quant_epochs=0)),
                               ("trained", dict(weight_bits=3, quant_epochs=2)))}


def _numpy_forward(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """lenet300_like in numpy: Flatten, (Gemm transB=1, Relu) x2, Gemm."""
    h = x.reshape(len(x), -1).astype(np.float64)
    for i in (1, 2, 3):
        h = h @ weight_array(model, f"fc{i}.weight").T.astype(np.float64) + weight_array(model, f"fc{i}.bias")
        h = np.maximum(h, 0.0) if i < 3 else h
    return h


def test_trained_codebooks_stay_on_their_codes_and_masks(runs):
    plain, kmeans, trained = (runs[k].dense_model for k in ("plain", "kmeans", "trained"))
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        before, km, tq = (weight_array(m, name) for m in (plain, kmeans, trained))
        assert np.array_equal(before != 0, tq != 0), f"'{name}': trained quantization changed the mask"
        assert np.array_equal(km != 0, tq != 0), f"'{name}': k-means and trained codes differ in their mask"
        values, codes = np.unique(km[km != 0], return_inverse=True)
        assert 1 < len(values) <= 8, f"'{name}': {len(values)} values for a 3-bit codebook"
        trained_of_code = [np.unique(tq[km != 0][codes == c]) for c in range(len(values))]
        assert all(len(v) == 1 for v in trained_of_code), f"'{name}': members of one code trained apart"
        assert not np.allclose(values, np.concatenate(trained_of_code)), f"'{name}': the centroids did not train"


def test_trained_file_is_valid_folds_and_matches_the_numpy_oracle(runs):
    result = runs["trained"]
    onnx.checker.check_model(result.model, full_check=True)
    assert any("codebook3" in v["encoding"] for v in result.report["storage"].values()), result.report["storage"]
    decoded = modelio.from_proto(result.model).model
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        np.testing.assert_array_equal(weight_array(decoded, name), weight_array(result.dense_model, name),
                                      err_msg=f"'{name}' decodes to other values than the oracle's")
    for seed in (0, 1, 2):
        x = np.random.default_rng(seed).random((8, 1, 28, 28), dtype=np.float32)
        for optimize in (False, True):  # as verified, and as deployed (decoder folded at load)
            got = make_session(result.model, optimize=optimize).run(None, {"input": x})[0]
            np.testing.assert_allclose(got, _numpy_forward(result.dense_model, x), rtol=1e-4, atol=1e-5,
                                       err_msg=f"output 'logits' (seed {seed}, optimize={optimize})")
    assert result.report["parity"]["max_abs_diff"] < 1e-5


def test_trained_codebooks_fit_the_training_data_better_than_kmeans(runs, teacher_data):
    _, data = teacher_data
    x, y = data["input"], data["labels"]

    def loss(model):
        logits = _numpy_forward(model, x)
        logits -= logits.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(y)), y]))

    assert loss(runs["trained"].dense_model) < loss(runs["kmeans"].dense_model)
    assert any("codebooks fine-tuned for 2 epoch(s)" in n for n in runs["trained"].report["notes"])


def test_weight_bits_auto_keeps_the_smallest_width_within_its_rule_on_held_out_samples(teacher_data):
    model, data = teacher_data
    result = run(model, configure(data=data, weight_bits="auto", quant_epochs=1, **RETRAIN))
    q = result.report["quantize"]
    assert "against the model before quantization" in q["rule"] and "standard error" in q["rule"]
    kept = [t["bits"] for t in q["tried"] if t["within"]]
    assert q["weight_bits"] == min(kept), q
    assert all(t["bits"] < q["weight_bits"] for t in q["tried"] if not t["within"]), q
    assert all(t["n"] == 60 for t in q["tried"]), "decided on other samples than the 60 held out"
    assert "held out from retraining" in result.report["metrics"]["sets"]["calibration"]["data"]
    values = weight_array(result.dense_model, "fc1.weight")
    assert len(np.unique(values[values != 0])) <= 2 ** q["weight_bits"]


def test_bisection_finds_the_smallest_fitting_width_in_three_tries():
    for smallest in range(1, 10):
        seen = []
        best, tried = bisect(lambda b: (seen.append(b) or b >= smallest, b), (1, 2, 3, 4, 5, 6, 7, 8))
        assert best == (smallest if smallest <= 8 else None) and tried == seen and len(seen) <= 4, (smallest, seen)


class _Scripted:
    """An evaluator whose 'models' are the outputs themselves: one-hot logits of the predicted class."""

    plan = {"logits": "accuracy"}

    def __init__(self, labels, dense_pred):
        self.labels = [labels]
        self.reference_all = [(np.eye(10)[dense_pred],)]

    def run_all(self, predictions):
        return iter([(np.eye(10)[predictions],)])

    def samples_first(self, i, out, want):  # [N, 10]: the samples are on axis 0
        return out, want

    def whole(self, i):  # the logits follow the batch
        return False

    masked = frozenset()  # no attention mask: every position counts
    scales = (None,)  # class scores: no relative error to floor

    def position_mask(self, batch):
        return None

    grouped: dict = {}  # no output of several rows a sample

    def crop(self, batch):  # no output copies an input
        return None

    cropped = staticmethod(Evaluator.cropped)
    output_terms = Evaluator.output_terms  # the Evaluator's own per-sample terms, over the outputs above


@pytest.mark.parametrize("worse, better, within", [(5, 5, True), (6, 4, True), (10, 0, False), (4, 0, False)])
def test_rule_tolerates_one_standard_error_of_the_paired_difference(worse, better, within):
    n = 1000
    labels = np.zeros(n, dtype=np.int64)
    reference = labels.copy()
    reference[:better] = 1  # the model before quantization is wrong where the candidate is right
    candidate = labels.copy()
    candidate[better:better + worse] = 1
    rule = PairedRule(_Scripted(labels, labels), 0.0, reference=reference)
    decision = rule.judge_outputs([np.eye(10)[candidate]])
    assert decision.within is within and (decision.worse, decision.better) == (worse, better), decision
    assert decision.loss_pp == pytest.approx(100.0 * (worse - better) / n)


def test_a_centroid_trained_to_zero_keeps_its_weights_survivors():
    from onnx import helper, numpy_helper

    w = np.array([[0.0, 0.5], [0.0, 0.0]], dtype=np.float32)
    model = helper.make_model(helper.make_graph([], "g", [], [], [numpy_helper.from_array(w, "w")]))
    keep_survivors(model, "w", np.array([[0, 1], [-1, -1]]))
    out = numpy_helper.to_array(model.graph.initializer[0])
    assert out[0, 0] > 0 and out[0, 1] == 0.5 and (out[1] == 0).all()


def test_plan_puts_quantize_after_the_last_round_and_trains_only_when_retraining(teacher_data):
    _, data = teacher_data
    retrain = build_plan(configure(data=data, weight_bits="auto", **RETRAIN))
    names = [s.name for s in retrain]
    assert names.index("retrain") + 1 == names.index("quantize") == names.index("shrink") - 1
    assert next(s for s in retrain if s.name == "quantize").settings()["trained"] is True
    assert next(s for s in retrain if s.name == "data").split, "auto decides on a held-out part of --data"
    one_shot = build_plan(configure(data=data, sparsity=0.8, weight_bits=4))
    assert next(s for s in one_shot if s.name == "quantize").settings()["trained"] is False
    assert not next(s for s in one_shot if s.name == "data").split


@pytest.mark.parametrize("choices, match", [(dict(sparsity=0.5, weight_bits="auto"), "needs|pass --data"),
                                            (dict(sparsity=0.5, weight_bits=12), "not one of"),
                                            (dict(sparsity=0.5, weight_bits=4, quant_epochs=-1), "--quant-epochs")])
def test_bad_quantize_settings_are_config_errors(choices, match):
    with pytest.raises(ConfigError, match=match):
        configure(**choices).validate()


def test_after_the_automatic_search_its_budget_decision_is_made_again_on_the_quantized_file(teacher_data):
    from onnxprune.converter.steps.base import RunState
    from onnxprune.converter.steps.budget import BudgetConfig
    from onnxprune.converter.steps.data import Data, DataConfig
    from onnxprune.converter.steps.encode import EncodeConfig
    from onnxprune.converter.steps.quantize import QuantizeConfig, QuantizeStep
    from onnxprune.converter.steps.retrain import RetrainConfig
    from onnxprune.converter.steps.shrink import ShrinkConfig
    from onnxprune.passes.weights import find_prunable

    model, data = teacher_data
    searched = {"within": True, "loss_pp": 0.0, "limit_pp": 0.0}
    state = RunState(source=None, original=model, inventory=find_prunable(model), pruned=model,
                     data=Data(model, DataConfig(data=data, labels="labels")), auto={"decision": dict(searched)})
    step = QuantizeStep(QuantizeConfig(weight_bits=1), RetrainConfig(), BudgetConfig(max_loss=0.0),
                        ShrinkConfig(neurons=False), EncodeConfig("compact"))
    step.run(state)
    decision = state.auto["decision"]
    assert state.auto["decision_before_quantization"] == searched
    assert decision["n"] == 600 and decision["loss_pp"] > decision["limit_pp"] and decision["within"] is False, decision


def test_cli_weight_bits_auto_writes_the_chosen_codebooks_and_refuses_without_data(tmp_path, teacher_data):
    import json

    from click.testing import CliRunner

    from onnxprune.converter.cli import cli

    model, data = teacher_data
    path, npz, out = tmp_path / "m.onnx", tmp_path / "d.npz", tmp_path / "o.onnx"
    onnx.save(model, path)
    np.savez(npz, **data)
    res = CliRunner().invoke(cli, [str(a) for a in ("prune", path, "-o", out, "--sparsity", "0.8", "--data", npz,
                                                     "--labels", "labels", "--iterations", "1", "--lr", "0.05",
                                                     "--weight-bits", "auto", "--quant-epochs", "0.5",
                                                     "--sparse-format", "compact", "--json")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["quantize"]["weight_bits"] in (1, 2, 3, 4, 5, 6, 7, 8, 16)
    onnx.checker.check_model(onnx.load(out), full_check=True)
    res = CliRunner().invoke(cli, [str(a) for a in ("prune", path, "-o", out, "--sparsity", "0.8",
                                                     "--weight-bits", "auto")])
    assert res.exit_code == 2 and "--weight-bits auto" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("max_loss, auto, allocation, against, z", [
    (None, None, None, "before quantization", 1.0),
    (0.5, None, None, "dense input model", 0.0),  # --iterations' budget search: the plain loss
    (0.5, {"decision": {"within": True}}, None, "dense input model", 1.0),  # the automatic search
    (0.5, None, {"rule": "accepted when ..."}, "dense input model", 1.0)])  # the one-shot fit decides by the rule
def test_the_width_rule_matches_the_runs_own_final_check(teacher_data, max_loss, auto, allocation, against, z):
    from onnxprune.converter.steps.base import RunState
    from onnxprune.converter.steps.budget import BudgetConfig
    from onnxprune.converter.steps.data import Data, DataConfig
    from onnxprune.converter.steps.quantize import QuantizeConfig, QuantizeStep

    model, data = teacher_data
    state = RunState(source=None, pruned=model, data=Data(model, DataConfig(data=data, labels="labels")), auto=auto,
                     allocation=allocation)
    rule = QuantizeStep(QuantizeConfig(weight_bits="auto"), budget=BudgetConfig(max_loss=max_loss))._rule(state)
    assert against in rule.statement() and rule._rule.z == z and rule.budget_pp == (max_loss or 0.0)


def test_one_shot_with_auto_widths_is_not_refused_at_the_end_and_a_set_too_small_keeps_the_values():
    """The one-shot fit decides by the rule (1 SE), so the widths do too: a width kept is within the final check.
    60 label-free samples cannot certify 1 pp of changed classes: the values stay as trained, said once."""
    from tests.converter._data import self_labelled

    for n in (300, 60):
        model, data = self_labelled(hidden=(32, 16), model_seed=7, n=n, data_seed=2)
        result = run(model, configure(data={"input": data["input"]}, max_loss=1.0, one_shot=True,
                                      weight_bits="auto", levels=(0.3, 0.6), seed=0))
        assert result.report["budget"]["met"], n
        quant = result.report["quantize"]
        notes = [x for x in result.report["notes"] if x.startswith("--weight-bits auto kept the values as trained")]
        if n == 60:
            assert quant["weight_bits"] is None and len(notes) == 1 and "cannot certify" in notes[0]
        else:
            assert not notes
        onnx.checker.check_model(result.model)
        x = data["input"][:8]
        got = make_session(result.model).run(None, {"input": x})[0]
        assert np.isfinite(got).all() and got.shape == (8, 10)


def test_label_free_rule_allows_the_loss_the_model_before_quantization_already_has():
    """agreement with the dense model: the quantized file may change no more samples than the trained model did
    (its own loss + 1 SE), and is refused when it changes clearly more."""
    n = 1000
    dense = np.zeros(n, dtype=np.int64)
    scripted = _Scripted(dense, dense)
    scripted.plan = {"logits": "agreement"}
    trained = dense.copy()
    trained[:20] = 1  # the trained model already disagrees with the dense one on 20 samples
    rule = PairedRule(scripted, 0.0, reference=trained)
    assert rule.judge_outputs([(np.eye(10)[trained],)]).within  # the reference itself passes
    same_count = dense.copy()
    same_count[500:520] = 1  # 20 other samples: the same loss
    assert rule.judge_outputs([(np.eye(10)[same_count],)]).within
    more = dense.copy()
    more[:60] = 1  # three times the changes
    decision = rule.judge_outputs([(np.eye(10)[more],)])
    assert not decision.within and decision.loss_pp == pytest.approx(6.0)
