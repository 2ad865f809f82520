import numpy as np
import onnx
import pytest
from onnx import helper

import onnxprune.calibration.sensitivity as sensitivity
from onnxprune.calibration.metrics import Evaluator
from onnxprune.calibration.readers import open_data
from onnxprune.calibration.sensitivity import (DEFAULT_LEVELS, SensitivityResult, is_coupled, masked, scan, scan_naive,
                                     weight_as_input)
from onnxprune.errors import ConfigError
from onnxprune.models import builders
from onnxprune.passes.weights import find_prunable

LEVELS = (0.3, 0.6, 0.9, 0.99)


def small_cnn():
    return builders.lenet5_like(conv_channels=(4, 8), fc_units=32)


def with_constant_node(model, name):
    """Move initializer `name` into a Constant node placed first in the graph."""
    tensor = next(t for t in model.graph.initializer if t.name == name)
    kept = [t for t in model.graph.initializer if t.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.node.insert(0, helper.make_node("Constant", [], [name], name=f"{name}/const", value=tensor))
    return model


def evaluator(model, metric="rel_l2", n=48, labels=False, batch_size=16, input_name="input"):
    feeds = open_data("random", model, limit=n, batch_size=batch_size).batches()
    arrays = {input_name: np.concatenate([f[input_name] for f, _ in feeds])}
    if labels:  # labels from the dense model on half the samples: accuracy is then far from 0 and 100
        dense = Evaluator(open_data(arrays, model), "agreement", model).outputs(model).argmax(1)
        arrays["labels"] = np.where(np.arange(n) % 2 == 0, dense, (dense + 1) % dense.max(initial=1))
    return Evaluator(open_data(arrays, model, batch_size=batch_size), metric, model)


def assert_same_scan(fast, naive):
    assert fast.dense == pytest.approx(naive.dense, abs=1e-6)
    assert [lay.name for lay in fast.layers] == [lay.name for lay in naive.layers]
    for a, b in zip(fast.layers, naive.layers):
        diff = np.abs(np.array(a.values) - np.array(b.values)) / 100.0  # % -> fraction
        assert diff.max() <= 1e-6, f"layer {a.node} ({a.path}): fast {a.values} vs naive {b.values}"
        assert a.coupled == b.coupled


MODELS = {
    "small_cnn": small_cnn,
    "mlp": lambda: builders.mlp_gemm(in_features=12, hidden=(16, 8), out_features=5),
    "transpose_matmul": lambda: builders.mlp_matmul(in_features=12, hidden=(16,), out_features=5,
                                                    transposed_weights=True),
    "constant_node": lambda: with_constant_node(builders.mlp_gemm(in_features=12, hidden=(16,), out_features=5),
                                                "fc2.weight"),
    "residual": lambda: builders.residual_block(channels=4, size=6),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("downstream", [True, False])
def test_fast_scan_equals_session_per_variant(name, downstream):
    model = MODELS[name]()
    inventory = find_prunable(model)
    ev = evaluator(model)
    fast = scan(model, inventory, ev, LEVELS, downstream=downstream)
    assert {lay.path for lay in fast.layers} == ({"downstream"} if downstream else {"full"})
    assert_same_scan(fast, scan_naive(model, inventory, ev, LEVELS))


def test_fast_scan_equals_naive_with_labels_and_accuracy():
    model = small_cnn()
    inventory = find_prunable(model)
    ev = evaluator(model, "accuracy", labels=True)
    fast = scan(model, inventory, ev, LEVELS)
    assert 0 < fast.dense < 100
    assert_same_scan(fast, scan_naive(model, inventory, ev, LEVELS))


def test_transpose_and_constant_weights_are_scanned():
    model = MODELS["transpose_matmul"]()
    inventory = find_prunable(model)
    assert all(w.via == ("Transpose",) for w in inventory.prunable)
    result = scan(model, inventory, evaluator(model), LEVELS)
    assert all(lay.values[-1] < lay.values[0] <= 100 for lay in result.layers)
    model = MODELS["constant_node"]()
    inventory = find_prunable(model)
    assert inventory.by_name()["fc2.weight"].source == "constant"
    result = scan(model, inventory, evaluator(model), LEVELS)
    assert result.layer("fc2.weight").values[-1] < result.dense


def test_memory_budget_falls_back_to_the_whole_graph():
    model = small_cnn()
    inventory = find_prunable(model)
    ev = evaluator(model)
    tight = scan(model, inventory, ev, LEVELS, memory_budget=0)
    assert [lay.path for lay in tight.layers] == ["downstream", "full", "full", "full"]  # conv1 reads the input
    assert_same_scan(tight, scan(model, inventory, ev, LEVELS))


def test_prefix_sessions_run_only_the_layers_since_the_last_group(monkeypatch):
    """A memory budget that holds one layer's cached input at a time: every group gets its own prefix session, which
    runs only the nodes between the previous group's cached tensors and its own (not the whole graph: onnxruntime
    runs every node of a session whatever is fetched), and the scan is still the naive one."""
    model = builders.mlp_gemm(in_features=12, hidden=(16, 16, 16), out_features=5)
    inventory = find_prunable(model)
    ev = evaluator(model)
    built = []
    real = sensitivity.make_session
    monkeypatch.setattr(sensitivity, "make_session", lambda m, **kw: built.append(m) or real(m, **kw))
    result = scan(model, inventory, ev, LEVELS, memory_budget=16 * 4 * 48 + 1)  # one 16-wide activation, 48 samples
    assert [lay.path for lay in result.layers] == ["downstream"] * 4
    prefixes = [m for m in built if m.graph.name == "prefix"]
    assert len(prefixes) == 3  # fc2, fc3 and fc4 each read a tensor the model computes; fc1 reads the input
    real_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    first, *later = prefixes
    assert {i.name for i in first.graph.input} == real_inputs
    for m in later:  # fed the previous group's cached activation, runs one layer (Gemm + Relu), not the graph
        assert not {i.name for i in m.graph.input} & real_inputs
        assert [n.op_type for n in m.graph.node] == ["Gemm", "Relu"]
    assert all(len(m.graph.node) < len(model.graph.node) for m in prefixes)
    assert_same_scan(result, scan_naive(model, inventory, ev, LEVELS))


def test_one_session_per_layer(monkeypatch):
    model = small_cnn()
    inventory = find_prunable(model)
    ev = evaluator(model)
    built = []
    real = sensitivity.make_session
    monkeypatch.setattr(sensitivity, "make_session", lambda m, **kw: built.append(m) or real(m, **kw))
    scan(model, inventory, ev, DEFAULT_LEVELS)
    weights = {w.name for w in inventory.prunable}
    per_layer = [m for m in built if weights & {i.name for i in m.graph.input}]
    assert len(per_layer) == len(inventory.prunable)
    for m in per_layer:  # one weight fed, every other weight still an initializer
        fed = weights & {i.name for i in m.graph.input}
        assert len(fed) == 1 and not fed & {t.name for t in m.graph.initializer}
    assert len(built) <= 2 * len(inventory.prunable) + 1  # + the prefix sessions and one probe


def test_weight_as_input_keeps_the_other_initializers():
    model = small_cnn()
    w = find_prunable(model).by_name()["conv2.weight"]
    fed = weight_as_input(model, w)
    assert [i.name for i in fed.graph.input] == ["input", "conv2.weight"]
    assert len(fed.graph.initializer) == len(model.graph.initializer) - 1
    onnx.checker.check_model(fed, full_check=True)


def test_masked_prunes_exactly_the_fraction():
    values = np.random.default_rng(0).standard_normal((10, 10)).astype(np.float32)
    out = masked(values, 0.37)
    assert np.count_nonzero(out == 0) == 37 and out.dtype == np.float32
    assert np.abs(values[out == 0]).max() <= np.abs(values[out != 0]).min()


def test_coupled_on_residual_block_only():
    model = builders.residual_block()
    flags = {w.node: is_coupled(model, w) for w in find_prunable(model).prunable}
    assert flags == {"/stem/Conv": True, "/conv1/Conv": False, "/conv2/Conv": True}
    model = builders.tiny_attention()
    flags = {w.node: is_coupled(model, w) for w in find_prunable(model).prunable}
    assert flags["/out_proj/MatMul"] and not flags["/q_proj/MatMul"]
    assert not any(is_coupled(small_cnn(), w) for w in find_prunable(small_cnn()).prunable)


def test_weight_that_does_not_reach_the_scored_output():
    model = builders.concat_branches(size=4)
    inventory = find_prunable(model)
    ev = Evaluator(open_data("random", model, limit=8), "rel_l2", model, output="output")
    # score an intermediate: branch_b's output only; branch_a and head do not influence it
    model.graph.output.append(helper.make_tensor_value_info("/branch_b/Relu_output_0", onnx.TensorProto.FLOAT, None))
    ev = Evaluator(open_data("random", model, limit=8), "rel_l2", model, output="/branch_b/Relu_output_0")
    result = scan(model, inventory, ev, LEVELS)
    paths = {lay.node: lay.path for lay in result.layers}
    assert paths == {"/branch_a/Conv": "unused", "/branch_b/Conv": "downstream", "/head/Conv": "unused"}
    assert result.layer("/head/Conv").values == [result.dense] * len(LEVELS)


def test_progress_reports_every_level():
    model = MODELS["mlp"]()
    inventory = find_prunable(model)
    calls = []
    scan(model, inventory, evaluator(model), LEVELS, progress=lambda d, t, what: calls.append((d, t, what)))
    assert [c[0] for c in calls] == list(range(1, 3 * len(LEVELS) + 1))
    assert {c[1] for c in calls} == {3 * len(LEVELS)} and calls[0][2] == "/fc1/Gemm 30%"


def test_result_json_round_trip_and_fields():
    model = builders.residual_block(channels=4, size=6)
    result = scan(model, find_prunable(model), evaluator(model), LEVELS)
    back = SensitivityResult.from_json(result.to_json())
    assert back == result
    lay = back.layer("/conv2/Conv")
    assert (lay.op, lay.kind, lay.size, lay.coupled, lay.levels) == ("Conv", "conv", 4 * 4 * 9, True, list(LEVELS))
    assert result.metric == "rel_l2" and result.dense == 100.0 and result.num_samples == 48
    assert result.seconds > 0 and all(lay.seconds > 0 for lay in result.layers)
    with pytest.raises(ConfigError, match="not an onnxprune sensitivity file"):
        SensitivityResult.from_json('{"format": "other"}')


def test_levels_are_validated():
    model = MODELS["mlp"]()
    with pytest.raises(ConfigError, match="levels"):
        scan(model, find_prunable(model), evaluator(model), (0.5, 0.3))
    with pytest.raises(ConfigError, match="levels"):
        scan(model, find_prunable(model), evaluator(model), (0.5, 1.0))


def test_plot_and_table(tmp_path):
    from onnxprune.calibration.plots import sensitivity_table
    from onnxprune.converter.report_plots import scan_figure

    model = small_cnn()
    result = scan(model, find_prunable(model), evaluator(model), DEFAULT_LEVELS)
    assert scan_figure(result)[:8] == b"\x89PNG\r\n\x1a\n"
    rows = sensitivity_table(result)
    assert [r["layer"] for r in rows] == ["/conv1/Conv", "/conv2/Conv", "/fc1/Gemm", "/fc2/Gemm"]
    assert list(rows[0]) == ["layer", "op", "weights", "50%", "80%", "90%", "95%", "99%", "max s @1pp", "residual",
                             "scan s"]
    assert rows[0]["99%"] == f"{result.layers[0].values[-1]:.2f}"


def test_a_layer_onnxruntime_refuses_with_its_weight_as_input_is_scanned_with_the_values_written_in(monkeypatch):
    """Seen on silero-vad: an LSTM in an If body fails type inference once its weight is a graph input."""
    model = small_cnn()
    inventory = find_prunable(model)
    ev = evaluator(model)
    want = scan_naive(model, inventory, ev, (0.5, 0.9))

    def refused(*_a, **_k):
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        broken.graph.node[0].op_type = "NoSuchOp"  # onnxruntime refuses to build a session for it
        return broken

    monkeypatch.setattr(sensitivity, "weight_as_input", refused)
    monkeypatch.setattr(sensitivity, "_submodel", refused)
    got = sensitivity.scan(model, inventory, ev, (0.5, 0.9))
    for a, b in zip(got.layers, want.layers):
        assert a.values == pytest.approx(b.values, abs=1e-9), a.name


def test_a_nan_metric_is_written_as_strict_json_and_read_back_as_nan():
    """A level whose pruned model's outputs were not finite scores NaN; json.dumps wrote a bare NaN, which strict
    parsers (jq, JavaScript) refuse. The file and `sensitivity --json` hold null, read back as NaN."""
    import json
    import math

    from onnxprune.calibration.sensitivity import LayerSensitivity

    result = SensitivityResult(metric="top1", dense=97.0, levels=[0.5, 0.9],
                               layers=[LayerSensitivity("fc1.weight", "fc1", "Gemm", "fc", 10, [0.5, 0.9],
                                                        [96.0, float("nan")])])
    text = result.to_json()
    assert "NaN" not in text and json.loads(text, parse_constant=lambda c: pytest.fail(c))["layers"][0]["values"] == [
        96.0, None]
    back = SensitivityResult.from_json(text)
    assert back.layers[0].values[0] == 96.0 and math.isnan(back.layers[0].values[1]) and back.dense == 97.0
