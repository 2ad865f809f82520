"""Weights stored as float16/bfloat16 and read through Cast(to=float) fold to float32 and come back as stored.

Sweep 23 left them pruned in place: the refit said "reached through Cast; left as pruned", the channel analysis
masked no neuron of any layer, the bridge trained nothing. `passes/quantized_weights.py` (`lowp`) now folds
them at load like the other stored forms, so every step sees a float32 weight read directly."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from onnxprune.models.third_party_builders import bf16_weights
from onnxprune.passes.dead_neurons import remove_dead_neurons
from onnxprune.passes.quantized_weights import as_written, fold, foldable, restore, snap
from onnxprune.converter.steps.prune import copy_model
from tests.oracle import check_full, first_output

STORED = [TensorProto.BFLOAT16, TensorProto.FLOAT16]
X = np.random.default_rng(1).standard_normal((32, 1, 6, 6)).astype(np.float32)


def run(model: onnx.ModelProto, x: np.ndarray = X) -> np.ndarray:
    return first_output(model, {"input": x})  # onnxruntime, optimisations off (tests/oracle.py)


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    return copy_model(model)


def folded_model(stored: int) -> tuple[onnx.ModelProto, onnx.ModelProto, list]:
    """(the builder's model, its folded copy, the fold's records)."""
    m = bf16_weights(seed=0, stored=stored)
    folded = copy(m)
    return m, folded, fold(folded)


def as_float(tensor: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor).astype(np.float32)


@pytest.mark.parametrize("stored", STORED)
def test_fold_is_exact_and_restore_gives_each_stored_tensor_back_byte_for_byte(stored):
    assert foldable(bf16_weights(seed=0, stored=stored))
    m, folded, records = folded_model(stored)
    assert sorted(r.name for r in records) == ["conv.weight_bf16", "fc1.weight_bf16", "fc2.weight_bf16"]  # own names
    assert all(r.lowp for r in records)
    assert "Cast" not in {n.op_type for n in folded.graph.node}  # every layer reads its float32 weight directly
    assert {t.name: t.data_type for t in folded.graph.initializer}["fc1.weight_bf16"] == TensorProto.FLOAT
    check_full(folded)
    np.testing.assert_array_equal(run(folded), run(m))  # every bfloat16/float16 value is exact in float32
    back = copy(folded)
    assert restore(back, records) == 3
    check_full(back)
    stored_of = lambda model: {t.name: t.SerializeToString() for t in model.graph.initializer}  # noqa: E731
    assert stored_of(back) == stored_of(m)
    np.testing.assert_array_equal(run(back), run(m))


@pytest.mark.parametrize("stored", STORED)
def test_a_refit_value_is_rounded_to_the_stored_type_and_pruned_zeros_stay_exact(stored):
    _, folded, records = folded_model(stored)
    w = next(t for t in folded.graph.initializer if t.name == "fc1.weight_bf16")
    values = numpy_helper.to_array(w).copy()
    values[0, :5] = 0.0
    values[1, 0] = np.float32(1.0 + 2.0 ** -12)  # between two bfloat16 and two float16 neighbours of 1.0
    w.CopyFrom(numpy_helper.from_array(values, w.name))
    assert snap(folded, records) == 1
    snapped = numpy_helper.to_array(next(t for t in folded.graph.initializer if t.name == "fc1.weight_bf16"))
    assert snapped[1, 0] == np.float32(1.0) and not snapped[0, :5].any()
    written = as_written(folded, records)
    check_full(written)
    stored_t = next(t for t in written.graph.initializer if t.name == "fc1.weight_bf16")
    assert stored_t.data_type == stored
    np.testing.assert_array_equal(as_float(stored_t), snapped)  # the file holds what the snapped float32 holds
    np.testing.assert_array_equal(run(written), run(folded))


@pytest.mark.parametrize("stored", STORED)
def test_dead_neurons_of_a_float16_or_bfloat16_layer_are_removed_and_written_in_the_stored_type(stored):
    _, folded, records = folded_model(stored)
    tensors = {t.name: t for t in folded.graph.initializer}
    w1 = numpy_helper.to_array(tensors["fc1.weight_bf16"]).copy()  # Gemm transB: [hidden, in]
    w1[[3, 7, 11]] = 0.0  # three hidden neurons with no inputs
    b1 = numpy_helper.to_array(tensors["fc1.bias"]).copy()
    b1[[3, 7, 11]] = -1.0  # Relu(-1) = 0: dead
    tensors["fc1.weight_bf16"].CopyFrom(numpy_helper.from_array(w1, "fc1.weight_bf16"))
    tensors["fc1.bias"].CopyFrom(numpy_helper.from_array(b1, "fc1.bias"))
    reference = as_written(folded, records)
    out, report = remove_dead_neurons(folded)
    assert report.removed == 3
    restore(out, records, report.slices)
    check_full(out)
    written = {t.name: t for t in out.graph.initializer}
    assert written["fc1.weight_bf16"].data_type == stored and tuple(written["fc1.weight_bf16"].dims) == (13, 144)
    assert tuple(written["fc2.weight_bf16"].dims) == (4, 13)
    assert sum(n.op_type == "Cast" for n in out.graph.node) == 3
    np.testing.assert_allclose(run(out), run(reference), rtol=1e-5, atol=1e-6)


def test_a_float16_weight_two_casts_read_is_left_as_it_is():
    m = bf16_weights(seed=0, stored=TensorProto.FLOAT16)
    extra = onnx.helper.make_node("Cast", ["fc2.weight_bf16"], ["fc2.weight_again"], to=TensorProto.FLOAT)
    m.graph.node.insert(0, extra)
    m.graph.output.append(onnx.helper.make_tensor_value_info("fc2.weight_again", TensorProto.FLOAT, [4, 16]))
    records = fold(copy(m))
    assert sorted(r.name for r in records) == ["conv.weight_bf16", "fc1.weight_bf16"]


def test_prune_removes_neurons_of_a_bfloat16_model_and_writes_it_sparse_in_bfloat16(tmp_path):
    """Before: "masked no neuron of 3 of 3 layers ... reaches it through Cast"; the file kept every channel."""
    from tests.hardening.helpers import invoke

    src, out = tmp_path / "bf16.onnx", tmp_path / "out.onnx"
    onnx.save(bf16_weights(seed=0, hidden=64, size=8), src)
    np.savez(tmp_path / "calib.npz", input=np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32))
    res = invoke("prune", src, "-o", out, "--data", tmp_path / "calib.npz", "--sparsity", "0.95",
                 "--neuron-sparsity", "0.25", "--iterations", "1", "--epochs", "1", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    assert "3 tensor(s) stored as bfloat16 and read through a Cast" in res.output
    assert "masked no neuron" not in res.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    rows = {r["weight"]: r for r in report["table"]["rows"]}
    assert rows["fc1.weight_bf16"]["neurons_after"] < rows["fc1.weight_bf16"]["neurons_before"] == 64, rows
    model = onnx.load(out)
    check_full(model)
    stored = {n.output[0]: a.sparse_tensor for n in model.graph.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "sparse_value"}
    stored.update({t.values.name: t for t in model.graph.sparse_initializer})
    assert stored and all(t.values.data_type == TensorProto.BFLOAT16 for t in stored.values()), stored.keys()
    assert {t.data_type for t in model.graph.initializer if "weight" in t.name} <= {TensorProto.BFLOAT16}
    assert "max abs diff 0 vs the dense model with the same weights" in res.output  # the sparse bfloat16 file
    x = np.random.default_rng(5).standard_normal((16, 1, 8, 8)).astype(np.float32)
    got = run(model, x)
    assert got.shape == (16, 4) and np.isfinite(got).all()


def test_a_budgeted_run_on_a_float16_model_refits_its_layers_and_keeps_its_budget_as_written():
    """Before: "reconstruct did not refit 'X.weight_bf16': reached through Cast; left as pruned"."""
    from onnxprune.converter.pipeline import configure, run as run_pipeline

    dense = bf16_weights(seed=0, stored=TensorProto.FLOAT16, hidden=32)
    data = {"input": np.random.default_rng(0).standard_normal((400, 1, 6, 6)).astype(np.float32)}
    result = run_pipeline(dense, configure(max_loss=1.0, data=data, time_budget=60, seed=0, recovery="reconstruct",
                                           metric="logits=rel_l2"))  # a continuous output: 300 samples certify a refit
    notes = " ".join(result.report.get("notes") or [])
    assert "reached through Cast" not in notes and "per-layer refit" in notes, notes
    assert result.report["budget"]["met"]
    check_full(result.model)
    types = {t.name: t.data_type for t in result.model.graph.initializer}
    assert types.get("fc1.weight_bf16", TensorProto.FLOAT16) == TensorProto.FLOAT16, types
    assert TensorProto.FLOAT not in {types[n] for n in types if "weight" in n}  # no float32 stand-in written
    x = np.random.default_rng(3).standard_normal((64, 1, 6, 6)).astype(np.float32)
    assert np.isfinite(run(result.model, x)).all()


def test_inspect_lists_a_bfloat16_weight_as_stored(tmp_path):
    from onnxprune.converter.inspect import inspect_model

    onnx.save(bf16_weights(seed=0), tmp_path / "m.onnx")
    rows = {r["weight"]: r for r in inspect_model(tmp_path / "m.onnx")["layers"]}
    assert rows["fc1.weight_bf16"]["encoding"] == "bfloat16 + Cast"
    assert rows["fc1.weight_bf16"]["stored_bytes"] == rows["fc1.weight_bf16"]["params"] * 2
